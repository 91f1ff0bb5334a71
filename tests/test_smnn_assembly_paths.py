"""The array-module (NumPy/CuPy) assembly and adjoint agree with the CPU kernels.

On NumPy input the public functions use the Numba kernels of ``smnn._cpu``;
CuPy input uses the ``xp`` versions of ``smnn._assembly``. Both are checked
against the dense reference through the public API elsewhere; here the xp
versions run on NumPy arrays and are compared with the kernels on the same
plans, covering both smoothness modes, per-row weights, broadcasting and
float32. The step gradients come from two different derivations (row-local
in xp, band cotangent times dM/dh in the kernels).
"""

import numpy as np
import pytest

from smnn import _api, _assembly

CASES = {
    # name: (coef shape, rhs shape, init shape, steps shape, n_steps, n_init, central, weights)
    "plain": ((2, 7, 2, 2, 3), (2, 7, 2), (2, 1, 2, 1), (2, 6), None, None, False, "scalar"),
    "central": ((3, 9, 1, 2, 4), (3, 9, 1), (1, 2, 2, 3), (8,), None, None, True, "per-row"),
    "constant-in-time": ((2, 1, 2, 3, 3), (1, 2), (1, 3, 1), (1,), 8, 2, True, "scalar"),
    "broadcast-E-D": ((2, 6, 1, 2, 3), (2, 6, 3), (1, 1, 2), (2, 5), None, None, False, "per-row"),
    "T-is-2": ((4, 2, 2, 1, 3), (4, 2, 2), (4, 1, 1, 1), (4, 1), None, None, True, "per-row"),
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
