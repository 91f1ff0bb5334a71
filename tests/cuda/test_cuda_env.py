"""backend='cuda' where numba-cuda, CuPy or a GPU is missing.

``import bandsolve`` must work without them, and asking for the CUDA backend
must raise an error that says what to install (or that no GPU was found).
These tests run in the normal pytest process and fake the missing pieces.
"""

import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import bandsolve
from bandsolve.cuda import _env

INSTALL = r"pip install 'bandsolve\[cuda\]'"


def _problem():
    bands = np.zeros((2, 3, 1, 1))
    bands[0] = 4.0
    return bands, np.ones((3, 1))


def test_import_without_cupy_and_numba_cuda_then_clear_error():
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("cupy", "numba_cuda"):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NotInstalled())
        import numpy as np
        import bandsolve
        bands = np.zeros((2, 3, 1, 1)); bands[0] = 4.0
        print(bandsolve.solve(bands, np.ones((3, 1))).ravel().tolist())
        try:
            bandsolve.solve(bands, np.ones((3, 1)), backend="cuda")
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[0.25, 0.25, 0.25]"
    assert lines[1].startswith("ImportError: backend='cuda' needs numba-cuda")
    assert "pip install 'bandsolve[cuda]'" in lines[1]


def test_missing_numba_cuda(monkeypatch):
    real = _env.importlib.util.find_spec
    monkeypatch.setattr(_env.importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    with pytest.raises(ImportError, match="needs numba-cuda.*" + INSTALL):
        bandsolve.solve(*_problem(), backend="cuda")


def test_missing_cupy(monkeypatch):
    monkeypatch.setattr(_env, "simulator_enabled", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(ImportError, match="needs CuPy.*" + INSTALL):
        bandsolve.cholesky(_problem()[0], backend="cuda")


def test_no_gpu(monkeypatch):
    from numba import cuda

    monkeypatch.setattr(_env, "simulator_enabled", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no usable CUDA GPU.*NUMBA_ENABLE_CUDASIM=1"):
        bandsolve.solve(*_problem(), backend="cuda")


def test_cpu_backend_unaffected_by_missing_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    x = bandsolve.solve(*_problem(), backend="auto")
    np.testing.assert_array_equal(x.ravel(), [0.25, 0.25, 0.25])
