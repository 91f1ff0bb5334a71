"""Independent references for the bandsolve tests.

Everything here works on plain NumPy arrays with dense or SciPy storage and
never calls bandsolve, so it can serve as the reference the library is checked
against. Notation as in DESIGN.md section 2: a batch of SPD matrices M with
T x T blocks of size k x k and block bandwidth w, stored as the lower block
band ``bands[..., d, t] = M[t+d, t]`` of shape (..., w+1, T, k, k); the upper
form stores ``bands[..., w-d, s] = M[s-d, s]``.

Error bounds used by the tests (u = unit roundoff of the working dtype,
n = T k, p = (w+1) k the longest inner product of the banded algorithm):

* Residual ratio, LAPACK's yardstick (xPOT02 with an extra 1/n, DESIGN.md
  section 6): ``||M x - b||_1 / (||M||_1 ||x||_1 n eps) < 30``, eps = 2 u.
* Forward error of a backward-stable banded Cholesky solve. Higham (ASNA,
  Thm 10.4 with inner products of length at most p) gives
  ``(M + dM) x_hat = b`` with ``|dM| <= gamma_{3p+1} |L| |L^T|``; for a
  matrix with at most p nonzeros per row and column,
  ``|| |L| ||_2 <= sqrt(p) ||L||_2``, so ``||dM||_2 <= p gamma_{3p+1} ||M||_2``
  and, to first order, ``||x_hat - x||_2 / ||x||_2 <= kappa_2(M) p (3p+1) u``.
  :func:`solve_error_bound` returns that (with the exact 1/(1-.) factor).
"""

import math
import os

import numpy as np

__all__ = [
    "CUDASIM",
    "sized",
    "random_spd_bands",
    "random_rhs",
    "dense_from_bands",
    "lower_to_upper",
    "upper_to_lower",
    "scalar_band",
    "residual_ratio",
    "relative_error",
    "solve_error_bound",
    "cond2",
    "batch_items",
    "dense_band_gradient",
]

#: True in the pytest process that drives the CUDA kernels under the simulator.
CUDASIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def sized(cpu, sim):
    """Pick a problem size: ``cpu`` normally, ``sim`` under the CUDA simulator.

    The simulator runs every GPU thread as Python code, so its tests use tiny
    sizes while the CPU tests use the full matrix of cases.

    Parameters
    ----------
    cpu, sim : object
        The value (or tuple of parameter values) for each process.

    Returns
    -------
    object
        ``sim`` when ``NUMBA_ENABLE_CUDASIM=1``, else ``cpu``.
    """
    return sim if CUDASIM else cpu


# ---------------------------------------------------------------------------
# generators


def _band_product(L):
    """Lower block band of L L^T for a lower block band L (..., w+1, T, k, k)."""
    n_diag, T = L.shape[-4], L.shape[-3]
    M = np.zeros_like(L)
    # M[t+d, t] = sum_j L[t+d, j] L[t, j]^T, with L[t+d, j] stored at [t+d-j, j]
    # and L[t, j] at [t-j, j]; e = t+d-j runs from d to w.
    for d in range(n_diag):
        for e in range(d, n_diag):
            t = np.arange(max(0, e - d), T - d)
            if t.size == 0:
                continue
            j = t + d - e
            M[..., d, t, :, :] += np.einsum(
                "...tij,...tlj->...til", L[..., e, j, :, :], L[..., e - d, j, :, :]
            )
    return M


def random_spd_bands(rng, batch_shape, T, k, w, dtype=np.float64, *, coupling=0.5,
                     diag_min=1.0, garbage=True):
    """Random SPD block-banded matrices in lower block-band storage.

    The matrices are built as M = L L^T from a random lower block-banded L:
    diagonal entries uniform in [diag_min, 2], every other entry in the band
    uniform in [-c, c] / (p - 1) with ``c = coupling`` and ``p = (w+1) k``.
    Each row and column of L has at most p - 1 off-diagonal entries, so
    ``||L - D||_2 <= c`` and ``kappa_2(M) <= ((2 + c) / (diag_min - c))**2``
    (25 with the defaults). M has block bandwidth exactly w and is not
    diagonally dominant in general.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch_shape : tuple of int
    T, k, w : int
        Number of blocks, block size and block bandwidth.
    dtype : dtype, optional
        Output dtype; the matrix is built in float64 and rounded once.
    coupling : float, optional
        ``c`` above, in [0, diag_min).
    diag_min : float, optional
        Smallest diagonal entry of L, in (0, 2]; lower values give worse
        conditioning.
    garbage : bool, optional
        Fill the entries the solver must ignore (padding blocks with
        ``t + d >= T`` and the strict upper triangle of the diagonal blocks)
        with large random values, so tests see whether they are read.

    Returns
    -------
    bands : ndarray, shape batch_shape + (w+1, T, k, k)
    """
    if not 0 <= coupling < diag_min <= 2:
        raise ValueError("need 0 <= coupling < diag_min <= 2")
    batch_shape = tuple(batch_shape)
    p = (w + 1) * k
    L = rng.uniform(-1.0, 1.0, batch_shape + (w + 1, T, k, k)) * (coupling / max(p - 1, 1))
    L[..., 0, :, :, :] = np.tril(L[..., 0, :, :, :], -1)
    idx = np.arange(k)
    L[..., 0, :, idx, idx] = rng.uniform(diag_min, 2.0, (k,) + batch_shape + (T,))
    for d in range(1, w + 1):
        L[..., d, max(T - d, 0):, :, :] = 0.0
    M = _band_product(L)
    if garbage:
        upper = np.triu(np.ones((k, k), dtype=bool), 1)
        M[..., 0, :, upper] = rng.uniform(50.0, 100.0, M[..., 0, :, upper].shape)
        for d in range(1, w + 1):
            pad = M[..., d, max(T - d, 0):, :, :]
            M[..., d, max(T - d, 0):, :, :] = rng.uniform(50.0, 100.0, pad.shape)
    return M.astype(dtype)


def random_rhs(rng, batch_shape, T, k, nrhs=None, dtype=np.float64):
    """Standard normal right-hand sides of shape batch + (T, k[, nrhs])."""
    core = (T, k) if nrhs is None else (T, k, nrhs)
    return rng.standard_normal(tuple(batch_shape) + core).astype(dtype)


# ---------------------------------------------------------------------------
# storage conversions


def dense_from_bands(bands, lower=True):
    """Assemble the dense symmetric matrices (..., Tk, Tk) in float64.

    Reads exactly what the contract says is read: the lower (upper) triangle
    of the diagonal blocks and the in-range off-diagonal blocks.
    """
    bands = np.asarray(bands, dtype=np.float64)
    if not lower:
        bands = upper_to_lower(bands)
    n_diag, T, k = bands.shape[-4], bands.shape[-3], bands.shape[-1]
    batch = bands.shape[:-4]
    n = T * k
    A = np.zeros(batch + (n, n))
    for t in range(T):
        blk = np.tril(bands[..., 0, t, :, :])
        blk = blk + np.swapaxes(np.tril(blk, -1), -1, -2)
        A[..., t * k:(t + 1) * k, t * k:(t + 1) * k] = blk
        for d in range(1, n_diag):
            if t + d < T:
                off = bands[..., d, t, :, :]
                A[..., (t + d) * k:(t + d + 1) * k, t * k:(t + 1) * k] = off
                A[..., t * k:(t + 1) * k, (t + d) * k:(t + d + 1) * k] = np.swapaxes(off, -1, -2)
    return A


def lower_to_upper(bands, fill=0.0):
    """Upper block-band form ``U[..., w-d, s] = M[s-d, s]`` of a lower form.

    Padding cells of the upper form (``s < d``) get ``fill``.
    """
    bands = np.asarray(bands)
    n_diag, T = bands.shape[-4], bands.shape[-3]
    out = np.full(bands.shape, fill, dtype=bands.dtype)
    for d in range(n_diag):
        if T - d > 0:
            out[..., n_diag - 1 - d, d:, :, :] = np.swapaxes(bands[..., d, : T - d, :, :], -1, -2)
    return out


def upper_to_lower(bands, fill=0.0):
    """Inverse of :func:`lower_to_upper` (padding of the lower form gets ``fill``)."""
    bands = np.asarray(bands)
    n_diag, T = bands.shape[-4], bands.shape[-3]
    out = np.full(bands.shape, fill, dtype=bands.dtype)
    for d in range(n_diag):
        if T - d > 0:
            out[..., d, : T - d, :, :] = np.swapaxes(bands[..., n_diag - 1 - d, d:, :, :], -1, -2)
    return out


def scalar_band(dense, half_bandwidth, lower=True):
    """SciPy banded storage ``ab`` of dense symmetric matrices (..., n, n).

    Lower form ``ab[i-j, j] = a[i, j]``, upper form ``ab[u+i-j, j] = a[i, j]``;
    unused corner cells are zero.
    """
    n = dense.shape[-1]
    u = half_bandwidth
    ab = np.zeros(dense.shape[:-2] + (u + 1, n), dtype=dense.dtype)
    for off in range(min(u + 1, n)):
        diag = np.diagonal(dense, offset=-off, axis1=-2, axis2=-1)  # a[j+off, j]
        if lower:
            ab[..., off, : n - off] = diag
        else:
            ab[..., u - off, off:] = diag
    return ab


# ---------------------------------------------------------------------------
# accuracy measures


def residual_ratio(dense, x, b, dtype):
    """LAPACK-style residual ratio ``||M x - b||_1 / (||M||_1 ||x||_1 n eps)``.

    Parameters
    ----------
    dense : ndarray (n, n)
        The matrix the solver saw (rounded to its dtype), in float64.
    x, b : ndarray (n,) or (n, nrhs)
        Computed solution and right-hand side.
    dtype : dtype
        Working dtype of the solver; ``eps`` is its machine epsilon.

    Returns
    -------
    float
        The largest ratio over the right-hand-side columns.
    """
    x = np.asarray(x, dtype=np.float64).reshape(dense.shape[0], -1)
    b = np.asarray(b, dtype=np.float64).reshape(dense.shape[0], -1)
    n = dense.shape[0]
    eps = np.finfo(dtype).eps
    anorm = np.abs(dense).sum(axis=0).max()
    r = dense @ x - b
    ratios = [
        np.abs(r[:, j]).sum() / (anorm * max(np.abs(x[:, j]).sum(), np.finfo(float).tiny) * n * eps)
        for j in range(x.shape[1])
    ]
    return max(ratios) if ratios else 0.0


def relative_error(x, ref):
    """``||x - ref||_2 / ||ref||_2`` in float64 (0 for an all-zero pair)."""
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    den = np.linalg.norm(ref)
    num = np.linalg.norm(x - ref)
    return num / den if den else num


def cond2(dense):
    """2-norm condition number from the eigenvalues of a symmetric matrix."""
    ev = np.linalg.eigvalsh(dense)
    return ev[-1] / ev[0]


def solve_error_bound(kappa, k, w, dtype):
    """Forward-error bound ``kappa p (3p+1) u / (1 - kappa p (3p+1) u)``.

    See the module docstring for the derivation; ``p = (w+1) k`` and ``u`` is
    the unit roundoff (eps / 2) of ``dtype``.
    """
    p = (w + 1) * k
    u = np.finfo(dtype).eps / 2
    delta = kappa * p * (3 * p + 1) * u
    if delta >= 1:
        return math.inf
    return delta / (1 - delta)


# ---------------------------------------------------------------------------
# batching references


def batch_items(full_shape, *batch_shapes):
    """Yield ``(index, (flat index into each batch))`` over a broadcast batch.

    For every multi-index of ``full_shape`` gives the flat position in each
    operand's own batch (NumPy broadcasting rules), which is what a loop over
    the batch of a broadcast call sees.
    """
    maps = [
        np.broadcast_to(np.arange(math.prod(s)).reshape(s), full_shape) for s in batch_shapes
    ]
    for index in np.ndindex(*full_shape):
        yield index, tuple(int(m[index]) for m in maps)


def dense_band_gradient(x, bbar, T, k, n_diag, lower=True):
    """Band cotangent of ``loss = g . M^{-1} b`` from the dense gradient.

    With x = M^{-1} b and bbar = M^{-1} g, the gradient with respect to the
    full matrix is ``G = -bbar x^T`` (summed over right-hand sides). Each
    stored block stands for the symmetric matrix entries it represents:
    ``d[0, t] = (G[t,t] + G[t,t]^T)/2`` and ``d[d, t] = G[t+d,t] + G[t,t+d]^T``
    in the lower form; the upper form stores the transpose of the latter at
    ``[w-d, t+d]``. Padding blocks get zero.

    Parameters
    ----------
    x, bbar : ndarray (n, nrhs)
        Solution and adjoint solution ``M^{-1} g`` of one system.
    T, k, n_diag : int
    lower : bool

    Returns
    -------
    ndarray, shape (n_diag, T, k, k)
    """
    G = -(bbar @ x.T)
    out = np.zeros((n_diag, T, k, k))

    def blk(r, c):
        return G[r * k:(r + 1) * k, c * k:(c + 1) * k]

    for t in range(T):
        out[0, t] = (blk(t, t) + blk(t, t).T) / 2
        for d in range(1, n_diag):
            if t + d < T:
                out[d, t] = blk(t + d, t) + blk(t, t + d).T
    if not lower:
        out = lower_to_upper(out)
    return out
