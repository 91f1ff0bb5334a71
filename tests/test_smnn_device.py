"""smnn on the CUDA backend: under the Numba CUDA simulator, and on a real GPU.

``cudasim`` tests run NumPy input with ``backend="cuda"`` (bandsolve copies to
the device and back), in their own pytest process with
``NUMBA_ENABLE_CUDASIM=1`` (``make test-cudasim``). ``gpu`` tests need CuPy
and a GPU: CuPy input must stay on the device end to end. Both compare with
the CPU path, which the other smnn tests check against the dense reference.
"""

import os

import numpy as np
import pytest

import smnn
from bandsolve import _arrays


def _cuda_backend_or_skip():
    try:
        _arrays.get_backend("cuda")
    except ImportError as exc:
        pytest.skip(f"bandsolve's CUDA backend is not available: {exc}")


def problem(rng, central):
    B, T, E, D, O = 2, 6, 2, 2, 4 if central else 3
    return (rng.standard_normal((B, T, E, D, O)), rng.standard_normal((B, T, E)),
            rng.standard_normal((B, 1, D, 2)), rng.uniform(0.2, 0.5, (T - 1,)))


@pytest.mark.cudasim
@pytest.mark.parametrize("central", [False, True])
def test_cuda_backend_under_simulator_matches_cpu(central):
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        pytest.skip("run with NUMBA_ENABLE_CUDASIM=1 (make test-cudasim)")
    _cuda_backend_or_skip()
    args = problem(np.random.default_rng(0), central)
    kw = dict(enable_central_smoothness=central, weight_smooth=0.9)
    u_cpu, vjp_cpu = smnn.ode_vjp(*args, backend="cpu", **kw)
    u_gpu, vjp_gpu = smnn.ode_vjp(*args, backend="cuda", **kw)
    assert isinstance(u_gpu, np.ndarray)
    np.testing.assert_allclose(u_gpu, u_cpu, rtol=1e-10, atol=1e-12)
    g = np.ones_like(u_cpu)
    for a, b in zip(vjp_gpu(g), vjp_cpu(g)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    for a, b in zip(smnn.ode_adjoint(*args, u_cpu, g, backend="cuda", **kw), vjp_cpu(g)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    solver = smnn.ODESolver(args[0], args[3], n_init_var_orders=2, backend="cuda", **kw)
    assert solver.factor.backend == "cuda"
    np.testing.assert_allclose(solver.solve(args[1], args[2]), u_cpu, rtol=1e-10, atol=1e-12)


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA device")
    _cuda_backend_or_skip()
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("central", [False, True])
def test_cupy_input_stays_on_the_gpu(central, dtype):
    cupy = _cupy_or_skip()
    args = [a.astype(dtype) for a in problem(np.random.default_rng(1), central)]
    kw = dict(enable_central_smoothness=central, weight_equation=np.float64(1.2))
    u_cpu, vjp_cpu = smnn.ode_vjp(*args, **kw)
    dargs = [cupy.asarray(a) for a in args]
    u, vjp = smnn.ode_vjp(*dargs, **kw)
    assert isinstance(u, cupy.ndarray) and u.dtype == dtype
    tol = 1e-10 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(cupy.asnumpy(u), u_cpu, rtol=tol, atol=tol)
    grads = vjp(cupy.ones_like(u))
    for a, b in zip(grads, vjp_cpu(np.ones_like(u_cpu))):
        assert isinstance(a, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(a), b, rtol=10 * tol, atol=10 * tol)
    bands, rhs = smnn.ode_system(*dargs, **kw)
    bands_cpu, rhs_cpu = smnn.ode_system(*args, **kw)
    assert isinstance(bands, cupy.ndarray)
    T = bands.shape[-3]
    for d in range(bands.shape[-4]):
        np.testing.assert_allclose(cupy.asnumpy(bands[..., d, : T - d, :, :]),
                                   bands_cpu[..., d, : T - d, :, :], rtol=tol, atol=tol)
    np.testing.assert_allclose(cupy.asnumpy(rhs), rhs_cpu, rtol=tol, atol=tol)
