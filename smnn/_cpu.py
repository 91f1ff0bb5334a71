"""Numba CPU kernels: band assembly of the S-MNN normal equations and its adjoint.

The same rows, normal equations and row-local adjoint as ``smnn._assembly``
(whose docstring states the math); here each batch item is one ``prange``
iteration that walks t once and writes every band entry of its item, so the
band array is touched once (no temporaries the size of the band).
``assemble_solve`` goes further for batches that fill the SIMD lanes: it
assembles block column t of LANES items into the ring of bandsolve's fused
factor + solve (``bandsolve._kernels_simd``), so M never exists as an array.

Batch broadcasting is by index maps: an input with its own batch of n items is
passed flattened as (n, core...) together with an int64 map ``idx`` (B,) from
the batch item to its row; core dimensions that broadcast are zero-stride
views (read only). The T dimension of the coefficients, of ``rhs_equation``
and of ``init_vars`` may be 1 (constant in time): the kernels index it with
``t if size > 1 else 0`` and, in the adjoint, accumulate into it.
"""

import contextlib
import math

import numba
import numpy as np
from numba import njit, prange

from bandsolve import _kernels_simd as _ks

_OPTS = dict(cache=True, nogil=True, fastmath={"contract"})
_INLINE = dict(_OPTS, inline="always")

__all__ = ["assemble_bands", "assemble_solve", "gradients", "flat_batch", "threads_for"]

LANES = _ks.LANES


@contextlib.contextmanager
def threads_for(n_items):
    """Use at most ``n_items`` Numba threads for the kernels called inside.

    The kernels are parallel over the batch only; with fewer items than
    threads the idle threads still join every parallel region, which costs
    milliseconds when the machine is oversubscribed. ``set_num_threads`` is
    thread-local, so concurrent calls do not interfere.
    """
    n_threads = numba.get_num_threads()
    use = max(1, min(n_threads, n_items))
    if use == n_threads:
        yield
        return
    numba.set_num_threads(use)
    try:
        yield
    finally:
        numba.set_num_threads(n_threads)


def flat_batch(a, rank, batch, dtype):
    """(a flattened to (n, core...), int64 map (prod(batch),) to its rows).

    The flattened array is C-contiguous, of ``dtype`` and read only, so that
    the kernels are compiled once per dtype (not per layout or writability).
    """
    own = tuple(a.shape[: a.ndim - rank])
    core = tuple(a.shape[a.ndim - rank:])
    n = math.prod(own)
    flat = np.ascontiguousarray(a.reshape((n,) + core), dtype=dtype).view()
    flat.flags.writeable = False
    if own == tuple(batch):
        idx = np.arange(n, dtype=np.int64)
    else:
        idx = np.broadcast_to(np.arange(n, dtype=np.int64).reshape(own), batch).ravel()
    return flat, idx


def taylor_table(O, Os, dtype):
    """F[o, o'] = 1/(o'-o)! for o' >= o, else 0: (Os, O)."""
    F = np.zeros((Os, O), dtype=dtype)
    for o in range(Os):
        for op in range(o, O):
            F[o, op] = 1.0 / math.factorial(op - o)
    return F


@njit(**_OPTS)
def _powers(s, pw, dpw):
    """pw[n] = s^n, dpw[n] = n s^(n-1)."""
    pw[0] = 1.0
    dpw[0] = 0.0
    for n in range(1, pw.shape[0]):
        pw[n] = pw[n - 1] * s
        dpw[n] = n * pw[n - 1]


@njit(**_OPTS)
def _taylor_matrices(w, F, K1, K2, K3):
    """Weight-only factors of the Taylor blocks of one step and one dimension.

    With hp[o1, o2] = h^{o1+o2}, G = sum_{o < Os} w_o F[o]^T F[o] and
    W = diag(w_o, o < Os), the forward and backward rows of the step add
    hp * K1 to M[t, t], hp * K2 to M[t+1, t+1] and hp * K3 to M[t+1, t]::

        K1 = G + W,   K2 = sgn * G + W,   K3 = -(W F + sgn * (W F)^T),

    sgn[o1, o2] = (-1)^{o1+o2} (the backward rows have s = -h).
    """
    Os, O = F.shape[0], F.shape[1]
    for o1 in range(O):
        for o2 in range(O):
            g = 0.0
            for o in range(min(o1, o2, Os - 1) + 1):
                g += w[o] * F[o, o1] * F[o, o2]
            sgn = 1.0 if (o1 + o2) % 2 == 0 else -1.0
            diag = w[o1] if (o1 == o2 and o1 < Os) else 0.0
            K1[o1, o2] = g + diag
            K2[o1, o2] = sgn * g + diag
            wf12 = w[o1] * F[o1, o2] if o1 < Os else 0.0
            wf21 = w[o2] * F[o2, o1] if o2 < Os else 0.0
            K3[o1, o2] = -(wf12 + sgn * wf21)


@njit(**_OPTS)
def _refresh(ws_t, cached, K1, K2, K3, F):
    """Recompute K1..K3 of each dimension whose weights differ from ``cached``."""
    D, O = ws_t.shape[0], ws_t.shape[1]
    for d in range(D):
        same = True
        for o in range(O):
            if ws_t[d, o] != cached[d, o]:
                same = False
        if not same:
            for o in range(O):
                cached[d, o] = ws_t[d, o]
            _taylor_matrices(ws_t[d], F, K1[d], K2[d], K3[d])


@njit(**_INLINE)
def _assemble_column(t, c, h, we, wi, ws, F, central, hp, dhp, K1, K2, K3, cached, carry,
                     acc, off, low):
    """Block column t of M: acc = M[t, t] (full, symmetric), off = M[t+1, t],
    low = M[t+2, t] (central rows only).

    ``carry`` holds the contributions of step t-1 to block t on entry and
    those of step t to block t+1 on exit (zero at t = 0); hp, dhp, K1..K3 and
    ``cached`` are scratch that ``_refresh`` keeps between columns.
    """
    T = h.shape[0] + 1
    Tc, E = c.shape[0], c.shape[1]
    Ti, Oi = wi.shape[0], wi.shape[2]
    D, O = K1.shape[0], K1.shape[1]
    k = D * O
    tc = t if Tc > 1 else 0
    # Equation rows: sum_e w c_e c_e^T (lower triangle, mirrored).
    for i in range(k):
        for j in range(i + 1):
            v = carry[i, j]
            for e in range(E):
                v += we[t, e] * c[tc, e, i] * c[tc, e, j]
            acc[i, j] = v
            acc[j, i] = v
    carry[...] = 0.0
    # Initial-value rows.
    if t < Ti:
        for d in range(D):
            for o in range(Oi):
                acc[d * O + o, d * O + o] += wi[t, d, o]
    off[...] = 0.0
    if t < T - 1:
        # Taylor rows of step t (forward and backward).
        _refresh(ws[t], cached, K1, K2, K3, F)
        _powers(h[t], hp, dhp)
        for d in range(D):
            base = d * O
            for o1 in range(O):
                for o2 in range(O):
                    v = hp[o1 + o2]
                    acc[base + o1, base + o2] += v * K1[d, o1, o2]
                    carry[base + o1, base + o2] += v * K2[d, o1, o2]
                    off[base + o1, base + o2] = v * K3[d, o1, o2]
    if central:
        # Central rows r = t-2, t-1, t with entries ca (block r, order
        # O-2), cb (block r+1, order O-1), -ca (block r+2, order O-2).
        i0, j0 = O - 2, O - 1
        low[...] = 0.0
        for r in range(max(t - 2, 0), min(t, T - 3) + 1):
            _powers(h[r] + h[r + 1], hp, dhp)
            ca, cb = hp[O - 3], hp[O - 2]
            for d in range(D):
                w = ws[r, d, O - 1]
                i = d * O + i0
                j = d * O + j0
                if r == t:
                    acc[i, i] += w * ca * ca
                    off[j, i] += w * cb * ca  # M[t+1, t]
                    low[i, i] = -w * ca * ca  # M[t+2, t]
                elif r == t - 1:
                    acc[j, j] += w * cb * cb
                    off[i, j] -= w * ca * cb  # M[t+1, t] = M[r+2, r+1]
                else:
                    acc[i, i] += w * ca * ca


@njit(parallel=True, **_OPTS)
def assemble_bands(coef, cidx, steps, sidx, weq, weidx, winit, wiidx, wsm, wsidx, F,
                   central, bands):
    """Write the lower block band of M into ``bands`` (B, w+1, T, k, k).

    coef (nc, Tc, E, D, O); steps (ns, T-1); weq (nwe, T, E), winit
    (nwi, Ti, D, Oi), wsm (nws, T-1, D, O): squared weights; F the Taylor
    table (Os, O). Every block is accumulated in a local k x k buffer and
    written once (the contributions of step t to block t+1 are carried); the
    diagonal blocks are written in full (symmetric), padding blocks are zero.
    """
    B, T, k = bands.shape[0], bands.shape[2], bands.shape[3]
    Tc, E, D, O = coef.shape[1], coef.shape[2], coef.shape[3], coef.shape[4]
    dt = bands.dtype
    for b in prange(B):
        M = bands[b]
        c = coef[cidx[b]].reshape((Tc, E, k))
        hp = np.empty(2 * O - 1, dtype=dt)
        dhp = np.empty(2 * O - 1, dtype=dt)
        K1 = np.empty((D, O, O), dtype=dt)
        K2 = np.empty((D, O, O), dtype=dt)
        K3 = np.empty((D, O, O), dtype=dt)
        cached = np.full((D, O), np.nan, dtype=dt)
        acc = np.empty((k, k), dtype=dt)
        carry = np.zeros((k, k), dtype=dt)  # contributions of step t-1 to block t
        off = np.empty((k, k), dtype=dt)
        low = np.empty((k, k), dtype=dt)
        for t in range(T):
            _assemble_column(t, c, steps[sidx[b]], weq[weidx[b]], winit[wiidx[b]],
                             wsm[wsidx[b]], F, central, hp, dhp, K1, K2, K3, cached, carry,
                             acc, off, low)
            M[0, t] = acc
            M[1, t] = off
            if central:
                M[2, t] = low


@njit(parallel=True, **_OPTS)
def gradients(coef, cidx, rhs, ridx, steps, sidx, weq, weidx, winit, wiidx, wsm, wsidx, F,
              central, u, bbar, d_coef, d_rhs, d_init, d_steps):
    """Accumulate the gradients of <g, u> per batch item.

    u, bbar (B, T, D, O) with bbar = M^{-1} g; rhs (nr, Tr, E); outputs, all
    zeroed: d_coef (B, Tc, E, D, O), d_rhs (B, Tr, E), d_init (B, Tii, D, Oi)
    with Tii in {1, Ti}, d_steps (B, T-1).

    Equation and initial rows use the row-local form (rho = r - a.u,
    beta = a.bbar). The steps use the band form of the same adjoint,
    dL/dh = -bbar^T (dM/dh) u, with the Taylor blocks hp * K (see
    :func:`_taylor_matrices`), d(hp)/dh = (o1+o2) h^{o1+o2-1}.
    """
    B, T, D, O = u.shape[0], u.shape[1], u.shape[2], u.shape[3]
    Tc, E = coef.shape[1], coef.shape[2]
    k = D * O
    Tr = rhs.shape[1]
    Ti, Oi = winit.shape[1], winit.shape[3]
    Tii = d_init.shape[1]
    dt = u.dtype
    for b in prange(B):
        c = coef[cidx[b]].reshape((Tc, E, k))
        r = rhs[ridx[b]]
        h = steps[sidx[b]]
        we = weq[weidx[b]]
        wi = winit[wiidx[b]]
        ws = wsm[wsidx[b]]
        x = u[b]
        y = bbar[b]
        xf = x.reshape((T, k))
        yf = y.reshape((T, k))
        dc = d_coef[b].reshape((Tc, E, k))
        hp = np.empty(2 * O - 1, dtype=dt)
        dhp = np.empty(2 * O - 1, dtype=dt)
        K1 = np.empty((D, O, O), dtype=dt)
        K2 = np.empty((D, O, O), dtype=dt)
        K3 = np.empty((D, O, O), dtype=dt)
        cached = np.full((D, O), np.nan, dtype=dt)
        for t in range(T):
            tc = t if Tc > 1 else 0
            tr = t if Tr > 1 else 0
            # Equation rows.
            for e in range(E):
                cu = 0.0
                cb = 0.0
                for i in range(k):
                    cu += c[tc, e, i] * xf[t, i]
                    cb += c[tc, e, i] * yf[t, i]
                w = we[t, e]
                wr = w * (r[tr, e] - cu)
                wb = w * cb
                d_rhs[b, tr, e] += wb
                for i in range(k):
                    dc[tc, e, i] += wr * yf[t, i] - wb * xf[t, i]
            # Initial-value rows.
            if t < Ti:
                ti = t if Tii > 1 else 0
                for d in range(D):
                    for o in range(Oi):
                        d_init[b, ti, d, o] += wi[t, d, o] * y[t, d, o]
            if t == T - 1:
                continue
            # Taylor rows of step t: -bbar^T dM u over blocks (t,t), (t+1,t+1),
            # (t+1,t) and its transpose.
            _refresh(ws[t], cached, K1, K2, K3, F)
            _powers(h[t], hp, dhp)
            g = 0.0
            for d in range(D):
                for o1 in range(O):
                    for o2 in range(O):
                        g -= dhp[o1 + o2] * (
                            K1[d, o1, o2] * y[t, d, o1] * x[t, d, o2]
                            + K2[d, o1, o2] * y[t + 1, d, o1] * x[t + 1, d, o2]
                            + K3[d, o1, o2] * (y[t + 1, d, o1] * x[t, d, o2]
                                               + x[t + 1, d, o1] * y[t, d, o2]))
            d_steps[b, t] += g
            # Central row of (t, t+1, t+2), row-local: entries ca, cb, -ca
            # with s = h[t] + h[t+1].
            if central and t < T - 2:
                _powers(h[t] + h[t + 1], hp, dhp)
                ca, cb, dca, dcb = hp[O - 3], hp[O - 2], dhp[O - 3], dhp[O - 2]
                i, j = O - 2, O - 1
                gc = 0.0
                for d in range(D):
                    w = ws[t, d, O - 1]
                    au = ca * x[t, d, i] + cb * x[t + 1, d, j] - ca * x[t + 2, d, i]
                    ab = ca * y[t, d, i] + cb * y[t + 1, d, j] - ca * y[t + 2, d, i]
                    wr = -w * au
                    wb = w * ab
                    gc += (dca * (wr * (y[t, d, i] - y[t + 2, d, i])
                                  - wb * (x[t, d, i] - x[t + 2, d, i]))
                           + dcb * (wr * y[t + 1, d, j] - wb * x[t + 1, d, j]))
                d_steps[b, t] += gc
                d_steps[b, t + 1] += gc


@njit(parallel=True, **_OPTS)
def assemble_solve(coef, cidx, steps, sidx, weq, weidx, winit, wiidx, wsm, wsidx, F, central,
                   X, info, n_threads, nt_min_bytes=_ks.NT_MIN_BYTES):
    """X[i] <- M_i^{-1} X[i] with M assembled on the fly: no band array.

    The fused factor + solve of ``bandsolve._kernels_simd.factor_solve``
    (LANES items per chunk in the lanes of a ring of w+1 block rows), fed by
    ``_assemble_column`` per lane instead of a gather from the band: each lane
    assembles block column t of its item's M into a ring of w+1 columns, and
    block row t of the band, M[t, t-d] for d <= w, is read from columns t-d.
    X (B, T, k, nrhs); inputs as in ``assemble_bands`` with maps over the B
    items. ``info`` as in bandsolve (failed items: NaN in X).
    """
    B, T, k, nrhs = X.shape[0], X.shape[1], X.shape[2], X.shape[3]
    Tc, E, D, O = coef.shape[1], coef.shape[2], coef.shape[3], coef.shape[4]
    n_diag = 3 if central else 2
    LANES = _ks.LANES
    kk = k * k
    block = kk * LANES
    row_stride = n_diag * block
    dt = X.dtype
    n_chunks = (B + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    coupled, frow = _ks.fused_form(n_workers, T, n_diag, k, X.itemsize, nt_min_bytes)
    for worker in prange(n_workers):
        W, R, Xb, Fb, Y, items, stat = _ks.fused_workspace(T, n_diag, k, nrhs, frow, X)
        lanes = np.arange(LANES)
        # per lane: assembly state and a ring of n_diag assembled columns
        # (slot t % n_diag holds M[t, t], M[t+1, t], M[t+2, t])
        cols = np.empty((LANES, n_diag * n_diag * kk), dtype=dt)
        hp = np.empty(2 * O - 1, dtype=dt)
        dhp = np.empty(2 * O - 1, dtype=dt)
        K1 = np.empty((LANES, D, O, O), dtype=dt)
        K2 = np.empty((LANES, D, O, O), dtype=dt)
        K3 = np.empty((LANES, D, O, O), dtype=dt)
        cached = np.empty((LANES, D, O), dtype=dt)
        carry = np.empty((LANES, k, k), dtype=dt)
        acc = np.empty((k, k), dtype=dt)
        off = np.empty((k, k), dtype=dt)
        low = np.zeros((k, k), dtype=dt)
        acc1, off1, low1 = acc.reshape(kk), off.reshape(kk), low.reshape(kk)
        for chunk in range(worker, n_chunks, n_workers):
            i0, n_valid = _ks._start_chunk(chunk, B, items, stat)
            cached[...] = np.nan
            carry[...] = 0.0
            for t in range(T):
                slot = (t % n_diag) * n_diag * kk
                for l in range(LANES):
                    b = items[l]
                    _assemble_column(t, coef[cidx[b]].reshape((Tc, E, k)), steps[sidx[b]],
                                     weq[weidx[b]], winit[wiidx[b]], wsm[wsidx[b]], F, central,
                                     hp, dhp, K1[l], K2[l], K3[l], cached[l], carry[l],
                                     acc, off, low)
                    cl = cols[l]
                    for e in range(kk):
                        cl[slot + e] = acc1[e]
                        cl[slot + kk + e] = off1[e]
                    if central:
                        for e in range(kk):
                            cl[slot + 2 * kk + e] = low1[e]
                dmax = min(n_diag - 1, t)
                own = (t % n_diag) * row_stride
                for d in range(dmax + 1):  # M[t, t-d]: block d of column t-d
                    src = (((t - d) % n_diag) * n_diag + d) * kk
                    _ks._gather_block(cols, lanes, src, W, own + d * block, k)
                _ks._gather_rhs(X, items, Y, t, k, nrhs)
                _ks._fused_row(W, R, Y, Fb, Xb, stat, t, T, n_diag, k, nrhs, frow, coupled)
            _ks._fused_backward(W, R, Y, Fb, X, items, n_valid, T, n_diag, k, nrhs, frow,
                                coupled)
            _ks._finish_fused_chunk(stat, info, X, i0, n_valid)
