"""Input handling: no hidden writes, overwrite flags, layouts, dtypes, empty shapes, threads.

DESIGN.md section 3: inputs are never modified unless ``overwrite*=True``
(and then a suitable array really is reused); empty batches, T = 1,
non-contiguous and Fortran-ordered inputs work; mixed dtypes follow NumPy
promotion; calls are thread-safe.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import bandsolve
from _helpers import (
    cond2,
    dense_from_bands,
    lower_to_upper,
    random_rhs,
    random_spd_bands,
    relative_error,
    residual_ratio,
    sized,
    solve_error_bound,
)

T_DEFAULT = sized(7, 3)


def _exact_tol(dtype):
    """Same data, same algorithm, different memory layout: a few ulps at most."""
    return 4 * np.finfo(dtype).eps


# ---------------------------------------------------------------------------
# inputs are not modified


@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("dtypes", [(np.float64, np.float64), (np.float32, np.float32),
                                    (np.float32, np.float64), (np.float64, np.float32)],
                         ids=lambda d: f"{np.dtype(d[0]).name}-{np.dtype(d[1]).name}")
def test_inputs_never_modified_by_default(backend, rng, lower, dtypes):
    T, k, w = T_DEFAULT, 3, 2
    bands = random_spd_bands(rng, (2,), T, k, w, dtypes[0])
    if not lower:
        bands = lower_to_upper(bands, fill=9.0)
    b = random_rhs(rng, (2,), T, k, 2, dtypes[1])
    bands0, b0 = bands.copy(), b.copy()
    fac = bandsolve.cholesky(bands, lower=lower, backend=backend)
    fac.solve(b)
    fac.logdet()
    bandsolve.solve(bands, b, lower=lower, backend=backend)
    x, vjp = bandsolve.solve_vjp(bands, b, lower=lower, backend=backend)
    g = np.ones_like(x)
    g0 = g.copy()
    vjp(g)
    np.testing.assert_array_equal(bands, bands0)
    np.testing.assert_array_equal(b, b0)
    np.testing.assert_array_equal(g, g0)
    assert not np.shares_memory(fac.factor, bands)
    assert not np.shares_memory(x, b)


# ---------------------------------------------------------------------------
# overwrite flags


def test_overwrite_reuses_suitable_memory(backend, rng):
    T, k, w = T_DEFAULT, 3, 1
    bands = random_spd_bands(rng, (3,), T, k, w)
    b = random_rhs(rng, (3,), T, k, 2)
    x_ref = bandsolve.solve(bands, b, backend=backend)
    fac_ref = bandsolve.cholesky(bands, backend=backend)
    tol = _exact_tol(np.float64)

    bands_w = bands.copy()
    fac = bandsolve.cholesky(bands_w, overwrite=True, backend=backend)
    assert np.shares_memory(fac.factor, bands_w)
    np.testing.assert_allclose(fac.factor, fac_ref.factor, rtol=tol, atol=0)

    b_w = b.copy()
    x = fac_ref.solve(b_w, overwrite_b=True)
    assert np.shares_memory(x, b_w)
    np.testing.assert_allclose(x, x_ref, rtol=tol, atol=tol)

    b_w = b.copy()
    x = bandsolve.solve(bands, b_w, overwrite_b=True, backend=backend)
    assert np.shares_memory(x, b_w)
    np.testing.assert_allclose(x, x_ref, rtol=tol, atol=tol)

    bands_w, b_w = bands.copy(), b.copy()
    x = bandsolve.solve(bands_w, b_w, overwrite_bands=True, overwrite_b=True, backend=backend)
    assert np.shares_memory(x, b_w)
    np.testing.assert_allclose(x, x_ref, rtol=tol, atol=tol)

    bands_w, b_w = bands.copy(), b.copy()
    x, vjp = bandsolve.solve_vjp(bands_w, b_w, overwrite_bands=True, overwrite_b=True,
                                 backend=backend)
    np.testing.assert_allclose(x, x_ref, rtol=tol, atol=tol)
    d_ref = bandsolve.solve_vjp(bands, b, backend=backend)[1](np.ones_like(x))
    for got, ref in zip(vjp(np.ones_like(x)), d_ref):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


UNSUITABLE = {
    "upper-form": lambda bands, b: (lower_to_upper(bands), b, False),
    "float32-bands-float64-b": lambda bands, b: (bands.astype(np.float32), b, True),
    "float32-b-float64-bands": lambda bands, b: (bands, b.astype(np.float32), True),
    "non-contiguous": lambda bands, b: (np.repeat(bands, 2, axis=-3)[..., ::2, :, :],
                                        np.repeat(b, 2, axis=-2)[..., ::2, :], True),
    "fortran": lambda bands, b: (np.asfortranarray(bands), np.asfortranarray(b), True),
    "b-broadcast": lambda bands, b: (bands, b[0], True),
}


@pytest.mark.parametrize("case", list(UNSUITABLE))
def test_overwrite_with_unsuitable_arrays_still_correct(backend, rng, case):
    # overwrite is a permission: arrays that cannot hold the result in place
    # (other storage form, dtype, layout or shape) are copied, never misused.
    T, k, w = T_DEFAULT, 2, 2
    bands = random_spd_bands(rng, (3,), T, k, w)
    b = random_rhs(rng, (3,), T, k)
    bands_in, b_in, lower = UNSUITABLE[case](bands, b)
    dtype = np.result_type(bands_in, b_in)
    ref = bandsolve.solve(bands_in.copy(), b_in.copy(), lower=lower, backend=backend)
    x = bandsolve.solve(bands_in, b_in, lower=lower, overwrite_bands=True, overwrite_b=True,
                        backend=backend)
    assert x.dtype == dtype and x.shape == (3, T, k)
    np.testing.assert_allclose(x, ref, rtol=_exact_tol(dtype), atol=_exact_tol(dtype))
    fac = bandsolve.cholesky(bands_in, lower=lower, overwrite=True, backend=backend)
    assert not fac.info.any()


def test_read_only_inputs_with_overwrite(backend, rng):
    T, k, w = T_DEFAULT, 2, 1
    bands = random_spd_bands(rng, (2,), T, k, w)
    b = random_rhs(rng, (2,), T, k)
    ref = bandsolve.solve(bands, b, backend=backend)
    bands.flags.writeable = False
    b.flags.writeable = False
    x = bandsolve.solve(bands, b, overwrite_bands=True, overwrite_b=True, backend=backend)
    np.testing.assert_array_equal(x, ref)
    fac = bandsolve.cholesky(bands, overwrite=True, backend=backend)
    np.testing.assert_array_equal(fac.solve(b, overwrite_b=True), ref)
    x, vjp = bandsolve.solve_vjp(bands, b, overwrite_bands=True, overwrite_b=True,
                                 backend=backend)
    vjp(np.ones_like(x))


# ---------------------------------------------------------------------------
# memory layouts


def _layouts(a, rng):
    """The same values in several memory layouts."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), dtype=a.dtype)
    big[..., 1::2] = a
    return {
        "C": np.ascontiguousarray(a),
        "F": np.asfortranarray(a),
        "strided": big[..., 1::2],
        "reversed": np.flip(np.flip(a, axis=0).copy(), axis=0),
        "transposed-view": np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2),
    }


@pytest.mark.parametrize("layout", ["F", "strided", "reversed", "transposed-view"])
@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=lambda d: np.dtype(d).name)
def test_non_contiguous_and_fortran_inputs(backend, rng, layout, dtype):
    T, k, w = T_DEFAULT, 3, 2
    bands = random_spd_bands(rng, (2,), T, k, w, dtype)
    b = random_rhs(rng, (2,), T, k, 2, dtype)
    bands_l, b_l = _layouts(bands, rng)[layout], _layouts(b, rng)[layout]
    assert np.array_equal(bands_l, bands) and np.array_equal(b_l, b)
    if layout != "C":
        assert not (bands_l.flags.c_contiguous and b_l.flags.c_contiguous)
    tol = _exact_tol(dtype)
    ref = bandsolve.solve(bands, b, backend=backend)
    np.testing.assert_allclose(bandsolve.solve(bands_l, b_l, backend=backend), ref,
                               rtol=tol, atol=tol)
    fac = bandsolve.cholesky(bands_l, backend=backend)
    np.testing.assert_allclose(fac.solve(b_l), ref, rtol=tol, atol=tol)
    x, vjp = bandsolve.solve_vjp(bands_l, b_l, backend=backend)
    np.testing.assert_allclose(x, ref, rtol=tol, atol=tol)
    g = rng.standard_normal(x.shape).astype(dtype)
    ref_grad = bandsolve.solve_vjp(bands, b, backend=backend)[1](g)
    for got, want in zip(vjp(_layouts(g, rng)[layout]), ref_grad):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_array_likes(backend):
    bands = [[[[2.0]], [[2.0]], [[2.0]]], [[[-1.0]], [[-1.0]], [[0.0]]]]  # (2, 3, 1, 1)
    x = bandsolve.solve(bands, [[1.0], [1.0], [1.0]], backend=backend)
    assert isinstance(x, np.ndarray)
    np.testing.assert_allclose(x[:, 0], [1.5, 2.0, 1.5], rtol=1e-14)


# ---------------------------------------------------------------------------
# dtype promotion


@pytest.mark.parametrize("bands_dtype, b_dtype", [(np.float32, np.float64),
                                                  (np.float64, np.float32)],
                         ids=["f32-bands", "f32-b"])
def test_mixed_precision_promotes_to_float64(backend, rng, bands_dtype, b_dtype):
    # computed in float64 on the given (rounded) values: float64 accuracy
    T, k, w = T_DEFAULT, 3, 1
    bands = random_spd_bands(rng, (2,), T, k, w, bands_dtype)
    b = random_rhs(rng, (2,), T, k, None, b_dtype)
    x = bandsolve.solve(bands, b, backend=backend)
    assert x.dtype == np.float64
    for i in range(2):
        dense = dense_from_bands(bands[i])
        assert residual_ratio(dense, x[i], b[i], np.float64) < 30
        ref = np.linalg.solve(dense, b[i].astype(np.float64).ravel())
        assert relative_error(x[i].ravel(), ref) <= solve_error_bound(cond2(dense), k, w,
                                                                      np.float64)


def test_float32_factor_solves_float64_rhs(backend, rng):
    # the factor keeps float32 accuracy; the result type is float64
    T, k, w = T_DEFAULT, 2, 2
    bands = random_spd_bands(rng, (2,), T, k, w, np.float32)
    fac = bandsolve.cholesky(bands, backend=backend)
    assert fac.dtype == np.float32 and fac.factor.dtype == np.float32
    b = random_rhs(rng, (2,), T, k)
    x = fac.solve(b)
    assert x.dtype == np.float64
    x32 = fac.solve(b.astype(np.float32))
    assert x32.dtype == np.float32
    for i in range(2):
        dense = dense_from_bands(bands[i])
        ref = np.linalg.solve(dense, b[i].ravel())
        bound = solve_error_bound(cond2(dense), k, w, np.float32)
        assert relative_error(x[i].ravel(), ref) <= bound


# ---------------------------------------------------------------------------
# empty and degenerate shapes


def test_empty_batch(backend):
    T, k, w = 4, 2, 1
    bands = np.zeros((0, w + 1, T, k, k))
    fac = bandsolve.cholesky(bands, backend=backend)
    assert fac.factor.shape == bands.shape
    assert fac.info.shape == (0,) and fac.logdet().shape == (0,)
    assert fac.solve(np.zeros((0, T, k))).shape == (0, T, k)
    assert bandsolve.solve(bands, np.zeros((0, T, k, 3)), backend=backend).shape == (0, T, k, 3)
    # zero-size dimensions broadcast like NumPy's
    one = np.zeros((3, 1, w + 1, T, k, k))
    one[..., 0, :, :, :] = np.eye(k)
    assert bandsolve.solve(one, np.zeros((0, T, k)), backend=backend).shape == (3, 0, T, k)
    x, vjp = bandsolve.solve_vjp(one, np.zeros((0, T, k)), backend=backend)
    d_bands, d_b = vjp(np.zeros(x.shape))
    assert d_bands.shape == one.shape and not d_bands.any()
    assert d_b.shape == (0, T, k)


def test_zero_right_hand_sides(backend, rng):
    T, k, w = T_DEFAULT, 2, 1
    bands = random_spd_bands(rng, (2,), T, k, w)
    b = np.zeros((2, T, k, 0))
    assert bandsolve.solve(bands, b, backend=backend).shape == (2, T, k, 0)
    assert bandsolve.cholesky(bands, backend=backend).solve(b).shape == (2, T, k, 0)
    x, vjp = bandsolve.solve_vjp(bands, b, backend=backend)
    d_bands, d_b = vjp(np.zeros(x.shape))
    assert d_bands.shape == bands.shape and not d_bands.any() and d_b.shape == b.shape
    assert bandsolve.solveh_banded(np.ones((1, 5)), np.ones((5, 0))).shape == (5, 0)


# ---------------------------------------------------------------------------
# threads


def test_concurrent_calls_from_threads(backend, rng):
    # several threads factor, solve and differentiate different systems at once
    T, k, w = sized(60, 3), 3, 2
    n_jobs = sized(16, 4)
    jobs = [(random_spd_bands(rng, (4,), T, k, w), random_rhs(rng, (4,), T, k, 2))
            for _ in range(n_jobs)]

    def work(job):
        bands, b = job
        fac = bandsolve.cholesky(bands, backend=backend)
        x, vjp = bandsolve.solve_vjp(bands, b, backend=backend)
        return (fac.solve(b), bandsolve.solve(bands, b, backend=backend), x,
                vjp(np.ones_like(x))[0], fac.logdet())

    expected = [work(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(sized(3, 1)):
            for got, want in zip(pool.map(work, jobs), expected):
                for a, c in zip(got, want):
                    np.testing.assert_array_equal(a, c)
    # and the answers are right, not merely repeatable
    bands, b = jobs[0]
    for i in range(4):
        dense = dense_from_bands(bands[i])
        assert residual_ratio(dense, expected[0][1][i], b[i], np.float64) < 30
