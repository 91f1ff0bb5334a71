"""Property tests on hypothesis-generated SPD block-band systems.

Shapes (T from 1, k from 1, w from 0 to 3, batch dims that broadcast between
the matrices and the right-hand sides, vector or nrhs form), dtype, storage
form and conditioning are drawn; the values come from a drawn seed through
:func:`_helpers.random_spd_bands` (SPD by construction, with garbage in the
entries that must not be read). Each solved item must pass the residual test
and the derived forward-error bound against a dense float64 solve; the
adjoint must match the dense gradient.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bandsolve
from _helpers import (
    batch_items,
    cond2,
    dense_band_gradient,
    dense_from_bands,
    lower_to_upper,
    random_rhs,
    random_spd_bands,
    relative_error,
    residual_ratio,
    sized,
    solve_error_bound,
)

MAX_T = sized(9, 3)
MAX_K = sized(5, 3)


@st.composite
def band_systems(draw):
    """(bands, b, lower, bands_lower, core) for a random broadcast SPD system."""
    w = draw(st.integers(0, 3))
    k = draw(st.integers(1, MAX_K))
    T = draw(st.integers(1, MAX_T))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    nrhs = draw(st.one_of(st.none(), st.integers(1, 3)))
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    bands_batch, b_batch = shapes.input_shapes
    lower = draw(st.booleans())
    diag_min = draw(st.floats(0.05, 1.0))
    coupling = diag_min * draw(st.floats(0.0, 0.95))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bands_lower = random_spd_bands(rng, bands_batch, T, k, w, dtype, coupling=coupling,
                                   diag_min=diag_min)
    bands = bands_lower if lower else lower_to_upper(bands_lower, fill=rng.uniform(-9, 9))
    if nrhs is not None and T == k == nrhs:
        # (..., T, k, nrhs) with T == k == nrhs is read as the vector form
        # (documented, tested in test_solve.py); draw the unambiguous form
        nrhs = None
    b = random_rhs(rng, b_batch, T, k, nrhs, dtype)
    core = (T, k) if nrhs is None else (T, k, nrhs)
    return bands, b, lower, bands_lower, core


@given(band_systems())
def test_random_systems_solve_accurately(backend, system):
    bands, b, lower, bands_lower, core = system
    dtype = np.result_type(bands, b)
    w, T, k = bands.shape[-4] - 1, bands.shape[-3], bands.shape[-1]
    x = bandsolve.solve(bands, b, lower=lower, backend=backend)
    bands_batch = bands.shape[:-4]
    b_batch = b.shape[: b.ndim - len(core)]
    full = np.broadcast_shapes(bands_batch, b_batch)
    assert x.shape == full + core and x.dtype == dtype
    flat_bands = bands_lower.reshape((-1, w + 1, T, k, k))
    flat_b = b.reshape((-1,) + core)
    n = T * k
    for index, (i_bands, i_b) in batch_items(full, bands_batch, b_batch):
        dense = dense_from_bands(flat_bands[i_bands])
        rhs = flat_b[i_b].reshape(n, -1)
        xi = np.asarray(x[index], dtype=np.float64).reshape(n, -1)
        assert residual_ratio(dense, xi, rhs, dtype) < 30
        ref = np.linalg.solve(dense, rhs.astype(np.float64))
        assert relative_error(xi, ref) <= solve_error_bound(cond2(dense), k, w, dtype)


@given(band_systems())
def test_random_systems_factor_and_logdet(backend, system):
    bands, b, lower, bands_lower, core = system
    dtype = bands.dtype
    w, T, k = bands.shape[-4] - 1, bands.shape[-3], bands.shape[-1]
    fac = bandsolve.cholesky(bands, lower=lower, backend=backend)
    assert fac.info.shape == bands.shape[:-4] and not np.asarray(fac.info).any()
    logdet = np.asarray(fac.logdet())
    n = T * k
    u = np.finfo(dtype).eps / 2
    flat = bands_lower.reshape((-1, w + 1, T, k, k))
    for i, item in enumerate(flat):
        dense = dense_from_bands(item)
        sign, ref = np.linalg.slogdet(dense)
        log_diag = np.log(np.diag(np.linalg.cholesky(dense)))
        gamma_n = n * u / (1 - n * u)
        atol = n * solve_error_bound(cond2(dense), k, w, dtype) + 2 * (gamma_n + u) * np.abs(
            log_diag).sum()
        assert sign == 1 and abs(logdet.reshape(-1)[i] - ref) <= atol


@given(band_systems())
def test_random_systems_vjp_matches_dense_gradient(backend, system):
    bands, b, lower, bands_lower, core = system
    bands, b, bands_lower = (a.astype(np.float64) for a in (bands, b, bands_lower))
    w, T, k = bands.shape[-4] - 1, bands.shape[-3], bands.shape[-1]
    x, vjp = bandsolve.solve_vjp(bands, b, lower=lower, backend=backend)
    g = np.cos(np.arange(x.size, dtype=np.float64)).reshape(x.shape)
    d_bands, d_b = vjp(g)
    assert d_bands.shape == bands.shape and d_b.shape == b.shape

    bands_batch = bands.shape[:-4]
    b_batch = b.shape[: b.ndim - len(core)]
    full = np.broadcast_shapes(bands_batch, b_batch)
    flat_bands = bands_lower.reshape((-1, w + 1, T, k, k))
    flat_b = b.reshape((-1,) + core)
    flat_g = g.reshape((-1,) + core)
    ref_bands = np.zeros(flat_bands.shape)
    ref_b = np.zeros(flat_b.shape)
    n = T * k
    worst = 0.0
    scale = 0.0
    scale_b = 0.0
    for j, (index, (i_bands, i_b)) in enumerate(batch_items(full, bands_batch, b_batch)):
        dense = dense_from_bands(flat_bands[i_bands])
        xi = np.linalg.solve(dense, flat_b[i_b].reshape(n, -1))
        bbar = np.linalg.solve(dense, flat_g[j].reshape(n, -1))
        ref_bands[i_bands] += dense_band_gradient(xi, bbar, T, k, w + 1, lower=lower)
        ref_b[i_b] += bbar.reshape(core)
        eps_s = solve_error_bound(cond2(dense), k, w, np.float64)
        worst = max(worst, eps_s)
        scale += np.linalg.norm(xi) * np.linalg.norm(bbar)
        scale_b += np.linalg.norm(bbar)
    # each entry of -bbar x^T, summed over items: relative error 2 eps_s + eps_s^2
    atol = 2 * (2 * worst + worst**2) * scale + np.finfo(float).tiny
    np.testing.assert_allclose(d_bands, ref_bands.reshape(bands.shape), rtol=0, atol=atol)
    # d_b = bbar, a solve: error eps_s ||bbar|| in both it and the reference
    atol_b = 2 * worst * scale_b + np.finfo(float).tiny
    np.testing.assert_allclose(d_b, ref_b.reshape(b.shape), rtol=0, atol=atol_b)
