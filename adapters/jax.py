"""JAX bindings: ``solve`` and ``ode_forward`` as ``jax.custom_vjp`` functions.

They work under ``jax.jit``, ``jax.grad`` and ``jax.vmap``, in float32 and (with
``jax_enable_x64``) float64. The array-level functions run in a callback on
XLA's own buffers, chosen when the computation is lowered
(``jax.lax.platform_dependent``):

- CPU: ``jax.experimental.buffer_callback``; the inputs are NumPy views of
  XLA's buffers (no copy; ``jax.pure_callback`` hands its callback copies),
  and the result is written into JAX's output buffer.
- CUDA: ``buffer_callback`` on the device buffers; CuPy views them through
  ``__cuda_array_interface__`` (no copy) and works on XLA's stream
  (``cupy.cuda.ExternalStream(ctx.stream)``); the result is written into
  JAX's output buffer on that stream.
- Other platforms, and JAX versions without ``buffer_callback``:
  ``jax.pure_callback`` (a host round trip).

Batching. Under ``vmap`` the forward callback is called once with the whole
batch (``vmap_method="expand_dims"``: unbatched inputs get a leading axis of
size 1 and broadcast inside the batched kernels, so a matrix shared by the
batch is factored once). The backward callback uses
``vmap_method="broadcast_all"``: JAX needs one cotangent per batch item for
every input, also for an input shared by the batch (it sums them itself), and
the array-level vjp sums over broadcast dimensions, so shared inputs are
tiled to the batch there. The callbacks line up the vmapped axes with the
array-level batch dimensions (an input with fewer batch dimensions than
another gets size-1 axes), so vmap composes with the functions' own
broadcasting.

Residuals. A callback returns arrays only, so the factorisation built in the
forward cannot reach the backward callback. ``solve`` keeps its inputs and
output x as residuals and calls :func:`bandsolve.solve_adjoint` (one fused
factor + solve for b_bar, about the cost of the forward, then the band
cotangent); ``ode_forward`` keeps its inputs and u and calls
:func:`smnn.ode_adjoint`, which re-assembles M and solves for b_bar with one
fused factor + solve before the row-local adjoint.

Errors found at trace time (dtypes, shapes) raise TypeError / ValueError
naming the argument. Errors found by the array-level function while it runs
(a matrix that is not positive definite, inf/NaN with ``check_finite=True``)
are raised inside the callback and surface, eagerly and under ``jit``, as
JAX's error for a failed callback carrying the array-level message
(``jax.errors.JaxRuntimeError``; JAX raises it as ``ValueError`` when it
dispatches an already compiled computation).
"""

import dataclasses
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np

import bandsolve
import smnn

from . import _shapes

try:  # JAX >= 0.6
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # pragma: no cover - depends on the installed JAX
    _buffer_callback = None

__all__ = ["solve", "ode_forward"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------
# callback machinery


@dataclasses.dataclass(frozen=True)
class _Operand:
    """Unbatched layout of a callback input or output.

    ``shape`` = batch dims + ``core`` trailing dims; with ``step_first`` the
    time axis comes first, before the batch dims (not counted in ``core``).
    """

    shape: tuple
    core: int
    step_first: bool = False

    @property
    def batch_rank(self):
        return len(self.shape) - self.core - int(self.step_first)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What a callback computes: ``kernel(options, *inputs) -> outputs``.

    Frozen, so equal specs compare equal and JAX reuses its compiled
    dispatch of an identical callback in eager mode.
    """

    kernel: object
    options: object
    inputs: tuple
    outputs: tuple
    out_dtypes: tuple

    @property
    def batch_rank(self):
        return max(op.batch_rank for op in self.inputs + self.outputs)

    def run(self, arrays):
        """Call the kernel on arrays that may carry leading vmapped axes."""
        n_extra = arrays[0].ndim - len(self.inputs[0].shape)
        rank = self.batch_rank
        standard = [_to_standard(a, n_extra, op, rank) for a, op in zip(arrays, self.inputs)]
        results = self.kernel(self.options, *standard)
        return [_from_standard(r, n_extra, op) for r, op in zip(results, self.outputs)]


def _to_standard(array, n_extra, op, rank):
    """View: time axis after the batch dims, batch padded to ``rank`` dims."""
    if op.step_first:
        order = list(range(array.ndim))
        time_axis = order.pop(n_extra)
        order.insert(n_extra + op.batch_rank, time_axis)
        array = array.transpose(order)
    shape = array.shape
    return array.reshape(shape[:n_extra] + (1,) * (rank - op.batch_rank) + shape[n_extra:])


def _from_standard(array, n_extra, op):
    """Inverse of :func:`_to_standard` for a result laid out like ``op``."""
    # drop the padding: keep the vmapped axes and the last len(op.shape) axes
    array = array.reshape(array.shape[:n_extra] + array.shape[array.ndim - len(op.shape):])
    if op.step_first:
        order = list(range(array.ndim))
        time_axis = order.pop(n_extra + op.batch_rank)
        order.insert(n_extra, time_axis)
        array = array.transpose(order)
    return array


@dataclasses.dataclass(frozen=True)
class _HostCallback:
    """``pure_callback`` body: NumPy views in, NumPy results out."""

    spec: _Spec

    def __call__(self, *arrays):
        results = self.spec.run([np.asarray(a) for a in arrays])
        return tuple(np.asarray(r, dtype=dt) for r, dt in zip(results, self.spec.out_dtypes))


@dataclasses.dataclass(frozen=True)
class _HostBufferCallback:
    """``buffer_callback`` body on CPU: NumPy views of XLA's buffers."""

    spec: _Spec

    def __call__(self, ctx, outs, *buffers):
        results = self.spec.run([np.asarray(buf) for buf in buffers])
        for out, result in zip(outs, results):
            np.asarray(out)[...] = result


@dataclasses.dataclass(frozen=True)
class _DeviceCallback:
    """``buffer_callback`` body: CuPy views of XLA's device buffers, XLA's stream."""

    spec: _Spec

    def __call__(self, ctx, outs, *buffers):
        cupy = _cupy()
        pointer = buffers[0].__cuda_array_interface__["data"][0]
        device = cupy.cuda.runtime.pointerGetAttributes(pointer).device if pointer else None
        with cupy.cuda.Device(device), cupy.cuda.ExternalStream(int(ctx.stream)):
            results = self.spec.run([cupy.asarray(buf) for buf in buffers])
            for out, result in zip(outs, results):
                cupy.asarray(out)[...] = result


def _cupy():
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:  # pragma: no cover - needs a GPU machine without CuPy
        raise ImportError(
            "JAX on CUDA needs CuPy: install the 'cuda' extra (pip install 'bandsolve[cuda]')"
        ) from exc


def _call(spec, args, vmap_method):
    """Run ``spec`` on ``args`` in a host or device callback; tuple of results."""
    out_types = tuple(
        jax.ShapeDtypeStruct(op.shape, dtype) for op, dtype in zip(spec.outputs, spec.out_dtypes)
    )

    def host(*args):
        return jax.pure_callback(_HostCallback(spec), out_types, *args, vmap_method=vmap_method)

    if _buffer_callback is None:  # pragma: no cover - depends on the installed JAX
        return host(*args)

    def on_buffers(body):
        return lambda *args: _buffer_callback(body(spec), out_types,
                                              vmap_method=vmap_method)(*args)

    return jax.lax.platform_dependent(*args, cpu=on_buffers(_HostBufferCallback),
                                      cuda=on_buffers(_DeviceCallback), default=host)


def _as_float_arrays(**named):
    """jnp arrays; TypeError naming the argument unless float32/float64."""
    out = []
    for name, value in named.items():
        array = jnp.asarray(value)
        if array.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 array; got dtype {array.dtype}")
        out.append(array)
    return out


# ---------------------------------------------------------------------------
# bandsolve.solve


@dataclasses.dataclass(frozen=True)
class _SolveOptions:
    lower: bool
    check_finite: bool
    check: bool
    backend: str


def _solve_kernel(options, bands, b):
    x = bandsolve.solve(bands, b, lower=options.lower, check_finite=options.check_finite,
                        check=options.check, backend=options.backend)
    return (x,)


def _solve_vjp_kernel(options, bands, b, x, g):
    # The forward already checked the inputs for inf/NaN; x is its output.
    return bandsolve.solve_adjoint(bands, b, x, g, lower=options.lower, check=options.check,
                                   backend=options.backend)


def _solve_operands(bands, b):
    x_shape, core = _shapes.solve_shapes(bands.shape, b.shape)
    return _Operand(tuple(bands.shape), 4), _Operand(tuple(b.shape), core), _Operand(x_shape, core)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _solve(bands, b, options):
    bands_op, b_op, x_op = _solve_operands(bands, b)
    spec = _Spec(_solve_kernel, options, (bands_op, b_op), (x_op,),
                 (jnp.result_type(bands.dtype, b.dtype),))
    (x,) = _call(spec, (bands, b), "expand_dims")
    return x


def _solve_fwd(bands, b, options):
    x = _solve(bands, b, options)
    return x, (bands, b, x)


def _solve_bwd(options, residuals, g):
    bands, b, x = residuals
    bands_op, b_op, x_op = _solve_operands(bands, b)
    spec = _Spec(_solve_vjp_kernel, options, (bands_op, b_op, x_op, x_op), (bands_op, b_op),
                 (bands.dtype, b.dtype))
    return tuple(_call(spec, (bands, b, x, g), "broadcast_all"))


_solve.defvjp(_solve_fwd, _solve_bwd)
# Eager calls reuse one compiled computation per (shapes, dtypes, options)
# instead of tracing the callback afresh each time.
_solve_jit = jax.jit(_solve, static_argnums=(2,))


def solve(bands, b, *, lower=True, check_finite=True, check=True, backend="auto"):
    """Solve M x = b for a batch of SPD block-banded matrices, differentiably.

    :func:`bandsolve.solve` as a ``jax.custom_vjp`` function; gradients
    with respect to ``bands`` and ``b`` come from :func:`bandsolve.solve_adjoint`.

    Parameters
    ----------
    bands : array_like, shape (..., w+1, T, k, k)
        Lower block band ``bands[..., d, t] = M[t+d, t]`` (upper form with
        ``lower=False``), float32 or float64.
    b : array_like, shape (..., T, k) or (..., T, k, nrhs)
        Right-hand sides; batch dimensions broadcast.
    lower, check_finite, check, backend
        As in :func:`bandsolve.solve` (static: not traced). The
        ``overwrite_*`` options are not offered: JAX arrays are immutable.

    Returns
    -------
    x : jax.Array
        Shape of ``b`` broadcast against the batch of ``bands``, dtype the
        promotion of the inputs'.

    Raises
    ------
    TypeError
        Inputs that are not float32/float64.
    ValueError
        Shapes that do not fit (at trace time).

    Notes
    -----
    The gradient of ``bands`` is taken with respect to the symmetric matrix
    each stored block stands for (a diagonal block's gradient is symmetric
    although only its lower triangle is read), as in
    :func:`bandsolve.solve_vjp`. See the module notes for batching and for
    why the backward re-factors.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from adapters.jax import solve
    >>> bands = jnp.zeros((2, 4, 1, 1)).at[0].set(2.0).at[1].set(-1.0)
    >>> b = jnp.ones((4, 1))
    >>> solve(bands, b).ravel().round(4)
    Array([2., 3., 3., 2.], dtype=float32)
    >>> d_bands = jax.jit(jax.grad(lambda bands: solve(bands, b).sum()))(bands)
    >>> d_bands[0].ravel().round(4)  # -b_bar_t x_t with b_bar = M^{-1} 1 = x
    Array([-4., -9., -9., -4.], dtype=float32)
    >>> jax.vmap(solve, in_axes=(None, 0))(bands, jnp.stack([b, 2 * b])).shape
    (2, 4, 1)
    """
    bands, b = _as_float_arrays(bands=bands, b=b)
    _shapes.solve_shapes(bands.shape, b.shape)  # shape errors at trace time, named
    return _solve_jit(bands, b, _SolveOptions(bool(lower), bool(check_finite), bool(check),
                                              str(backend)))


# ---------------------------------------------------------------------------
# smnn.ode_forward

_ODE_DATA = tuple(_shapes.ODE_CORE)  # coefficients, rhs_equation, init_vars, steps
_WEIGHTS = tuple(_shapes.WEIGHT_ROWS)  # weight_equation, weight_init_var, weight_smooth


@dataclasses.dataclass(frozen=True)
class _OdeOptions:
    """Static options. The callbacks always see the batch-first layout."""

    n_steps: object
    n_init_var_steps: object
    enable_central_smoothness: bool
    backend: str
    check_finite: bool

    def kwargs(self, weights):
        return dict(zip(_WEIGHTS, weights), n_steps=self.n_steps,
                    n_init_var_steps=self.n_init_var_steps, is_step_dim_first=False,
                    enable_central_smoothness=self.enable_central_smoothness,
                    backend=self.backend)


def _ode_kernel(options, coefficients, rhs_equation, init_vars, steps, *weights):
    u = smnn.ode_forward(coefficients, rhs_equation, init_vars, steps,
                         check_finite=options.check_finite, **options.kwargs(weights))
    return (u,)


def _ode_vjp_kernel(options, coefficients, rhs_equation, init_vars, steps, *weights_u_g):
    *weights, u, g = weights_u_g
    # The forward checked the inputs for inf/NaN; u is its output.
    return smnn.ode_adjoint(coefficients, rhs_equation, init_vars, steps, u, g,
                            **options.kwargs(weights))


def _ode_operands(data, weights, u_shape, step_first):
    """Layouts of the data, the (row-rank) weights and u."""
    cores = tuple(_shapes.ODE_CORE.values()) + tuple(_shapes.WEIGHT_ROWS.values())
    ops = tuple(_Operand(tuple(a.shape), core - step_first, step_first)
                for a, core in zip(data + weights, cores))
    return ops[:4], ops[4:], _Operand(u_shape, 3 - step_first, step_first)


def _ode_specs(data, weights, options, step_first, u_shape):
    data_ops, weight_ops, u_op = _ode_operands(data, weights, u_shape, step_first)
    dtype = jnp.result_type(*(a.dtype for a in data))
    forward = _Spec(_ode_kernel, options, data_ops + weight_ops, (u_op,), (dtype,))
    backward = _Spec(_ode_vjp_kernel, options, data_ops + weight_ops + (u_op, u_op), data_ops,
                     tuple(a.dtype for a in data))
    return forward, backward


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def _ode(coefficients, rhs_equation, init_vars, steps, weight_equation, weight_init_var,
         weight_smooth, options, step_first, u_shape):
    args = (coefficients, rhs_equation, init_vars, steps,
            weight_equation, weight_init_var, weight_smooth)
    forward, _ = _ode_specs(args[:4], args[4:], options, step_first, u_shape)
    (u,) = _call(forward, args, "expand_dims")
    return u


def _ode_fwd(*args):
    u = _ode(*args)
    return u, args[:7] + (u,)


def _ode_bwd(options, step_first, u_shape, residuals, g):
    _, backward = _ode_specs(residuals[:4], residuals[4:7], options, step_first, u_shape)
    grads = _call(backward, residuals + (g,), "broadcast_all")
    # The weights are constants of the operator (see ode_forward).
    return tuple(grads) + tuple(jnp.zeros_like(w) for w in residuals[4:7])


_ode.defvjp(_ode_fwd, _ode_bwd)
_ode_jit = jax.jit(_ode, static_argnums=(7, 8, 9))


def _weight_array(weight, name, rank, dtype):
    """A weight as an array of the working dtype with at least ``rank`` dims."""
    weight = jnp.asarray(weight)
    if weight.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be real; got dtype {weight.dtype}")
    weight = jax.lax.stop_gradient(weight.astype(dtype))
    if weight.ndim < rank:  # same rows; no batch dims for vmap to misread
        weight = weight.reshape((1,) * (rank - weight.ndim) + weight.shape)
    return weight


def ode_forward(coefficients, rhs_equation, init_vars, steps, *, n_steps=None,
                n_init_var_steps=None, is_step_dim_first=False, weight_equation=1.,
                weight_init_var=1., weight_smooth=1., enable_central_smoothness=False,
                backend="auto", check_finite=True):
    """Solve the S-MNN least-squares ODE system for u, differentiably.

    :func:`smnn.ode_forward` as a ``jax.custom_vjp`` function; gradients
    with respect to ``coefficients``, ``rhs_equation``, ``init_vars`` and
    ``steps`` come from :func:`smnn.ode_adjoint` (those of :func:`smnn.ode_vjp`).

    Parameters
    ----------
    coefficients : array_like, shape (..., T, E, D, O)
    rhs_equation : array_like, shape (..., T, E)
    init_vars : array_like, shape (..., Ti, D, Oi)
    steps : array_like, shape (..., T-1)
        float32 or float64; sizes 1 broadcast as in :func:`smnn.ode_forward`.
    n_steps, n_init_var_steps, is_step_dim_first, enable_central_smoothness, backend, check_finite
        As in :func:`smnn.ode_forward` (static: not traced).
    weight_equation, weight_init_var, weight_smooth : float or array_like, optional
        Row weights, as in :func:`smnn.ode_forward`. They may be traced
        arrays but are constants of the operation: no gradient flows to
        them (as if wrapped in ``jax.lax.stop_gradient``), since the
        array-level vjp has no weight gradient.

    Returns
    -------
    u : jax.Array, shape (..., T, D, O)
        (T, ..., D, O) with ``is_step_dim_first``; dtype the promotion of
        the four inputs'.

    Raises
    ------
    TypeError
        Inputs that are not float32/float64.
    ValueError
        Shapes that do not fit (at trace time).

    Notes
    -----
    Value checks (positive steps, finite input) and the positive
    definiteness of the normal equations are checked while the callback
    runs; see the module notes for how such errors surface, for batching
    and for why the backward re-factors.

    Examples
    --------
    Gradient of a trajectory loss with respect to the growth rate of
    x' = c x:

    >>> import jax, jax.numpy as jnp
    >>> from adapters.jax import ode_forward
    >>> T = 50
    >>> def loss(rate):
    ...     coef = jnp.stack([rate, -1.0, 0.0]).reshape(1, 1, 1, 3)  # c x - x' = 0
    ...     u = ode_forward(coef, jnp.zeros((1, 1)), jnp.ones((1, 1, 1)),
    ...                     jnp.full(T - 1, 0.02), n_steps=T)
    ...     target = jnp.exp(0.8 * 0.02 * jnp.arange(T))
    ...     return jnp.sum((u[:, 0, 0] - target) ** 2)
    >>> bool(jax.jit(jax.grad(loss))(0.5) < 0)    # increase the rate towards 0.8
    True
    >>> jax.vmap(jax.grad(loss))(jnp.array([0.5, 1.0])).shape
    (2,)
    """
    data = tuple(_as_float_arrays(coefficients=coefficients, rhs_equation=rhs_equation,
                                  init_vars=init_vars, steps=steps))
    dtype = jnp.result_type(*(a.dtype for a in data))
    weights = tuple(
        _weight_array(w, name, rank, dtype)
        for w, (name, rank) in zip((weight_equation, weight_init_var, weight_smooth),
                                   _shapes.WEIGHT_ROWS.items())
    )
    step_first = bool(is_step_dim_first)
    u_shape = _shapes.ode_shapes(
        dict(zip(_ODE_DATA, (a.shape for a in data))),
        dict(zip(_WEIGHTS, (w.shape for w in weights))),
        n_steps=n_steps, is_step_dim_first=step_first,
    )
    options = _OdeOptions(n_steps, n_init_var_steps, bool(enable_central_smoothness),
                          str(backend), bool(check_finite))
    return _ode_jit(*data, *weights, options, step_first, u_shape)
