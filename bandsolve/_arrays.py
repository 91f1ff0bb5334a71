"""Array-module dispatch and backend selection (NumPy on CPU, CuPy on GPU).

bandsolve never imports CuPy or numba-cuda at import time. An array is treated
as a GPU array when it exposes ``__cuda_array_interface__`` (CuPy, PyTorch
CUDA tensors, Numba device arrays); the CuPy module is then imported lazily.
"""

import importlib

import numpy as np

__all__ = ["is_device_array", "array_module", "resolve_backend", "get_backend"]

_BACKENDS = ("auto", "cpu", "cuda")


def is_device_array(a):
    """True when ``a`` lives on a CUDA device (has ``__cuda_array_interface__``)."""
    return hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray)


def _cupy():
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError(
            "GPU arrays need CuPy: install the 'cuda' extra "
            "(pip install 'bandsolve[cuda]', which brings cupy-cuda12x and "
            "numba-cuda[cu12])"
        ) from exc


def array_module(*arrays):
    """Return ``cupy`` if any array is a device array, else ``numpy``."""
    if any(is_device_array(a) for a in arrays if a is not None):
        return _cupy()
    return np


def asarray(a, xp):
    """Convert ``a`` to an array of module ``xp`` (zero copy where possible)."""
    if xp is np:
        if is_device_array(a):
            raise TypeError(
                "cannot mix GPU arrays with NumPy arrays in one call; "
                f"got a {type(a).__name__} next to NumPy input"
            )
        return np.asarray(a)
    return xp.asarray(a)


def resolve_backend(backend, *arrays):
    """Map ``backend`` ("auto", "cpu", "cuda") to "cpu" or "cuda" for the input."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}; got {backend!r}")
    on_device = any(is_device_array(a) for a in arrays if a is not None)
    if backend == "auto":
        return "cuda" if on_device else "cpu"
    if backend == "cpu" and on_device:
        raise ValueError(
            "backend='cpu' cannot take GPU arrays; move them to the host "
            "(e.g. cupy.asnumpy) or use backend='cuda'"
        )
    return backend


def get_backend(name):
    """Return the backend module implementing the kernel-level operations."""
    if name == "cpu":
        from . import cpu

        return cpu
    from .cuda import _require_cuda

    return _require_cuda()
