"""smnn's fused assemble + factor + solve (no band array) against the band path.

``ode_forward`` and ``ode_adjoint`` take the fused kernel on NumPy input when
the batch fills the lanes of every thread and every item has its own matrix;
otherwise, and when a pivot fails, the band path (``ode_system`` then
``bandsolve.solve``). The band path is tested against dense references
elsewhere; here the fused one must match it, through the public functions
and through the kernel in both of its forms (packed factor, coupling blocks).
"""

import numba
import numpy as np
import pytest

import bandsolve
import smnn
from smnn import _assembly, _cpu

LANES = _cpu.LANES


def batch_for_fused():
    """Enough items for the fused path with every thread, and a partial chunk."""
    return 2 * numba.get_num_threads() * LANES + 3


def problem(rng, B, T, E=3, D=2, O=3, Tc=None, dtype=np.float64):
    coef = rng.standard_normal((B, Tc or T, E, D, O)).astype(dtype)
    rhs = rng.standard_normal((B, T, E)).astype(dtype)
    init = rng.standard_normal((B, 1, D, 1)).astype(dtype)
    steps = rng.uniform(0.02, 0.08, (B, T - 1)).astype(dtype)
    return coef, rhs, init, steps


def band_path(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(_assembly, "assemble_solve", lambda plan, batch, b: False)
        return fn(*args, **kwargs)


def fused_calls(monkeypatch):
    calls = []
    real = _assembly.assemble_solve

    def spy(plan, batch, b):
        done = real(plan, batch, b)
        calls.append(done)
        return done

    monkeypatch.setattr(_assembly, "assemble_solve", spy)
    return calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("central", [False, True])
@pytest.mark.parametrize("Tc", [None, 1])
def test_forward_and_adjoint_match_band_path(monkeypatch, dtype, central, Tc):
    rng = np.random.default_rng(7)
    B, T = batch_for_fused(), 23
    O = 3
    coef, rhs, init, steps = problem(rng, B, T, O=O, Tc=Tc, dtype=dtype)
    if dtype == np.float32:  # larger steps: M well enough conditioned for single precision
        steps = (steps * 5).astype(dtype)
    kw = dict(enable_central_smoothness=central, weight_smooth=0.7,
              weight_equation=rng.uniform(0.5, 2.0, (B, T, 3)).astype(dtype))
    g = rng.standard_normal((B, T, 2, O)).astype(dtype)
    u_ref = band_path(monkeypatch, smnn.ode_forward, coef, rhs, init, steps, **kw)
    grads_ref = band_path(monkeypatch, smnn.ode_adjoint, coef, rhs, init, steps, u_ref, g, **kw)
    calls = fused_calls(monkeypatch)
    u = smnn.ode_forward(coef, rhs, init, steps, **kw)
    grads = smnn.ode_adjoint(coef, rhs, init, steps, u, g, **kw)
    assert calls == [True, True]  # both took the fused kernel
    tol = 200 * np.finfo(dtype).eps
    assert u.dtype == u_ref.dtype
    np.testing.assert_allclose(u, u_ref, rtol=tol, atol=tol * np.abs(u_ref).max())
    for name, a, b in zip(("coef", "rhs", "init", "steps"), grads, grads_ref):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("central", [False, True])
@pytest.mark.parametrize("nt_min_bytes", [0, 1 << 62], ids=["coupled", "packed"])
def test_kernel_forms_match_bandsolve(central, nt_min_bytes):
    """The kernel in both forms against bandsolve.solve of the assembled band."""
    rng = np.random.default_rng(8)
    B, T = LANES + 5, 31
    coef, rhs, init, steps = problem(rng, B, T)
    bands, b = smnn.ode_system(coef, rhs, init, steps, enable_central_smoothness=central)
    x_ref = bandsolve.solve(bands, b)
    plan, rhs_l, init_l = smnn._api._plan_for_data(
        coef, rhs, init, steps, n_steps=None, n_init_var_steps=None, is_step_dim_first=False,
        weights=(1.0, 1.0, 1.0), enable_central_smoothness=central, backend="auto",
        check_finite=True)
    (c, ci), (s, si), (we, wei), (wi, wii), (ws, wsi) = _assembly._kernel_inputs(
        plan, (B,), plan.dtype, flat_coef=True)
    F = _cpu.taylor_table(plan.O, plan.n_smooth_orders, plan.dtype)
    X = b.reshape(B, T, plan.k, 1).copy()
    info = np.zeros(B, dtype=np.int64)
    _cpu.assemble_solve(c, ci, s, si, we, wei, wi, wii, ws, wsi, F, plan.central, X, info, 2,
                        nt_min_bytes)
    assert not info.any()
    tol = 1e3 * np.finfo(np.float64).eps
    np.testing.assert_allclose(X[..., 0], x_ref, rtol=tol, atol=tol * np.abs(x_ref).max())


def test_shared_matrix_and_small_batch_take_band_path(monkeypatch):
    rng = np.random.default_rng(9)
    B, T = batch_for_fused(), 12
    coef, rhs, init, steps = problem(rng, B, T)
    calls = fused_calls(monkeypatch)
    smnn.ode_forward(coef[:1], rhs, init, steps[:1])  # one matrix, B right-hand sides
    smnn.ode_forward(coef[:LANES], rhs[:LANES], init[:LANES], steps[:LANES])
    assert calls == [False, False]


def test_failed_pivot_falls_back_to_explained_error(monkeypatch):
    rng = np.random.default_rng(10)
    B, T = batch_for_fused(), 12
    coef, rhs, init, steps = problem(rng, B, T)
    coef[5] = 0.0  # item 5: no equation rows, and no smoothness rows below
    w_smooth = np.ones((B, 1, 1, 1))
    w_smooth[5] = 0.0
    calls = fused_calls(monkeypatch)
    with pytest.raises(bandsolve.LinAlgError, match=r"not positive definite \(batch index "
                       r"\(5,\), step t = 0, dimension d = 0, order o = 1\)"):
        smnn.ode_forward(coef, rhs, init, steps, weight_smooth=w_smooth)
    assert calls == [None]
    g = np.ones((B, T, 2, 3))
    u = np.zeros((B, T, 2, 3))
    with pytest.raises(bandsolve.LinAlgError, match=r"batch index \(5,\)"):
        smnn.ode_adjoint(coef, rhs, init, steps, u, g, weight_smooth=w_smooth)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("central", [False, True])
def test_solver_factor_assembled_in_kernel_matches_band_path(dtype, central):
    """ODESolver (and ode_vjp) factor M with its assembly inside the factor
    kernel: bitwise the factor of the assembled band, padding blocks zero."""
    rng = np.random.default_rng(11)
    B, T = batch_for_fused(), 19
    coef, rhs, init, steps = problem(rng, B, T, O=3, dtype=dtype)
    steps = (steps * 5).astype(dtype)
    kw = dict(enable_central_smoothness=central, weight_smooth=0.7,
              weight_equation=rng.uniform(0.5, 2.0, (B, T, 3)).astype(dtype))
    bands, b = smnn.ode_system(coef, rhs, init, steps, **kw)
    ref = bandsolve.cholesky(bands)
    plan, _, _ = smnn._api._plan_for_data(
        coef, rhs, init, steps, n_steps=None, n_init_var_steps=None, is_step_dim_first=False,
        weights=(kw["weight_equation"], 1.0, 0.7), enable_central_smoothness=central,
        backend="auto", check_finite=True)
    L = _assembly.assemble_factor(plan)  # the fused kernel is taken for this batch
    assert L is not None
    np.testing.assert_array_equal(L, ref.factor)
    solver = smnn.ODESolver(coef, steps, **kw)
    assert solver.factor.factor.dtype == dtype
    np.testing.assert_array_equal(solver.factor.factor, ref.factor)
    np.testing.assert_array_equal(solver.factor.info, 0)
    np.testing.assert_array_equal(solver.solve(rhs, init),
                                  ref.solve(b).reshape(B, T, 2, 3))
    u, vjp = smnn.ode_vjp(coef, rhs, init, steps, **kw)
    np.testing.assert_array_equal(u, ref.solve(b).reshape(B, T, 2, 3))


def test_solver_failed_pivot_falls_back_to_explained_error():
    rng = np.random.default_rng(12)
    B, T = batch_for_fused(), 12
    coef, rhs, init, steps = problem(rng, B, T)
    coef[4] = 0.0  # item 4: no equation rows, and no smoothness rows below
    w_smooth = np.ones((B, 1, 1, 1))
    w_smooth[4] = 0.0
    plan, _, _ = smnn._api._plan_for_data(
        coef, rhs, init, steps, n_steps=None, n_init_var_steps=None, is_step_dim_first=False,
        weights=(1.0, 1.0, w_smooth), enable_central_smoothness=False, backend="auto",
        check_finite=True)
    assert _assembly.assemble_factor(plan) is None
    with pytest.raises(bandsolve.LinAlgError, match=r"not positive definite \(batch index "
                       r"\(4,\), step t = 0, dimension d = 0, order o = 1\)"):
        smnn.ODESolver(coef, steps, weight_smooth=w_smooth)
