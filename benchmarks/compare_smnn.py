"""smnn against PyTorch peers: forward and forward+vjp times, ratios, peak memory.

Cases (B, T, E, D, O) of issue 5/8: (64, 1000, 3, 3, 3), (512, 1000, 3, 3, 3),
(1, 10000, 3, 3, 3); default weights, no central smoothness, Ti = Oi = 1,
float64. The inputs are random coefficients and right-hand sides with steps
around 0.01 (one set per batch item).

Peers (both written here, both PyTorch CPU with autograd, same system):

* ``torch-dense``: the band blocks assembled with vectorised torch ops,
  scattered into the dense (T k) x (T k) matrix M, ``torch.linalg.solve``,
  gradients by autograd. M alone takes B (T k)^2 8 bytes (648 MB per item at
  T = 1000, k = 9), so it runs on one batch item and its time is scaled by B
  (the dense solves of a batch are independent); at T = 10000 it would need
  65 GB and is skipped.
* ``torch-banded``: the same blocks, a block Cholesky factor and the two block
  substitutions as a Python loop over t with batched torch ops (cholesky,
  solve_triangular, matmul), gradients by autograd through the loop.

Times are the minimum over repeats of wall-clock time, in one process, after a
warm-up of up to six calls (JIT compilation and the first, slower calls of
a process excluded). Peak memory is the additional
resident memory of one call over the memory held before it (inputs
included in neither), measured in a fresh subprocess by resetting the
kernel's high-water mark (``/proc/self/clear_refs``) and reading ``VmHWM``.

Usage::

    python benchmarks/compare_smnn.py            # all cases
    python benchmarks/compare_smnn.py --quick    # fewer repeats, no dense peer
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

CASES = {
    "baseline": (64, 1000, 3, 3, 3),
    "throughput": (512, 1000, 3, 3, 3),
    "long": (1, 10000, 3, 3, 3),
}
#: smnn forward+vjp memory over T (B = 1): linear in T.
MEMORY_SERIES = [(1, 1000, 3, 3, 3), (1, 10000, 3, 3, 3), (1, 100000, 3, 3, 3)]
#: Largest dense matrix M (bytes) the dense peer may build.
DENSE_LIMIT = 4 * 2**30


def make_problem(B, T, E, D, O, seed=0, step=0.01):
    """Random S-MNN inputs: coefficients, rhs (normal), init (Ti = Oi = 1), steps ~ step."""
    rng = np.random.default_rng(seed)
    coef = rng.standard_normal((B, T, E, D, O))
    rhs = rng.standard_normal((B, T, E))
    init = rng.standard_normal((B, 1, D, 1))
    steps = rng.uniform(0.5 * step, 1.5 * step, (B, T - 1))
    return coef, rhs, init, steps


# ---------------------------------------------------------------------------
# smnn


def smnn_forward(coef, rhs, init, steps):
    import smnn

    return smnn.ode_forward(coef, rhs, init, steps)


def smnn_forward_vjp(coef, rhs, init, steps, g):
    import smnn

    u, vjp = smnn.ode_vjp(coef, rhs, init, steps)
    return u, vjp(g)


# ---------------------------------------------------------------------------
# PyTorch peers (same system: DESIGN.md section 4, unit weights, no central rows)


def torch_blocks(coef, rhs, init, steps):
    """Band blocks of M and b with torch ops, vectorised over batch and time.

    Returns diag (B, T, k, k) = M[t, t], off (B, T-1, k, k) = M[t+1, t] and
    b (B, T, k); differentiable in all four inputs.
    """
    import torch

    B, T, E, D, O = coef.shape
    Ti, Oi = init.shape[1], init.shape[3]
    k = D * O
    c = coef.reshape(B, T, E, k)
    diag = torch.einsum("btei,btej->btij", c, c)
    b = torch.einsum("btei,bte->bti", c, rhs)
    mask = torch.zeros(T, D, O, dtype=coef.dtype)
    mask[:Ti, :, :Oi] = 1.0
    diag = diag + torch.diag_embed(mask.reshape(T, k))
    init_full = torch.zeros(B, T, D, O, dtype=coef.dtype)
    init_full = init_full.index_put((torch.arange(B)[:, None, None, None],
                                     torch.arange(Ti)[None, :, None, None],
                                     torch.arange(D)[None, None, :, None],
                                     torch.arange(Oi)[None, None, None, :]), init)
    b = b + init_full.reshape(B, T, k)
    F = torch.zeros(O, O, dtype=coef.dtype)
    for o in range(O):
        for op in range(o, O):
            F[o, op] = 1.0 / math.factorial(op - o)
    eye_d = torch.eye(D, dtype=coef.dtype)
    orders = torch.arange(O, dtype=coef.dtype)

    def blockdiag(S):  # (B, T-1, O, O) -> (B, T-1, k, k), the same block per dimension
        return torch.einsum("de,ntij->ntdiej", eye_d, S).reshape(B, T - 1, k, k)

    zero = torch.zeros(B, 1, k, k, dtype=coef.dtype)
    off = torch.zeros(B, T - 1, k, k, dtype=coef.dtype)
    for sign in (1.0, -1.0):
        pw = (sign * steps)[..., None] ** orders  # s^o: (B, T-1, O)
        P = pw[..., None, :] * F  # rows o: s^{o'}/(o'-o)!
        q = -pw
        S_aa = blockdiag(P.mT @ P)
        S_nn = blockdiag(torch.diag_embed(q * q))
        S_na = blockdiag(q[..., None] * P)  # row o (block n), column o' (block a)
        if sign > 0:  # a = t, n = t+1
            diag = diag + torch.cat([S_aa, zero], 1) + torch.cat([zero, S_nn], 1)
            off = off + S_na
        else:  # a = t+1, n = t
            diag = diag + torch.cat([zero, S_aa], 1) + torch.cat([S_nn, zero], 1)
            off = off + S_na.mT
    return diag, off, b


def torch_dense_solve(diag, off, b):
    import torch

    B, T, k, _ = diag.shape
    n = T * k
    M = torch.zeros(B, T, k, T, k, dtype=diag.dtype)
    t = torch.arange(T)
    M[:, t, :, t, :] = diag.transpose(0, 1)
    s = torch.arange(T - 1)
    M[:, s + 1, :, s, :] = off.transpose(0, 1)
    M[:, s, :, s + 1, :] = off.mT.transpose(0, 1)
    x = torch.linalg.solve(M.reshape(B, n, n), b.reshape(B, n, 1))
    return x.reshape(B, T, k)


def torch_banded_solve(diag, off, b):
    """Block Cholesky and block substitutions, a Python loop over t.

    The blocks are split with ``unbind`` once (indexing ``diag[:, t]`` in the
    loop would make autograd build a full-size gradient per step).
    """
    import torch

    T = diag.shape[1]
    solve_tri = torch.linalg.solve_triangular
    diag_t, off_t, b_t = diag.unbind(1), off.unbind(1), b[..., None].unbind(1)
    Ls, Cs, ys = [], [], []
    for t in range(T):
        A, rhs_t = diag_t[t], b_t[t]
        if t > 0:
            A = A - Cs[-1] @ Cs[-1].mT
            rhs_t = rhs_t - Cs[-1] @ ys[-1]
        L = torch.linalg.cholesky(A)
        ys.append(solve_tri(L, rhs_t, upper=False))
        Ls.append(L)
        if t < T - 1:  # C_t = M[t+1, t] L_t^{-T}
            Cs.append(solve_tri(L, off_t[t].mT, upper=False).mT)
    xs = [None] * T
    xs[T - 1] = solve_tri(Ls[T - 1].mT, ys[T - 1], upper=True)
    for t in range(T - 2, -1, -1):
        xs[t] = solve_tri(Ls[t].mT, ys[t] - Cs[t].mT @ xs[t + 1], upper=True)
    return torch.stack(xs, 1)[..., 0]


def torch_runner(kind, with_vjp):
    import torch

    solve = torch_dense_solve if kind == "dense" else torch_banded_solve

    def run(coef, rhs, init, steps, g=None):
        if not with_vjp:
            with torch.no_grad():
                diag, off, b = torch_blocks(*map(torch.from_numpy, (coef, rhs, init, steps)))
                return solve(diag, off, b).reshape(coef.shape[:2] + coef.shape[3:]).numpy()
        leaves = [torch.from_numpy(a).requires_grad_() for a in (coef, rhs, init, steps)]
        diag, off, b = torch_blocks(*leaves)
        u = solve(diag, off, b).reshape(coef.shape[:2] + coef.shape[3:])
        (u.reshape(-1) * torch.from_numpy(g).reshape(-1)).sum().backward()
        return u.detach().numpy(), tuple(a.grad.numpy() for a in leaves)

    return run


# ---------------------------------------------------------------------------
# measurement


def runner(impl, mode):
    with_vjp = mode == "forward+vjp"
    if impl == "smnn":
        return smnn_forward_vjp if with_vjp else smnn_forward
    return torch_runner(impl.split("-")[1], with_vjp)


def call_args(case, impl, mode):
    B, T, E, D, O = case
    if impl == "torch-dense":
        B = 1
    args = make_problem(B, T, E, D, O)
    if mode == "forward+vjp":
        args = args + (np.random.default_rng(1).standard_normal((B, T, D, O)),)
    return args


#: Warm-up calls before timing (fewer when a call takes over WARMUP_SECONDS).
#: The first calls of a process are slower for a while (up to 3x for smnn's
#: forward at B = 64, T = 1000, for about five calls: the allocator and the
#: kernel's page handling settle), and a training loop runs in the settled
#: state, so that is what is timed.
WARMUP_CALLS = 6
WARMUP_SECONDS = 2.0


def time_call(fn, args, repeats):
    """Minimum wall time over ``repeats`` calls after up to ``WARMUP_CALLS``
    warm-up calls; a call slower than ``WARMUP_SECONDS`` is timed once, after
    one warm-up call (the dense peer)."""
    t_start = time.perf_counter()
    for i in range(WARMUP_CALLS):  # JIT compilation, allocator
        t0 = time.perf_counter()
        fn(*args)
        elapsed = time.perf_counter() - t0
        if elapsed > WARMUP_SECONDS:
            if i > 0:
                return elapsed  # warmed up, and too slow to repeat
            repeats = 1
            break
        if time.perf_counter() - t_start > 2 * WARMUP_SECONDS:
            break
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def _rss_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory_here(impl, mode, case):
    """Additional peak resident memory of one call (run in a fresh process)."""
    fn = runner(impl, mode)
    args = call_args(case, impl, mode)
    if impl == "smnn":
        fn(*args)  # load the compiled kernels outside the measured call
    before = _rss_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark VmHWM to the current RSS
    fn(*args)
    return _rss_bytes("VmHWM") - before


def measure_memory(impl, mode, case):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child",
           json.dumps([impl, mode, list(case)])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def check_agreement():
    """The peers solve the same system: compare with smnn on a small case."""
    case = (2, 40, 2, 2, 3)
    args = make_problem(*case, step=0.3)  # well conditioned: differences are round-off
    g = np.random.default_rng(1).standard_normal(case[:2] + case[3:])
    u, grads = smnn_forward_vjp(*args, g)
    worst = 0.0
    for impl in ("torch-dense", "torch-banded"):
        u2, grads2 = torch_runner(impl.split("-")[1], True)(*args, g)
        for a, b in zip((u,) + tuple(grads), (u2,) + tuple(grads2)):
            worst = max(worst, float(np.abs(a - b).max() / np.abs(a).max()))
    return worst


def fmt_time(t):
    return "—" if t is None else (f"{t * 1e3:9.1f} ms" if t < 10 else f"{t:9.1f} s ")


def fmt_mem(m):
    return "—" if m is None else f"{m / 2**20:8.1f} MiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, no dense peer")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.memory_child:
        impl, mode, case = json.loads(opts.memory_child)
        print(measure_memory_here(impl, mode, tuple(case)))
        return

    import numba
    import torch

    print(f"machine: {os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}, "
          f"torch threads {torch.get_num_threads()}, torch {torch.__version__}, float64")
    print(f"peers agree with smnn (u and all four gradients, max rel. diff): "
          f"{check_agreement():.1e}")
    repeats = 1 if opts.quick else 3
    impls = ["smnn", "torch-banded"] + ([] if opts.quick else ["torch-dense"])
    rows = []
    for name in opts.cases:
        case = CASES[name]
        B, T, E, D, O = case
        k = D * O
        for mode in ("forward", "forward+vjp"):
            result = {}
            for impl in impls:
                if impl == "torch-dense" and (T * k) ** 2 * 8 > DENSE_LIMIT:
                    result[impl] = (None, None, f"M needs {(T * k) ** 2 * 8 / 2**30:.0f} GiB")
                    continue
                fn = runner(impl, mode)
                args = call_args(case, impl, mode)
                t = time_call(fn, args, repeats)
                note = ""
                if impl == "torch-dense" and B > 1:
                    t, note = t * B, f"1 item x {B}"
                mem = None if opts.no_memory else measure_memory(impl, mode, case)
                if impl == "torch-dense" and B > 1 and mem is not None:
                    note += " (memory: 1 item)"
                result[impl] = (t, mem, note)
            rows.append((name, case, mode, result))
            t0 = result["smnn"][0]
            line = [f"{name:10s} {str(case):20s} {mode:12s}"]
            for impl in impls:
                t, mem, note = result[impl]
                ratio = "" if t is None or impl == "smnn" else f" ({t / t0:6.1f}x)"
                line.append(f"{impl}: {fmt_time(t)}{ratio} {fmt_mem(mem)} {note}".rstrip())
            print(" | ".join(line), flush=True)
    if not opts.no_memory:
        print("smnn forward+vjp additional peak memory over T (B = 1):")
        for case in MEMORY_SERIES:
            mem = measure_memory("smnn", "forward+vjp", case)
            T = case[1]
            print(f"  T = {T:6d}: {fmt_mem(mem)}  ({mem / T:8.0f} bytes per step)", flush=True)
    return rows


if __name__ == "__main__":
    main()
