"""asv benchmarks of smnn: forward, forward+vjp, adjoint, a stored factor, assembly.

One parameter, the case ``(B, T, E, D, O)``: B systems of T steps, E
equations, D dimensions and O orders (k = D*O), default weights, Ti = Oi = 1,
float64, random coefficients and steps around 0.01. The cases are the smnn
targets of issues 5 and 8; the memory series T = 1e3, 1e4, 1e5 (B = 1) shows
memory linear in T. Data are generated and the kernels compiled in ``setup``,
outside the timed region. ``peakmem_`` is asv's peak resident memory of the
benchmark process (inputs included). Self-contained: no import from the other
benchmark modules.

Run with ``cd benchmarks && asv run --python=same --quick``.
"""

import numpy as np

import smnn

#: name -> (B, T, E, D, O)
CASES = {
    "baseline": (64, 1000, 3, 3, 3),
    "throughput": (512, 1000, 3, 3, 3),
    "long": (1, 10000, 3, 3, 3),
}
MEMORY_SERIES = [(1, 1000, 3, 3, 3), (1, 10000, 3, 3, 3), (1, 100000, 3, 3, 3)]

_TIMED = list(CASES.values())
_ALL = _TIMED + [c for c in MEMORY_SERIES if c not in _TIMED]


def make_problem(B, T, E, D, O, seed=0):
    """Random inputs: normal coefficients and rhs, init (Ti = Oi = 1), steps in [0.005, 0.015]."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, T, E, D, O)), rng.standard_normal((B, T, E)),
            rng.standard_normal((B, 1, D, 1)), rng.uniform(0.005, 0.015, (B, T - 1)))


def warm_up(central=False):
    """Compile (or load from cache) every kernel outside the timed region: a
    small batch (band path) and one that fills the SIMD lanes of every thread
    (M assembled inside the factor kernels)."""
    for B in (2, 40):
        args = make_problem(B, 5, 1, 1, 3)
        u, vjp = smnn.ode_vjp(*args, enable_central_smoothness=central)
        vjp(u)
        u = smnn.ode_forward(*args, enable_central_smoothness=central)
        smnn.ode_adjoint(*args, u, u, enable_central_smoothness=central)


class _Case:
    params = [_TIMED]
    param_names = ["(B, T, E, D, O)"]
    timeout = 300

    def setup(self, case):
        warm_up()
        self.args = make_problem(*case)
        B, T, E, D, O = case
        self.g = np.random.default_rng(1).standard_normal((B, T, D, O))


class Forward(_Case):
    """``smnn.ode_forward``: assembly, factor and solve."""

    params = [_ALL]

    def time_forward(self, case):
        smnn.ode_forward(*self.args)

    def peakmem_forward(self, case):
        smnn.ode_forward(*self.args)


class ForwardVjp(_Case):
    """``smnn.ode_vjp`` and one vector-Jacobian product (gradients of all four inputs)."""

    params = [_ALL]

    def time_forward_vjp(self, case):
        _, vjp = smnn.ode_vjp(*self.args)
        vjp(self.g)

    def peakmem_forward_vjp(self, case):
        _, vjp = smnn.ode_vjp(*self.args)
        vjp(self.g)


class Adjoint(_Case):
    """``smnn.ode_adjoint``: the gradients from a kept ``u`` (what the autograd
    adapters' backward calls): M assembled again, one solve, the gradients."""

    def setup(self, case):
        super().setup(case)
        self.u = smnn.ode_forward(*self.args)

    def time_adjoint(self, case):
        smnn.ode_adjoint(*self.args, self.u, self.g)


class CentralSmoothness(_Case):
    """Forward+vjp with central smoothness rows (block pentadiagonal M, w = 2)."""

    params = [[CASES["baseline"]]]

    def setup(self, case):
        super().setup(case)
        warm_up(central=True)

    def time_forward_vjp_central(self, case):
        _, vjp = smnn.ode_vjp(*self.args, enable_central_smoothness=True)
        vjp(self.g)


class StoredFactor(_Case):
    """``ODESolver.solve``: new right-hand sides with M factored once."""

    def setup(self, case):
        super().setup(case)
        coef, rhs, init, steps = self.args
        self.solver = smnn.ODESolver(coef, steps)

    def time_solve(self, case):
        self.solver.solve(self.args[1], self.args[2])


class Assembly(_Case):
    """``smnn.ode_system``: the banded normal equations alone."""

    def time_ode_system(self, case):
        smnn.ode_system(*self.args)

    def peakmem_ode_system(self, case):
        smnn.ode_system(*self.args)
