"""SciPy-compatible scalar-band functions, batched over leading dimensions.

``cholesky_banded``, ``cho_solve_banded`` and ``solveh_banded`` take the same
arguments as their ``scipy.linalg`` namesakes and return what looping SciPy
over the batch returns (to round-off), with the storage conventions::

    ab[..., u + i - j, j] == a[i, j]    (upper form, i <= j; the default)
    ab[..., i - j, j]     == a[i, j]    (lower form, i >= j)

Batch dimensions broadcast as in SciPy 1.15+: ``b`` of one dimension is a
vector (M,), otherwise it is read as (..., M, K). Unlike SciPy, empty batches
are allowed and the loop over the batch runs in compiled code. These are the
k = 1 case of the block-banded API (``bands[..., d, t, 0, 0] == ab[..., d, t]``
in the lower form).
"""

import numpy as np

from . import _api, _arrays
from . import _validate as V

__all__ = ["cholesky_banded", "cho_solve_banded", "solveh_banded"]


def _as_float(a, xp, name):
    """SciPy accepts integer input and computes in float64; complex is unsupported."""
    a = _arrays.asarray(a, xp)
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    if a.dtype.kind != "f" or a.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{name} must be a real float32/float64 (or integer) array; got dtype {a.dtype}"
        )
    return a


def _check_ab(ab, name):
    if ab.ndim < 2 or ab.shape[-2] < 1:
        raise ValueError(f"{name} must have shape (..., u+1, M) with u >= 0; got {tuple(ab.shape)}")
    return ab.shape[-2], ab.shape[-1]


def _finite(xp, check_finite, *pairs):
    if check_finite:
        for a, name in pairs:
            V.check_finite(xp, a, name)


def _as_blocks(ab):
    """(..., u+1, M) scalar band -> (..., u+1, M, 1, 1) block band (a view)."""
    return ab.reshape(tuple(ab.shape) + (1, 1))


def _rhs(b, n, name):
    """Block-form right-hand side and the function that maps x back."""
    if b.ndim == 1:
        if b.shape[0] != n:
            raise ValueError(f"{name} must have shape (M,) or (..., M, K) with M = {n}; "
                             f"got {tuple(b.shape)}")
        return b.reshape(n, 1), False, lambda x: x.reshape(x.shape[:-1])
    if b.shape[-2] != n:
        raise ValueError(f"{name} must have shape (M,) or (..., M, K) with M = {n}; "
                         f"got {tuple(b.shape)}")
    blocks = b.reshape(tuple(b.shape[:-1]) + (1, b.shape[-1]))
    return blocks, True, lambda x: x.reshape(tuple(x.shape[:-3]) + (n, x.shape[-1]))


def cholesky_banded(ab, overwrite_ab=False, lower=False, check_finite=True):
    """Cholesky-decompose a batch of banded SPD matrices (``scipy.linalg.cholesky_banded``).

    Parameters
    ----------
    ab : (..., u + 1, M) array_like
        Banded matrices, upper form unless ``lower=True``.
    overwrite_ab : bool, optional
        Allow the factor to overwrite ``ab`` (lower form, C-contiguous float).
    lower : bool, optional
        ``ab`` is in lower form (default upper).
    check_finite : bool, optional
        Raise ValueError if ``ab`` contains inf or NaN (checked everywhere, as
        SciPy does).

    Returns
    -------
    c : (..., u + 1, M) ndarray
        Cholesky factors in the form of ``ab`` (U with a = U^T U for the
        upper form, L with a = L L^T for the lower form). Unused corner cells
        keep the values of ``ab``.

    Raises
    ------
    LinAlgError
        If a matrix is not positive definite; the message names its batch
        index and the leading minor.

    Examples
    --------
    >>> import numpy as np
    >>> from bandsolve import cholesky_banded
    >>> ab = np.array([[0., 1, 1, 1], [4, 4, 4, 4]])    # upper form, u = 1
    >>> c = cholesky_banded(np.stack([ab, 2 * ab]))     # a batch of two
    >>> c.shape
    (2, 2, 4)
    >>> np.round(c[0], 4)
    array([[0.    , 0.5   , 0.5164, 0.5175],
           [2.    , 1.9365, 1.9322, 1.9319]])
    """
    xp = _arrays.array_module(ab)
    ab = _as_float(ab, xp, "ab")
    u1, n = _check_ab(ab, "ab")
    _finite(xp, check_finite, (ab, "ab"))
    fac = _api._cholesky(_as_blocks(ab), lower=lower, overwrite=overwrite_ab and lower,
                         check_finite=False, check=True, backend="auto", name="ab")
    c = fac.factor.reshape(ab.shape)
    if not lower:
        for d in range(1, u1):  # unused upper-left cells, as LAPACK leaves them
            c[..., u1 - 1 - d, : min(d, n)] = ab[..., u1 - 1 - d, : min(d, n)]
    return c


def cho_solve_banded(cb_and_lower, b, overwrite_b=False, check_finite=True):
    """Solve A x = b given the banded Cholesky factor of A (``scipy.linalg.cho_solve_banded``).

    Parameters
    ----------
    (cb, lower) : tuple, (ndarray, bool)
        ``cb`` (..., u + 1, M) is the factor from :func:`cholesky_banded`;
        ``lower`` tells its form.
    b : (M,) or (..., M, K) array_like
        Right-hand sides.
    overwrite_b : bool, optional
        Allow the solution to overwrite ``b``.
    check_finite : bool, optional
        Raise ValueError if the inputs contain inf or NaN.

    Returns
    -------
    x : (..., M) or (..., M, K) ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from bandsolve import cholesky_banded, cho_solve_banded
    >>> ab = np.array([[0., 1, 1, 1], [4, 4, 4, 4]])
    >>> c = cholesky_banded(ab)
    >>> x = cho_solve_banded((c, False), np.ones(4))
    >>> np.round(x, 6)
    array([0.210526, 0.157895, 0.157895, 0.210526])
    """
    cb, lower = cb_and_lower
    xp = _arrays.array_module(cb, b)
    cb = _as_float(cb, xp, "cb")
    b = _as_float(b, xp, "b")
    u1, n = _check_ab(cb, "cb")
    _finite(xp, check_finite, (cb, "cb"), (b, "b"))
    blocks, matrix_form, unshape = _rhs(b, n, "b")
    mats, dtype, _ = _api._prepare_matrices(
        _as_blocks(cb), lower=lower, dtype_with=(blocks,), overwrite=False,
        check_finite=False, backend="auto", name="cb",
    )
    fac = _api.BandedCholesky(mats, dtype, None, lower)
    x = fac._solve(blocks, overwrite_b=overwrite_b, check_finite=False, matrix_form=matrix_form,
                   matrix_name="cb")
    return unshape(x)


def solveh_banded(ab, b, overwrite_ab=False, overwrite_b=False, lower=False, check_finite=True):
    """Solve A x = b for batches of banded SPD A (``scipy.linalg.solveh_banded``).

    Parameters
    ----------
    ab : (..., u + 1, M) array_like
        Banded matrices, upper form unless ``lower=True``.
    b : (M,) or (..., M, K) array_like
        Right-hand sides; batch dimensions broadcast against those of ``ab``.
    overwrite_ab, overwrite_b : bool, optional
        Allow the inputs to be overwritten.
    lower : bool, optional
        ``ab`` is in lower form (default upper).
    check_finite : bool, optional
        Raise ValueError if the inputs contain inf or NaN.

    Returns
    -------
    x : (..., M) or (..., M, K) ndarray

    Raises
    ------
    LinAlgError
        If a matrix is not positive definite.

    Examples
    --------
    >>> import numpy as np
    >>> from bandsolve import solveh_banded
    >>> ab = np.array([[ 4,  5,  6,  7, 8, 9],
    ...                [ 2,  2,  2,  2, 2, 0],
    ...                [-1, -1, -1, -1, 0, 0]])
    >>> b = np.array([1, 2, 2, 3, 3, 3])
    >>> solveh_banded(ab, b, lower=True)
    array([0.03431373, 0.45938375, 0.05602241, 0.47759104, 0.17577031,
           0.34733894])
    """
    xp = _arrays.array_module(ab, b)
    ab = _as_float(ab, xp, "ab")
    b = _as_float(b, xp, "b")
    u1, n = _check_ab(ab, "ab")
    _finite(xp, check_finite, (ab, "ab"), (b, "b"))
    blocks, matrix_form, unshape = _rhs(b, n, "b")
    _, _, _, x, _, _ = _api._factor_and_solve(
        _as_blocks(ab), blocks, lower=lower, overwrite_bands=overwrite_ab,
        overwrite_b=overwrite_b, check_finite=False, check=True, backend="auto",
        keep_factor=False, matrix_form=matrix_form, names=("ab", "b"),
    )
    return unshape(x)
