"""The partitioned factor + solve (few long systems cut into pieces across the
SIMD lanes, ``bandsolve/_kernels_part.py``) against independent references.

The path is chosen by ``bandsolve.cpu.factor_solve`` for small batches of
long systems; here it is called directly for every shape corner (piece
counts, padding rows, w > 1, several right-hand sides, float32), through the
public ``solve`` (checked to take the path), and on failures, which must
fall back to the sequential kernels and report exactly what they report.
"""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

import bandsolve
from bandsolve import _kernels, cpu
from _helpers import dense_from_bands, random_spd_bands, relative_error, scalar_band


def sequential(A, X):
    L = np.empty_like(A)
    info = np.zeros(A.shape[0], dtype=np.int64)
    _kernels.factor(A, L, info)
    x = X.copy()
    _kernels.solve(L, x, np.arange(A.shape[0], dtype=np.int64))
    return x, info


def valid_pieces(T, w):
    """Piece counts the partitioned path accepts for T block rows."""
    out = []
    for P in range(2, T + 1):
        n = -(-(T + w) // P) - w
        if n >= w and (P - 1) * (n + w) < T:
            out.append(P)
    return out


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 5),
    T=st.integers(4, 80),
    k=st.integers(1, 7),
    w=st.integers(1, 3),
    nrhs=st.integers(1, 3),
    dtype=st.sampled_from([np.float64, np.float32]),
    data=st.data(),
)
def test_partitioned_matches_sequential(B, T, k, w, nrhs, dtype, data):
    pieces = valid_pieces(T, w)
    if not pieces:
        return
    P = data.draw(st.sampled_from(pieces), label="P")
    threads = data.draw(st.sampled_from([1, 2]), label="threads")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), label="seed"))
    A = random_spd_bands(rng, (B,), T, k, w, dtype)
    A_before = A.copy()
    X = rng.standard_normal((B, T, k, nrhs)).astype(dtype)
    x_ref, info = sequential(A, X)
    assert not info.any()
    x = X.copy()
    assert cpu.factor_solve_partitioned(A, x, P, threads)
    np.testing.assert_array_equal(A, A_before)
    tol = 200 * np.finfo(dtype).eps
    for i in range(B):
        assert relative_error(x[i], x_ref[i]) < tol, (i, P)
    # packed factor written with streaming stores: same operations, same bits
    x_nt = X.copy()
    assert cpu.factor_solve_partitioned(A, x_nt, P, threads, nt_min_bytes=0)
    np.testing.assert_array_equal(x_nt, x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T, k, w, P", [(400, 9, 1, 12), (1500, 3, 2, 17), (700, 5, 3, 9)])
def test_solve_takes_the_partitioned_path(monkeypatch, T, k, w, P, dtype):
    """Public solve on one long system: same answer as SciPy's banded solver."""
    calls = []
    original = cpu.factor_solve_partitioned

    def spy(bands, x, parts, threads):
        calls.append(parts)
        return original(bands, x, parts, threads)

    monkeypatch.setattr(cpu, "factor_solve_partitioned", spy)
    monkeypatch.setattr(cpu, "PARTITION_MIN_FLOPS", 0.0)
    monkeypatch.setattr(cpu, "partitions_for", lambda *args: P)
    rng = np.random.default_rng(T)
    bands = random_spd_bands(rng, (1,), T, k, w, dtype)
    b = rng.standard_normal((T, k)).astype(dtype)
    x = bandsolve.solve(bands[0], b)
    assert calls == [P]
    ab = scalar_band(dense_from_bands(bands[0].astype(np.float64)), (w + 1) * k - 1)
    ref = scipy.linalg.solveh_banded(ab, b.astype(np.float64).ravel(), lower=True)
    assert relative_error(x.ravel(), ref) < 500 * np.finfo(dtype).eps


def test_slow_decay():
    """A nearly singular Laplacian-like chain: the coupling columns do not decay
    within a piece, so no part of them is skipped."""
    T, k, P = 3000, 2, 8
    eps = 1e-4  # SPD: the off-diagonal block has eigenvalues -1 and -0.9
    bands = np.zeros((1, 2, T, k, k))
    bands[0, 0] = (2 + eps) * np.eye(k)
    bands[0, 1, :-1] = [[-0.95, 0.05], [0.05, -0.95]]
    rng = np.random.default_rng(0)
    b = rng.standard_normal((1, T, k, 1))
    x_ref, _ = sequential(bands, b)
    x = b.copy()
    assert cpu.factor_solve_partitioned(bands, x, P, 2)
    kappa = 4.2 / eps
    assert relative_error(x, x_ref) < kappa * 1e-14


def test_fast_decay_flushes_subnormals():
    """A strongly dominant chain: the coupling columns underflow within a few
    dozen rows; the answer is still exact to round-off."""
    T, k, P = 4000, 4, 4
    rng = np.random.default_rng(1)
    bands = rng.uniform(-1, 1, (1, 2, T, k, k)) * 1e-3
    bands[0, 0] += 10 * np.eye(k)
    b = rng.standard_normal((1, T, k, 2))
    x_ref, _ = sequential(bands, b)
    x = b.copy()
    assert cpu.factor_solve_partitioned(bands, x, P, 1)
    assert relative_error(x, x_ref) < 1e-15


@pytest.mark.parametrize("bad_row", [5, 600, 1999])
def test_failure_falls_back_to_the_sequential_answer(monkeypatch, bad_row):
    """Not positive definite in an interior or at a separator row: same info,
    same LinAlgError as the sequential kernels, b never modified."""
    monkeypatch.setattr(cpu, "PARTITION_MIN_FLOPS", 0.0)
    T, k = 2000, 3
    rng = np.random.default_rng(bad_row)
    bands = random_spd_bands(rng, (1,), T, k, 1, garbage=False)
    bands[0, 0, bad_row] -= 50 * np.eye(k)
    b = rng.standard_normal((1, T, k))
    b_before = b.copy()
    _, info_ref = sequential(bands, b[..., None])
    assert info_ref[0] > 0
    x = bandsolve.solve(bands, b, check=False)
    np.testing.assert_array_equal(b, b_before)
    assert np.isnan(x).all()
    with pytest.raises(bandsolve.LinAlgError, match=f"leading minor of order {info_ref[0]}"):
        bandsolve.solve(bands, b)


def test_failure_returns_false_without_touching_x():
    T, k = 500, 2
    rng = np.random.default_rng(3)
    bands = random_spd_bands(rng, (1,), T, k, 1, garbage=False)
    bands[0, 0, 250] = -np.eye(k)
    x = rng.standard_normal((1, T, k, 1))
    before = x.copy()
    assert not cpu.factor_solve_partitioned(bands, x, 8, 2)
    np.testing.assert_array_equal(x, before)


def test_nonfinite_input_is_reported_like_the_sequential_path(monkeypatch):
    monkeypatch.setattr(cpu, "PARTITION_MIN_FLOPS", 0.0)
    T, k = 1000, 2
    rng = np.random.default_rng(4)
    bands = random_spd_bands(rng, (1,), T, k, 1, garbage=False)
    bands[0, 1, 700, 0, 1] = np.nan
    b = rng.standard_normal((T, k))
    with pytest.raises(ValueError, match="non-finite|NaN|inf"):
        bandsolve.solve(bands[0], b)
    x = bandsolve.solve(bands[0], b, check_finite=False, check=False)
    assert np.isnan(x).all()


def test_invalid_piece_count_is_rejected():
    bands = random_spd_bands(np.random.default_rng(0), (1,), 10, 2, 1)
    x = np.zeros((1, 10, 2, 1))
    with pytest.raises(ValueError, match="P = 9"):
        cpu.factor_solve_partitioned(bands, x, 9, 1)
    wide = random_spd_bands(np.random.default_rng(0), (1,), 40, 2, 3)
    with pytest.raises(ValueError, match="P = 8"):  # too many pieces for 40 rows at w = 3
        cpu.factor_solve_partitioned(wide, np.zeros((1, 40, 2, 1)), 8, 1)


@pytest.mark.parametrize(
    "B, T, w, threads, expected",
    [
        (1, 100000, 1, 2, 32),    # one long sequence: two chunks of lanes per thread
        (3, 100000, 1, 2, 16),    # 3 x 16 pieces fill 6 chunks exactly
        (6, 100000, 1, 2, 8),
        (16, 100000, 1, 2, 1),    # the batch fills the lanes on its own
        (1, 40, 1, 2, 1),         # too short to cut
        (1, 1000, 1, 2, 24),      # pieces of at least PARTITION_MIN_ROWS rows
        (1, 200, 1, 2, 6),
        (1, 100000, 1, 1, 16),
    ],
)
def test_partitions_for(B, T, w, threads, expected):
    P = cpu.partitions_for(B, T, w, threads)
    assert P == expected
    if P > 1:
        assert P in valid_pieces(T, w)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vflush_and_vabsmax(dtype):
    """The two SIMD helpers the partitioned path relies on, lane by lane."""
    from numba import njit

    from bandsolve._simd import LANES, vabsmax, vflush, vload, vstore

    @njit
    def run(x, m, flushed, mx):
        vstore(flushed, 0, vflush(vload(x, 0)))
        vstore(mx, 0, vabsmax(vload(m, 0), vload(x, 0)))

    info = np.finfo(dtype)
    sub = info.tiny / 4  # subnormal
    values = [sub, -sub, info.tiny, -info.tiny, 1.5, -2.5, 0.0, np.nan]
    x = np.array((values * LANES)[:LANES], dtype=dtype)
    m = np.full(LANES, 2.0, dtype=dtype)
    flushed = np.empty_like(x)
    mx = np.empty_like(x)
    run(x, m, flushed, mx)
    expected = np.where(np.abs(x) < info.tiny, 0.0, x).astype(dtype)
    np.testing.assert_array_equal(flushed, expected)  # NaN stays NaN
    np.testing.assert_array_equal(mx, np.where(np.isnan(x), np.nan, np.maximum(2.0, np.abs(x))))
