"""GPU benchmark: bandsolve's CUDA backend against dense CuPy and the CPU backend.

For every configuration (batch B, block rows T, block size k, bandwidth w) it
times, in one run on one machine:

* ``factor+solve``: ``bandsolve.solve`` on CuPy arrays (CUDA kernels), against
  ``cupy.linalg.solve`` and ``cupy.linalg.cholesky`` on the dense (B, Tk, Tk)
  matrices where they fit in the dense memory budget, and against
  ``bandsolve.solve(..., backend="cpu")`` on the same problem in host memory;
* ``vjp``: ``bandsolve.solve_vjp`` followed by one call of its ``vjp`` (one
  more solve and the band cotangent), against the CPU backend and, where they
  fit, the dense adjoint (two dense solves and the outer product).

GPU times come from CUDA events around each call on the current stream
(median of ``--repeat`` runs after warm-up, so compilation is excluded); the
``wall`` column adds the host-side launch overhead. CPU times are the best of
up to ``--cpu-repeat`` runs. Every ratio is ``other / cuda`` (above 1: the
CUDA backend is faster). Calls use ``check=False, check_finite=False`` on both
backends so no host synchronisation is timed.

Usage::

    python benchmarks/gpu_compare.py              # B {1,64,1024} x T {1000,10000} x k {9,30}
    python benchmarks/gpu_compare.py --quick      # B {1,64}, T 1000
    python benchmarks/gpu_compare.py --dry-run    # print the plan and memory needs, no GPU needed

Needs CuPy, numba-cuda and a CUDA GPU (``pip install 'bandsolve[cuda]'``).
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

BATCHES = (1, 64, 1024)
BLOCK_ROWS = (1000, 10000)
BLOCK_SIZES = (9, 30)


# ---------------------------------------------------------------------------
# problems (array-module agnostic: numpy or cupy)


def make_problem(xp, seed, n_items, bandwidth, n_blocks, block_size, dtype):
    """Random SPD band storage (B, w+1, T, k, k), right-hand sides and a cotangent.

    Off-diagonal entries are uniform in [-1, 1]; the diagonal is made strictly
    dominant (|M_ii| > sum_j |M_ij| + 1), so M is SPD with cond(M) <= ||M||_1.
    """
    B, w, T, k = n_items, bandwidth, n_blocks, block_size
    rs = xp.random.RandomState(seed)
    bands = rs.uniform(-1.0, 1.0, (B, w + 1, T, k, k)).astype(dtype)
    for d in range(1, w + 1):
        bands[:, d, max(T - d, 0):] = 0
    diag = bands[:, 0]
    diag[...] = (diag + xp.swapaxes(diag, -1, -2)) / 2
    rows = xp.abs(diag).sum(axis=-1)
    for d in range(1, w + 1):
        if T - d > 0:
            blk = xp.abs(bands[:, d, : T - d])
            rows[:, d:] += blk.sum(axis=-1)
            rows[:, : T - d] += blk.sum(axis=-2)
    idx = xp.arange(k)
    diag[..., idx, idx] = rows + 1
    b = rs.standard_normal((B, T, k)).astype(dtype)
    g = rs.standard_normal((B, T, k)).astype(dtype)
    return bands, b, g


def dense_matrices(xp, bands):
    """The dense symmetric (B, Tk, Tk) matrices of lower band storage."""
    B, n_diag, T, k, _ = bands.shape
    M = xp.zeros((B, T * k, T * k), dtype=bands.dtype)
    blocks = M.reshape(B, T, k, T, k)
    t = xp.arange(T)
    for d in range(n_diag):
        rows, cols = t[d:], t[: T - d]
        if rows.size == 0:
            continue
        blk = bands[:, d, : T - d]  # M[t+d, t]
        if d == 0:
            blk = xp.tril(blk) + xp.swapaxes(xp.tril(blk, -1), -1, -2)
        blocks[:, rows, :, cols, :] = xp.moveaxis(blk, 1, 0)
        if d > 0:
            blocks[:, cols, :, rows, :] = xp.moveaxis(xp.swapaxes(blk, -1, -2), 1, 0)
    return M


def memory_needs(n_items, bandwidth, n_blocks, block_size, itemsize):
    """(band bytes for the banded runs, bytes for the dense runs)."""
    B, w, T, k = n_items, bandwidth, n_blocks, block_size
    band = B * (w + 1) * T * k * k * itemsize
    rhs = B * T * k * itemsize
    # bands, solve_vjp's factor copy, the cotangent and its reshaped result,
    # rhs-sized vectors (b, x, g, bbar, ...)
    banded = 4 * band + 8 * rhs
    # M, the solver's copy / factor, the dense cotangent
    dense = 3 * B * (T * k) ** 2 * itemsize
    return banded, dense


# ---------------------------------------------------------------------------
# timing


def gpu_time(cupy, fn, repeat, warmup=2):
    """(median GPU ms from CUDA events, median wall ms) of ``fn`` on the current stream."""
    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    gpu, wall = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        end.synchronize()
        wall.append((time.perf_counter() - t0) * 1e3)
        gpu.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(gpu), statistics.median(wall)


def cpu_time(fn, repeat, budget_s=20.0):
    """Best wall ms of up to ``repeat`` runs (fewer once ``budget_s`` is spent)."""
    best, spent = float("inf"), 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best * 1e3


# ---------------------------------------------------------------------------
# one configuration


def run_config(cupy, bandsolve, cfg, args):
    B, w, T, k = cfg
    dtype = np.dtype(args.dtype)
    bands, b, g = make_problem(cupy, 1234, B, w, T, k, dtype)
    kw = dict(check=False, check_finite=False)

    def fused():
        return bandsolve.solve(bands, b, **kw)

    def vjp_step():
        _, vjp = bandsolve.solve_vjp(bands, b, **kw)
        return vjp(g)

    out = {"solve": {}, "vjp": {}}
    out["solve"]["cuda"] = gpu_time(cupy, fused, args.repeat)
    out["vjp"]["cuda"] = gpu_time(cupy, vjp_step, args.repeat)

    if not args.no_cpu:
        bands_h, b_h, g_h = cupy.asnumpy(bands), cupy.asnumpy(b), cupy.asnumpy(g)
        # compile the CPU kernels outside the timing
        bandsolve.solve_vjp(bands_h[:1], b_h[:1], backend="cpu", **kw)[1](g_h[:1])
        bandsolve.solve(bands_h[:1], b_h[:1], backend="cpu", **kw)
        out["solve"]["cpu"] = cpu_time(
            lambda: bandsolve.solve(bands_h, b_h, backend="cpu", **kw), args.cpu_repeat)
        out["vjp"]["cpu"] = cpu_time(
            lambda: bandsolve.solve_vjp(bands_h, b_h, backend="cpu", **kw)[1](g_h),
            args.cpu_repeat)
        del bands_h, b_h, g_h

    _, dense_bytes = memory_needs(B, w, T, k, dtype.itemsize)
    if dense_bytes <= args.dense_budget_gb * 2**30:
        M = dense_matrices(cupy, bands)
        rhs = b.reshape(B, T * k, 1)
        cot = g.reshape(B, T * k, 1)

        def dense_vjp():
            x = cupy.linalg.solve(M, rhs)
            bbar = cupy.linalg.solve(M, cot)
            return -bbar @ cupy.swapaxes(x, -1, -2)

        out["solve"]["dense solve"] = gpu_time(cupy, lambda: cupy.linalg.solve(M, rhs), args.repeat)
        out["solve"]["dense cholesky"] = gpu_time(cupy, lambda: cupy.linalg.cholesky(M), args.repeat)
        out["vjp"]["dense"] = gpu_time(cupy, dense_vjp, args.repeat)
        del M
    del bands, b, g
    cupy.get_default_memory_pool().free_all_blocks()
    return out


# ---------------------------------------------------------------------------
# driver


def configurations(args):
    batches = (1, 64) if args.quick else BATCHES
    block_rows = (1000,) if args.quick else BLOCK_ROWS
    return [(B, args.bandwidth, T, k) for B in batches for T in block_rows for k in BLOCK_SIZES]


def describe_machine(cupy):
    lines = [f"python {platform.python_version()}, numpy {np.__version__}"]
    try:
        import numba_cuda

        lines.append(f"numba-cuda {numba_cuda.__version__}")
    except (ImportError, AttributeError):
        pass
    if cupy is not None:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        free, total = cupy.cuda.runtime.memGetInfo()
        lines.append(f"GPU: {name}, {total / 2**30:.0f} GiB, CuPy {cupy.__version__}")
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines.append(f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores available")
    return lines


def _fmt(ms):
    return "-" if ms is None else (f"{ms:9.3f}" if ms < 1000 else f"{ms:9.0f}")


def print_rows(cfg, out):
    B, w, T, k = cfg
    for op, times in out.items():
        cuda_gpu, cuda_wall = times["cuda"]
        cells = [f"{B:5d} {T:6d} {k:3d} {w:2d} {op:6s}", _fmt(cuda_gpu), _fmt(cuda_wall)]
        for peer in ("cpu", "dense solve", "dense cholesky", "dense"):
            if peer in times:
                t = times[peer] if peer == "cpu" else times[peer][0]
                cells.append(f"{peer}: {_fmt(t).strip()} ms (x{t / cuda_gpu:.1f})")
        print("  ".join(cells), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="B in {1, 64}, T = 1000 only")
    parser.add_argument("--dry-run", action="store_true",
                        help="print configurations and memory needs, run nothing")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("--bandwidth", type=int, default=1, help="w (default 1)")
    parser.add_argument("--repeat", type=int, default=10, help="GPU timing runs (median)")
    parser.add_argument("--cpu-repeat", type=int, default=3, help="CPU timing runs (best)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU backend")
    parser.add_argument("--dense-budget-gb", type=float, default=None,
                        help="largest dense problem (default: a quarter of free GPU memory)")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="GPU memory to plan with (default: free memory; dry runs: 80)")
    args = parser.parse_args(argv)

    cupy = None
    if not args.dry_run:
        try:
            import cupy
        except ImportError:
            sys.exit("gpu_compare.py needs CuPy and a CUDA GPU: pip install 'bandsolve[cuda]'")
        import bandsolve
        from bandsolve.cuda import _require_cuda

        _require_cuda()  # clear error when no GPU is visible
    if args.memory_gb is None:
        args.memory_gb = 80.0 if cupy is None else cupy.cuda.runtime.memGetInfo()[0] / 2**30
    if args.dense_budget_gb is None:
        args.dense_budget_gb = args.memory_gb / 4

    print("\n".join(describe_machine(cupy)))
    print(f"dtype {args.dtype}; times in ms: cuda = GPU event time (wall incl. launch); "
          "(xN) = peer time / cuda GPU time")
    print("    B      T   k  w op        cuda       wall  peers")
    itemsize = np.dtype(args.dtype).itemsize
    for cfg in configurations(args):
        banded, dense = memory_needs(*cfg, itemsize)
        if banded > 0.8 * args.memory_gb * 2**30:
            print(f"{cfg[0]:5d} {cfg[2]:6d} {cfg[3]:3d} {cfg[1]:2d} skipped: needs "
                  f"{banded / 2**30:.1f} GiB of GPU memory", flush=True)
            continue
        if args.dry_run:
            where = "with" if dense <= args.dense_budget_gb * 2**30 else "without"
            print(f"{cfg[0]:5d} {cfg[2]:6d} {cfg[3]:3d} {cfg[1]:2d} would run {where} dense "
                  f"peers: {banded / 2**30:.2f} GiB banded, {dense / 2**30:.1f} GiB dense",
                  flush=True)
            continue
        print_rows(cfg, run_config(cupy, bandsolve, cfg, args))


if __name__ == "__main__":
    main()
