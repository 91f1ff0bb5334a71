"""GPU backend of bandsolve: Numba CUDA kernels launched on CuPy arrays.

Imported lazily: ``import bandsolve`` works without CuPy, numba-cuda or a GPU.
"""

__all__ = []


def _require_cuda():
    """Return the CUDA backend module, or raise an error saying what to install."""
    raise ImportError(
        "backend='cuda' is not available yet in this build of bandsolve"
    )
