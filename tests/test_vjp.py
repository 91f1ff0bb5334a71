"""solve_vjp: the adjoint of x = M^{-1} b against a dense gradient and finite differences.

For the loss ``f = g . x`` with ``x = M^{-1} b`` one has ``df = -g^T M^{-1} dM x
+ g^T M^{-1} db``, so with ``bbar = M^{-1} g`` (M symmetric) the gradient with
respect to the dense matrix is ``G = -bbar x^T`` and with respect to b is
``bbar``. DESIGN.md section 2 maps G onto the stored band as the gradient with
respect to the symmetric matrix each block stands for: ``(G + G^T)/2`` on the
diagonal blocks and ``G[t+d, t] + G[t, t+d]^T`` off the diagonal
(:func:`_helpers.dense_band_gradient`). Consequently, for a perturbation E of
the band whose diagonal blocks are symmetric and whose padding is zero, the
directional derivative of f along the symmetric matrix E stands for is
``sum(d_bands * E)``, which the finite-difference tests check.
"""

import numpy as np
import pytest

import bandsolve
from _helpers import (
    batch_items,
    cond2,
    dense_band_gradient,
    dense_from_bands,
    lower_to_upper,
    random_rhs,
    random_spd_bands,
    sized,
    solve_error_bound,
)

T_DEFAULT = sized(8, 3)


def _symmetric_direction(rng, shape):
    """Random band perturbation (lower form): symmetric diagonal blocks, zero padding."""
    E = rng.standard_normal(shape)
    E[..., 0, :, :, :] = (E[..., 0, :, :, :] + np.swapaxes(E[..., 0, :, :, :], -1, -2)) / 2
    T = shape[-3]
    for d in range(1, shape[-4]):
        E[..., d, max(T - d, 0):, :, :] = 0.0
    return E


def _loss(bands, b, g, lower, backend):
    return float(np.sum(g * bandsolve.solve(bands, b, lower=lower, backend=backend)))


def _reference(bands_lower, b, g, lower):
    """Dense per-item gradients summed over broadcasting; shapes of the inputs."""
    n_diag, T, k = bands_lower.shape[-4], bands_lower.shape[-3], bands_lower.shape[-1]
    bands_batch = bands_lower.shape[:-4]
    vector = b.shape[-2:] == (T, k)  # the documented reading of b
    core = (T, k) if vector else b.shape[-3:]
    b_batch = b.shape[: b.ndim - len(core)]
    full = np.broadcast_shapes(bands_batch, b_batch)
    flat_bands = bands_lower.reshape((-1, n_diag, T, k, k))
    flat_b = b.reshape((-1,) + core)
    flat_g = g.reshape((-1,) + core)
    d_bands = np.zeros(flat_bands.shape)
    d_b = np.zeros(flat_b.shape)
    n = T * k
    for j, (index, (i_bands, i_b)) in enumerate(batch_items(full, bands_batch, b_batch)):
        dense = dense_from_bands(flat_bands[i_bands])
        x = np.linalg.solve(dense, flat_b[i_b].reshape(n, -1))
        bbar = np.linalg.solve(dense, flat_g[j].reshape(n, -1))
        d_bands[i_bands] += dense_band_gradient(x, bbar, T, k, n_diag, lower=lower)
        d_b[i_b] += bbar.reshape(core)
    return d_bands.reshape(bands_lower.shape), d_b.reshape(b.shape)


def _error_scale(bands_lower, b, g, dtype):
    """Derived absolute tolerance for a gradient entry.

    x and bbar each carry a relative error of at most ``eps_s`` =
    :func:`solve_error_bound`; an entry of ``bbar x^T`` (summed over nrhs and
    over the items sharing a matrix) is then off by at most
    ``(2 eps_s + eps_s^2) sum ||bbar|| ||x||`` (twice for off-diagonal blocks).
    """
    n_diag, T, k = bands_lower.shape[-4], bands_lower.shape[-3], bands_lower.shape[-1]
    flat = bands_lower.reshape((-1, n_diag, T, k, k))
    worst = 0.0
    norms = 0.0
    for item in flat:
        dense = dense_from_bands(item)
        eps_s = solve_error_bound(cond2(dense), k, n_diag - 1, dtype)
        worst = max(worst, eps_s)
        ev = np.linalg.eigvalsh(dense)
        norms = max(norms, 1.0 / ev[0])
    # ||x|| <= ||b|| / lambda_min, ||bbar|| <= ||g|| / lambda_min
    scale = np.linalg.norm(b) * np.linalg.norm(g) * norms**2
    return 2 * (2 * worst + worst**2) * scale


VJP_CASES = [(w, k) for w in (1, 2, 3) for k in (1, 2, 5)]


@pytest.mark.parametrize("dtype", (np.float32, np.float64), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("nrhs", (None, 2))
@pytest.mark.parametrize("w, k", VJP_CASES)
def test_vjp_matches_dense_gradient(backend, rng, w, k, nrhs, lower, dtype):
    T, B = T_DEFAULT, 2
    bands_lower = random_spd_bands(rng, (B,), T, k, w, dtype)
    bands = bands_lower if lower else lower_to_upper(bands_lower, fill=7.0)
    b = random_rhs(rng, (B,), T, k, nrhs, dtype)
    x, vjp = bandsolve.solve_vjp(bands, b, lower=lower, backend=backend)
    np.testing.assert_allclose(x, bandsolve.solve(bands, b, lower=lower, backend=backend),
                               rtol=0, atol=0)
    g = rng.standard_normal(x.shape).astype(dtype)
    d_bands, d_b = vjp(g)
    assert d_bands.shape == bands.shape and d_bands.dtype == dtype
    assert d_b.shape == b.shape and d_b.dtype == dtype
    ref_bands, ref_b = _reference(bands_lower.astype(np.float64), b.astype(np.float64),
                                  g.astype(np.float64), lower)
    atol = _error_scale(bands_lower, b, g, dtype)
    np.testing.assert_allclose(d_bands, ref_bands, rtol=0, atol=atol)
    np.testing.assert_allclose(d_b, ref_b, rtol=0, atol=atol)
    # padding blocks get exactly zero
    for d in range(1, w + 1):
        pad = d_bands[:, d, max(T - d, 0):] if lower else d_bands[:, w - d, : min(d, T)]
        assert not pad.any()
    # diagonal blocks are the symmetrised gradient (to rounding: the two
    # triangles may sum the products in different orders)
    diag = d_bands[:, 0] if lower else d_bands[:, w]
    np.testing.assert_allclose(diag, np.swapaxes(diag, -1, -2), rtol=0, atol=atol)


def _fd_tolerance(bands_lower, b, g, E, x, h, dtype):
    """Derived bound on |central difference - exact directional derivative|.

    Along s, f(s) = g^T (M + s E)^{-1} b and
    |f'''(s)| <= 6 ||g|| ||b|| ||E||^3 / lambda_min(M + sE)^4, so the
    truncation error of the central difference is at most
    ``h^2 ||g|| ||b|| ||E||^3 / (lambda_min - h ||E||)^4``; evaluating f with
    a relative solve error eps_s (plus n u for the dot product) adds
    ``||g|| ||x|| (eps_s + n u) / h``. Summed over the broadcast items.
    """
    n_diag, T, k = bands_lower.shape[-4], bands_lower.shape[-3], bands_lower.shape[-1]
    n = T * k
    u = np.finfo(dtype).eps / 2
    flat_bands = bands_lower.reshape((-1, n_diag, T, k, k))
    flat_E = E.reshape(flat_bands.shape)
    lam, eps_s, e_norm = [], [], []
    for item, e_item in zip(flat_bands, flat_E):
        dense = dense_from_bands(item)
        ev = np.linalg.eigvalsh(dense)
        lam.append(ev[0])
        eps_s.append(solve_error_bound(ev[-1] / ev[0], k, n_diag - 1, dtype))
        e_norm.append(np.linalg.norm(dense_from_bands(e_item), 2))
    lam_min, eps_max, e_max = min(lam), max(eps_s), max(e_norm)
    assert lam_min - h * e_max > 0
    g_norm, b_norm, x_norm = (np.linalg.norm(a) for a in (g, b, x))
    trunc = h**2 * g_norm * b_norm * e_max**3 / (lam_min - h * e_max) ** 4
    rounding = g_norm * x_norm * (eps_max + n * u) / h
    return trunc + rounding


FD_CASES = [
    # bands batch, b batch, nrhs
    ((2,), (2,), None),
    ((2,), (2,), 4),         # nrhs != k: with T = k = nrhs the vector form is read
    ((2, 1), (3,), None),    # bands shared by several b
    ((), (3,), 2),           # one matrix, several right-hand sides
    ((3,), (), None),        # b shared by several bands
]


@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("bands_batch, b_batch, nrhs", FD_CASES)
@pytest.mark.parametrize("w, k", [(1, 1), (1, 3), (2, 2), (3, 2)])
def test_vjp_matches_central_differences(backend, rng, w, k, bands_batch, b_batch, nrhs, lower):
    T = T_DEFAULT
    bands_lower = random_spd_bands(rng, bands_batch, T, k, w)
    bands = bands_lower if lower else lower_to_upper(bands_lower, fill=-3.0)
    b = random_rhs(rng, b_batch, T, k, nrhs)
    x, vjp = bandsolve.solve_vjp(bands, b, lower=lower, backend=backend)
    g = rng.standard_normal(x.shape)
    d_bands, d_b = vjp(g)
    assert d_bands.shape == bands.shape and d_b.shape == b.shape

    E_lower = _symmetric_direction(rng, bands.shape)
    E_lower /= max(np.linalg.norm(dense_from_bands(e), 2)
                   for e in E_lower.reshape((-1,) + bands.shape[-4:]))
    E = E_lower if lower else lower_to_upper(E_lower)
    # h balancing truncation (h^2) against rounding (eps / h) for float64
    h = 1e-4
    fd = (_loss(bands + h * E, b, g, lower, backend)
          - _loss(bands - h * E, b, g, lower, backend)) / (2 * h)
    tol = _fd_tolerance(bands_lower, b, g, E_lower, x, h, np.float64)
    assert abs(np.sum(d_bands * E) - fd) <= tol

    e_b = rng.standard_normal(b.shape)
    fd_b = (_loss(bands, b + h * e_b, g, lower, backend)
            - _loss(bands, b - h * e_b, g, lower, backend)) / (2 * h)
    # f is linear in b: only the rounding term remains
    n = T * k
    eps_s = max(solve_error_bound(cond2(dense_from_bands(a)), k, w, np.float64)
                for a in bands_lower.reshape((-1,) + bands.shape[-4:]))
    tol_b = np.linalg.norm(g) * np.linalg.norm(x) * (eps_s + n * np.finfo(float).eps) / h
    tol_b *= 1 + np.linalg.norm(e_b)
    assert abs(np.sum(d_b * e_b) - fd_b) <= tol_b


@pytest.mark.parametrize("bands_batch, b_batch, nrhs", FD_CASES[2:] + [((2, 3), (3,), 2)])
@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
def test_vjp_broadcasting_sums_shared_operands(backend, rng, bands_batch, b_batch, nrhs, lower):
    T, k, w = T_DEFAULT, 2, 2
    bands_lower = random_spd_bands(rng, bands_batch, T, k, w)
    bands = bands_lower if lower else lower_to_upper(bands_lower)
    b = random_rhs(rng, b_batch, T, k, nrhs)
    x, vjp = bandsolve.solve_vjp(bands, b, lower=lower, backend=backend)
    g = rng.standard_normal(x.shape)
    d_bands, d_b = vjp(g)
    ref_bands, ref_b = _reference(bands_lower, b, g, lower)
    atol = _error_scale(bands_lower, b, g, np.float64)
    np.testing.assert_allclose(d_bands, ref_bands, rtol=0, atol=atol)
    np.testing.assert_allclose(d_b, ref_b, rtol=0, atol=atol)


def test_vjp_is_reusable_and_independent_of_x(backend, rng):
    T, k, w = T_DEFAULT, 3, 1
    bands = random_spd_bands(rng, (2,), T, k, w)
    b = random_rhs(rng, (2,), T, k)
    bands0, b0 = bands.copy(), b.copy()
    x, vjp = bandsolve.solve_vjp(bands, b, backend=backend)
    g1, g2 = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    first = vjp(g1)
    x[...] = 1e300  # the caller owns x; the vjp keeps its own copy
    vjp(g2)
    again = vjp(g1)
    for a, c in zip(first, again):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(bands, bands0)
    np.testing.assert_array_equal(b, b0)
    # linear in g
    lin = vjp(2 * g1 - g2)
    two = vjp(g2)
    for a, c, d in zip(lin, first, two):
        np.testing.assert_allclose(a, 2 * c - d, rtol=1e-12, atol=1e-12 * np.abs(c).max())


@pytest.mark.parametrize("bands_dtype, b_dtype",
                         [(np.float32, np.float64), (np.float64, np.float32)])
def test_vjp_mixed_dtypes_return_input_dtypes(backend, rng, bands_dtype, b_dtype):
    T, k, w = T_DEFAULT, 2, 1
    bands = random_spd_bands(rng, (2,), T, k, w, bands_dtype)
    b = random_rhs(rng, (2,), T, k, None, b_dtype)
    x, vjp = bandsolve.solve_vjp(bands, b, backend=backend)
    assert x.dtype == np.float64  # NumPy promotion
    d_bands, d_b = vjp(np.ones_like(x))
    assert d_bands.dtype == bands_dtype and d_b.dtype == b_dtype
    ref_bands, ref_b = _reference(bands.astype(np.float64), b.astype(np.float64),
                                  np.ones(x.shape), True)
    # computed in float64, rounded once to the input dtype
    for got, ref in ((d_bands, ref_bands), (d_b, ref_b)):
        u = np.finfo(got.dtype).eps / 2
        np.testing.assert_allclose(got, ref, rtol=0,
                                   atol=2 * u * np.abs(ref).max() + _error_scale(
                                       bands.astype(np.float64), b.astype(np.float64),
                                       np.ones(x.shape), np.float64))


def test_vjp_single_block_and_empty_batch(backend, rng):
    bands = random_spd_bands(rng, (2,), 1, 3, 2)
    b = random_rhs(rng, (2,), 1, 3)
    x, vjp = bandsolve.solve_vjp(bands, b, backend=backend)
    g = rng.standard_normal(x.shape)
    d_bands, d_b = vjp(g)
    ref_bands, ref_b = _reference(bands, b, g, True)
    np.testing.assert_allclose(d_bands, ref_bands, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d_b, ref_b, rtol=1e-12, atol=1e-14)

    empty = np.zeros((0, 2, 4, 2, 2))
    x, vjp = bandsolve.solve_vjp(empty, np.zeros((0, 4, 2)), backend=backend)
    assert x.shape == (0, 4, 2)
    d_bands, d_b = vjp(np.zeros((0, 4, 2)))
    assert d_bands.shape == empty.shape and d_b.shape == (0, 4, 2)


def test_vjp_rejects_wrong_cotangent_shape(backend, rng):
    bands = random_spd_bands(rng, (2,), 4, 2, 1)
    x, vjp = bandsolve.solve_vjp(bands, random_rhs(rng, (2,), 4, 2), backend=backend)
    with pytest.raises(ValueError, match=r"g must have the shape of x \(2, 4, 2\); got \(4, 2\)"):
        vjp(np.ones((4, 2)))


# ---------------------------------------------------------------------------
# solve_adjoint: the same gradients from a kept x


@pytest.mark.parametrize("bands_batch, b_batch, nrhs", FD_CASES[2:] + [((2, 3), (3,), 2)])
@pytest.mark.parametrize("lower", (True, False), ids=("lower", "upper"))
@pytest.mark.parametrize("dtype", (np.float64, np.float32))
def test_solve_adjoint_matches_vjp(backend, rng, bands_batch, b_batch, nrhs, lower, dtype):
    T, k, w = T_DEFAULT, 2, 2
    bands_lower = random_spd_bands(rng, bands_batch, T, k, w, dtype)
    bands = bands_lower if lower else lower_to_upper(bands_lower)
    b = random_rhs(rng, b_batch, T, k, nrhs, dtype)
    x, vjp = bandsolve.solve_vjp(bands, b, lower=lower, backend=backend)
    g = rng.standard_normal(x.shape).astype(dtype)
    inputs = [a.copy() for a in (bands, b, x, g)]
    d_bands, d_b = bandsolve.solve_adjoint(bands, b, x, g, lower=lower, backend=backend)
    for a, before in zip((bands, b, x, g), inputs):
        np.testing.assert_array_equal(a, before)  # nothing overwritten
    assert d_bands.shape == bands.shape and d_b.shape == b.shape
    assert d_bands.dtype == dtype and d_b.dtype == dtype
    ref_bands, ref_b = _reference(bands_lower.astype(np.float64), b.astype(np.float64),
                                  g.astype(np.float64), lower)
    atol = _error_scale(bands_lower.astype(np.float64), b.astype(np.float64),
                        g.astype(np.float64), dtype)
    np.testing.assert_allclose(d_bands, ref_bands, rtol=0, atol=atol)
    np.testing.assert_allclose(d_b, ref_b, rtol=0, atol=atol)
    v_bands, v_b = vjp(g)
    np.testing.assert_allclose(d_bands, v_bands, rtol=0, atol=atol)
    np.testing.assert_allclose(d_b, v_b, rtol=0, atol=atol)


def test_solve_adjoint_one_long_sequence(rng, monkeypatch):
    """Through the partitioned factor+solve (one system cut into pieces)."""
    from bandsolve import cpu

    calls = []
    original = cpu.factor_solve_partitioned
    monkeypatch.setattr(cpu, "PARTITION_MIN_FLOPS", 0.0)
    monkeypatch.setattr(cpu, "factor_solve_partitioned",
                        lambda *a: calls.append(a[2]) or original(*a))
    T, k, w = 600, 3, 1
    bands = random_spd_bands(rng, (), T, k, w)
    b = random_rhs(rng, (), T, k, 2)
    x, vjp = bandsolve.solve_vjp(bands, b)
    g = rng.standard_normal(x.shape)
    calls.clear()
    d_bands, d_b = bandsolve.solve_adjoint(bands, b, x, g)
    assert calls  # b_bar came from the partitioned path
    v_bands, v_b = vjp(g)
    scale = np.abs(v_bands).max()
    np.testing.assert_allclose(d_bands, v_bands, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(d_b, v_b, rtol=0, atol=1e-12 * np.abs(v_b).max())


def test_solve_adjoint_errors(rng):
    bands = random_spd_bands(rng, (2,), 4, 2, 1)
    b = random_rhs(rng, (2,), 4, 2)
    x = bandsolve.solve(bands, b)
    with pytest.raises(ValueError, match=r"x and g must have the same shape; got x \(2, 4, 2\) "
                                         r"and g \(4, 2\)"):
        bandsolve.solve_adjoint(bands, b, x, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"x must have the shape of the solution \(2, 4, 2\); "
                                         r"got \(1, 4, 2\)"):
        bandsolve.solve_adjoint(bands, b, x[:1], np.ones((1, 4, 2)))
    bad = bands.copy()
    bad[1, 0, 2] = -np.eye(2)
    with pytest.raises(bandsolve.LinAlgError, match=r"batch index \(1,\)"):
        bandsolve.solve_adjoint(bad, b, x, np.ones_like(x))
