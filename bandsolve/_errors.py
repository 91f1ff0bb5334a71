"""Exceptions raised by bandsolve."""

import numpy as np

__all__ = ["LinAlgError"]


class LinAlgError(np.linalg.LinAlgError):
    """A matrix is not positive definite (or a factor-level failure).

    Subclass of :class:`numpy.linalg.LinAlgError`, so code written for NumPy
    or SciPy catches it unchanged. The message names the batch index and the
    order of the leading minor that is not positive definite.

    Attributes
    ----------
    batch_index : tuple of int
        Index into the batch dimensions of the first failing matrix.
    order : int
        1-based order of the leading minor (scalar row) that is not positive
        definite, as in LAPACK's ``info``.
    """

    def __init__(self, message, batch_index=None, order=None):
        super().__init__(message)
        self.batch_index = batch_index
        self.order = order
