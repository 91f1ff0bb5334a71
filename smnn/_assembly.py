r"""Band assembly of the S-MNN normal equations and the adjoint of the solve.

Unknowns per batch item: ``u[t, d, o]`` (t < T steps, d < D dimensions,
o < O orders); block t of the unknown vector is ``u[t]`` flattened, index
``i = d*O + o``, block size ``k = D*O``. The rows of the least-squares system
``min ||W (A u - r)||^2`` are (DESIGN.md section 4)::

    equation   (t < T, e < E)          sum_{d,o} c[t,e,d,o] u[t,d,o] = r[t,e]       w_eq[t,e]
    initial    (t < Ti, d < D, o < Oi) u[t,d,o] = init[t,d,o]                      w_init[t,d,o]
    Taylor     (t < T-1, d < D, o < Os) for (s, a, n) = (h[t], t, t+1) and (-h[t], t+1, t):
               sum_{o' >= o} s^{o'}/(o'-o)! u[a,d,o'] - s^o u[n,d,o] = 0       w_smooth[t,d,o]
    central    (t < T-2, d < D), s = h[t] + h[t+1], only when enabled:
               s^{O-3} u[t,d,O-2] + s^{O-2} u[t+1,d,O-1] - s^{O-3} u[t+2,d,O-2] = 0
                                                                               w_smooth[t,d,O-1]

with Os = O (default) or O-1 (central rows on). Both Taylor rows of (t, d, o)
share the weight ``w_smooth[t, d, o]``; the central row of (t, d) takes the
slot ``w_smooth[t, d, O-1]`` that the (then absent) highest-order Taylor row
leaves free, so one array of shape (..., T-1, D, O) weights every smoothness
row.

Normal equations, ``M = A^T W^2 A`` and ``b = A^T W^2 r``, assembled directly
in bandsolve's lower block-band storage ``bands[d, t] = M[t+d, t]`` (w = 1,
or w = 2 with central rows), never as a dense matrix:

* equation rows add ``sum_e w_eq^2 c_e c_e^T`` to M[t, t] and
  ``sum_e w_eq^2 r_e c_e`` to b[t] (``c_e = c[t, e]`` flattened);
* initial rows add ``w_init^2`` to the diagonal of M[t, t] and
  ``w_init^2 init`` to b[t];
* a Taylor row with coefficient vector p (block a, only dimension d) and
  ``q = -s^o e_o`` (block n) adds ``w^2 p p^T`` to M[a, a], ``w^2 q q^T``
  to M[n, n] and ``w^2`` times the outer product to the off-diagonal block:
  its contributions are block diagonal over d (D blocks of O x O);
* a central row adds its 3 x 3 outer product to M[t..t+2, t..t+2].

Adjoint. With ``u = M^{-1} b`` and a cotangent g, let ``bbar = M^{-1} g``
(one more solve with the stored factor). Since ``dM = dA^T W^2 A + A^T W^2 dA``
and ``db = dA^T W^2 r + A^T W^2 dr``::

    dL = bbar^T (db - dM u)
       = sum_rows w_i^2 [ (rho_i bbar - beta_i u)^T da_i + beta_i dr_i ],
    rho_i = r_i - a_i^T u    (the row's residual),   beta_i = a_i^T bbar,

so the gradient of every entry of row i is ``w_i^2 (rho_i bbar_j - beta_i u_j)``
and of its right-hand side ``w_i^2 beta_i``. This is the band cotangent
``-sym(bbar u^T)`` of :func:`bandsolve.solve_vjp` contracted with dM/dA, plus
the path through b, collapsed row by row: every row touches at most three
blocks, so the whole vjp is local in t, linear in T and never forms d_bands.
The step sizes enter the Taylor rows through ``s = +-h[t]`` and the central
rows through ``s = h[t] + h[t+1]``; their gradient is the sum over rows of the
row-entry gradients times ``d(entry)/ds`` times ``ds/dh``.

``assemble_bands_xp`` and ``gradients_xp`` work on any array module ``xp``
(NumPy or CuPy); their loops run over the D dimensions and the O orders only,
never over T or the batch. On the CPU, :func:`assemble_bands` and
:func:`gradients` dispatch to the Numba kernels of ``smnn._cpu`` (same math,
one pass over the band, parallel over the batch).
"""

import math

import numba
import numpy as np

from . import _cpu
from ._plan import broadcast_rows

__all__ = ["assemble_bands", "assemble_factor", "assemble_solve", "assemble_rhs", "gradients",
           "assemble_bands_xp", "gradients_xp"]


def _flat(coef):
    """(..., Tc, E, D, O) -> (..., Tc, E, k)."""
    return coef.reshape(coef.shape[:-2] + (coef.shape[-2] * coef.shape[-1],))


def _taylor_table(O, Os):
    """F[o, o'] = 1/(o'-o)! for o' >= o (o < Os), else 0; NumPy (Os, O)."""
    F = np.zeros((Os, O))
    for o in range(Os):
        for op in range(o, O):
            F[o, op] = 1.0 / math.factorial(op - o)
    return F


def _powers(xp, s, O):
    """s^o and d(s^o)/ds = o s^(o-1) for o < O: two (..., O) arrays."""
    pw = [xp.ones_like(s)]
    for _ in range(1, O):
        pw.append(pw[-1] * s)
    dpw = [xp.zeros_like(s)] + [o * pw[o - 1] for o in range(1, O)]
    return xp.stack(pw, axis=-1), xp.stack(dpw, axis=-1)


def _taylor_rows(xp, plan, sign):
    """Row coefficients of the Taylor rows for s = sign*h and their s-derivatives.

    Returns P (..., T-1, Os, O): the coefficients on block a; Pd = dP/ds;
    q (..., T-1, Os): the coefficient -s^o on block n; qd = dq/ds.
    """
    O, Os = plan.O, plan.n_smooth_orders
    s = plan.steps if sign > 0 else -plan.steps
    pw, dpw = _powers(xp, s, O)
    F = xp.asarray(_taylor_table(O, Os), dtype=plan.dtype)
    P = pw[..., None, :] * F
    Pd = dpw[..., None, :] * F
    return P, Pd, -pw[..., :Os], -dpw[..., :Os]


def _central_coefficients(xp, plan):
    """a = s^{O-3}, b = s^{O-2} (and derivatives) for s = h[t] + h[t+1], t < T-2."""
    O = plan.O
    s = plan.steps[..., :-1] + plan.steps[..., 1:]
    pw, dpw = _powers(xp, s, O - 1)
    return pw[..., O - 3], pw[..., O - 2], dpw[..., O - 3], dpw[..., O - 2]


def _kernel_inputs(plan, batch, dtype, flat_coef=False):
    """Flattened (array, index map) pairs of the M inputs for the CPU kernels
    (coefficients as (n, Tc, E, k) with ``flat_coef``)."""
    coef = _cpu.flat_batch(plan.coef, 4, batch, dtype)
    if flat_coef:
        coef = (coef[0].reshape(coef[0].shape[:3] + (plan.k,)), coef[1])
    return (
        coef,
        _cpu.flat_batch(plan.steps, 1, batch, dtype),
        _cpu.flat_batch(broadcast_rows(np, plan.w_eq2, (plan.T, plan.E)), 2, batch, dtype),
        _cpu.flat_batch(plan.w_init2, 3, batch, dtype),
        _cpu.flat_batch(plan.w_smooth2, 3, batch, dtype),
    )


def assemble_bands(plan):
    """Lower block band of M, shape batch + (w+1, T, k, k)."""
    if plan.xp is not np:
        return assemble_bands_xp(plan)
    batch = plan.batch_shape
    (coef, cidx), (steps, sidx), (weq, weidx), (wi, wiidx), (ws, wsidx) = _kernel_inputs(
        plan, batch, plan.dtype, flat_coef=True)
    n_items = math.prod(batch)
    bands = np.empty((n_items, plan.bandwidth + 1, plan.T, plan.k, plan.k), dtype=plan.dtype)
    if n_items:
        F = _cpu.taylor_table(plan.O, plan.n_smooth_orders, plan.dtype)
        # Small batches: cut each item's steps into segments that fill the
        # SIMD lanes of every thread (at least 64 steps each).
        lanes = numba.get_num_threads() * _cpu.LANES
        n_seg = max(1, min(-(-lanes // n_items), plan.T // 64))
        _cpu.assemble_bands(coef, cidx, steps, sidx, weq, weidx, wi, wiidx, ws, wsidx, F,
                            plan.central, n_seg, bands)
    return bands.reshape(batch + bands.shape[1:])


def _fused_threads(plan, batch):
    """Threads for a kernel that assembles M inside the factor, or 0 where the
    band path is the better one: not NumPy, a batch too small to fill the
    lanes of every thread, or a matrix shared by several right-hand sides
    (``batch`` differs from M's: the band path factors it once)."""
    lanes = _cpu.LANES
    n_items = math.prod(batch)
    threads = max(1, min(numba.get_num_threads(), -(-n_items // lanes)))
    if (plan.xp is not np or plan.backend == "cuda" or tuple(batch) != tuple(plan.batch_shape)
            or n_items < 2 * threads * lanes):
        return 0
    return threads


def assemble_factor(plan):
    """Cholesky factor of M in bandsolve's lower storage, batch + (w+1, T, k,
    k), with M assembled inside the factor kernel (no band array); None where
    the band path is the better one (see ``_fused_threads``) or a pivot
    failed (the caller takes the band path, which raises the explained
    LinAlgError)."""
    batch = tuple(plan.batch_shape)
    threads = _fused_threads(plan, batch)
    if not threads:
        return None
    (coef, cidx), (steps, sidx), (weq, weidx), (wi, wiidx), (ws, wsidx) = _kernel_inputs(
        plan, batch, plan.dtype, flat_coef=True)
    F = _cpu.taylor_table(plan.O, plan.n_smooth_orders, plan.dtype)
    n_items = math.prod(batch)
    L = np.empty((n_items, plan.bandwidth + 1, plan.T, plan.k, plan.k), dtype=plan.dtype)
    info = np.zeros(n_items, dtype=np.int64)
    _cpu.assemble_factor(coef, cidx, steps, sidx, weq, weidx, wi, wiidx, ws, wsidx, F,
                         plan.central, L, info, threads)
    return None if info.any() else L.reshape(batch + L.shape[1:])


def assemble_solve(plan, batch, b):
    """Solve M x = b in place in ``b`` (batch + (T, k)) with M assembled inside
    the fused factor + solve kernel (no band array); True when done.

    False, with ``b`` unchanged, where the band path is the better one (not
    NumPy, a batch too small to fill the lanes of every thread, or a matrix
    shared by several right-hand sides: the band path factors it once). None,
    with ``b`` overwritten, when a pivot failed: the caller builds b again and
    takes the band path, which raises the explained LinAlgError.
    """
    threads = _fused_threads(plan, batch)
    if not threads or b.dtype != plan.dtype or not b.flags.c_contiguous:
        return False
    n_items = math.prod(batch)
    (coef, cidx), (steps, sidx), (weq, weidx), (wi, wiidx), (ws, wsidx) = _kernel_inputs(
        plan, batch, plan.dtype, flat_coef=True)
    F = _cpu.taylor_table(plan.O, plan.n_smooth_orders, plan.dtype)
    info = np.zeros(n_items, dtype=np.int64)
    X = b.reshape((n_items, plan.T, plan.k, 1))
    _cpu.assemble_solve(coef, cidx, steps, sidx, weq, weidx, wi, wiidx, ws, wsidx, F,
                        plan.central, X, info, threads)
    return None if info.any() else True


def gradients(plan, rhs_equation, init_vars, u, bbar):
    """Gradients of <g, u> for bbar = M^{-1} g (see :func:`gradients_xp`).

    Returns (d_coef, d_rhs, d_init, d_steps) broadcast against the batch, with
    the T dimension of coefficients, rhs_equation and init_vars as given.
    """
    if plan.xp is not np:
        return gradients_xp(plan, rhs_equation, init_vars, u, bbar)
    batch = tuple(u.shape[:-3])
    (coef, cidx), (steps, sidx), (weq, weidx), (wi, wiidx), (ws, wsidx) = _kernel_inputs(
        plan, batch, u.dtype)
    rhs = np.broadcast_to(rhs_equation, rhs_equation.shape[:-1] + (plan.E,))
    rhs, ridx = _cpu.flat_batch(rhs, 2, batch, u.dtype)
    n_items = math.prod(batch)
    T, E, D, O = plan.T, plan.E, plan.D, plan.O
    Tc, Tr, Tii = plan.coef.shape[-4], rhs.shape[1], init_vars.shape[-3]
    d_coef = np.zeros((n_items, Tc, E, D, O), dtype=u.dtype)
    d_rhs = np.zeros((n_items, Tr, E), dtype=u.dtype)
    d_init = np.zeros((n_items, Tii, D, plan.Oi), dtype=u.dtype)
    d_steps = np.zeros((n_items, max(T - 1, 0)), dtype=u.dtype)
    if n_items:
        F = _cpu.taylor_table(O, plan.n_smooth_orders, u.dtype)
        with _cpu.threads_for(n_items):
            _cpu.gradients(coef, cidx, rhs, ridx, steps, sidx, weq, weidx, wi, wiidx, ws, wsidx,
                           F, plan.central,
                           np.ascontiguousarray(u.reshape((n_items, T, D, O))),
                           np.ascontiguousarray(bbar.reshape((n_items, T, D, O))),
                           d_coef, d_rhs, d_init, d_steps)
    return (d_coef.reshape(batch + d_coef.shape[1:]), d_rhs.reshape(batch + d_rhs.shape[1:]),
            d_init.reshape(batch + d_init.shape[1:]), d_steps.reshape(batch + d_steps.shape[1:]))


def assemble_bands_xp(plan):
    """Lower block band of M, shape batch + (w+1, T, k, k) (array-module version)."""
    xp, T, D, O, k = plan.xp, plan.T, plan.D, plan.O, plan.k
    n_diag = plan.bandwidth + 1
    bands = xp.zeros(plan.batch_shape + (n_diag, T, k, k), dtype=plan.dtype)
    # (..., w+1, T, D, O, D, O): a view, as ``bands`` is freshly allocated.
    view = bands.reshape(plan.batch_shape + (n_diag, T, D, O, D, O))

    # Equation rows: sum_e w_eq^2 c_e c_e^T (on the un-broadcast T of c).
    c = _flat(plan.coef)
    cw = c * plan.w_eq2[..., None]
    bands[..., 0, :, :, :] += xp.matmul(xp.swapaxes(cw, -1, -2), c)

    # Initial-value rows: w_init^2 on the diagonal of the first Ti blocks.
    for d in range(D):
        for o in range(plan.Oi):
            view[..., 0, : plan.Ti, d, o, d, o] += plan.w_init2[..., d, o]

    if T < 2:
        return bands
    Os = plan.n_smooth_orders
    wsq = plan.w_smooth2[..., :Os]  # (..., T-1, D, Os)
    for sign in (1, -1):
        P, _, q, _ = _taylor_rows(xp, plan, sign)  # (.., T-1, Os, O), (.., T-1, Os)
        P = P[..., None, :, :]  # (..., T-1, 1, Os, O)
        q = q[..., None, :]  # (..., T-1, 1, Os)
        wP = wsq[..., None] * P  # (..., T-1, D, Os, O)
        S_aa = xp.matmul(xp.swapaxes(P, -1, -2), wP)  # sum_o w^2 p p^T: (.., T-1, D, O, O)
        S_nn = wsq * q * q  # diagonal entries (o < Os): (..., T-1, D, Os)
        S_na = q[..., None] * wP  # [o, o'] = w^2 q_o P[o, o']: (..., T-1, D, Os, O)
        # Forward rows: a = t, n = t+1, M[t+1, t] += w^2 q p^T.
        # Backward rows: a = t+1, n = t, M[t+1, t] += w^2 p q^T.
        aa, nn = (slice(0, T - 1), slice(1, T)) if sign > 0 else (slice(1, T), slice(0, T - 1))
        for d in range(D):
            view[..., 0, aa, d, :, d, :] += S_aa[..., d, :, :]
            for o in range(Os):
                view[..., 0, nn, d, o, d, o] += S_nn[..., d, o]
            if sign > 0:
                view[..., 1, : T - 1, d, :Os, d, :] += S_na[..., d, :, :]
            else:
                view[..., 1, : T - 1, d, :, d, :Os] += xp.swapaxes(S_na[..., d, :, :], -1, -2)

    if plan.central and T > 2:
        a, b, _, _ = _central_coefficients(xp, plan)  # (..., T-2)
        wc = plan.w_smooth2[..., : T - 2, :, O - 1]  # (..., T-2, D)
        i, j = O - 2, O - 1  # orders of the outer entries and of the middle entry
        for d in range(D):
            wcd = wc[..., d]
            waa, wab, wbb = wcd * a * a, wcd * a * b, wcd * b * b
            view[..., 0, : T - 2, d, i, d, i] += waa
            view[..., 0, 1 : T - 1, d, j, d, j] += wbb
            view[..., 0, 2:T, d, i, d, i] += waa
            view[..., 1, : T - 2, d, j, d, i] += wab
            view[..., 1, 1 : T - 1, d, i, d, j] -= wab
            view[..., 2, : T - 2, d, i, d, i] -= waa
    return bands


def assemble_rhs(plan, rhs_equation, init_vars, batch_shape, dtype):
    """Right-hand side b = A^T W^2 r, shape ``batch_shape + (T, k)``."""
    xp, T, D, O, k = plan.xp, plan.T, plan.D, plan.O, plan.k
    c = _flat(plan.coef)
    rw = (rhs_equation * plan.w_eq2)[..., None, :]  # (..., T|1, 1, E)
    b = xp.zeros(batch_shape + (T, k), dtype=dtype)
    b += xp.matmul(rw, c)[..., 0, :]
    view = b.reshape(batch_shape + (T, D, O))  # a view of the fresh ``b``
    view[..., : plan.Ti, :, : plan.Oi] += plan.w_init2 * init_vars
    return b


def _row_terms(rho, beta, bbar, u):
    """w-free row-entry gradient rho * bbar - beta * u (broadcasting)."""
    return rho * bbar - beta * u


def gradients_xp(plan, rhs_equation, init_vars, u, bbar):
    """Gradients of <g, u> for bbar = M^{-1} g, at full broadcast shapes.

    ``u`` and ``bbar`` are (..., T, D, O). Returns (d_coef (..., Tc, E, D, O),
    d_rhs (..., T, E), d_init (..., Ti, D, Oi), d_steps (..., T-1)), each
    broadcast against the batch (the caller sums to the input shapes).
    """
    xp, T, O = plan.xp, plan.T, plan.O
    weq2 = plan.w_eq2
    # Equation rows.
    c = plan.coef  # (..., Tc, E, D, O)
    c_flat = _flat(c)
    u_flat = u.reshape(u.shape[:-2] + (plan.k,))
    b_flat = bbar.reshape(bbar.shape[:-2] + (plan.k,))
    rho = rhs_equation - xp.matmul(c_flat, u_flat[..., None])[..., 0]  # (..., T, E)
    beta = xp.matmul(c_flat, b_flat[..., None])[..., 0]
    d_rhs = weq2 * beta
    wr, wb = weq2 * rho, weq2 * beta
    d_coef = (wr[..., None, None] * bbar[..., None, :, :]
              - wb[..., None, None] * u[..., None, :, :])
    # Initial rows.
    d_init = plan.w_init2 * bbar[..., : plan.Ti, :, : plan.Oi]

    # Step sizes.
    d_steps = xp.zeros(u.shape[:-3] + (max(T - 1, 0),), dtype=plan.dtype)
    if T >= 2:
        Os = plan.n_smooth_orders
        wsq = plan.w_smooth2[..., :Os]
        for sign in (1, -1):
            P, Pd, q, qd = _taylor_rows(xp, plan, sign)
            P, Pd = P[..., None, :, :], Pd[..., None, :, :]  # (.., T-1, 1, Os, O)
            q, qd = q[..., None, :], qd[..., None, :]  # (.., T-1, 1, Os)
            if sign > 0:
                ua, un, ba, bn = u[..., :-1, :, :], u[..., 1:, :, :], bbar[..., :-1, :, :], bbar[..., 1:, :, :]
            else:
                ua, un, ba, bn = u[..., 1:, :, :], u[..., :-1, :, :], bbar[..., 1:, :, :], bbar[..., :-1, :, :]
            rho = -(xp.matmul(P, ua[..., None])[..., 0] + q * un[..., :Os])  # (.., T-1, D, Os)
            beta = xp.matmul(P, ba[..., None])[..., 0] + q * bn[..., :Os]
            wr, wb = wsq * rho, wsq * beta
            g_a = (xp.matmul(Pd, ba[..., None])[..., 0] * wr
                   - xp.matmul(Pd, ua[..., None])[..., 0] * wb)
            g_n = qd * (wr * bn[..., :Os] - wb * un[..., :Os])
            d_steps += sign * (g_a + g_n).sum(axis=(-2, -1))
        if plan.central and T > 2:
            a, b, da, db = _central_coefficients(xp, plan)
            wc = plan.w_smooth2[..., : T - 2, :, O - 1]  # (..., T-2, D)
            i, j = O - 2, O - 1
            u0, u1, u2 = u[..., : T - 2, :, i], u[..., 1 : T - 1, :, j], u[..., 2:, :, i]
            b0, b1, b2 = bbar[..., : T - 2, :, i], bbar[..., 1 : T - 1, :, j], bbar[..., 2:, :, i]
            a, b, da, db = a[..., None], b[..., None], da[..., None], db[..., None]
            rho = -(a * u0 + b * u1 - a * u2)  # (..., T-2, D)
            beta = a * b0 + b * b1 - a * b2
            wr, wb = wc * rho, wc * beta
            g = (da * (wr * (b0 - b2) - wb * (u0 - u2)) + db * (wr * b1 - wb * u1)).sum(axis=-1)
            d_steps[..., : T - 2] += g
            d_steps[..., 1 : T - 1] += g
    return d_coef, d_rhs, d_init, d_steps
