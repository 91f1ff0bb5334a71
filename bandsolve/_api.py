"""Public block-banded API: cholesky, BandedCholesky, solve, solve_vjp.

Storage of a batch of symmetric positive definite block-banded matrices M with
T x T blocks of size k x k and block bandwidth w (lower form, the default)::

    bands[..., d, t] = M[t+d, t]        (block row t+d, block column t)

and in the upper form (``lower=False``, SciPy's convention with k = 1)::

    bands[..., w-d, s] = M[s-d, s]      (block row s-d, block column s)

Right-hand sides are (..., T, k) or (..., T, k, nrhs); batch dimensions
broadcast with NumPy rules. The factor L (M = L L^T) uses the same storage.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import _arrays
from . import _validate as V

__all__ = ["cholesky", "BandedCholesky", "solve", "solve_vjp"]


# ---------------------------------------------------------------------------
# storage conversions (loops run over the w+1 diagonals only)


def _upper_to_lower(xp, bands, dtype):
    """Lower-form copy of an upper-form array (padding set to zero)."""
    n_diag, T = bands.shape[-4], bands.shape[-3]
    out = xp.zeros(bands.shape, dtype=dtype)
    for d in range(n_diag):
        if T - d > 0:
            out[..., d, : T - d, :, :] = xp.swapaxes(bands[..., n_diag - 1 - d, d:, :, :], -1, -2)
    return out


def _lower_to_upper(xp, L, out):
    """Write the lower-form factor L into ``out`` in upper form (U = L^T)."""
    n_diag, T = L.shape[-4], L.shape[-3]
    for d in range(n_diag):
        if T - d > 0:
            out[..., n_diag - 1 - d, d:, :, :] = xp.swapaxes(L[..., d, : T - d, :, :], -1, -2)
    return out


def _transpose_band(xp, d_lower, shape):
    """Cotangent of an upper-form input from the lower-form cotangent."""
    out = xp.zeros(shape, dtype=d_lower.dtype)
    return _lower_to_upper(xp, d_lower, out)


# ---------------------------------------------------------------------------
# preparation of operands


def _can_overwrite(xp, a, shape, dtype):
    if xp is np:
        ok = a.flags.c_contiguous and a.flags.writeable
    else:
        ok = a.flags.c_contiguous
    return ok and tuple(a.shape) == tuple(shape) and a.dtype == dtype


@dataclass(frozen=True)
class _Matrices:
    """Validated matrices in lower form, batch flattened."""

    xp: object
    backend: object
    flat: object  # (B, w+1, T, k, k), C-contiguous, working dtype
    batch_shape: tuple
    n_diag: int
    T: int
    k: int
    writable: bool  # True when ``flat`` may be overwritten (private copy or allowed)


def _prepare_matrices(bands, *, lower, dtype_with, overwrite, check_finite, backend,
                      name="bands"):
    """Validate ``bands`` and bring it to lower form, batch flattened.

    A C-contiguous ``bands`` of the working dtype is used as is (writable only
    when ``overwrite`` allows it); anything else becomes a private copy.
    """
    xp = _arrays.array_module(bands, *dtype_with)
    bands = _arrays.asarray(bands, xp)
    others = [_arrays.asarray(a, xp) for a in dtype_with]
    batch_shape, n_diag, T, k = V.check_bands(bands, name)
    dtype = V.working_dtype(bands, *others, names=(name,) + ("b",) * len(others))
    be = _arrays.get_backend(_arrays.resolve_backend(backend, bands, *others))
    usable = lower and _can_overwrite(xp, bands, bands.shape, dtype)
    if not lower:
        flat, writable = _upper_to_lower(xp, bands, dtype), True
    elif usable:
        flat, writable = bands, bool(overwrite)
    else:
        flat, writable = xp.array(bands, dtype=dtype, order="C", copy=True), True
    flat = flat.reshape((V.prod(batch_shape), n_diag, T, k, k))
    mats = _Matrices(xp, be, flat, batch_shape, n_diag, T, k, writable)
    return mats, dtype, bool(check_finite)


def _prepare_rhs(xp, b, mats_batch, T, k, dtype, overwrite_b, check_finite, name="b",
                 matrix_form=None, matrix_name="bands"):
    """Return (x, x_flat, full_batch, nrhs, index); x is writable, C-contiguous."""
    b = _arrays.asarray(b, xp)
    b_batch, nrhs = V.split_rhs(b, T, k, name=name, bands_name=matrix_name,
                                matrix_form=matrix_form)
    full = V.broadcast_batch(mats_batch, b_batch, matrix_name, name)
    if check_finite:
        V.check_finite(xp, b, name)
    core = (T, k) if nrhs is None else (T, k, nrhs)
    if overwrite_b and _can_overwrite(xp, b, full + core, dtype):
        x = b
    else:
        x = xp.empty(full + core, dtype=dtype)
        x[...] = b
    # explicit batch size: -1 is ambiguous when nrhs == 0
    x_flat = x.reshape((V.prod(full), T, k, 1 if nrhs is None else nrhs))
    n_mats = V.prod(mats_batch)
    if full == tuple(mats_batch):
        index = np.arange(n_mats, dtype=np.int64)
    else:
        index = np.broadcast_to(
            np.arange(n_mats, dtype=np.int64).reshape(mats_batch), full
        ).ravel()
    return x, x_flat, full, nrhs, index


def _index_for(be, index):
    """Index arrays live where the backend computes."""
    to_device = getattr(be, "index_array", None)
    return to_device(index) if to_device is not None else index


def _host(xp, a):
    return a.get() if xp is not np and hasattr(a, "get") else np.asarray(a)


# ---------------------------------------------------------------------------
# the factor object


class BandedCholesky:
    """Cholesky factors M = L L^T of a batch of SPD block-banded matrices.

    Returned by :func:`cholesky`; not meant to be built directly. Factor once,
    then call :meth:`solve` for as many right-hand sides as needed.

    Attributes
    ----------
    factor : array, shape (..., w+1, T, k, k)
        The factor in the storage of the input (L in lower form, U = L^T in
        upper form). Items that failed to factor are NaN.
    info : int array, shape (...)
        Per-item status without raising: 0 success, ``j > 0`` the leading minor
        of order ``j`` is not positive definite (inf/NaN input, when not
        rejected by ``check_finite``, shows up as such a failure). On the GPU
        it stays on the device (no host synchronisation).
    lower : bool
        Storage form of the input and of :attr:`factor`.
    batch_shape, bandwidth, n_blocks, block_size : tuple, int, int, int
        ``(...)``, ``w``, ``T`` and ``k``.
    backend : str
        ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, mats, dtype, info, lower):
        self._mats = mats
        self._info = info
        self.lower = lower
        self.dtype = np.dtype(dtype)

    # -- descriptive properties
    @property
    def batch_shape(self):
        return self._mats.batch_shape

    @property
    def bandwidth(self):
        return self._mats.n_diag - 1

    @property
    def n_blocks(self):
        return self._mats.T

    @property
    def block_size(self):
        return self._mats.k

    @property
    def backend(self):
        return self._mats.backend.name

    @property
    def info(self):
        return self._info.reshape(self.batch_shape)

    @property
    def factor(self):
        m = self._mats
        L = m.flat.reshape(m.batch_shape + m.flat.shape[1:])
        if self.lower:
            return L
        return _lower_to_upper(m.xp, L, m.xp.zeros(L.shape, dtype=L.dtype))

    def __repr__(self):
        return (
            f"BandedCholesky(batch_shape={self.batch_shape}, bandwidth={self.bandwidth}, "
            f"n_blocks={self.n_blocks}, block_size={self.block_size}, "
            f"dtype={self.dtype.name}, backend={self.backend!r})"
        )

    def solve(self, b, *, overwrite_b=False, check_finite=True):
        """Solve M x = b with the stored factor.

        Parameters
        ----------
        b : array, shape (..., T, k) or (..., T, k, nrhs)
            Right-hand sides; batch dimensions broadcast against the factor's.
        overwrite_b : bool, optional
            Allow the solution to be written into ``b`` (when its dtype,
            shape and layout permit).
        check_finite : bool, optional
            Raise ValueError if ``b`` contains inf or NaN.

        Returns
        -------
        x : array, shape of ``b`` broadcast against the batch
            Items whose factor failed are NaN.

        Examples
        --------
        >>> import numpy as np, bandsolve
        >>> bands = np.zeros((2, 4, 1, 1)); bands[0] = 2.0; bands[1] = -1.0
        >>> fac = bandsolve.cholesky(bands)
        >>> fac.solve(np.ones((4, 1))).ravel()
        array([2., 3., 3., 2.])
        """
        return self._solve(b, overwrite_b=overwrite_b, check_finite=check_finite)

    def _solve(self, b, *, overwrite_b, check_finite, matrix_form=None, name="b",
               matrix_name="bands"):
        m = self._mats
        xp = m.xp
        b = _arrays.asarray(b, xp)
        dtype = np.result_type(self.dtype, V.working_dtype(b, names=(name,)))
        x, x_flat, _, _, index = _prepare_rhs(
            xp, b, m.batch_shape, m.T, m.k, dtype, overwrite_b, check_finite, name=name,
            matrix_form=matrix_form, matrix_name=matrix_name,
        )
        L = m.flat if m.flat.dtype == dtype else m.flat.astype(dtype)
        m.backend.solve(L, x_flat, _index_for(m.backend, index))
        return x

    def logdet(self):
        """Return log(det(M)) per batch item, shape ``batch_shape``.

        Examples
        --------
        >>> import numpy as np, bandsolve
        >>> bands = np.zeros((2, 3, 1, 1)); bands[0] = 2.0
        >>> round(float(bandsolve.cholesky(bands).logdet()), 12)  # log(2**3)
        2.07944154168
        """
        m = self._mats
        return m.backend.logdet(m.flat).reshape(m.batch_shape)


def _check_info(mats, info, check, check_finite, name="bands"):
    if check or check_finite:
        host = _host(mats.xp, info)
        if not check:
            host = np.where(host < 0, host, 0)  # only the non-finite report
        V.raise_for_info(host, mats.batch_shape, mats.k, check_finite, name=name)


def cholesky(bands, *, lower=True, overwrite=False, check_finite=True, check=True, backend="auto"):
    """Cholesky-factor a batch of SPD block-banded matrices.

    Parameters
    ----------
    bands : array, shape (..., w+1, T, k, k)
        Lower block band ``bands[..., d, t] = M[t+d, t]`` (or the upper form
        when ``lower=False``). Only the lower (upper) triangle of the diagonal
        blocks is read; padding blocks past the end are ignored.
    lower : bool, optional
        Storage form of ``bands`` (default lower).
    overwrite : bool, optional
        Allow the factor to be computed in the memory of ``bands`` (lower,
        C-contiguous, of the working dtype); otherwise ``bands`` is never
        modified.
    check_finite : bool, optional
        Raise ValueError when an entry that is read is inf or NaN.
    check : bool, optional
        Raise :class:`LinAlgError` when a matrix is not positive definite. With
        ``check=False`` no LinAlgError is raised, failed items are NaN and
        :attr:`BandedCholesky.info` reports them. ``check_finite=True`` still
        raises ValueError for inf/NaN input; on the GPU that check needs one
        host synchronisation, so pass ``check=False, check_finite=False`` for
        none at all.
    backend : {"auto", "cpu", "cuda"}, optional
        ``"auto"`` uses the GPU for CuPy (``__cuda_array_interface__``) input.

    Returns
    -------
    BandedCholesky

    Raises
    ------
    LinAlgError
        If a matrix is not positive definite (``check=True``).
    ValueError
        Bad shapes, or inf/NaN with ``check_finite=True``.
    TypeError
        Input that is not float32/float64.

    Examples
    --------
    >>> import numpy as np, bandsolve
    >>> T, k = 5, 2
    >>> bands = np.zeros((2, T, k, k))
    >>> bands[0] = 4 * np.eye(k)        # diagonal blocks
    >>> bands[1] = -np.eye(k)           # sub-diagonal blocks
    >>> fac = bandsolve.cholesky(bands)
    >>> fac
    BandedCholesky(batch_shape=(), bandwidth=1, n_blocks=5, block_size=2, dtype=float64, backend='cpu')
    >>> x = fac.solve(np.ones((T, k)))
    >>> x.shape
    (5, 2)
    >>> float(fac.logdet()) > 0
    True
    """
    return _cholesky(bands, lower=lower, overwrite=overwrite, check_finite=check_finite,
                     check=check, backend=backend)


def _cholesky(bands, *, lower, overwrite, check_finite, check, backend, name="bands"):
    """:func:`cholesky`, with ``name`` the argument named in error messages."""
    mats, dtype, check_finite = _prepare_matrices(
        bands, lower=lower, dtype_with=(), overwrite=overwrite,
        check_finite=check_finite, backend=backend, name=name,
    )
    mats, info = _factor(mats, check_finite)
    _check_info(mats, info, check, check_finite, name=name)
    return BandedCholesky(mats, dtype, info, lower)


def _from_factor(L, backend="auto"):
    """A :class:`BandedCholesky` over a lower factor ``L`` (..., w+1, T, k, k)
    computed elsewhere (smnn assembles M inside the factor kernel); ``L`` is
    taken over, not copied."""
    mats, dtype, _ = _prepare_matrices(L, lower=True, dtype_with=(), overwrite=True,
                                       check_finite=False, backend=backend, name="L")
    info = np.zeros(mats.flat.shape[0], dtype=np.int64)
    return BandedCholesky(mats, dtype, info, True)


def _factor(mats, check_finite):
    """Factor into the input's memory when allowed, else into a new array."""
    L = mats.flat if mats.writable else mats.xp.empty_like(mats.flat)
    info = mats.backend.factor(mats.flat, L, check_finite)
    return dataclasses.replace(mats, flat=L, writable=True), info


def _factor_and_solve(bands, b, *, lower, overwrite_bands, overwrite_b, check_finite,
                      check, backend, keep_factor, matrix_form=None, names=("bands", "b")):
    mats, dtype, check_finite = _prepare_matrices(
        bands, lower=lower, dtype_with=(b,), overwrite=overwrite_bands,
        check_finite=check_finite, backend=backend, name=names[0],
    )
    x, x_flat, full, nrhs, index = _prepare_rhs(
        mats.xp, b, mats.batch_shape, mats.T, mats.k, dtype, overwrite_b, check_finite,
        name=names[1], matrix_form=matrix_form, matrix_name=names[0],
    )
    be = mats.backend
    identity = full == tuple(mats.batch_shape)
    if keep_factor or not identity:
        mats, info = _factor(mats, check_finite)
        _check_info(mats, info, check, check_finite, name=names[0])
        be.solve(mats.flat, x_flat, _index_for(be, index))
    else:
        info = be.factor_solve(mats.flat, x_flat, _index_for(be, index), check_finite,
                               mats.writable)
        _check_info(mats, info, check, check_finite, name=names[0])
    return mats, dtype, info, x, x_flat, index


def solve(bands, b, *, lower=True, overwrite_bands=False, overwrite_b=False,
          check_finite=True, check=True, backend="auto"):
    """Solve M x = b for a batch of SPD block-banded matrices (factor + solve).

    Parameters
    ----------
    bands : array, shape (..., w+1, T, k, k)
        The matrices, as in :func:`cholesky`.
    b : array, shape (..., T, k) or (..., T, k, nrhs)
        Right-hand sides. The vector form is read when ``b.shape[-2:] ==
        (T, k)``. Batch dimensions broadcast against those of ``bands``; a
        matrix shared by many right-hand sides is factored once.
    lower, check_finite, check, backend
        As in :func:`cholesky`.
    overwrite_bands, overwrite_b : bool, optional
        Allow the inputs' memory to be reused.

    Returns
    -------
    x : array, shape of ``b`` broadcast against the batch of ``bands``

    Raises
    ------
    LinAlgError, ValueError, TypeError
        As in :func:`cholesky`.

    Examples
    --------
    >>> import numpy as np, bandsolve
    >>> rng = np.random.default_rng(0)
    >>> B, T, k = 3, 50, 4
    >>> bands = 0.1 * rng.standard_normal((B, 2, T, k, k))
    >>> bands[:, 0] += 4 * np.eye(k)
    >>> b = rng.standard_normal((B, T, k))
    >>> x = bandsolve.solve(bands, b)
    >>> x.shape
    (3, 50, 4)
    """
    _, _, _, x, _, _ = _factor_and_solve(
        bands, b, lower=lower, overwrite_bands=overwrite_bands, overwrite_b=overwrite_b,
        check_finite=check_finite, check=check, backend=backend, keep_factor=False,
    )
    return x


def solve_vjp(bands, b, *, lower=True, overwrite_bands=False, overwrite_b=False,
              check_finite=True, check=True, backend="auto"):
    """Solve M x = b and return a function for its vector-Jacobian product.

    The adjoint of x = M^{-1} b for a cotangent g is ``b_bar = M^{-1} g`` (one
    more solve with the stored factor) and, restricted to the stored band,
    ``d_bands[0, t] = -(b_bar_t x_t^T + x_t b_bar_t^T) / 2`` and
    ``d_bands[d, t] = -(b_bar_{t+d} x_t^T + x_{t+d} b_bar_t^T)`` for d >= 1:
    the gradient with respect to the symmetric matrix each stored block
    stands for (an off-diagonal block appears twice in M).

    Parameters
    ----------
    bands, b, lower, overwrite_bands, overwrite_b, check_finite, check, backend
        As in :func:`solve`.

    Returns
    -------
    x : array
        The solution, as :func:`solve` returns it.
    vjp : callable
        ``vjp(g) -> (d_bands, d_b)`` with ``g`` of the shape of ``x``;
        ``d_bands`` has the shape and storage form of ``bands`` and ``d_b``
        the shape of ``b`` (broadcast dimensions summed). Padding blocks get
        zero. It can be called any number of times.

    Examples
    --------
    >>> import numpy as np, bandsolve
    >>> bands = np.zeros((2, 3, 1, 1)); bands[0] = 2.0
    >>> x, vjp = bandsolve.solve_vjp(bands, np.ones((3, 1)))
    >>> d_bands, d_b = vjp(np.ones((3, 1)))
    >>> d_b.ravel()
    array([0.5, 0.5, 0.5])
    >>> d_bands[0].ravel()          # -b_bar x^T on the diagonal
    array([-0.25, -0.25, -0.25])
    """
    xp_in = _arrays.array_module(bands, b)
    bands_in = _arrays.asarray(bands, xp_in)
    b_in = _arrays.asarray(b, xp_in)
    bands_shape, bands_dtype = tuple(bands_in.shape), bands_in.dtype
    b_shape, b_dtype = tuple(b_in.shape), b_in.dtype
    mats, dtype, info, x, x_flat, index = _factor_and_solve(
        bands_in, b_in, lower=lower, overwrite_bands=overwrite_bands, overwrite_b=overwrite_b,
        check_finite=check_finite, check=check, backend=backend, keep_factor=True,
    )
    x_saved = x_flat.copy()  # the caller may modify x; the vjp must not see it
    be, xp = mats.backend, mats.xp

    def vjp(g):
        g = _arrays.asarray(g, xp)
        if tuple(g.shape) != tuple(x.shape):
            raise ValueError(f"g must have the shape of x {tuple(x.shape)}; got {tuple(g.shape)}")
        bbar = xp.array(g, dtype=dtype, order="C", copy=True).reshape(x_saved.shape)
        be.solve(mats.flat, bbar, _index_for(be, index))
        return _band_gradients(mats, bbar, x_saved, index, tuple(x.shape), lower,
                               (bands_shape, bands_dtype), (b_shape, b_dtype))

    return x, vjp


def _band_gradients(mats, bbar, x_flat, index, x_shape, lower, bands_like, b_like):
    """(d_bands, d_b) from b_bar = M^{-1} g and x, both (Bx, T, k, nrhs)."""
    be, xp = mats.backend, mats.xp
    n_mats = V.prod(mats.batch_shape)
    d_flat = be.band_cotangent(bbar, x_flat, _index_for(be, index), n_mats, mats.n_diag)
    d_bands = d_flat.reshape(mats.batch_shape + d_flat.shape[1:])
    if not lower:
        d_bands = _transpose_band(xp, d_bands, d_bands.shape)
    d_bands = V.sum_to_shape(xp, d_bands, bands_like[0]).astype(bands_like[1], copy=False)
    d_b = V.sum_to_shape(xp, bbar.reshape(x_shape), b_like[0]).astype(b_like[1], copy=False)
    return d_bands, d_b


def solve_adjoint(bands, b, x, g, *, lower=True, check=True, backend="auto"):
    """Gradients of ``x = solve(bands, b)`` for a cotangent ``g``, given ``x``.

    What ``vjp(g)`` of :func:`solve_vjp` returns, for callers that kept the
    forward's solution instead of the closure (autograd backward passes): no
    factor is held between the two passes, and ``b_bar = M^{-1} g`` comes from
    one fused factor + solve (the partitioned one for a few long systems)
    instead of a factor, a solve for ``x`` again, and a solve for ``b_bar``.
    The inputs are assumed finite (the forward checked them).

    Parameters
    ----------
    bands, b, lower, check, backend
        As given to :func:`solve` for the forward.
    x : array
        Its result (shape of ``b`` broadcast against the batch of ``bands``).
    g : array, shape of ``x``
        Cotangent of ``x``.

    Returns
    -------
    d_bands, d_b : arrays
        As ``vjp(g)`` of :func:`solve_vjp`: shapes and dtypes of ``bands`` and
        ``b``.

    Raises
    ------
    ValueError
        ``x`` or ``g`` not of the shape of the solution.
    LinAlgError
        As :func:`solve` (with ``check=True``).

    Examples
    --------
    >>> import numpy as np, bandsolve
    >>> bands = np.zeros((2, 3, 1, 1)); bands[0] = 2.0
    >>> b = np.ones((3, 1))
    >>> x = bandsolve.solve(bands, b)
    >>> d_bands, d_b = bandsolve.solve_adjoint(bands, b, x, np.ones((3, 1)))
    >>> d_b.ravel()
    array([0.5, 0.5, 0.5])
    >>> d_bands[0].ravel()
    array([-0.25, -0.25, -0.25])
    """
    xp = _arrays.array_module(bands, b, x, g)
    bands_in, b_in, x_in, g_in = (_arrays.asarray(a, xp) for a in (bands, b, x, g))
    if tuple(x_in.shape) != tuple(g_in.shape):
        raise ValueError(f"x and g must have the same shape; got x {tuple(x_in.shape)} "
                         f"and g {tuple(g_in.shape)}")
    mats, dtype, info, bbar, bbar_flat, index = _factor_and_solve(
        bands_in, g_in, lower=lower, overwrite_bands=False, overwrite_b=False,
        check_finite=False, check=check, backend=backend, keep_factor=False,
        names=("bands", "g"),
    )
    if tuple(bbar.shape) != tuple(x_in.shape):
        raise ValueError(f"x must have the shape of the solution {tuple(bbar.shape)}; "
                         f"got {tuple(x_in.shape)}")
    x_flat = xp.ascontiguousarray(x_in, dtype=dtype).reshape(bbar_flat.shape)
    return _band_gradients(mats, bbar_flat, x_flat, index, tuple(x_in.shape), lower,
                           (tuple(bands_in.shape), bands_in.dtype),
                           (tuple(b_in.shape), b_in.dtype))
