"""Validation and normalisation of the S-MNN inputs (one place for all checks).

A :class:`Plan` holds everything that determines the matrix M of the normal
equations: the coefficients, the steps, the three weights, the sizes
(T, E, D, O, Ti, Oi) and the smoothness mode. The right-hand side data
(``rhs_equation``, ``init_vars``) are checked against a plan by
:func:`check_rhs`.

All arrays are kept in the batch-first layout ``(..., T, ...)``; the
``is_step_dim_first`` layout is converted at the public boundary. Broadcast
dimensions stay broadcast (zero-stride views or size 1) so that, e.g.,
coefficients constant over time are processed once per batch item.
"""

import operator
from dataclasses import dataclass

import numpy as np

from bandsolve import _arrays

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

#: Minimum rank of each input and the names of its trailing core dimensions.
CORE = {
    "coefficients": ("T", "E", "D", "O"),
    "rhs_equation": ("T", "E"),
    "init_vars": ("Ti", "D", "Oi"),
    "steps": ("T-1",),
}


def _shape_text(names):
    return "(..., " + ", ".join(names) + ")"


def check_rank(a, name):
    core = CORE[name]
    if a.ndim < len(core):
        raise ValueError(
            f"{name} must have shape {_shape_text(core)} (at least {len(core)} "
            f"dimension{'s' if len(core) > 1 else ''}); got shape {tuple(a.shape)}"
        )


def check_dtype(a, name):
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a float32 or float64 array; got dtype {a.dtype}")


def as_count(value, name, minimum):
    """``value`` as an int >= ``minimum``, else ValueError naming ``name``."""
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return value


def infer_size(name, candidates, given):
    """Resolve a dimension size from (argument, size, offset) triples.

    Each triple says that ``argument`` has ``size`` along the dimension, meaning
    ``n - offset`` where n is the size sought, or 1 (broadcast). ``given`` is
    the user's explicit value (``n_steps``) or None.
    """
    if given is not None:
        n = given
        for arg, size, offset in candidates:
            if size not in (n - offset, 1):
                raise ValueError(
                    f"{arg} has size {size} along {name}; with {name} = {n} it must "
                    f"be {max(n - offset, 0)} or 1 (broadcast)"
                )
        return n
    implied = {}
    for arg, size, offset in candidates:
        if size != 1:
            implied[arg] = size + offset
    values = set(implied.values())
    if len(values) > 1:
        seen = ", ".join(f"{arg} implies {value}" for arg, value in implied.items())
        raise ValueError(f"the sizes along {name} do not agree: {seen}")
    if values:
        return values.pop()
    # Every candidate has size 1: the reading without broadcasting.
    return 1 + max(offset for _, _, offset in candidates)


def check_core_dim(name, shape, axis, label, n):
    """Require ``shape[axis]`` to be n or 1 (broadcast)."""
    size = shape[axis]
    if size not in (n, 1):
        raise ValueError(
            f"{name} has {label} = {size} (shape {tuple(shape)}); expected {n} or 1 "
            "to broadcast"
        )


def _weight_array(xp, weight, name, row_shape, row_names, dtype, is_step_dim_first):
    """Weight as an xp array broadcastable to batch + ``row_shape``."""
    w = _arrays.asarray(weight, xp)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real; got dtype {w.dtype}")
    w = w.astype(dtype, copy=False)
    rank = len(row_shape)
    if is_step_dim_first and w.ndim >= rank and w.ndim > 0:
        w = xp.moveaxis(w, 0, w.ndim - rank)
    core = tuple(w.shape[max(w.ndim - rank, 0):])
    target = row_shape[rank - len(core):]
    if any(c not in (1, n) for c, n in zip(core, target)):
        raise ValueError(
            f"{name} must be a scalar or broadcastable to the rows it weights, "
            f"{_shape_text(row_names)} = (..., {', '.join(map(str, row_shape))}); "
            f"got shape {tuple(weight.shape) if hasattr(weight, 'shape') else ()}"
        )
    return w


def broadcast_rows(xp, w, row_shape):
    """View of ``w`` with its core dimensions broadcast to ``row_shape``."""
    rank = len(row_shape)
    if w.ndim < rank:
        w = w.reshape((1,) * (rank - w.ndim) + tuple(w.shape))
    return xp.broadcast_to(w, tuple(w.shape[:-rank]) + tuple(row_shape))


def batch_of(a, rank):
    return tuple(a.shape[: max(a.ndim - rank, 0)])


def broadcast_batches(named_shapes):
    try:
        return tuple(np.broadcast_shapes(*(s for _, s in named_shapes)))
    except ValueError:
        seen = ", ".join(f"{name} {shape}" for name, shape in named_shapes)
        raise ValueError(f"the batch dimensions do not broadcast: {seen}") from None


@dataclass(frozen=True)
class Plan:
    """A checked S-MNN system without its right-hand-side data.

    Arrays are batch first. ``coef`` is (..., Tc, E, D, O) with Tc in {1, T};
    ``steps`` is (..., T-1) (a broadcast view when the input had size 1);
    the weights are arrays broadcastable to the rows they weight.
    """

    xp: object
    backend: str
    dtype: np.dtype
    T: int
    E: int
    D: int
    O: int
    Ti: int
    Oi: int
    central: bool
    coef: object
    steps: object
    w_eq2: object  # squared weight_equation, broadcastable to (..., T, E)
    w_init2: object  # squared weight_init_var, broadcast to (..., Ti, D, Oi)
    w_smooth2: object  # squared weight_smooth, broadcast to (..., T-1, D, O)
    batch_shape: tuple  # batch of M
    coef_shape: tuple  # as given (batch first), for the adjoint of broadcasting
    coef_dtype: np.dtype
    steps_shape: tuple
    steps_dtype: np.dtype
    check_finite: bool

    @property
    def k(self):
        return self.D * self.O

    @property
    def bandwidth(self):
        return 2 if self.central else 1

    @property
    def n_smooth_orders(self):
        """Orders with Taylor smoothness rows: O, or O-1 with central rows."""
        return self.O - 1 if self.central else self.O


def check_steps_values(xp, steps, check_finite):
    if not check_finite or steps.size == 0:
        return
    ok = xp.isfinite(steps) & (steps > 0)
    if not bool(ok.all()):
        bad = _first_false(xp, ok)
        raise ValueError(
            "steps must be positive and finite; "
            f"found {float(steps[bad])!r} at index {bad} of shape {tuple(steps.shape)}"
        )


def _first_false(xp, ok):
    flat = int(xp.argmin(ok.ravel()))
    return tuple(int(i) for i in np.unravel_index(flat, ok.shape))


def check_weight_values(xp, w, name, check_finite):
    if check_finite and w.size and not bool(xp.isfinite(w).all()):
        raise ValueError(f"{name} must not contain inf or NaN")


def make_plan(xp, coefficients, steps, *, T, E, D, Ti, Oi, weights, central, backend,
              dtype, is_step_dim_first, check_finite):
    """Build a :class:`Plan` from batch-first coefficients and steps.

    ``T, E, D, Ti, Oi`` are the resolved sizes; the coefficients' E and D
    dimensions may be 1 (broadcast), their T dimension T or 1, the steps'
    last dimension T-1 or 1.
    """
    O = coefficients.shape[-1]
    min_orders = 3 if central else 2
    if O < min_orders:
        what = "with enable_central_smoothness=True" if central else "(derivatives 0 and 1)"
        raise ValueError(
            f"coefficients must have at least {min_orders} orders O {what}; got shape "
            f"{tuple(coefficients.shape)} with O = {O}"
        )
    if Oi > O:
        raise ValueError(
            f"init_vars has Oi = {Oi} orders, more than the O = {O} orders of coefficients"
        )
    if Ti > T:
        raise ValueError(f"init_vars has Ti = {Ti} steps, more than the T = {T} steps")
    check_core_dim("coefficients", coefficients.shape, -4, "T", T)
    check_core_dim("coefficients", coefficients.shape, -3, "E", E)
    check_core_dim("coefficients", coefficients.shape, -2, "D", D)
    check_core_dim("steps", steps.shape, -1, "T-1", max(T - 1, 0))
    w_eq, w_init, w_smooth = weights
    w_eq = _weight_array(xp, w_eq, "weight_equation", (T, E), ("T", "E"), dtype,
                         is_step_dim_first)
    w_init = _weight_array(xp, w_init, "weight_init_var", (Ti, D, Oi), ("Ti", "D", "Oi"),
                           dtype, is_step_dim_first)
    w_smooth = _weight_array(xp, w_smooth, "weight_smooth", (max(T - 1, 0), D, O),
                             ("T-1", "D", "O"), dtype, is_step_dim_first)
    for w, name in ((w_eq, "weight_equation"), (w_init, "weight_init_var"),
                    (w_smooth, "weight_smooth")):
        check_weight_values(xp, w, name, check_finite)
    check_steps_values(xp, steps, check_finite)
    if check_finite and coefficients.size and not bool(xp.isfinite(coefficients).all()):
        raise ValueError("coefficients must not contain inf or NaN")
    batch = broadcast_batches([
        ("coefficients", batch_of(coefficients, 4)),
        ("steps", batch_of(steps, 1)),
        ("weight_equation", batch_of(w_eq, 2)),
        ("weight_init_var", batch_of(w_init, 3)),
        ("weight_smooth", batch_of(w_smooth, 3)),
    ])
    coef = coefficients.astype(dtype, copy=False)
    coef_b = xp.broadcast_to(coef, coef.shape[:-4] + (coef.shape[-4], E, D, O))
    steps_b = xp.broadcast_to(steps.astype(dtype, copy=False),
                              steps.shape[:-1] + (max(T - 1, 0),))
    return Plan(
        xp=xp, backend=backend, dtype=np.dtype(dtype), T=T, E=E, D=D, O=O, Ti=Ti, Oi=Oi,
        central=bool(central), coef=coef_b, steps=steps_b, w_eq2=w_eq * w_eq,
        w_init2=broadcast_rows(xp, w_init * w_init, (Ti, D, Oi)),
        w_smooth2=broadcast_rows(xp, w_smooth * w_smooth, (max(T - 1, 0), D, O)),
        batch_shape=batch, coef_shape=tuple(coefficients.shape),
        coef_dtype=coefficients.dtype, steps_shape=tuple(steps.shape),
        steps_dtype=steps.dtype, check_finite=bool(check_finite),
    )


def check_rhs(plan, rhs_equation, init_vars):
    """Check batch-first ``rhs_equation`` and ``init_vars`` against ``plan``.

    Returns the full batch shape (M's batch broadcast with the data's).
    """
    check_core_dim("rhs_equation", rhs_equation.shape, -2, "T", plan.T)
    check_core_dim("rhs_equation", rhs_equation.shape, -1, "E", plan.E)
    check_core_dim("init_vars", init_vars.shape, -3, "Ti", plan.Ti)
    check_core_dim("init_vars", init_vars.shape, -2, "D", plan.D)
    if init_vars.shape[-1] != plan.Oi:
        raise ValueError(
            f"init_vars must have Oi = {plan.Oi} orders in its last dimension; got "
            f"shape {tuple(init_vars.shape)}"
        )
    xp = plan.xp
    if plan.check_finite:
        for a, name in ((rhs_equation, "rhs_equation"), (init_vars, "init_vars")):
            if a.size and not bool(xp.isfinite(a).all()):
                raise ValueError(f"{name} must not contain inf or NaN")
    return broadcast_batches([
        ("coefficients, steps and weights", plan.batch_shape),
        ("rhs_equation", batch_of(rhs_equation, 2)),
        ("init_vars", batch_of(init_vars, 3)),
    ])


def as_count_or_none(value, name, minimum):
    return None if value is None else as_count(value, name, minimum)

