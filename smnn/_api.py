"""Public S-MNN API: ode_forward, ode_vjp, ode_system, ODESolver.

See :mod:`smnn._assembly` for the rows, the normal equations and the adjoint.
"""

import contextlib

import numpy as np

import bandsolve
from bandsolve import _api as _bandsolve_api
from bandsolve import _arrays

from . import _assembly
from . import _plan as P

__all__ = ["ode_forward", "ode_vjp", "ode_system", "ODESolver"]

_DATA = ("coefficients", "rhs_equation", "init_vars", "steps")


@contextlib.contextmanager
def _explain_not_positive_definite(plan):
    """Re-raise bandsolve's LinAlgError in terms of steps, dimensions and orders."""
    try:
        yield
    except bandsolve.LinAlgError as exc:
        if exc.order is None:
            raise
        t, row = divmod(exc.order - 1, plan.k)
        d, o = divmod(row, plan.O)
        where = f"batch index {exc.batch_index}, " if exc.batch_index else ""
        raise bandsolve.LinAlgError(
            "the S-MNN normal matrix M = A^T W^2 A is not positive definite "
            f"({where}step t = {t}, dimension d = {d}, order o = {o}): the weighted "
            "equation, initial-value and smoothness rows do not determine u there "
            "(too few rows, linearly dependent coefficients or zero weights)",
            batch_index=exc.batch_index, order=exc.order,
        ) from exc


def _sum_to_shape(a, shape):
    """Sum a broadcast result back to ``shape`` (the adjoint of broadcasting)."""
    shape = tuple(shape)
    if tuple(a.shape) == shape:
        return a
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and a.shape[lead + i] != 1
    )
    return a.sum(axis=axes, keepdims=True).reshape(shape)


def _to_step_first(xp, a, rank, is_step_dim_first):
    """Batch-first (..., T, core...) -> step-first (T, ..., core...)."""
    if not is_step_dim_first:
        return a
    return xp.moveaxis(a, a.ndim - rank, 0)


def _load(xp, arrays, names, is_step_dim_first):
    """Convert to ``xp`` arrays, check rank and dtype, move to batch first."""
    out = []
    for a, name in zip(arrays, names):
        a = _arrays.asarray(a, xp)
        P.check_rank(a, name)
        P.check_dtype(a, name)
        if is_step_dim_first:
            a = xp.moveaxis(a, 0, a.ndim - len(P.CORE[name]))
        out.append(a)
    return out


def _broadcast_size(label, named_sizes):
    sizes = {size for _, size in named_sizes if size != 1}
    if len(sizes) > 1:
        seen = ", ".join(f"{name} has {label} = {size}" for name, size in named_sizes)
        raise ValueError(f"the sizes along {label} do not agree: {seen}")
    return sizes.pop() if sizes else 1


def _plan_for_data(coefficients, rhs_equation, init_vars, steps, *, n_steps, n_init_var_steps,
                   is_step_dim_first, weights, enable_central_smoothness, backend,
                   check_finite):
    """Validate the four inputs together; return (plan, rhs_equation, init_vars)."""
    xp = _arrays.array_module(coefficients, rhs_equation, init_vars, steps)
    backend = _arrays.resolve_backend(backend, coefficients, rhs_equation, init_vars, steps)
    coef, rhs, init, h = _load(xp, (coefficients, rhs_equation, init_vars, steps), _DATA,
                               is_step_dim_first)
    n_steps = P.as_count_or_none(n_steps, "n_steps", 1)
    n_init = P.as_count_or_none(n_init_var_steps, "n_init_var_steps", 0)
    T = P.infer_size("the step dimension T", [
        ("coefficients", coef.shape[-4], 0), ("rhs_equation", rhs.shape[-2], 0),
        ("steps", h.shape[-1], 1)], n_steps)
    Ti = P.infer_size("the initial steps Ti", [("init_vars", init.shape[-3], 0)], n_init)
    E = _broadcast_size("E (equations)", [("coefficients", coef.shape[-3]),
                                          ("rhs_equation", rhs.shape[-1])])
    D = _broadcast_size("D (dimensions)", [("coefficients", coef.shape[-2]),
                                           ("init_vars", init.shape[-2])])
    dtype = np.result_type(coef.dtype, rhs.dtype, init.dtype, h.dtype)
    plan = P.make_plan(
        xp, coef, h, T=T, E=E, D=D, Ti=Ti, Oi=init.shape[-1], weights=weights,
        central=enable_central_smoothness, backend=backend, dtype=dtype,
        is_step_dim_first=is_step_dim_first, check_finite=check_finite,
    )
    return plan, rhs, init


def ode_system(coefficients, rhs_equation, init_vars, steps, *, n_steps=None,
               n_init_var_steps=None, is_step_dim_first=False, weight_equation=1.,
               weight_init_var=1., weight_smooth=1., enable_central_smoothness=False,
               backend="auto", check_finite=True):
    """Assemble the banded normal equations M u = b of the S-MNN system.

    Arguments as in :func:`ode_forward`.

    Returns
    -------
    bands : array, shape (..., w+1, T, k, k)
        Lower block band of ``M = A^T W^2 A`` in bandsolve's storage
        (``bands[..., d, t] = M[t+d, t]``), k = D*O, w = 1 (2 with central
        smoothness). Its batch is that of the inputs M depends on
        (coefficients, steps, weights); it broadcasts against ``rhs``.
        ``is_step_dim_first`` does not change this storage.
    rhs : array, shape (..., T, k)
        ``b = A^T W^2 r`` over the full broadcast batch.

    Examples
    --------
    >>> import numpy as np, smnn, bandsolve
    >>> coef = np.array([[[[0.5, -1.0]]]])   # (T=1 broadcast, E=1, D=1, O=2): 0.5 x - x' = 0
    >>> bands, rhs = smnn.ode_system(coef, np.zeros((1, 1)), np.ones((1, 1, 1)),
    ...                              np.full(4, 0.1))
    >>> bands.shape, rhs.shape
    ((2, 5, 2, 2), (5, 2))
    >>> u = bandsolve.solve(bands, rhs).reshape(5, 1, 2)
    >>> np.allclose(u, smnn.ode_forward(coef, np.zeros((1, 1)), np.ones((1, 1, 1)),
    ...                                 np.full(4, 0.1)))
    True
    """
    plan, rhs, init = _plan_for_data(
        coefficients, rhs_equation, init_vars, steps, n_steps=n_steps,
        n_init_var_steps=n_init_var_steps, is_step_dim_first=is_step_dim_first,
        weights=(weight_equation, weight_init_var, weight_smooth),
        enable_central_smoothness=enable_central_smoothness, backend=backend,
        check_finite=check_finite,
    )
    batch = P.check_rhs(plan, rhs, init)
    return _assembly.assemble_bands(plan), _assembly.assemble_rhs(plan, rhs, init, batch,
                                                                  plan.dtype)


def ode_forward(coefficients, rhs_equation, init_vars, steps, *, n_steps=None,
                n_init_var_steps=None, is_step_dim_first=False, weight_equation=1.,
                weight_init_var=1., weight_smooth=1., enable_central_smoothness=False,
                backend="auto", check_finite=True):
    r"""Solve the S-MNN least-squares ODE system for u.

    Finds ``u[..., t, d, o]`` (the o-th derivative of dimension d at step t)
    minimising ``||W (A u - r)||^2`` over the equation, initial-value and
    smoothness rows of DESIGN.md section 4 (see :mod:`smnn` for the
    formulas), by a block-banded Cholesky solve of the normal equations in
    time and memory linear in T.

    Parameters
    ----------
    coefficients : array, shape (..., T, E, D, O)
        ``c[t, e, d, o]``: the equation rows
        ``sum_{d,o} c[t,e,d,o] u[t,d,o] = rhs_equation[t,e]``.
    rhs_equation : array, shape (..., T, E)
        Right-hand sides of the equation rows.
    init_vars : array, shape (..., Ti, D, Oi)
        Initial values ``u[t, d, o] = init_vars[t, d, o]`` for t < Ti, o < Oi.
    steps : array, shape (..., T-1)
        Positive step sizes ``h[t]`` between steps t and t+1.
    n_steps, n_init_var_steps : int, optional
        T and Ti, needed only when every array has size 1 along that dimension
        but more steps are meant (broadcast, e.g. coefficients constant in
        time). Inferred from the shapes otherwise; when all are 1, T = 2 (one
        step) and Ti = 1.
    is_step_dim_first : bool, optional
        If True, T (and Ti) is axis 0 of every array, ``(T, ..., E, D, O)``
        etc., the output too; weight arrays with at least as many dimensions
        as their rows move their axis 0 in the same way.
    weight_equation, weight_init_var, weight_smooth : float or array, optional
        Row weights W (they enter M squared), scalars or arrays broadcastable
        to the rows they weight: (..., T, E), (..., Ti, D, Oi) and
        (..., T-1, D, O). Both Taylor rows of (t, d, o) share
        ``weight_smooth[t, d, o]``; with central smoothness the central row of
        (t, d) uses the slot ``weight_smooth[t, d, O-1]``.
    enable_central_smoothness : bool, optional
        Replace the order O-1 Taylor rows by central-difference rows coupling
        t, t+1, t+2 (block pentadiagonal M). Needs O >= 3.
    backend : {"auto", "cpu", "cuda"}, optional
        Passed to bandsolve. CuPy input stays on the GPU end to end.
    check_finite : bool, optional
        Check that the inputs are finite and the steps positive (one host
        synchronisation on the GPU). Shapes are always checked.

    Returns
    -------
    u : array, shape (..., T, D, O)
        Leading dimensions are the broadcast batch of all inputs.

    Raises
    ------
    ValueError
        Wrong ranks, sizes that disagree (T, E, D, Ti, Oi), O < 2 (O < 3 with
        central smoothness), Ti > T, Oi > O, batch dimensions that do not
        broadcast, non-positive or non-finite steps, non-finite input.
    TypeError
        Non-float input (float32 and float64 are supported).
    bandsolve.LinAlgError
        If M is not positive definite (e.g. all weights zero).

    Examples
    --------
    Population growth x' = 0.23 x, x(0) = 4.78, on t = 0, 0.01, ..., 9.99:

    >>> import numpy as np, smnn
    >>> coef = np.array([0.23, -1.0, 0.0]).reshape(1, 1, 1, 3)   # c0 x - x' = 0
    >>> u = smnn.ode_forward(coef, np.zeros((1, 1)), np.full((1, 1, 1), 4.78),
    ...                      np.full(999, 0.01), n_steps=1000)
    >>> u.shape
    (1000, 1, 3)
    >>> t = 0.01 * np.arange(1000)
    >>> exact = 4.78 * np.exp(0.23 * t)
    >>> print(f"{np.abs(u[:, 0, 0] - exact).max() / exact.max():.1e}")  # the paper's 2.0e-6
    2.0e-06

    A batch of systems sharing one set of steps:

    >>> rng = np.random.default_rng(0)
    >>> coef = rng.standard_normal((8, 50, 2, 2, 3))
    >>> u = smnn.ode_forward(coef, rng.standard_normal((8, 50, 2)),
    ...                      rng.standard_normal((8, 1, 2, 1)), np.full(49, 0.1))
    >>> u.shape
    (8, 50, 2, 3)
    """
    plan, rhs, init = _plan_for_data(
        coefficients, rhs_equation, init_vars, steps, n_steps=n_steps,
        n_init_var_steps=n_init_var_steps, is_step_dim_first=is_step_dim_first,
        weights=(weight_equation, weight_init_var, weight_smooth),
        enable_central_smoothness=enable_central_smoothness, backend=backend,
        check_finite=check_finite,
    )
    batch = P.check_rhs(plan, rhs, init)
    b = _assembly.assemble_rhs(plan, rhs, init, batch, plan.dtype)
    done = _assembly.assemble_solve(plan, batch, b)
    if done:
        x = b
    else:
        if done is None:  # a pivot failed and b was overwritten
            b = _assembly.assemble_rhs(plan, rhs, init, batch, plan.dtype)
        bands = _assembly.assemble_bands(plan)
        with _explain_not_positive_definite(plan):
            x = bandsolve.solve(bands, b, overwrite_bands=True, overwrite_b=True,
                                check_finite=False, backend=plan.backend)
    u = x.reshape(batch + (plan.T, plan.D, plan.O))
    return _to_step_first(plan.xp, u, 3, is_step_dim_first)


def ode_vjp(coefficients, rhs_equation, init_vars, steps, *, n_steps=None,
            n_init_var_steps=None, is_step_dim_first=False, weight_equation=1.,
            weight_init_var=1., weight_smooth=1., enable_central_smoothness=False,
            backend="auto", check_finite=True):
    """Solve as :func:`ode_forward` and return its vector-Jacobian product.

    Arguments as in :func:`ode_forward`.

    Returns
    -------
    u : array, shape (..., T, D, O)
        The solution.
    vjp : callable
        ``vjp(g) -> (d_coefficients, d_rhs_equation, d_init_vars, d_steps)``
        for a cotangent ``g`` of the shape of ``u``: the gradients of
        ``sum(g * u)`` with respect to the four inputs, each of its input's
        shape and dtype (broadcast dimensions summed), in the input's layout.
        It reuses the factor of M (one more banded solve) and may be called
        any number of times. Weights get no gradient.

    Examples
    --------
    >>> import numpy as np, smnn
    >>> rng = np.random.default_rng(1)
    >>> coef, rhs = rng.standard_normal((2, 20, 1, 1, 3)), rng.standard_normal((2, 20, 1))
    >>> init, steps = np.ones((2, 1, 1, 1)), np.full(19, 0.05)    # steps shared
    >>> u, vjp = smnn.ode_vjp(coef, rhs, init, steps)
    >>> d_coef, d_rhs, d_init, d_steps = vjp(np.ones_like(u))
    >>> d_coef.shape, d_rhs.shape, d_init.shape, d_steps.shape
    ((2, 20, 1, 1, 3), (2, 20, 1), (2, 1, 1, 1), (19,))
    """
    plan, rhs, init = _plan_for_data(
        coefficients, rhs_equation, init_vars, steps, n_steps=n_steps,
        n_init_var_steps=n_init_var_steps, is_step_dim_first=is_step_dim_first,
        weights=(weight_equation, weight_init_var, weight_smooth),
        enable_central_smoothness=enable_central_smoothness, backend=backend,
        check_finite=check_finite,
    )
    solver = ODESolver._from_plan(plan, is_step_dim_first)
    return solver._solve_vjp_loaded(rhs, init, (rhs_equation, init_vars))


def ode_adjoint(coefficients, rhs_equation, init_vars, steps, u, g, *, n_steps=None,
                n_init_var_steps=None, is_step_dim_first=False, weight_equation=1.,
                weight_init_var=1., weight_smooth=1., enable_central_smoothness=False,
                backend="auto"):
    """Gradients of :func:`ode_forward` for a cotangent ``g``, given its output ``u``.

    What ``vjp(g)`` of :func:`ode_vjp` returns, for callers that kept the
    forward's solution instead of the closure (autograd backward passes): M
    is assembled again and ``b_bar = M^{-1} g`` comes from one fused factor +
    solve, with no factor written out and no second solve for ``u``. The
    inputs are assumed finite (the forward checked them).

    Parameters
    ----------
    coefficients, rhs_equation, init_vars, steps, n_steps, n_init_var_steps,
    is_step_dim_first, weight_equation, weight_init_var, weight_smooth,
    enable_central_smoothness, backend
        As given to :func:`ode_forward` for the forward.
    u : array, shape (..., T, D, O)
        Its result.
    g : array, shape of ``u``
        Cotangent of ``u``.

    Returns
    -------
    d_coefficients, d_rhs_equation, d_init_vars, d_steps : arrays
        As ``vjp(g)`` of :func:`ode_vjp`.

    Raises
    ------
    ValueError
        ``u`` or ``g`` not of the shape of the solution.

    Examples
    --------
    >>> import numpy as np, smnn
    >>> rng = np.random.default_rng(1)
    >>> coef, rhs = rng.standard_normal((2, 20, 1, 1, 3)), rng.standard_normal((2, 20, 1))
    >>> init, steps = np.ones((2, 1, 1, 1)), np.full(19, 0.05)
    >>> u = smnn.ode_forward(coef, rhs, init, steps)
    >>> grads = smnn.ode_adjoint(coef, rhs, init, steps, u, np.ones_like(u))
    >>> _, vjp = smnn.ode_vjp(coef, rhs, init, steps)
    >>> all(np.allclose(a, b) for a, b in zip(grads, vjp(np.ones_like(u))))
    True
    """
    plan, rhs, init = _plan_for_data(
        coefficients, rhs_equation, init_vars, steps, n_steps=n_steps,
        n_init_var_steps=n_init_var_steps, is_step_dim_first=is_step_dim_first,
        weights=(weight_equation, weight_init_var, weight_smooth),
        enable_central_smoothness=enable_central_smoothness, backend=backend,
        check_finite=False,
    )
    p, xp = plan, plan.xp
    batch = P.check_rhs(p, rhs, init)
    dtype = np.result_type(p.dtype, rhs.dtype, init.dtype)
    shape = batch + (p.T, p.D, p.O)
    if is_step_dim_first:
        shape = (p.T,) + batch + (p.D, p.O)
    u, g = _arrays.asarray(u, xp), _arrays.asarray(g, xp)
    for name, a in (("u", u), ("g", g)):
        if tuple(a.shape) != shape:
            raise ValueError(f"{name} must have the shape of the solution {shape}; "
                             f"got {tuple(a.shape)}")
    if is_step_dim_first:
        u = xp.moveaxis(u, 0, u.ndim - 3)
        g = xp.moveaxis(g, 0, g.ndim - 3)
    u_flat = xp.ascontiguousarray(u, dtype=dtype).reshape(batch + (p.T, p.D, p.O))
    bbar = xp.array(g, dtype=dtype, order="C", copy=True).reshape(batch + (p.T, p.k))
    done = _assembly.assemble_solve(p, batch, bbar)
    if not done:
        if done is None:  # a pivot failed and bbar was overwritten
            bbar = xp.array(g, dtype=dtype, order="C", copy=True).reshape(batch + (p.T, p.k))
        bands = _assembly.assemble_bands(p)
        with _explain_not_positive_definite(p):
            bbar = bandsolve.solve(bands, bbar, overwrite_bands=True, overwrite_b=True,
                                   check_finite=False, backend=p.backend)
    dtypes = tuple(_arrays.asarray(a, xp).dtype for a in (rhs_equation, init_vars))
    return _gradients(p, rhs, init, u_flat, bbar.reshape(u_flat.shape),
                      (tuple(rhs.shape), tuple(init.shape)), dtypes, bool(is_step_dim_first))


def _gradients(p, rhs, init, u, bbar, shapes, dtypes, step_first):
    """The four input gradients from u and b_bar = M^{-1} g (batch-first,
    (..., T, D, O)): summed to each input's shape, in its dtype and layout."""
    xp = p.xp
    d_coef, d_rhs, d_init, d_steps = _assembly.gradients(p, rhs, init, u, bbar)
    d_coef = _sum_to_shape(d_coef, p.coef_shape).astype(p.coef_dtype, copy=False)
    d_rhs = _sum_to_shape(d_rhs, shapes[0]).astype(dtypes[0], copy=False)
    d_init = _sum_to_shape(d_init, shapes[1]).astype(dtypes[1], copy=False)
    d_steps = _sum_to_shape(d_steps, p.steps_shape).astype(p.steps_dtype, copy=False)
    return (
        _to_step_first(xp, d_coef, 4, step_first),
        _to_step_first(xp, d_rhs, 2, step_first),
        _to_step_first(xp, d_init, 3, step_first),
        _to_step_first(xp, d_steps, 1, step_first),
    )


class ODESolver:
    """The S-MNN system with M factored once, for many right-hand sides.

    M depends on the coefficients, the steps, the weights and the pattern of
    the initial-value rows (Ti, Oi), not on ``rhs_equation`` or
    ``init_vars``: build a solver once and call :meth:`solve` /
    :meth:`solve_vjp` for new data without refactoring. There is no hidden
    cache: the solver object is the reuse.

    Parameters
    ----------
    coefficients : array, shape (..., T, E, D, O)
    steps : array, shape (..., T-1)
    n_steps : int, optional
        T when it cannot be inferred from ``coefficients`` and ``steps``.
    n_init_var_steps, n_init_var_orders : int, optional
        Ti and Oi of the ``init_vars`` the solver will take (default 1, 1).
    is_step_dim_first, weight_equation, weight_init_var, weight_smooth,
    enable_central_smoothness, backend, check_finite
        As in :func:`ode_forward`.

    Attributes
    ----------
    factor : bandsolve.BandedCholesky
        The Cholesky factor of M (batch of coefficients, steps and weights).
    batch_shape : tuple
        Batch shape of M.
    n_steps, n_equations, n_dims, n_orders : int
        T, E, D and O.

    Examples
    --------
    >>> import numpy as np, smnn
    >>> rng = np.random.default_rng(2)
    >>> coef, steps = rng.standard_normal((1, 2, 2, 3)), np.full(99, 0.02)
    >>> solver = smnn.ODESolver(coef, steps, n_steps=100)
    >>> solver
    ODESolver(batch_shape=(), n_steps=100, n_equations=2, n_dims=2, n_orders=3, n_init_var_steps=1, n_init_var_orders=1, central=False, backend='cpu')
    >>> rhs = rng.standard_normal((16, 1, 2))            # 16 right-hand sides, one factor
    >>> u = solver.solve(rhs, np.zeros((16, 1, 2, 1)))
    >>> u.shape
    (16, 100, 2, 3)
    >>> np.allclose(u[3], smnn.ode_forward(coef, rhs[3], np.zeros((1, 2, 1)), steps, n_steps=100))
    True
    """

    def __init__(self, coefficients, steps, *, n_steps=None, n_init_var_steps=1,
                 n_init_var_orders=1, is_step_dim_first=False, weight_equation=1.,
                 weight_init_var=1., weight_smooth=1., enable_central_smoothness=False,
                 backend="auto", check_finite=True):
        xp = _arrays.array_module(coefficients, steps)
        backend = _arrays.resolve_backend(backend, coefficients, steps)
        coef, h = _load(xp, (coefficients, steps), ("coefficients", "steps"), is_step_dim_first)
        n_steps = P.as_count_or_none(n_steps, "n_steps", 1)
        T = P.infer_size("the step dimension T", [
            ("coefficients", coef.shape[-4], 0), ("steps", h.shape[-1], 1)], n_steps)
        plan = P.make_plan(
            xp, coef, h, T=T, E=coef.shape[-3], D=coef.shape[-2],
            Ti=P.as_count(n_init_var_steps, "n_init_var_steps", 0),
            Oi=P.as_count(n_init_var_orders, "n_init_var_orders", 0),
            weights=(weight_equation, weight_init_var, weight_smooth),
            central=enable_central_smoothness, backend=backend,
            dtype=np.result_type(coef.dtype, h.dtype), is_step_dim_first=is_step_dim_first,
            check_finite=check_finite,
        )
        self._setup(plan, is_step_dim_first)

    @classmethod
    def _from_plan(cls, plan, is_step_dim_first):
        self = cls.__new__(cls)
        self._setup(plan, is_step_dim_first)
        return self

    def _setup(self, plan, is_step_dim_first):
        self._plan = plan
        self._step_first = bool(is_step_dim_first)
        L = _assembly.assemble_factor(plan)
        if L is not None:  # M assembled inside the factor kernel
            self.factor = _bandsolve_api._from_factor(L, backend=plan.backend)
            return
        bands = _assembly.assemble_bands(plan)
        with _explain_not_positive_definite(plan):
            self.factor = bandsolve.cholesky(bands, overwrite=True, check_finite=False,
                                             backend=plan.backend)

    # -- description
    @property
    def batch_shape(self):
        return self._plan.batch_shape

    @property
    def n_steps(self):
        return self._plan.T

    @property
    def n_equations(self):
        return self._plan.E

    @property
    def n_dims(self):
        return self._plan.D

    @property
    def n_orders(self):
        return self._plan.O

    def __repr__(self):
        p = self._plan
        return (
            f"ODESolver(batch_shape={p.batch_shape}, n_steps={p.T}, n_equations={p.E}, "
            f"n_dims={p.D}, n_orders={p.O}, n_init_var_steps={p.Ti}, "
            f"n_init_var_orders={p.Oi}, central={p.central}, backend={p.backend!r})"
        )

    # -- solving
    def _load_data(self, rhs_equation, init_vars):
        p = self._plan
        xp = _arrays.array_module(rhs_equation, init_vars)
        if xp is not p.xp:
            raise TypeError(
                "rhs_equation and init_vars must live where the solver's coefficients "
                f"do ({p.xp.__name__} arrays); got {type(rhs_equation).__name__} and "
                f"{type(init_vars).__name__}"
            )
        return _load(xp, (rhs_equation, init_vars), ("rhs_equation", "init_vars"),
                     self._step_first)

    def _solve_loaded(self, rhs, init):
        p = self._plan
        batch = P.check_rhs(p, rhs, init)
        dtype = np.result_type(p.dtype, rhs.dtype, init.dtype)
        b = _assembly.assemble_rhs(p, rhs, init, batch, dtype)
        x = self.factor.solve(b, overwrite_b=True, check_finite=False)
        return x.reshape(batch + (p.T, p.D, p.O)), batch, dtype

    def solve(self, rhs_equation, init_vars):
        """Solve for new data with the stored factor.

        Parameters
        ----------
        rhs_equation : array, shape (..., T, E)
        init_vars : array, shape (..., Ti, D, Oi)
            Ti and Oi as given to the solver (Ti may be 1 to broadcast).
            Batch dimensions broadcast against the solver's.

        Returns
        -------
        u : array, shape (..., T, D, O)
        """
        rhs, init = self._load_data(rhs_equation, init_vars)
        u, _, _ = self._solve_loaded(rhs, init)
        return _to_step_first(self._plan.xp, u, 3, self._step_first)

    def solve_vjp(self, rhs_equation, init_vars):
        """Solve and return the vector-Jacobian product, as :func:`ode_vjp`.

        Returns
        -------
        u : array, shape (..., T, D, O)
        vjp : callable
            ``vjp(g) -> (d_coefficients, d_rhs_equation, d_init_vars, d_steps)``,
            gradients with respect to the solver's coefficients and steps and to
            this call's data, each of its input's shape.

        Examples
        --------
        >>> import numpy as np, smnn
        >>> solver = smnn.ODESolver(np.ones((1, 1, 1, 2)), np.full(9, 0.1), n_steps=10)
        >>> u, vjp = solver.solve_vjp(np.zeros((10, 1)), np.ones((1, 1, 1)))
        >>> [a.shape for a in vjp(np.ones_like(u))]
        [(1, 1, 1, 2), (10, 1), (1, 1, 1), (9,)]
        """
        rhs, init = self._load_data(rhs_equation, init_vars)
        return self._solve_vjp_loaded(rhs, init, (rhs_equation, init_vars))

    def _solve_vjp_loaded(self, rhs, init, originals):
        p, xp, step_first = self._plan, self._plan.xp, self._step_first
        u, batch, dtype = self._solve_loaded(rhs, init)
        u_saved = u.copy()  # the caller may modify u; the vjp must not see it
        shapes = (tuple(rhs.shape), tuple(init.shape))
        dtypes = tuple(_arrays.asarray(a, xp).dtype for a in originals)
        factor = self.factor
        u_out = _to_step_first(xp, u, 3, step_first)

        def vjp(g):
            g = _arrays.asarray(g, xp)
            if tuple(g.shape) != tuple(u_out.shape):
                raise ValueError(
                    f"g must have the shape of u {tuple(u_out.shape)}; got {tuple(g.shape)}"
                )
            if step_first:
                g = xp.moveaxis(g, 0, g.ndim - 3)
            g = xp.array(g, dtype=dtype, order="C", copy=True).reshape(batch + (p.T, p.k))
            bbar = factor.solve(g, overwrite_b=True, check_finite=False)
            return _gradients(p, rhs, init, u_saved, bbar.reshape(u_saved.shape), shapes,
                              dtypes, step_first)

        return u_out, vjp
