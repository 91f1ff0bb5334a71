"""Shared sizes, layouts and references of the CUDA backend tests.

The simulator tests draw their shapes from :data:`CASES` and their kernel
layouts from :data:`LAYOUTS`; :func:`suite_specialisations` lists every
kernel specialisation those tests launch (plus the sizes the GPU tests and the
benchmark use), which the PTX test compiles for real architectures.
"""

import numpy as np

# (w, k, T): bandwidth, block size, number of blocks. Tiny, because the
# simulator runs every GPU thread as a Python thread.
CASES = [
    (0, 1, 3),  # block diagonal, scalar blocks
    (2, 1, 5),  # scalar pentadiagonal (the SciPy layout)
    (1, 2, 4),
    (2, 3, 5),
    (1, 5, 3),  # odd k
    (3, 2, 5),  # w = 3
    (1, 2, 1),  # T = 1
    (3, 2, 2),  # T < w + 1: every block row is short
]
CASE_IDS = [f"w{w}-k{k}-T{T}" for w, k, T in CASES]

# Kernel layouts other than the default, with the (w, k, T) they run on:
# "global" works on the window in place in L instead of shared memory,
# "single" puts one team per CUDA block (the default for k > 32).
LAYOUT_CASES = [
    ("global", (2, 3, 5)),
    ("global", (3, 2, 5)),
    ("single", (1, 5, 3)),
]

# Sizes launched by the GPU tests (not by the simulator): one per kind of team
# (several teams per block, one multi-warp team per block, global window).
GPU_SIZES = [(1, 9), (1, 64)]  # (w, k)

DTYPES = [np.float32, np.float64]
LAYOUT_DTYPE = np.float64  # the layout variants are exercised in one dtype


def layout_plan(kind, dtype, k, w):
    """The :class:`Plan` a layout name stands for."""
    from bandsolve.cuda import _kernels as K

    name = np.dtype(dtype).name
    if kind == "default":
        return K.make_plan(name, k, w)
    if kind == "global":
        return K.make_plan(name, k, w, window_in_shared=False)
    if kind == "single":
        return K.make_plan(name, k, w, threads_per_block=1)
    raise ValueError(f"unknown layout {kind!r}")


def suite_specialisations():
    """Every (plan) and (dtype, k, w) key the CUDA tests launch, for compile_ptx."""
    plans = set()
    cotangents = set()
    for dtype in DTYPES:
        name = np.dtype(dtype).name
        for w, k, _ in CASES:
            plans.add(layout_plan("default", dtype, k, w))
            cotangents.add((name, k, w))
        for kind, (w, k, _) in LAYOUT_CASES:
            if dtype == LAYOUT_DTYPE:
                plans.add(layout_plan(kind, dtype, k, w))
        for w, k in GPU_SIZES:
            plans.add(layout_plan("default", dtype, k, w))
            cotangents.add((name, k, w))
    key = lambda p: (p.dtype, p.block_size, p.bandwidth, p.teams_per_block, p.window_in_shared)
    return sorted(plans, key=key), sorted(cotangents)


def compile_ptx_summary(kind, key, archs):
    """Compile one kernel specialisation to PTX for each compute capability.

    ``kind`` is "factor", "solve" (key: a Plan), "cotangent" (key: (dtype, k,
    w)) or "logdet" (key: (dtype, threads)). Returns, per architecture, the
    facts the PTX test checks. Runs in worker processes (picklable inputs and
    outputs only).
    """
    from bandsolve.cuda import _kernels as K

    make = {"factor": K.factor_kernel, "solve": K.solve_kernel,
            "cotangent": K.cotangent_kernel, "logdet": K.logdet_kernel}[kind]
    spec = make(key) if kind in ("factor", "solve") else make(*key)
    return {cc: _ptx_facts(ptx) for cc, ptx in _compile_ptx(spec, archs).items()}


def _compile_ptx(spec, archs):
    """PTX of ``spec`` per architecture, typing and lowering the kernel once.

    Numba's front end (typing, lowering to LLVM IR) does not depend on the
    architecture; only NVVM does. numba-cuda's code library generates PTX per
    compute capability from one lowering; where that internal route is not
    available, ``numba.cuda.compile_ptx`` is called for each architecture.
    """
    from numba import cuda

    try:
        from numba.cuda.compiler import _compile_pyfunc_with_fixup

        lib, _ = _compile_pyfunc_with_fixup(
            spec.py_func, spec.signature, debug=None, lineinfo=False, device=False,
            fastmath=False, cc=archs[0], opt=None, abi="numba", abi_info=None,
            forceinline=False, launch_bounds=None, lto=False,
        )
        out = {}
        for cc in archs:
            (out[cc],) = lib.get_asm_strs(cc=cc)
        return out
    except (ImportError, TypeError, AttributeError):
        return {cc: cuda.compile_ptx(spec.py_func, spec.signature, cc=cc)[0] for cc in archs}


def _ptx_facts(ptx):
    import re

    opcodes = [line.split()[0] for line in ptx.splitlines()
               if line.strip() and not line.lstrip().startswith(("//", ".", "{", "}", "$"))]
    array_bytes = r"\.{space}\s+\.align\s+\d+\s+\.b8\s+\S+\[(\d+)\]"
    return {
        "target": re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1),
        "entries": len(re.findall(r"^\.visible \.entry", ptx, re.M)),
        "f64_ops": sum(".f64" in op for op in opcodes),
        "shared_bytes": sum(int(n) for n in re.findall(array_bytes.format(space="shared"), ptx)),
        "local_bytes": sum(int(n) for n in re.findall(array_bytes.format(space="local"), ptx)),
    }


# ---------------------------------------------------------------------------
# references


def random_spd_bands(rng, batch_shape, w, T, k, dtype=np.float64):
    """Random SPD block-banded matrices in lower band storage, and their dense form.

    M is symmetric with random entries in its band and a diagonal made
    strictly dominant (|M_ii| > sum_j |M_ij|), hence positive definite with a
    modest condition number. The entries that must be ignored (upper triangle
    of the diagonal blocks, padding blocks) hold large garbage values.
    """
    batch_shape = tuple(batch_shape)
    n = T * k
    dense = np.zeros(batch_shape + (n, n))
    for idx in np.ndindex(*batch_shape):
        m = np.zeros((n, n))
        for t in range(T):
            for d in range(min(w, T - 1 - t) + 1):
                blk = rng.uniform(-1.0, 1.0, (k, k))
                m[(t + d) * k:(t + d + 1) * k, t * k:(t + 1) * k] = blk
        m = np.tril(m) + np.tril(m, -1).T
        m[np.diag_indices(n)] = np.abs(m).sum(axis=1) + 1.0
        dense[idx] = m
    bands = bands_from_dense(dense, w, T, k)
    garbage = rng.uniform(500.0, 1000.0, bands.shape)
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    bands[..., 0, :, :, :] = np.where(upper, garbage[..., 0, :, :, :], bands[..., 0, :, :, :])
    for d in range(1, w + 1):
        bands[..., d, max(T - d, 0):, :, :] = garbage[..., d, max(T - d, 0):, :, :]
    return bands.astype(dtype), dense


def bands_from_dense(dense, w, T, k):
    """Lower band storage (..., w+1, T, k, k) of dense (..., Tk, Tk) matrices."""
    out = np.zeros(dense.shape[:-2] + (w + 1, T, k, k))
    for d in range(w + 1):
        for t in range(T - d):
            out[..., d, t, :, :] = dense[..., (t + d) * k:(t + d + 1) * k, t * k:(t + 1) * k]
    return out


def dense_from_bands(bands):
    """Dense lower-triangular / symmetric-lower matrix of a lower band (no padding)."""
    *batch, n_diag, T, k, _ = bands.shape
    out = np.zeros(tuple(batch) + (T * k, T * k), dtype=bands.dtype)
    for d in range(n_diag):
        for t in range(T - d):
            out[..., (t + d) * k:(t + d + 1) * k, t * k:(t + 1) * k] = bands[..., d, t, :, :]
    return out


def eps(dtype):
    return float(np.finfo(dtype).eps)


def residual_ratio(dense, x, b):
    """LAPACK's yardstick ||M x - b|| / (||M|| ||x|| n eps), per right-hand side set.

    ``dense`` (n, n) float64, x and b (n, m) in any float dtype; returns the
    largest ratio over the columns.
    """
    n = dense.shape[-1]
    x64 = x.astype(np.float64)
    r = dense @ x64 - b.astype(np.float64)
    norm_m = np.abs(dense).sum(axis=0).max()
    ratios = np.abs(r).sum(axis=0) / (norm_m * np.maximum(np.abs(x64).sum(axis=0), 1e-300)
                                      * n * eps(x.dtype))
    return float(ratios.max()) if ratios.size else 0.0


def forward_tolerance(dense, dtype, x_scale):
    """Allowed difference between two backward-stable solutions of M x = b.

    Each computed x has a forward error of at most about n eps cond(M) |x|;
    two of them differ by at most twice that (with a factor 4 of slack for
    the constants LAPACK's analysis leaves out).
    """
    n = dense.shape[-1]
    cond = np.linalg.cond(dense) if n else 1.0
    return 8.0 * n * eps(dtype) * cond * x_scale


# ---------------------------------------------------------------------------
# band-only references for sizes too large for dense matrices


def random_spd_bands_large(rng, n_items, w, T, k, dtype=np.float64):
    """Random SPD band storage without forming M: symmetric diagonal blocks and
    a diagonal made strictly dominant using the band's absolute row sums."""
    bands = rng.uniform(-1.0, 1.0, (n_items, w + 1, T, k, k))
    for d in range(1, w + 1):
        bands[:, d, T - d:] = 0.0
    diag = bands[:, 0]
    diag[...] = (diag + np.swapaxes(diag, -1, -2)) / 2
    row_sums = np.abs(diag).sum(axis=-1)
    for d in range(1, w + 1):
        if T - d > 0:
            blk = np.abs(bands[:, d, : T - d])  # M[t+d, t]
            row_sums[:, d:] += blk.sum(axis=-1)  # row t+d
            row_sums[:, : T - d] += blk.sum(axis=-2)  # row t, from M[t, t+d] = blk^T
    idx = np.arange(k)
    diag[..., idx, idx] = row_sums + 1.0
    return bands.astype(dtype)


def band_matvec(bands, x):
    """M x for lower band storage (full symmetric diagonal blocks), x (B, T, k, m)."""
    B, n_diag, T, k, _ = bands.shape
    y = np.einsum("btij,btjm->btim", bands[:, 0], x)
    for d in range(1, n_diag):
        if T - d > 0:
            blk = bands[:, d, : T - d]
            y[:, d:] += np.einsum("btij,btjm->btim", blk, x[:, : T - d])
            y[:, : T - d] += np.einsum("btji,btjm->btim", blk, x[:, d:])
    return y


def band_norm1(bands):
    """||M||_1 (= ||M||_inf, M symmetric) per item, from the band alone."""
    b64 = np.abs(bands.astype(np.float64))
    T = bands.shape[2]
    rows = b64[:, 0].sum(axis=-1)
    for d in range(1, bands.shape[1]):
        if T - d > 0:
            rows[:, d:] += b64[:, d, : T - d].sum(axis=-1)
            rows[:, : T - d] += b64[:, d, : T - d].sum(axis=-2)
    return rows.max(axis=(1, 2))


def band_residual_ratio(bands, x, b):
    """Largest ||M x - b||_1 / (||M||_1 ||x||_1 n eps) over the columns, per item."""
    r = band_matvec(bands.astype(np.float64), x.astype(np.float64)) - b.astype(np.float64)
    n = bands.shape[2] * bands.shape[3]
    num = np.abs(r).sum(axis=(1, 2))
    den = (band_norm1(bands)[:, None] * np.abs(x.astype(np.float64)).sum(axis=(1, 2))
           * n * eps(x.dtype))
    return (num / den).max(axis=-1)


# ---------------------------------------------------------------------------
# the status contract, independently of any backend


def reference_info(bands, check_finite):
    """``info`` per item from a dense scalar Cholesky in float64.

    0 ok; ``j > 0``: the pivot of scalar row j-1 is not finite and positive
    (the first one); with ``check_finite`` a failed item that holds a
    non-finite entry among those read (lower triangle of the band) reports
    ``-j``, j - 1 the first scalar row holding one.
    """
    *_, T, k, _ = bands.shape
    flat = bands.reshape((-1,) + bands.shape[-4:]).astype(np.float64)
    out = np.zeros(flat.shape[0], dtype=np.int64)
    for i, item in enumerate(flat):
        lower = np.tril(dense_from_bands(item))  # exactly the entries that are read
        in_band = np.tril(dense_from_bands(np.ones_like(item))) != 0
        M = lower + np.tril(lower, -1).T
        n = T * k
        L = np.zeros((n, n))
        code = 0
        with np.errstate(all="ignore"):
            for j in range(n):
                v = M[j, j] - L[j, :j] @ L[j, :j]
                if not (v > 0 and v < np.inf):
                    code = j + 1
                    break
                L[j, j] = np.sqrt(v)
                L[j + 1:, j] = (M[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
        bad_rows = np.flatnonzero((~np.isfinite(lower) & in_band).any(axis=1))
        if check_finite and code and bad_rows.size:
            code = -(int(bad_rows[0]) + 1)
        out[i] = code
    return out
