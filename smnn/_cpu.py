"""Numba CPU kernels: band assembly of the S-MNN normal equations and its adjoint.

The same rows, normal equations and row-local adjoint as ``smnn._assembly``
(whose docstring states the math). M is assembled in the SIMD lanes of
``bandsolve._simd``: ``_assemble_lanes`` builds block column t of M for LANES
batch items at once (element (i, j) of lane l at (i*k + j)*LANES + l), each
chunk of LANES items walking t once, so every band entry is written once and
nothing the size of the band is allocated besides it. Batches too small to
fill the lanes of every thread cut each item's steps into segments, one per
lane (a segment starting at t0 > 0 first assembles column t0-1 for the
contributions it carries into t0). ``assemble_solve`` and
``assemble_factor`` go further for batches that fill the lanes: the
assembled columns feed the ring of bandsolve's fused factor + solve or of its
factor kernel (``bandsolve._kernels_simd``), so M never exists as an array.
All paths share ``_assemble_lanes`` and stay bitwise equal. The gradient
kernel is one ``prange`` iteration per item (it is memory bound: a lane
version was no faster).

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
from bandsolve._simd import vfma, vfnma, vload, vmul, vsplat, vstore

_OPTS = dict(cache=True, nogil=True, fastmath={"contract"})
_INLINE = dict(_OPTS, inline="always")

__all__ = ["assemble_bands", "assemble_solve", "assemble_factor", "gradients", "flat_batch",
           "threads_for"]

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
def _lane_scratch(E, D, O, k, n_cols, dt):
    """Scratch of ``_assemble_lanes`` for one chunk of LANES items."""
    kk = k * k
    cv = np.empty(E * k * LANES, dtype=dt)          # c[t, e, i] per lane
    wc = np.empty(E * k * LANES, dtype=dt)          # w_eq[t, e] c[t, e, i]
    hp = np.empty((2 * O - 1) * LANES, dtype=dt)    # powers of the step
    hv = np.empty(2 * LANES, dtype=dt)              # a step and a weight per lane
    Kv = np.empty(3 * D * O * O * LANES, dtype=dt)  # K1, K2, K3 per lane
    Ks = np.empty((3, D, O, O), dtype=dt)           # one lane's K1..K3
    cached = np.empty((LANES, D, O), dtype=dt)      # the weights Kv was built from
    carry = np.empty(kk * LANES, dtype=dt)
    cols = np.zeros(n_cols * kk * LANES, dtype=dt)  # assembled blocks
    rows = np.empty((5, LANES), dtype=np.int64)     # each lane's row of the inputs
    tl = np.zeros(LANES, dtype=np.int64)            # each lane's step t
    return cv, wc, hp, hv, Kv, Ks, cached, carry, cols, rows, tl


@njit(**_INLINE)
def _start_lanes(items, cidx, sidx, weidx, wiidx, wsidx, rows, Kv, cached, carry):
    """Input rows of the lanes' items; assembly state reset for t = 0."""
    for l in range(LANES):
        b = items[l]
        rows[0, l] = cidx[b]
        rows[1, l] = sidx[b]
        rows[2, l] = weidx[b]
        rows[3, l] = wiidx[b]
        rows[4, l] = wsidx[b]
    Kv[:] = 0.0
    cached[...] = np.nan
    carry[:] = 0.0


@njit(**_INLINE)
def _lane_powers(hv, hp):
    """hp[n] = hv^n (lane layout), as ``_powers``."""
    vstore(hp, 0, vsplat(1.0, vload(hv, 0)))
    for n in range(1, hp.shape[0] // LANES):
        vstore(hp, n * LANES, vmul(vload(hp, (n - 1) * LANES), vload(hv, 0)))


@njit(**_INLINE)
def _assemble_lanes(tl, rows, coef, steps, weq, winit, wsm, F, central, cv, wc, hp, hv, Kv, Ks,
                    cached, carry, cols, c0):
    """Block column tl[l] of M for the item of each SIMD lane l, in lane layout.

    Writes M[t, t] (full, symmetric), M[t+1, t] and, with central rows,
    M[t+2, t] to ``cols`` from offset c0, one block of k*k*LANES after the
    other, element (i, j) of lane l at (i*k + j)*LANES + l. coef (nc, Tc, E, k),
    the other inputs as in ``assemble_bands``, ``rows`` each lane's row of
    them (``_start_lanes``). ``carry`` holds the contributions of step t-1 to
    block t on entry and those of step t to block t+1 on exit; ``Kv`` and
    ``cached`` keep the Taylor blocks between columns (rebuilt per lane when
    its weights change). Lanes may be at different steps: a row a lane does
    not have (no step after T-1, central rows outside [0, T-3]) enters it with
    weight 0, so a lane's result depends on its item and t only (up to the
    sign of zeros).
    """
    T = steps.shape[1] + 1
    Tc, E, k = coef.shape[1], coef.shape[2], coef.shape[3]
    Ti, D, Oi = winit.shape[1], winit.shape[2], winit.shape[3]
    O = Ks.shape[2]
    block = k * k * LANES
    acc, off, low = c0, c0 + block, c0 + 2 * block
    kv2, kv3 = D * O * O * LANES, 2 * D * O * O * LANES
    # Equation rows: sum_e w c_e c_e^T (lower triangle, mirrored).
    for e in range(E):
        for i in range(k):
            o = (e * k + i) * LANES
            for l in range(LANES):
                t = tl[l]
                c = coef[rows[0, l], t if Tc > 1 else 0, e, i]
                cv[o + l] = c
                wc[o + l] = weq[rows[2, l], t, e] * c
    for i in range(k):
        for j in range(i + 1):
            v = vload(carry, (i * k + j) * LANES)
            for e in range(E):
                v = vfma(v, vload(wc, (e * k + i) * LANES), vload(cv, (e * k + j) * LANES))
            vstore(cols, acc + (i * k + j) * LANES, v)
            vstore(cols, acc + (j * k + i) * LANES, v)
    carry[:] = 0.0
    # Initial-value rows.
    for l in range(LANES):
        t = tl[l]
        if t < Ti:
            for d in range(D):
                for o in range(Oi):
                    cols[acc + ((d * O + o) * k + d * O + o) * LANES + l] += winit[rows[3, l], t, d, o]
    # Taylor rows of step t (forward and backward).
    cols[off:off + block] = 0.0
    n_step = 0
    for l in range(LANES):
        t = tl[l]
        hv[l] = 0.0
        if t < T - 1:
            n_step += 1
            hv[l] = steps[rows[1, l], t]
            ws_t = wsm[rows[4, l], t]
            same = True
            for d in range(D):
                for o in range(O):
                    if ws_t[d, o] != cached[l, d, o]:
                        same = False
            if not same:
                for d in range(D):
                    for o in range(O):
                        cached[l, d, o] = ws_t[d, o]
                    _taylor_matrices(ws_t[d], F, Ks[0, d], Ks[1, d], Ks[2, d])
                for m in range(3):
                    for d in range(D):
                        for o1 in range(O):
                            for o2 in range(O):
                                Kv[(((m * D + d) * O + o1) * O + o2) * LANES + l] = Ks[m, d, o1, o2]
    if n_step:
        _lane_powers(hv, hp)
        for l in range(LANES):
            if tl[l] >= T - 1:
                hp[l] = 0.0  # with hv = 0 every power is then 0
        for d in range(D):
            base = d * O
            for o1 in range(O):
                for o2 in range(O):
                    v = vload(hp, (o1 + o2) * LANES)
                    q = ((base + o1) * k + base + o2) * LANES
                    kq = ((d * O + o1) * O + o2) * LANES
                    vstore(cols, acc + q, vfma(vload(cols, acc + q), v, vload(Kv, kq)))
                    vstore(carry, q, vfma(vload(carry, q), v, vload(Kv, kv2 + kq)))
                    vstore(cols, off + q, vmul(v, vload(Kv, kv3 + kq)))
    if central:
        # Central rows r = t-2, t-1, t with entries ca (block r, order
        # O-2), cb (block r+1, order O-1), -ca (block r+2, order O-2).
        i0, j0 = O - 2, O - 1
        cols[low:low + block] = 0.0
        for rel in range(3):  # r = t - 2 + rel
            n_row = 0
            for l in range(LANES):
                r = tl[l] - 2 + rel
                hv[l] = 0.0
                if 0 <= r <= T - 3:
                    n_row += 1
                    hv[l] = steps[rows[1, l], r] + steps[rows[1, l], r + 1]
            if n_row == 0:
                continue
            _lane_powers(hv, hp)
            ca, cb = vload(hp, (O - 3) * LANES), vload(hp, (O - 2) * LANES)
            for d in range(D):
                for l in range(LANES):
                    r = tl[l] - 2 + rel
                    hv[LANES + l] = wsm[rows[4, l], r, d, O - 1] if 0 <= r <= T - 3 else 0.0
                w = vload(hv, LANES)
                ii = ((d * O + i0) * k + d * O + i0) * LANES
                jj = ((d * O + j0) * k + d * O + j0) * LANES
                ji = ((d * O + j0) * k + d * O + i0) * LANES
                ij = ((d * O + i0) * k + d * O + j0) * LANES
                if rel == 2:  # r == t
                    wca = vmul(w, ca)
                    vstore(cols, acc + ii, vfma(vload(cols, acc + ii), wca, ca))
                    vstore(cols, off + ji, vfma(vload(cols, off + ji), vmul(w, cb), ca))
                    vstore(cols, low + ii, vmul(vmul(vmul(w, vsplat(-1.0, w)), ca), ca))
                elif rel == 1:  # r == t-1: M[t+1, t] = M[r+2, r+1]
                    vstore(cols, acc + jj, vfma(vload(cols, acc + jj), vmul(w, cb), cb))
                    vstore(cols, off + ij, vfnma(vload(cols, off + ij), vmul(w, ca), cb))
                else:
                    vstore(cols, acc + ii, vfma(vload(cols, acc + ii), vmul(w, ca), ca))


@njit(parallel=True, **_OPTS)
def assemble_bands(coef, cidx, steps, sidx, weq, weidx, winit, wiidx, wsm, wsidx, F,
                   central, n_seg, bands):
    """Write the lower block band of M into ``bands`` (B, w+1, T, k, k).

    coef (nc, Tc, E, k); steps (ns, T-1); weq (nwe, T, E), winit
    (nwi, Ti, D, Oi), wsm (nws, T-1, D, O): squared weights; F the Taylor
    table (Os, O). Each item's steps are cut into ``n_seg`` segments (more
    than one only for batches too small to fill the lanes of every thread),
    and LANES segments at a time are assembled in the SIMD lanes
    (``_assemble_lanes``, block column t after block column t-1; a segment
    starting at t0 > 0 first assembles column t0-1 for the carry). Every block
    is written once; the diagonal blocks are written in full (symmetric),
    padding blocks are zero.
    """
    B, n_diag, T, k = bands.shape[0], bands.shape[1], bands.shape[2], bands.shape[3]
    E, D, O = coef.shape[2], wsm.shape[2], wsm.shape[3]
    kk = k * k
    n_tasks = B * n_seg
    seg = (T + n_seg - 1) // n_seg
    n_chunks = (n_tasks + LANES - 1) // LANES
    B2 = bands.reshape((B, n_diag * T * kk))
    for chunk in prange(n_chunks):
        cv, wc, hp, hv, Kv, Ks, cached, carry, cols, rows, tl = _lane_scratch(
            E, D, O, k, n_diag, bands.dtype)
        items = np.empty(LANES, dtype=np.int64)
        t0 = np.empty(LANES, dtype=np.int64)
        t1 = np.empty(LANES, dtype=np.int64)
        for l in range(LANES):
            q = chunk * LANES + l
            if q < n_tasks:
                items[l] = q // n_seg
                t0[l] = (q % n_seg) * seg
                t1[l] = min(T, t0[l] + seg)
            else:  # an idle lane: repeats a real item, writes nothing
                items[l] = B - 1
                t0[l] = 0
                t1[l] = 0
        _start_lanes(items, cidx, sidx, weidx, wiidx, wsidx, rows, Kv, cached, carry)
        if t0.max() > 0:  # carry into the first column of each segment
            for l in range(LANES):
                tl[l] = max(t0[l] - 1, 0)
            _assemble_lanes(tl, rows, coef, steps, weq, winit, wsm, F, central, cv, wc, hp, hv,
                            Kv, Ks, cached, carry, cols, 0)
            for l in range(LANES):
                if t0[l] == 0:
                    for e in range(kk):
                        carry[e * LANES + l] = 0.0
        for j in range(seg):
            for l in range(LANES):
                tl[l] = min(t0[l] + j, T - 1)
            _assemble_lanes(tl, rows, coef, steps, weq, winit, wsm, F, central, cv, wc, hp, hv,
                            Kv, Ks, cached, carry, cols, 0)
            if n_seg == 1 and items[LANES - 1] == items[0] + LANES - 1:
                # LANES distinct items at the same t: whole transposed tiles
                for d in range(n_diag):
                    _ks._scatter_block(cols, d * kk * LANES, B2, items, LANES,
                                       (d * T + j) * kk, k, False)
                continue
            for l in range(LANES):
                t = t0[l] + j
                if t < t1[l]:
                    M = bands[items[l]]
                    for d in range(n_diag):
                        Md = M[d, t]
                        for i in range(k):
                            for j2 in range(k):
                                Md[i, j2] = cols[(d * kk + i * k + j2) * LANES + l]


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
    ``_assemble_lanes`` instead of a gather from the band: block column t of
    the chunk's items is assembled into a ring of w+1 columns, and block row
    t of the band, M[t, t-d] for d <= w, is copied from columns t-d.
    X (B, T, k, nrhs); inputs as in ``assemble_bands`` with maps over the B
    items. ``info`` as in bandsolve (failed items: NaN in X).
    """
    B, T, k, nrhs = X.shape[0], X.shape[1], X.shape[2], X.shape[3]
    X2 = X.reshape((B, T * k * nrhs))
    E, D, O = coef.shape[2], wsm.shape[2], wsm.shape[3]
    n_diag = 3 if central else 2
    block = k * k * LANES
    row_stride = n_diag * block
    n_chunks = (B + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    coupled, frow = _ks.fused_form(n_workers, T, n_diag, k, X.itemsize, nt_min_bytes)
    for worker in prange(n_workers):
        W, R, Xb, Fb, Y, items, stat = _ks.fused_workspace(T, n_diag, k, nrhs, frow, X)
        # column t's blocks M[t+d, t] are at cols[(t % n_diag) * row_stride + d * block]
        cv, wc, hp, hv, Kv, Ks, cached, carry, cols, rows, tl = _lane_scratch(
            E, D, O, k, n_diag * n_diag, X.dtype)
        for chunk in range(worker, n_chunks, n_workers):
            i0, n_valid = _ks._start_chunk(chunk, B, items, stat)
            _start_lanes(items, cidx, sidx, weidx, wiidx, wsidx, rows, Kv, cached, carry)
            for t in range(T):
                tl[:] = t
                _assemble_lanes(tl, rows, coef, steps, weq, winit, wsm, F, central, cv, wc, hp,
                                hv, Kv, Ks, cached, carry, cols, (t % n_diag) * row_stride)
                own = (t % n_diag) * row_stride
                for d in range(min(n_diag - 1, t) + 1):  # M[t, t-d]: block d of column t-d
                    src = ((t - d) % n_diag) * row_stride + d * block
                    for e in range(0, block, LANES):
                        vstore(W, own + d * block + e, vload(cols, src + e))
                _ks._gather_rhs(X2, items, Y, t, k, nrhs)
                _ks._fused_row(W, R, Y, Fb, Xb, stat, t, T, n_diag, k, nrhs, frow, coupled)
            _ks._fused_backward(W, R, Y, Fb, X2, items, n_valid, T, n_diag, k, nrhs, frow,
                                coupled)
            _ks._finish_fused_chunk(stat, info, X, i0, n_valid)


@njit(parallel=True, **_OPTS)
def assemble_factor(coef, cidx, steps, sidx, weq, weidx, winit, wiidx, wsm, wsidx, F, central,
                    L, info, n_threads):
    """L <- the block Cholesky factor of M (B, w+1, T, k, k), with M assembled
    on the fly: no band array.

    ``bandsolve._kernels_simd.factor`` fed by ``_assemble_lanes`` (as in
    ``assemble_solve``) instead of a gather from the band; the result is
    bitwise that of ``factor`` on the band of ``assemble_bands`` (padding
    blocks zero). Inputs as in ``assemble_bands`` with maps over the B items;
    ``info`` as in bandsolve (failed items: NaN in L).
    """
    B, n_diag, T, k = L.shape[0], L.shape[1], L.shape[2], L.shape[3]
    E, D, O = coef.shape[2], wsm.shape[2], wsm.shape[3]
    block = k * k * LANES
    row_stride = n_diag * block
    L2 = L.reshape((B, n_diag * T * k * k))
    n_chunks = (B + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    for worker in prange(n_workers):
        W = np.empty(n_diag * row_stride, dtype=L.dtype)
        R = np.empty(n_diag * k * LANES, dtype=L.dtype)
        items = np.empty(LANES, dtype=np.int64)
        stat = np.empty(LANES, dtype=np.int64)
        cv, wc, hp, hv, Kv, Ks, cached, carry, cols, rows, tl = _lane_scratch(
            E, D, O, k, n_diag * n_diag, L.dtype)
        for chunk in range(worker, n_chunks, n_workers):
            i0, n_valid = _ks._start_chunk(chunk, B, items, stat)
            _start_lanes(items, cidx, sidx, weidx, wiidx, wsidx, rows, Kv, cached, carry)
            for t in range(T):
                tl[:] = t
                _assemble_lanes(tl, rows, coef, steps, weq, winit, wsm, F, central, cv, wc, hp,
                                hv, Kv, Ks, cached, carry, cols, (t % n_diag) * row_stride)
                dmax = min(n_diag - 1, t)
                own = (t % n_diag) * row_stride
                for d in range(dmax + 1):  # M[t, t-d]: block d of column t-d
                    src = ((t - d) % n_diag) * row_stride + d * block
                    for e in range(0, block, LANES):
                        vstore(W, own + d * block + e, vload(cols, src + e))
                _ks._factor_block_row(W, R, stat, t, dmax, k, row_stride, block, n_diag)
                for d in range(dmax + 1):
                    _ks._scatter_block(W, own + d * block, L2, items, n_valid,
                                       ((d * T + t - d) * k) * k, k, d == 0)
            for l in range(n_valid):
                i = i0 + l
                info[i] = stat[l]
                if stat[l] != 0:
                    L[i] = np.nan
                else:  # padding blocks: zero, as assemble_bands writes them
                    for d in range(1, n_diag):
                        for t in range(max(T - d, 0), T):
                            L[i, d, t] = 0.0
