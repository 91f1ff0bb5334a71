"""asv benchmarks of bandsolve: factor, solve, factor+solve and the adjoints.

One parameter, the case ``(B, T, k, w)``: B systems of T x T blocks of size
k x k with block bandwidth w (plus the dtype for factor+solve). The cases are
the targets of issue 8 (``common.CASES``) and, for factor and factor+solve,
the memory series T = 1e3, 1e4, 1e5 (``common.MEMORY_SERIES``). A single
tuple-valued parameter instead of a B x T x k x w grid keeps asv from
starting a process for every combination outside the list. Data are generated
and the kernels compiled in ``setup``, outside the timed region. ``peakmem_``
is asv's peak resident memory of the benchmark process (inputs included);
``compare.py`` reports the additional memory of a call.

Run with ``cd benchmarks && asv run --python=same --quick``.
"""

import numpy as np

import bandsolve

from .common import CASES, MEMORY_SERIES, make_system, warm_up

_TIMED = list(CASES.values())
_ALL = _TIMED + [c for c in MEMORY_SERIES if c not in _TIMED]


class _Case:
    """Set-up shared by every class: data for the case, kernels compiled."""

    params = [_TIMED]
    param_names = ["(B, T, k, w)"]
    timeout = 300

    def setup(self, case, dtype="float64"):
        B, T, k, w = case
        warm_up(np.dtype(dtype), w=w)
        self.bands, self.b = make_system(B, T, k, w, np.dtype(dtype))


class Factor(_Case):
    """Block Cholesky factorisation (``bandsolve.cholesky``)."""

    params = [_ALL]

    def time_factor(self, case):
        bandsolve.cholesky(self.bands, check_finite=False)

    def peakmem_factor(self, case):
        bandsolve.cholesky(self.bands, check_finite=False)


class Solve(_Case):
    """Both block substitutions with a stored factor (``BandedCholesky.solve``)."""

    def setup(self, case):
        super().setup(case)
        self.factor = bandsolve.cholesky(self.bands)

    def time_solve(self, case):
        self.factor.solve(self.b, check_finite=False)

    def peakmem_solve(self, case):
        self.factor.solve(self.b, check_finite=False)


class FactorSolve(_Case):
    """Factor + solve in one call (``bandsolve.solve``), default arguments."""

    params = [_ALL, ["float64", "float32"]]
    param_names = _Case.param_names + ["dtype"]

    def time_factor_solve(self, case, dtype):
        bandsolve.solve(self.bands, self.b)

    def peakmem_factor_solve(self, case, dtype):
        bandsolve.solve(self.bands, self.b)


class FactorSolveVjp(_Case):
    """Forward solve and one vector-Jacobian product (``bandsolve.solve_vjp``)."""

    def setup(self, case):
        super().setup(case)
        self.g = np.ones_like(self.b)

    def time_solve_vjp(self, case):
        _, vjp = bandsolve.solve_vjp(self.bands, self.b)
        vjp(self.g)

    def peakmem_solve_vjp(self, case):
        _, vjp = bandsolve.solve_vjp(self.bands, self.b)
        vjp(self.g)


class Adjoint(_Case):
    """Gradients from a kept solution (``bandsolve.solve_adjoint``: what the
    autograd adapters' backward runs), to compare with ``FactorSolveVjp``."""

    def setup(self, case):
        super().setup(case)
        self.g = np.ones_like(self.b)
        self.x = bandsolve.solve(self.bands, self.b)

    def time_solve_adjoint(self, case):
        bandsolve.solve_adjoint(self.bands, self.b, self.x, self.g)

    def peakmem_solve_adjoint(self, case):
        bandsolve.solve_adjoint(self.bands, self.b, self.x, self.g)
