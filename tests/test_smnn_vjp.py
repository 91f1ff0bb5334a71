"""smnn.ode_vjp / ODESolver.solve_vjp against the gradient of the dense reference.

The reference gradient is the complex-step derivative of the dense reference
(exact to round-off, independent of smnn's adjoint formulas); central finite
differences of ``smnn.ode_forward`` itself check the same gradients in random
directions.
"""

import numpy as np
import pytest

import smnn
from _helpers import dense_from_bands
from smnn_dense_reference import complex_step_gradient, dense_forward

NAMES = ("coefficients", "rhs_equation", "init_vars", "steps")


def rel_err(a, b):
    return np.linalg.norm(np.ravel(a - b)) / np.linalg.norm(np.ravel(b))


def dense_gradients(args, g, *, T, Ti, weights, central):
    """Complex-step gradients of sum(g * u) for each of the four inputs."""
    grads = []
    for i in range(4):
        def fun(x, i=i):
            a = list(args)
            a[i] = x
            return dense_forward(*a, T=T, Ti=Ti, weights=weights, central=central)
        grads.append(complex_step_gradient(fun, args[i], g))
    return grads


CASES = {
    # name: (batch shapes of coef, rhs, init, steps), T, E, D, O, Ti, Oi, central, per-row weights
    "plain": (((2,), (2,), (2,), (2,)), 5, 2, 2, 3, 1, 1, False, False),
    "central": (((2,), (2,), (2,), (2,)), 6, 1, 2, 4, 2, 2, True, True),
    "weights": (((), (), (), ()), 7, 2, 1, 3, 1, 2, False, True),
    "shared-steps": (((3,), (3,), (1,), ()), 5, 1, 2, 3, 1, 1, True, False),
    "broadcast-batch": (((2, 1), (1, 2), (), (2, 1)), 4, 2, 1, 3, 1, 1, False, True),
}


def build_case(name):
    (bc, br, bi, bs), T, E, D, O, Ti, Oi, central, per_row = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    args = (
        rng.standard_normal(bc + (T, E, D, O)),
        rng.standard_normal(br + (T, E)),
        rng.standard_normal(bi + (Ti, D, Oi)),
        rng.uniform(0.3, 0.7, bs + (T - 1,)),
    )
    if per_row:
        weights = (rng.uniform(0.5, 2, (T, E)), rng.uniform(0.5, 2, (Ti, D, Oi)),
                   rng.uniform(0.5, 2, (T - 1, D, O)))
    else:
        weights = (1.3, 0.7, 1.1)
    return args, weights, T, Ti, central


def kw(weights, central):
    return dict(weight_equation=weights[0], weight_init_var=weights[1],
                weight_smooth=weights[2], enable_central_smoothness=central)


@pytest.mark.parametrize("case", sorted(CASES))
def test_vjp_matches_complex_step_gradient_of_dense_reference(case):
    args, weights, T, Ti, central = build_case(case)
    u, vjp = smnn.ode_vjp(*args, **kw(weights, central))
    g = np.random.default_rng(1).standard_normal(u.shape)
    grads = vjp(g)
    ref = dense_gradients(args, g, T=T, Ti=Ti, weights=weights, central=central)
    for name, a, got, want in zip(NAMES, args, grads, ref):
        assert got.shape == a.shape and got.dtype == a.dtype, name
        assert rel_err(got, want) < 1e-9, name


@pytest.mark.parametrize("case", ["plain", "central", "broadcast-batch"])
def test_vjp_matches_central_finite_differences(case):
    args, weights, T, Ti, central = build_case(case)
    opts = kw(weights, central)
    u, vjp = smnn.ode_vjp(*args, **opts)
    rng = np.random.default_rng(2)
    g = rng.standard_normal(u.shape)
    grads = vjp(g)
    for i, name in enumerate(NAMES):
        v = rng.standard_normal(args[i].shape)
        eps = 1e-6 * max(1.0, np.abs(args[i]).max())
        if name == "steps":
            eps = 1e-7  # steps stay positive
        plus, minus = list(args), list(args)
        plus[i] = args[i] + eps * v
        minus[i] = args[i] - eps * v
        fd = (np.sum(g * smnn.ode_forward(*plus, **opts))
              - np.sum(g * smnn.ode_forward(*minus, **opts))) / (2 * eps)
        assert abs(np.sum(grads[i] * v) - fd) <= 1e-6 * max(abs(fd), 1.0), name


def test_constant_coefficients_gradients_sum_over_time():
    rng = np.random.default_rng(3)
    T, Ti = 6, 2
    args = (rng.standard_normal((2, 1, 1, 2, 3)), rng.standard_normal((1, 1)),
            rng.standard_normal((1, 2, 1)), np.array([0.4]))
    u, vjp = smnn.ode_vjp(*args, n_steps=T, n_init_var_steps=Ti)
    g = rng.standard_normal(u.shape)
    grads = vjp(g)
    ref = dense_gradients(args, g, T=T, Ti=Ti, weights=(1.0, 1.0, 1.0), central=False)
    for name, a, got, want in zip(NAMES, args, grads, ref):
        assert got.shape == a.shape, name
        assert rel_err(got, want) < 1e-9, name


def test_vjp_step_dim_first_layout():
    args, weights, T, Ti, central = build_case("plain")
    opts = kw(weights, central)
    u, vjp = smnn.ode_vjp(*args, **opts)
    g = np.random.default_rng(4).standard_normal(u.shape)
    grads = vjp(g)
    moved = [np.moveaxis(a, 1, 0) for a in args]
    u1, vjp1 = smnn.ode_vjp(*moved, is_step_dim_first=True, **opts)
    grads1 = vjp1(np.moveaxis(g, 1, 0))
    np.testing.assert_allclose(u1, np.moveaxis(u, 1, 0), rtol=1e-12, atol=1e-12)
    for name, a, b in zip(NAMES, grads, grads1):
        np.testing.assert_allclose(b, np.moveaxis(a, 1, 0), rtol=1e-11, atol=1e-12,
                                   err_msg=name)


def test_vjp_is_reusable_and_ignores_changes_to_u():
    args, weights, T, Ti, central = build_case("central")
    u, vjp = smnn.ode_vjp(*args, **kw(weights, central))
    g = np.ones_like(u)
    first = vjp(g)
    u[...] = 0.0
    second = vjp(g)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_ode_solver_solve_vjp_matches_ode_vjp():
    args, weights, T, Ti, central = build_case("central")
    coef, rhs, init, steps = args
    opts = kw(weights, central)
    solver = smnn.ODESolver(coef, steps, n_init_var_steps=Ti, n_init_var_orders=init.shape[-1],
                            **opts)
    u, vjp = solver.solve_vjp(rhs, init)
    u_ref, vjp_ref = smnn.ode_vjp(*args, **opts)
    np.testing.assert_allclose(u, u_ref, rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(5).standard_normal(u.shape)
    for name, a, b in zip(NAMES, vjp(g), vjp_ref(g)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12, err_msg=name)


def test_float32_gradients_keep_input_dtypes():
    args, weights, T, Ti, central = build_case("plain")
    args32 = [a.astype(np.float32) for a in args]
    u, vjp = smnn.ode_vjp(*args32, **kw(weights, central))
    grads = vjp(np.ones_like(u))
    assert u.dtype == np.float32
    assert all(gr.dtype == np.float32 for gr in grads)
    _, vjp64 = smnn.ode_vjp(*(a.astype(np.float64) for a in args32), **kw(weights, central))
    for name, a, b in zip(NAMES, grads, vjp64(np.ones(u.shape))):
        assert rel_err(a.astype(np.float64), b) < 1e-3, name


def test_vjp_rejects_wrong_cotangent_shape():
    args, weights, T, Ti, central = build_case("plain")
    u, vjp = smnn.ode_vjp(*args)
    with pytest.raises(ValueError, match=r"g must have the shape of u \(2, 5, 2, 3\)"):
        vjp(np.ones((2, 5, 2, 2)))


# ---------------------------------------------------------------------------
# ode_adjoint: the same gradients from a kept u


@pytest.mark.parametrize("case", sorted(CASES))
def test_ode_adjoint_matches_dense_reference_and_vjp(case):
    args, weights, T, Ti, central = build_case(case)
    opts = kw(weights, central)
    u = smnn.ode_forward(*args, **opts)
    g = np.random.default_rng(2).standard_normal(u.shape)
    before = [a.copy() for a in args + (u, g)]
    grads = smnn.ode_adjoint(*args, u, g, **opts)
    for a, b in zip(args + (u, g), before):
        np.testing.assert_array_equal(a, b)  # nothing overwritten
    ref = dense_gradients(args, g, T=T, Ti=Ti, weights=weights, central=central)
    _, vjp = smnn.ode_vjp(*args, **opts)
    for name, a, got, want, v in zip(NAMES, args, grads, ref, vjp(g)):
        assert got.shape == a.shape and got.dtype == a.dtype, name
        assert rel_err(got, want) < 1e-9, name
        np.testing.assert_allclose(got, v, rtol=1e-10, atol=1e-12 * np.abs(v).max(), err_msg=name)


def test_ode_adjoint_step_dim_first_and_float32():
    args, weights, T, Ti, central = build_case("plain")
    opts = kw(weights, central)
    u = smnn.ode_forward(*args, **opts)
    g = np.random.default_rng(4).standard_normal(u.shape)
    grads = smnn.ode_adjoint(*args, u, g, **opts)
    moved = [np.moveaxis(a, 1, 0) for a in args]
    grads1 = smnn.ode_adjoint(*moved, np.moveaxis(u, 1, 0), np.moveaxis(g, 1, 0),
                              is_step_dim_first=True, **opts)
    for name, a, b in zip(NAMES, grads, grads1):
        np.testing.assert_allclose(b, np.moveaxis(a, 1, 0), rtol=1e-11, atol=1e-12,
                                   err_msg=name)
    args32 = [a.astype(np.float32) for a in args]
    u32 = smnn.ode_forward(*args32, **opts)
    grads32 = smnn.ode_adjoint(*args32, u32, np.ones_like(u32), **opts)
    assert all(gr.dtype == np.float32 for gr in grads32)
    for name, a, b in zip(NAMES, grads32, smnn.ode_adjoint(*args, u, np.ones(u.shape), **opts)):
        assert rel_err(a.astype(np.float64), b) < 1e-3, name


def test_ode_adjoint_one_long_sequence(monkeypatch):
    """B = 1 and T long: b_bar comes from the partitioned factor + solve."""
    from bandsolve import cpu

    calls = []
    original = cpu.factor_solve_partitioned
    monkeypatch.setattr(cpu, "PARTITION_MIN_FLOPS", 0.0)
    monkeypatch.setattr(cpu, "factor_solve_partitioned",
                        lambda *a: calls.append(a[2]) or original(*a))
    rng = np.random.default_rng(6)
    T = 300
    args = (rng.standard_normal((T, 2, 2, 3)), rng.standard_normal((T, 2)),
            rng.standard_normal((1, 2, 1)), rng.uniform(0.005, 0.015, T - 1))
    u = smnn.ode_forward(*args)
    g = rng.standard_normal(u.shape)
    calls.clear()
    grads = smnn.ode_adjoint(*args, u, g)
    assert calls
    _, vjp = smnn.ode_vjp(*args)
    # Both solves are backward stable but eliminate in different orders (the
    # partitioned one separators last), so they agree to kappa(M) eps, and
    # steps of 0.01 make M ill-conditioned (kappa about 1e9).
    M = smnn.ode_system(*args)[0]
    ev = np.linalg.eigvalsh(dense_from_bands(M))
    tol = 10 * ev[-1] / ev[0] * np.finfo(float).eps
    for name, a, b in zip(NAMES, grads, vjp(g)):
        assert rel_err(a, b) < tol, name


def test_ode_adjoint_rejects_wrong_shapes():
    args, weights, T, Ti, central = build_case("plain")
    u = smnn.ode_forward(*args)
    with pytest.raises(ValueError, match=r"g must have the shape of the solution "
                                         r"\(2, 5, 2, 3\); got \(2, 5, 2, 2\)"):
        smnn.ode_adjoint(*args, u, np.ones((2, 5, 2, 2)))
    with pytest.raises(ValueError, match=r"u must have the shape of the solution "
                                         r"\(2, 5, 2, 3\); got \(5, 2, 3\)"):
        smnn.ode_adjoint(*args, u[0], np.ones_like(u))
