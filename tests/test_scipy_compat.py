"""SciPy-compatible cholesky_banded / cho_solve_banded / solveh_banded.

The specification is "what looping ``scipy.linalg`` over the batch returns":
same values (to round-off; both are backward stable, so within twice the
derived forward-error bound of tests/_helpers.py), same dtype, the same
untouched corner cells, SciPy 1.15+ batch rules (``b.ndim == 1`` is a vector
(M,), otherwise (..., M, K)), integer input computed in float64, and the same
kind of errors.
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
    random_spd_bands,
    relative_error,
    solve_error_bound,
)

DTYPES = (np.float32, np.float64)
M_DEFAULT = 11


def _scalar_bands(rng, batch_shape, n, u, dtype, lower, garbage=True):
    """Random SPD scalar bands ``ab`` (..., u+1, n) and their float64 dense matrices.

    The unused corner cells hold garbage when asked (SciPy never reads them).
    """
    blocks = random_spd_bands(rng, batch_shape, n, 1, u, dtype, garbage=garbage)
    dense = dense_from_bands(blocks)  # the matrix as rounded to dtype
    if lower:
        ab = blocks[..., 0, 0]
    else:
        fill = rng.uniform(50, 100) if garbage else 0.0
        ab = lower_to_upper(blocks, fill=fill)[..., 0, 0]
    return np.ascontiguousarray(ab), dense


def _used_cells(u1, n, lower):
    mask = np.ones((u1, n), dtype=bool)
    for d in range(1, u1):
        if lower:
            mask[d, n - d:] = False
        else:
            mask[u1 - 1 - d, :d] = False
    return mask


def _bound(dense, u, dtype):
    return solve_error_bound(cond2(dense), 1, u, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("u", (0, 1, 2, 4))
@pytest.mark.parametrize("batch_shape", ((), (3,), (2, 2)), ids=str)
def test_cholesky_banded_matches_scipy_loop(rng, batch_shape, u, lower, dtype):
    n = M_DEFAULT
    ab, dense = _scalar_bands(rng, batch_shape, n, u, dtype, lower)
    ab0 = ab.copy()
    c = bandsolve.cholesky_banded(ab, lower=lower)
    np.testing.assert_array_equal(ab, ab0)  # not modified
    assert c.shape == ab.shape and c.dtype == dtype
    used = _used_cells(u + 1, n, lower)
    for index in np.ndindex(*batch_shape):
        ref = scipy.linalg.cholesky_banded(ab[index], lower=lower)
        assert ref.dtype == c.dtype
        # unused corner cells: SciPy returns them as they were in ab
        np.testing.assert_array_equal(c[index][~used], ref[~used])
        # Sun's bound for the Cholesky factor, twice (see test_solve.py)
        bound = 2 * np.sqrt(n) * _bound(dense[index], u, dtype)
        L_norm = np.sqrt(np.linalg.eigvalsh(dense[index])[-1])
        assert np.linalg.norm((c[index] - ref)[used]) / L_norm <= bound


def _loop_solveh(ab, b, lower, dtype_ref=None):
    """scipy.linalg.solveh_banded looped over the broadcast batch."""
    ab_batch = ab.shape[:-2]
    core = b.shape[-1:] if b.ndim == 1 else b.shape[-2:]
    b_batch = b.shape[: b.ndim - len(core)]
    full = np.broadcast_shapes(ab_batch, b_batch)
    flat_ab = ab.reshape((-1,) + ab.shape[-2:])
    flat_b = b.reshape((-1,) + core)
    out = None
    for index, (i_ab, i_b) in batch_items(full, ab_batch, b_batch):
        x = scipy.linalg.solveh_banded(flat_ab[i_ab], flat_b[i_b], lower=lower)
        if out is None:
            out = np.empty(full + x.shape, dtype=x.dtype)
        out[index] = x
    return out


RHS_CASES = [
    # ab batch, b shape (M stands for the matrix size)
    ((), ("M",)),
    ((), ("M", 3)),
    ((3,), ("M",)),          # a vector b broadcast over the batch
    ((3,), ("M", 1)),        # b (M, K) broadcast over the batch
    ((3,), (3, "M", 2)),
    ((2, 1), (3, "M", 2)),   # batch dims broadcast
    ((2,), (4, 1, "M", 2)),
]


def _shape(spec, n):
    return tuple(n if s == "M" else s for s in spec)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("u", (1, 3))
@pytest.mark.parametrize("ab_batch, b_spec", RHS_CASES, ids=str)
def test_solveh_banded_matches_scipy_loop(rng, ab_batch, b_spec, u, lower, dtype):
    n = M_DEFAULT
    ab, dense = _scalar_bands(rng, ab_batch, n, u, dtype, lower)
    b = rng.standard_normal(_shape(b_spec, n)).astype(dtype)
    ab0, b0 = ab.copy(), b.copy()
    x = bandsolve.solveh_banded(ab, b, lower=lower)
    np.testing.assert_array_equal(ab, ab0)
    np.testing.assert_array_equal(b, b0)
    ref = _loop_solveh(ab, b, lower)
    assert x.shape == ref.shape and x.dtype == ref.dtype
    bound = max(_bound(dense[i], u, dtype) for i in np.ndindex(*ab_batch))
    assert relative_error(x, ref) <= 2 * bound + bound**2
    # SciPy >= 1.15 batches natively with the same rules
    native = scipy.linalg.solveh_banded(ab, b, lower=lower)
    assert native.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("ab_batch, b_spec", RHS_CASES, ids=str)
def test_cho_solve_banded_matches_scipy_loop(rng, ab_batch, b_spec, lower, dtype):
    n, u = M_DEFAULT, 2
    ab, dense = _scalar_bands(rng, ab_batch, n, u, dtype, lower)
    b = rng.standard_normal(_shape(b_spec, n)).astype(dtype)
    c = bandsolve.cholesky_banded(ab, lower=lower)
    c0, b0 = c.copy(), b.copy()
    x = bandsolve.cho_solve_banded((c, lower), b)
    np.testing.assert_array_equal(c, c0)
    np.testing.assert_array_equal(b, b0)
    # reference: SciPy's own factor and solve, looped
    core = b.shape[-1:] if b.ndim == 1 else b.shape[-2:]
    b_batch = b.shape[: b.ndim - len(core)]
    full = np.broadcast_shapes(ab_batch, b_batch)
    flat_ab = ab.reshape((-1,) + ab.shape[-2:])
    flat_b = b.reshape((-1,) + core)
    assert x.shape == full + core and x.dtype == dtype
    for index, (i_ab, i_b) in batch_items(full, ab_batch, b_batch):
        c_ref = scipy.linalg.cholesky_banded(flat_ab[i_ab], lower=lower)
        ref = scipy.linalg.cho_solve_banded((c_ref, lower), flat_b[i_b])
        bound = _bound(dense.reshape((-1, n, n))[i_ab], u, dtype)
        assert relative_error(x[index], ref) <= 2 * bound + bound**2


@pytest.mark.parametrize("ab_dtype", (np.float32, np.float64, np.int64, np.int32),
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("b_dtype", (np.float32, np.float64, np.int64),
                         ids=lambda d: np.dtype(d).name)
def test_dtypes_follow_scipy(ab_dtype, b_dtype):
    # integer input is computed in float64, as SciPy does
    ab = np.array([[4, 5, 6, 7, 8], [1, 2, -1, 1, 0]]).astype(ab_dtype)  # lower, u = 1
    b = np.array([1, 2, 3, 4, 5]).astype(b_dtype)
    x = bandsolve.solveh_banded(ab, b, lower=True)
    ref = scipy.linalg.solveh_banded(ab, b, lower=True)
    assert x.dtype == ref.dtype
    c = bandsolve.cholesky_banded(ab, lower=True)
    c_ref = scipy.linalg.cholesky_banded(ab, lower=True)
    assert c.dtype == c_ref.dtype
    xs = bandsolve.cho_solve_banded((c, True), b)
    xs_ref = scipy.linalg.cho_solve_banded((c_ref, True), b)
    assert xs.dtype == xs_ref.dtype
    # a well-conditioned 5 x 5 system: agreement to a few ulps of each dtype
    np.testing.assert_allclose(x, ref, rtol=10 * np.finfo(x.dtype).eps)
    np.testing.assert_allclose(xs, xs_ref, rtol=10 * np.finfo(xs.dtype).eps)
    np.testing.assert_allclose(c, c_ref, rtol=10 * np.finfo(c.dtype).eps)


def test_scipy_docstring_example():
    ab = np.array([[4, 5, 6, 7, 8, 9], [2, 2, 2, 2, 2, 0], [-1, -1, -1, -1, 0, 0]])
    b = np.array([1, 2, 2, 3, 3, 3])
    np.testing.assert_allclose(bandsolve.solveh_banded(ab, b, lower=True),
                               scipy.linalg.solveh_banded(ab, b, lower=True), rtol=1e-14)


@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
def test_overwrite_flags(rng, lower):
    n, u = M_DEFAULT, 2
    ab, _ = _scalar_bands(rng, (3,), n, u, np.float64, lower, garbage=False)
    b = rng.standard_normal((3, n, 2))
    ref = _loop_solveh(ab, b, lower)
    tol = 1e-12

    # overwrite_b with a matching C-contiguous float64 b: solved in place
    b_w = b.copy()
    x = bandsolve.solveh_banded(ab.copy(), b_w, overwrite_b=True, lower=lower)
    assert np.shares_memory(x, b_w)
    np.testing.assert_allclose(x, ref, rtol=tol)
    # overwrite_ab: allowed to be clobbered; the result is still right
    ab_w = ab.copy()
    x = bandsolve.solveh_banded(ab_w, b, overwrite_ab=True, lower=lower)
    np.testing.assert_allclose(x, ref, rtol=tol)

    c_ref = np.stack([scipy.linalg.cholesky_banded(a, lower=lower) for a in ab])
    ab_w = ab.copy()
    c = bandsolve.cholesky_banded(ab_w, overwrite_ab=True, lower=lower)
    np.testing.assert_allclose(c, c_ref, rtol=tol)
    if lower:  # the factor is computed in the memory of ab
        assert np.shares_memory(c, ab_w)

    b_w = b.copy()
    x = bandsolve.cho_solve_banded((c_ref, lower), b_w, overwrite_b=True)
    assert np.shares_memory(x, b_w)
    np.testing.assert_allclose(x, ref, rtol=tol)

    # a vector b is overwritten too
    b_v = b[0, :, 0].copy()
    x = bandsolve.solveh_banded(ab[0], b_v, overwrite_b=True, lower=lower)
    assert np.shares_memory(x, b_v)
    np.testing.assert_allclose(x, scipy.linalg.solveh_banded(ab[0], b[0, :, 0], lower=lower),
                               rtol=tol)


def test_overwrite_is_permission_not_obligation(rng):
    # unsuitable arrays (int, read-only, wrong dtype) are not written and still work
    ab = np.array([[4, 4, 4, 4], [1, 1, 1, 0]])
    b = np.array([1, 2, 3, 4])
    x = bandsolve.solveh_banded(ab, b, overwrite_ab=True, overwrite_b=True, lower=True)
    np.testing.assert_allclose(x, scipy.linalg.solveh_banded(ab, b, lower=True), rtol=1e-14)
    np.testing.assert_array_equal(b, [1, 2, 3, 4])
    ro_ab = ab.astype(float)
    ro_ab.flags.writeable = False
    ro_b = b.astype(float)
    ro_b.flags.writeable = False
    x = bandsolve.solveh_banded(ro_ab, ro_b, overwrite_ab=True, overwrite_b=True, lower=True)
    np.testing.assert_allclose(x, scipy.linalg.solveh_banded(ab, b, lower=True), rtol=1e-14)
    c = bandsolve.cholesky_banded(ro_ab, overwrite_ab=True, lower=True)
    np.testing.assert_allclose(c, scipy.linalg.cholesky_banded(ab, lower=True), rtol=1e-14)


def test_empty_batch(rng):
    ab = np.zeros((0, 2, 5))
    assert bandsolve.cholesky_banded(ab).shape == (0, 2, 5)
    assert bandsolve.solveh_banded(ab, np.ones(5)).shape == (0, 5)
    assert bandsolve.solveh_banded(ab, np.ones((0, 5, 2))).shape == (0, 5, 2)
    assert bandsolve.cho_solve_banded((ab, False), np.ones((5, 3))).shape == (0, 5, 3)


# ---------------------------------------------------------------------------
# errors


def test_not_positive_definite_names_batch_index_and_minor(rng):
    n, u = 8, 2
    ab, _ = _scalar_bands(rng, (2, 3), n, u, np.float64, True, garbage=False)
    ab[1, 2, 0, 5] = -50.0  # breaks item (1, 2) at the leading minor LAPACK reports
    info = scipy.linalg.lapack.dpbtrf(ab[1, 2], lower=1)[1]
    assert info > 0
    for call in (lambda: bandsolve.cholesky_banded(ab, lower=True),
                 lambda: bandsolve.solveh_banded(ab, np.ones(n), lower=True)):
        with pytest.raises(bandsolve.LinAlgError) as exc:
            call()
        assert isinstance(exc.value, np.linalg.LinAlgError)
        assert exc.value.batch_index == (1, 2)
        assert exc.value.order == info
        msg = str(exc.value)
        assert "ab is not positive definite" in msg
        assert "batch index (1, 2)" in msg and f"order {info}" in msg
    with pytest.raises(np.linalg.LinAlgError):  # SciPy agrees
        scipy.linalg.cholesky_banded(ab[1, 2], lower=True)


@pytest.mark.parametrize(
    "func, where",
    [(f, w) for f in ("cholesky_banded", "solveh_banded", "cho_solve_banded")
     for w in ("ab", "corner", "b") if not (f == "cholesky_banded" and w == "b")],
)
def test_check_finite(func, where):
    n = 5
    ab = np.array([[0.0, 1, 1, 1, 1], [4, 4, 4, 4, 4]])  # upper, u = 1
    b = np.ones(n)
    if where == "ab":
        ab[1, 2] = np.nan
    elif where == "corner":
        ab[0, 0] = np.inf   # unused cell: SciPy's check_finite looks at all of ab
    else:
        b[1] = np.inf
    call = {
        "cholesky_banded": lambda cf: bandsolve.cholesky_banded(ab, check_finite=cf),
        "solveh_banded": lambda cf: bandsolve.solveh_banded(ab, b, check_finite=cf),
        "cho_solve_banded": lambda cf: bandsolve.cho_solve_banded((ab, False), b,
                                                                   check_finite=cf),
    }[func]
    name = "b" if where == "b" else ("cb" if func == "cho_solve_banded" else "ab")
    with pytest.raises(ValueError, match=f"{name} must not contain inf or NaN"):
        call(True)
    # check_finite=False: no ValueError (the result is NaN, or LinAlgError
    # when NaN reaches a pivot)
    try:
        call(False)
    except np.linalg.LinAlgError:
        pass


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda: bandsolve.cholesky_banded(np.ones(4)), ValueError,
         r"ab must have shape \(\.\.\., u\+1, M\) with u >= 0; got \(4,\)"),
        (lambda: bandsolve.cholesky_banded(np.ones((0, 4))), ValueError,
         r"ab must have shape .*; got \(0, 4\)"),
        (lambda: bandsolve.solveh_banded(np.ones((2, 4)), np.ones(5)), ValueError,
         r"b must have shape \(M,\) or \(\.\.\., M, K\) with M = 4; got \(5,\)"),
        (lambda: bandsolve.solveh_banded(np.ones((2, 4)), np.ones((5, 2))), ValueError,
         r"b must have shape \(M,\) or \(\.\.\., M, K\) with M = 4; got \(5, 2\)"),
        (lambda: bandsolve.cho_solve_banded((np.ones((2, 4)), False), np.ones((2, 3, 4))),
         ValueError, r"b must have shape .* M = 4; got \(2, 3, 4\)"),
        (lambda: bandsolve.solveh_banded(np.ones((2, 2, 4)), np.ones((3, 4, 1))), ValueError,
         r"batch dimensions of ab \(2,\) and b \(3,\) do not broadcast"),
        (lambda: bandsolve.cho_solve_banded((np.ones((2, 2, 4)), True), np.ones((3, 4, 1))),
         ValueError, r"batch dimensions of cb \(2,\) and b \(3,\) do not broadcast"),
        (lambda: bandsolve.cholesky_banded(np.ones((2, 4), complex)), TypeError,
         r"ab must be a real float32/float64 \(or integer\) array; got dtype complex128"),
        (lambda: bandsolve.solveh_banded(np.ones((2, 4)), np.ones(4, np.float16)), TypeError,
         r"b must be a real float32/float64 \(or integer\) array; got dtype float16"),
        (lambda: bandsolve.cho_solve_banded((np.ones((2, 4), complex), False), np.ones(4)),
         TypeError, r"cb must be a real .*complex128"),
    ],
    ids=["ab-1d", "ab-no-diagonal", "b-vector-M", "b-matrix-M", "b-3d-M", "batch", "cb-batch",
         "ab-complex", "b-float16", "cb-complex"],
)
def test_caller_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
