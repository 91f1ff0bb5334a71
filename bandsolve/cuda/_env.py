"""What the machine offers for the CUDA backend (imports nothing heavy)."""

import importlib
import importlib.util
import os

INSTALL_HINT = "pip install 'bandsolve[cuda]' (brings cupy-cuda12x and numba-cuda[cu12])"


def simulator_enabled():
    """True when Numba runs CUDA kernels in its simulator (NUMBA_ENABLE_CUDASIM=1)."""
    try:
        from numba.cuda.core import config
    except ImportError:  # older numba-cuda keeps the flag in numba's config
        from numba.core import config
    return bool(getattr(config, "ENABLE_CUDASIM", os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"))


def missing_requirement():
    """Return None when the CUDA backend can run here, else (exception type, message)."""
    try:
        found = importlib.util.find_spec("numba_cuda") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return ImportError, (
            "backend='cuda' needs numba-cuda (the NVIDIA CUDA target for Numba), "
            f"which is not installed: {INSTALL_HINT}"
        )
    try:
        from numba import cuda
    except ImportError as exc:
        return ImportError, (
            f"backend='cuda' could not import numba.cuda ({exc}); {INSTALL_HINT}"
        )
    if simulator_enabled():
        return None
    try:
        importlib.import_module("cupy")
    except ImportError:
        return ImportError, f"backend='cuda' needs CuPy, which is not installed: {INSTALL_HINT}"
    if not cuda.is_available():
        return RuntimeError, (
            "backend='cuda' found no usable CUDA GPU (numba.cuda.is_available() is "
            "False: no NVIDIA GPU or driver on this machine). Use backend='cpu', or "
            "set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in Numba's simulator"
        )
    return None
