"""CUDA backend against the CPU backend and dense NumPy, under the simulator.

Run with ``NUMBA_ENABLE_CUDASIM=1`` (``make test-cudasim``); on a machine with
a GPU and CuPy the same tests run on the hardware. Inputs are NumPy arrays
with ``backend="cuda"`` (copied to the device and back).
"""

import numpy as np
import pytest

import bandsolve
from bandsolve import cpu

from _cuda_cases import (
    CASE_IDS,
    CASES,
    DTYPES,
    LAYOUT_CASES,
    LAYOUT_DTYPE,
    dense_from_bands,
    eps,
    forward_tolerance,
    random_spd_bands,
    reference_info,
    residual_ratio,
)

pytestmark = pytest.mark.cudasim


def _backend():
    from bandsolve.cuda import _backend

    return _backend


def _input_matrix(bands):
    """The dense symmetric matrix the solver reads (lower triangle of the band)."""
    lower = dense_from_bands(bands.astype(np.float64))
    T, k = bands.shape[-3], bands.shape[-2]
    for t in range(T):
        blk = lower[..., t * k:(t + 1) * k, t * k:(t + 1) * k]
        blk[...] = np.tril(blk)
    return lower + np.swapaxes(np.tril(lower, -1), -1, -2)


def _check_factor(L, bands, dense_in):
    """Cholesky's backward error bound |L L^T - M| <= 2(n+1) eps |L| |L|^T, entrywise."""
    dtype = L.dtype
    w, T, k = L.shape[-4] - 1, L.shape[-3], L.shape[-2]
    n = T * k
    for idx in np.ndindex(*L.shape[:-4]):
        for t in range(T):
            assert np.all(np.triu(L[idx + (0, t)], 1) == 0), "diagonal blocks must be lower triangular"
        for d in range(1, w + 1):  # padding copied through, bit for bit
            np.testing.assert_array_equal(L[idx + (d, slice(max(T - d, 0), T))],
                                          bands[idx + (d, slice(max(T - d, 0), T))])
        Ld = dense_from_bands(L[idx].astype(np.float64))
        bound = 2 * (n + 1) * eps(dtype) * (np.abs(Ld) @ np.abs(Ld).T)
        assert np.all(np.abs(Ld @ Ld.T - dense_in[idx]) <= bound + 1e-300)


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------
# factor, solve, logdet


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("w,k,T", CASES, ids=CASE_IDS)
def test_factor_solve_logdet_match_dense_and_cpu(dtype, w, k, T):
    rng = np.random.default_rng(w * 100 + k * 10 + T)
    bands, _ = random_spd_bands(rng, (3,), w, T, k, dtype)
    dense_in = _input_matrix(bands)
    n = T * k
    b = _rand(rng, (3, T, k, 3), dtype)  # nrhs != k: (T, k, nrhs) is unambiguous

    fac = bandsolve.cholesky(bands, backend="cuda")
    assert fac.backend == "cuda"
    np.testing.assert_array_equal(fac.info, np.zeros(3, dtype=np.int64))
    L = fac.factor
    assert L.dtype == dtype and L.shape == bands.shape
    _check_factor(L, bands, dense_in)
    L_cpu = bandsolve.cholesky(bands, backend="cpu").factor
    for i in range(3):
        tol = forward_tolerance(dense_in[i], dtype, np.abs(L_cpu[i]).max())
        assert np.abs(L[i].astype(np.float64) - L_cpu[i]).max() <= tol

    # log det: d(log det M) = tr(M^{-1} dM) <= n cond(M) ||dM|| / ||M||
    logdet = fac.logdet()
    assert logdet.dtype == dtype and logdet.shape == (3,)
    sign, ref = np.linalg.slogdet(dense_in)
    assert np.all(sign == 1)
    for i in range(3):
        tol = 4 * n * n * eps(dtype) * np.linalg.cond(dense_in[i]) * max(1.0, abs(ref[i]))
        assert abs(float(logdet[i]) - ref[i]) <= tol

    # solve: fused (bandsolve.solve) and with the stored factor (two kernels)
    x_fused = bandsolve.solve(bands, b, backend="cuda")
    x_factor = fac.solve(b[..., 0])
    x_cpu = bandsolve.solve(bands, b, backend="cpu")
    assert x_fused.dtype == dtype and x_fused.shape == b.shape
    assert x_factor.shape == (3, T, k)
    # the fused kernel applies the forward-substitution terms in the order of
    # the solve kernel: both paths give the same bits
    np.testing.assert_array_equal(x_fused[..., 0], x_factor)
    for i in range(3):
        bi = b[i].reshape(n, 3)
        xi = x_fused[i].reshape(n, 3)
        assert residual_ratio(dense_in[i], xi, bi) < 30
        assert residual_ratio(dense_in[i], x_factor[i].reshape(n, 1), bi[:, :1]) < 30
        tol = forward_tolerance(dense_in[i], dtype, np.abs(x_cpu[i]).max())
        assert np.abs(x_fused[i].astype(np.float64) - x_cpu[i]).max() <= tol
        assert np.abs(x_factor[i].astype(np.float64) - x_cpu[i, ..., 0]).max() <= tol


@pytest.mark.parametrize("kind,case", LAYOUT_CASES, ids=[f"{k}-w{c[0]}-k{c[1]}" for k, c in LAYOUT_CASES])
def test_kernel_layouts_agree(use_layout, kind, case):
    """The global-memory window and one-team-per-block layouts give the same results."""
    dtype = LAYOUT_DTYPE
    w, k, T = case
    rng = np.random.default_rng(7)
    bands, _ = random_spd_bands(rng, (3,), w, T, k, dtype)
    dense_in = _input_matrix(bands)
    b = _rand(rng, (3, T, k), dtype)
    use_layout(kind)
    fac = bandsolve.cholesky(bands, backend="cuda")
    _check_factor(fac.factor, bands, dense_in)
    x_fused = bandsolve.solve(bands, b, backend="cuda")
    x_factor = fac.solve(b)
    x_cpu = bandsolve.solve(bands, b, backend="cpu")
    for i in range(3):
        tol = forward_tolerance(dense_in[i], dtype, np.abs(x_cpu[i]).max())
        assert np.abs(x_fused[i].astype(np.float64) - x_cpu[i]).max() <= tol
        assert np.abs(x_factor[i].astype(np.float64) - x_cpu[i]).max() <= tol


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_batches_share_factors(dtype):
    """b's batch broadcasts against the matrices' (index is not the identity)."""
    rng = np.random.default_rng(11)
    w, k, T = 2, 2, 4
    bands, _ = random_spd_bands(rng, (2,), w, T, k, dtype)
    dense_in = _input_matrix(bands)
    b = _rand(rng, (3, 2, T, k), dtype)
    x = bandsolve.solve(bands, b, backend="cuda")
    assert x.shape == (3, 2, T, k)
    x_cpu = bandsolve.solve(bands, b, backend="cpu")
    for j in range(3):
        for i in range(2):
            assert residual_ratio(dense_in[i], x[j, i].reshape(-1, 1), b[j, i].reshape(-1, 1)) < 30
            tol = forward_tolerance(dense_in[i], dtype, np.abs(x_cpu[j, i]).max())
            assert np.abs(x[j, i].astype(np.float64) - x_cpu[j, i]).max() <= tol

    one = bands[:1]  # one matrix for three right-hand sides
    x1 = bandsolve.solve(one, b[:, 0], backend="cuda")
    x1_cpu = bandsolve.solve(one, b[:, 0], backend="cpu")
    tol = forward_tolerance(dense_in[0], dtype, np.abs(x1_cpu).max())
    assert np.abs(x1.astype(np.float64) - x1_cpu).max() <= tol

    # the adjoint sums the cotangents of the items sharing a matrix
    x, vjp = bandsolve.solve_vjp(bands, b, backend="cuda")
    x_c, vjp_c = bandsolve.solve_vjp(bands, b, backend="cpu")
    g = _rand(rng, x.shape, dtype)
    d_bands, d_b = vjp(g)
    d_bands_c, d_b_c = vjp_c(g)
    assert d_bands.shape == bands.shape and d_b.shape == b.shape
    scale = np.abs(d_bands_c).max()
    tol = 3 * max(forward_tolerance(m, dtype, 1.0) for m in dense_in)
    assert np.abs(d_bands.astype(np.float64) - d_bands_c).max() <= tol * scale
    assert np.abs(d_b.astype(np.float64) - d_b_c).max() <= tol * np.abs(d_b_c).max()


# ---------------------------------------------------------------------------
# adjoint


def _dense_band_cotangent(dense, b, g, w, T, k):
    """Band cotangent of <g, M^{-1} b> from the dense gradient -bbar x^T."""
    n = T * k
    x = np.linalg.solve(dense, b.reshape(n, -1))
    bbar = np.linalg.solve(dense, g.reshape(n, -1))
    grad = -bbar @ x.T
    out = np.zeros((w + 1, T, k, k))
    for d in range(w + 1):
        for t in range(T - d):
            rows, cols = slice((t + d) * k, (t + d + 1) * k), slice(t * k, (t + 1) * k)
            if d == 0:
                out[0, t] = (grad[rows, cols] + grad[rows, cols].T) / 2
            else:
                out[d, t] = grad[rows, cols] + grad[cols, rows].T
    return out, bbar.reshape(b.shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("w,k,T", [CASES[1], CASES[3], CASES[5], CASES[7]],
                         ids=[CASE_IDS[1], CASE_IDS[3], CASE_IDS[5], CASE_IDS[7]])
def test_vjp_matches_dense_gradient(dtype, w, k, T):
    rng = np.random.default_rng(3 + w + k + T)
    bands, _ = random_spd_bands(rng, (2,), w, T, k, dtype)
    dense_in = _input_matrix(bands)
    b = _rand(rng, (2, T, k, 3), dtype)
    g = _rand(rng, (2, T, k, 3), dtype)
    x, vjp = bandsolve.solve_vjp(bands, b, backend="cuda")
    d_bands, d_b = vjp(g)
    assert d_bands.dtype == dtype and d_b.dtype == dtype
    d_bands_c, d_b_c = bandsolve.solve_vjp(bands, b, backend="cpu")[1](g)
    for i in range(2):
        ref_bands, ref_b = _dense_band_cotangent(dense_in[i], b[i].astype(np.float64),
                                                 g[i].astype(np.float64), w, T, k)
        tol = 3 * forward_tolerance(dense_in[i], dtype, 1.0)
        assert np.abs(d_b[i] - ref_b).max() <= tol * np.abs(ref_b).max()
        assert np.abs(d_bands[i] - ref_bands).max() <= tol * np.abs(ref_bands).max()
        assert np.abs(d_bands[i].astype(np.float64) - d_bands_c[i]).max() <= tol * np.abs(ref_bands).max()
        for d in range(1, w + 1):  # padding gets zero
            assert np.all(d_bands[i, d, max(T - d, 0):] == 0)


# ---------------------------------------------------------------------------
# failures: info codes, NaN only in the failed items


@pytest.mark.parametrize("dtype", DTYPES)
def test_failed_items_are_nan_and_others_exact(dtype):
    rng = np.random.default_rng(5)
    w, k, T = 1, 2, 3
    bands, _ = random_spd_bands(rng, (4,), w, T, k, dtype)
    bands[1, 0, 1, 1, 1] = -50.0  # minor of order 1*k + 2 = 4
    bands[3, 0, 0, 0, 0] = -1.0  # minor of order 1
    b = _rand(rng, (4, T, k), dtype)
    ok, bad = [0, 2], [1, 3]

    fac = bandsolve.cholesky(bands, check=False, backend="cuda")
    fac_cpu = bandsolve.cholesky(bands, check=False, backend="cpu")
    np.testing.assert_array_equal(fac.info, fac_cpu.info)
    np.testing.assert_array_equal(fac.info, [0, 4, 0, 1])
    assert np.all(np.isnan(fac.factor[bad]))
    assert np.all(np.isfinite(fac.factor[ok]))
    dense_in = _input_matrix(bands)
    for i in ok:
        tol = forward_tolerance(dense_in[i], dtype, np.abs(fac_cpu.factor[i]).max())
        assert np.abs(fac.factor[i].astype(np.float64) - fac_cpu.factor[i]).max() <= tol

    logdet = fac.logdet()
    assert np.all(np.isnan(logdet[bad])) and np.all(np.isfinite(logdet[ok]))

    for x in (fac.solve(b), bandsolve.solve(bands, b, check=False, backend="cuda")):
        assert np.all(np.isnan(x[bad]))
        x_cpu = bandsolve.solve(bands[ok], b[ok], backend="cpu")
        for j, i in enumerate(ok):
            tol = forward_tolerance(dense_in[i], dtype, np.abs(x_cpu[j]).max())
            assert np.abs(x[i].astype(np.float64) - x_cpu[j]).max() <= tol

    with pytest.raises(bandsolve.LinAlgError) as gpu_err:
        bandsolve.solve(bands, b, backend="cuda")
    with pytest.raises(bandsolve.LinAlgError) as cpu_err:
        bandsolve.solve(bands, b, backend="cpu")
    assert gpu_err.value.batch_index == cpu_err.value.batch_index == (1,)
    assert gpu_err.value.order == cpu_err.value.order == 4


def _failure_scenarios(rng):
    """Items of one batch (w=2, k=3, T=4), each with failures or ignored bad entries.

    Returns the names, the bands and the codes derived by hand for
    (check_finite=True, check_finite=False).
    """
    w, k, T = 2, 3, 4
    nan, inf = np.nan, np.inf
    scenarios = {  # (d, t, r, c) -> value; block row t+d, scalar row (t+d)*k + r
        "clean": ([], 0, 0),
        "nan off-diagonal d=2": ([((2, 1, 2, 0), nan)], -12, 12),
        "two bad rows, first one wins": ([((1, 2, 0, 2), inf), ((2, 1, 2, 1), nan)], -10, 10),
        "inf off-diagonal": ([((1, 1, 2, 0), inf)], -9, 9),
        "diagonal block, lower entry": ([((0, 2, 2, 0), nan)], -9, 9),
        "inf on the diagonal": ([((0, 0, 1, 1), inf)], -2, 2),
        "upper triangle ignored": ([((0, 1, 0, 2), nan)], 0, 0),
        "padding ignored": ([((2, 3, 1, 1), nan), ((1, 3, 0, 0), inf)], 0, 0),
        "not PD, bad entry later in a loaded row": ([((0, 1, 0, 0), -100.0), ((1, 2, 1, 1), nan)], -11, 4),
        "not PD, bad entry in a row not yet loaded": ([((0, 0, 0, 0), -100.0), ((1, 2, 0, 1), nan)], -10, 1),
        "bad entry before not PD": ([((1, 0, 0, 0), nan), ((0, 2, 0, 0), -100.0)], -4, 4),
        "same block: bad row then not-PD row": ([((0, 2, 1, 0), nan), ((0, 2, 2, 2), -100.0)], -8, 8),
        "same block: not-PD row then bad row": ([((0, 2, 0, 0), -100.0), ((0, 2, 2, 1), nan)], -9, 7),
        "not PD only": ([((0, 3, 1, 1), -100.0)], 11, 11),
    }
    bands, _ = random_spd_bands(rng, (len(scenarios),), w, T, k)
    for i, (changes, _, _) in enumerate(scenarios.values()):
        for (d, t, r, c), value in changes:
            bands[i, d, t, r, c] = value
    codes = {True: [v[1] for v in scenarios.values()], False: [v[2] for v in scenarios.values()]}
    return list(scenarios), bands, codes


# inf - inf in the simulated (NumPy scalar) arithmetic of the failing items
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("check_finite", [True, False])
def test_info_codes_follow_the_contract(check_finite):
    names, bands, by_hand = _failure_scenarios(np.random.default_rng(2))
    want = reference_info(bands, check_finite)
    np.testing.assert_array_equal(want, by_hand[check_finite])  # the reference agrees
    be = _backend()
    L = np.empty_like(bands)
    info = be.factor(bands, L, check_finite)
    assert isinstance(info, np.ndarray) and info.dtype == np.int64
    for name, got, code in zip(names, info, want):
        assert got == code, f"{name}: info {got}, expected {code}"
    failed = want != 0
    assert np.all(np.isnan(L[failed]))
    ok_ref = np.empty_like(bands[~failed])
    cpu.factor(bands[~failed], ok_ref, False)
    np.testing.assert_allclose(L[~failed], ok_ref, rtol=1e-12, atol=1e-12)

    # in place: the input is overwritten, the codes must not change
    in_place = bands.copy()
    np.testing.assert_array_equal(be.factor(in_place, in_place, check_finite), want)
    # and the fused factor + solve reports the same
    x = np.ones((len(names), 4, 3, 1))
    info = be.factor_solve(bands.copy(), x, be.index_array(np.arange(len(names))),
                           check_finite, True)
    np.testing.assert_array_equal(info, want)
    assert np.all(np.isnan(x[failed])) and np.all(np.isfinite(x[~failed]))


# ---------------------------------------------------------------------------
# backend protocol details, degenerate shapes, layouts of the input


def test_backend_in_place_overwrite_and_index_forms():
    rng = np.random.default_rng(9)
    be = _backend()
    w, k, T = 1, 3, 3
    bands, _ = random_spd_bands(rng, (2,), w, T, k)
    x0 = rng.standard_normal((2, T, k, 2))
    L_ref = np.empty_like(bands)
    be.factor(bands, L_ref, True)

    in_place = bands.copy()
    np.testing.assert_array_equal(be.factor(in_place, in_place, True), [0, 0])
    np.testing.assert_array_equal(in_place, L_ref)

    identity = be.index_array(np.arange(2))
    assert identity.identity
    kept = bands.copy()
    x = x0.copy()
    be.factor_solve(kept, x, identity, True, False)
    np.testing.assert_array_equal(kept, bands)  # overwrite=False leaves bands alone
    x_ref = x0.copy()
    cpu.solve(L_ref, x_ref, np.arange(2))
    np.testing.assert_allclose(x, x_ref, rtol=1e-12, atol=1e-13)
    x = x0.copy()
    be.factor_solve(kept, x, identity, True, True)
    np.testing.assert_array_equal(kept, L_ref)  # overwrite=True stores the factor there
    np.testing.assert_allclose(x, x_ref, rtol=1e-12, atol=1e-13)

    # a permuted index: no fusion, factor and solve kernels in turn
    swapped = be.index_array(np.array([1, 0]))
    assert not swapped.identity
    x = x0.copy()
    be.factor_solve(bands.copy(), x, swapped, True, False)
    x_ref = x0.copy()
    cpu.solve(L_ref, x_ref, np.array([1, 0]))
    np.testing.assert_allclose(x, x_ref, rtol=1e-12, atol=1e-13)

    # band cotangent with a plain NumPy index grouping three items on two matrices
    index = np.array([1, 0, 1])
    bbar = rng.standard_normal((3, T, k, 2))
    xs = rng.standard_normal((3, T, k, 2))
    got = be.band_cotangent(bbar, xs, index, 2, w + 1)
    want = cpu.band_cotangent(bbar, xs, index, 2, w + 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_and_no_right_hand_sides(dtype):
    bands = np.zeros((0, 2, 3, 2, 2), dtype=dtype)
    fac = bandsolve.cholesky(bands, backend="cuda")
    assert fac.factor.shape == bands.shape and fac.info.shape == (0,)
    assert fac.logdet().shape == (0,)
    assert bandsolve.solve(bands, np.zeros((0, 3, 2), dtype), backend="cuda").shape == (0, 3, 2)
    x, vjp = bandsolve.solve_vjp(bands, np.zeros((0, 3, 2), dtype), backend="cuda")
    d_bands, d_b = vjp(np.zeros((0, 3, 2), dtype))
    assert d_bands.shape == bands.shape and d_b.shape == (0, 3, 2)

    # nrhs = 0 at the backend level: the fused kernel still factors
    be = _backend()
    rng = np.random.default_rng(4)
    full, _ = random_spd_bands(rng, (2,), 1, 3, 2, dtype)
    no_rhs = np.zeros((2, 3, 2, 0), dtype)
    L_ref = np.empty_like(full)
    be.factor(full, L_ref, True)
    overwritten = full.copy()
    info = be.factor_solve(overwritten, no_rhs, be.index_array(np.arange(2)), True, True)
    np.testing.assert_array_equal(info, [0, 0])
    np.testing.assert_array_equal(overwritten, L_ref)
    be.solve(L_ref, no_rhs, be.index_array(np.arange(2)))


def test_fortran_and_strided_inputs_are_read_correctly():
    rng = np.random.default_rng(6)
    bands, _ = random_spd_bands(rng, (2,), 2, 4, 3)
    b = rng.standard_normal((2, 4, 3, 4))[..., ::2]  # non-contiguous
    bands_f = np.asfortranarray(bands)
    x = bandsolve.solve(bands_f, b, backend="cuda")
    np.testing.assert_allclose(x, bandsolve.solve(bands, b, backend="cpu"), rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(bands_f, bands)  # input untouched


def test_scalar_band_matches_scipy():
    """k = 1 is SciPy's banded layout: compare with scipy.linalg.solveh_banded."""
    from scipy.linalg import solveh_banded

    rng = np.random.default_rng(8)
    n, u = 6, 2
    ab = rng.uniform(-1, 1, (u + 1, n))  # upper form, diagonal in row u
    ab[u] = np.abs(ab).sum(axis=0) * 2 + 1
    b = rng.standard_normal((n, 2))
    bands = np.zeros((u + 1, n, 1, 1))
    for d in range(u + 1):
        bands[d, : n - d, 0, 0] = ab[u - d, d:]
    x = bandsolve.solve(bands, b.reshape(n, 1, 2), backend="cuda")
    np.testing.assert_allclose(x.reshape(n, 2), solveh_banded(ab, b), rtol=1e-12)


def test_threads_building_and_launching_kernels_concurrently():
    """First uses of several specialisations from several threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    from bandsolve.cuda import _kernels as K

    for factory in (K.factor_kernel, K.solve_kernel, K.cotangent_kernel, K.logdet_kernel):
        factory.cache_clear()  # every thread below builds kernels on first use
    rng = np.random.default_rng(12)
    jobs = []
    for w, k, T in (CASES[2], CASES[3], CASES[4], CASES[5]):
        bands, _ = random_spd_bands(rng, (2,), w, T, k)
        jobs.append((bands, rng.standard_normal((2, T, k, 3))))

    def work(job):
        bands, b = job
        x, vjp = bandsolve.solve_vjp(bands, b, backend="cuda")
        return x, vjp(np.ones_like(x))[0]

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(work, jobs))
    for (bands, b), (x, d_bands) in zip(jobs, results):
        x_ref, vjp_ref = bandsolve.solve_vjp(bands, b, backend="cpu")
        np.testing.assert_allclose(x, x_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(d_bands, vjp_ref(np.ones_like(x_ref))[0], rtol=1e-9, atol=1e-12)
