r"""Solve a batch of block-banded SPD systems with bandsolve and check the residuals.

A batch of B symmetric positive definite matrices M, each with T x T blocks of
size k x k and block bandwidth w, is stored as its lower block band
``bands[b, d, t] = M_b[t+d, t]`` (shape (B, w+1, T, k, k)).
:func:`bandsolve.solve` factors ``M = L L^T`` and solves ``M x = rhs`` for all
B systems in one call. The example checks the result the way LAPACK's tests
do, ``||M x - rhs|| / (||M|| ||x|| n eps)`` (small, below 30, for a backward
stable solve), compares with SciPy's ``solveh_banded`` on the equivalent
scalar band (looped over the batch) and times both.

Backends:

* ``--backend cpu``: NumPy arrays, the Numba CPU kernels.
* ``--backend cuda``: with CuPy installed, the arrays are CuPy arrays on the
  GPU and stay there (``bandsolve.solve`` returns a CuPy array; time measured
  with device synchronisation). Without CuPy, NumPy arrays are passed with
  ``backend="cuda"``, which copies them to the device and back (this is also
  how the CUDA kernels run under the Numba simulator,
  ``NUMBA_ENABLE_CUDASIM=1``).

Usage::

    python examples/solve_banded.py [--quick] [--backend cpu|cuda]
"""

import argparse
import importlib
import sys
import time

import numpy as np
import scipy.linalg

import bandsolve


def random_spd_bands(rng, batch, n_blocks, block_size, bandwidth, dtype=np.float64):
    """A batch of diagonally dominant SPD block-banded matrices in lower band form.

    Returns
    -------
    ndarray, shape (batch, bandwidth+1, n_blocks, block_size, block_size)
    """
    bands = 0.3 * rng.standard_normal((batch, bandwidth + 1, n_blocks, block_size, block_size))
    bands[:, 0] += (bandwidth + 1) * block_size * np.eye(block_size)
    return bands.astype(dtype)


def band_matvec(bands, x):
    """``y = M x`` for lower block-band storage (the residual check), NumPy.

    The diagonal blocks are read from their lower triangle only, as bandsolve
    does.
    """
    n_diag, n_blocks = bands.shape[-4], bands.shape[-3]
    diag = np.tril(bands[..., 0, :, :, :])
    diag = diag + np.swapaxes(np.tril(diag, -1), -1, -2)
    y = np.einsum("...tij,...tj->...ti", diag, x)
    for d in range(1, n_diag):
        blocks = bands[..., d, : n_blocks - d, :, :]
        y[..., d:, :] += np.einsum("...tij,...tj->...ti", blocks, x[..., : n_blocks - d, :])
        y[..., : n_blocks - d, :] += np.einsum("...tji,...tj->...ti", blocks, x[..., d:, :])
    return y


def scalar_band(bands):
    """The same matrices in SciPy's lower banded storage, half-bandwidth (w+1)k-1.

    Returns
    -------
    ndarray, shape (B, (w+1)k, T k)
        ``ab[b, i - j, j] = M_b[i, j]`` for the scalar entries i >= j.
    """
    batch, n_diag, n_blocks, k, _ = bands.shape
    ab = np.zeros((batch, n_diag * k, n_blocks * k), dtype=bands.dtype)
    for d in range(n_diag):
        for r in range(k):
            for c in range(k):
                offset = d * k + r - c  # scalar row - column
                if offset < 0 or (d == 0 and r < c):
                    continue
                cols = np.arange(n_blocks - d) * k + c
                ab[:, offset, cols] = bands[:, d, : n_blocks - d, r, c]
    return ab


def device_arrays(backend):
    """(to_device, to_host, synchronize) for the chosen backend.

    CuPy when ``backend == "cuda"`` and CuPy imports; identity functions
    otherwise (NumPy arrays, with ``backend="cuda"`` copying inside
    bandsolve).
    """
    identity = lambda a: a  # noqa: E731
    if backend != "cuda":
        return identity, identity, lambda: None, "NumPy"
    try:
        cupy = importlib.import_module("cupy")
    except ImportError:
        return identity, identity, lambda: None, "NumPy (copied to the GPU by bandsolve)"
    return (cupy.asarray, cupy.asnumpy, cupy.cuda.get_current_stream().synchronize,
            "CuPy (on the GPU)")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Solve a batch of block-banded SPD systems with bandsolve, check the "
                    "residual and compare with SciPy's solveh_banded.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the tests)")
    parser.add_argument("--backend", default="cpu", choices=["cpu", "cuda"],
                        help="bandsolve backend; cuda uses CuPy arrays when CuPy is installed")
    args = parser.parse_args(argv)
    batch, n_blocks, k, w = (4, 50, 3, 1) if args.quick else (64, 1000, 9, 1)
    rng = np.random.default_rng(0)
    bands = random_spd_bands(rng, batch, n_blocks, k, w)
    rhs = rng.standard_normal((batch, n_blocks, k))
    to_device, to_host, synchronize, kind = device_arrays(args.backend)
    print(f"batch B={batch}, blocks T={n_blocks}, block size k={k}, bandwidth w={w}, "
          f"float64, backend {args.backend}, {kind} arrays")

    bands_dev, rhs_dev = to_device(bands), to_device(rhs)
    try:
        bandsolve.solve(bands_dev, rhs_dev, backend=args.backend)  # compile (cached on disk)
    except (ImportError, RuntimeError) as exc:
        sys.exit(f"backend {args.backend!r} is not available here: {exc}")
    synchronize()
    t0 = time.perf_counter()
    x = bandsolve.solve(bands_dev, rhs_dev, backend=args.backend)
    synchronize()
    t_bandsolve = time.perf_counter() - t0
    x = to_host(x)

    ab = scalar_band(bands)
    t0 = time.perf_counter()
    x_ref = np.stack([scipy.linalg.solveh_banded(ab[i], rhs[i].ravel(), lower=True)
                      for i in range(batch)])
    t_scipy = time.perf_counter() - t0

    residual = band_matvec(bands, x) - rhs
    eps = np.finfo(np.float64).eps
    norm_m = np.abs(bands).sum(axis=(1, 3)).max()  # a bound on the 1-norm of each M
    ratio = np.linalg.norm(residual) / (norm_m * np.linalg.norm(x) * n_blocks * k * eps)
    print(f"residual ratio ||Mx-b|| / (||M|| ||x|| n eps) = {ratio:.3g}   "
          "(LAPACK yardstick: < 30)")
    print(f"max |x - x_scipy| = {np.abs(x.reshape(batch, -1) - x_ref).max():.3g}")
    print(f"bandsolve.solve:            {t_bandsolve * 1e3:8.2f} ms")
    print(f"scipy solveh_banded (loop): {t_scipy * 1e3:8.2f} ms   "
          f"ratio {t_scipy / t_bandsolve:.1f}x")
    if ratio >= 30:
        sys.exit("residual check failed")


if __name__ == "__main__":
    main()
