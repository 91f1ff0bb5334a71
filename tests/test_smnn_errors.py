"""Every caller mistake raises a clear error naming the argument and the shapes."""

import numpy as np
import pytest

import bandsolve
import smnn

T, E, D, O = 5, 2, 2, 3
RNG = np.random.default_rng(0)
COEF = RNG.standard_normal((T, E, D, O))
RHS = RNG.standard_normal((T, E))
INIT = RNG.standard_normal((1, D, 1))
STEPS = np.full(T - 1, 0.1)


def forward(coef=COEF, rhs=RHS, init=INIT, steps=STEPS, **kw):
    return smnn.ode_forward(coef, rhs, init, steps, **kw)


def solver(coef=COEF, steps=STEPS, **kw):
    return smnn.ODESolver(coef, steps, **kw)


def with_nan_at(a, index):
    a = a.copy()
    a[index] = np.nan
    return a


VALUE_ERRORS = {
    # ranks
    "coefficients-rank": (lambda: forward(coef=np.ones((E, D, O))),
                          r"coefficients must have shape \(\.\.\., T, E, D, O\) \(at least 4 "
                          r"dimensions\); got shape \(2, 2, 3\)"),
    "rhs-rank": (lambda: forward(rhs=np.ones(E)),
                 r"rhs_equation must have shape \(\.\.\., T, E\).*got shape \(2,\)"),
    "init-rank": (lambda: forward(init=np.ones((D, 1))),
                  r"init_vars must have shape \(\.\.\., Ti, D, Oi\).*got shape \(2, 1\)"),
    "steps-rank": (lambda: forward(steps=np.float64(0.1)),
                   r"steps must have shape \(\.\.\., T-1\) \(at least 1 dimension\); got shape \(\)"),
    "step-first-rank": (lambda: forward(coef=np.ones((E, D, O)), is_step_dim_first=True),
                        r"coefficients must have shape"),
    # sizes that disagree
    "T-mismatch": (lambda: forward(rhs=np.ones((4, E))),
                   r"step dimension T do not agree: coefficients implies 5, rhs_equation "
                   r"implies 4, steps implies 5"),
    "steps-length": (lambda: forward(steps=np.full(3, 0.1)), r"steps implies 4"),
    "n_steps-conflict": (lambda: forward(n_steps=6),
                         r"coefficients has size 5 along the step dimension T; with the step "
                         r"dimension T = 6 it must be 6 or 1"),
    "n_steps-zero": (lambda: forward(n_steps=0), r"n_steps must be an integer >= 1; got 0"),
    "n_steps-float": (lambda: forward(n_steps=5.0), r"n_steps must be an integer >= 1; got 5.0"),
    "E-mismatch": (lambda: forward(rhs=np.ones((T, 3))),
                   r"E \(equations\) do not agree: coefficients has E \(equations\) = 2, "
                   r"rhs_equation has E \(equations\) = 3"),
    "D-mismatch": (lambda: forward(init=np.ones((1, 3, 1))),
                   r"coefficients has D \(dimensions\) = 2, init_vars has D \(dimensions\) = 3"),
    "O-below-2": (lambda: forward(coef=np.ones((T, E, D, 1))),
                  r"at least 2 orders O .*got shape \(5, 2, 2, 1\) with O = 1"),
    "O-below-3-central": (lambda: forward(coef=np.ones((T, E, D, 2)), enable_central_smoothness=True),
                          r"at least 3 orders O with enable_central_smoothness=True; got shape "
                          r"\(5, 2, 2, 2\)"),
    "Ti-above-T": (lambda: forward(init=np.ones((6, D, 1))),
                   r"init_vars has Ti = 6 steps, more than the T = 5 steps"),
    "n_init_var_steps-above-T": (lambda: forward(n_init_var_steps=6), r"Ti = 6 steps, more than the T = 5"),
    "n_init_var_steps-conflict": (lambda: forward(init=np.ones((2, D, 1)), n_init_var_steps=3),
                                  r"init_vars has size 2 along the initial steps Ti; with the "
                                  r"initial steps Ti = 3 it must be 3 or 1"),
    "n_init_var_steps-negative": (lambda: forward(n_init_var_steps=-1),
                                  r"n_init_var_steps must be an integer >= 0; got -1"),
    "Oi-above-O": (lambda: forward(init=np.ones((1, D, 4))),
                   r"init_vars has Oi = 4 orders, more than the O = 3 orders"),
    "batch": (lambda: forward(coef=np.ones((2, T, E, D, O)), rhs=np.ones((3, T, E))),
              r"batch dimensions do not broadcast: coefficients, steps and weights \(2,\), "
              r"rhs_equation \(3,\), init_vars \(\)"),
    # step values
    "steps-zero": (lambda: forward(steps=np.array([0.1, 0.0, 0.1, 0.1])),
                   r"steps must be positive and finite; found 0.0 at index \(1,\) of shape \(4,\)"),
    "steps-negative": (lambda: forward(steps=-STEPS), r"found -0.1 at index \(0,\)"),
    "steps-nan": (lambda: forward(steps=with_nan_at(STEPS, 2)), r"found nan at index \(2,\)"),
    "steps-inf": (lambda: forward(steps=np.array([0.1, np.inf, 0.1, 0.1])), r"found inf"),
    # non-finite data
    "coefficients-nan": (lambda: forward(coef=with_nan_at(COEF, (1, 0, 0, 0))),
                         r"coefficients must not contain inf or NaN"),
    "rhs-inf": (lambda: forward(rhs=RHS * np.inf), r"rhs_equation must not contain inf or NaN"),
    "init-nan": (lambda: forward(init=INIT * np.nan), r"init_vars must not contain inf or NaN"),
    # weights
    "weight_equation-shape": (lambda: forward(weight_equation=np.ones(3)),
                              r"weight_equation must be a scalar or broadcastable to the rows it "
                              r"weights, \(\.\.\., T, E\) = \(\.\.\., 5, 2\); got shape \(3,\)"),
    "weight_init_var-shape": (lambda: forward(weight_init_var=np.ones(2)),
                              r"weight_init_var .*\(\.\.\., Ti, D, Oi\) = \(\.\.\., 1, 2, 1\); got shape \(2,\)"),
    "weight_smooth-shape": (lambda: forward(weight_smooth=np.ones((T, D, O))),
                            r"weight_smooth .*\(\.\.\., T-1, D, O\) = \(\.\.\., 4, 2, 3\); got "
                            r"shape \(5, 2, 3\)"),
    "weight-nan": (lambda: forward(weight_smooth=np.nan), r"weight_smooth must not contain inf or NaN"),
    "backend": (lambda: forward(backend="gpu"), r"backend must be one of"),
    # the solver's data
    "solver-Oi": (lambda: solver().solve(RHS, np.ones((1, D, 2))),
                  r"init_vars must have Oi = 1 orders in its last dimension; got shape \(1, 2, 2\)"),
    "solver-T": (lambda: solver().solve(np.ones((4, E)), INIT),
                 r"rhs_equation has T = 4 \(shape \(4, 2\)\); expected 5 or 1"),
    "solver-E": (lambda: solver().solve(np.ones((T, 3)), INIT),
                 r"rhs_equation has E = 3 \(shape \(5, 3\)\); expected 2 or 1"),
    "solver-D": (lambda: solver().solve(RHS, np.ones((1, 3, 1))),
                 r"init_vars has D = 3 \(shape \(1, 3, 1\)\); expected 2 or 1"),
    "solver-batch": (lambda: solver(coef=np.stack([COEF, COEF])).solve(np.ones((3, T, E)), INIT),
                     r"batch dimensions do not broadcast"),
    "solver-rhs-nan": (lambda: solver().solve(RHS * np.nan, INIT),
                       r"rhs_equation must not contain inf or NaN"),
    "solver-n_init_var_orders": (lambda: solver(n_init_var_orders=4),
                                 r"init_vars has Oi = 4 orders, more than the O = 3"),
    "solver-vjp-g": (lambda: solver().solve_vjp(RHS, INIT)[1](np.ones((T, D, 2))),
                     r"g must have the shape of u \(5, 2, 3\); got \(5, 2, 2\)"),
    "ode_system-rank": (lambda: smnn.ode_system(COEF, RHS, np.ones((D, 1)), STEPS),
                        r"init_vars must have shape"),
    "ode_vjp-steps": (lambda: smnn.ode_vjp(COEF, RHS, INIT, -STEPS), r"steps must be positive"),
}


@pytest.mark.parametrize("case", sorted(VALUE_ERRORS))
def test_value_errors(case):
    call, message = VALUE_ERRORS[case]
    with pytest.raises(ValueError, match=message):
        call()


TYPE_ERRORS = {
    "integer-coefficients": (lambda: forward(coef=COEF.astype(np.int64)),
                             r"coefficients must be a float32 or float64 array; got dtype int64"),
    "complex-rhs": (lambda: forward(rhs=RHS.astype(complex)),
                    r"rhs_equation must be a float32 or float64 array; got dtype complex128"),
    "float16-steps": (lambda: forward(steps=STEPS.astype(np.float16)),
                      r"steps must be a float32 or float64 array; got dtype float16"),
    "complex-weight": (lambda: forward(weight_smooth=1j),
                       r"weight_smooth must be real; got dtype complex128"),
    "solver-integer-init": (lambda: solver().solve(RHS, np.ones((1, D, 1), dtype=int)),
                            r"init_vars must be a float32 or float64 array"),
}


@pytest.mark.parametrize("case", sorted(TYPE_ERRORS))
def test_type_errors(case):
    call, message = TYPE_ERRORS[case]
    with pytest.raises(TypeError, match=message):
        call()


def test_not_positive_definite_names_step_dimension_and_order():
    with pytest.raises(bandsolve.LinAlgError, match=r"not positive definite \(step t = 0, "
                       r"dimension d = 0, order o = 0\)") as info:
        forward(weight_equation=0.0, weight_init_var=0.0, weight_smooth=0.0)
    assert info.value.order == 1
    assert isinstance(info.value, np.linalg.LinAlgError)
    # M is exactly zero in batch item 1 only: that item is named.
    coef = np.stack([COEF, np.zeros_like(COEF)])
    w_smooth = np.array([1.0, 0.0]).reshape(2, 1, 1, 1)
    with pytest.raises(bandsolve.LinAlgError, match=r"batch index \(1,\)"):
        smnn.ODESolver(coef, STEPS, n_init_var_orders=0, weight_smooth=w_smooth)


def test_check_finite_false_skips_value_checks_but_never_returns_silent_nan():
    # Negative steps are a valid (reversed) grid once the check is off.
    u = forward(steps=-STEPS, check_finite=False)
    assert np.isfinite(u).all()
    with pytest.raises(bandsolve.LinAlgError):
        forward(coef=with_nan_at(COEF, (0, 0, 0, 0)), check_finite=False)
