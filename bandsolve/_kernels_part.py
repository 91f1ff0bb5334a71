"""Partitioned factor + solve: one long system split across SIMD lanes and threads.

The fused kernel of ``_kernels_simd.py`` puts *batch items* in the lanes, so a
small batch (one long sequence above all) leaves most lanes and threads idle:
block Cholesky is a recursion along T. This module splits each system into
P interiors separated by separators of w block rows (a one-level nested
dissection); the interiors are independent and go into the lanes::

    rows   [ I_0 | S_1 | I_1 | S_2 | ... | S_{P-1} | I_{P-1} ]
    sizes     n     w     n     w           w         n   (s = n + w apart)

Rows past T (at most P - 1, in the last interior) are identity rows with a
zero right-hand side: they do not couple to anything, so the solution of
the real rows is unchanged.

With F_p = L_p L_p^T the band of interior p and E_p its coupling to its two
separators (nonzero only in its first and last w block rows), the
separators solve the block-tridiagonal Schur complement::

    S = A_SS - sum_p E_p^T F_p^{-1} E_p,     g = b_S - sum_p E_p^T F_p^{-1} b_p

``part_forward`` factors every interior in the lanes and forms, per lane,
Z = L_p^{-1} [E_left, E_right] and y = L_p^{-1} b_p *forward only*,
accumulating the Gram blocks Z^T Z and Z^T y on the fly: Z is never stored
(Z_left fills the whole interior; Z_right lives in its last w rows only). The
caller solves the small Schur system (P - 1 block rows of size wk), then
``part_backward`` recovers the interiors, x_p = L_p^{-T} (y - L_p^{-1} E_p x_S),
with one more forward sweep (whose right-hand side is nonzero only in the
boundary rows) and the backward sweep, from the factor that ``part_forward``
packed block row by block row (``_kernels_simd._pack_row``: transposed for the
backward sweep, triangle of the diagonal block only; it computes in a ring of
w+1 block rows).

Z_left costs up to 2.5x the flops of the plain recursion at k = 9, w = 1,
all of it 8 lanes wide on every thread. For well-conditioned matrices it
decays geometrically along the interior: values below the smallest normal
number are flushed to zero (subnormal arithmetic is ~100x slower) and once w
consecutive rows are zero the rest of the interior skips it. A pivot that
fails in an interior or in the Schur system is reported to the caller, which
redoes the solve with the sequential kernels (which also find the exact
failing leading minor).
"""

import numpy as np
from numba import njit, prange

from ._kernels_simd import (
    NT_MIN_BYTES, _AHEAD, _OPTS, _INLINE, _backward_packed, _factor_block_row,
    _forward_block_row, _load_rows_at, _pack_row, _prefetch_block, _prefetch_packed_row,
    _store_cols,
)
from ._simd import (
    LANES, vabsmax, vadd, vfnma, vflush, vlane, vload, vmul, vsplat, vstore, vtranspose,
)


@njit(**_INLINE)
def _gather_block_at(A2, items, offs, pad, dst, dst_off, k, diag):
    """dst <- block at offs[l] of item items[l] in lane layout; identity (diag)
    or zero where pad[l]."""
    any_pad = False
    for l in range(LANES):
        if pad[l]:
            any_pad = True
    kk = k * k
    if not any_pad and kk >= LANES:
        # whole LANES x LANES tiles over the flat element index (see _gather_block)
        e0 = 0
        while e0 < kk:
            e = min(e0, kk - LANES)
            _store_cols(dst, dst_off + e * LANES, vtranspose(_load_rows_at(A2, items, offs, e)))
            e0 += LANES
        return
    for r in range(k):
        for c in range(k):
            o = dst_off + (r * k + c) * LANES
            for l in range(LANES):
                if pad[l]:
                    dst[o + l] = 1.0 if (diag and r == c) else 0.0
                else:
                    dst[o + l] = A2[items[l], offs[l] + r * k + c]


@njit(**_INLINE)
def _forward_row_window(W, R, Z, t, dmax, k, ncol, row_stride, block, nrow, znrow):
    """Z_t <- L[t,t]^{-1} (Z_t - sum_d L[t,t-d] Z_{t-d}); Z holds znrow rows (t % znrow).

    Subnormal results are flushed to zero (the coupling columns decay
    geometrically along the interior). Returns True when row t is all zero
    in every lane.
    """
    own = (t % nrow) * row_stride
    zt = (t % znrow) * k
    m = vsplat(0.0, vload(R, 0))
    for r in range(k):
        rinv = vload(R, ((t % nrow) * k + r) * LANES)
        for q in range(ncol):
            o = ((zt + r) * ncol + q) * LANES
            acc = vload(Z, o)
            for d in range(1, dmax + 1):
                pa = own + d * block + r * k * LANES
                zp = ((t - d) % znrow) * k
                for p in range(k):
                    acc = vfnma(acc, vload(W, pa + p * LANES),
                                vload(Z, ((zp + p) * ncol + q) * LANES))
            pa = own + r * k * LANES
            for p in range(r):
                acc = vfnma(acc, vload(W, pa + p * LANES), vload(Z, ((zt + p) * ncol + q) * LANES))
            v = vflush(vmul(acc, rinv))
            m = vabsmax(m, v)
            vstore(Z, o, v)
    return _all_zero(m)


@njit(**_INLINE)
def _forward_packed_window(F, Z, t, dmax, k, ncol, frow, ntri, znrow):
    """``_forward_row_window`` reading the factor packed by ``_pack_row``
    (F row t at t * frow: L[t,t]^T packed by rows, reciprocal pivots on its
    diagonal, then L[t,t-d]^T); the same operations in the same order."""
    zt = (t % znrow) * k
    base = t * frow
    m = vsplat(0.0, vload(F, base))
    for r in range(k):
        rinv = vload(F, base + (r * k - (r * (r - 1)) // 2) * LANES)
        for q in range(ncol):
            o = ((zt + r) * ncol + q) * LANES
            acc = vload(Z, o)
            for d in range(1, dmax + 1):
                pa = base + (ntri + (d - 1) * k * k + r) * LANES
                zp = ((t - d) % znrow) * k
                for p in range(k):
                    acc = vfnma(acc, vload(F, pa + p * k * LANES),
                                vload(Z, ((zp + p) * ncol + q) * LANES))
            for p in range(r):
                u = base + (p * k - (p * (p - 1)) // 2 + r - p) * LANES
                acc = vfnma(acc, vload(F, u), vload(Z, ((zt + p) * ncol + q) * LANES))
            v = vflush(vmul(acc, rinv))
            m = vabsmax(m, v)
            vstore(Z, o, v)
    return _all_zero(m)


@njit(**_INLINE)
def _all_zero(m):
    for l in range(LANES):
        if not (vlane(m, l) == 0.0):
            return False
    return True


@njit(**_INLINE)
def _gram(Za, ao, na, Zb, bo, nb, k, G, go, lower):
    """G[i, j] -= sum_r Za[r, i] Zb[r, j] (lane blocks; i < na, j < nb, j <= i if lower)."""
    for i in range(na):
        j_end = i + 1 if lower else nb
        for j in range(j_end):
            o = go + (i * nb + j) * LANES
            acc = vload(G, o)
            for r in range(k):
                acc = vfnma(acc, vload(Za, ao + (r * na + i) * LANES),
                            vload(Zb, bo + (r * nb + j) * LANES))
            vstore(G, o, acc)


@njit(**_INLINE)
def _lanes(chunk, Q, P, s, items, parts, starts):
    n_valid = min(LANES, Q - chunk * LANES)
    for l in range(LANES):
        q = chunk * LANES + min(l, n_valid - 1)
        items[l] = q // P
        parts[l] = q % P
        starts[l] = parts[l] * s
    return n_valid


@njit(parallel=True, **_OPTS)
def part_forward(A, X, P, n, Fbuf, Ybuf, GLL, GRL, GRR, GLb, GRb, stat_out, n_threads,
                 nt_min_bytes=NT_MIN_BYTES):
    """Factor the interiors and accumulate the Schur terms (negated sums).

    Lanes are (item, partition) pairs q = item * P + p. Outputs per chunk of
    lanes: Fbuf (n * frow: the factor packed by ``_pack_row``, rows aligned to a
    vector; streaming stores when all of Fbuf takes ``nt_min_bytes`` or more),
    Ybuf (y = L^{-1} b). Per lane q: GLL = -Z_L^T Z_L (lower), GRL = -Z_R^T Z_L,
    GRR = -Z_R^T Z_R (lower), GLb = -Z_L^T y, GRb = -Z_R^T y, and stat_out[q]
    != 0 where a pivot failed.
    """
    B, n_diag, T, k = A.shape[0], A.shape[1], A.shape[2], A.shape[3]
    nrhs = X.shape[3]
    w = n_diag - 1
    wk = w * k
    s = n + w
    kk = k * k
    block = kk * LANES
    row_stride = n_diag * block
    ntri = k * (k + 1) // 2
    frow = (ntri + w * kk) * LANES
    A2 = A.reshape((B, n_diag * T * kk))
    Q = B * P
    n_chunks = (Q + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    nt = Fbuf.size * Fbuf.itemsize >= nt_min_bytes
    for worker in prange(n_workers):
        W = np.empty(n_diag * row_stride, dtype=A.dtype)
        R = np.empty(n_diag * k * LANES, dtype=A.dtype)
        ZL = np.empty(n_diag * k * wk * LANES, dtype=A.dtype)
        ZR = np.empty(n_diag * k * wk * LANES, dtype=A.dtype)
        gll = np.empty(wk * wk * LANES, dtype=A.dtype)
        grl = np.empty(wk * wk * LANES, dtype=A.dtype)
        grr = np.empty(wk * wk * LANES, dtype=A.dtype)
        glb = np.empty(wk * nrhs * LANES, dtype=A.dtype)
        grb = np.empty(wk * nrhs * LANES, dtype=A.dtype)
        items = np.empty(LANES, dtype=np.int64)
        parts = np.empty(LANES, dtype=np.int64)
        starts = np.empty(LANES, dtype=np.int64)
        offs = np.empty(LANES, dtype=np.int64)
        pad = np.empty(LANES, dtype=np.bool_)
        stat = np.empty(LANES, dtype=np.int64)
        for chunk in range(worker, n_chunks, n_workers):
            n_valid = _lanes(chunk, Q, P, s, items, parts, starts)
            F = Fbuf[chunk]
            Y = Ybuf[chunk]
            ZR[:] = 0.0
            gll[:] = 0.0
            grl[:] = 0.0
            grr[:] = 0.0
            glb[:] = 0.0
            grb[:] = 0.0
            for l in range(LANES):
                stat[l] = 0
            zl_zero_rows = 0
            for t in range(n):
                dmax = min(w, t)
                own = (t % n_diag) * row_stride
                for l in range(LANES):
                    pad[l] = starts[l] + t >= T
                # prefetch (into L2) the band a few rows ahead, where it is not padding
                ta = t + _AHEAD
                if ta < n:
                    for d in range(min(w, ta) + 1):
                        for l in range(LANES):
                            if starts[l] + ta < T:
                                _prefetch_block(A2[items[l]], (d * T + starts[l] + ta - d) * kk, kk)
                for d in range(dmax + 1):
                    for l in range(LANES):
                        offs[l] = (d * T + starts[l] + t - d) * kk
                    _gather_block_at(A2, items, offs, pad, W, own + d * block, k, d == 0)
                _factor_block_row(W, R, stat, t, dmax, k, row_stride, block, n_diag)
                # right-hand sides of this row
                for r in range(k):
                    for q in range(nrhs):
                        o = ((t * k + r) * nrhs + q) * LANES
                        for l in range(LANES):
                            Y[o + l] = 0.0 if pad[l] else X[items[l], starts[l] + t, r, q]
                _forward_block_row(W, R, Y, t, dmax, k, nrhs, row_stride, block, n_diag)
                # Z_left: E_left rows (first w rows, coupling to the left separator);
                # once w consecutive rows are zero, so is the rest of the interior
                zl = (t % n_diag) * k * wk * LANES
                if zl_zero_rows < w or t < w:
                    ZL[zl:zl + k * wk * LANES] = 0.0
                if t < w:
                    for j in range(t, w):
                        d = t + w - j
                        for l in range(LANES):
                            if parts[l] > 0 and not pad[l]:
                                base = (d * T + starts[l] - w + j) * kk
                                for r in range(k):
                                    for c in range(k):
                                        ZL[zl + (r * wk + j * k + c) * LANES + l] = \
                                            A2[items[l], base + r * k + c]
                if zl_zero_rows < w or t < w:
                    if _forward_row_window(W, R, ZL, t, dmax, k, wk, row_stride, block, n_diag,
                                           n_diag):
                        zl_zero_rows += 1
                    else:
                        zl_zero_rows = 0
                        _gram(ZL, zl, wk, ZL, zl, wk, k, gll, 0, True)
                        _gram(ZL, zl, wk, Y, t * k * nrhs * LANES, nrhs, k, glb, 0, False)
                    if zl_zero_rows >= w and t >= w:
                        ZL[:] = 0.0
                if t >= n - w:
                    # Z_right: E_right rows (last w rows, coupling to the right separator)
                    zr = (t % n_diag) * k * wk * LANES
                    ZR[zr:zr + k * wk * LANES] = 0.0
                    for j in range(w):
                        d = n + j - t
                        if d > w:
                            continue
                        for l in range(LANES):
                            if parts[l] < P - 1 and not pad[l]:
                                base = (d * T + starts[l] + t) * kk
                                for r in range(k):
                                    for c in range(k):
                                        ZR[zr + (r * wk + j * k + c) * LANES + l] = \
                                            A2[items[l], base + c * k + r]
                    _forward_row_window(W, R, ZR, t, dmax, k, wk, row_stride, block, n_diag, n_diag)
                    _gram(ZR, zr, wk, ZL, zl, wk, k, grl, 0, False)
                    _gram(ZR, zr, wk, ZR, zr, wk, k, grr, 0, True)
                    _gram(ZR, zr, wk, Y, t * k * nrhs * LANES, nrhs, k, grb, 0, False)
                _pack_row(W, R, F, t * frow, own, (t % n_diag) * k * LANES, dmax, k, block, nt)
            for l in range(n_valid):
                q = chunk * LANES + l
                stat_out[q] = stat[l]
                for i in range(wk):
                    for j in range(wk):
                        GLL[q, i, j] = gll[(i * wk + j) * LANES + l]
                        GRL[q, i, j] = grl[(i * wk + j) * LANES + l]
                        GRR[q, i, j] = grr[(i * wk + j) * LANES + l]
                    for j in range(nrhs):
                        GLb[q, i, j] = glb[(i * nrhs + j) * LANES + l]
                        GRb[q, i, j] = grb[(i * nrhs + j) * LANES + l]


@njit(parallel=True, **_OPTS)
def part_backward(A, X, P, n, Fbuf, Ybuf, XS, n_threads):
    """Interiors from the separators: x_p = L_p^{-T} (y_p - L_p^{-1} E_p x_S), into X.

    XS (B, P + 1, w, k, nrhs): separator solutions, XS[:, p] left of interior
    p (zero for p = 0 and p = P, which do not exist).
    """
    B, n_diag, T, k = A.shape[0], A.shape[1], A.shape[2], A.shape[3]
    nrhs = X.shape[3]
    w = n_diag - 1
    s = n + w
    kk = k * k
    ntri = k * (k + 1) // 2
    frow = (ntri + w * kk) * LANES
    A2 = A.reshape((B, n_diag * T * kk))
    Q = B * P
    n_chunks = (Q + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    for worker in prange(n_workers):
        Z = np.empty(n * k * nrhs * LANES, dtype=A.dtype)
        items = np.empty(LANES, dtype=np.int64)
        parts = np.empty(LANES, dtype=np.int64)
        starts = np.empty(LANES, dtype=np.int64)
        for chunk in range(worker, n_chunks, n_workers):
            n_valid = _lanes(chunk, Q, P, s, items, parts, starts)
            F = Fbuf[chunk]
            Y = Ybuf[chunk]
            Z[:] = 0.0
            # c = E_left x_left (first w rows) + E_right x_right (last w rows)
            for l in range(LANES):
                i, p, a = items[l], parts[l], starts[l]
                if p > 0:
                    for t in range(min(w, n, T - a)):
                        for j in range(t, w):
                            base = ((t + w - j) * T + a - w + j) * kk
                            for r in range(k):
                                for q in range(nrhs):
                                    v = 0.0
                                    for c in range(k):
                                        v += A2[i, base + r * k + c] * XS[i, p, j, c, q]
                                    Z[((t * k + r) * nrhs + q) * LANES + l] += v
                if p < P - 1:
                    for t in range(max(n - w, 0), n):
                        for j in range(w):
                            d = n + j - t
                            if d > w:
                                continue
                            base = (d * T + a + t) * kk
                            for r in range(k):
                                for q in range(nrhs):
                                    v = 0.0
                                    for c in range(k):
                                        v += A2[i, base + c * k + r] * XS[i, p + 1, j, c, q]
                                    Z[((t * k + r) * nrhs + q) * LANES + l] += v
            # z = L^{-1} c decays away from the boundary rows: skip the zero stretch
            zero_rows = 0
            for t in range(n):
                if zero_rows >= w and t < n - w:
                    continue
                if _forward_packed_window(F, Z, t, min(w, t), k, nrhs, frow, ntri, n):
                    zero_rows += 1
                else:
                    zero_rows = 0
            for o in range(0, n * k * nrhs * LANES, LANES):
                vstore(Z, o, vadd(vload(Y, o), vmul(vload(Z, o), vsplat(-1.0, vload(Z, o)))))
            for t in range(n - 1, -1, -1):
                _prefetch_packed_row(F, t - _AHEAD, frow)
                _backward_packed(F, Z, t, n, n_diag, k, nrhs, frow, ntri)
                for l in range(n_valid):
                    row = starts[l] + t
                    if row < T:
                        for r in range(k):
                            for q in range(nrhs):
                                X[items[l], row, r, q] = Z[((t * k + r) * nrhs + q) * LANES + l]
