"""GPU backend of bandsolve: Numba CUDA kernels launched on CuPy arrays.

Imported lazily: ``import bandsolve`` works without CuPy, numba-cuda or a GPU.
``backend="cuda"`` (or CuPy input with ``backend="auto"``) calls
:func:`_require_cuda`, which returns the backend module
(:mod:`bandsolve.cuda._backend`) or raises an error that says what is missing.
The kernels and their thread mapping are described in
:mod:`bandsolve.cuda._kernels`.
"""

__all__ = []


def _require_cuda():
    """Return the CUDA backend module, or raise an error saying what to install.

    Raises
    ------
    ImportError
        numba-cuda or CuPy is not installed (``pip install 'bandsolve[cuda]'``).
    RuntimeError
        No CUDA GPU is visible (and the Numba CUDA simulator is not enabled).
    """
    from ._env import missing_requirement

    missing = missing_requirement()
    if missing is not None:
        error, message = missing
        raise error(message)
    from . import _backend

    return _backend
