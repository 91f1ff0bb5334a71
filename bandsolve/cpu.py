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
"""

import numba
import numpy as np

from . import _kernels, _kernels_simd

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
    # Small batch: factor into a band-sized array (the input's own when allowed),
    # then solve; both kernels keep only a window of w+1 block rows.
    L = bands if overwrite else np.empty_like(bands)
    info = factor(bands, L, check_finite)
    solve(L, x, index)
    failed = info != 0
    if failed.any():
        x[failed[index]] = np.nan
    return info


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
