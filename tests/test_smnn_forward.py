"""smnn.ode_forward / ode_system / ODESolver against the dense reference."""

import numpy as np
import pytest

import smnn
from smnn_dense_reference import (
    dense_bands,
    dense_forward,
    dense_normal_equations,
    dense_solve_item,
)

# (E, D, O, Ti, Oi). The forward and backward Taylor rows of a step are
# equivalent constraints (the truncated Taylor shift is exact on polynomials
# of degree < O), so M is nonsingular only when T*E + Ti*D*Oi >= D*O: every
# size below satisfies that from T = 2 on.
SIZES = [(1, 1, 2, 1, 1), (2, 2, 3, 1, 1), (3, 3, 3, 2, 2), (2, 1, 4, 3, 4), (3, 2, 5, 1, 3)]
EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps


def make_problem(rng, batch, T, E, D, O, Ti, Oi, dtype=np.float64, step_range=(0.2, 0.6)):
    coef = rng.standard_normal(batch + (T, E, D, O))
    rhs = rng.standard_normal(batch + (T, E))
    init = rng.standard_normal(batch + (Ti, D, Oi))
    steps = rng.uniform(*step_range, size=batch + (T - 1,))
    return tuple(a.astype(dtype) for a in (coef, rhs, init, steps))


def make_weights(rng, kind, T, E, D, O, Ti, Oi, batch=()):
    if kind == "scalar":
        return (1.7, 0.6, 1.3)
    return (
        rng.uniform(0.5, 2.0, batch + (T, E)),
        rng.uniform(0.5, 2.0, (Ti, D, Oi)),
        rng.uniform(0.5, 2.0, (T - 1, D, O)),
    )


def rel_err(a, b):
    return np.linalg.norm(np.ravel(a - b)) / np.linalg.norm(np.ravel(b))


def _kw(weights, central):
    return dict(weight_equation=weights[0], weight_init_var=weights[1],
                weight_smooth=weights[2], enable_central_smoothness=central)


# Central smoothness needs O >= 3: those combinations are left out.
GRID = [(sizes, T, kind, central) for sizes in SIZES for T in (2, 3, 17)
        for kind in ("scalar", "per-row") for central in (False, True)
        if not (central and sizes[2] < 3)]


@pytest.mark.parametrize("sizes, T, weights_kind, central", GRID,
                         ids=["E%dD%dO%dTi%dOi%d-T%d-%s-%s" % (*g[0], g[1], g[2],
                                                             "central" if g[3] else "taylor")
                              for g in GRID])
def test_forward_matches_dense_reference(sizes, T, weights_kind, central):
    E, D, O, Ti, Oi = sizes
    Ti = min(Ti, T)
    rng = np.random.default_rng([T, E, D, O, Ti, Oi, central])
    coef, rhs, init, steps = make_problem(rng, (2,), T, E, D, O, Ti, Oi)
    weights = make_weights(rng, weights_kind, T, E, D, O, Ti, Oi, batch=(2,))
    u = smnn.ode_forward(coef, rhs, init, steps, **_kw(weights, central))
    ref = dense_forward(coef, rhs, init, steps, T=T, Ti=Ti, weights=weights, central=central)
    assert u.shape == (2, T, D, O) and u.dtype == np.float64
    assert rel_err(u, ref) < 1e-10


@pytest.mark.parametrize("central", [False, True])
def test_ode_system_bands_are_the_dense_normal_equations(central):
    rng = np.random.default_rng(3)
    T, E, D, O, Ti, Oi = 6, 2, 2, 4, 2, 3
    coef, rhs, init, steps = make_problem(rng, (), T, E, D, O, Ti, Oi)
    weights = make_weights(rng, "per-row", T, E, D, O, Ti, Oi)
    bands, b = smnn.ode_system(coef, rhs, init, steps, **_kw(weights, central))
    w = 2 if central else 1
    k = D * O
    assert bands.shape == (w + 1, T, k, k) and b.shape == (T, k)
    M, b_ref = dense_normal_equations(
        coef, rhs, init, steps, *(np.broadcast_to(x, s) for x, s in zip(
            weights, [(T, E), (Ti, D, Oi), (T - 1, D, O)])), central)
    # The dense M really is block banded with bandwidth w ...
    for i in range(T):
        for j in range(T):
            if abs(i - j) > w:
                assert not M[i * k:(i + 1) * k, j * k:(j + 1) * k].any()
    # ... and the stored band holds exactly its lower blocks (padding zero).
    np.testing.assert_allclose(bands, dense_bands(M, T, k, w), rtol=1e-13, atol=1e-13 * abs(M).max())
    np.testing.assert_allclose(b, b_ref.reshape(T, k), rtol=1e-13, atol=1e-13 * abs(b_ref).max())


def test_batch_broadcasting_and_shared_steps():
    rng = np.random.default_rng(4)
    T, E, D, O, Ti, Oi = 9, 2, 2, 3, 1, 2
    coef = rng.standard_normal((3, 1, T, E, D, O))
    rhs = rng.standard_normal((1, 4, T, E))
    init = rng.standard_normal((Ti, D, Oi))
    steps = rng.uniform(0.2, 0.5, T - 1)  # one set of steps for the whole batch
    weights = (rng.uniform(0.5, 2, (4, 1, E)), 0.8, rng.uniform(0.5, 2, (3, 1, 1, D, 1)))
    u = smnn.ode_forward(coef, rhs, init, steps, **_kw(weights, False))
    assert u.shape == (3, 4, T, D, O)
    ref = dense_forward(coef, rhs, init, steps, T=T, Ti=Ti, weights=weights)
    assert rel_err(u, ref) < 1e-10


def test_constant_coefficients_broadcast_over_time():
    rng = np.random.default_rng(5)
    T, E, D, O = 12, 2, 2, 3
    coef = rng.standard_normal((2, 1, E, D, O))  # constant in time
    rhs = rng.standard_normal((1, E))
    init = rng.standard_normal((1, D, 1))
    steps = np.array([0.3])  # one step size, broadcast
    u = smnn.ode_forward(coef, rhs, init, steps, n_steps=T, n_init_var_steps=2)
    ref = dense_forward(coef, rhs, init, steps, T=T, Ti=2)
    assert u.shape == (2, T, D, O)
    assert rel_err(u, ref) < 1e-10


def test_equation_and_dimension_broadcast():
    rng = np.random.default_rng(6)
    T, D, O = 7, 3, 3
    coef = rng.standard_normal((T, 1, D, O))  # one coefficient row for E = 2 right-hand sides
    rhs = rng.standard_normal((T, 2))
    init = rng.standard_normal((1, 1, 2))  # same initial value for every dimension
    steps = rng.uniform(0.2, 0.5, T - 1)
    u = smnn.ode_forward(coef, rhs, init, steps)
    ref = dense_forward(coef, rhs, init, steps, T=T, Ti=1)
    assert u.shape == (T, D, O)
    assert rel_err(u, ref) < 1e-10


@pytest.mark.parametrize("central", [False, True])
def test_is_step_dim_first(central):
    rng = np.random.default_rng(7)
    T, E, D, O, Ti, Oi = 8, 2, 2, 3, 2, 1
    coef, rhs, init, steps = make_problem(rng, (3,), T, E, D, O, Ti, Oi)
    w_eq = rng.uniform(0.5, 2, (3, T, E))
    u = smnn.ode_forward(coef, rhs, init, steps, weight_equation=w_eq,
                         enable_central_smoothness=central)
    first = smnn.ode_forward(
        np.moveaxis(coef, 1, 0), np.moveaxis(rhs, 1, 0), np.moveaxis(init, 1, 0),
        np.moveaxis(steps, 1, 0), is_step_dim_first=True,
        weight_equation=np.moveaxis(w_eq, 1, 0), enable_central_smoothness=central)
    assert first.shape == (T, 3, D, O)
    np.testing.assert_allclose(first, np.moveaxis(u, 1, 0), rtol=1e-12, atol=1e-12)
    ref = dense_forward(coef, rhs, init, steps, T=T, Ti=Ti, weights=(w_eq, 1.0, 1.0),
                        central=central)
    assert rel_err(u, ref) < 1e-10


def test_single_step_and_empty_batch():
    rng = np.random.default_rng(8)
    D, O = 2, 3
    coef = rng.standard_normal((1, 2, D, O))
    rhs = rng.standard_normal((1, 2))
    init = rng.standard_normal((1, D, O))
    u = smnn.ode_forward(coef, rhs, init, np.zeros((0,)))  # T = 1: no smoothness rows
    ref = dense_forward(coef, rhs, init, np.zeros((0,)), T=1, Ti=1)
    assert u.shape == (1, D, O) and rel_err(u, ref) < 1e-12
    empty = smnn.ode_forward(np.zeros((0, 5, 1, D, O)), np.zeros((0, 5, 1)),
                             np.zeros((0, 1, D, 1)), np.ones((0, 4)))
    assert empty.shape == (0, 5, D, O)


def test_non_contiguous_and_fortran_inputs():
    rng = np.random.default_rng(9)
    T, E, D, O, Ti, Oi = 10, 2, 2, 3, 1, 1
    coef, rhs, init, steps = make_problem(rng, (2,), T, E, D, O, Ti, Oi)
    big = np.zeros((2, 2 * T, E, D, O))
    big[:, ::2] = coef
    u = smnn.ode_forward(big[:, ::2], np.asfortranarray(rhs), init, steps[:, ::-1][:, ::-1])
    ref = dense_forward(coef, rhs, init, steps, T=T, Ti=Ti)
    assert rel_err(u, ref) < 1e-10


def test_inputs_are_not_modified():
    rng = np.random.default_rng(10)
    args = make_problem(rng, (2,), 6, 1, 2, 3, 1, 1)
    copies = [a.copy() for a in args]
    u, vjp = smnn.ode_vjp(*args)
    vjp(np.ones_like(u))
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


def test_float32_within_condition_number_bound():
    rng = np.random.default_rng(11)
    T, E, D, O, Ti, Oi = 12, 2, 2, 3, 1, 1
    coef, rhs, init, steps = make_problem(rng, (), T, E, D, O, Ti, Oi, step_range=(0.4, 0.8))
    args32 = [a.astype(np.float32) for a in (coef, rhs, init, steps)]
    u32 = smnn.ode_forward(*args32)
    assert u32.dtype == np.float32
    # Reference: the float32 inputs, solved exactly (float64).
    ref = dense_forward(*(a.astype(np.float64) for a in args32), T=T, Ti=Ti)
    M, _ = dense_normal_equations(*(a.astype(np.float64) for a in args32), np.ones((T, E)),
                                  np.ones((Ti, D, Oi)), np.ones((T - 1, D, O)), False)
    kappa = np.linalg.cond(M)
    # Forward error <= kappa * (backward error of the assembly, ~ (E + 2 O) eps,
    # plus that of the banded Cholesky, ~ (w+1) k eps); factor 2 for the solve.
    k, w = D * O, 1
    bound = 2 * kappa * ((w + 1) * k + E + 2 * O) * EPS32
    assert kappa < 1e4  # the problem is well enough conditioned for float32
    assert rel_err(u32.astype(np.float64), ref) < bound


def test_mixed_precision_promotes():
    rng = np.random.default_rng(12)
    coef, rhs, init, steps = make_problem(rng, (), 5, 1, 1, 2, 1, 1)
    u = smnn.ode_forward(coef.astype(np.float32), rhs, init, steps.astype(np.float32))
    assert u.dtype == np.float64


@pytest.mark.parametrize("central", [False, True])
def test_ode_solver_reuses_the_factor(central):
    rng = np.random.default_rng(13)
    T, E, D, O, Ti, Oi = 11, 2, 2, 3, 2, 2
    coef = rng.standard_normal((2, T, E, D, O))
    steps = rng.uniform(0.2, 0.5, T - 1)
    solver = smnn.ODESolver(coef, steps, n_init_var_steps=Ti, n_init_var_orders=Oi,
                            weight_smooth=0.7, enable_central_smoothness=central)
    assert solver.batch_shape == (2,) and solver.n_steps == T
    assert solver.factor.bandwidth == (2 if central else 1)
    for trial in range(2):
        rhs = rng.standard_normal((5, 2, T, E))  # more right-hand sides than matrices
        init = rng.standard_normal((5, 1, Ti, D, Oi))
        u = solver.solve(rhs, init)
        assert u.shape == (5, 2, T, D, O)
        direct = smnn.ode_forward(coef, rhs, init, steps, weight_smooth=0.7,
                                  enable_central_smoothness=central)
        np.testing.assert_allclose(u, direct, rtol=1e-12, atol=1e-12)
        for i in range(5):
            for j in range(2):
                ref = dense_solve_item(coef[j], rhs[i, j], init[i, 0], steps,
                                       np.ones((T, E)), np.ones((Ti, D, Oi)),
                                       np.full((T - 1, D, O), 0.7), central)
                assert rel_err(u[i, j], ref) < 1e-10


def test_ode_solver_step_dim_first_and_repr():
    rng = np.random.default_rng(14)
    T, E, D, O = 6, 1, 1, 3
    coef = rng.standard_normal((T, 2, E, D, O))
    steps = np.full((T - 1, 2), 0.25)
    solver = smnn.ODESolver(coef, steps, is_step_dim_first=True)
    rhs = rng.standard_normal((T, 2, E))
    init = rng.standard_normal((1, 2, D, 1))
    u = solver.solve(rhs, init)
    assert u.shape == (T, 2, D, O)
    ref = smnn.ode_forward(coef, rhs, init, steps, is_step_dim_first=True)
    np.testing.assert_allclose(u, ref, rtol=1e-12, atol=1e-12)
    assert "n_steps=6" in repr(solver) and "backend='cpu'" in repr(solver)


def test_small_batches_restore_the_thread_count():
    import numba

    rng = np.random.default_rng(15)
    before = numba.get_num_threads()
    args = make_problem(rng, (1,), 8, 1, 1, 3, 1, 1)
    u, vjp = smnn.ode_vjp(*args)
    vjp(np.ones_like(u))
    assert numba.get_num_threads() == before
    ref = dense_forward(*args, T=8, Ti=1)
    assert rel_err(u, ref) < 1e-10
