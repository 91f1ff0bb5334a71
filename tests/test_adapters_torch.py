"""adapters.torch: custom ops over bandsolve / smnn, checked against the
array-level vjp and against dense PyTorch autograd references."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bandsolve  # noqa: E402
import smnn  # noqa: E402
from adapters import torch as ta  # noqa: E402
from adapters_dense_reference import ODE_CASES, dense_ode_case, dense_solve, ode_case  # noqa: E402

CUDA = torch.cuda.is_available()
try:  # CuPy is the array library behind CUDA tensors
    import cupy  # noqa: F401

    HAVE_CUPY = True
except ImportError:
    HAVE_CUPY = False

# Round-off bounds: float64 results agree to ~1e-12 relative here (cond(M) < 1e2,
# n <= 40), float32 to a few hundred eps.
RTOL = {torch.float64: 1e-10, torch.float32: 2e-4}
# The S-MNN test systems have cond(M) < 1e5: dense and banded float64 solutions
# agree to ~cond * eps64 = 2e-11, float32 ones to ~cond * eps32 = 6e-3.
ODE_RTOL = {torch.float64: 1e-9, torch.float32: 6e-3}


# ---------------------------------------------------------------------------
# problems and the dense reference


def spd_bands(rng, batch, w, T, k, dtype=torch.float64):
    """Random SPD lower block band (symmetric diagonal blocks), block diagonally dominant."""
    bands = 0.3 * rng.standard_normal(batch + (w + 1, T, k, k))
    A = rng.standard_normal(batch + (T, k, k))
    diag = A @ np.swapaxes(A, -1, -2) / k
    # Gershgorin: off-diagonal block rows sum to at most 2 w k 0.3 * max|entry| ~ 2 w k
    bands[..., 0, :, :, :] = diag + (1.0 + 2.0 * w * k) * np.eye(k)
    return torch.tensor(bands, dtype=dtype)


def symmetrise_diagonal(bands):
    """Diagonal blocks replaced by (B + B^T)/2 (for entrywise finite differences)."""
    diag = bands[..., :1, :, :, :]
    return torch.cat([(diag + diag.mT) / 2, bands[..., 1:, :, :, :]], dim=-4)


def assert_close(actual, expected, dtype, what, rtol=None):
    rtol = RTOL[dtype] if rtol is None else rtol
    scale = max(float(expected.abs().max()), 1e-300)
    err = float((actual - expected).abs().max()) / scale
    assert err <= rtol, f"{what}: max error {err:.2e} relative to max |value| > {rtol:.0e}"


# ---------------------------------------------------------------------------
# solve


SOLVE_CASES = [
    # (bands batch, b shape after the batch, w, T, k)  b core: (T, k) or (T, k, nrhs)
    pytest.param((), (), 1, 5, 2, None, id="single"),
    pytest.param((2,), (), 1, 4, 3, None, id="batch"),
    pytest.param((2, 1), (3,), 2, 5, 2, None, id="broadcast-w2"),
    pytest.param((), (2,), 1, 6, 1, 3, id="shared-matrix-nrhs"),
    pytest.param((2,), (), 0, 3, 2, None, id="block-diagonal"),
]


def _solve_problem(rng, bands_batch, b_batch, w, T, k, nrhs, dtype):
    bands = spd_bands(rng, bands_batch, w, T, k, dtype)
    core = (T, k) if nrhs is None else (T, k, nrhs)
    b = torch.tensor(rng.standard_normal(b_batch + core), dtype=dtype)
    return bands, b


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bands_batch,b_batch,w,T,k,nrhs", SOLVE_CASES)
def test_solve_matches_array_level_and_dense(bands_batch, b_batch, w, T, k, nrhs, dtype):
    rng = np.random.default_rng(0)
    bands, b = _solve_problem(rng, bands_batch, b_batch, w, T, k, nrhs, dtype)
    bands.requires_grad_()
    b.requires_grad_()
    x = ta.solve(bands, b)
    g = torch.tensor(rng.standard_normal(tuple(x.shape)), dtype=dtype)
    d_bands, d_b = torch.autograd.grad(x, (bands, b), g)

    # the array-level function and its vjp, to round-off
    x_np, vjp = bandsolve.solve_vjp(bands.detach().numpy(), b.detach().numpy())
    d_bands_np, d_b_np = vjp(g.numpy())
    assert x.dtype == dtype and x.shape == x_np.shape
    np.testing.assert_array_equal(x.detach().numpy(), x_np)
    np.testing.assert_array_equal(d_bands.numpy(), d_bands_np)
    np.testing.assert_array_equal(d_b.numpy(), d_b_np)

    # dense PyTorch autograd reference, in float64
    bands64 = bands.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    x_ref = dense_solve(torch, bands64, b64)
    ref_bands, ref_b = torch.autograd.grad(x_ref, (bands64, b64), g.double())
    assert_close(x.detach().double(), x_ref.detach(), dtype, "x")
    # padding blocks (t + d >= T) are never read: zero gradient in both
    assert_close(d_bands.double(), ref_bands, dtype, "d_bands")
    assert_close(d_b.double(), ref_b, dtype, "d_b")


@pytest.mark.parametrize("which", ["bands", "b"])
def test_solve_grad_for_a_subset_of_inputs(which):
    rng = np.random.default_rng(1)
    bands, b = _solve_problem(rng, (2,), (), 1, 4, 2, None, torch.float64)
    wanted = {"bands": bands, "b": b}[which]
    wanted.requires_grad_()
    x = ta.solve(bands, b)
    x.pow(2).sum().backward()
    other = b if which == "bands" else bands
    assert other.grad is None
    _, vjp = bandsolve.solve_vjp(bands.detach().numpy(), b.detach().numpy())
    expected = vjp(2 * x.detach().numpy())[0 if which == "bands" else 1]
    np.testing.assert_allclose(wanted.grad.numpy(), expected, rtol=1e-13, atol=1e-15)


def test_solve_upper_form():
    rng = np.random.default_rng(2)
    bands, b = _solve_problem(rng, (2,), (), 1, 4, 2, None, torch.float64)
    upper = torch.tensor(_lower_to_upper(bands.numpy())).requires_grad_()
    x = ta.solve(upper, b, lower=False)
    torch.testing.assert_close(x, ta.solve(bands, b), rtol=1e-12, atol=0)
    (d_upper,) = torch.autograd.grad(x.sum(), upper)
    _, vjp = bandsolve.solve_vjp(upper.detach().numpy(), b.numpy(), lower=False)
    np.testing.assert_array_equal(d_upper.numpy(), vjp(np.ones(tuple(x.shape)))[0])


def _lower_to_upper(lower):
    """Upper storage ``upper[..., w-d, t+d] = M[t, t+d] = lower[..., d, t]^T``."""
    upper = np.zeros_like(lower)
    n_diag, T = lower.shape[-4], lower.shape[-3]
    for d in range(n_diag):
        upper[..., n_diag - 1 - d, d:, :, :] = np.swapaxes(lower[..., d, : T - d, :, :], -1, -2)
    return upper


def test_solve_gradcheck():
    rng = np.random.default_rng(3)
    bands, b = _solve_problem(rng, (2,), (), 1, 3, 2, None, torch.float64)
    bands.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda bands, b: ta.solve(symmetrise_diagonal(bands), b), (bands, b)
    )


def test_solve_double_backward_is_refused():
    rng = np.random.default_rng(11)
    bands, b = _solve_problem(rng, (), (), 1, 3, 1, None, torch.float64)
    bands.requires_grad_()
    (d_bands,) = torch.autograd.grad((ta.solve(bands, b) ** 2).sum(), bands, create_graph=True)
    with pytest.raises(RuntimeError, match="bandsolve.solve_vjp.* no autograd formula"):
        d_bands.sum().backward()


def test_solve_opcheck():
    rng = np.random.default_rng(4)
    bands, b = _solve_problem(rng, (2,), (), 1, 3, 2, None, torch.float64)
    for requires_grad in (False, True):
        args = (bands.clone().requires_grad_(requires_grad), b.clone(), True, True, True, "auto")
        torch.library.opcheck(ta._solve_op, args)
    g = torch.ones(2, 3, 2, dtype=torch.float64)
    x = ta.solve(bands, b)
    torch.library.opcheck(ta._solve_vjp_op, (g, bands, b, x, True, True, "auto"))


def test_solve_noncontiguous_inputs():
    rng = np.random.default_rng(5)
    bands, b = _solve_problem(rng, (2,), (), 1, 4, 3, None, torch.float64)
    # same values, transposed memory: batch axis last in storage, b strided
    bands_nc = bands.permute(1, 2, 3, 4, 0).contiguous().permute(4, 0, 1, 2, 3)
    b_nc = torch.stack([b, -b], dim=-1)[..., 0]
    assert not bands_nc.is_contiguous() and not b_nc.is_contiguous()
    bands_nc.requires_grad_()
    x = ta.solve(bands_nc, b_nc)
    torch.testing.assert_close(x, ta.solve(bands, b), rtol=0, atol=0)
    x.sum().backward()
    _, vjp = bandsolve.solve_vjp(bands.numpy(), b.numpy())
    np.testing.assert_array_equal(bands_nc.grad.numpy(), vjp(np.ones((2, 4, 3)))[0])


def test_cpu_tensors_cross_without_copy(monkeypatch):
    rng = np.random.default_rng(6)
    bands, b = _solve_problem(rng, (2,), (), 1, 4, 2, None, torch.float64)
    bands.requires_grad_()
    seen = {}
    real_solve = bandsolve.solve

    def spy(bands_array, b_array, **kw):
        seen["bands"] = bands_array.__array_interface__["data"][0]
        seen["b"] = b_array.__array_interface__["data"][0]
        return real_solve(bands_array, b_array, **kw)

    monkeypatch.setattr(bandsolve, "solve", spy)
    ta.solve(bands, b)
    assert seen == {"bands": bands.data_ptr(), "b": b.data_ptr()}


def test_solve_errors_name_the_argument():
    bands = torch.eye(2, dtype=torch.float64).expand(2, 3, 2, 2).contiguous()
    with pytest.raises(TypeError, match="b must be a float32 or float64 tensor; got dtype torch.int64"):
        ta.solve(bands, torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="bands must be a torch.Tensor"):
        ta.solve(bands.numpy(), torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"b must have shape .*\(T, k\) = \(3, 2\).*got \(4, 2\)"):
        ta.solve(bands, torch.ones(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"bands must have shape \(\.\.\., w\+1, T, k, k\)"):
        ta.solve(bands[..., 0], torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="all tensors must be on one device; got bands on cpu, b on meta"):
        ta.solve(bands, torch.ones(3, 2, dtype=torch.float64, device="meta"))
    not_pd = bands.clone()
    not_pd[0, 1] = -not_pd[0, 1]
    with pytest.raises(bandsolve.LinAlgError, match="bands is not positive definite"):
        ta.solve(not_pd, torch.ones(3, 2, dtype=torch.float64))


def test_solve_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        bands = torch.empty(2, 1, 3, 5, 4, 4, dtype=torch.float32)
        b = torch.empty(3, 5, 4, 7, dtype=torch.float64)
        x = ta.solve(bands, b)
    assert x.shape == (2, 3, 5, 4, 7) and x.dtype == torch.float64


@pytest.mark.skipif(not (CUDA and HAVE_CUPY), reason="needs a CUDA GPU, CuPy and the bandsolve CUDA backend")
def test_solve_cuda_matches_cpu():
    rng = np.random.default_rng(7)
    bands, b = _solve_problem(rng, (2,), (), 1, 6, 3, None, torch.float64)
    bands_d = bands.cuda().requires_grad_()
    b_d = b.cuda().requires_grad_()
    x_d = ta.solve(bands_d, b_d)
    assert x_d.device == bands_d.device
    x_d.sum().backward()
    bands.requires_grad_()
    b.requires_grad_()
    x = ta.solve(bands, b)
    x.sum().backward()
    torch.testing.assert_close(x_d.cpu(), x.detach(), rtol=1e-10, atol=0)
    torch.testing.assert_close(bands_d.grad.cpu(), bands.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(b_d.grad.cpu(), b.grad, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------
# ode_forward

ODE_NAMES = ("coefficients", "rhs_equation", "init_vars", "steps")


def _ode_problem(name, dtype, seed=0):
    """A named problem as tensors; array weights become tensors."""
    data, kwargs, sizes = ode_case(name, np.random.default_rng(seed))
    data = tuple(torch.tensor(a, dtype=dtype) for a in data)
    kwargs = {key: torch.tensor(value, dtype=dtype) if isinstance(value, np.ndarray) else value
              for key, value in kwargs.items()}
    return data, kwargs, sizes


def _numpy_kwargs(kwargs):
    return {key: value.numpy() if isinstance(value, torch.Tensor) else value
            for key, value in kwargs.items()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ODE_CASES)
def test_ode_matches_array_level_and_dense(case, dtype):
    data, kwargs, sizes = _ode_problem(case, dtype)
    leaves = tuple(a.clone().requires_grad_() for a in data)
    u = ta.ode_forward(*leaves, **kwargs)
    g = torch.tensor(np.random.default_rng(1).standard_normal(tuple(u.shape)), dtype=dtype)
    grads = torch.autograd.grad(u, leaves, g)

    # the array-level function and its vjp: the same computation
    u_np, vjp = smnn.ode_vjp(*(a.numpy() for a in data), **_numpy_kwargs(kwargs))
    assert u.dtype == dtype and u.shape == u_np.shape
    np.testing.assert_array_equal(u.detach().numpy(),
                                  smnn.ode_forward(*(a.numpy() for a in data),
                                                   **_numpy_kwargs(kwargs)))
    for name, grad, expected in zip(ODE_NAMES, grads, vjp(g.numpy())):
        assert grad.shape == expected.shape and grad.dtype == dtype, name
        np.testing.assert_array_equal(grad.numpy(), expected, err_msg=name)

    # dense PyTorch autograd reference, in float64, steps included
    data64 = tuple(a.double().requires_grad_() for a in data)
    kwargs64 = {key: value.double() if isinstance(value, torch.Tensor) else value
                for key, value in kwargs.items()}
    u_ref = dense_ode_case(torch, data64, kwargs64, sizes)
    refs = torch.autograd.grad(u_ref, data64, g.double())
    rtol = ODE_RTOL[dtype]
    assert_close(u.detach().double(), u_ref.detach(), dtype, "u", rtol)
    for name, grad, ref in zip(ODE_NAMES, grads, refs):
        assert_close(grad.double(), ref, dtype, f"d_{name}", rtol)


def test_ode_grad_for_a_subset_of_inputs():
    data, kwargs, _ = _ode_problem("batch", torch.float64)
    coefficients, rhs_equation, init_vars, steps = data
    steps.requires_grad_()
    init_vars.requires_grad_()
    u = ta.ode_forward(coefficients, rhs_equation, init_vars, steps)
    u.sum().backward()
    assert coefficients.grad is None and rhs_equation.grad is None
    _, vjp = smnn.ode_vjp(*(a.detach().numpy() for a in data))
    _, _, d_init, d_steps = vjp(np.ones(tuple(u.shape)))
    np.testing.assert_array_equal(init_vars.grad.numpy(), d_init)
    np.testing.assert_array_equal(steps.grad.numpy(), d_steps)


def test_ode_noncontiguous_inputs_cross_without_copy(monkeypatch):
    data, _, _ = _ode_problem("batch", torch.float64)
    # the same values in transposed memory (batch axis last in storage)
    strided = tuple(a.movedim(0, -1).contiguous().movedim(-1, 0) for a in data)
    assert not any(a.is_contiguous() for a in strided)
    seen = []
    real_forward = smnn.ode_forward

    def spy(*arrays, **kw):
        seen.extend(a.__array_interface__["data"][0] for a in arrays)
        return real_forward(*arrays, **kw)

    monkeypatch.setattr(smnn, "ode_forward", spy)
    leaves = tuple(a.requires_grad_() for a in strided)
    u = ta.ode_forward(*leaves)
    assert seen == [a.data_ptr() for a in strided]
    u.sum().backward()
    _, vjp = smnn.ode_vjp(*(a.numpy() for a in data))
    # same values, but NumPy may sum strided arrays in another order: round-off
    np.testing.assert_allclose(u.detach().numpy(), smnn.ode_forward(*(a.numpy() for a in data)),
                               rtol=1e-12, atol=1e-14)
    for leaf, expected in zip(leaves, vjp(np.ones(tuple(u.shape)))):
        np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=1e-11, atol=1e-13)


def test_ode_gradcheck():
    data, kwargs, _ = _ode_problem("central", torch.float64)
    data = tuple(a.requires_grad_() for a in data)
    assert torch.autograd.gradcheck(lambda *data: ta.ode_forward(*data, **kwargs), data)


def test_ode_opcheck():
    data, kwargs, _ = _ode_problem("broadcast", torch.float64)
    weights = (kwargs["weight_equation"], torch.tensor(2.0, dtype=torch.float64),
               torch.tensor(0.7, dtype=torch.float64))
    options = (5, None, False, False, "auto", True)
    for requires_grad in (False, True):
        args = tuple(a.clone().requires_grad_(requires_grad) for a in data) + weights + options
        torch.library.opcheck(ta._ode_op, args)
    g = torch.ones(3, 5, 2, 3, dtype=torch.float64)
    u = ta._ode_op(*(data + weights + options))
    torch.library.opcheck(ta._ode_vjp_op, (g,) + data + weights + (u,) + options[:-1])


def test_ode_weights_are_constants():
    data, _, _ = _ode_problem("batch", torch.float64)
    weight = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"weight_smooth requires grad.*weight_smooth.detach\(\)"):
        ta.ode_forward(*data, weight_smooth=weight)
    u = ta.ode_forward(*data, weight_smooth=weight.detach())
    expected = smnn.ode_forward(*(a.numpy() for a in data), weight_smooth=2.0)
    np.testing.assert_array_equal(u.numpy(), expected)


def test_ode_errors_name_the_argument():
    data, _, _ = _ode_problem("batch", torch.float64)
    coefficients, rhs_equation, init_vars, steps = data
    with pytest.raises(TypeError, match="steps must be a float32 or float64 tensor"):
        ta.ode_forward(coefficients, rhs_equation, init_vars, steps.int())
    with pytest.raises(ValueError, match="the sizes along the step dimension T do not agree"):
        ta.ode_forward(coefficients, rhs_equation[:, :4], init_vars, steps)
    with pytest.raises(ValueError, match=r"init_vars must have shape \(\.\.\., Ti, D, Oi\) \(at least 3 dimensions\); got shape \(2, 1\)"):
        ta.ode_forward(coefficients, rhs_equation, init_vars[0, 0], steps)
    with pytest.raises(ValueError, match="steps must be positive and finite"):
        ta.ode_forward(coefficients, rhs_equation, init_vars, -steps)


def test_ode_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        coef = torch.empty(1, 2, 2, 3)                 # constant in time, no batch
        rhs = torch.empty(4, 1, 7, 2, dtype=torch.float64)
        init = torch.empty(1, 2, 1)
        steps = torch.empty(1)                         # one shared step size
        w_eq = torch.empty(3, 7, 2)                    # per-row weights with a batch
        u = ta.ode_forward(coef, rhs, init, steps, n_steps=7, weight_equation=w_eq)
        u_first = ta.ode_forward(coef, rhs.movedim(-2, 0), init, steps, n_steps=7,
                                 is_step_dim_first=True)
        with pytest.raises(ValueError, match=r"init_vars must have shape \(\.\.\., Ti, D, Oi\)"):
            ta.ode_forward(coef, rhs, init[0], steps)
    assert u.shape == (4, 3, 7, 2, 3) and u.dtype == torch.float64
    assert u_first.shape == (7, 4, 1, 2, 3)
    real = smnn.ode_forward(np.zeros((1, 2, 2, 3)), np.zeros((4, 1, 7, 2)), np.ones((1, 2, 1)),
                            np.ones(1), n_steps=7, weight_equation=np.ones((3, 7, 2)))
    assert real.shape == tuple(u.shape)


def test_smnn_layer():
    data, _, _ = _ode_problem("batch", torch.float64)
    w_smooth = torch.full((4, 2, 3), 0.5, dtype=torch.float64)
    layer = ta.SMNNLayer(n_steps=5, n_dims=2, n_orders=3, weight_smooth=w_smooth,
                         weight_equation=3.0)
    assert layer.coefficients_shape == tuple(data[0].shape[1:])
    assert layer.rhs_equation_shape == tuple(data[1].shape[1:])
    assert layer.init_vars_shape == tuple(data[2].shape[1:])
    assert layer.steps_shape == tuple(data[3].shape[1:])
    assert "weight_smooth" in layer.state_dict()
    coefficients = data[0].clone().requires_grad_()
    u = layer(coefficients, *data[1:])
    expected = smnn.ode_forward(*(a.numpy() for a in data), weight_smooth=w_smooth.numpy(),
                                weight_equation=3.0)
    np.testing.assert_array_equal(u.detach().numpy(), expected)
    u.sum().backward()
    assert coefficients.grad.shape == coefficients.shape
    with pytest.raises(ValueError, match="n_orders must be at least 3; got 2"):
        ta.SMNNLayer(5, 2, 2, enable_central_smoothness=True)


@pytest.mark.skipif(not (CUDA and HAVE_CUPY), reason="needs a CUDA GPU, CuPy and the bandsolve CUDA backend")
def test_ode_cuda_matches_cpu():
    data, kwargs, _ = _ode_problem("broadcast", torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        leaves = tuple(a.to(device).requires_grad_() for a in data)
        kw = {key: value.to(device) if isinstance(value, torch.Tensor) else value
              for key, value in kwargs.items()}
        u = ta.ode_forward(*leaves, **kw)
        assert u.device.type == device
        u.square().sum().backward()
        results.append([u.detach().cpu()] + [a.grad.cpu() for a in leaves])
    for cpu, cuda in zip(*results):
        torch.testing.assert_close(cuda, cpu, rtol=1e-9, atol=1e-13)


# ---------------------------------------------------------------------------
# torch.compile (slow: one small graph with both operators)


def test_torch_compile_fullgraph_forward_backward():
    rng = np.random.default_rng(8)
    bands, b = _solve_problem(rng, (2,), (), 1, 4, 2, None, torch.float64)
    data, _, _ = _ode_problem("batch", torch.float64)
    inputs = (bands, b) + data

    def loss(bands, b, *data):
        return (ta.solve(bands, b) ** 2).sum() + (ta.ode_forward(*data, weight_smooth=0.5) ** 2).sum()

    def value_and_grads(fn):
        leaves = tuple(a.clone().requires_grad_() for a in inputs)
        value = fn(*leaves)
        value.backward()
        return (value.detach(),) + tuple(a.grad for a in leaves)

    compiled = value_and_grads(torch.compile(loss, fullgraph=True))
    for c, e in zip(compiled, value_and_grads(loss)):
        torch.testing.assert_close(c, e, rtol=1e-12, atol=0)


def test_docstring_examples():
    import doctest

    from adapters import _shapes

    for module in (ta, _shapes):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
