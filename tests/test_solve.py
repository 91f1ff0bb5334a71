"""Accuracy of cholesky / solve / logdet against dense NumPy and looped SciPy.

Every case is checked three ways (tests/_helpers.py derives the bounds):

* the LAPACK-style residual ratio ``||M x - b|| / (||M|| ||x|| n eps) < 30``;
* the forward error against ``numpy.linalg.solve`` of the assembled matrix in
  float64, below ``kappa_2(M) p (3p+1) u`` (p = (w+1) k), and below 1e-10 in
  float64;
* agreement with ``scipy.linalg.solveh_banded`` / ``cholesky_banded`` looped
  over the batch on the same matrix as a scalar band of half-bandwidth
  ``(w+1) k - 1`` (both are backward stable: twice the bound).
"""

import numpy as np
import pytest
import scipy.linalg

import bandsolve
from _helpers import (
    batch_items,
    cond2,
    dense_from_bands,
    lower_to_upper,
    random_rhs,
    random_spd_bands,
    relative_error,
    residual_ratio,
    scalar_band,
    sized,
    solve_error_bound,
)

WS = (1, 2, 3)
KS = (1, 2, 5, 9)
DTYPES = (np.float32, np.float64)
T_DEFAULT = sized(12, 3)
BATCH = sized(3, 2)
RESIDUAL_THRESHOLD = 30.0  # LAPACK's test threshold


def _columns(v, n):
    """(T, k) or (T, k, nrhs) -> (n, nrhs) float64 columns."""
    return np.asarray(v, dtype=np.float64).reshape(n, -1)


def _check_item(x, b, bands_item, dtype, k, w, *, tag=""):
    """Residual, dense-reference and SciPy checks of one solved system."""
    dense = dense_from_bands(bands_item)
    n = dense.shape[0]
    xc, bc = _columns(x, n), _columns(b, n)
    ratio = residual_ratio(dense, xc, bc, dtype)
    assert ratio < RESIDUAL_THRESHOLD, f"{tag} residual ratio {ratio:.3g}"
    bound = solve_error_bound(cond2(dense), k, w, dtype)
    x_dense = np.linalg.solve(dense, bc)
    err = relative_error(xc, x_dense)
    assert err <= bound, f"{tag} forward error {err:.3g} > bound {bound:.3g}"
    if np.dtype(dtype) == np.float64:
        assert err <= 1e-10, f"{tag} float64 forward error {err:.3g}"
    # SciPy needs u < n (its tridiagonal path fails on n = 1, u = 1)
    ab = scalar_band(dense, min((w + 1) * k - 1, n - 1), lower=True).astype(dtype)
    x_scipy = scipy.linalg.solveh_banded(ab, bc.astype(dtype), lower=True)
    assert relative_error(xc, x_scipy) <= 2 * bound + bound**2, f"{tag} vs SciPy"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("w", WS)
@pytest.mark.parametrize("nrhs", [None, 3])
def test_solve_matches_dense_and_scipy(backend, rng, w, k, dtype, nrhs):
    T = T_DEFAULT
    bands = random_spd_bands(rng, (BATCH,), T, k, w, dtype)
    b = random_rhs(rng, (BATCH,), T, k, nrhs, dtype)
    x = bandsolve.solve(bands, b, backend=backend)
    assert x.shape == b.shape and x.dtype == dtype
    for i in range(BATCH):
        _check_item(x[i], b[i], bands[i], dtype, k, w, tag=f"item {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", (2, 9))
@pytest.mark.parametrize("w", (1, 2))
def test_ill_conditioned_error_scales_with_condition_number(backend, rng, w, k, dtype):
    # kappa_2 up to ~1e4: the float32 bound is then ~1e-1, still checked.
    T = sized(20, 3)
    bands = random_spd_bands(rng, (BATCH,), T, k, w, dtype, coupling=0.015, diag_min=0.02)
    b = random_rhs(rng, (BATCH,), T, k, None, dtype)
    x = bandsolve.solve(bands, b, backend=backend)
    for i in range(BATCH):
        _check_item(x[i], b[i], bands[i], dtype, k, w, tag=f"item {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("w", WS)
def test_factor_matches_scipy_cholesky_banded(backend, rng, w, k, dtype):
    T = T_DEFAULT
    bands = random_spd_bands(rng, (BATCH,), T, k, w, dtype)
    fac = bandsolve.cholesky(bands, backend=backend)
    assert fac.factor.shape == bands.shape and fac.factor.dtype == dtype
    assert fac.info.shape == (BATCH,) and not fac.info.any()
    L = np.asarray(fac.factor, dtype=np.float64)
    n = T * k
    eps = np.finfo(dtype).eps
    for i in range(BATCH):
        dense = dense_from_bands(bands[i])
        # dense L from the band factor (diagonal blocks lower triangular)
        L_dense = np.tril(dense_from_bands(L[i]))
        assert np.all(np.diag(L_dense) > 0)
        assert np.all(np.triu(L[i, 0], 1) == 0)  # diagonal blocks are lower triangular
        # LAPACK xPOT01: ||L L^T - M||_1 / (n ||M||_1 eps) < 30
        anorm = np.abs(dense).sum(axis=0).max()
        back = np.abs(L_dense @ L_dense.T - dense).sum(axis=0).max() / (n * anorm * eps)
        assert back < RESIDUAL_THRESHOLD
        # SciPy on the scalar band; Sun's perturbation bound for the Cholesky
        # factor, ||dL||_F / ||L||_2 <= kappa_2 ||dM||_F / ||M||_2, with
        # ||dM||_F <= sqrt(n) ||dM||_2, for each of the two computed factors.
        u = min((w + 1) * k - 1, n - 1)
        ab = scalar_band(dense, u, lower=True).astype(dtype)
        c = scipy.linalg.cholesky_banded(ab, lower=True)
        ours = scalar_band(L_dense, u, lower=True)
        used = scalar_band(np.tril(np.ones((n, n))), u, lower=True) == 1
        bound = 2 * np.sqrt(n) * solve_error_bound(cond2(dense), k, w, dtype)
        diff = np.linalg.norm((ours - c)[used]) / np.linalg.norm(L_dense, 2)
        assert diff <= bound


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", (1, 5))
@pytest.mark.parametrize("w", WS)
def test_logdet_matches_slogdet(backend, rng, w, k, dtype):
    T = T_DEFAULT
    bands = random_spd_bands(rng, (2, BATCH), T, k, w, dtype)
    fac = bandsolve.cholesky(bands, backend=backend)
    logdet = fac.logdet()
    assert logdet.shape == (2, BATCH)
    assert logdet.dtype == dtype
    n = T * k
    u = np.finfo(dtype).eps / 2
    for index in np.ndindex(2, BATCH):
        dense = dense_from_bands(bands[index])
        sign, ref = np.linalg.slogdet(dense)
        assert sign == 1
        # Backward error: |d logdet| = |tr(M^-1 dM)| <= n kappa_2 ||dM||_2 / ||M||_2;
        # then 2 sum log l_ii: each log within u, the n-term sum within
        # gamma_n = n u / (1 - n u), both relative to sum |log l_ii|.
        log_diag = np.log(np.diag(np.linalg.cholesky(dense)))
        gamma_n = n * u / (1 - n * u)
        atol = (n * solve_error_bound(cond2(dense), k, w, dtype)
                + 2 * (gamma_n + u) * np.abs(log_diag).sum())
        assert abs(float(logdet[index]) - ref) <= atol


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", (1, 2, 5))
@pytest.mark.parametrize("w", WS)
def test_upper_form(backend, rng, w, k, dtype):
    T = T_DEFAULT
    lower = random_spd_bands(rng, (BATCH,), T, k, w, dtype)
    upper = lower_to_upper(lower, fill=np.nan)  # padding of the upper form is never read
    b = random_rhs(rng, (BATCH,), T, k, 2, dtype)
    x = bandsolve.solve(upper, b, lower=False, backend=backend)
    assert x.dtype == dtype
    for i in range(BATCH):
        _check_item(x[i], b[i], lower[i], dtype, k, w, tag=f"item {i}")
    fac_u = bandsolve.cholesky(upper, lower=False, backend=backend)
    fac_l = bandsolve.cholesky(lower, backend=backend)
    # U = L^T in the upper storage: compare the entries both forms hold
    expect = lower_to_upper(np.asarray(fac_l.factor), fill=np.nan)
    held = ~np.isnan(expect)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(np.asarray(fac_u.factor)[held], expect[held], rtol=0,
                               atol=8 * eps * np.abs(expect[held]).max())
    np.testing.assert_allclose(fac_u.logdet(), fac_l.logdet(), rtol=8 * eps * T * k)
    x2 = fac_u.solve(b)
    for i in range(BATCH):
        _check_item(x2[i], b[i], lower[i], dtype, k, w, tag=f"factor item {i}")


BROADCAST_CASES = [
    # bands batch, b batch, nrhs
    ((2, 1), (3,), None),
    ((2, 1), (3,), 2),
    ((), (4,), None),        # one matrix, several right-hand sides
    ((3,), (), None),        # one right-hand side, several matrices
    ((3,), (), 2),
    ((1,), (2, 3), None),
    ((2, 3), (2, 1), 1),
]


@pytest.mark.parametrize("bands_batch, b_batch, nrhs", BROADCAST_CASES)
def test_batch_broadcasting(backend, rng, bands_batch, b_batch, nrhs):
    T, k, w = sized(7, 3), 2, 2
    bands = random_spd_bands(rng, bands_batch, T, k, w)
    b = random_rhs(rng, b_batch, T, k, nrhs)
    full = np.broadcast_shapes(bands_batch, b_batch)
    x = bandsolve.solve(bands, b, backend=backend)
    core = (T, k) if nrhs is None else (T, k, nrhs)
    assert x.shape == full + core
    flat_bands = bands.reshape((-1,) + bands.shape[len(bands_batch):])
    flat_b = b.reshape((-1,) + core)
    for index, (i_bands, i_b) in batch_items(full, bands_batch, b_batch):
        _check_item(x[index], flat_b[i_b], flat_bands[i_bands], np.float64, k, w,
                    tag=f"item {index}")
    # the factor object broadcasts the same way
    fac = bandsolve.cholesky(bands, backend=backend)
    np.testing.assert_allclose(fac.solve(b), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("w", (0, 1, 3))
@pytest.mark.parametrize("k", (1, 3))
def test_single_block(backend, rng, w, k):
    # T = 1: every off-diagonal block is padding (filled with garbage).
    bands = random_spd_bands(rng, (BATCH,), 1, k, w)
    b = random_rhs(rng, (BATCH,), 1, k)
    x = bandsolve.solve(bands, b, backend=backend)
    for i in range(BATCH):
        _check_item(x[i], b[i], bands[i], np.float64, k, w)
    fac = bandsolve.cholesky(bands, backend=backend)
    np.testing.assert_allclose(
        fac.logdet(), [np.linalg.slogdet(dense_from_bands(a))[1] for a in bands], rtol=1e-12
    )


@pytest.mark.parametrize("T", (2, 3))
def test_bandwidth_wider_than_matrix(backend, rng, T):
    # w >= T: the band covers the whole matrix and most blocks are padding.
    w, k = 3, 2
    bands = random_spd_bands(rng, (BATCH,), T, k, w)
    b = random_rhs(rng, (BATCH,), T, k)
    x = bandsolve.solve(bands, b, backend=backend)
    for i in range(BATCH):
        _check_item(x[i], b[i], bands[i], np.float64, k, w)


def test_scalar_tridiagonal_known_solution(backend):
    # M = tridiag(-1, 2, -1), b = ones: x_i = i (n + 1 - i) / 2 (1-based).
    n = sized(50, 6)
    bands = np.zeros((2, n, 1, 1))
    bands[0] = 2.0
    bands[1] = -1.0
    x = bandsolve.solve(bands, np.ones((n, 1)), backend=backend)
    i = np.arange(1, n + 1)
    np.testing.assert_allclose(x[:, 0], i * (n + 1 - i) / 2, rtol=1e-12)
    # det = n + 1
    np.testing.assert_allclose(bandsolve.cholesky(bands, backend=backend).logdet(),
                               np.log(n + 1), rtol=1e-13)


def test_factor_reused_for_many_solves(backend, rng):
    T, k, w = sized(9, 3), 3, 1
    bands = random_spd_bands(rng, (BATCH,), T, k, w)
    fac = bandsolve.cholesky(bands, backend=backend)
    for nrhs in (None, 1, 4):
        b = random_rhs(rng, (BATCH,), T, k, nrhs)
        np.testing.assert_allclose(fac.solve(b), bandsolve.solve(bands, b, backend=backend),
                                   rtol=1e-13, atol=1e-13)
    assert repr(fac).startswith("BandedCholesky(")
    assert (fac.batch_shape, fac.bandwidth, fac.n_blocks, fac.block_size) == ((BATCH,), w, T, k)
    assert fac.backend == backend


def test_rhs_with_nrhs_equal_to_block_size(backend, rng):
    T, k, w = 4, 3, 1
    bands = random_spd_bands(rng, (3,), T, k, w)
    b = random_rhs(rng, (3,), T, k, k)          # (3, T, k, nrhs=k)
    x = bandsolve.solve(bands, b, backend=backend)
    assert x.shape == b.shape
    for i in range(3):
        _check_item(x[i], b[i], bands[i], np.float64, k, w)


def test_ambiguous_rhs_is_read_as_vector_form(backend, rng):
    # With T == k == nrhs a (..., T, k, k) array also fits (..., T, k); the
    # documented rule reads the vector form (trailing (T, k)), so the leading
    # axis of length T becomes a batch axis broadcast against the matrices.
    T = k = 3
    w = 1
    bands = random_spd_bands(rng, (3,), T, k, w)
    b = random_rhs(rng, (2, 3), T, k)
    x = bandsolve.solve(bands, b, backend=backend)
    assert x.shape == (2, 3, T, k)
    for i, j in np.ndindex(2, 3):
        _check_item(x[i, j], b[i, j], bands[j], np.float64, k, w)
