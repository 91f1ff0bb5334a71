"""PyTorch bindings: ``solve`` and ``ode_forward`` as differentiable custom ops.

Each public function is a ``torch.library.custom_op`` with a fake (meta)
kernel and a registered backward, so it works in eager autograd, under
``torch.compile(fullgraph=True)`` and passes ``torch.library.opcheck``:

==========================  =================================================
operator                    computes
==========================  =================================================
``bandsolve::solve``        x = M^{-1} b, :func:`bandsolve.solve`
``bandsolve::solve_vjp``    (d_bands, d_b) from :func:`bandsolve.solve_adjoint`
``smnn::ode_forward``       u, :func:`smnn.ode_forward`
``smnn::ode_vjp``           (d_coef, d_rhs, d_init, d_steps), :func:`smnn.ode_adjoint`
==========================  =================================================

Data crossing. CPU tensors are handed to the array-level functions as NumPy
views of the tensor's memory (``Tensor.numpy()`` on the detached tensor, no
copy, strides kept); CUDA tensors as CuPy arrays through DLPack
(``cupy.from_dlpack``, no copy). Results come back the same way
(``torch.from_numpy`` / ``torch.from_dlpack``) on the input's device. CUDA work
is issued on ``torch.cuda.current_stream()``: CuPy's current stream is set to
it for the duration of the call, so no synchronisation is needed either way.

Backward. A custom op returns tensors only, so the factorisation built in the
forward cannot be carried to the backward. For ``solve`` the backward
keeps the forward's output x and calls :func:`bandsolve.solve_adjoint`: one
fused factor + solve for b_bar = M^{-1} g (about the cost of the forward),
then the band cotangent. Likewise ``ode_forward`` keeps u and calls
:func:`smnn.ode_adjoint`, which re-assembles M and solves for b_bar with one
fused factor + solve before the row-local adjoint. Double backward is not
supported.
"""

import contextlib
import importlib

import torch
from torch import Tensor

import bandsolve
import smnn

from . import _shapes

__all__ = ["solve", "ode_forward", "SMNNLayer"]

_FLOAT_DTYPES = (torch.float32, torch.float64)


# ---------------------------------------------------------------------------
# tensors <-> arrays


def _cupy():
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:  # pragma: no cover - needs a machine without CuPy and a GPU
        raise ImportError(
            "CUDA tensors need CuPy: install the 'cuda' extra "
            "(pip install 'bandsolve[cuda]')"
        ) from exc


def _as_array(tensor):
    """NumPy (CPU) or CuPy (CUDA) view of ``tensor``'s memory, never a copy."""
    tensor = tensor.detach()
    if tensor.device.type == "cpu":
        return tensor.resolve_conj().resolve_neg().numpy()
    if tensor.device.type == "cuda":
        return _cupy().from_dlpack(tensor)
    raise TypeError(f"tensors on device {tensor.device} are not supported (CPU or CUDA only)")


def _as_tensor(array):
    """Tensor sharing ``array``'s memory (NumPy -> CPU, CuPy -> CUDA)."""
    if hasattr(array, "__cuda_array_interface__"):
        return torch.from_dlpack(array).contiguous()
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).contiguous()


@contextlib.contextmanager
def _array_stream(device):
    """Run CuPy work on ``device``'s current PyTorch stream (no-op on CPU)."""
    if device.type != "cuda":
        yield
        return
    cupy = _cupy()
    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(stream.device_index), cupy.cuda.ExternalStream(
        stream.cuda_stream, device_id=stream.device_index
    ):
        yield


def _check_tensors(**named):
    """TypeError/ValueError naming the argument for non-float or mixed-device input."""
    for name, tensor in named.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
        if tensor.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be a float32 or float64 tensor; got dtype {tensor.dtype}"
            )
    devices = {tensor.device for tensor in named.values()}
    if len(devices) > 1:
        seen = ", ".join(f"{name} on {tensor.device}" for name, tensor in named.items())
        raise ValueError(f"all tensors must be on one device; got {seen}")


# ---------------------------------------------------------------------------
# bandsolve.solve


@torch.library.custom_op("bandsolve::solve", mutates_args=())
def _solve_op(bands: Tensor, b: Tensor, lower: bool, check_finite: bool, check: bool,
              backend: str) -> Tensor:
    _check_tensors(bands=bands, b=b)
    with _array_stream(bands.device):
        x = bandsolve.solve(_as_array(bands), _as_array(b), lower=lower,
                            check_finite=check_finite, check=check, backend=backend)
        return _as_tensor(x)


@_solve_op.register_fake
def _solve_fake(bands, b, lower, check_finite, check, backend):
    _check_tensors(bands=bands, b=b)
    x_shape, _ = _shapes.solve_shapes(bands.shape, b.shape)
    return bands.new_empty(x_shape, dtype=torch.promote_types(bands.dtype, b.dtype))


@torch.library.custom_op("bandsolve::solve_vjp", mutates_args=())
def _solve_vjp_op(grad: Tensor, bands: Tensor, b: Tensor, x: Tensor, lower: bool, check: bool,
                  backend: str) -> tuple[Tensor, Tensor]:
    _check_tensors(grad=grad, bands=bands, b=b, x=x)
    with _array_stream(bands.device):
        # The inputs were checked for inf/NaN by the forward; x is its output.
        d_bands, d_b = bandsolve.solve_adjoint(_as_array(bands), _as_array(b), _as_array(x),
                                               _as_array(grad), lower=lower, check=check,
                                               backend=backend)
        return _as_tensor(d_bands), _as_tensor(d_b)


@_solve_vjp_op.register_fake
def _solve_vjp_fake(grad, bands, b, x, lower, check, backend):
    return bands.new_empty(bands.shape), b.new_empty(b.shape)


def _solve_setup_context(ctx, inputs, output):
    bands, b, lower, _, check, backend = inputs
    ctx.save_for_backward(bands, b, output)
    ctx.options = (lower, check, backend)


def _solve_backward(ctx, grad):
    bands, b, x = ctx.saved_tensors
    d_bands, d_b = _solve_vjp_op(grad, bands, b, x, *ctx.options)
    needs = ctx.needs_input_grad
    return (d_bands if needs[0] else None, d_b if needs[1] else None, None, None, None, None)


_solve_op.register_autograd(_solve_backward, setup_context=_solve_setup_context)


def solve(bands, b, *, lower=True, check_finite=True, check=True, backend="auto"):
    """Solve M x = b for a batch of SPD block-banded matrices, differentiably.

    The ``torch.library`` custom op ``bandsolve::solve`` over
    :func:`bandsolve.solve`; gradients with respect to ``bands`` and ``b``
    come from :func:`bandsolve.solve_adjoint` (those of :func:`bandsolve.solve_vjp`).

    Parameters
    ----------
    bands : Tensor, shape (..., w+1, T, k, k)
        Lower block band ``bands[..., d, t] = M[t+d, t]`` (upper form with
        ``lower=False``), float32 or float64, CPU or CUDA.
    b : Tensor, shape (..., T, k) or (..., T, k, nrhs)
        Right-hand sides on the device of ``bands``; batch dimensions
        broadcast.
    lower, check_finite, check, backend
        As in :func:`bandsolve.solve`. The ``overwrite_*`` options of the
        array-level function are not offered: an operator in an autograd
        graph never writes into its inputs.

    Returns
    -------
    x : Tensor
        Shape of ``b`` broadcast against the batch of ``bands``, dtype the
        promotion of the inputs', on their device.

    Raises
    ------
    TypeError
        Inputs that are not float32/float64 tensors.
    ValueError
        Bad shapes, tensors on different devices, inf/NaN with
        ``check_finite=True``.
    bandsolve.LinAlgError
        A matrix that is not positive definite (``check=True``).

    Notes
    -----
    Like the array-level adjoint, the gradient of ``bands`` is taken with
    respect to the symmetric matrix each stored block stands for: the
    gradient of a diagonal block is symmetric although only its lower
    triangle is read. It is the gradient for perturbations that keep M
    symmetric. To check it against finite differences of every entry,
    symmetrise the diagonal blocks before the call (see the tests).

    The backward re-factors M (see the module notes); double backward is
    not supported.

    Examples
    --------
    >>> import torch
    >>> from adapters.torch import solve
    >>> bands = torch.zeros(2, 4, 1, 1, dtype=torch.float64)
    >>> bands[0] = 2.0
    >>> bands[1] = -1.0
    >>> bands.requires_grad_()
    tensor(...)
    >>> x = solve(bands, torch.ones(4, 1, dtype=torch.float64))
    >>> x.detach().ravel().round(decimals=12)
    tensor([2., 3., 3., 2.], dtype=torch.float64)
    >>> x.sum().backward()
    >>> bands.grad[0].ravel().round(decimals=12)  # -b_bar_t x_t, b_bar = M^{-1} 1 = x
    tensor([-4., -9., -9., -4.], dtype=torch.float64)
    """
    _check_tensors(bands=bands, b=b)
    return _solve_op(bands, b, bool(lower), bool(check_finite), bool(check), str(backend))


# ---------------------------------------------------------------------------
# smnn.ode_forward

_ODE_DATA = tuple(_shapes.ODE_CORE)  # coefficients, rhs_equation, init_vars, steps
_WEIGHTS = tuple(_shapes.WEIGHT_ROWS)  # weight_equation, weight_init_var, weight_smooth


def _ode_kwargs(weights, n_steps, n_init_var_steps, is_step_dim_first,
                enable_central_smoothness, backend):
    kwargs = dict(zip(_WEIGHTS, (_as_array(w) for w in weights)))
    kwargs.update(n_steps=n_steps, n_init_var_steps=n_init_var_steps,
                  is_step_dim_first=is_step_dim_first,
                  enable_central_smoothness=enable_central_smoothness, backend=backend)
    return kwargs


@torch.library.custom_op("smnn::ode_forward", mutates_args=())
def _ode_op(coefficients: Tensor, rhs_equation: Tensor, init_vars: Tensor, steps: Tensor,
            weight_equation: Tensor, weight_init_var: Tensor, weight_smooth: Tensor,
            n_steps: int | None, n_init_var_steps: int | None, is_step_dim_first: bool,
            enable_central_smoothness: bool, backend: str, check_finite: bool) -> Tensor:
    data = (coefficients, rhs_equation, init_vars, steps)
    weights = (weight_equation, weight_init_var, weight_smooth)
    _check_tensors(**dict(zip(_ODE_DATA + _WEIGHTS, data + weights)))
    with _array_stream(coefficients.device):
        u = smnn.ode_forward(
            *(_as_array(a) for a in data), check_finite=check_finite,
            **_ode_kwargs(weights, n_steps, n_init_var_steps, is_step_dim_first,
                          enable_central_smoothness, backend),
        )
        return _as_tensor(u)


def _ode_meta(data, weights, n_steps, is_step_dim_first):
    _check_tensors(**dict(zip(_ODE_DATA + _WEIGHTS, data + weights)))
    shape = _shapes.ode_shapes(
        dict(zip(_ODE_DATA, (a.shape for a in data))),
        dict(zip(_WEIGHTS, (w.shape for w in weights))),
        n_steps=n_steps, is_step_dim_first=is_step_dim_first,
    )
    dtype = data[0].dtype
    for a in data[1:]:
        dtype = torch.promote_types(dtype, a.dtype)
    return shape, dtype


@_ode_op.register_fake
def _ode_fake(coefficients, rhs_equation, init_vars, steps, weight_equation, weight_init_var,
              weight_smooth, n_steps, n_init_var_steps, is_step_dim_first,
              enable_central_smoothness, backend, check_finite):
    shape, dtype = _ode_meta((coefficients, rhs_equation, init_vars, steps),
                             (weight_equation, weight_init_var, weight_smooth), n_steps,
                             is_step_dim_first)
    return coefficients.new_empty(shape, dtype=dtype)


@torch.library.custom_op("smnn::ode_vjp", mutates_args=())
def _ode_vjp_op(grad: Tensor, coefficients: Tensor, rhs_equation: Tensor, init_vars: Tensor,
                steps: Tensor, weight_equation: Tensor, weight_init_var: Tensor,
                weight_smooth: Tensor, u: Tensor, n_steps: int | None,
                n_init_var_steps: int | None, is_step_dim_first: bool,
                enable_central_smoothness: bool,
                backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    data = (coefficients, rhs_equation, init_vars, steps)
    weights = (weight_equation, weight_init_var, weight_smooth)
    _check_tensors(grad=grad, u=u, coefficients=coefficients)
    with _array_stream(coefficients.device):
        # The forward checked the inputs for inf/NaN; u is its output.
        grads = smnn.ode_adjoint(
            *(_as_array(a) for a in data), _as_array(u), _as_array(grad),
            **_ode_kwargs(weights, n_steps, n_init_var_steps, is_step_dim_first,
                          enable_central_smoothness, backend),
        )
        return tuple(_as_tensor(d) for d in grads)


@_ode_vjp_op.register_fake
def _ode_vjp_fake(grad, coefficients, rhs_equation, init_vars, steps, *options):
    return tuple(a.new_empty(a.shape) for a in (coefficients, rhs_equation, init_vars, steps))


def _ode_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:7], output)
    ctx.options = inputs[7:12]  # n_steps .. backend (check_finite is not needed)


def _ode_backward(ctx, grad):
    grads = _ode_vjp_op(grad, *ctx.saved_tensors, *ctx.options)
    needs = ctx.needs_input_grad
    return tuple(g if needs[i] else None for i, g in enumerate(grads)) + (None,) * 9


_ode_op.register_autograd(_ode_backward, setup_context=_ode_setup_context)


def _weight_tensor(weight, name, dtype, device):
    """A weight as a tensor of the working dtype on ``device`` (no gradient)."""
    if isinstance(weight, Tensor):
        if weight.requires_grad:
            raise ValueError(
                f"{name} requires grad, but the S-MNN weights get no gradient "
                f"(smnn.ode_vjp gives none); pass {name}.detach()"
            )
        if weight.device != device:
            raise ValueError(
                f"{name} must be on the device of coefficients ({device}); got {weight.device}"
            )
        return weight.to(dtype)
    return torch.as_tensor(weight, dtype=dtype, device=device)


def ode_forward(coefficients, rhs_equation, init_vars, steps, *, n_steps=None,
                n_init_var_steps=None, is_step_dim_first=False, weight_equation=1.,
                weight_init_var=1., weight_smooth=1., enable_central_smoothness=False,
                backend="auto", check_finite=True):
    """Solve the S-MNN least-squares ODE system for u, differentiably.

    The ``torch.library`` custom op ``smnn::ode_forward`` over
    :func:`smnn.ode_forward`; gradients with respect to ``coefficients``,
    ``rhs_equation``, ``init_vars`` and ``steps`` come from
    :func:`smnn.ode_vjp`.

    Parameters
    ----------
    coefficients : Tensor, shape (..., T, E, D, O)
    rhs_equation : Tensor, shape (..., T, E)
    init_vars : Tensor, shape (..., Ti, D, Oi)
    steps : Tensor, shape (..., T-1)
        float32 or float64 tensors on one device (CPU or CUDA); any of
        them may require grad. Sizes 1 broadcast as in
        :func:`smnn.ode_forward`.
    n_steps, n_init_var_steps, is_step_dim_first, enable_central_smoothness, backend, check_finite
        As in :func:`smnn.ode_forward`.
    weight_equation, weight_init_var, weight_smooth : float or Tensor, optional
        Row weights, scalars or tensors broadcastable to the rows they
        weight, as in :func:`smnn.ode_forward`. They are constants of the
        operator: a weight tensor that requires grad raises ValueError
        (the array-level vjp has no weight gradient).

    Returns
    -------
    u : Tensor, shape (..., T, D, O)
        (T, ..., D, O) with ``is_step_dim_first``; dtype the promotion of
        the four inputs', on their device.

    Raises
    ------
    TypeError
        Inputs that are not float32/float64 tensors.
    ValueError
        Shapes that do not fit, tensors on different devices, a weight that
        requires grad, and the value checks of :func:`smnn.ode_forward`.
    bandsolve.LinAlgError
        If the normal equations are not positive definite.

    Notes
    -----
    The backward re-assembles and re-factors the normal equations (a custom
    op cannot carry the factor from the forward); double backward is not
    supported.

    Examples
    --------
    Learn the growth rate of x' = c x from a trajectory:

    >>> import torch
    >>> from adapters.torch import ode_forward
    >>> T = 50
    >>> rate = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    >>> one = torch.ones((), dtype=torch.float64)
    >>> coef = torch.stack([rate, -one, 0 * one]).reshape(1, 1, 1, 3)  # c x - x' = 0
    >>> steps = torch.full((T - 1,), 0.02, dtype=torch.float64)
    >>> init = torch.ones(1, 1, 1, dtype=torch.float64)
    >>> u = ode_forward(coef, torch.zeros(1, 1, dtype=torch.float64), init, steps, n_steps=T)
    >>> u.shape
    torch.Size([50, 1, 3])
    >>> target = torch.exp(0.8 * 0.02 * torch.arange(T, dtype=torch.float64))
    >>> loss = ((u[:, 0, 0] - target) ** 2).sum()
    >>> loss.backward()
    >>> bool(rate.grad < 0)          # increase the rate towards 0.8
    True
    """
    data = (coefficients, rhs_equation, init_vars, steps)
    _check_tensors(**dict(zip(_ODE_DATA, data)))
    dtype = coefficients.dtype
    for a in data[1:]:
        dtype = torch.promote_types(dtype, a.dtype)
    weights = tuple(
        _weight_tensor(w, name, dtype, coefficients.device)
        for w, name in zip((weight_equation, weight_init_var, weight_smooth), _WEIGHTS)
    )
    return _ode_op(*data, *weights, n_steps, n_init_var_steps, bool(is_step_dim_first),
                   bool(enable_central_smoothness), str(backend), bool(check_finite))


class SMNNLayer(torch.nn.Module):
    """S-MNN layer: ODE coefficients predicted by a network -> solution u.

    Holds the sizes of the ODE system and its options, and maps
    ``(coefficients, rhs_equation, init_vars, steps)`` to ``u`` with
    :func:`ode_forward` (differentiable with respect to all four). Tensor
    weights are registered as buffers, so they follow ``.to(device)`` and
    ``state_dict``.

    Parameters
    ----------
    n_steps : int
        T, the number of time steps.
    n_dims : int
        D, the number of state dimensions.
    n_orders : int
        O, the orders (derivatives 0..O-1) solved for; at least 2 (3 with
        central smoothness).
    n_equations : int, optional
        E, equation rows per step (default D).
    n_init_var_steps, n_init_var_orders : int, optional
        Ti and Oi of ``init_vars`` (default 1 and 1: initial values only).
    is_step_dim_first, weight_equation, weight_init_var, weight_smooth, enable_central_smoothness, backend, check_finite
        As in :func:`ode_forward`.

    Attributes
    ----------
    coefficients_shape, rhs_equation_shape, init_vars_shape, steps_shape : tuple
        The per-item shapes the layer takes (batch-first layout), e.g. to
        size the heads of the network that predicts them; any of these
        dimensions may be 1 to broadcast.

    Examples
    --------
    >>> import math, torch
    >>> from adapters.torch import SMNNLayer
    >>> layer = SMNNLayer(n_steps=20, n_dims=2, n_orders=3)
    >>> layer
    SMNNLayer(n_steps=20, n_dims=2, n_orders=3, n_equations=2, n_init_var_steps=1, n_init_var_orders=1)
    >>> head = torch.nn.Linear(8, math.prod(layer.coefficients_shape))  # a network
    >>> batch = torch.randn(4, 8)
    >>> coef = head(batch).reshape(4, *layer.coefficients_shape)
    >>> u = layer(coef.double(), torch.zeros(4, 20, 2, dtype=torch.float64),
    ...           torch.ones(4, 1, 2, 1, dtype=torch.float64),
    ...           torch.full((19,), 0.1, dtype=torch.float64))
    >>> u.shape
    torch.Size([4, 20, 2, 3])
    >>> u.square().mean().backward()
    >>> head.weight.grad.shape
    torch.Size([240, 8])
    """

    def __init__(self, n_steps, n_dims, n_orders, n_equations=None, n_init_var_steps=1,
                 n_init_var_orders=1, *, is_step_dim_first=False, weight_equation=1.,
                 weight_init_var=1., weight_smooth=1., enable_central_smoothness=False,
                 backend="auto", check_finite=True):
        super().__init__()
        sizes = dict(n_steps=n_steps, n_dims=n_dims, n_orders=n_orders,
                     n_equations=n_dims if n_equations is None else n_equations,
                     n_init_var_steps=n_init_var_steps, n_init_var_orders=n_init_var_orders)
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        minimum = 3 if enable_central_smoothness else 2
        if sizes["n_orders"] < minimum:
            raise ValueError(f"n_orders must be at least {minimum}; got {n_orders}")
        if n_init_var_steps > n_steps or n_init_var_orders > n_orders:
            raise ValueError(
                "n_init_var_steps and n_init_var_orders must not exceed n_steps and "
                f"n_orders; got {n_init_var_steps} > {n_steps} or {n_init_var_orders} > {n_orders}"
            )
        self.__dict__.update(sizes)
        self.is_step_dim_first = bool(is_step_dim_first)
        self.enable_central_smoothness = bool(enable_central_smoothness)
        self.backend = str(backend)
        self.check_finite = bool(check_finite)
        for name, value in zip(_WEIGHTS, (weight_equation, weight_init_var, weight_smooth)):
            if isinstance(value, Tensor):
                self.register_buffer(name, value.detach())
            else:
                setattr(self, name, float(value))

    @property
    def coefficients_shape(self):
        return (self.n_steps, self.n_equations, self.n_dims, self.n_orders)

    @property
    def rhs_equation_shape(self):
        return (self.n_steps, self.n_equations)

    @property
    def init_vars_shape(self):
        return (self.n_init_var_steps, self.n_dims, self.n_init_var_orders)

    @property
    def steps_shape(self):
        return (self.n_steps - 1,)

    def extra_repr(self):
        return (f"n_steps={self.n_steps}, n_dims={self.n_dims}, n_orders={self.n_orders}, "
                f"n_equations={self.n_equations}, n_init_var_steps={self.n_init_var_steps}, "
                f"n_init_var_orders={self.n_init_var_orders}")

    def forward(self, coefficients, rhs_equation, init_vars, steps):
        """u of shape (..., T, D, O) ((T, ..., D, O) step first); see :func:`ode_forward`."""
        return ode_forward(
            coefficients, rhs_equation, init_vars, steps, n_steps=self.n_steps,
            n_init_var_steps=self.n_init_var_steps, is_step_dim_first=self.is_step_dim_first,
            weight_equation=self.weight_equation, weight_init_var=self.weight_init_var,
            weight_smooth=self.weight_smooth,
            enable_central_smoothness=self.enable_central_smoothness, backend=self.backend,
            check_finite=self.check_finite,
        )
