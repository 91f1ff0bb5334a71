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

  computed three scalar rows at a time (register tiling: one load of the
  shared row of the right operand feeds three FMAs). Reciprocals of the
  diagonal are kept so the hot loops never divide.
* **Fused solve.** ``factor_solve`` runs the forward substitution of block
  row t right after factoring it (data still in L1), keeps L only in the
  chunk's workspace (about ``T (w+1) k^2 8`` values, L2/L3-resident) and runs
  the backward substitution from there: the band is read once from memory,
  and no full-size factor is ever allocated.
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

from ._simd import LANES, vfnma, vlane, vload, vmul, vrecip, vsqrt, vstore, vtranspose

_OPTS = dict(cache=True, nogil=True, fastmath={"contract"})
_INLINE = dict(_OPTS, inline="always")


# ---------------------------------------------------------------------------
# gather / scatter between item-major storage and the lane workspace


@njit(**_INLINE)
def _gather_block(src, items, src_off, dst, dst_off, k):
    """dst[dst_off + (r*k + c)*LANES + l] = src[items[l], src_off + r*k + c]."""
    for r in range(k):
        so = src_off + r * k
        do = dst_off + r * k * LANES
        c0 = 0
        while c0 + LANES <= k:
            cols = vtranspose((
                vload(src[items[0]], so + c0), vload(src[items[1]], so + c0),
                vload(src[items[2]], so + c0), vload(src[items[3]], so + c0),
                vload(src[items[4]], so + c0), vload(src[items[5]], so + c0),
                vload(src[items[6]], so + c0), vload(src[items[7]], so + c0),
            ))
            o = do + c0 * LANES
            vstore(dst, o, cols[0])
            vstore(dst, o + LANES, cols[1])
            vstore(dst, o + 2 * LANES, cols[2])
            vstore(dst, o + 3 * LANES, cols[3])
            vstore(dst, o + 4 * LANES, cols[4])
            vstore(dst, o + 5 * LANES, cols[5])
            vstore(dst, o + 6 * LANES, cols[6])
            vstore(dst, o + 7 * LANES, cols[7])
            c0 += LANES
        for c in range(c0, k):
            for l in range(LANES):
                dst[do + c * LANES + l] = src[items[l], so + c]


@njit(**_INLINE)
def _scatter_block(src, src_off, dst, items, n_valid, dst_off, k, lower_only):
    """Inverse of _gather_block for the first n_valid lanes (upper part zeroed
    when lower_only)."""
    for r in range(k):
        so = src_off + r * k * LANES
        do = dst_off + r * k
        c0 = 0
        if n_valid == LANES:
            while c0 + LANES <= k:
                o = so + c0 * LANES
                rows = vtranspose((
                    vload(src, o), vload(src, o + LANES), vload(src, o + 2 * LANES),
                    vload(src, o + 3 * LANES), vload(src, o + 4 * LANES),
                    vload(src, o + 5 * LANES), vload(src, o + 6 * LANES),
                    vload(src, o + 7 * LANES),
                ))
                vstore(dst[items[0]], do + c0, rows[0])
                vstore(dst[items[1]], do + c0, rows[1])
                vstore(dst[items[2]], do + c0, rows[2])
                vstore(dst[items[3]], do + c0, rows[3])
                vstore(dst[items[4]], do + c0, rows[4])
                vstore(dst[items[5]], do + c0, rows[5])
                vstore(dst[items[6]], do + c0, rows[6])
                vstore(dst[items[7]], do + c0, rows[7])
                c0 += LANES
        for c in range(c0, k):
            for l in range(n_valid):
                dst[items[l], do + c] = src[so + c * LANES + l]
        if lower_only:
            for c in range(r + 1, k):
                for l in range(n_valid):
                    dst[items[l], do + c] = 0.0


# ---------------------------------------------------------------------------
# one block row of the factor and of the substitutions (lane workspace)


@njit(**_INLINE)
def _pivots(acc, stat, row1):
    for l in range(LANES):
        v = vlane(acc, l)
        if not (v > 0.0 and v < np.inf):
            if stat[l] == 0:
                stat[l] = row1


@njit(**_INLINE)
def _factor_block_row(W, R, stat, t, dmax, k, row_stride, block):
    """Factor block row t in place in W (lane workspace), three rows at a time."""
    for r0 in range(0, k, 3):
        ra = r0
        rb = min(r0 + 1, k - 1)
        rc = min(r0 + 2, k - 1)
        # off-diagonal blocks L[t, t-d], farthest first
        for d in range(dmax, 0, -1):
            own = t * row_stride + d * block
            for c in range(k):
                acc_a = vload(W, own + (ra * k + c) * LANES)
                acc_b = vload(W, own + (rb * k + c) * LANES)
                acc_c = vload(W, own + (rc * k + c) * LANES)
                for j in range(d + 1, dmax + 1):
                    pa = t * row_stride + j * block
                    pb = (t - d) * row_stride + (j - d) * block + c * k * LANES
                    for p in range(k):
                        y = vload(W, pb + p * LANES)
                        acc_a = vfnma(acc_a, vload(W, pa + (ra * k + p) * LANES), y)
                        acc_b = vfnma(acc_b, vload(W, pa + (rb * k + p) * LANES), y)
                        acc_c = vfnma(acc_c, vload(W, pa + (rc * k + p) * LANES), y)
                pb = (t - d) * row_stride + c * k * LANES
                for p in range(c):
                    y = vload(W, pb + p * LANES)
                    acc_a = vfnma(acc_a, vload(W, own + (ra * k + p) * LANES), y)
                    acc_b = vfnma(acc_b, vload(W, own + (rb * k + p) * LANES), y)
                    acc_c = vfnma(acc_c, vload(W, own + (rc * k + p) * LANES), y)
                rinv = vload(R, ((t - d) * k + c) * LANES)
                vstore(W, own + (ra * k + c) * LANES, vmul(acc_a, rinv))
                vstore(W, own + (rb * k + c) * LANES, vmul(acc_b, rinv))
                vstore(W, own + (rc * k + c) * LANES, vmul(acc_c, rinv))
        # diagonal block, columns up to the last row of the tile
        own = t * row_stride
        for c in range(rc + 1):
            acc_a = vload(W, own + (ra * k + c) * LANES)
            acc_b = vload(W, own + (rb * k + c) * LANES)
            acc_c = vload(W, own + (rc * k + c) * LANES)
            for d in range(1, dmax + 1):
                pa = t * row_stride + d * block
                for p in range(k):
                    y = vload(W, pa + (c * k + p) * LANES)
                    acc_a = vfnma(acc_a, vload(W, pa + (ra * k + p) * LANES), y)
                    acc_b = vfnma(acc_b, vload(W, pa + (rb * k + p) * LANES), y)
                    acc_c = vfnma(acc_c, vload(W, pa + (rc * k + p) * LANES), y)
            for p in range(c):
                y = vload(W, own + (c * k + p) * LANES)
                acc_a = vfnma(acc_a, vload(W, own + (ra * k + p) * LANES), y)
                acc_b = vfnma(acc_b, vload(W, own + (rb * k + p) * LANES), y)
                acc_c = vfnma(acc_c, vload(W, own + (rc * k + p) * LANES), y)
            # finalise in row order: the pivot of row c comes before its users
            if c == ra:
                _pivots(acc_a, stat, t * k + ra + 1)
                s = vsqrt(acc_a)
                vstore(W, own + (ra * k + c) * LANES, s)
                vstore(R, (t * k + c) * LANES, vrecip(s))
            elif c < ra:
                vstore(W, own + (ra * k + c) * LANES, vmul(acc_a, vload(R, (t * k + c) * LANES)))
            if rb != ra:
                if c == rb:
                    _pivots(acc_b, stat, t * k + rb + 1)
                    s = vsqrt(acc_b)
                    vstore(W, own + (rb * k + c) * LANES, s)
                    vstore(R, (t * k + c) * LANES, vrecip(s))
                elif c < rb:
                    vstore(W, own + (rb * k + c) * LANES, vmul(acc_b, vload(R, (t * k + c) * LANES)))
            if rc != rb:
                if c == rc:
                    _pivots(acc_c, stat, t * k + rc + 1)
                    s = vsqrt(acc_c)
                    vstore(W, own + (rc * k + c) * LANES, s)
                    vstore(R, (t * k + c) * LANES, vrecip(s))
                elif c < rc:
                    vstore(W, own + (rc * k + c) * LANES, vmul(acc_c, vload(R, (t * k + c) * LANES)))


@njit(**_INLINE)
def _forward_block_row(W, R, Y, t, dmax, k, nrhs, row_stride, block):
    """y_t <- L[t,t]^{-1} (y_t - sum_d L[t,t-d] y_{t-d}) in the lane workspace."""
    for r in range(k):
        rinv = vload(R, (t * k + r) * LANES)
        for q in range(nrhs):
            o = ((t * k + r) * nrhs + q) * LANES
            acc = vload(Y, o)
            for d in range(1, dmax + 1):
                pa = t * row_stride + d * block + r * k * LANES
                for p in range(k):
                    acc = vfnma(acc, vload(W, pa + p * LANES),
                                vload(Y, (((t - d) * k + p) * nrhs + q) * LANES))
            pa = t * row_stride + r * k * LANES
            for p in range(r):
                acc = vfnma(acc, vload(W, pa + p * LANES), vload(Y, ((t * k + p) * nrhs + q) * LANES))
            vstore(Y, o, vmul(acc, rinv))


@njit(**_INLINE)
def _backward_block_row(W, R, Y, t, T, n_diag, k, nrhs, row_stride, block):
    """x_t <- L[t,t]^{-T} (y_t - sum_d L[t+d,t]^T x_{t+d}) in the lane workspace."""
    dmax = min(n_diag - 1, T - 1 - t)
    for r in range(k - 1, -1, -1):
        rinv = vload(R, (t * k + r) * LANES)
        for q in range(nrhs):
            o = ((t * k + r) * nrhs + q) * LANES
            acc = vload(Y, o)
            for d in range(1, dmax + 1):
                pb = (t + d) * row_stride + d * block + r * LANES
                for p in range(k):
                    acc = vfnma(acc, vload(W, pb + p * k * LANES),
                                vload(Y, (((t + d) * k + p) * nrhs + q) * LANES))
            pb = t * row_stride + r * LANES
            for p in range(r + 1, k):
                acc = vfnma(acc, vload(W, pb + p * k * LANES), vload(Y, ((t * k + p) * nrhs + q) * LANES))
            vstore(Y, o, vmul(acc, rinv))


@njit(**_INLINE)
def _gather_rhs(X, items, Y, t, k, nrhs):
    for r in range(k):
        for q in range(nrhs):
            o = ((t * k + r) * nrhs + q) * LANES
            for l in range(LANES):
                Y[o + l] = X[items[l], t, r, q]


@njit(**_INLINE)
def _scatter_rhs(Y, X, items, n_valid, t, k, nrhs):
    for r in range(k):
        for q in range(nrhs):
            o = ((t * k + r) * nrhs + q) * LANES
            for l in range(n_valid):
                X[items[l], t, r, q] = Y[o + l]


@njit(**_INLINE)
def _chunk_items(index, i0, n_valid, items):
    for l in range(LANES):
        items[l] = index[i0 + min(l, n_valid - 1)]


# ---------------------------------------------------------------------------
# drivers (parallel over chunks of LANES items)


@njit(parallel=True, **_OPTS)
def factor_solve(A, X, info, n_threads):
    """Fused factor + solve: X[i] <- M_i^{-1} X[i]; A (B, w+1, T, k, k) is read only.

    Failed items get NaN in X and their status in ``info``.
    """
    B, n_diag, T, k = A.shape[0], A.shape[1], A.shape[2], A.shape[3]
    nrhs = X.shape[3]
    block = k * k * LANES
    row_stride = n_diag * block
    A2 = A.reshape((B, n_diag * T * k * k))
    n_chunks = (B + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    for worker in prange(n_workers):
        W = np.empty(T * row_stride, dtype=A.dtype)
        R = np.empty(T * k * LANES, dtype=A.dtype)
        Y = np.empty(T * k * nrhs * LANES, dtype=A.dtype)
        items = np.empty(LANES, dtype=np.int64)
        stat = np.empty(LANES, dtype=np.int64)
        for chunk in range(worker, n_chunks, n_workers):
            i0 = chunk * LANES
            n_valid = min(LANES, B - i0)
            for l in range(LANES):
                items[l] = i0 + min(l, n_valid - 1)
                stat[l] = 0
            for t in range(T):
                dmax = min(n_diag - 1, t)
                for d in range(dmax + 1):
                    _gather_block(A2, items, ((d * T + t - d) * k) * k, W,
                                  t * row_stride + d * block, k)
                _gather_rhs(X, items, Y, t, k, nrhs)
                _factor_block_row(W, R, stat, t, dmax, k, row_stride, block)
                _forward_block_row(W, R, Y, t, dmax, k, nrhs, row_stride, block)
            for t in range(T - 1, -1, -1):
                _backward_block_row(W, R, Y, t, T, n_diag, k, nrhs, row_stride, block)
                _scatter_rhs(Y, X, items, n_valid, t, k, nrhs)
            for l in range(n_valid):
                info[i0 + l] = stat[l]
                if stat[l] != 0:
                    X[i0 + l] = np.nan


@njit(parallel=True, **_OPTS)
def factor(A, L, info, n_threads):
    """Block Cholesky of A into L (may alias A). Failed items are NaN."""
    B, n_diag, T, k = A.shape[0], A.shape[1], A.shape[2], A.shape[3]
    block = k * k * LANES
    row_stride = n_diag * block
    A2 = A.reshape((B, n_diag * T * k * k))
    L2 = L.reshape((B, n_diag * T * k * k))
    n_chunks = (B + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    for worker in prange(n_workers):
        W = np.empty(T * row_stride, dtype=A.dtype)
        R = np.empty(T * k * LANES, dtype=A.dtype)
        items = np.empty(LANES, dtype=np.int64)
        stat = np.empty(LANES, dtype=np.int64)
        for chunk in range(worker, n_chunks, n_workers):
            i0 = chunk * LANES
            n_valid = min(LANES, B - i0)
            for l in range(LANES):
                items[l] = i0 + min(l, n_valid - 1)
                stat[l] = 0
            for t in range(T):
                dmax = min(n_diag - 1, t)
                for d in range(dmax + 1):
                    _gather_block(A2, items, ((d * T + t - d) * k) * k, W,
                                  t * row_stride + d * block, k)
                _factor_block_row(W, R, stat, t, dmax, k, row_stride, block)
                for d in range(dmax + 1):
                    _scatter_block(W, t * row_stride + d * block, L2, items, n_valid,
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
    """X[i] <- M[index[i]]^{-1} X[i] from the factor L (item-major storage)."""
    Bx, T, k, nrhs = X.shape[0], X.shape[1], X.shape[2], X.shape[3]
    n_diag = L.shape[1]
    block = k * k * LANES
    row_stride = n_diag * block
    L2 = L.reshape((L.shape[0], n_diag * T * k * k))
    n_chunks = (Bx + LANES - 1) // LANES
    n_workers = min(n_threads, n_chunks)
    for worker in prange(n_workers):
        W = np.empty(T * row_stride, dtype=X.dtype)
        R = np.empty(T * k * LANES, dtype=X.dtype)
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
                for d in range(dmax + 1):
                    _gather_block(L2, items, ((d * T + t - d) * k) * k, W,
                                  t * row_stride + d * block, k)
                for r in range(k):
                    vstore(R, (t * k + r) * LANES,
                           vrecip(vload(W, t * row_stride + (r * k + r) * LANES)))
                _gather_rhs(X, xitems, Y, t, k, nrhs)
                _forward_block_row(W, R, Y, t, dmax, k, nrhs, row_stride, block)
            for t in range(T - 1, -1, -1):
                _backward_block_row(W, R, Y, t, T, n_diag, k, nrhs, row_stride, block)
                _scatter_rhs(Y, X, xitems, n_valid, t, k, nrhs)


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
