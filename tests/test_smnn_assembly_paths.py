"""The array-module (NumPy/CuPy) assembly and adjoint agree with the CPU kernels.

On NumPy input the public functions use the Numba kernels of ``smnn._cpu``;
CuPy input uses the ``xp`` versions of ``smnn._assembly``. Both are checked
against the dense reference through the public API elsewhere; here the xp
versions run on NumPy arrays and are compared with the kernels on the same
plans, covering both smoothness modes, per-row weights, broadcasting and
float32. The step gradients come from two different derivations (row-local
in xp, band cotangent times dM/dh in the kernels).
"""

import dataclasses

import numpy as np
import pytest

from smnn import _api, _assembly, _cpu

CASES = {
    # name: (coef shape, rhs shape, init shape, steps shape, n_steps, n_init, central, weights)
    "plain": ((2, 7, 2, 2, 3), (2, 7, 2), (2, 1, 2, 1), (2, 6), None, None, False, "scalar"),
    "central": ((3, 9, 1, 2, 4), (3, 9, 1), (1, 2, 2, 3), (8,), None, None, True, "per-row"),
    "constant-in-time": ((2, 1, 2, 3, 3), (1, 2), (1, 3, 1), (1,), 8, 2, True, "scalar"),
    "broadcast-E-D": ((2, 6, 1, 2, 3), (2, 6, 3), (1, 1, 2), (2, 5), None, None, False, "per-row"),
    "T-is-2": ((4, 2, 2, 1, 3), (4, 2, 2), (4, 1, 1, 1), (4, 1), None, None, True, "per-row"),
    # 2 x 11 items: several chunks of SIMD lanes, each lane with its own weights
    "many-items": ((11, 6, 2, 2, 3), (11, 6, 2), (11, 2, 2, 2), (11, 5), None, None, False,
                   "per-row"),
}


def make(case, dtype=np.float64):
    cs, rs, is_, ss, n_steps, n_init, central, wkind = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    coef, rhs, init = (rng.standard_normal(s).astype(dtype) for s in (cs, rs, is_))
    steps = rng.uniform(0.2, 0.6, ss).astype(dtype)
    T = n_steps or max(cs[-4], rs[-2], ss[-1] + 1)
    E, D, O = max(cs[-3], rs[-1]), max(cs[-2], is_[-2]), cs[-1]
    Ti = n_init or is_[-3]
    if wkind == "scalar":
        weights = (1.3, 0.8, 1.1)
    else:
        weights = (rng.uniform(0.5, 2, (T, E)), rng.uniform(0.5, 2, (Ti, D, is_[-1])),
                   rng.uniform(0.5, 2, (2, 1, T - 1, D, O)))
    plan, rhs_b, init_b = _api._plan_for_data(
        coef, rhs, init, steps, n_steps=n_steps, n_init_var_steps=n_init,
        is_step_dim_first=False, weights=weights, enable_central_smoothness=central,
        backend="auto", check_finite=True)
    return plan, rhs_b, init_b, rng


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_xp_assembly_matches_cpu_kernel(case, dtype):
    plan, _, _, _ = make(case, dtype)
    kernel = _assembly.assemble_bands(plan)
    xp = _assembly.assemble_bands_xp(plan)
    assert kernel.shape == xp.shape and kernel.dtype == xp.dtype == dtype
    T = plan.T
    scale = np.abs(xp).max()
    tol = (1e-13 if dtype == np.float64 else 1e-5) * scale
    for d in range(plan.bandwidth + 1):  # padding blocks are ignored by bandsolve
        np.testing.assert_allclose(kernel[..., d, : T - d, :, :], xp[..., d, : T - d, :, :],
                                   rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_xp_gradients_match_cpu_kernel(case, dtype):
    plan, rhs, init, rng = make(case, dtype)
    batch = np.broadcast_shapes(plan.batch_shape, rhs.shape[:-2], init.shape[:-3])
    u = rng.standard_normal(batch + (plan.T, plan.D, plan.O)).astype(dtype)
    bbar = rng.standard_normal(u.shape).astype(dtype)
    got = _assembly.gradients(plan, rhs, init, u, bbar)
    want = _assembly.gradients_xp(plan, rhs, init, u, bbar)
    shapes = (plan.coef_shape, rhs.shape, init.shape, plan.steps_shape)
    rtol = 1e-12 if dtype == np.float64 else 2e-4
    for name, a, b, shape in zip(("coef", "rhs", "init", "steps"), got, want, shapes):
        a, b = _api._sum_to_shape(a, shape), _api._sum_to_shape(b, shape)
        assert a.shape == b.shape == tuple(shape), name
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)



@pytest.mark.parametrize("case", ["many-items", "central"])
def test_cpu_kernel_items_do_not_depend_on_their_lane_neighbours(case):
    """The kernel assembles LANES items at a time in SIMD lanes: an item's band
    is bitwise the same whatever items share its chunk (here: alone)."""
    plan, _, _, _ = make(case)
    full = _assembly.assemble_bands(plan)
    batch = plan.batch_shape

    def item(a, rank, i):
        a = np.asarray(a)
        if a.ndim <= rank:
            return a
        return np.broadcast_to(a, batch + a.shape[a.ndim - rank:])[i]

    for i in np.ndindex(batch):
        sub = dataclasses.replace(
            plan, coef=item(plan.coef, 4, i), steps=item(plan.steps, 1, i),
            w_eq2=item(plan.w_eq2, 2, i), w_init2=item(plan.w_init2, 3, i),
            w_smooth2=item(plan.w_smooth2, 3, i), batch_shape=())
        np.testing.assert_array_equal(_assembly.assemble_bands(sub), full[i])


@pytest.mark.parametrize("central", [False, True])
def test_cpu_kernel_time_segments_match_one_pass(central):
    """Small batches are assembled with each item's steps cut into segments in
    the SIMD lanes; any number of segments gives the band of one pass."""
    rng = np.random.default_rng(3)
    B, T, E, D, O = 3, 23, 2, 2, 4
    weights = (rng.uniform(0.5, 2, (B, T, E)), rng.uniform(0.5, 2, (B, 2, D, 2)),
               rng.uniform(0.5, 2, (B, T - 1, D, O)))
    plan, _, _ = _api._plan_for_data(
        rng.standard_normal((B, T, E, D, O)), rng.standard_normal((B, T, E)),
        rng.standard_normal((B, 2, D, 2)), rng.uniform(0.1, 0.3, (B, T - 1)), n_steps=None,
        n_init_var_steps=None, is_step_dim_first=False, weights=weights,
        enable_central_smoothness=central, backend="auto", check_finite=True)
    (c, ci), (s, si), (we, wei), (wi, wii), (ws, wsi) = _assembly._kernel_inputs(
        plan, (B,), plan.dtype, flat_coef=True)
    F = _cpu.taylor_table(plan.O, plan.n_smooth_orders, plan.dtype)
    out = {}
    for n_seg in (1, 2, 5, 8, T):
        bands = np.full((B, plan.bandwidth + 1, T, plan.k, plan.k), np.nan)
        _cpu.assemble_bands(c, ci, s, si, we, wei, wi, wii, ws, wsi, F, plan.central, n_seg,
                            bands)
        out[n_seg] = bands
    assert not np.isnan(out[1]).any()
    for n_seg, bands in out.items():
        np.testing.assert_array_equal(bands, out[1], err_msg=f"n_seg={n_seg}")
    np.testing.assert_allclose(out[1], _assembly.assemble_bands_xp(plan), rtol=0,
                               atol=1e-13 * np.abs(out[1]).max())
