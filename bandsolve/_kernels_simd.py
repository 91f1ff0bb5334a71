"""Tuned Numba CPU kernels: block-banded Cholesky vectorised across batch items.

Same contract as ``_kernels.py`` (storage ``A[i, d, t] = M_i[t+d, t]``, factor
M = L L^T in the same storage, LAPACK-style ``info``), computed differently:

* **Lanes.** Batch items are processed in chunks of ``LANES`` = 8. For each
  chunk, block row t of the band (or of L) is gathered into a per-thread
  workspace in *lane-interleaved* layout ``W[t, d, r, c, lane]`` (an 8 x 8
  register transpose per 8 columns), so every scalar operation of the block
  algorithm becomes one SIMD instruction over 8 independent systems
  (``_simd.Vec``). Lanes past the end of the batch repeat the last item and
  are discarded.
* **Left-looking block row.** For block row t, with ``W[t, d] = L[t, t-d]``::

      L[t, t-d] = (M[t, t-d] - sum_{j>d} L[t, t-j] L[t-d, t-j]^T) L[t-d, t-d]^{-T}
      L[t, t]   = chol(M[t, t] - sum_{d>=1} L[t, t-d] L[t, t-d]^T)

  computed in 3 x 3 register tiles (one load of each operand row feeds three
  FMAs); the triangular solve and the diagonal Cholesky are left-looking over
  column triples, so each tile takes the columns already done and is then
  finished in registers (no pivot chain through memory). Every entry sums its
  terms in ascending order, as the column-by-column algorithm does, so the
  tiling does not change the rounding. Reciprocals of the diagonal are kept
  so the hot loops never divide.
* **Fused solve.** ``factor_solve`` gathers the band into a ring of w+1
  block rows, factors block row t there and runs its forward substitution
  right away (data still in L1). For the backward substitution it keeps
  neither the band nor L but G[t,d] = L[t,t]^{-T} L[t+d,t]^T, formed while
  both blocks are in the ring, and v_t = L[t,t]^{-T} y_t, so that
  x_t = v_t - sum_d G[t,d] x_{t+d}: w k^2 values per block row, half the
  band at w = 1. G is written with streaming stores when it cannot stay in
  cache (``NT_MIN_BYTES``): the band is read once from memory, G written
  once and read once, and no full-size factor is ever allocated. The
  partitioned solver (``_kernels_part``) packs L itself instead
  (``_pack_row``), which its extra forward sweeps need.
* **Status.** A pivot that is not finite and positive marks the lane failed
  (``info = t k + r + 1``, the first one) and its results NaN. A non-finite
  input value always makes the pivot of its row (or an earlier one) fail, so
  ``check_finite`` costs nothing on the hot path: only failed items are
  re-scanned (``scan_nonfinite``) to tell non-finite input (``-row``) from a
  matrix that is not positive definite.

Threads (Numba ``prange``) take chunks round-robin, each with its own
workspace; no chunk waits on another.
"""

import math

import numpy as np
from numba import njit, prange

from ._simd import (
    LANES, prefetch, vadd, vaddr, vany_not_positive, vfnma, vlane, vload, vmul, vrecip, vsplat, vsqrt, vstore,
    vstore_nt, vtranspose,
)

_AHEAD = 2  # block rows of the band prefetched (into L2) ahead of the one being gathered
_OPTS = dict(cache=True, nogil=True, fastmath={"contract"})

#: ``factor_solve`` writes its packed factor with streaming stores when the
#: packed factors of all workers together take at least this many bytes: then
#: they would not stay in cache until the backward pass anyway, and a streaming
#: store saves reading every line before writing it. Below, normal stores let
#: the backward pass find the factor in cache (measured here: streaming 17 %
#: faster at B=64, T=1000, k=9; 30 % slower at T=300).
NT_MIN_BYTES = 8 << 20
_INLINE = dict(_OPTS, inline="always")


# ---------------------------------------------------------------------------
# gather / scatter between item-major storage and the lane workspace


if LANES == 8:

    @njit(**_INLINE)
    def _load_rows(src, items, off):
        """One vector from each lane's item: a LANES x LANES tile, lane-major."""
        return (vload(src[items[0]], off), vload(src[items[1]], off),
                vload(src[items[2]], off), vload(src[items[3]], off),
                vload(src[items[4]], off), vload(src[items[5]], off),
                vload(src[items[6]], off), vload(src[items[7]], off))

    @njit(**_INLINE)
    def _load_rows_at(src, items, offs, e):
        """As _load_rows, from offset offs[l] + e in lane l's item."""
        return (vload(src[items[0]], offs[0] + e), vload(src[items[1]], offs[1] + e),
                vload(src[items[2]], offs[2] + e), vload(src[items[3]], offs[3] + e),
                vload(src[items[4]], offs[4] + e), vload(src[items[5]], offs[5] + e),
                vload(src[items[6]], offs[6] + e), vload(src[items[7]], offs[7] + e))

    @njit(**_INLINE)
    def _store_rows(dst, items, off, rows):
        vstore(dst[items[0]], off, rows[0])
        vstore(dst[items[1]], off, rows[1])
        vstore(dst[items[2]], off, rows[2])
        vstore(dst[items[3]], off, rows[3])
        vstore(dst[items[4]], off, rows[4])
        vstore(dst[items[5]], off, rows[5])
        vstore(dst[items[6]], off, rows[6])
        vstore(dst[items[7]], off, rows[7])

    @njit(**_INLINE)
    def _load_cols(src, off):
        """LANES consecutive vectors of the workspace."""
        return (vload(src, off), vload(src, off + LANES), vload(src, off + 2 * LANES),
                vload(src, off + 3 * LANES), vload(src, off + 4 * LANES),
                vload(src, off + 5 * LANES), vload(src, off + 6 * LANES),
                vload(src, off + 7 * LANES))

    @njit(**_INLINE)
    def _store_cols(dst, off, cols):
        vstore(dst, off, cols[0])
        vstore(dst, off + LANES, cols[1])
        vstore(dst, off + 2 * LANES, cols[2])
        vstore(dst, off + 3 * LANES, cols[3])
        vstore(dst, off + 4 * LANES, cols[4])
        vstore(dst, off + 5 * LANES, cols[5])
        vstore(dst, off + 6 * LANES, cols[6])
        vstore(dst, off + 7 * LANES, cols[7])

else:

    @njit(**_INLINE)
    def _load_rows(src, items, off):
        return (vload(src[items[0]], off), vload(src[items[1]], off),
                vload(src[items[2]], off), vload(src[items[3]], off))

    @njit(**_INLINE)
    def _load_rows_at(src, items, offs, e):
        return (vload(src[items[0]], offs[0] + e), vload(src[items[1]], offs[1] + e),
                vload(src[items[2]], offs[2] + e), vload(src[items[3]], offs[3] + e))

    @njit(**_INLINE)
    def _store_rows(dst, items, off, rows):
        vstore(dst[items[0]], off, rows[0])
        vstore(dst[items[1]], off, rows[1])
        vstore(dst[items[2]], off, rows[2])
        vstore(dst[items[3]], off, rows[3])

    @njit(**_INLINE)
    def _load_cols(src, off):
        return (vload(src, off), vload(src, off + LANES), vload(src, off + 2 * LANES),
                vload(src, off + 3 * LANES))

    @njit(**_INLINE)
    def _store_cols(dst, off, cols):
        vstore(dst, off, cols[0])
        vstore(dst, off + LANES, cols[1])
        vstore(dst, off + 2 * LANES, cols[2])
        vstore(dst, off + 3 * LANES, cols[3])


@njit(**_INLINE)
def _gather_tiles(src, items, src_off, dst, dst_off, kk):
    """dst[dst_off + e*LANES + l] = src[items[l], src_off + e] for e < kk.

    The kk values of each item are moved as whole LANES x LANES tiles (one
    load per item, a register transpose, one store per value); the last tile
    overlaps the one before it (same values written twice) instead of a
    scalar tail. Blocks (kk = k*k) and right-hand sides (kk = k*nrhs) alike.
    """
    if kk < LANES:
        for e in range(kk):
            for l in range(LANES):
                dst[dst_off + e * LANES + l] = src[items[l], src_off + e]
        return
    e0 = 0
    while e0 + LANES <= kk:
        _store_cols(dst, dst_off + e0 * LANES, vtranspose(_load_rows(src, items, src_off + e0)))
        e0 += LANES
    if e0 < kk:
        e0 = kk - LANES
        _store_cols(dst, dst_off + e0 * LANES, vtranspose(_load_rows(src, items, src_off + e0)))


@njit(**_INLINE)
def _scatter_tiles(src, src_off, dst, items, n_valid, dst_off, kk):
    """Inverse of _gather_tiles for the first n_valid lanes (whole tiles when
    all lanes are in use, else value by value)."""
    if n_valid == LANES and kk >= LANES:
        e0 = 0
        while e0 < kk:  # whole tiles, the last one overlapping (see _gather_tiles)
            e = min(e0, kk - LANES)
            _store_rows(dst, items, dst_off + e, vtranspose(_load_cols(src, src_off + e * LANES)))
            e0 += LANES
    else:
        for e in range(kk):
            for l in range(n_valid):
                dst[items[l], dst_off + e] = src[src_off + e * LANES + l]


@njit(**_INLINE)
def _gather_block(src, items, src_off, dst, dst_off, k):
    """dst[dst_off + e*LANES + l] = src[items[l], src_off + e] for e < k*k:
    one k x k block of each lane's item, indexed by its flat element r*k + c."""
    _gather_tiles(src, items, src_off, dst, dst_off, k * k)


@njit(**_INLINE)
def _scatter_block(src, src_off, dst, items, n_valid, dst_off, k, lower_only):
    """Inverse of _gather_block for the first n_valid lanes (upper part zeroed
    when lower_only)."""
    _scatter_tiles(src, src_off, dst, items, n_valid, dst_off, k * k)
    if lower_only:
        for r in range(k):
            for c in range(r + 1, k):
                for l in range(n_valid):
                    dst[items[l], dst_off + r * k + c] = 0.0


@njit(**_INLINE)
def _prefetch_block(row, off, kk):
    """Prefetch row[off : off + kk] (one hint per 8 values)."""
    for e in range(0, kk, 8):
        prefetch(row, off + e)
    prefetch(row, off + kk - 1)


@njit(**_INLINE)
def _prefetch_block_row(src, items, T, t, n_diag, k):
    """Prefetch block row t (blocks M[t, t-d]) of every lane."""
    if t < T:
        kk = k * k
        for d in range(min(n_diag - 1, t) + 1):
            for l in range(LANES):
                _prefetch_block(src[items[l]], (d * T + t - d) * kk, kk)


@njit(**_INLINE)
def _prefetch_block_column(src, items, T, t, n_diag, k):
    """Prefetch block column t (blocks L[t+d, t]) of every lane."""
    if t >= 0:
        kk = k * k
        for d in range(min(n_diag - 1, T - 1 - t) + 1):
            for l in range(LANES):
                _prefetch_block(src[items[l]], (d * T + t) * kk, kk)


# ---------------------------------------------------------------------------
# one block row of the factor and of the substitutions (lane workspace)


@njit(**_INLINE)
def _pivots(acc, stat, row1):
    if not vany_not_positive(acc):  # one vector test on the hot path
        return
    for l in range(LANES):
        v = vlane(acc, l)
        if not (v > 0.0 and v < np.inf):
            if stat[l] == 0:
                stat[l] = row1


@njit(**_INLINE)
def _store3(W, row, ca, cb, cc, va, vb, vc):
    vstore(W, row + ca * LANES, va)
    if cb != ca:
        vstore(W, row + cb * LANES, vb)
    if cc != cb:
        vstore(W, row + cc * LANES, vc)


@njit(**_INLINE)
def _update_nt(W, out, a, b, n_terms, stride, k, lower):
    """out -= sum_{m < n_terms} A_m B_m^T on k x k lane blocks, in 3 x 3 register tiles.

    ``A_m`` starts at ``a + m*stride`` and ``B_m`` at ``b + m*stride``. With
    ``lower`` only tiles touching the lower triangle are computed (entries
    above the diagonal of those tiles are written too and never read).
    Rows/columns past k are clamped to k-1 (duplicate work, same values).
    """
    if n_terms == 0:
        return
    for r0 in range(0, k, 3):
        ra = r0
        rb = min(r0 + 1, k - 1)
        rc = min(r0 + 2, k - 1)
        c_end = min(r0 + 3, k) if lower else k
        for c0 in range(0, c_end, 3):
            ca = c0
            cb = min(c0 + 1, k - 1)
            cc = min(c0 + 2, k - 1)
            s_aa = vload(W, out + (ra * k + ca) * LANES)
            s_ab = vload(W, out + (ra * k + cb) * LANES)
            s_ac = vload(W, out + (ra * k + cc) * LANES)
            s_ba = vload(W, out + (rb * k + ca) * LANES)
            s_bb = vload(W, out + (rb * k + cb) * LANES)
            s_bc = vload(W, out + (rb * k + cc) * LANES)
            s_ca = vload(W, out + (rc * k + ca) * LANES)
            s_cb = vload(W, out + (rc * k + cb) * LANES)
            s_cc = vload(W, out + (rc * k + cc) * LANES)
            for m in range(n_terms):
                ao = a + m * stride
                bo = b + m * stride
                for p in range(k):
                    xa = vload(W, ao + (ra * k + p) * LANES)
                    xb = vload(W, ao + (rb * k + p) * LANES)
                    xc = vload(W, ao + (rc * k + p) * LANES)
                    ya = vload(W, bo + (ca * k + p) * LANES)
                    yb = vload(W, bo + (cb * k + p) * LANES)
                    yc = vload(W, bo + (cc * k + p) * LANES)
                    s_aa = vfnma(s_aa, xa, ya)
                    s_ab = vfnma(s_ab, xa, yb)
                    s_ac = vfnma(s_ac, xa, yc)
                    s_ba = vfnma(s_ba, xb, ya)
                    s_bb = vfnma(s_bb, xb, yb)
                    s_bc = vfnma(s_bc, xb, yc)
                    s_ca = vfnma(s_ca, xc, ya)
                    s_cb = vfnma(s_cb, xc, yb)
                    s_cc = vfnma(s_cc, xc, yc)
            # rows/columns clamped past k-1 are duplicates: store each entry once
            _store3(W, out + ra * k * LANES, ca, cb, cc, s_aa, s_ab, s_ac)
            if rb != ra:
                _store3(W, out + rb * k * LANES, ca, cb, cc, s_ba, s_bb, s_bc)
            if rc != rb:
                _store3(W, out + rc * k * LANES, ca, cb, cc, s_ca, s_cb, s_cc)


@njit(**_INLINE)
def _trsm_right_lower_t(W, R, x, u, rinv, k):
    """X <- X U^{-T} in place (X at x, U lower at u, 1/diag(U) at rinv).

    Left-looking over column triples in 3 x 3 register tiles: the tile first
    takes the columns already solved (``sum_{p < c0} X[r, p] U[c, p]``, one
    load of each operand row feeding three FMAs), then is solved against the
    3 x 3 diagonal block of U in registers. Every entry sums its terms in
    ascending p, so the result is that of the column-by-column algorithm.
    Rows clamped past k-1 are computed but not stored (a duplicate store would
    serialise on the same address); columns past k-1 are not computed.
    """
    for r0 in range(0, k, 3):
        ra = r0
        rb = min(r0 + 1, k - 1)
        rc = min(r0 + 2, k - 1)
        for c0 in range(0, k, 3):
            ca = c0
            cb = min(c0 + 1, k - 1)
            cc = min(c0 + 2, k - 1)
            s_aa = vload(W, x + (ra * k + ca) * LANES)
            s_ab = vload(W, x + (ra * k + cb) * LANES)
            s_ac = vload(W, x + (ra * k + cc) * LANES)
            s_ba = vload(W, x + (rb * k + ca) * LANES)
            s_bb = vload(W, x + (rb * k + cb) * LANES)
            s_bc = vload(W, x + (rb * k + cc) * LANES)
            s_ca = vload(W, x + (rc * k + ca) * LANES)
            s_cb = vload(W, x + (rc * k + cb) * LANES)
            s_cc = vload(W, x + (rc * k + cc) * LANES)
            for p in range(c0):
                xa = vload(W, x + (ra * k + p) * LANES)
                xb = vload(W, x + (rb * k + p) * LANES)
                xc = vload(W, x + (rc * k + p) * LANES)
                ya = vload(W, u + (ca * k + p) * LANES)
                yb = vload(W, u + (cb * k + p) * LANES)
                yc = vload(W, u + (cc * k + p) * LANES)
                s_aa = vfnma(s_aa, xa, ya)
                s_ab = vfnma(s_ab, xa, yb)
                s_ac = vfnma(s_ac, xa, yc)
                s_ba = vfnma(s_ba, xb, ya)
                s_bb = vfnma(s_bb, xb, yb)
                s_bc = vfnma(s_bc, xb, yc)
                s_ca = vfnma(s_ca, xc, ya)
                s_cb = vfnma(s_cb, xc, yb)
                s_cc = vfnma(s_cc, xc, yc)
            # the 3 x 3 diagonal block of U, column by column
            r_a = vload(R, rinv + ca * LANES)
            s_aa = vmul(s_aa, r_a)
            s_ba = vmul(s_ba, r_a)
            s_ca = vmul(s_ca, r_a)
            _store_col3(W, x + ca * LANES, ra * k * LANES, rb * k * LANES, rc * k * LANES,
                        rb != ra, rc != rb, s_aa, s_ba, s_ca)
            if cb != ca:
                u_ba = vload(W, u + (cb * k + ca) * LANES)
                r_b = vload(R, rinv + cb * LANES)
                s_ab = vmul(vfnma(s_ab, s_aa, u_ba), r_b)
                s_bb = vmul(vfnma(s_bb, s_ba, u_ba), r_b)
                s_cb = vmul(vfnma(s_cb, s_ca, u_ba), r_b)
                _store_col3(W, x + cb * LANES, ra * k * LANES, rb * k * LANES, rc * k * LANES,
                            rb != ra, rc != rb, s_ab, s_bb, s_cb)
                if cc != cb:
                    u_ca = vload(W, u + (cc * k + ca) * LANES)
                    u_cb = vload(W, u + (cc * k + cb) * LANES)
                    r_c = vload(R, rinv + cc * LANES)
                    s_ac = vmul(vfnma(vfnma(s_ac, s_aa, u_ca), s_ab, u_cb), r_c)
                    s_bc = vmul(vfnma(vfnma(s_bc, s_ba, u_ca), s_bb, u_cb), r_c)
                    s_cc = vmul(vfnma(vfnma(s_cc, s_ca, u_ca), s_cb, u_cb), r_c)
                    _store_col3(W, x + cc * LANES, ra * k * LANES, rb * k * LANES,
                                rc * k * LANES, rb != ra, rc != rb, s_ac, s_bc, s_cc)


@njit(**_INLINE)
def _store_col3(W, base, oa, ob, oc, has_b, has_c, va, vb, vc):
    vstore(W, base + oa, va)
    if has_b:
        vstore(W, base + ob, vb)
    if has_c:
        vstore(W, base + oc, vc)


@njit(**_INLINE)
def _pivot(W, R, stat, s, rinv, row1, c, k, acc):
    """Diagonal entry c of the factor from its updated value acc; returns its reciprocal."""
    _pivots(acc, stat, row1 + c)
    sq = vsqrt(acc)
    rc = vrecip(sq)
    vstore(W, s + (c * k + c) * LANES, sq)
    vstore(R, rinv + c * LANES, rc)
    return rc


@njit(**_INLINE)
def _potrf(W, R, stat, s, rinv, row1, k):
    """Lower Cholesky of the k x k lane block at s in place; 1/diag to R[rinv:].

    Left-looking over column triples in 3 x 3 register tiles: the diagonal
    tile and each tile below it first take the columns already factored
    (``sum_{p < j0} L[i, p] L[j, p]``), then are factored / solved in
    registers, so the pivot chain never goes through memory. Every entry sums
    its terms in ascending p: the result is that of the right-looking
    column-by-column algorithm, bitwise.
    """
    for j0 in range(0, k, 3):
        ja = j0
        jb = min(j0 + 1, k - 1)
        jc = min(j0 + 2, k - 1)
        d_aa = vload(W, s + (ja * k + ja) * LANES)
        d_ba = vload(W, s + (jb * k + ja) * LANES)
        d_bb = vload(W, s + (jb * k + jb) * LANES)
        d_ca = vload(W, s + (jc * k + ja) * LANES)
        d_cb = vload(W, s + (jc * k + jb) * LANES)
        d_cc = vload(W, s + (jc * k + jc) * LANES)
        for p in range(j0):
            xa = vload(W, s + (ja * k + p) * LANES)
            xb = vload(W, s + (jb * k + p) * LANES)
            xc = vload(W, s + (jc * k + p) * LANES)
            d_aa = vfnma(d_aa, xa, xa)
            d_ba = vfnma(d_ba, xb, xa)
            d_bb = vfnma(d_bb, xb, xb)
            d_ca = vfnma(d_ca, xc, xa)
            d_cb = vfnma(d_cb, xc, xb)
            d_cc = vfnma(d_cc, xc, xc)
        r_a = _pivot(W, R, stat, s, rinv, row1, ja, k, d_aa)
        if jb == ja:
            break  # last column
        l_ba = vmul(d_ba, r_a)
        vstore(W, s + (jb * k + ja) * LANES, l_ba)
        r_b = _pivot(W, R, stat, s, rinv, row1, jb, k, vfnma(d_bb, l_ba, l_ba))
        if jc == jb:
            break
        l_ca = vmul(d_ca, r_a)
        l_cb = vmul(vfnma(d_cb, l_ca, l_ba), r_b)
        vstore(W, s + (jc * k + ja) * LANES, l_ca)
        vstore(W, s + (jc * k + jb) * LANES, l_cb)
        r_c = _pivot(W, R, stat, s, rinv, row1, jc, k, vfnma(vfnma(d_cc, l_ca, l_ca), l_cb, l_cb))
        # the rows below, three at a time
        for i0 in range(j0 + 3, k, 3):
            ia = i0
            ib = min(i0 + 1, k - 1)
            ic = min(i0 + 2, k - 1)
            s_aa = vload(W, s + (ia * k + ja) * LANES)
            s_ab = vload(W, s + (ia * k + jb) * LANES)
            s_ac = vload(W, s + (ia * k + jc) * LANES)
            s_ba = vload(W, s + (ib * k + ja) * LANES)
            s_bb = vload(W, s + (ib * k + jb) * LANES)
            s_bc = vload(W, s + (ib * k + jc) * LANES)
            s_ca = vload(W, s + (ic * k + ja) * LANES)
            s_cb = vload(W, s + (ic * k + jb) * LANES)
            s_cc = vload(W, s + (ic * k + jc) * LANES)
            for p in range(j0):
                xa = vload(W, s + (ia * k + p) * LANES)
                xb = vload(W, s + (ib * k + p) * LANES)
                xc = vload(W, s + (ic * k + p) * LANES)
                ya = vload(W, s + (ja * k + p) * LANES)
                yb = vload(W, s + (jb * k + p) * LANES)
                yc = vload(W, s + (jc * k + p) * LANES)
                s_aa = vfnma(s_aa, xa, ya)
                s_ab = vfnma(s_ab, xa, yb)
                s_ac = vfnma(s_ac, xa, yc)
                s_ba = vfnma(s_ba, xb, ya)
                s_bb = vfnma(s_bb, xb, yb)
                s_bc = vfnma(s_bc, xb, yc)
                s_ca = vfnma(s_ca, xc, ya)
                s_cb = vfnma(s_cb, xc, yb)
                s_cc = vfnma(s_cc, xc, yc)
            s_aa = vmul(s_aa, r_a)
            s_ba = vmul(s_ba, r_a)
            s_ca = vmul(s_ca, r_a)
            s_ab = vmul(vfnma(s_ab, s_aa, l_ba), r_b)
            s_bb = vmul(vfnma(s_bb, s_ba, l_ba), r_b)
            s_cb = vmul(vfnma(s_cb, s_ca, l_ba), r_b)
            s_ac = vmul(vfnma(vfnma(s_ac, s_aa, l_ca), s_ab, l_cb), r_c)
            s_bc = vmul(vfnma(vfnma(s_bc, s_ba, l_ca), s_bb, l_cb), r_c)
            s_cc = vmul(vfnma(vfnma(s_cc, s_ca, l_ca), s_cb, l_cb), r_c)
            has_b = ib != ia
            has_c = ic != ib
            _store_col3(W, s + ja * LANES, ia * k * LANES, ib * k * LANES, ic * k * LANES,
                        has_b, has_c, s_aa, s_ba, s_ca)
            _store_col3(W, s + jb * LANES, ia * k * LANES, ib * k * LANES, ic * k * LANES,
                        has_b, has_c, s_ab, s_bb, s_cb)
            _store_col3(W, s + jc * LANES, ia * k * LANES, ib * k * LANES, ic * k * LANES,
                        has_b, has_c, s_ac, s_bc, s_cc)


@njit(**_INLINE)
def _factor_block_row(W, R, stat, t, dmax, k, row_stride, block, nrow):
    """Factor block row t in place in the lane workspace (row t at t % nrow holds
    W[t, d] = L[t, t-d]; R holds 1/diag of L[t, t])."""
    own = (t % nrow) * row_stride
    for d in range(dmax, 0, -1):
        prev = ((t - d) % nrow) * row_stride
        # G = M[t, t-d] - sum_{j>d} L[t, t-j] L[t-d, t-j]^T, then G L[t-d, t-d]^{-T}
        _update_nt(W, own + d * block, own + (d + 1) * block, prev + block, dmax - d, block,
                   k, False)
        _trsm_right_lower_t(W, R, own + d * block, prev, ((t - d) % nrow) * k * LANES, k)
    # S = M[t, t] - sum_d L[t, t-d] L[t, t-d]^T, then L[t, t] = chol(S)
    _update_nt(W, own, own + block, own + block, dmax, block, k, True)
    _potrf(W, R, stat, own, (t % nrow) * k * LANES, t * k + 1, k)


@njit(**_INLINE)
def _forward_block_row(W, R, Y, t, dmax, k, nrhs, row_stride, block, nrow):
    """y_t <- L[t,t]^{-1} (y_t - sum_d L[t,t-d] y_{t-d}) in the lane workspace.

    Two accumulators per row: the coupling to earlier block rows does not
    depend on this block's rows and runs ahead of the triangular solve.
    """
    own = (t % nrow) * row_stride
    for r in range(k):
        rinv = vload(R, ((t % nrow) * k + r) * LANES)
        for q in range(nrhs):
            o = ((t * k + r) * nrhs + q) * LANES
            acc = vload(Y, o)
            for d in range(1, dmax + 1):
                pa = own + d * block + r * k * LANES
                for p in range(k):
                    acc = vfnma(acc, vload(W, pa + p * LANES),
                                vload(Y, (((t - d) * k + p) * nrhs + q) * LANES))
            pa = own + r * k * LANES
            tri = vsplat(0.0, acc)
            for p in range(r):
                tri = vfnma(tri, vload(W, pa + p * LANES), vload(Y, ((t * k + p) * nrhs + q) * LANES))
            vstore(Y, o, vmul(vadd(acc, tri), rinv))


@njit(**_INLINE)
def _backward_block_row(W, R, Y, t, T, n_diag, k, nrhs, row_stride, block, nrow):
    """x_t <- L[t,t]^{-T} (y_t - sum_d L[t+d,t]^T x_{t+d}), reading L[t+d, t]
    from workspace row (t+d) % nrow, slot d."""
    dmax = min(n_diag - 1, T - 1 - t)
    for r in range(k - 1, -1, -1):
        rinv = vload(R, ((t % nrow) * k + r) * LANES)
        for q in range(nrhs):
            o = ((t * k + r) * nrhs + q) * LANES
            acc = vload(Y, o)
            for d in range(1, dmax + 1):
                pb = ((t + d) % nrow) * row_stride + d * block + r * LANES
                for p in range(k):
                    acc = vfnma(acc, vload(W, pb + p * k * LANES),
                                vload(Y, (((t + d) * k + p) * nrhs + q) * LANES))
            pb = (t % nrow) * row_stride + r * LANES
            tri = vsplat(0.0, acc)
            for p in range(r + 1, k):
                tri = vfnma(tri, vload(W, pb + p * k * LANES), vload(Y, ((t * k + p) * nrhs + q) * LANES))
            vstore(Y, o, vmul(vadd(acc, tri), rinv))


@njit(**_INLINE)
def _put(F, o, v, nt):
    if nt:
        vstore_nt(F, o, v)
    else:
        vstore(F, o, v)


@njit(**_INLINE)
def _pack_row(W, R, F, fo, own, rrow, dmax, k, block, nt):
    """Store block row t of the factor at F[fo:] in the order the backward pass reads it.

    First U = L[t,t]^T packed by rows (k - r entries in row r) with 1/L[t,t]_rr
    in place of the diagonal, then L[t,t-d]^T for d = 1..dmax, row-major.
    ``nt``: non-temporal stores (F is too large to stay in cache anyway).
    """
    o = fo
    for r in range(k):
        _put(F, o, vload(R, rrow + r * LANES), nt)
        o += LANES
        for c in range(r + 1, k):
            _put(F, o, vload(W, own + (c * k + r) * LANES), nt)
            o += LANES
    for d in range(1, dmax + 1):
        src = own + d * block
        for r in range(k):
            for p in range(k):
                _put(F, o, vload(W, src + (p * k + r) * LANES), nt)
                o += LANES


@njit(**_INLINE)
def _prefetch_packed_row(F, t, frow):
    """Prefetch row t of the packed factor (nothing for t < 0): the backward
    pass walks F downwards, which the hardware prefetchers follow poorly."""
    if t >= 0:
        for e in range(t * frow, (t + 1) * frow, 8):
            prefetch(F, e)


@njit(**_INLINE)
def _backward_packed(F, Y, t, T, n_diag, k, nrhs, frow, ntri):
    """x_t <- L[t,t]^{-T} (y_t - sum_d L[t+d,t]^T x_{t+d}) from the packed rows of F
    (``_pack_row``); same operations in the same order as ``_backward_block_row``."""
    dmax = min(n_diag - 1, T - 1 - t)
    for r in range(k - 1, -1, -1):
        urow = t * frow + (r * k - (r * (r - 1)) // 2) * LANES
        rinv = vload(F, urow)
        for q in range(nrhs):
            o = ((t * k + r) * nrhs + q) * LANES
            acc = vload(Y, o)
            for d in range(1, dmax + 1):
                pb = (t + d) * frow + (ntri + ((d - 1) * k + r) * k) * LANES
                for p in range(k):
                    acc = vfnma(acc, vload(F, pb + p * LANES),
                                vload(Y, (((t + d) * k + p) * nrhs + q) * LANES))
            tri = vsplat(0.0, acc)
            for p in range(r + 1, k):
                tri = vfnma(tri, vload(F, urow + (p - r) * LANES),
                            vload(Y, ((t * k + p) * nrhs + q) * LANES))
            vstore(Y, o, vmul(vadd(acc, tri), rinv))


@njit(**_INLINE)
def _coupling_solve(W, R, Xb, c, u, rinv, k):
    """Xb <- X = C U^{-1} (C at c, U lower at u, 1/diag(U) at rinv; Xb at 0).

    With C = L[t, s] and U = L[s, s], X^T = L[s,s]^{-T} L[t,s]^T is the block
    the backward substitution of ``factor_solve`` multiplies x_t by. Columns
    of X are solved from the last to the first (X U = C is an upper system in
    the columns), in 3 x 3 register tiles as in ``_trsm_right_lower_t``.
    Rows and columns clamped past the ends are duplicates of the same values.
    """
    for r0 in range(0, k, 3):
        ra = r0
        rb = min(r0 + 1, k - 1)
        rc = min(r0 + 2, k - 1)
        for m in range(0, k, 3):
            ca = k - 1 - m           # highest column of the tile
            cb = max(ca - 1, 0)
            cc = max(ca - 2, 0)
            s_aa = vload(W, c + (ra * k + ca) * LANES)
            s_ab = vload(W, c + (ra * k + cb) * LANES)
            s_ac = vload(W, c + (ra * k + cc) * LANES)
            s_ba = vload(W, c + (rb * k + ca) * LANES)
            s_bb = vload(W, c + (rb * k + cb) * LANES)
            s_bc = vload(W, c + (rb * k + cc) * LANES)
            s_ca = vload(W, c + (rc * k + ca) * LANES)
            s_cb = vload(W, c + (rc * k + cb) * LANES)
            s_cc = vload(W, c + (rc * k + cc) * LANES)
            for i in range(ca + 1, k):
                xa = vload(Xb, (ra * k + i) * LANES)
                xb = vload(Xb, (rb * k + i) * LANES)
                xc = vload(Xb, (rc * k + i) * LANES)
                ya = vload(W, u + (i * k + ca) * LANES)
                yb = vload(W, u + (i * k + cb) * LANES)
                yc = vload(W, u + (i * k + cc) * LANES)
                s_aa = vfnma(s_aa, xa, ya)
                s_ab = vfnma(s_ab, xa, yb)
                s_ac = vfnma(s_ac, xa, yc)
                s_ba = vfnma(s_ba, xb, ya)
                s_bb = vfnma(s_bb, xb, yb)
                s_bc = vfnma(s_bc, xb, yc)
                s_ca = vfnma(s_ca, xc, ya)
                s_cb = vfnma(s_cb, xc, yb)
                s_cc = vfnma(s_cc, xc, yc)
            r_a = vload(R, rinv + ca * LANES)
            s_aa = vmul(s_aa, r_a)
            s_ba = vmul(s_ba, r_a)
            s_ca = vmul(s_ca, r_a)
            vstore(Xb, (ra * k + ca) * LANES, s_aa)
            vstore(Xb, (rb * k + ca) * LANES, s_ba)
            vstore(Xb, (rc * k + ca) * LANES, s_ca)
            if cb != ca:
                u_ba = vload(W, u + (ca * k + cb) * LANES)
                r_b = vload(R, rinv + cb * LANES)
                s_ab = vmul(vfnma(s_ab, s_aa, u_ba), r_b)
                s_bb = vmul(vfnma(s_bb, s_ba, u_ba), r_b)
                s_cb = vmul(vfnma(s_cb, s_ca, u_ba), r_b)
                vstore(Xb, (ra * k + cb) * LANES, s_ab)
                vstore(Xb, (rb * k + cb) * LANES, s_bb)
                vstore(Xb, (rc * k + cb) * LANES, s_cb)
                if cc != cb:
                    u_ca = vload(W, u + (ca * k + cc) * LANES)
                    u_cb = vload(W, u + (cb * k + cc) * LANES)
                    r_c = vload(R, rinv + cc * LANES)
                    s_ac = vmul(vfnma(vfnma(s_ac, s_aa, u_ca), s_ab, u_cb), r_c)
                    s_bc = vmul(vfnma(vfnma(s_bc, s_ba, u_ca), s_bb, u_cb), r_c)
                    s_cc = vmul(vfnma(vfnma(s_cc, s_ca, u_ca), s_cb, u_cb), r_c)
                    vstore(Xb, (ra * k + cc) * LANES, s_ac)
                    vstore(Xb, (rb * k + cc) * LANES, s_bc)
                    vstore(Xb, (rc * k + cc) * LANES, s_cc)


@njit(**_INLINE)
def _diag_backward(W, R, Y, s, k, nrhs, row_stride, block, nrow):
    """y_s <- L[s,s]^{-T} y_s in place (row s still in the ring): the
    backward substitution of a block row with no coupling terms."""
    _backward_block_row(W, R, Y, s, s + 1, nrow, k, nrhs, row_stride, block, nrow)


@njit(**_INLINE)
def _put_transposed(Xb, F, fo, k, nt):
    """F[fo + (j k + r) LANES] <- Xb[(r k + j) LANES]: G = X^T, row-major, the
    order in which ``_backward_coupled`` reads it."""
    o = fo
    for j in range(k):
        for r in range(k):
            _put(F, o, vload(Xb, (r * k + j) * LANES), nt)
            o += LANES


@njit(**_INLINE)
def _backward_coupled(F, Y, t, T, n_diag, k, nrhs, frow):
    """x_t <- v_t - sum_d G[t,d] x_{t+d} in place in Y, where Y holds
    v_t = L[t,t]^{-T} y_t and F row t holds G[t,d] = L[t,t]^{-T} L[t+d,t]^T
    (d = 1..w, k x k row-major each)."""
    dmax = min(n_diag - 1, T - 1 - t)
    for j in range(k):
        for q in range(nrhs):
            o = ((t * k + j) * nrhs + q) * LANES
            acc = vload(Y, o)
            for d in range(1, dmax + 1):
                g = t * frow + ((d - 1) * k + j) * k * LANES
                for r in range(k):
                    acc = vfnma(acc, vload(F, g + r * LANES),
                                vload(Y, (((t + d) * k + r) * nrhs + q) * LANES))
            vstore(Y, o, acc)


@njit(**_INLINE)
def _aligned_empty(n, dtype_like):
    """A 1-D array of n values whose first element is aligned to a vector (for vstore_nt)."""
    raw = np.empty(n + LANES, dtype=dtype_like.dtype)
    size = LANES * raw.itemsize
    off = ((size - vaddr(raw) % size) % size) // raw.itemsize
    return raw[off:off + n]


@njit(**_INLINE)
def _diag_reciprocals(W, R, t, k, row_stride, nrow):
    own = (t % nrow) * row_stride
    for r in range(k):
        vstore(R, ((t % nrow) * k + r) * LANES, vrecip(vload(W, own + (r * k + r) * LANES)))


@njit(**_INLINE)
def _gather_rhs(X2, items, Y, t, k, nrhs):
    """Block t of each lane's right-hand side into Y (lane layout); X2 is X
    (B, T, k, nrhs) viewed as (B, T*k*nrhs)."""
    kk = k * nrhs
    _gather_tiles(X2, items, t * kk, Y, t * kk * LANES, kk)


@njit(**_INLINE)
def _scatter_rhs(Y, X2, items, n_valid, t, k, nrhs):
    """Inverse of _gather_rhs for the first n_valid lanes."""
    kk = k * nrhs
    _scatter_tiles(Y, t * kk * LANES, X2, items, n_valid, t * kk, kk)


@njit(**_INLINE)
def _chunk_items(index, i0, n_valid, items):
    for l in range(LANES):
        items[l] = index[i0 + min(l, n_valid - 1)]


@njit(**_INLINE)
def fused_workspace(T, n_diag, k, nrhs, frow, like):
    """One worker's buffers for a fused factor + solve driver: the ring W and
    its reciprocal pivots R, the scratch block Xb, F (``frow`` values per
    block row, vector-aligned for streaming stores), Y, and the lane maps
    ``items`` and ``stat``."""
    block = k * k * LANES
    W = np.empty(n_diag * n_diag * block, dtype=like.dtype)
    R = np.empty(n_diag * k * LANES, dtype=like.dtype)
    Xb = np.empty(block, dtype=like.dtype)
    F = _aligned_empty(max(T * frow, LANES), like)
    Y = np.empty(T * k * nrhs * LANES, dtype=like.dtype)
    items = np.empty(LANES, dtype=np.int64)
    stat = np.empty(LANES, dtype=np.int64)
    return W, R, Xb, F, Y, items, stat


@njit(**_INLINE)
def _start_chunk(chunk, B, items, stat):
    """Items of a chunk of LANES consecutive items (lanes past B repeat the
    last one) and cleared status; returns (first item, lanes in use)."""
    i0 = chunk * LANES
    n_valid = min(LANES, B - i0)
    for l in range(LANES):
        items[l] = i0 + min(l, n_valid - 1)
        stat[l] = 0
    return i0, n_valid


@njit(**_INLINE)
def _finish_fused_chunk(stat, info, X, i0, n_valid):
    """Status of the chunk's items into ``info``; NaN solutions where it failed."""
    for l in range(n_valid):
        info[i0 + l] = stat[l]
        if stat[l] != 0:
            X[i0 + l] = np.nan


@njit(**_INLINE)
def fused_form(n_workers, T, n_diag, k, itemsize, nt_min_bytes):
    """(coupled, frow) for ``factor_solve``'s buffer F: the coupled form (G
    blocks, streaming stores) when the packed factor of all workers would
    take ``nt_min_bytes`` or more, and the values per block row of F."""
    w = n_diag - 1
    ntri = k * (k + 1) // 2
    coupled = n_workers * T * (ntri + w * k * k) * LANES * itemsize >= nt_min_bytes
    return coupled, (w * k * k if coupled else ntri + w * k * k) * LANES


@njit(**_INLINE)
def _fused_row(W, R, Y, F, Xb, stat, t, T, n_diag, k, nrhs, frow, coupled):
    """Block row t of a fused factor + solve, once its band row is in the ring
    and its right-hand side in Y: factor, forward-substitute, and keep in F
    what the backward pass needs (see ``factor_solve``)."""
    w = n_diag - 1
    dmax = min(w, t)
    block = k * k * LANES
    row_stride = n_diag * block
    own = (t % n_diag) * row_stride
    _factor_block_row(W, R, stat, t, dmax, k, row_stride, block, n_diag)
    _forward_block_row(W, R, Y, t, dmax, k, nrhs, row_stride, block, n_diag)
    if coupled:
        for d in range(1, dmax + 1):
            s = t - d
            _coupling_solve(W, R, Xb, own + d * block, (s % n_diag) * row_stride,
                            (s % n_diag) * k * LANES, k)
            _put_transposed(Xb, F, s * frow + (d - 1) * block, k, True)
        if t >= w:  # row t was the last to read y_{t-w}
            _diag_backward(W, R, Y, t - w, k, nrhs, row_stride, block, n_diag)
    else:
        _pack_row(W, R, F, t * frow, own, (t % n_diag) * k * LANES, dmax, k, block, False)


@njit(**_INLINE)
def _fused_backward(W, R, Y, F, X2, items, n_valid, T, n_diag, k, nrhs, frow, coupled):
    """The backward pass of a fused factor + solve after its last ``_fused_row``;
    the solution goes to X2[items[l]] (X viewed as (B, T*k*nrhs)) for the
    first n_valid lanes."""
    w = n_diag - 1
    block = k * k * LANES
    if coupled:
        for s in range(max(T - w, 0), T):
            _diag_backward(W, R, Y, s, k, nrhs, n_diag * block, block, n_diag)
    ntri = k * (k + 1) // 2
    for t in range(T - 1, -1, -1):
        _prefetch_packed_row(F, t - _AHEAD, frow)
        if coupled:
            _backward_coupled(F, Y, t, T, n_diag, k, nrhs, frow)
        else:
            _backward_packed(F, Y, t, T, n_diag, k, nrhs, frow, ntri)
        _scatter_rhs(Y, X2, items, n_valid, t, k, nrhs)


# ---------------------------------------------------------------------------
# drivers (parallel over chunks of LANES items)


@njit(parallel=True, **_OPTS)
def factor_solve(A, X, info, n_threads, nt_min_bytes=NT_MIN_BYTES):
    """Fused factor + solve: X[i] <- M_i^{-1} X[i]; A (B, w+1, T, k, k) is read only.

    The band is gathered into a ring of w+1 block rows (L1/L2-resident) and
    block row t is factored there; the forward substitution runs right away,
    y_t = L[t,t]^{-1} (b_t - sum_d L[t,t-d] y_{t-d}). What the backward pass
    needs is kept in a per-thread buffer F, in one of two forms:

    * small (the packed factor of all workers below ``nt_min_bytes``, so it
      stays in cache): block row t of L, packed by ``_pack_row`` (transposed,
      the diagonal block as a triangle with reciprocal pivots, 0.78 of the
      band at w = 1), read back by ``_backward_packed``;
    * large (memory bound): not L but G[t,d] = L[t,t]^{-T} L[t+d,t]^T,
      formed at row t+d while both blocks are in the ring
      (``_coupling_solve``), with v_t = L[t,t]^{-T} y_t computed in place
      once the w rows after t have used y_t; then x_t = v_t - sum_d G[t,d]
      x_{t+d} (``_backward_coupled``). w k^2 values per block row, half the
      band at w = 1: a third less memory traffic for one more k x k
      triangular solve per coupling block, written with streaming stores.

    No full-size factor is ever allocated. Use it when the batch is several
    chunks per thread. Failed items get NaN in X and their status in ``info``.
    """
    B, n_diag, T, k = A.shape[0], A.shape[1], A.shape[2], A.shape[3]
    nrhs = X.shape[3]
    w = n_diag - 1
    block = k * k * LANES
    row_stride = n_diag * block
    A2 = A.reshape((B, n_diag * T * k * k))
    X2 = X.reshape((B, T * k * nrhs))
    n_chunks = (B + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    coupled, frow = fused_form(n_workers, T, n_diag, k, A.itemsize, nt_min_bytes)
    for worker in prange(n_workers):
        W, R, Xb, F, Y, items, stat = fused_workspace(T, n_diag, k, nrhs, frow, A)
        for chunk in range(worker, n_chunks, n_workers):
            i0, n_valid = _start_chunk(chunk, B, items, stat)
            for t in range(T):
                dmax = min(w, t)
                own = (t % n_diag) * row_stride
                for d in range(dmax + 1):
                    _gather_block(A2, items, ((d * T + t - d) * k) * k, W, own + d * block, k)
                _prefetch_block_row(A2, items, T, t + _AHEAD, n_diag, k)
                _gather_rhs(X2, items, Y, t, k, nrhs)
                _fused_row(W, R, Y, F, Xb, stat, t, T, n_diag, k, nrhs, frow, coupled)
            _fused_backward(W, R, Y, F, X2, items, n_valid, T, n_diag, k, nrhs, frow, coupled)
            _finish_fused_chunk(stat, info, X, i0, n_valid)


@njit(parallel=True, **_OPTS)
def factor(A, L, info, n_threads):
    """Block Cholesky of A into L (may alias A). Failed items are NaN.

    The workspace is a window of w+1 block rows per chunk.
    """
    B, n_diag, T, k = A.shape[0], A.shape[1], A.shape[2], A.shape[3]
    block = k * k * LANES
    row_stride = n_diag * block
    A2 = A.reshape((B, n_diag * T * k * k))
    L2 = L.reshape((B, n_diag * T * k * k))
    n_chunks = (B + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    for worker in prange(n_workers):
        W = np.empty(n_diag * row_stride, dtype=A.dtype)
        R = np.empty(n_diag * k * LANES, dtype=A.dtype)
        items = np.empty(LANES, dtype=np.int64)
        stat = np.empty(LANES, dtype=np.int64)
        for chunk in range(worker, n_chunks, n_workers):
            i0, n_valid = _start_chunk(chunk, B, items, stat)
            for t in range(T):
                dmax = min(n_diag - 1, t)
                own = (t % n_diag) * row_stride
                for d in range(dmax + 1):
                    _gather_block(A2, items, ((d * T + t - d) * k) * k, W, own + d * block, k)
                _prefetch_block_row(A2, items, T, t + _AHEAD, n_diag, k)
                _factor_block_row(W, R, stat, t, dmax, k, row_stride, block, n_diag)
                for d in range(dmax + 1):
                    _scatter_block(W, own + d * block, L2, items, n_valid,
                                   ((d * T + t - d) * k) * k, k, d == 0)
            for l in range(n_valid):
                i = i0 + l
                info[i] = stat[l]
                if stat[l] != 0:
                    L[i] = np.nan
                else:  # padding blocks pass through (SciPy leaves them untouched)
                    for d in range(1, n_diag):
                        for t in range(max(T - d, 0), T):
                            L[i, d, t] = A[i, d, t]


@njit(parallel=True, **_OPTS)
def solve(L, X, index, n_threads):
    """X[i] <- M[index[i]]^{-1} X[i] from the factor L (item-major storage).

    The factor is gathered twice (block rows going forward, block columns
    going backward) into a window of w+1 block rows, so the workspace stays
    small whatever T.
    """
    Bx, T, k, nrhs = X.shape[0], X.shape[1], X.shape[2], X.shape[3]
    n_diag = L.shape[1]
    block = k * k * LANES
    row_stride = n_diag * block
    L2 = L.reshape((L.shape[0], n_diag * T * k * k))
    X2 = X.reshape((Bx, T * k * nrhs))
    n_chunks = (Bx + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    for worker in prange(n_workers):
        W = np.empty(n_diag * row_stride, dtype=X.dtype)
        R = np.empty(n_diag * k * LANES, dtype=X.dtype)
        Y = np.empty(T * k * nrhs * LANES, dtype=X.dtype)
        items = np.empty(LANES, dtype=np.int64)
        xitems = np.empty(LANES, dtype=np.int64)
        for chunk in range(worker, n_chunks, n_workers):
            i0 = chunk * LANES
            n_valid = min(LANES, Bx - i0)
            for l in range(LANES):
                xitems[l] = i0 + min(l, n_valid - 1)
                items[l] = index[xitems[l]]
            for t in range(T):
                dmax = min(n_diag - 1, t)
                own = (t % n_diag) * row_stride
                for d in range(dmax + 1):
                    _gather_block(L2, items, ((d * T + t - d) * k) * k, W, own + d * block, k)
                _prefetch_block_row(L2, items, T, t + _AHEAD, n_diag, k)
                _diag_reciprocals(W, R, t, k, row_stride, n_diag)
                _gather_rhs(X2, xitems, Y, t, k, nrhs)
                _forward_block_row(W, R, Y, t, dmax, k, nrhs, row_stride, block, n_diag)
            for t in range(T - 1, -1, -1):
                # block column t of L: L[t+d, t] = storage [d, t], into row (t+d), slot d
                for d in range(min(n_diag - 1, T - 1 - t) + 1):
                    _gather_block(L2, items, ((d * T + t) * k) * k, W,
                                  ((t + d) % n_diag) * row_stride + d * block, k)
                _prefetch_block_column(L2, items, T, t - _AHEAD, n_diag, k)
                _diag_reciprocals(W, R, t, k, row_stride, n_diag)
                _backward_block_row(W, R, Y, t, T, n_diag, k, nrhs, row_stride, block, n_diag)
                _scatter_rhs(Y, X2, xitems, n_valid, t, k, nrhs)


@njit(parallel=True, **_OPTS)
def scan_nonfinite(A, info, only_failed):
    """Set info[i] = -row of the first non-finite entry read in item i.

    Only entries the factorisation reads are scanned (the lower triangle of the
    diagonal blocks, no padding). Where ``only_failed[i]``, items with
    ``info[i] == 0`` are skipped (they cannot hold inf/NaN: see above).
    """
    B, n_diag, T, k = A.shape[0], A.shape[1], A.shape[2], A.shape[3]
    for i in prange(B):
        if info[i] == 0 and only_failed[i]:
            continue
        found = False
        for t in range(T):
            for r in range(k):
                for d in range(min(n_diag - 1, t) + 1):
                    cmax = r + 1 if d == 0 else k
                    for c in range(cmax):
                        if not np.isfinite(A[i, d, t - d, r, c]):
                            found = True
                if found:
                    info[i] = -(t * k + r + 1)
                    break
            if found:
                break

