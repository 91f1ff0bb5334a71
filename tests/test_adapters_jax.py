"""adapters.jax: custom_vjp functions over bandsolve / smnn, checked against
the array-level vjp and against dense JAX autograd references, under jit,
grad and vmap."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import bandsolve  # noqa: E402
from adapters import jax as ja  # noqa: E402

# Round-off bounds: float64 results agree to ~1e-12 relative here (cond(M) < 1e2,
# n <= 40), float32 to a few hundred eps.
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-4}
GPU = jax.default_backend() == "gpu"


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def dtype(request):
    """Run in float64 (with jax_enable_x64) and in float32."""
    with jax.enable_x64(request.param == np.float64):
        yield np.dtype(request.param)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------
# problems and the dense reference


def spd_bands(rng, batch, w, T, k):
    """Random SPD lower block band (symmetric diagonal blocks), block diagonally dominant."""
    bands = 0.3 * rng.standard_normal(batch + (w + 1, T, k, k))
    A = rng.standard_normal(batch + (T, k, k))
    bands[..., 0, :, :, :] = A @ np.swapaxes(A, -1, -2) / k + (1.0 + 2.0 * w * k) * np.eye(k)
    return bands


def dense_from_bands(bands):
    """Dense symmetric M (..., T*k, T*k); diagonal blocks enter as (B + B^T)/2,
    the symmetric-matrix convention of bandsolve's adjoint."""
    n_diag, T, k = bands.shape[-4], bands.shape[-3], bands.shape[-2]
    batch = bands.shape[:-4]
    M = jnp.zeros(batch + (T, k, T, k), dtype=bands.dtype)
    for d in range(n_diag):
        for t in range(T - d):
            block = bands[..., d, t, :, :]
            if d == 0:
                M = M.at[..., t, :, t, :].set((block + jnp.swapaxes(block, -1, -2)) / 2)
            else:
                M = M.at[..., t + d, :, t, :].set(block)
                M = M.at[..., t, :, t + d, :].set(jnp.swapaxes(block, -1, -2))
    return M.reshape(batch + (T * k, T * k))


def dense_solve(bands, b):
    T, k = bands.shape[-3], bands.shape[-2]
    vector = tuple(b.shape[-2:]) == (T, k)
    rhs = b.reshape(b.shape[:-2] + (T * k, 1)) if vector else b.reshape(
        b.shape[:-3] + (T * k, b.shape[-1]))
    M = dense_from_bands(bands)
    batch = jnp.broadcast_shapes(M.shape[:-2], rhs.shape[:-2])
    x = jnp.linalg.solve(jnp.broadcast_to(M, batch + M.shape[-2:]),
                         jnp.broadcast_to(rhs, batch + rhs.shape[-2:]))
    return x.reshape(x.shape[:-2] + ((T, k) if vector else (T, k, b.shape[-1])))


def assert_close(actual, expected, dtype, what):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max()), 1e-300)
    err = float(np.abs(actual - expected).max()) / scale
    assert err <= RTOL[dtype], f"{what}: max error {err:.2e} relative > {RTOL[dtype]:.0e}"


class CallLog:
    """Records the shapes each call of an array-level function receives."""

    def __init__(self, monkeypatch, module, name):
        self.calls = []
        real = getattr(module, name)

        def spy(*arrays, **kw):
            self.calls.append(tuple(np.shape(a) for a in arrays))
            return real(*arrays, **kw)

        monkeypatch.setattr(module, name, spy)


# ---------------------------------------------------------------------------
# solve

SOLVE_CASES = [
    pytest.param((), (), 1, 5, 2, None, id="single"),
    pytest.param((2, 1), (3,), 2, 4, 2, None, id="broadcast-w2"),
    pytest.param((), (2,), 1, 5, 1, 3, id="shared-matrix-nrhs"),
]


def _solve_problem(rng, bands_batch, b_batch, w, T, k, nrhs, dtype):
    bands = spd_bands(rng, bands_batch, w, T, k).astype(dtype)
    core = (T, k) if nrhs is None else (T, k, nrhs)
    b = rng.standard_normal(b_batch + core).astype(dtype)
    return jnp.asarray(bands), jnp.asarray(b)


@pytest.mark.parametrize("bands_batch,b_batch,w,T,k,nrhs", SOLVE_CASES)
def test_solve_matches_array_level_and_dense(bands_batch, b_batch, w, T, k, nrhs, dtype):
    rng = np.random.default_rng(0)
    bands, b = _solve_problem(rng, bands_batch, b_batch, w, T, k, nrhs, dtype)
    x = ja.solve(bands, b)
    g = jnp.asarray(rng.standard_normal(x.shape).astype(dtype))
    d_bands, d_b = jax.grad(lambda bands, b: jnp.vdot(g, ja.solve(bands, b)), (0, 1))(bands, b)

    x_np, vjp = bandsolve.solve_vjp(np.asarray(bands), np.asarray(b))
    d_bands_np, d_b_np = vjp(np.asarray(g))
    assert x.dtype == dtype and d_bands.dtype == dtype and d_b.dtype == dtype
    np.testing.assert_array_equal(x, x_np)
    np.testing.assert_array_equal(d_bands, d_bands_np)
    np.testing.assert_array_equal(d_b, d_b_np)

    with jax.enable_x64(True):  # dense reference in float64
        bands64, b64, g64 = (jnp.asarray(np.asarray(a), dtype=jnp.float64) for a in (bands, b, g))
        x_ref = dense_solve(bands64, b64)
        ref_bands, ref_b = jax.grad(lambda bands, b: jnp.vdot(g64, dense_solve(bands, b)),
                                    (0, 1))(bands64, b64)
    assert_close(x, x_ref, dtype, "x")
    assert_close(d_bands, ref_bands, dtype, "d_bands")
    assert_close(d_b, ref_b, dtype, "d_b")


def test_solve_jit_grad_matches_eager(x64):
    rng = np.random.default_rng(1)
    bands, b = _solve_problem(rng, (2,), (), 1, 4, 2, None, np.float64)

    def loss(bands, b):
        return jnp.sum(ja.solve(bands, b) ** 2)

    eager = jax.grad(loss, (0, 1))(bands, b)
    jitted = jax.jit(jax.grad(loss, (0, 1)))(bands, b)
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(j, e, rtol=1e-14, atol=0)
    # finite differences along a direction that keeps M symmetric
    direction = jnp.asarray(spd_bands(np.random.default_rng(2), (2,), 1, 4, 2))
    step = 1e-6
    fd = (loss(bands + step * direction, b) - loss(bands - step * direction, b)) / (2 * step)
    np.testing.assert_allclose(jnp.vdot(eager[0], direction), fd, rtol=1e-7)


@pytest.mark.parametrize("in_axes", [(None, 0), (0, None), (0, 0)], ids=["b", "bands", "both"])
def test_solve_vmap_is_one_batched_call(monkeypatch, in_axes, x64):
    rng = np.random.default_rng(3)
    n = 3
    # the unbatched operand has more batch dims than the batched one's items:
    # the vmapped axis must not be aligned with them
    bands = jnp.asarray(spd_bands(rng, (n, 2), 1, 4, 2) if in_axes[0] == 0
                        else spd_bands(rng, (2,), 1, 4, 2))
    b = jnp.asarray(rng.standard_normal((n, 4, 2) if in_axes[1] == 0 else (4, 2)))
    log = CallLog(monkeypatch, bandsolve, "solve")
    x = jax.vmap(ja.solve, in_axes=in_axes)(bands, b)
    assert len(log.calls) == 1, log.calls
    assert log.calls[0][0][0] == (n if in_axes[0] == 0 else 1)
    assert log.calls[0][1][0] == (n if in_axes[1] == 0 else 1)
    items = [ja.solve(bands[i] if in_axes[0] == 0 else bands, b[i] if in_axes[1] == 0 else b)
             for i in range(n)]
    np.testing.assert_allclose(x, np.stack(items), rtol=1e-14, atol=0)


def test_solve_vmap_of_grad_per_example(monkeypatch, x64):
    """Per-example gradients of a matrix shared by the batch: one backward call."""
    rng = np.random.default_rng(4)
    n = 3
    bands = jnp.asarray(spd_bands(rng, (), 1, 4, 2))
    b = jnp.asarray(rng.standard_normal((n, 4, 2)))

    def loss(bands, b):
        return jnp.sum(ja.solve(bands, b) ** 2)

    log = CallLog(monkeypatch, bandsolve, "solve_vjp")
    per_example = jax.jit(jax.vmap(jax.grad(loss, (0, 1)), in_axes=(None, 0)))(bands, b)
    assert len(log.calls) == 1 and log.calls[0][0] == (n,) + bands.shape, log.calls
    for i in range(n):
        d_bands, d_b = jax.grad(loss, (0, 1))(bands, b[i])
        np.testing.assert_allclose(per_example[0][i], d_bands, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(per_example[1][i], d_b, rtol=1e-13, atol=1e-15)
    # gradient of the summed loss: JAX sums the per-item cotangents of the shared matrix
    total = jax.grad(lambda bands: jnp.sum(jax.vmap(loss, (None, 0))(bands, b)))(bands)
    np.testing.assert_allclose(total, per_example[0].sum(0), rtol=1e-13, atol=1e-15)


def test_solve_nested_vmap(x64):
    rng = np.random.default_rng(5)
    bands = jnp.asarray(spd_bands(rng, (2,), 1, 3, 2))
    b = jnp.asarray(rng.standard_normal((4, 2, 3, 2)))
    x = jax.vmap(jax.vmap(ja.solve, in_axes=(0, 0)), in_axes=(None, 0))(bands, b)
    np.testing.assert_allclose(x, ja.solve(bands, b), rtol=1e-14, atol=0)


def test_solve_errors():
    bands = jnp.broadcast_to(jnp.eye(2), (2, 3, 2, 2))
    with pytest.raises(TypeError, match="b must be a float32 or float64 array; got dtype int32"):
        ja.solve(bands, jnp.ones((3, 2), dtype=jnp.int32))
    with pytest.raises(ValueError, match=r"b must have shape .*\(T, k\) = \(3, 2\).*got \(4, 2\)"):
        jax.jit(ja.solve)(bands, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="batch dimensions do not broadcast"):
        ja.solve(jnp.broadcast_to(bands, (2,) + bands.shape), jnp.ones((3, 3, 2)))
    with pytest.raises(jax.errors.JaxRuntimeError, match="bands is not positive definite"):
        jax.jit(ja.solve)(-bands, jnp.ones((3, 2)))


@pytest.mark.skipif(not GPU, reason="needs JAX with a CUDA GPU, CuPy and the bandsolve CUDA backend")
def test_solve_gpu_matches_cpu(x64):
    rng = np.random.default_rng(6)
    bands, b = _solve_problem(rng, (2,), (), 1, 5, 2, None, np.float64)

    def loss(bands, b):
        return jnp.sum(ja.solve(bands, b) ** 2)

    gpu = jax.jit(jax.value_and_grad(loss, (0, 1)))(bands, b)
    cpu = jax.jit(jax.value_and_grad(loss, (0, 1)), backend="cpu")(bands, b)
    for g, c in zip(jax.tree_util.tree_leaves(gpu), jax.tree_util.tree_leaves(cpu)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(c), rtol=1e-10, atol=1e-14)
