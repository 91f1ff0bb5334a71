"""adapters.jax: custom_vjp functions over bandsolve / smnn, checked against
the array-level vjp and against dense JAX autograd references, under jit,
grad and vmap."""

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import bandsolve  # noqa: E402
import smnn  # noqa: E402
from adapters import jax as ja  # noqa: E402
from adapters_dense_reference import ODE_CASES, dense_ode_case, dense_solve, ode_case  # noqa: E402

# Round-off bounds: float64 results agree to ~1e-12 relative here (cond(M) < 1e2,
# n <= 40), float32 to a few hundred eps.
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-4}
# The S-MNN test systems have cond(M) < 1e5: dense and banded float64 solutions
# agree to ~cond * eps64 = 2e-11, float32 ones to ~cond * eps32 = 6e-3.
ODE_RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 6e-3}
# The adapter and the array-level function on the same data: the same
# arithmetic up to the layout of broadcast weights.
SAME_RTOL = {np.dtype(np.float64): 1e-13, np.dtype(np.float32): 1e-5}
# A batched call and single-item calls may run different kernels (SIMD lanes
# across items vs the scalar kernel for one item), so they agree to round-off
# amplified by the conditioning (cond(M) < 1e5 here), not bit for bit.
BATCH_RTOL, BATCH_ATOL = 1e-10, 1e-13
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


def assert_close(actual, expected, dtype, what, rtol=None):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max()), 1e-300)
    err = float(np.abs(actual - expected).max()) / scale
    rtol = RTOL[dtype] if rtol is None else rtol
    assert err <= rtol, f"{what}: max error {err:.2e} relative > {rtol:.0e}"


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
        def reference(bands, b):
            return dense_solve(jnp, bands, b)

        x_ref = jax.jit(reference)(bands64, b64)
        ref_bands, ref_b = jax.jit(jax.grad(lambda bands, b: jnp.vdot(g64, reference(bands, b)),
                                            (0, 1)))(bands64, b64)
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

    log = CallLog(monkeypatch, bandsolve, "solve_adjoint")
    per_example = jax.jit(jax.vmap(jax.grad(loss, (0, 1)), in_axes=(None, 0)))(bands, b)
    assert len(log.calls) == 1 and log.calls[0][0] == (n,) + bands.shape, log.calls
    for i in range(n):
        d_bands, d_b = jax.grad(loss, (0, 1))(bands, b[i])
        np.testing.assert_allclose(per_example[0][i], d_bands, rtol=BATCH_RTOL, atol=BATCH_ATOL)
        np.testing.assert_allclose(per_example[1][i], d_b, rtol=BATCH_RTOL, atol=BATCH_ATOL)
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
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError),
                       match="bands is not positive definite"):
        jax.jit(ja.solve)(-bands, jnp.ones((3, 2)))


# ---------------------------------------------------------------------------
# ode_forward


def _ode_problem(name, dtype, seed=0):
    """A named problem; its values are float32 numbers for either dtype, so
    both dtypes solve the same problem (and share the dense reference)."""
    data, kwargs, sizes = ode_case(name, np.random.default_rng(seed))
    data = tuple(jnp.asarray(a.astype(np.float32).astype(dtype)) for a in data)
    kwargs = {key: jnp.asarray(value.astype(np.float32).astype(dtype))
              if isinstance(value, np.ndarray) else value for key, value in kwargs.items()}
    return data, kwargs, sizes


@functools.lru_cache(maxsize=None)
def _dense_ode_reference(name):
    """(u, gradients of vdot(g, u)) of the dense JAX reference in float64, and g."""
    with jax.enable_x64(True):
        data, kwargs, sizes = _ode_problem(name, np.float64)

        def reference(*data):
            return dense_ode_case(jnp, data, kwargs, sizes)

        @jax.jit
        def value_and_vjp(g, *data):
            u, pullback = jax.vjp(reference, *data)
            return u, pullback(g)

        shape = jax.eval_shape(reference, *data).shape
        g = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        u, grads = value_and_vjp(jnp.asarray(g, dtype=jnp.float64), *data)
        return np.asarray(u), tuple(np.asarray(d) for d in grads), g


def _numpy(kwargs):
    return {key: np.asarray(value) if isinstance(value, jax.Array) else value
            for key, value in kwargs.items()}


@pytest.mark.parametrize("case", ODE_CASES)
def test_ode_matches_array_level_and_dense(case, dtype):
    data, kwargs, _ = _ode_problem(case, dtype)
    u_ref, refs, g = _dense_ode_reference(case)
    g = jnp.asarray(g.astype(dtype))
    u = ja.ode_forward(*data, **kwargs)
    grads = jax.grad(lambda *data: jnp.vdot(g, ja.ode_forward(*data, **kwargs)),
                     range(4))(*data)

    u_np, vjp = smnn.ode_vjp(*(np.asarray(a) for a in data), **_numpy(kwargs))
    assert u.dtype == dtype
    assert_close(u, u_np, dtype, "u", SAME_RTOL[dtype])
    for grad, expected, a in zip(grads, vjp(np.asarray(g)), data):
        assert grad.dtype == a.dtype
        assert_close(grad, expected, dtype, "gradient", SAME_RTOL[dtype])

    # dense JAX autograd reference (float64, steps included)
    assert_close(u, u_ref, dtype, "u", ODE_RTOL[dtype])
    for name, grad, ref in zip(("coefficients", "rhs_equation", "init_vars", "steps"),
                               grads, refs):
        assert_close(grad, ref, dtype, f"d_{name}", ODE_RTOL[dtype])


def test_ode_jit_grad_matches_eager(x64):
    data, kwargs, _ = _ode_problem("broadcast", np.float64)

    def loss(*data):
        return jnp.sum(ja.ode_forward(*data, **kwargs) ** 2)

    eager = jax.grad(loss, range(4))(*data)
    jitted = jax.jit(jax.grad(loss, range(4)))(*data)
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(j, e, rtol=1e-13, atol=0)


def test_ode_vmap_is_one_batched_call(monkeypatch, x64):
    """vmap over rhs and steps of a problem whose coefficients, init_vars and
    weight_equation are shared: one forward and one backward call."""
    data, kwargs, _ = _ode_problem("broadcast", np.float64)
    coefficients, rhs_equation, init_vars, steps = data     # rhs (3, T, E): batch of 3
    steps = jnp.stack([steps, 1.5 * steps, 0.5 * steps])    # (3, T-1)

    def f(rhs_equation, steps):
        return ja.ode_forward(coefficients, rhs_equation, init_vars, steps, **kwargs)

    forward = CallLog(monkeypatch, smnn, "ode_forward")
    u = jax.vmap(f)(rhs_equation, steps)
    assert len(forward.calls) == 1, forward.calls
    assert forward.calls[0][1] == (3, 5, 2) and forward.calls[0][3] == (3, 4)
    loop = np.stack([f(rhs_equation[i], steps[i]) for i in range(3)])
    np.testing.assert_allclose(u, loop, rtol=BATCH_RTOL, atol=BATCH_ATOL)

    backward = CallLog(monkeypatch, smnn, "ode_adjoint")
    per_example = jax.vmap(jax.grad(lambda r, h: jnp.sum(f(r, h) ** 2), (0, 1)))(
        rhs_equation, steps)
    assert len(backward.calls) == 1, backward.calls
    for i in range(3):
        d_rhs, d_steps = jax.grad(lambda r, h: jnp.sum(f(r, h) ** 2), (0, 1))(
            rhs_equation[i], steps[i])
        np.testing.assert_allclose(per_example[0][i], d_rhs, rtol=BATCH_RTOL, atol=BATCH_ATOL)
        np.testing.assert_allclose(per_example[1][i], d_steps, rtol=BATCH_RTOL, atol=BATCH_ATOL)


def test_ode_vmap_step_first_and_traced_weights(x64):
    data, kwargs, _ = _ode_problem("step-first", np.float64)   # batch axis 1 of every array
    u = ja.ode_forward(*data, **kwargs)
    u_vmapped = jax.vmap(lambda *d: ja.ode_forward(*d, **kwargs), in_axes=1, out_axes=1)(*data)
    np.testing.assert_allclose(u_vmapped, u, rtol=1e-13, atol=1e-15)
    # a vmapped weight (a scalar per item) equals a per-item call
    weights = jnp.array([0.5, 2.0])
    u_w = jax.vmap(lambda w: ja.ode_forward(*data, weight_smooth=w, **kwargs))(weights)
    for i, w in enumerate(weights):
        expected = smnn.ode_forward(*(np.asarray(a) for a in data), weight_smooth=float(w),
                                    **kwargs)
        np.testing.assert_allclose(u_w[i], expected, rtol=BATCH_RTOL, atol=BATCH_ATOL)


def test_ode_weights_get_no_gradient(x64):
    data, _, _ = _ode_problem("batch", np.float64)
    d_weight = jax.grad(lambda w: jnp.sum(ja.ode_forward(*data, weight_smooth=w)))(2.0)
    assert d_weight == 0.0


def test_ode_errors():
    data, _, _ = _ode_problem("batch", np.float32)
    coefficients, rhs_equation, init_vars, steps = data
    with pytest.raises(TypeError, match="steps must be a float32 or float64 array; got dtype int32"):
        ja.ode_forward(coefficients, rhs_equation, init_vars, steps.astype(jnp.int32))
    with pytest.raises(ValueError, match="the sizes along the step dimension T do not agree"):
        jax.jit(ja.ode_forward)(coefficients, rhs_equation[:, :4], init_vars, steps)
    with pytest.raises(ValueError, match="the sizes along D"):
        ja.ode_forward(coefficients, rhs_equation, init_vars[..., :1, :].repeat(3, -2), steps)
    # raised in the callback: JaxRuntimeError, or ValueError on JAX's cached dispatch path
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError),
                       match="steps must be positive and finite"):
        ja.ode_forward(coefficients, rhs_equation, init_vars, -steps)


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


@pytest.mark.skipif(not GPU, reason="needs JAX with a CUDA GPU, CuPy and the bandsolve CUDA backend")
def test_ode_gpu_matches_cpu(x64):
    data, kwargs, _ = _ode_problem("central", np.float64)

    def loss(*data):
        return jnp.sum(ja.ode_forward(*data, **kwargs) ** 2)

    gpu = jax.jit(jax.value_and_grad(loss, range(4)))(*data)
    cpu = jax.jit(jax.value_and_grad(loss, range(4)), backend="cpu")(*data)
    for g, c in zip(jax.tree_util.tree_leaves(gpu), jax.tree_util.tree_leaves(cpu)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(c), rtol=1e-9, atol=1e-13)


def test_cpu_buffers_cross_without_copy(monkeypatch):
    rng = np.random.default_rng(9)
    bands, b = _solve_problem(rng, (2,), (), 1, 4, 2, None, np.float32)
    seen = {}
    real_solve = bandsolve.solve

    def spy(bands_array, b_array, **kw):
        seen["bands"] = bands_array.__array_interface__["data"][0]
        seen["b"] = b_array.__array_interface__["data"][0]
        return real_solve(bands_array, b_array, **kw)

    monkeypatch.setattr(bandsolve, "solve", spy)
    ja.solve(bands, b)
    assert seen == {"bands": bands.unsafe_buffer_pointer(), "b": b.unsafe_buffer_pointer()}


def test_docstring_examples():
    import doctest

    result = doctest.testmod(ja, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_pure_callback_fallback(monkeypatch, x64):
    """Without buffer_callback (older JAX) the same results come through pure_callback."""
    rng = np.random.default_rng(10)
    bands = jnp.asarray(spd_bands(rng, (), 1, 4, 2))
    b = jnp.asarray(rng.standard_normal((3, 4, 2)))

    def per_example_grads():
        loss = jax.grad(lambda bands, b: jnp.sum(ja.solve(bands, b) ** 2), (0, 1))
        return jax.jit(jax.vmap(loss, in_axes=(None, 0)))(bands, b)

    expected = per_example_grads()
    monkeypatch.setattr(ja, "_buffer_callback", None)
    log = CallLog(monkeypatch, bandsolve, "solve_adjoint")
    for got, want in zip(per_example_grads(), expected):
        np.testing.assert_array_equal(got, want)
    assert len(log.calls) == 1
