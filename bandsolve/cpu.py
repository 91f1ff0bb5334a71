"""CPU backend: Numba kernels, parallel over the batch.

Every backend (this one and ``bandsolve.cuda``) implements the same five
kernel-level operations on validated, C-contiguous arrays of one floating
dtype, with the batch flattened to one leading axis:

``factor(bands, L, check_finite) -> info``
    Block Cholesky of ``bands`` (B, w+1, T, k, k) into ``L`` (same shape; may
    be ``bands`` itself). ``info`` (B,) int64: 0 ok, j > 0 leading minor j not
    positive definite, -j non-finite value in scalar row j.
``solve(L, x, index)``
    In place: ``x[i] <- M[index[i]]^{-1} x[i]`` for x (Bx, T, k, nrhs).
``factor_solve(bands, x, index, check_finite, overwrite) -> info``
    ``factor`` then ``solve``, fused where the backend can (no full L kept).
``band_cotangent(bbar, x, index, n_matrices) -> d_bands``
    (n_matrices, w+1, T, k, k): minus the symmetrised outer products of the
    adjoint, summed over the right-hand-side items that share a matrix.
``logdet(L) -> (B,)``

How ``factor_solve`` runs here, by batch size B (``LANES`` = 8 systems per
SIMD chunk, ``threads`` Numba threads):

* B >= 2 threads LANES: the fused kernel, batch items in the lanes.
* Fewer items than lanes (one long sequence above all): each system is cut
  into pieces that fill the lanes and threads, with a Schur complement on
  the separators (``_kernels_part.py``, :func:`factor_solve_partitioned`).
* Otherwise, and for short systems: factor then solve, windowed kernels.
"""

import math

import numba
import numpy as np

from . import _kernels, _kernels_part, _kernels_simd

__all__ = ["factor", "solve", "factor_solve", "band_cotangent", "logdet"]

name = "cpu"


#: Below this many flops a call runs on one thread: waking the workers costs
#: tens of microseconds on an idle machine and milliseconds on a loaded one.
PARALLEL_MIN_FLOPS = 4e6


def _threads_for(n_chunks, flops):
    if flops < PARALLEL_MIN_FLOPS:
        return 1
    return max(1, min(numba.get_num_threads(), n_chunks))


def _factor_flops(A):
    B, n_diag, T, k = A.shape[:4]
    w = n_diag - 1
    return B * T * k**3 * (1 / 3 + w + w * w)


def _solve_flops(x, n_diag):
    B, T, k, nrhs = x.shape
    return 4.0 * B * T * n_diag * k * k * nrhs


def _serial_if_one(threads, kernel, *args):
    """Call ``kernel(*args)``; with one thread of work, on the calling thread alone.

    A parallel region wakes every worker even when only one has work, which
    dominates small problems (and is far worse on a loaded machine).
    ``set_num_threads`` is thread-local in Numba, so this is safe under
    concurrent calls.
    """
    if threads > 1:
        return kernel(*args)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(previous)


def _run(kernel, n_items, flops, *args):
    """Call a SIMD kernel (chunks of LANES items) with one thread per chunk at most."""
    threads = _threads_for(-(-n_items // _kernels_simd.LANES), flops)
    return _serial_if_one(threads, kernel, *args, threads)


#: Up to this many items the scalar reference kernels beat the SIMD ones,
#: whose LANES-wide chunk would mostly compute copies of the last item.
SCALAR_MAX_ITEMS = 1


def _classify_failures(bands, info, check_finite):
    """Give failed items whose input holds inf/NaN the code -row (see _kernels_simd)."""
    if check_finite and info.any():
        _kernels_simd.scan_nonfinite(bands, info, np.ones(info.shape[0], dtype=np.bool_))


def factor(bands, L, check_finite):
    B = bands.shape[0]
    info = np.zeros(B, dtype=np.int64)
    if B == 0:
        return info
    before = None
    if check_finite and np.may_share_memory(bands, L):
        # in place: the input is gone afterwards, so look for inf/NaN first
        before = np.zeros_like(info)
        _kernels_simd.scan_nonfinite(bands, before, np.zeros(B, dtype=np.bool_))
    if B <= SCALAR_MAX_ITEMS:
        _serial_if_one(1, _kernels.factor, bands, L, info)
    else:
        _run(_kernels_simd.factor, B, _factor_flops(bands), bands, L, info)
    if before is not None:
        return np.where(before < 0, before, info)
    _classify_failures(bands, info, check_finite)
    return info


def solve(L, x, index):
    if 0 < x.shape[0] <= SCALAR_MAX_ITEMS:
        _serial_if_one(1, _kernels.solve, L, x, index)
    elif x.shape[0]:
        _run(_kernels_simd.solve, x.shape[0], _solve_flops(x, L.shape[1]), L, x, index)


def factor_solve(bands, x, index, check_finite, overwrite):
    B = bands.shape[0]
    info = np.zeros(B, dtype=np.int64)
    if B == 0:
        return info
    flops = _factor_flops(bands) + _solve_flops(x, bands.shape[1])
    threads = _threads_for(-(-B // _kernels_simd.LANES), flops)
    if 2 * threads * _kernels_simd.LANES <= B:
        # The fused kernel keeps each chunk's factor in its workspace, LANES
        # items' worth per thread: at most half the size of the input here.
        _serial_if_one(threads, _kernels_simd.factor_solve, bands, x, info, threads)
        _classify_failures(bands, info, check_finite)
        return info
    parts = partitions_for(B, bands.shape[2], bands.shape[1] - 1, numba.get_num_threads())
    if parts > 1 and flops >= PARTITION_MIN_FLOPS:
        threads = _threads_for(-(-B * parts // _kernels_simd.LANES), flops)
        if _serial_if_one(threads, factor_solve_partitioned, bands, x, parts, threads):
            return info
        # a pivot failed (x untouched): the sequential path below finds info
    # Small batch: factor into a band-sized array (the input's own when allowed),
    # then solve; both kernels keep only a window of w+1 block rows.
    L = bands if overwrite else np.empty_like(bands)
    info = factor(bands, L, check_finite)
    solve(L, x, index)
    failed = info != 0
    if failed.any():
        x[failed[index]] = np.nan
    return info


#: A partition's interior has at least this many block rows (and 2w).
PARTITION_MIN_ROWS = 32
#: Below this many flops the partitioned path's fixed cost (the Schur system
#: is assembled with NumPy) outweighs its gain.
PARTITION_MIN_FLOPS = 2e6


def partitions_for(B, T, w, threads):
    """How many pieces to cut each of B systems into for ``factor_solve``.

    1 (no partitioning) when the batch fills the LANES lanes of every thread on
    its own or the systems are too short; otherwise enough pieces for two
    chunks of lanes per thread (rounded up so that no lane idles), each piece
    at least PARTITION_MIN_ROWS long.
    """
    lanes = max(threads, 1) * _kernels_simd.LANES
    if B >= lanes:
        return 1
    P = -(-2 * lanes // B)
    # B P a multiple of LANES where possible: no lane of the last chunk idle
    multiple = _kernels_simd.LANES // math.gcd(B, _kernels_simd.LANES)
    P = -(-P // multiple) * multiple
    P_max = (T + w) // (PARTITION_MIN_ROWS + w)
    if P > P_max:
        P = P_max // multiple * multiple if P_max >= multiple else P_max
    if P < 2:
        return 1
    n = -(-(T + w) // P) - w
    if n < max(PARTITION_MIN_ROWS, 2 * w, P):
        return 1
    return P


def _aligned_empty(shape, dtype, alignment):
    """np.empty whose data starts at a multiple of ``alignment`` bytes."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    raw = np.empty(n * dtype.itemsize + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + n * dtype.itemsize].view(dtype).reshape(shape)


def factor_solve_partitioned(bands, x, P, threads, nt_min_bytes=_kernels_simd.NT_MIN_BYTES):
    """``factor_solve`` with each system cut into P pieces (see ``_kernels_part``).

    Returns False, with ``x`` untouched, when a pivot fails in an interior or
    in the Schur complement (the matrix is then not positive definite, or not
    finite): the caller redoes the solve with the sequential kernels, which
    find the exact failing leading minor. The factor of the pieces is kept
    packed between the two passes, written with streaming stores when it
    takes ``nt_min_bytes`` or more (as in ``_kernels_simd.factor_solve``).
    """
    B, n_diag, T, k = bands.shape[:4]
    w = n_diag - 1
    wk = w * k
    nrhs = x.shape[3]
    n = -(-(T + w) // P) - w
    s = n + w
    # n >= w: separators do not couple to each other; (P-1) s < T: every
    # separator row is a real row (the padding stays inside the last piece)
    if P < 2 or n < w or (P - 1) * s >= T:
        raise ValueError(f"cannot cut T = {T} block rows (w = {w}) into P = {P} pieces")
    lanes = _kernels_simd.LANES
    Q = B * P
    n_chunks = -(-Q // lanes)
    dt = bands.dtype
    frow = (k * (k + 1) // 2 + w * k * k) * lanes  # one packed block row, lane layout
    Fbuf = _aligned_empty((n_chunks, n * frow), dt, lanes * dt.itemsize)
    Ybuf = np.empty((n_chunks, n * k * nrhs * lanes), dtype=dt)
    GLL, GRL, GRR = (np.empty((Q, wk, wk), dtype=dt) for _ in range(3))
    GLb, GRb = (np.empty((Q, wk, nrhs), dtype=dt) for _ in range(2))
    stat = np.zeros(Q, dtype=np.int64)
    _kernels_part.part_forward(bands, x, P, n, Fbuf, Ybuf, GLL, GRL, GRR, GLb, GRb,
                               stat, threads, nt_min_bytes)
    if stat.any():
        return False
    # Schur complement on the P - 1 separators: block tridiagonal, blocks wk x wk.
    rows = (np.arange(1, P) * s - w)[:, None] + np.arange(w)          # (P-1, w)
    S = np.zeros((B, 2, P - 1, w, k, w, k), dtype=dt)
    for u in range(w):
        for v in range(u + 1):
            blk = bands[:, u - v, rows[:, v]]                          # (B, P-1, k, k)
            if u == v:
                blk = np.tril(blk) + np.swapaxes(np.tril(blk, -1), -1, -2)
                S[:, 0, :, u, :, u, :] = blk
            else:
                S[:, 0, :, u, :, v, :] = blk
                S[:, 0, :, v, :, u, :] = np.swapaxes(blk, -1, -2)
    S = S.reshape(B, 2, P - 1, wk, wk)

    def full(G):  # lower triangle -> symmetric
        return np.tril(G) + np.swapaxes(np.tril(G, -1), -1, -2)

    GLL = full(GLL).reshape(B, P, wk, wk)
    GRR = full(GRR).reshape(B, P, wk, wk)
    S[:, 0] += GRR[:, :P - 1] + GLL[:, 1:]
    S[:, 1, :P - 2] = GRL.reshape(B, P, wk, wk)[:, 1:P - 1]
    g = x[:, rows].reshape(B, P - 1, wk, nrhs)
    g += GRb.reshape(B, P, wk, nrhs)[:, :P - 1] + GLb.reshape(B, P, wk, nrhs)[:, 1:]
    info = np.zeros(B, dtype=np.int64)
    _kernels.factor(S, S, info)
    if info.any():
        return False
    _kernels.solve(S, g, np.arange(B, dtype=np.int64))
    XS = np.zeros((B, P + 1, w, k, nrhs), dtype=dt)
    XS[:, 1:P] = g.reshape(B, P - 1, w, k, nrhs)
    x[:, rows] = XS[:, 1:P]
    _kernels_part.part_backward(bands, x, P, n, Fbuf, Ybuf, XS, threads)
    return True


def group_by_matrix(index, n_matrices):
    """CSR-style groups of right-hand-side items that share a matrix."""
    order = np.argsort(index, kind="stable")
    counts = np.bincount(index, minlength=n_matrices)
    start = np.zeros(n_matrices + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    return start, order.astype(np.int64)


def band_cotangent(bbar, x, index, n_matrices, n_diag):
    T, k = x.shape[1], x.shape[2]
    out = np.zeros((n_matrices, n_diag, T, k, k), dtype=x.dtype)
    if n_matrices and x.shape[0]:
        start, items = group_by_matrix(index, n_matrices)
        threads = _threads_for(n_matrices, 4.0 * x.size * k * n_diag)
        _serial_if_one(threads, _kernels.band_cotangent, out, bbar, x, start, items)
    return out


def logdet(L):
    out = np.empty(L.shape[0], dtype=L.dtype)
    if L.shape[0]:
        threads = _threads_for(L.shape[0], 2.0 * L.shape[0] * L.shape[2] * L.shape[3])
        _serial_if_one(threads, _kernels.logdet, L, out)
    return out
