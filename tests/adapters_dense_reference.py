"""Dense references for the adapter tests, differentiable in PyTorch and JAX.

:func:`dense_solve` solves a block-banded system through its dense matrix
(DESIGN.md section 2). :func:`dense_ode_forward` is the S-MNN system of
DESIGN.md section 4, written independently of smnn's banded assembly:
the dense row matrix A of every batch item is built from the inputs with
broadcasting and constant selector arrays (no in-place writes), so the
autograd of either framework differentiates through it with respect to all
four inputs, the steps included. The dense normal equations
``(A^T W^2 A) u = A^T W^2 r`` are solved with ``xp.linalg.solve``.

``xp`` is ``torch`` or ``jax.numpy``: only functions both provide are used.
"""

import math

import numpy as np


def dense_from_bands(xp, bands):
    """Dense symmetric M (..., T*k, T*k) from the lower block band (..., w+1, T, k, k).

    Diagonal blocks enter as (B + B^T)/2: the symmetric-matrix convention of
    bandsolve's adjoint, so autograd through this matches it exactly.
    Padding blocks (t + d >= T) are not read.
    """
    n_diag, T, k = bands.shape[-4], bands.shape[-3], bands.shape[-2]
    eye_T = xp.asarray(np.eye(T), dtype=bands.dtype)
    M = 0
    for d in range(n_diag):
        shift = xp.asarray(np.eye(T, k=d), dtype=bands.dtype)  # shift[t, r] = [r == t + d]
        block = bands[..., d, :, :, :]
        if d == 0:
            block = (block + xp.swapaxes(block, -1, -2)) / 2
        M = M + xp.einsum("tr,tc,...tij->...ricj", shift, eye_T, block)  # M[t+d, t] = block
        if d > 0:
            M = M + xp.einsum("tr,tc,...tij->...cjri", shift, eye_T, block)  # M[t, t+d]
    return M.reshape(bands.shape[:-4] + (T * k, T * k))


def dense_solve(xp, bands, b):
    """x = M^{-1} b through the dense M, for b of shape (..., T, k) or (..., T, k, nrhs)."""
    T, k = bands.shape[-3], bands.shape[-2]
    vector = tuple(b.shape[-2:]) == (T, k)
    core = (T, k) if vector else (T, k, b.shape[-1])
    rhs = b.reshape(tuple(b.shape[:len(b.shape) - len(core)]) + (T * k, 1 if vector else core[-1]))
    M = dense_from_bands(xp, bands)
    batch = tuple(np.broadcast_shapes(tuple(M.shape[:-2]), tuple(rhs.shape[:-2])))
    x = xp.linalg.solve(xp.broadcast_to(M, batch + tuple(M.shape[-2:])),
                        xp.broadcast_to(rhs, batch + tuple(rhs.shape[-2:])))
    return x.reshape(batch + core)


def _powers(xp, s, n):
    """(..., m) -> (..., m, n): s^0 .. s^(n-1) by products (any sign of s)."""
    out = [xp.ones_like(s)]
    for _ in range(n - 1):
        out.append(out[-1] * s)
    return xp.stack(out, axis=-1)


def _at_least(xp, a, rank):
    return a.reshape((1,) * (rank - a.ndim) + tuple(a.shape)) if a.ndim < rank else a


def dense_ode_forward(xp, coef, rhs, init, steps, *, T, Ti, weights=(1.0, 1.0, 1.0),
                      central=False):
    """u (batch..., T, D, O) of the S-MNN system from batch-first inputs.

    Shapes as :func:`smnn.ode_forward` (size-1 dimensions broadcast); the
    weights are scalars or arrays broadcastable to (..., T, E),
    (..., Ti, D, Oi) and (..., T-1, D, O).
    """
    dtype = coef.dtype
    E, D = max(coef.shape[-3], rhs.shape[-1]), max(coef.shape[-2], init.shape[-2])
    O, Oi = coef.shape[-1], init.shape[-1]
    w_eq, w_init, w_smooth = (
        _at_least(xp, xp.asarray(w, dtype=dtype), rank) for w, rank in zip(weights, (2, 3, 3))
    )
    batch = tuple(np.broadcast_shapes(
        coef.shape[:-4], rhs.shape[:-2], init.shape[:-3], steps.shape[:-1],
        w_eq.shape[:-2], w_init.shape[:-3], w_smooth.shape[:-3]))

    def full(a, core):
        return xp.broadcast_to(a, batch + core)

    def const(a):
        return xp.asarray(np.asarray(a, dtype=np.float64), dtype=dtype)

    coef, rhs, init = full(coef, (T, E, D, O)), full(rhs, (T, E)), full(init, (Ti, D, Oi))
    steps = full(steps, (T - 1,))
    w_eq, w_init = full(w_eq, (T, E)), full(w_init, (Ti, D, Oi))
    w_smooth = full(w_smooth, (T - 1, D, O))
    n = T * D * O
    eye_D, eye_O = np.eye(D), np.eye(O)
    rows, rhs_rows, row_weights = [], [], []

    def add(A, r, w):
        m = math.prod(A.shape[len(batch):-3])
        rows.append(A.reshape(batch + (m, n)))
        rhs_rows.append(r.reshape(batch + (m,)))
        row_weights.append(w.reshape(batch + (m,)))

    # equation rows (t, e): sum_{d,o} c[t,e,d,o] u[t,d,o] = r[t,e]
    add(xp.einsum("tq,...tedo->...teqdo", const(np.eye(T)), coef), rhs, w_eq)
    # initial-value rows (t, d, o): u[t,d,o] = init[t,d,o]
    select = np.zeros((Ti, D, Oi, T, D, O))
    for t, d, o in np.ndindex(Ti, D, Oi):
        select[t, d, o, t, d, o] = 1.0
    add(xp.broadcast_to(const(select), batch + select.shape), init, w_init)
    # Taylor rows (t, d, o), forward (s, a, n) = (h, t, t+1), backward (-h, t+1, t):
    # sum_{o' >= o} s^o' / (o'-o)! u[a,d,o'] - s^o u[n,d,o] = 0
    n_taylor = O - 1 if central else O
    taylor = np.array([[1.0 / math.factorial(q - o) if q >= o else 0.0 for q in range(O)]
                       for o in range(n_taylor)])
    if T > 1:
        this, after = np.eye(T - 1, T), np.eye(T - 1, T, k=1)
        for sign, (a, nxt) in ((1.0, (this, after)), (-1.0, (after, this))):
            powers = _powers(xp, sign * steps, O)  # (..., T-1, O)
            A = (xp.einsum("tq,dD,oO,...tO->...tdoqDO", const(a), const(eye_D), const(taylor),
                           powers)
                 - xp.einsum("tq,dD,oO,...to->...tdoqDO", const(nxt), const(eye_D),
                             const(eye_O[:n_taylor]), powers[..., :n_taylor]))
            add(A, xp.zeros(batch + (T - 1, D, n_taylor), dtype=dtype),
                w_smooth[..., :n_taylor])
    # central rows (t, d), s = h[t] + h[t+1]:
    # s^(O-3) u[t,d,O-2] + s^(O-2) u[t+1,d,O-1] - s^(O-3) u[t+2,d,O-2] = 0
    if central and T > 2:
        powers = _powers(xp, steps[..., :-1] + steps[..., 1:], O - 1)  # (..., T-2, O-1)
        low, high = powers[..., O - 3], powers[..., O - 2]
        shifts = [np.eye(T - 2, T, k=j) for j in range(3)]

        def part(shift, order, power):
            return xp.einsum("tq,dD,O,...t->...tdqDO", const(shift), const(eye_D),
                             const(eye_O[order]), power)

        A = part(shifts[0], O - 2, low) + part(shifts[1], O - 1, high) - part(shifts[2], O - 2, low)
        add(A[..., None, :, :, :], xp.zeros(batch + (T - 2, D, 1), dtype=dtype),
            w_smooth[..., : T - 2, :, O - 1:])
    A = xp.concatenate(rows, axis=-2)
    r = xp.concatenate(rhs_rows, axis=-1)
    w = xp.concatenate(row_weights, axis=-1)
    Aw = w[..., None] * A
    M = xp.swapaxes(Aw, -1, -2) @ Aw
    b = xp.swapaxes(Aw, -1, -2) @ (w * r)[..., None]
    return xp.linalg.solve(M, b)[..., 0].reshape(batch + (T, D, O))


# ---------------------------------------------------------------------------
# S-MNN test problems shared by the adapter tests (NumPy, float64)


def _steps(rng, shape):
    return rng.uniform(0.1, 0.3, shape)


def ode_case(name, rng):
    """``(data, kwargs, sizes)`` of a named S-MNN test problem.

    ``data`` = (coefficients, rhs_equation, init_vars, steps) as NumPy float64
    arrays in the layout ``kwargs`` says, ``kwargs`` the options of
    :func:`smnn.ode_forward`, ``sizes`` = dict(T=..., Ti=...) for
    :func:`dense_ode_forward`.
    """
    if name == "batch":  # E = D = 2, O = 3, a batch of 2, defaults
        T = 5
        data = (rng.standard_normal((2, T, 2, 2, 3)), rng.standard_normal((2, T, 2)),
                rng.standard_normal((2, 1, 2, 1)), _steps(rng, (2, T - 1)))
        return data, {}, dict(T=T, Ti=1)
    if name == "broadcast":  # coefficients constant in time, shared steps and init, weights
        T = 5
        data = (rng.standard_normal((1, 2, 2, 3)), rng.standard_normal((3, T, 2)),
                rng.standard_normal((2, 2, 2)), _steps(rng, (T - 1,)))
        weights = dict(weight_equation=rng.uniform(0.5, 2.0, (T, 2)), weight_init_var=2.0,
                       weight_smooth=0.7)
        return data, dict(n_steps=T, **weights), dict(T=T, Ti=2)
    if name == "central":  # one dimension, four orders, central smoothness (w = 2)
        T = 6
        data = (rng.standard_normal((2, T, 1, 1, 4)), rng.standard_normal((2, T, 1)),
                rng.standard_normal((2, 1, 1, 2)), _steps(rng, (2, T - 1)))
        return data, dict(enable_central_smoothness=True), dict(T=T, Ti=1)
    if name == "step-first":  # the "batch" problem with T (and Ti) on axis 0
        data, _, sizes = ode_case("batch", rng)
        cores = (4, 2, 3, 1)
        data = tuple(np.moveaxis(a, a.ndim - core, 0) for a, core in zip(data, cores))
        return data, dict(is_step_dim_first=True), sizes
    raise ValueError(f"unknown case {name!r}")


ODE_CASES = ("batch", "broadcast", "central", "step-first")
ODE_CORES = (4, 2, 3, 1)


def dense_ode_case(xp, data, kwargs, sizes):
    """:func:`dense_ode_forward` for a case's data in the case's layout."""
    step_first = kwargs.get("is_step_dim_first", False)
    if step_first:
        data = tuple(xp.moveaxis(a, 0, a.ndim - core) for a, core in zip(data, ODE_CORES))
    weights = tuple(kwargs.get(name, 1.0)
                    for name in ("weight_equation", "weight_init_var", "weight_smooth"))
    u = dense_ode_forward(xp, *data, weights=weights,
                          central=kwargs.get("enable_central_smoothness", False), **sizes)
    return xp.moveaxis(u, u.ndim - 3, 0) if step_first else u
