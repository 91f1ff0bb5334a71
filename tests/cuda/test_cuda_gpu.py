"""The CUDA backend on a real GPU with CuPy arrays (skipped without one).

CuPy in and out, CuPy's current (non-default) stream, ``info`` left on the
device, float32 accuracy and large batches, compared with the CPU backend.
"""

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")

from bandsolve.cuda._env import missing_requirement, simulator_enabled  # noqa: E402

if simulator_enabled() or missing_requirement() is not None:
    pytest.skip("needs a CUDA GPU with CuPy (not the simulator)", allow_module_level=True)

import bandsolve  # noqa: E402

from _cuda_cases import (  # noqa: E402
    band_norm1,
    band_residual_ratio,
    eps,
    random_spd_bands_large,
)

pytestmark = pytest.mark.gpu

SIZES = [(1, 9), (2, 9), (1, 30), (2, 30), (1, 64)]  # (w, k)


def _forward_tol(bands, dtype, x_scale):
    # Gershgorin: the generator's margin keeps lambda_min >= 1, so cond <= ||M||_1.
    n = bands.shape[2] * bands.shape[3]
    return 8 * n * eps(dtype) * band_norm1(bands).max() * x_scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("w,k", SIZES)
def test_cupy_in_cupy_out_matches_cpu(dtype, w, k):
    rng = np.random.default_rng(w * 100 + k)
    B, T = 64, 50
    bands_np = random_spd_bands_large(rng, B, w, T, k, dtype)
    b_np = rng.standard_normal((B, T, k, 3)).astype(dtype)
    bands, b = cupy.asarray(bands_np), cupy.asarray(b_np)

    x = bandsolve.solve(bands, b)
    assert isinstance(x, cupy.ndarray) and x.dtype == dtype and x.shape == b.shape
    x_host = cupy.asnumpy(x)
    assert band_residual_ratio(bands_np, x_host, b_np).max() < 30

    fac = bandsolve.cholesky(bands, check=False)
    assert fac.backend == "cuda"
    assert isinstance(fac.info, cupy.ndarray) and isinstance(fac.factor, cupy.ndarray)
    assert int(cupy.count_nonzero(fac.info)) == 0
    x2 = fac.solve(b)
    assert band_residual_ratio(bands_np, cupy.asnumpy(x2), b_np).max() < 30

    if dtype == np.float64:
        x_cpu = bandsolve.solve(bands_np, b_np, backend="cpu")
        tol = _forward_tol(bands_np, dtype, np.abs(x_cpu).max())
        assert np.abs(x_host - x_cpu).max() <= tol
        fac_cpu = bandsolve.cholesky(bands_np, backend="cpu")
        np.testing.assert_allclose(cupy.asnumpy(fac.logdet()), fac_cpu.logdet(), rtol=1e-10)

        xv, vjp = bandsolve.solve_vjp(bands, b)
        g = rng.standard_normal(b_np.shape)
        d_bands, d_b = vjp(cupy.asarray(g))
        assert isinstance(d_bands, cupy.ndarray) and isinstance(d_b, cupy.ndarray)
        d_bands_c, d_b_c = bandsolve.solve_vjp(bands_np, b_np, backend="cpu")[1](g)
        tol = _forward_tol(bands_np, dtype, 1.0)
        assert np.abs(cupy.asnumpy(d_b) - d_b_c).max() <= tol * np.abs(d_b_c).max()
        assert np.abs(cupy.asnumpy(d_bands) - d_bands_c).max() <= tol * np.abs(d_bands_c).max()


def test_failures_leave_info_on_device():
    rng = np.random.default_rng(1)
    bands_np = random_spd_bands_large(rng, 8, 1, 20, 9)
    bands_np[2, 0, 5, 3, 3] = -1e4
    bands_np[6, 0, 0, 0, 0] = -1.0
    fac = bandsolve.cholesky(cupy.asarray(bands_np), check=False)
    assert isinstance(fac.info, cupy.ndarray)
    fac_cpu = bandsolve.cholesky(bands_np, check=False, backend="cpu")
    np.testing.assert_array_equal(cupy.asnumpy(fac.info), fac_cpu.info)
    L = cupy.asnumpy(fac.factor)
    assert np.all(np.isnan(L[[2, 6]]))
    assert np.all(np.isfinite(L[[0, 1, 3, 4, 5, 7]]))
    with pytest.raises(bandsolve.LinAlgError) as err:
        bandsolve.solve(cupy.asarray(bands_np), cupy.ones((8, 20, 9)))
    assert err.value.batch_index == (2,)


def test_runs_on_cupys_current_stream(monkeypatch):
    from numba import cuda

    seen = []
    real = cuda.external_stream
    monkeypatch.setattr(cuda, "external_stream", lambda ptr: seen.append(ptr) or real(ptr))
    rng = np.random.default_rng(2)
    bands_np = random_spd_bands_large(rng, 16, 2, 40, 9)
    b_np = rng.standard_normal((16, 40, 9))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        bands = cupy.asarray(bands_np)
        b = cupy.asarray(b_np) * 2.0  # queued on the stream before the solve
        x = bandsolve.solve(bands, b, check_finite=False)
        x = x + 0.0  # and work after it
    stream.synchronize()
    assert seen and all(ptr == stream.ptr for ptr in seen)
    x_cpu = bandsolve.solve(bands_np, 2.0 * b_np, backend="cpu")
    np.testing.assert_allclose(cupy.asnumpy(x), x_cpu, rtol=1e-10, atol=1e-12)


def test_float32_large_batch_accuracy():
    rng = np.random.default_rng(3)
    B, w, T, k = 1024, 1, 100, 9
    bands_np = random_spd_bands_large(rng, B, w, T, k, np.float32)
    b_np = rng.standard_normal((B, T, k)).astype(np.float32)
    x = bandsolve.solve(cupy.asarray(bands_np), cupy.asarray(b_np))
    ratio = band_residual_ratio(bands_np, cupy.asnumpy(x)[..., None], b_np[..., None])
    assert ratio.max() < 30


def test_numpy_input_with_cuda_backend_returns_numpy():
    rng = np.random.default_rng(4)
    bands_np = random_spd_bands_large(rng, 4, 1, 30, 9)
    b_np = rng.standard_normal((4, 30, 9))
    x = bandsolve.solve(bands_np, b_np, backend="cuda")
    assert isinstance(x, np.ndarray)
    np.testing.assert_allclose(x, bandsolve.solve(bands_np, b_np, backend="cpu"),
                               rtol=1e-10, atol=1e-12)
