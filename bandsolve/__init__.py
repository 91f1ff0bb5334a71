"""bandsolve: batched banded SPD Cholesky, solve and adjoint.

A framework-free library for batches of symmetric positive definite
block-banded matrices (T x T blocks of size k x k, block bandwidth w), stored
as their lower block band ``bands[..., d, t] = M[t+d, t]`` of shape
``(..., w+1, T, k, k)``. Time and memory are linear in T.

Functions
---------
cholesky         factor once -> :class:`BandedCholesky` (solve, logdet, info)
solve            factor + solve
solve_vjp        solve and its vector-Jacobian product (adjoint)
solve_adjoint    the same gradients from a kept solution x (autograd backward)
cholesky_banded, cho_solve_banded, solveh_banded
                 SciPy-compatible scalar-band versions, batched
LinAlgError      raised for matrices that are not positive definite

The CPU backend is Numba (parallel over the batch); ``backend="cuda"`` runs
Numba CUDA kernels on CuPy arrays (``pip install 'bandsolve[cuda]'``).
"""

from ._api import BandedCholesky, cholesky, solve, solve_adjoint, solve_vjp
from ._errors import LinAlgError
from ._scipy import cho_solve_banded, cholesky_banded, solveh_banded

__all__ = [
    "BandedCholesky",
    "LinAlgError",
    "cho_solve_banded",
    "cholesky",
    "cholesky_banded",
    "solve",
    "solve_adjoint",
    "solve_vjp",
    "solveh_banded",
]

__version__ = "0.1.0"
