"""Input validation, dtype promotion and batch broadcasting (one place for all)."""

import math

import numpy as np

from ._errors import LinAlgError

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def working_dtype(*arrays, names):
    """NumPy promotion of the inputs; TypeError unless float32 or float64."""
    for a, name in zip(arrays, names):
        if a.dtype.kind not in "f" or a.dtype not in _FLOATS:
            raise TypeError(
                f"{name} must be a float32 or float64 array; got dtype {a.dtype}"
            )
    return np.result_type(*arrays)


def check_bands(bands, name="bands"):
    """Return (batch_shape, n_diag, T, k) of a (..., w+1, T, k, k) array."""
    shape = tuple(bands.shape)
    if bands.ndim < 4 or shape[-1] != shape[-2] or shape[-4] < 1:
        raise ValueError(
            f"{name} must have shape (..., w+1, T, k, k) with w >= 0; got {shape}"
        )
    return shape[:-4], shape[-4], shape[-3], shape[-2]


def split_rhs(b, T, k, name="b", bands_name="bands", matrix_form=None):
    """Return (batch_shape, nrhs or None) of b in (..., T, k) or (..., T, k, nrhs).

    The vector form is chosen when ``b.shape[-2:] == (T, k)``; this is the only
    reading when T, k and nrhs are not all equal. ``matrix_form=True`` forces
    the (..., T, k, nrhs) reading.
    """
    shape = tuple(b.shape)
    if not matrix_form and b.ndim >= 2 and shape[-2:] == (T, k):
        return shape[:-2], None
    if b.ndim >= 3 and shape[-3:-1] == (T, k):
        return shape[:-3], shape[-1]
    raise ValueError(
        f"{name} must have shape (..., T, k) or (..., T, k, nrhs) with "
        f"(T, k) = {(T, k)} from {bands_name}; got {shape}"
    )


def broadcast_batch(shape_a, shape_b, name_a, name_b):
    try:
        return np.broadcast_shapes(shape_a, shape_b)
    except ValueError:
        raise ValueError(
            f"batch dimensions of {name_a} {shape_a} and {name_b} {shape_b} "
            "do not broadcast"
        ) from None


def check_finite(xp, a, name):
    if a.size and not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} must not contain inf or NaN")


def raise_for_info(info, batch_shape, k, check_finite, name="bands"):
    """Raise LinAlgError (or ValueError for non-finite input) for the first failure.

    ``info`` is a host NumPy int array over the flattened batch.
    """
    bad = np.flatnonzero(info)
    if bad.size == 0:
        return
    # Non-finite input is the caller's mistake and is reported first, whatever
    # the position of the items that are not positive definite.
    nonfinite = bad[info[bad] < 0]
    if nonfinite.size:
        bad = nonfinite
    item = int(bad[0])
    code = int(info[item])
    index = np.unravel_index(item, batch_shape) if batch_shape else ()
    index = tuple(int(i) for i in index)
    order = abs(code)
    block_row, row = divmod(order - 1, k)
    where = f"batch index {index}" if batch_shape else "the matrix"
    more = f" ({bad.size} of {info.size} items failed)" if bad.size > 1 else ""
    if code < 0:
        raise ValueError(
            f"{name} must not contain inf or NaN: found one in {where}, "
            f"block row {block_row}, row {row} of the block{more}"
        )
    raise LinAlgError(
        f"{name} is not positive definite: in {where} the leading minor of "
        f"order {order} (block row {block_row}, row {row} of the block) is not "
        f"positive definite{more}",
        batch_index=index,
        order=order,
    )


def sum_to_shape(xp, a, shape):
    """Sum a broadcast result back to ``shape`` (the adjoint of broadcasting)."""
    if tuple(a.shape) == tuple(shape):
        return a
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and a.shape[lead + i] != 1
    )
    out = a.sum(axis=axes, keepdims=True)
    return out.reshape(shape)


def prod(shape):
    return math.prod(shape)
