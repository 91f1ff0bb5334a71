"""PyTorch bindings: ``solve`` and ``ode_forward`` as differentiable custom ops.

Each public function is a ``torch.library.custom_op`` with a fake (meta)
kernel and a registered backward, so it works in eager autograd, under
``torch.compile(fullgraph=True)`` and passes ``torch.library.opcheck``:

==========================  =================================================
operator                    computes
==========================  =================================================
``bandsolve::solve``        x = M^{-1} b, :func:`bandsolve.solve`
``bandsolve::solve_vjp``    (d_bands, d_b) from :func:`bandsolve.solve_vjp`
``smnn::ode_forward``       u, :func:`smnn.ode_forward`
``smnn::ode_vjp``           (d_coef, d_rhs, d_init, d_steps), :func:`smnn.ode_vjp`
==========================  =================================================

Data crossing. CPU tensors are handed to the array-level functions as NumPy
views of the tensor's memory (``Tensor.numpy()`` on the detached tensor, no
copy, strides kept); CUDA tensors as CuPy arrays through DLPack
(``cupy.from_dlpack``, no copy). Results come back the same way
(``torch.from_numpy`` / ``torch.from_dlpack``) on the input's device. CUDA work
is issued on ``torch.cuda.current_stream()``: CuPy's current stream is set to
it for the duration of the call, so no synchronisation is needed either way.

Backward. A custom op returns tensors only, so the factorisation built in the
forward cannot be carried to the backward. The backward op calls the
array-level ``*_vjp`` again on the saved inputs: it re-factors (about the
cost of the forward) and then applies the adjoint. Double backward is not
supported.
"""

import contextlib
import importlib

import torch
from torch import Tensor

import bandsolve

from . import _shapes

__all__ = ["solve"]

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
def _solve_vjp_op(grad: Tensor, bands: Tensor, b: Tensor, lower: bool, check: bool,
                  backend: str) -> tuple[Tensor, Tensor]:
    _check_tensors(grad=grad, bands=bands, b=b)
    with _array_stream(bands.device):
        # The inputs were checked for inf/NaN by the forward.
        _, vjp = bandsolve.solve_vjp(_as_array(bands), _as_array(b), lower=lower,
                                     check_finite=False, check=check, backend=backend)
        d_bands, d_b = vjp(_as_array(grad))
        return _as_tensor(d_bands), _as_tensor(d_b)


@_solve_vjp_op.register_fake
def _solve_vjp_fake(grad, bands, b, lower, check, backend):
    return bands.new_empty(bands.shape), b.new_empty(b.shape)


def _solve_setup_context(ctx, inputs, output):
    bands, b, lower, _, check, backend = inputs
    ctx.save_for_backward(bands, b)
    ctx.options = (lower, check, backend)


def _solve_backward(ctx, grad):
    bands, b = ctx.saved_tensors
    d_bands, d_b = _solve_vjp_op(grad, bands, b, *ctx.options)
    needs = ctx.needs_input_grad
    return (d_bands if needs[0] else None, d_b if needs[1] else None, None, None, None, None)


_solve_op.register_autograd(_solve_backward, setup_context=_solve_setup_context)


def solve(bands, b, *, lower=True, check_finite=True, check=True, backend="auto"):
    """Solve M x = b for a batch of SPD block-banded matrices, differentiably.

    The ``torch.library`` custom op ``bandsolve::solve`` over
    :func:`bandsolve.solve`; gradients with respect to ``bands`` and ``b``
    come from :func:`bandsolve.solve_vjp`.

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
    >>> x.ravel()
    tensor([2., 3., 3., 2.], dtype=torch.float64, grad_fn=<ViewBackward0>)
    >>> x.sum().backward()
    >>> bands.grad[0].ravel()          # -b_bar_t x_t with b_bar = M^{-1} 1 = x
    tensor([-4., -9., -9., -4.], dtype=torch.float64)
    """
    _check_tensors(bands=bands, b=b)
    return _solve_op(bands, b, bool(lower), bool(check_finite), bool(check), str(backend))
