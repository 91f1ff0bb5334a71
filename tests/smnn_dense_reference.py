"""Dense reference for the S-MNN system, written from DESIGN.md section 4.

Builds the full row matrix A, the right-hand side r and the row weights w of
one batch item with explicit Python loops over the rules, then solves the
dense normal equations (A^T W^2 A) u = A^T W^2 r. Only plain transposes are
used (no conjugation), so every function here also runs on complex input for
complex-step differentiation. Independent of smnn's banded assembly.
"""

import math

import numpy as np


def dense_rows(coef, rhs, init, steps, w_eq, w_init, w_smooth, central):
    """(A, r, w) for one item; the weights are broadcast to their row shapes.

    coef (T, E, D, O), rhs (T, E), init (Ti, D, Oi), steps (T-1,),
    w_eq (T, E), w_init (Ti, D, Oi), w_smooth (T-1, D, O).
    """
    T, E, D, O = coef.shape
    Ti, _, Oi = init.shape
    k = D * O
    n = T * k
    dtype = np.result_type(coef, rhs, init, steps, w_eq, w_init, w_smooth)
    rows, r, w = [], [], []

    def col(t, d, o):
        return t * k + d * O + o

    def new_row():
        return np.zeros(n, dtype=dtype)

    for t in range(T):
        for e in range(E):
            row = new_row()
            for d in range(D):
                for o in range(O):
                    row[col(t, d, o)] = coef[t, e, d, o]
            rows.append(row), r.append(rhs[t, e]), w.append(w_eq[t, e])
    for t in range(Ti):
        for d in range(D):
            for o in range(Oi):
                row = new_row()
                row[col(t, d, o)] = 1.0
                rows.append(row), r.append(init[t, d, o]), w.append(w_init[t, d, o])
    n_taylor = O - 1 if central else O
    for t in range(T - 1):
        h = steps[t]
        for d in range(D):
            for o in range(n_taylor):
                for s, a, nxt in ((h, t, t + 1), (-h, t + 1, t)):
                    row = new_row()
                    for op in range(o, O):
                        row[col(a, d, op)] += s**op / math.factorial(op - o)
                    row[col(nxt, d, o)] -= s**o
                    rows.append(row), r.append(0.0), w.append(w_smooth[t, d, o])
    if central:
        for t in range(T - 2):
            s = steps[t] + steps[t + 1]
            for d in range(D):
                row = new_row()
                row[col(t, d, O - 2)] += s ** (O - 3)
                row[col(t + 1, d, O - 1)] += s ** (O - 2)
                row[col(t + 2, d, O - 2)] -= s ** (O - 3)
                rows.append(row), r.append(0.0), w.append(w_smooth[t, d, O - 1])
    A = np.array(rows, dtype=dtype).reshape(len(rows), n)
    return A, np.array(r, dtype=dtype), np.array(w, dtype=dtype)


def dense_normal_equations(*args):
    """Dense (M, b) = (A^T W^2 A, A^T W^2 r) for one item."""
    A, r, w = dense_rows(*args)
    Aw = w[:, None] * A
    return Aw.T @ Aw, Aw.T @ (w * r)


def dense_solve_item(coef, rhs, init, steps, w_eq, w_init, w_smooth, central):
    M, b = dense_normal_equations(coef, rhs, init, steps, w_eq, w_init, w_smooth, central)
    T, _, D, O = coef.shape
    return np.linalg.solve(M, b).reshape(T, D, O)


def broadcast_inputs(coef, rhs, init, steps, *, T, Ti, weights=(1.0, 1.0, 1.0)):
    """Broadcast batch-first inputs and weights to full shapes.

    Returns (batch, items): ``items`` is a list of per-item argument tuples
    for :func:`dense_solve_item` (central flag excluded).
    """
    E = max(coef.shape[-3], rhs.shape[-1])
    D = max(coef.shape[-2], init.shape[-2])
    O, Oi = coef.shape[-1], init.shape[-1]
    w_eq, w_init, w_smooth = (np.asarray(x) for x in weights)
    batch = np.broadcast_shapes(
        coef.shape[:-4], rhs.shape[:-2], init.shape[:-3], steps.shape[:-1],
        w_eq.shape[:-2], w_init.shape[:-3], w_smooth.shape[:-3],
    )
    full = {
        "coef": np.broadcast_to(coef, batch + (T, E, D, O)),
        "rhs": np.broadcast_to(rhs, batch + (T, E)),
        "init": np.broadcast_to(init, batch + (Ti, D, Oi)),
        "steps": np.broadcast_to(steps, batch + (T - 1,)),
        "w_eq": np.broadcast_to(w_eq, batch + (T, E)),
        "w_init": np.broadcast_to(w_init, batch + (Ti, D, Oi)),
        "w_smooth": np.broadcast_to(w_smooth, batch + (T - 1, D, O)),
    }
    items = []
    for index in np.ndindex(*batch):
        items.append(tuple(full[key][index] for key in
                           ("coef", "rhs", "init", "steps", "w_eq", "w_init", "w_smooth")))
    return batch, items


def dense_forward(coef, rhs, init, steps, *, T, Ti, weights=(1.0, 1.0, 1.0), central=False):
    """u (batch..., T, D, O) by dense solves item by item (batch-first input)."""
    batch, items = broadcast_inputs(coef, rhs, init, steps, T=T, Ti=Ti, weights=weights)
    D = max(coef.shape[-2], init.shape[-2])
    O = coef.shape[-1]
    dtype = np.result_type(coef, rhs, init, steps, *weights)
    out = np.empty(batch + (T, D, O), dtype=dtype)
    for index, args in zip(np.ndindex(*batch), items):
        out[index] = dense_solve_item(*args, central)
    return out


def dense_bands(M, T, k, w):
    """The lower block band (w+1, T, k, k) of a dense M (padding zero)."""
    bands = np.zeros((w + 1, T, k, k), dtype=M.dtype)
    for d in range(w + 1):
        for t in range(T - d):
            bands[d, t] = M[(t + d) * k:(t + d + 1) * k, t * k:(t + 1) * k]
    return bands


def complex_step_gradient(fun, x, g, eps=1e-30):
    """Gradient of sum(g * fun(x)) w.r.t. x by the complex step, to round-off.

    ``fun`` maps an array of x's shape (possibly complex) to an array of g's
    shape; d/dx_j = Im(fun(x + i eps e_j)) / eps.
    """
    x = np.asarray(x, dtype=np.float64)
    grad = np.empty(x.shape)
    for j in np.ndindex(*x.shape):
        xc = x.astype(np.complex128)
        xc[j] += 1j * eps
        grad[j] = np.sum(g * (fun(xc).imag / eps))
    return grad
