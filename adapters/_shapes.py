"""Shape inference shared by the bindings (no array library, no framework).

The frameworks need the result's shape before any data exists: PyTorch's fake
(meta) kernels and ``torch.compile`` tracing, JAX's ``result_shape_dtypes``
under ``jit``. The functions here reproduce the shape rules of the
array-level functions and raise the same kind of errors, naming the argument
and the shapes seen. They only compare and combine sizes, so they also work
on PyTorch's symbolic sizes (``SymInt``) under dynamic shapes.
"""

__all__ = ["broadcast_shapes", "solve_shapes", "ode_shapes", "ODE_CORE", "WEIGHT_ROWS"]


def broadcast_shapes(*named_shapes):
    """NumPy broadcasting of ``(name, shape)`` pairs; ValueError naming them."""
    ndim = max((len(shape) for _, shape in named_shapes), default=0)
    out = []
    for axis in range(-ndim, 0):
        size = 1
        for _, shape in named_shapes:
            if len(shape) < -axis:
                continue
            n = shape[axis]
            if n == 1:
                continue
            if size == 1:
                size = n
            elif n != size:
                seen = ", ".join(f"{name} {tuple(shape)}" for name, shape in named_shapes)
                raise ValueError(f"batch dimensions do not broadcast: {seen}")
        out.append(size)
    return tuple(out)


def solve_shapes(bands_shape, b_shape):
    """Shapes of :func:`bandsolve.solve`: ``(x_shape, b_core_ndim)``.

    ``bands`` is (..., w+1, T, k, k); ``b`` is read as (..., T, k) when its
    last two sizes are (T, k), else as (..., T, k, nrhs) (the rule of
    :func:`bandsolve.solve`). ``b_core_ndim`` is 2 or 3 accordingly.

    Examples
    --------
    >>> solve_shapes((3, 2, 10, 4, 4), (10, 4))
    ((3, 10, 4), 2)
    >>> solve_shapes((2, 10, 4, 4), (5, 1, 10, 4, 7))
    ((5, 1, 10, 4, 7), 3)
    """
    bands_shape, b_shape = tuple(bands_shape), tuple(b_shape)
    if len(bands_shape) < 4 or bands_shape[-1] != bands_shape[-2] or bands_shape[-4] < 1:
        raise ValueError(
            f"bands must have shape (..., w+1, T, k, k) with w >= 0; got {bands_shape}"
        )
    T, k = bands_shape[-3], bands_shape[-2]
    if len(b_shape) >= 2 and b_shape[-2] == T and b_shape[-1] == k:
        core = 2
    elif len(b_shape) >= 3 and b_shape[-3] == T and b_shape[-2] == k:
        core = 3
    else:
        raise ValueError(
            "b must have shape (..., T, k) or (..., T, k, nrhs) with "
            f"(T, k) = {(T, k)} from bands; got {b_shape}"
        )
    batch = broadcast_shapes(("bands", bands_shape[:-4]), ("b", b_shape[:-core]))
    return batch + b_shape[len(b_shape) - core:], core


#: Trailing (core) dimensions of each smnn input: (..., T, E, D, O) etc.
ODE_CORE = {"coefficients": 4, "rhs_equation": 2, "init_vars": 3, "steps": 1}
_ODE_CORE_TEXT = {"coefficients": "(..., T, E, D, O)", "rhs_equation": "(..., T, E)",
                  "init_vars": "(..., Ti, D, Oi)", "steps": "(..., T-1)"}
#: Number of dimensions of the rows each weight weights: (T, E), (Ti, D, Oi), (T-1, D, O).
WEIGHT_ROWS = {"weight_equation": 2, "weight_init_var": 3, "weight_smooth": 3}


def _batch_first(shape, core, is_step_dim_first):
    """(T, ..., core[1:]) -> (..., T, core[1:]) when the step dim is first."""
    if not is_step_dim_first or len(shape) < core:
        return shape
    cut = len(shape) - core + 1
    return shape[1:cut] + shape[:1] + shape[cut:]


def _agree(label, named_sizes, given=None):
    """The common size of ``(name, size, offset)`` triples; size 1 broadcasts."""
    if given is not None:
        for name, size, offset in named_sizes:
            if size != 1 and size != given - offset:
                raise ValueError(
                    f"{name} has size {size} along {label}; with {label} = {given} it "
                    f"must be {given - offset} or 1 (broadcast)"
                )
        return given
    value = None
    for name, size, offset in named_sizes:
        if size == 1:
            continue
        if value is None:
            value = size + offset
        elif size + offset != value:
            seen = ", ".join(f"{n} has size {s}" for n, s, _ in named_sizes)
            raise ValueError(f"the sizes along {label} do not agree: {seen}")
    if value is None:  # every size is 1: the reading without broadcasting
        value = 1 + max(offset for _, _, offset in named_sizes)
    return value


def ode_shapes(shapes, weight_shapes, *, n_steps=None, is_step_dim_first=False):
    """Shape of ``u`` from :func:`smnn.ode_forward`'s input shapes.

    Parameters
    ----------
    shapes : dict
        ``{"coefficients": (..., T, E, D, O), "rhs_equation": (..., T, E),
        "init_vars": (..., Ti, D, Oi), "steps": (..., T-1)}``; the step
        dimension first with ``is_step_dim_first``.
    weight_shapes : dict
        Shapes of the three weights (``()`` for a scalar). A weight with at
        least as many dimensions as its rows has batch dimensions in front
        of them (and, step first, its axis 0 is the step axis).
    n_steps : int, optional
        T when it cannot be inferred (see :func:`smnn.ode_forward`).

    Returns
    -------
    tuple
        (..., T, D, O), or (T, ..., D, O) with ``is_step_dim_first``.

    Examples
    --------
    >>> ode_shapes({"coefficients": (1, 2, 2, 3), "rhs_equation": (8, 10, 2),
    ...             "init_vars": (1, 2, 1), "steps": (9,)},
    ...            {"weight_equation": (), "weight_init_var": (), "weight_smooth": ()})
    (8, 10, 2, 3)
    """
    data = {}
    for name, core in ODE_CORE.items():
        shape = tuple(shapes[name])
        if len(shape) < core:
            raise ValueError(
                f"{name} must have shape {_ODE_CORE_TEXT[name]} (at least {core} "
                f"dimensions); got shape {shape}"
            )
        data[name] = _batch_first(shape, core, is_step_dim_first)
    coef, rhs, init, steps = (data[name] for name in ODE_CORE)
    T = _agree("the step dimension T", [
        ("coefficients", coef[-4], 0), ("rhs_equation", rhs[-2], 0), ("steps", steps[-1], 1),
    ], n_steps)
    _agree("E (equations)", [("coefficients", coef[-3], 0), ("rhs_equation", rhs[-1], 0)])
    D = _agree("D (dimensions)", [("coefficients", coef[-2], 0), ("init_vars", init[-2], 0)])
    batches = [(name, data[name][: len(data[name]) - core]) for name, core in ODE_CORE.items()]
    for name, rank in WEIGHT_ROWS.items():
        shape = _batch_first(tuple(weight_shapes[name]), rank, is_step_dim_first)
        batches.append((name, shape[: max(len(shape) - rank, 0)]))
    batch = broadcast_shapes(*batches)
    O = coef[-1]
    if is_step_dim_first:
        return (T,) + batch + (D, O)
    return batch + (T, D, O)
