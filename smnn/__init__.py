r"""smnn: the Scalable Mechanistic Neural Network (S-MNN) least-squares ODE layer.

An S-MNN layer (Chen et al., arXiv 2410.06074) turns per-step ODE coefficients
into the solution of that ODE by weighted least squares. Per batch item, with
T steps, E equations, D dimensions, O orders (derivatives 0..O-1), step sizes
h (T-1) and Ti initial steps of Oi orders, the unknowns ``u[t, d, o]`` solve

    min_u  sum_rows  w_row^2 (a_row . u - r_row)^2

over the rows (s^o: powers of the step; Os = O, or O-1 with central rows)::

    equation  t < T, e < E:          sum_{d,o} c[t,e,d,o] u[t,d,o] = r[t,e]
    initial   t < Ti, d < D, o < Oi: u[t,d,o] = init[t,d,o]
    Taylor    t < T-1, d < D, o < Os, forward (s, a, n) = (h[t], t, t+1) and
              backward (s, a, n) = (-h[t], t+1, t):
              sum_{o' >= o} s^{o'}/(o'-o)! u[a,d,o'] - s^o u[n,d,o] = 0
    central   t < T-2, d < D, s = h[t] + h[t+1] (enable_central_smoothness):
              s^{O-3} u[t,d,O-2] + s^{O-2} u[t+1,d,O-1] - s^{O-3} u[t+2,d,O-2] = 0

The normal equations ``M u = b``, ``M = A^T W^2 A``, ``b = A^T W^2 r`` are
block tridiagonal in t (block pentadiagonal with central rows) with blocks of
size k = D*O. They are assembled directly in :mod:`bandsolve`'s lower
block-band storage, factored by its banded Cholesky and solved in time and
memory linear in T. Gradients for all four inputs (steps included) come from
one more solve with the same factor and row-local formulas (see
``smnn._assembly``).

Functions
---------
ode_forward   solve for u
ode_vjp       solve and return the vector-Jacobian product
ode_adjoint   the same gradients from a kept solution u (autograd backward)
ode_system    the banded normal equations (bands, rhs)
ODESolver     factor M once; solve (with gradients) for many right-hand sides
"""

from ._api import ODESolver, ode_adjoint, ode_forward, ode_system, ode_vjp

__all__ = ["ODESolver", "ode_adjoint", "ode_forward", "ode_system", "ode_vjp"]
