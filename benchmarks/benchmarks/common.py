"""Problem generators, flop counts and peer conversions shared by the asv suite
and ``benchmarks/compare.py``.

A case is ``(B, T, k, w)``: B systems, each with T x T blocks of size k x k and
block bandwidth w, stored as the lower block band (B, w+1, T, k, k)
(DESIGN.md section 2). The cases of issue 8 are in :data:`CASES`; the memory
series over T in :data:`MEMORY_SERIES`.
"""

import numpy as np

__all__ = [
    "CASES",
    "MEMORY_SERIES",
    "make_system",
    "factor_flops",
    "solve_flops",
    "scalar_band",
    "dense_matrices",
    "warm_up",
]

#: name -> (B, T, k, w): the bandsolve targets of issue 8.
CASES = {
    "baseline": (64, 1000, 9, 1),
    "throughput": (512, 1000, 9, 1),
    "latency": (1, 100000, 9, 1),
    "wide-block": (64, 1000, 30, 1),
    "pentadiagonal": (64, 1000, 9, 2),
}

#: Memory linear in T: (B, T, k, w) for T = 1e3, 1e4, 1e5.
MEMORY_SERIES = [(1, 1000, 9, 1), (1, 10000, 9, 1), (1, 100000, 9, 1)]

_DISTINCT = 8  # distinct matrices generated; larger batches repeat them


def make_system(B, T, k, w, dtype=np.float64, nrhs=None, seed=0, kind="dominant"):
    """A batch of SPD block-banded matrices and right-hand sides.

    ``kind="chain"`` (w = 1 only) gives instead a discrete-Laplacian-like
    chain, diagonal blocks (1.9 + 1e-4) I plus a PSD perturbation of norm
    below 0.05 and off-diagonal blocks -0.95 I: condition number about 4e4
    and an inverse that decays slowly (about 1 % per block row), the hard case
    for the partitioned solver of small batches.

    Off-diagonal band entries are uniform in [-1, 1] / ((2w+1) k) and the
    diagonal blocks get 2 I added, so every row of M has off-diagonal absolute
    sum below 1 < 2 (Gershgorin: SPD, condition number below 3). Only
    ``min(B, 8)`` distinct matrices are drawn and tiled, which keeps the set-up
    of large batches cheap without letting the solver see identical
    neighbours everywhere.

    Parameters
    ----------
    B, T, k, w : int
    dtype : dtype, optional
    nrhs : int or None, optional
        None for b of shape (B, T, k), else (B, T, k, nrhs).
    seed : int, optional

    Returns
    -------
    bands : ndarray (B, w+1, T, k, k), C-contiguous
    b : ndarray (B, T, k) or (B, T, k, nrhs)
    """
    rng = np.random.default_rng(seed)
    n_distinct = min(B, _DISTINCT)
    if kind == "chain":
        if w != 1:
            raise ValueError(f"kind='chain' needs w = 1, got w = {w}")
        G = rng.uniform(-1.0, 1.0, (n_distinct, T, k, k)) * (0.2 / k)
        one = np.zeros((n_distinct, 2, T, k, k))
        one[:, 0] = (1.9 + 1e-4) * np.eye(k) + G @ np.swapaxes(G, -1, -2)
        one[:, 1, :-1] = -0.95 * np.eye(k)
    elif kind == "dominant":
        one = rng.uniform(-1.0, 1.0, (n_distinct, w + 1, T, k, k)) / ((2 * w + 1) * k)
        one[:, 0] += 2.0 * np.eye(k)
    else:
        raise ValueError(f"kind must be 'dominant' or 'chain', got {kind!r}")
    one = one.astype(dtype)
    bands = np.empty((B, w + 1, T, k, k), dtype=dtype)
    for start in range(0, B, n_distinct):
        stop = min(start + n_distinct, B)
        bands[start:stop] = one[: stop - start]
    core = (T, k) if nrhs is None else (T, k, nrhs)
    b = rng.standard_normal((B,) + core).astype(dtype)
    return bands, b


def factor_flops(T, k, w):
    """Flops of one block Cholesky factor: T (k^3/3 + w k^3 + w^2 k^3)."""
    return T * (k**3 / 3 + w * k**3 + w**2 * k**3)


def solve_flops(T, k, w, nrhs=1):
    """Flops of the two block substitutions: 2 T (w+1) k^2 per right-hand side."""
    return 2 * T * (w + 1) * k**2 * nrhs


def scalar_band(bands):
    """The same matrices in SciPy's lower banded storage.

    Half-bandwidth ``u = (w+1) k - 1``; ``ab[..., i-j, j] = M[i, j]``, shape
    (B, u+1, T k). Unused corner cells are zero.
    """
    B, n_diag, T, k, _ = bands.shape
    u = n_diag * k - 1
    ab = np.zeros((B, u + 1, T * k), dtype=bands.dtype)
    for d in range(n_diag):
        for r in range(k):
            for c in range(k):
                if d == 0 and r < c:
                    continue  # upper triangle of a diagonal block: not stored
                off = d * k + r - c  # scalar row (t+d)k+r minus column tk+c
                ab[:, off, c::k][:, : T - d] = bands[:, d, : T - d, r, c]
    return ab


def dense_matrices(bands):
    """Dense symmetric matrices (B, Tk, Tk) of a lower block band."""
    B, n_diag, T, k, _ = bands.shape
    n = T * k
    dense = np.zeros((B, n, n), dtype=bands.dtype)
    blocks = dense.reshape(B, T, k, T, k)
    lower = np.tril(bands[:, 0])
    diag = lower + np.swapaxes(np.tril(lower, -1), -1, -2)
    t = np.arange(T)
    blocks[:, t, :, t, :] = np.moveaxis(diag, 1, 0)
    for d in range(1, n_diag):
        s = np.arange(T - d)
        blocks[:, s + d, :, s, :] = np.moveaxis(bands[:, d, : T - d], 1, 0)
        blocks[:, s, :, s + d, :] = np.moveaxis(np.swapaxes(bands[:, d, : T - d], -1, -2), 1, 0)
    return dense


def warm_up(dtype=np.float64, w=1, k=2):
    """Compile (or load from cache) the kernels outside any timed region."""
    import bandsolve

    bands, b = make_system(2, 4, k, w, dtype)
    x, vjp = bandsolve.solve_vjp(bands, b)
    vjp(x)
    bandsolve.solve(bands, b)
    bandsolve.cholesky(bands).solve(b)
