"""Solve a batch of block-banded SPD systems with bandsolve and check the residuals.

Usage: python examples/solve_banded.py [--quick] [--backend cpu|cuda]
"""

import argparse
import time

import numpy as np
import scipy.linalg

import bandsolve


def random_spd_bands(rng, batch, n_blocks, block_size, bandwidth, dtype=np.float64):
    """A batch of diagonally dominant SPD block-banded matrices in lower band form."""
    bands = 0.3 * rng.standard_normal((batch, bandwidth + 1, n_blocks, block_size, block_size))
    bands[:, 0] += (bandwidth + 1) * block_size * np.eye(block_size)
    return bands.astype(dtype)


def band_matvec(bands, x):
    """y = M x for lower block-band storage (used for the residual check)."""
    n_diag, T = bands.shape[-4], bands.shape[-3]
    diag = np.tril(bands[..., 0, :, :, :])
    diag = diag + np.swapaxes(np.tril(diag, -1), -1, -2)
    y = np.einsum("...tij,...tj->...ti", diag, x)
    for d in range(1, n_diag):
        blocks = bands[..., d, : T - d, :, :]
        y[..., d:, :] += np.einsum("...tij,...tj->...ti", blocks, x[..., : T - d, :])
        y[..., : T - d, :] += np.einsum("...tji,...tj->...ti", blocks, x[..., d:, :])
    return y


def scalar_band(bands):
    """The same matrices as SciPy lower banded storage with half-bandwidth (w+1)k-1."""
    B, n_diag, T, k, _ = bands.shape
    kd = n_diag * k - 1
    ab = np.zeros((B, kd + 1, T * k))
    for d in range(n_diag):
        for r in range(k):
            for c in range(k):
                off = d * k + r - c  # scalar row - column
                if off < 0 or (d == 0 and r < c):
                    continue
                cols = np.arange(T - d) * k + c
                ab[:, off, cols] = bands[:, d, : T - d, r, c]
    return ab


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")
    parser.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    B, T, k, w = (4, 50, 3, 1) if args.quick else (64, 1000, 9, 1)
    rng = np.random.default_rng(0)
    bands = random_spd_bands(rng, B, T, k, w)
    b = rng.standard_normal((B, T, k))
    print(f"batch B={B}, blocks T={T}, block size k={k}, bandwidth w={w}, float64")

    bandsolve.solve(bands, b, backend=args.backend)  # compile (cached on disk)
    t0 = time.perf_counter()
    x = bandsolve.solve(bands, b, backend=args.backend)
    t_bs = time.perf_counter() - t0

    ab = scalar_band(bands)
    t0 = time.perf_counter()
    x_ref = np.stack([scipy.linalg.solveh_banded(ab[i], b[i].ravel(), lower=True) for i in range(B)])
    t_sp = time.perf_counter() - t0

    r = band_matvec(bands, x) - b
    eps = np.finfo(np.float64).eps
    ratio = np.linalg.norm(r) / (np.abs(bands).sum(axis=(1, 3)).max() * np.linalg.norm(x) * T * k * eps)
    print(f"residual ratio ||Mx-b|| / (||M|| ||x|| n eps) = {ratio:.3g}   (LAPACK yardstick: < 30)")
    print(f"max |x - x_scipy| = {np.abs(x.reshape(B, -1) - x_ref).max():.3g}")
    print(f"bandsolve.solve:            {t_bs * 1e3:8.2f} ms")
    print(f"scipy solveh_banded (loop): {t_sp * 1e3:8.2f} ms   ratio {t_sp / t_bs:.1f}x")


if __name__ == "__main__":
    main()
