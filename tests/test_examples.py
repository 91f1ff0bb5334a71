"""Each example in examples/ runs at a tiny size (``--quick``) so it cannot rot.

The examples are scripts, so they run in a subprocess exactly as a user runs
them (``python examples/NAME.py --quick``); the tests check that they exit
cleanly and print (and write) what they promise, not their accuracy at these
sizes (the full runs are documented in examples/README.md).
"""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, env=None, timeout=120):
    """Run ``examples/<name>`` with ``args``; return its stdout (fails on exit != 0)."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, cwd=EXAMPLES.parent,
    )
    assert result.returncode == 0, (
        f"{name} {' '.join(args)} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def test_lorenz_discovery_quick(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    out = run_example("lorenz_discovery.py", "--quick", "--out", str(tmp_path))
    for dim in "xyz":
        assert f"d{dim}/dt = " in out
    assert "dx/dt = -10.0000 x + 10.0000 y" in out  # the true equations are printed
    assert out.count("rel. error") == 1
    assert "mean relative error of the 7 true coefficients" in out
    assert "spurious terms:" in out
    for name in ("lorenz_loss.png", "lorenz_trajectories.png"):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_linear_odes_quick():
    out = run_example("linear_odes.py", "--quick")
    lines = out.splitlines()
    for name in ("RC circuit", "population growth", "harmonic oscillator",
                 "damped oscillator", "third-order linear"):
        row = [line for line in lines if line.startswith(name)]
        assert len(row) == 1, name
        first, joint, published, finer = map(float, row[0][len(name):].split())
        # T = 100 here (the published errors are for T = 1000); O = 4 is far finer
        assert 0 < first < 10 * published and 0 < joint < 10 * published, name
        assert finer < first, name


def test_solve_banded_quick_cpu():
    out = run_example("solve_banded.py", "--quick")
    ratio = float(out.split("n eps) = ")[1].split()[0])
    assert ratio < 30
    assert float(out.split("max |x - x_scipy| = ")[1].split()[0]) < 1e-12


@pytest.mark.cudasim
def test_solve_banded_quick_cuda():
    # Under NUMBA_ENABLE_CUDASIM=1 (make test-cudasim) NumPy input with
    # backend="cuda" runs the CUDA kernels in the simulator; on a GPU machine
    # with CuPy the example uses CuPy arrays.
    from bandsolve.cuda import _require_cuda

    try:
        _require_cuda()
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"bandsolve's CUDA backend is not available: {exc}")
    out = run_example("solve_banded.py", "--quick", "--backend", "cuda")
    assert float(out.split("n eps) = ")[1].split()[0]) < 30
