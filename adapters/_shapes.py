"""Shape inference shared by the bindings (no array library, no framework).

The frameworks need the result's shape before any data exists: PyTorch's fake
(meta) kernels and ``torch.compile`` tracing, JAX's ``result_shape_dtypes``
under ``jit``. The functions here reproduce the shape rules of the
array-level functions and raise the same kind of errors, naming the argument
and the shapes seen. They only compare and combine sizes, so they also work
on PyTorch's symbolic sizes (``SymInt``) under dynamic shapes.
"""

__all__ = ["broadcast_shapes", "solve_shapes"]


def broadcast_shapes(*named_shapes):
    """NumPy broadcasting of ``(name, shape)`` pairs; ValueError naming them."""
    ndim = max((len(shape) for _, shape in named_shapes), default=0)
    out = []
    for axis in range(-ndim, 0):
        size = 1
        for _, shape in named_shapes:
            if len(shape) < -axis:
                continue
            n = shape[axis]
            if n == 1:
                continue
            if size == 1:
                size = n
            elif n != size:
                seen = ", ".join(f"{name} {tuple(shape)}" for name, shape in named_shapes)
                raise ValueError(f"batch dimensions do not broadcast: {seen}")
        out.append(size)
    return tuple(out)


def solve_shapes(bands_shape, b_shape):
    """Shapes of :func:`bandsolve.solve`: ``(x_shape, b_core_ndim)``.

    ``bands`` is (..., w+1, T, k, k); ``b`` is read as (..., T, k) when its
    last two sizes are (T, k), else as (..., T, k, nrhs) (the rule of
    :func:`bandsolve.solve`). ``b_core_ndim`` is 2 or 3 accordingly.

    Examples
    --------
    >>> solve_shapes((3, 2, 10, 4, 4), (10, 4))
    ((3, 10, 4), 2)
    >>> solve_shapes((2, 10, 4, 4), (5, 1, 10, 4, 7))
    ((5, 1, 10, 4, 7), 3)
    """
    bands_shape, b_shape = tuple(bands_shape), tuple(b_shape)
    if len(bands_shape) < 4 or bands_shape[-1] != bands_shape[-2] or bands_shape[-4] < 1:
        raise ValueError(
            f"bands must have shape (..., w+1, T, k, k) with w >= 0; got {bands_shape}"
        )
    T, k = bands_shape[-3], bands_shape[-2]
    if len(b_shape) >= 2 and b_shape[-2] == T and b_shape[-1] == k:
        core = 2
    elif len(b_shape) >= 3 and b_shape[-3] == T and b_shape[-2] == k:
        core = 3
    else:
        raise ValueError(
            "b must have shape (..., T, k) or (..., T, k, nrhs) with "
            f"(T, k) = {(T, k)} from bands; got {b_shape}"
        )
    batch = broadcast_shapes(("bands", bands_shape[:-4]), ("b", b_shape[:-core]))
    return batch + b_shape[len(b_shape) - core:], core
