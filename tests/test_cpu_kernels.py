"""The tuned SIMD CPU kernels against the reference kernels (same contract).

The public API is tested elsewhere against dense NumPy and SciPy; here the two
kernel families must agree item by item, including failures and broadcasting
indices, for sizes that exercise every tiling remainder (k mod 3, k mod 8,
batch mod LANES).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandsolve import _kernels, _kernels_simd
from bandsolve._simd import LANES

THREADS = 2


def spd_bands(rng, B, n_diag, T, k, dtype):
    """Strictly diagonally dominant (so SPD): off-diagonal row sums below 1."""
    bands = rng.uniform(-1.0, 1.0, (B, n_diag, T, k, k)) / (2 * n_diag * k)
    bands[:, 0] += np.eye(k)
    return bands.astype(dtype)


def reference(A, X, index):
    L = np.empty_like(A)
    info = np.zeros(A.shape[0], dtype=np.int64)
    _kernels.factor(A, L, info)
    x = X.copy()
    _kernels.solve(L, x, index)
    return L, info, x


def tolerance(dtype):
    return 50 * np.finfo(dtype).eps


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2 * LANES + 3),
    T=st.integers(1, 7),
    k=st.integers(1, 11),
    n_diag=st.integers(1, 4),
    nrhs=st.integers(1, 3),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**31),
)
def test_simd_matches_reference(B, T, k, n_diag, nrhs, dtype, seed):
    rng = np.random.default_rng(seed)
    A = spd_bands(rng, B, n_diag, T, k, dtype)
    A_before = A.copy()
    X = rng.standard_normal((B, T, k, nrhs)).astype(dtype)
    index = np.arange(B, dtype=np.int64)
    L_ref, info_ref, x_ref = reference(A, X, index)
    scale = np.abs(x_ref).max()
    tol = tolerance(dtype)

    L = np.empty_like(A)
    info = np.zeros(B, dtype=np.int64)
    _kernels_simd.factor(A, L, info, THREADS)
    np.testing.assert_array_equal(info, info_ref)
    np.testing.assert_allclose(L, L_ref, rtol=tol, atol=tol * np.abs(L_ref).max())

    x = X.copy()
    _kernels_simd.solve(L, x, index, THREADS)
    np.testing.assert_allclose(x, x_ref, rtol=tol, atol=tol * scale)

    x = X.copy()
    info = np.zeros(B, dtype=np.int64)
    _kernels_simd.factor_solve(A, x, info, THREADS)
    np.testing.assert_array_equal(info, info_ref)
    np.testing.assert_allclose(x, x_ref, rtol=tol, atol=tol * scale)
    np.testing.assert_array_equal(A, A_before)  # read only

    # the form the kernel takes for large F (coupling blocks G, streaming stores)
    x_g = X.copy()
    info = np.zeros(B, dtype=np.int64)
    _kernels_simd.factor_solve(A, x_g, info, THREADS, 0)
    np.testing.assert_array_equal(info, info_ref)
    np.testing.assert_allclose(x_g, x_ref, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("k", [1, 3, 8, 9])
def test_simd_factor_in_place(k):
    rng = np.random.default_rng(k)
    A = spd_bands(rng, LANES + 1, 2, 5, k, np.float64)
    L_ref, _, _ = reference(A, np.zeros((LANES + 1, 5, k, 1)), np.arange(LANES + 1))
    info = np.zeros(LANES + 1, dtype=np.int64)
    _kernels_simd.factor(A, A, info, THREADS)
    np.testing.assert_allclose(A, L_ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("nt_min_bytes", [None, 0], ids=["packed", "coupled"])
@pytest.mark.parametrize("k, nrhs", [(2, 1), (3, 2), (9, 1), (3, 3), (9, 3), (4, 4)])
def test_rhs_moves_in_tiles_every_remainder(k, nrhs, nt_min_bytes):
    """Right-hand sides go in and out of the lanes as transposed tiles of k*nrhs
    values per block (the last tile overlapping), value by value below LANES
    values or in a partly filled chunk: each item's solution lands in its own
    row, whatever k*nrhs mod LANES."""
    rng = np.random.default_rng(10 * k + nrhs)
    B, T = 2 * LANES + 3, 6
    A = spd_bands(rng, B, 2, T, k, np.float64)
    X = rng.standard_normal((B, T, k, nrhs))
    index = np.arange(B, dtype=np.int64)
    L_ref, _, x_ref = reference(A, X, index)
    dense = np.linalg.solve(_dense(A), X.reshape(B, T * k, nrhs)).reshape(X.shape)
    np.testing.assert_allclose(x_ref, dense, rtol=1e-12, atol=1e-12)
    x = X.copy()
    info = np.zeros(B, dtype=np.int64)
    args = () if nt_min_bytes is None else (nt_min_bytes,)
    _kernels_simd.factor_solve(A, x, info, THREADS, *args)
    np.testing.assert_array_equal(info, 0)
    np.testing.assert_allclose(x, x_ref, rtol=1e-13, atol=1e-13)
    x = X.copy()
    _kernels_simd.solve(L_ref, x, index, THREADS)
    np.testing.assert_allclose(x, x_ref, rtol=1e-13, atol=1e-13)


def test_simd_solve_broadcast_index():
    rng = np.random.default_rng(1)
    A = spd_bands(rng, 3, 2, 6, 4, np.float64)
    index = np.array([2, 0, 0, 1, 2, 2, 1, 0, 1, 1, 2], dtype=np.int64)
    X = rng.standard_normal((index.size, 6, 4, 2))
    L_ref, _, x_ref = reference(A, X, index)
    x = X.copy()
    _kernels_simd.solve(L_ref, x, index, THREADS)
    np.testing.assert_allclose(x, x_ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("nt_min_bytes", [None, 0], ids=["packed", "coupled"])
@pytest.mark.parametrize("threads", [1, 2])
def test_simd_failures_are_isolated(threads, nt_min_bytes):
    rng = np.random.default_rng(2)
    B, T, k = 2 * LANES + 1, 6, 3
    A = spd_bands(rng, B, 2, T, k, np.float64)
    A[3, 0, 2, 1, 1] = -50.0  # not positive definite at block row 2, row 1
    A[LANES + 2, 1, 4, 0, 2] = np.nan  # non-finite in block row 5
    A[LANES + 4, 0, 1, 2, 2] = np.inf  # +inf on the diagonal (a "huge" pivot)
    X = rng.standard_normal((B, T, k, 1))
    _, info_ref, x_ref = reference(A, X, np.arange(B))
    x = X.copy()
    info = np.zeros(B, dtype=np.int64)
    if nt_min_bytes is None:
        _kernels_simd.factor_solve(A, x, info, threads)
    else:
        _kernels_simd.factor_solve(A, x, info, threads, nt_min_bytes)
    np.testing.assert_array_equal(info, info_ref)
    failed = info != 0
    assert set(np.flatnonzero(failed)) == {3, LANES + 2, LANES + 4}
    assert np.isnan(x[failed]).all()
    np.testing.assert_allclose(x[~failed], x_ref[~failed], rtol=1e-13, atol=1e-13)
    assert info[3] == 2 * k + 1 + 1
    _kernels_simd.scan_nonfinite(A, info, np.ones(B, dtype=np.bool_))
    assert info[3] == 2 * k + 2  # finite input: stays "not positive definite"
    assert info[LANES + 2] == -(5 * k + 0 + 1)  # NaN read in scalar row 5k (M[5, 4])
    assert info[LANES + 4] == -(1 * k + 2 + 1)


def test_scan_ignores_unread_entries():
    rng = np.random.default_rng(3)
    A = spd_bands(rng, 2, 3, 4, 3, np.float64)
    A[0, 0, 1, 0, 2] = np.nan  # upper triangle of a diagonal block: never read
    A[0, 2, 3, 1, 1] = np.inf  # padding block (t + d >= T): never read
    info = np.ones(2, dtype=np.int64)
    _kernels_simd.scan_nonfinite(A, info, np.zeros(2, dtype=np.bool_))
    np.testing.assert_array_equal(info, [1, 1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_factor_solve_long_takes_coupled_form(dtype):
    """Large enough that the default threshold keeps G = L[t,t]^-T L[t+d,t]^T
    (streaming stores) instead of the packed factor; both agree with the
    reference kernels."""
    rng = np.random.default_rng(4)
    B, T, k = 2 * LANES, 1100, 9
    A = spd_bands(rng, B, 2, T, k, dtype)
    X = rng.standard_normal((B, T, k, 1)).astype(dtype)
    itemsize = np.dtype(dtype).itemsize
    packed = T * (k * (k + 1) // 2 + k * k) * LANES * itemsize
    assert 2 * packed >= _kernels_simd.NT_MIN_BYTES
    _, info_ref, x_ref = reference(A, X, np.arange(B))
    tol = tolerance(dtype)
    for nt_min_bytes in (_kernels_simd.NT_MIN_BYTES, 1 << 62):
        x = X.copy()
        info = np.zeros(B, dtype=np.int64)
        _kernels_simd.factor_solve(A, x, info, THREADS, nt_min_bytes)
        np.testing.assert_array_equal(info, info_ref)
        np.testing.assert_allclose(x, x_ref, rtol=tol, atol=tol * np.abs(x_ref).max())


def _dense(A):
    B, n_diag, T, k, _ = A.shape
    M = np.zeros((B, T * k, T * k))
    for d in range(n_diag):
        for t in range(T - d):
            blk = A[:, d, t]
            if d == 0:
                blk = np.tril(blk) + np.swapaxes(np.tril(blk, -1), -1, -2)
            M[:, (t + d) * k:(t + d + 1) * k, t * k:(t + 1) * k] = blk
            if d:
                M[:, t * k:(t + 1) * k, (t + d) * k:(t + d + 1) * k] = np.swapaxes(blk, -1, -2)
    return M


@pytest.mark.parametrize("n_diag", [2, 3])
@pytest.mark.parametrize("eps_pivot", [1e-2, 1e-3])
def test_coupled_form_is_backward_stable(n_diag, eps_pivot):
    """Block substitution with G = L[t,t]^-T L[t+d,t]^T: |G| grows like
    1/eps_pivot here (small pivots in some diagonal blocks of L, condition
    numbers 2e4 to 2e9), yet the residual stays at round-off, as it does for
    the packed factor: ||b - M x|| <= c eps ||M|| ||x||."""
    rng = np.random.default_rng(5)
    B, T, k = LANES, 40, 5
    Ls = np.zeros((B, T * k, T * k))
    for t in range(T):
        blk = np.tril(0.1 * rng.standard_normal((B, k, k)), -1) + np.eye(k)
        if t % 7 == 3:
            blk[:, k - 1, k - 1] = eps_pivot
        Ls[:, t * k:(t + 1) * k, t * k:(t + 1) * k] = blk
        for d in range(1, n_diag):
            if t + d < T:
                Ls[:, (t + d) * k:(t + d + 1) * k, t * k:(t + 1) * k] = \
                    0.08 * rng.standard_normal((B, k, k))
    M = Ls @ np.swapaxes(Ls, -1, -2)
    A = np.zeros((B, n_diag, T, k, k))
    for d in range(n_diag):
        for t in range(T - d):
            A[:, d, t] = M[:, (t + d) * k:(t + d + 1) * k, t * k:(t + 1) * k]
    M = _dense(A)
    X = rng.standard_normal((B, T, k, 1))
    for nt_min_bytes in (0, 1 << 62):  # coupled, packed
        x = X.copy()
        info = np.zeros(B, dtype=np.int64)
        _kernels_simd.factor_solve(A, x, info, THREADS, nt_min_bytes)
        assert not info.any()
        xs = x.reshape(B, T * k)
        r = X.reshape(B, T * k) - np.einsum("bij,bj->bi", M, xs)
        berr = np.abs(r).max(axis=1) / (np.abs(M).max(axis=(1, 2)) * np.abs(xs).max(axis=1))
        assert berr.max() < 50 * np.finfo(np.float64).eps, (nt_min_bytes, berr.max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bad", [None, 0.0, -1.0, np.inf, -np.inf, np.nan, -0.0])
@pytest.mark.parametrize("lane", [0, LANES - 1])
def test_vany_not_positive(dtype, bad, lane):
    """The vector pivot test of the factor kernels: any lane not finite and > 0."""
    from numba import njit

    from bandsolve._simd import vany_not_positive, vload

    @njit
    def run(x):
        return vany_not_positive(vload(x, 0))

    x = np.linspace(1e-30, 1e30, LANES).astype(dtype)
    if bad is not None:
        x[lane] = bad
    assert run(x) == (bad is not None)
    assert run(x) == (not np.all((x > 0) & (x < np.inf)))
