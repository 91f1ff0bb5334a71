"""CUDA backend: the kernel-level operations of ``bandsolve.cpu`` on the GPU.

Implements the backend protocol documented in :mod:`bandsolve.cpu`
(``factor``, ``solve``, ``factor_solve``, ``band_cotangent``, ``logdet`` and
``index_array``) with the kernels of :mod:`bandsolve.cuda._kernels`, one
kernel launch per operation for the whole batch.

Two modes, chosen by the array type of the operands:

* **device** (CuPy or any ``__cuda_array_interface__`` input): results are
  CuPy arrays; kernels run on CuPy's current stream
  (``cupy.cuda.get_current_stream()``, handed to Numba as an external
  stream); nothing synchronises the host and ``info`` stays on the device.
* **host** (NumPy input, as with ``backend="cuda"`` on NumPy arrays and under
  the Numba CUDA simulator ``NUMBA_ENABLE_CUDASIM=1``): operands are copied to
  the device, results copied back into the NumPy arrays the protocol names
  (on the same stream, then one synchronisation).
"""

import threading
from dataclasses import dataclass

import numpy as np
from numba import cuda

from .. import _arrays
from . import _kernels as K
from ._env import simulator_enabled

__all__ = ["factor", "solve", "factor_solve", "band_cotangent", "logdet", "index_array"]

name = "cuda"

_SIMULATOR = simulator_enabled()
# The simulator runs every thread as a Python thread. The factor and solve
# kernels keep the GPU's layout there (so the simulator tests run the very
# specialisations the GPU launches); the logdet reduction, whose layout does
# not depend on k and w, uses small blocks.
_LOGDET_THREADS = 4 if _SIMULATOR else K.LOGDET_BLOCK


def plan_for(dtype, block_size, bandwidth):
    """The kernel layout this backend uses for (dtype, k, w)."""
    return K.make_plan(np.dtype(dtype).name, int(block_size), int(bandwidth))


@dataclass(frozen=True)
class BatchIndex:
    """The right-hand-side-to-matrix index of one API call, kept on the host.

    ``identity`` is True when item i uses matrix i (no broadcasting): then
    :func:`factor_solve` fuses the factor and the solve and never needs the
    index, and a kernel that does gets ``arange`` made on the device.
    Otherwise the index is copied to the device, on the operation's stream,
    when a kernel needs it.
    """

    host: np.ndarray
    identity: bool


def index_array(index):
    """Wrap the API's int64 index array (no device work until a kernel needs it)."""
    if isinstance(index, BatchIndex):
        return index
    index = np.ascontiguousarray(index, dtype=np.int64)
    return BatchIndex(index, bool(np.array_equal(index, np.arange(index.size))))


def _is_identity(index, n_items, n_matrices):
    if n_items != n_matrices:
        return False
    if isinstance(index, BatchIndex):
        return index.identity
    if _arrays.is_device_array(index):
        return False  # unknown without a host synchronisation
    return bool(np.array_equal(np.asarray(index), np.arange(n_matrices)))


# ---------------------------------------------------------------------------
# operand staging


class _Staging:
    """Device views of one operation's operands, and the copies back to NumPy.

    Operations whose ``reference`` operand is a device array run in device
    mode (CuPy results, CuPy's current stream, no host synchronisation);
    otherwise in host mode (copies in, copies back, one synchronisation).
    """

    def __init__(self, reference):
        self.host = not _arrays.is_device_array(reference)
        self._copies = []
        if _SIMULATOR:
            self.stream = 0
        else:
            # Copies and kernels go on CuPy's current stream in both modes, so
            # they are ordered with the CuPy work around them (the index array
            # of index_array included). Numba attaches to the CUDA context CuPy
            # made current on this thread (the current device's primary one).
            ptr = _arrays._cupy().cuda.get_current_stream().ptr
            self.stream = cuda.external_stream(int(ptr))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self._copies:
            for device, host in self._copies:
                device.copy_to_host(host, stream=self.stream)
            if not _SIMULATOR:
                self.stream.synchronize()

    def view(self, a, copy_back=False):
        """A device view of ``a`` (a copy for host input).

        With ``copy_back`` the view's final contents are written into the
        host array ``a`` when the operation ends.
        """
        if isinstance(a, BatchIndex):
            if a.identity and not _SIMULATOR:
                a = _arrays._cupy().arange(a.host.size, dtype=np.int64)
            else:
                a = a.host
        if _arrays.is_device_array(a):
            return cuda.as_cuda_array(a, sync=False)
        d = cuda.to_device(np.ascontiguousarray(a), stream=self.stream)
        if copy_back:
            self._copies.append((d, a))
        return d

    def output_for(self, a):
        """A device buffer whose final contents become the output ``a`` (not read)."""
        if _arrays.is_device_array(a):
            return cuda.as_cuda_array(a, sync=False)
        d = cuda.device_array(a.shape, dtype=a.dtype, stream=self.stream)
        self._copies.append((d, a))
        return d

    def new(self, shape, dtype):
        """A new result array (CuPy in device mode, NumPy in host mode) and its view."""
        out = np.empty(shape, dtype=dtype) if self.host else _arrays._cupy().empty(shape, dtype)
        return out, self.output_for(out)

    def scratch(self, shape, dtype):
        """A device work array that is not returned."""
        if self.host:
            return cuda.device_array(shape, dtype=dtype, stream=self.stream)
        return cuda.as_cuda_array(_arrays._cupy().empty(shape, dtype=dtype), sync=False)


def _zeros_like_kind(reference, shape, dtype):
    """Zero result without a launch, in the array type of ``reference``."""
    if _arrays.is_device_array(reference):
        return _arrays._cupy().zeros(shape, dtype=dtype)
    return np.zeros(shape, dtype=dtype)


# Numba's simulator keeps the kernel being simulated in module-level state and
# swaps the ``cuda`` name of the kernels' module while one runs, so building
# and launching kernels from several Python threads would step on each other
# there; on a GPU, launches from any thread are independent.
_SIMULATOR_LOCK = threading.Lock()


def _launch(factory, key, blocks, threads, stream, *args):
    """Launch ``factory(*key).kernel`` (the factory is memoised) on ``stream``."""
    if _SIMULATOR:
        with _SIMULATOR_LOCK:
            factory(*key).kernel[blocks, threads, 0](*args)
    else:
        factory(*key).kernel[blocks, threads, stream](*args)


# ---------------------------------------------------------------------------
# the protocol


def factor(bands, L, check_finite):
    """Block Cholesky of ``bands`` (B, w+1, T, k, k) into ``L``; returns ``info`` (B,)."""
    return _factor(bands, L, None, check_finite)


def _factor(bands, L, x, check_finite):
    """Launch the factor kernel; ``x`` (or None) is solved in place with the factor.

    ``L=None`` keeps the factor in device scratch memory only.
    """
    n_items, n_diag, T, k = bands.shape[:4]
    if n_items == 0 or T == 0 or k == 0:
        return _zeros_like_kind(bands, (n_items,), np.int64)
    with _Staging(bands) as st:
        info, d_info = st.new((n_items,), np.int64)
        d_bands = st.view(bands, copy_back=L is bands)
        if L is bands or (L is None and st.host):
            d_L = d_bands  # in place (host mode: in the private device copy)
        elif L is None:
            d_L = st.scratch(bands.shape, bands.dtype)
        else:
            d_L = st.output_for(L)
        if x is None:
            d_x = st.scratch((n_items, T, k, 0), bands.dtype)
        else:
            d_x = st.view(x, copy_back=True)
        plan = plan_for(bands.dtype, k, n_diag - 1)
        _launch(K.factor_kernel, (plan,), plan.blocks_for(n_items), plan.threads_per_block,
                st.stream, d_bands, d_L, d_x, d_info, bool(check_finite))
    return info


def solve(L, x, index):
    """In place: ``x[i] <- M[index[i]]^{-1} x[i]`` for x (Bx, T, k, nrhs)."""
    n_items, T, k, nrhs = x.shape
    if n_items == 0 or T == 0 or k == 0 or nrhs == 0:
        return
    with _Staging(x) as st:
        d_x = st.view(x, copy_back=True)
        plan = plan_for(x.dtype, k, L.shape[1] - 1)
        _launch(K.solve_kernel, (plan,), plan.blocks_for(n_items), plan.threads_per_block,
                st.stream, st.view(L), d_x, st.view(index))


def factor_solve(bands, x, index, check_finite, overwrite):
    """Factor then solve; returns ``info``.

    When item i of x uses matrix i (``index`` the identity, the only way the
    API calls it) the two run fused in one launch and the factor is kept in
    ``bands`` (``overwrite``) or in scratch memory. Otherwise the factor and
    solve kernels run one after the other.
    """
    if not _is_identity(index, x.shape[0], bands.shape[0]):
        L = bands if overwrite else _empty_like(bands)
        info = factor(bands, L, check_finite)
        solve(L, x, index)
        return info
    return _factor(bands, bands if overwrite else None, x, check_finite)


def _empty_like(a):
    if _arrays.is_device_array(a):
        return _arrays._cupy().empty_like(a)
    return np.empty_like(a)


def _groups(index, n_items, n_matrices):
    """CSR groups of the right-hand-side items sharing each matrix (no host sync)."""
    if _is_identity(index, n_items, n_matrices):
        xp = np if _SIMULATOR else _arrays._cupy()
        return (xp.arange(n_matrices + 1, dtype=np.int64),
                xp.arange(n_matrices, dtype=np.int64))
    if isinstance(index, BatchIndex):
        index = index.host
    if _arrays.is_device_array(index):
        xp = _arrays._cupy()
        order = xp.argsort(index)
    else:
        xp = np
        index = np.asarray(index)
        order = np.argsort(index, kind="stable")
    start = xp.searchsorted(index[order], xp.arange(n_matrices + 1, dtype=np.int64))
    return start.astype(np.int64), order.astype(np.int64)


def band_cotangent(bbar, x, index, n_matrices, n_diag):
    """``-sym(bbar x^T)`` on the band, summed per matrix: (n_matrices, n_diag, T, k, k)."""
    n_items, T, k, _ = x.shape
    shape = (n_matrices, n_diag, T, k, k)
    if n_matrices * n_diag * T * k == 0:
        return _zeros_like_kind(x, shape, x.dtype)
    with _Staging(x) as st:
        out, d_out = st.new(shape, x.dtype)
        start, items = _groups(index, n_items, n_matrices)
        blocks = -(-out.size // K.FLAT_BLOCK)
        _launch(K.cotangent_kernel, (x.dtype.name, k, n_diag - 1), blocks, K.FLAT_BLOCK,
                st.stream, st.view(bbar), st.view(x), st.view(start), st.view(items), d_out)
    return out


def logdet(L):
    """``log det M_i = 2 sum log diag L_i`` for L (B, w+1, T, k, k)."""
    n_items = L.shape[0]
    if n_items == 0:
        return _zeros_like_kind(L, (0,), L.dtype)
    with _Staging(L) as st:
        out, d_out = st.new((n_items,), L.dtype)
        _launch(K.logdet_kernel, (L.dtype.name, _LOGDET_THREADS), n_items, _LOGDET_THREADS,
                st.stream,
                st.view(L), d_out)
    return out
