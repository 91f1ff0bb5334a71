"""adapters: PyTorch and JAX autograd bindings for bandsolve and smnn.

Import the binding for your framework; ``import adapters`` imports neither
PyTorch nor JAX:

- :mod:`adapters.torch`: ``solve``, ``ode_forward`` as ``torch.library``
  custom operators (autograd, ``torch.compile``, ``opcheck``) and the
  ``SMNNLayer`` module.
- :mod:`adapters.jax`: ``solve``, ``ode_forward`` as ``jax.custom_vjp``
  functions (``jit``, ``grad``, ``vmap``).

Both are thin: the arrays cross to NumPy (CPU) or CuPy (GPU) without copies,
the array-level functions (:func:`bandsolve.solve`, :func:`smnn.ode_forward`)
compute, and gradients come from their vector-Jacobian products
(:func:`bandsolve.solve_vjp`, :func:`smnn.ode_vjp`).
"""

__all__ = []
