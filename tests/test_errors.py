"""Every error path of the block API, and the non-raising ``check=False`` path.

DESIGN.md section 3: caller mistakes raise ValueError / TypeError naming the
argument and the shapes seen; a matrix that is not positive definite raises
``bandsolve.LinAlgError`` (a ``numpy.linalg.LinAlgError``) naming the batch
index and the leading minor, unless ``check=False`` asks for per-item status
in ``.info`` (NaN in the failed items only, the others exact); NaN/inf input
raises ValueError when ``check_finite=True``.
"""

import re

import numpy as np
import pytest
import scipy.linalg

import bandsolve
from _helpers import dense_from_bands, lower_to_upper, random_rhs, random_spd_bands, sized

T_DEFAULT = sized(6, 3)


def _calls(bands, b, **kw):
    """The public entry points that take a matrix (and b), as callables."""
    return {
        "cholesky": lambda: bandsolve.cholesky(bands, **kw),
        "solve": lambda: bandsolve.solve(bands, b, **kw),
        "solve_vjp": lambda: bandsolve.solve_vjp(bands, b, **kw),
    }


ENTRY_POINTS = ("cholesky", "solve", "solve_vjp")


# ---------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 5, 3, 4), (0, 5, 2, 2), (5,), ()], ids=str)
def test_bad_bands_shape(backend, entry, shape):
    bands = np.ones(shape)
    msg = re.escape(f"bands must have shape (..., w+1, T, k, k) with w >= 0; got {shape}")
    with pytest.raises(ValueError, match=msg):
        _calls(bands, np.ones((5, 2)), backend=backend)[entry]()


@pytest.mark.parametrize("entry", ("solve", "solve_vjp", "factor.solve"))
@pytest.mark.parametrize("b_shape", [(5,), (3,), (4, 3), (5, 2), (5, 3, 2, 1), (2, 4, 3, 2)],
                         ids=str)
def test_bad_rhs_shape(backend, rng, entry, b_shape):
    bands = random_spd_bands(rng, (), 5, 3, 1)
    b = np.ones(b_shape)
    msg = re.escape(
        f"b must have shape (..., T, k) or (..., T, k, nrhs) with (T, k) = (5, 3) "
        f"from bands; got {b_shape}"
    )
    with pytest.raises(ValueError, match=msg):
        if entry == "factor.solve":
            bandsolve.cholesky(bands, backend=backend).solve(b)
        else:
            _calls(bands, b, backend=backend)[entry]()


@pytest.mark.parametrize("entry", ("solve", "solve_vjp", "factor.solve"))
def test_batch_dims_that_do_not_broadcast(backend, rng, entry):
    bands = random_spd_bands(rng, (2,), 4, 2, 1)
    b = np.ones((3, 4, 2))
    msg = re.escape("batch dimensions of bands (2,) and b (3,) do not broadcast")
    with pytest.raises(ValueError, match=msg):
        if entry == "factor.solve":
            bandsolve.cholesky(bands, backend=backend).solve(b)
        else:
            _calls(bands, b, backend=backend)[entry]()


def test_unknown_backend(rng):
    bands = random_spd_bands(rng, (), 4, 2, 1)
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'cpu', 'cuda'\); "
                                         r"got 'gpu'"):
        bandsolve.solve(bands, np.ones((4, 2)), backend="gpu")


# ---------------------------------------------------------------------------
# dtypes

BAD_DTYPES = [np.int64, np.int32, np.uint8, np.bool_, np.complex128, np.complex64,
              np.float16, np.longdouble, object]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bands_dtype_rejected(backend, entry, dtype):
    if np.dtype(dtype) == np.longdouble and np.finfo(np.longdouble).bits == 64:
        dtype = np.float16  # platforms where long double is double
    bands = np.zeros((2, 4, 2, 2), dtype=dtype)
    msg = re.escape(f"bands must be a float32 or float64 array; got dtype {np.dtype(dtype)}")
    with pytest.raises(TypeError, match=msg):
        _calls(bands, np.ones((4, 2)), backend=backend)[entry]()


@pytest.mark.parametrize("entry", ("solve", "solve_vjp", "factor.solve"))
@pytest.mark.parametrize("dtype", [np.int64, np.complex128, np.float16, np.bool_],
                         ids=lambda d: np.dtype(d).name)
def test_rhs_dtype_rejected(backend, rng, entry, dtype):
    bands = random_spd_bands(rng, (), 4, 2, 1)
    b = np.ones((4, 2), dtype=dtype)
    msg = re.escape(f"b must be a float32 or float64 array; got dtype {np.dtype(dtype)}")
    with pytest.raises(TypeError, match=msg):
        if entry == "factor.solve":
            bandsolve.cholesky(bands, backend=backend).solve(b)
        else:
            _calls(bands, b, backend=backend)[entry]()


# ---------------------------------------------------------------------------
# non-finite input


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("where", ("diagonal", "sub-diagonal"))
@pytest.mark.parametrize("value", (np.nan, np.inf, -np.inf), ids=str)
def test_nonfinite_bands_rejected(backend, rng, entry, lower, where, value):
    T, k, w = T_DEFAULT, 3, 2
    bands = random_spd_bands(rng, (2, 3), T, k, w)
    t, r = T - 2, 1
    if where == "diagonal":
        bands[1, 2, 0, t, r, 0] = value     # lower triangle of a diagonal block
    else:
        bands[1, 2, 1, t, r, 2] = value     # M[t+1, t], row r of block row t+1
        t = t + 1
    if not lower:
        bands = lower_to_upper(bands)
    msg = re.escape(f"bands must not contain inf or NaN: found one in batch index (1, 2), "
                    f"block row {t}, row {r} of the block")
    with pytest.raises(ValueError, match=msg):
        _calls(bands, np.ones((T, k)), lower=lower, backend=backend)[entry]()
    # check=False does not switch the finiteness check off
    with pytest.raises(ValueError, match=msg):
        _calls(bands, np.ones((T, k)), lower=lower, check=False, backend=backend)[entry]()


@pytest.mark.parametrize("entry", ("solve", "solve_vjp", "factor.solve"))
@pytest.mark.parametrize("value", (np.nan, np.inf), ids=str)
def test_nonfinite_rhs_rejected(backend, rng, entry, value):
    bands = random_spd_bands(rng, (2,), 4, 2, 1)
    b = random_rhs(rng, (2,), 4, 2)
    b[1, 3, 0] = value
    with pytest.raises(ValueError, match="b must not contain inf or NaN"):
        if entry == "factor.solve":
            bandsolve.cholesky(bands, backend=backend).solve(b)
        else:
            _calls(bands, b, backend=backend)[entry]()


@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
def test_nonfinite_in_entries_never_read_is_accepted(backend, rng, lower):
    # padding blocks and the strict upper triangle of the diagonal blocks
    T, k, w = T_DEFAULT, 3, 2
    bands = random_spd_bands(rng, (2,), T, k, w, garbage=False)
    b = random_rhs(rng, (2,), T, k)
    nan_bands = bands.copy()
    nan_bands[:, 0][..., np.triu_indices(k, 1)[0], np.triu_indices(k, 1)[1]] = np.nan
    for d in range(1, w + 1):
        nan_bands[:, d, T - d:] = np.inf
    if not lower:
        bands, nan_bands = lower_to_upper(bands), lower_to_upper(nan_bands, fill=np.nan)
        nan_bands[:, w][..., np.tril_indices(k, -1)[0], np.tril_indices(k, -1)[1]] = np.nan
    x = bandsolve.solve(bands, b, lower=lower, backend=backend)
    x_nan = bandsolve.solve(nan_bands, b, lower=lower, backend=backend)
    np.testing.assert_array_equal(x_nan, x)
    fac = bandsolve.cholesky(nan_bands, lower=lower, backend=backend)
    assert not fac.info.any()
    np.testing.assert_array_equal(fac.logdet(),
                                  bandsolve.cholesky(bands, lower=lower, backend=backend).logdet())


def test_nonfinite_without_check_finite_is_not_a_value_error(backend, rng):
    T, k, w = T_DEFAULT, 2, 1
    bands = random_spd_bands(rng, (3,), T, k, w)
    b = random_rhs(rng, (3,), T, k)
    x_ref = bandsolve.solve(bands, b, backend=backend)
    # NaN in b: no check, NaN in that item only
    b_nan = b.copy()
    b_nan[1, 0, 0] = np.nan
    x = bandsolve.solve(bands, b_nan, check_finite=False, backend=backend)
    assert np.isnan(x[1]).any()
    np.testing.assert_array_equal(x[[0, 2]], x_ref[[0, 2]])
    # NaN in a matrix: with check=False nothing raises; the item is reported in info
    bands_nan = bands.copy()
    bands_nan[2, 0, 1, 0, 0] = np.nan
    fac = bandsolve.cholesky(bands_nan, check_finite=False, check=False, backend=backend)
    assert fac.info[2] != 0 and not fac.info[:2].any()
    x = bandsolve.solve(bands_nan, b, check_finite=False, check=False, backend=backend)
    assert np.isnan(x[2]).all()
    np.testing.assert_array_equal(x[:2], x_ref[:2])
    # with check=True a NaN that reaches a pivot is at most a LinAlgError
    try:
        bandsolve.solve(bands_nan, b, check_finite=False, backend=backend)
    except np.linalg.LinAlgError:
        pass


def test_nonfinite_input_is_reported_before_indefinite_items(backend, rng):
    # item 0 is not positive definite, item 2 holds an inf: the caller's
    # mistake (check_finite=True) wins, whatever the batch order.
    T, k, w = T_DEFAULT, 2, 1
    bands = random_spd_bands(rng, (3,), T, k, w)
    bands[0, 0, 1, 0, 0] = -50.0
    bands[2, 0, 2, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"inf or NaN: found one in batch index \(2,\), "
                                         r"block row 2, row 1"):
        bandsolve.solve(bands, np.ones((T, k)), backend=backend)


# ---------------------------------------------------------------------------
# not positive definite


def _make_indefinite(rng, batch_shape, T, k, w, failures):
    """SPD bands with the diagonal entry (t, r) of the listed items set to -50.

    The leading minors before scalar row t k + r + 1 are untouched (PD) and
    the one of that order has a negative last pivot, so LAPACK's info for
    the item is t k + r + 1. Returns the bands and the expected orders.
    """
    bands = random_spd_bands(rng, batch_shape, T, k, w)
    orders = {}
    for index, (t, r) in failures.items():
        bands[index + (0, t, r, r)] = -50.0
        orders[index] = t * k + r + 1
        info = scipy.linalg.lapack.dpotrf(dense_from_bands(bands[index]), lower=1)[1]
        assert info == orders[index]  # independent check of the expected minor
    return bands, orders


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("k", (1, 3))
def test_not_positive_definite_raises(backend, rng, entry, lower, k):
    T, w = T_DEFAULT, 2
    t, r = T - 2, k - 1
    bands, orders = _make_indefinite(rng, (2, 3), T, k, w, {(1, 2): (t, r)})
    if not lower:
        bands = lower_to_upper(bands)
    with pytest.raises(bandsolve.LinAlgError) as exc:
        _calls(bands, np.ones((T, k)), lower=lower, backend=backend)[entry]()
    err = exc.value
    assert isinstance(err, np.linalg.LinAlgError)
    assert err.batch_index == (1, 2)
    assert err.order == orders[(1, 2)]
    assert str(err) == (
        f"bands is not positive definite: in batch index (1, 2) the leading minor of order "
        f"{orders[(1, 2)]} (block row {t}, row {r} of the block) is not positive definite"
    )


def test_not_positive_definite_single_matrix_and_several_failures(backend, rng):
    T, k, w = T_DEFAULT, 2, 1
    bands, orders = _make_indefinite(rng, (), T, k, w, {(): (0, 1)})
    with pytest.raises(bandsolve.LinAlgError, match=r"in the matrix the leading minor of "
                                                    r"order 2 ") as exc:
        bandsolve.solve(bands, np.ones((T, k)), backend=backend)
    assert exc.value.batch_index == () and exc.value.order == 2

    bands, orders = _make_indefinite(rng, (2, 3), T, k, w,
                                     {(0, 2): (2, 0), (1, 0): (1, 1), (1, 1): (0, 0)})
    with pytest.raises(bandsolve.LinAlgError) as exc:
        bandsolve.cholesky(bands, backend=backend)
    # the first failing item in C order is named, and the count is given
    assert exc.value.batch_index == (0, 2) and exc.value.order == orders[(0, 2)]
    assert str(exc.value).endswith("(3 of 6 items failed)")


# ---------------------------------------------------------------------------
# check=False: status in .info, NaN in the failed items only


def _same_batch_all_spd(rng, bands, failed, T, k, w):
    """Copy of ``bands`` with the failed items replaced by SPD matrices."""
    good = bands.copy()
    for index in failed:
        good[index] = random_spd_bands(rng, (), T, k, w)
    return good


@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
def test_check_false_reports_info_without_raising(backend, rng, lower):
    T, k, w = T_DEFAULT, 2, 2
    failures = {(0, 1): (1, 0), (1, 2): (T - 1, 1)}
    bands, orders = _make_indefinite(rng, (2, 3), T, k, w, failures)
    good = _same_batch_all_spd(rng, bands, failures, T, k, w)
    if not lower:
        bands, good = lower_to_upper(bands), lower_to_upper(good)
    b = random_rhs(rng, (2, 3), T, k, 2)
    ok = np.ones((2, 3), dtype=bool)
    for index in failures:
        ok[index] = False

    fac = bandsolve.cholesky(bands, lower=lower, check=False, backend=backend)
    ref = bandsolve.cholesky(good, lower=lower, backend=backend)
    info = np.asarray(fac.info)
    assert info.shape == (2, 3) and np.issubdtype(info.dtype, np.integer)
    expect = np.zeros((2, 3), dtype=int)
    for index, order in orders.items():
        expect[index] = order
    np.testing.assert_array_equal(info, expect)
    factor = np.asarray(fac.factor)
    # every block the factor holds (padding blocks aside) is NaN in failed items
    held_lower = np.zeros((w + 1, T, k, k), dtype=bool)
    for d in range(w + 1):
        held_lower[d, : T - d] = True
    held = held_lower if lower else lower_to_upper(held_lower, fill=False)
    assert np.isnan(factor[~ok][:, held]).all()
    np.testing.assert_array_equal(factor[ok], np.asarray(ref.factor)[ok])
    logdet = fac.logdet()
    assert np.isnan(logdet[~ok]).all()
    np.testing.assert_array_equal(logdet[ok], ref.logdet()[ok])
    x = fac.solve(b)
    x_ref = ref.solve(b)
    assert np.isnan(x[~ok]).all()
    np.testing.assert_array_equal(x[ok], x_ref[ok])

    x = bandsolve.solve(bands, b, lower=lower, check=False, backend=backend)
    assert np.isnan(x[~ok]).all()
    np.testing.assert_array_equal(x[ok], x_ref[ok])

    x, vjp = bandsolve.solve_vjp(bands, b, lower=lower, check=False, backend=backend)
    x_good, vjp_good = bandsolve.solve_vjp(good, b, lower=lower, backend=backend)
    assert np.isnan(x[~ok]).all()
    np.testing.assert_array_equal(x[ok], x_good[ok])
    g = rng.standard_normal(x.shape)
    (d_bands, d_b), (d_bands_good, d_b_good) = vjp(g), vjp_good(g)
    assert np.isnan(d_b[~ok]).all()
    np.testing.assert_array_equal(d_b[ok], d_b_good[ok])
    np.testing.assert_array_equal(d_bands[ok], d_bands_good[ok])


def test_check_false_with_broadcasting(backend, rng):
    # a failed matrix shared by several right-hand sides: all of them NaN
    T, k, w = T_DEFAULT, 2, 1
    bands, _ = _make_indefinite(rng, (2, 1), T, k, w, {(1, 0): (2, 1)})
    b = random_rhs(rng, (3,), T, k)
    x = bandsolve.solve(bands, b, check=False, backend=backend)
    assert x.shape == (2, 3, T, k)
    assert np.isnan(x[1]).all()
    # the healthy item is exactly what the same batch gives without the failure
    healthy = bands.copy()
    healthy[1] = bands[0]
    np.testing.assert_array_equal(x[0], bandsolve.solve(healthy, b, backend=backend)[0])


def test_check_false_success_has_zero_info(backend, rng):
    bands = random_spd_bands(rng, (4,), T_DEFAULT, 2, 1)
    fac = bandsolve.cholesky(bands, check=False, backend=backend)
    np.testing.assert_array_equal(np.asarray(fac.info), np.zeros(4, dtype=int))
