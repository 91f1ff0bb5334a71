"""Time bandsolve against its peers in one run and print a table of ratios.

Usage: python benchmarks/compare.py [--quick] [--repeats N] [--only NAME ...]

For every case (B, T, k, w) of issue 8 it times a factor+solve of B systems
with ``bandsolve.solve`` and, on the same matrices:

* ``scipy.linalg.solveh_banded`` looped over the batch, on the same matrix as
  a scalar band of half-bandwidth (w+1)k - 1 in the lower form, with
  ``check_finite`` as in a default call (True) and with ``check_finite=False``;
* a dense ``numpy.linalg.solve`` of the assembled (B, Tk, Tk) matrices, where
  they fit (see ``DENSE_LIMIT_BYTES``).

Each time is the median of several repeats after a warm-up call (Numba
compilation excluded); "x" columns are peer time / bandsolve time (> 1: bandsolve
faster). GFLOP/s counts T(k^3/3 + w k^3 + w^2 k^3) for the factor and
2T(w+1)k^2 per right-hand side for the solve. Memory is the peak additional
memory of one bandsolve factor+solve relative to its inputs plus outputs, seen
by tracemalloc (NumPy allocations) and by the resident-set high-water mark
(everything, Numba's own allocations included; Linux only).

More benchmark groups (smnn, adapters) are added as functions returning rows
and listed in ``SUITES``; they share the table.
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks"))

import bandsolve  # noqa: E402
from common import (  # noqa: E402
    CASES,
    MEMORY_SERIES,
    dense_matrices,
    factor_flops,
    make_system,
    scalar_band,
    solve_flops,
    warm_up,
)

#: Dense peers run only when the (B, Tk, Tk) matrices take at most this much.
DENSE_LIMIT_BYTES = 1 << 29

#: Below this input+output size the RSS delta is not reported: the allocator
#: serves small arrays from heap memory that is already resident, so the
#: high-water mark does not move (tracemalloc still sees them).
RSS_MIN_BYTES = 64 << 20


# ---------------------------------------------------------------------------
# measurement


def median_time(fn, repeats, warmup=1):
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status_kib(field_name):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss():
    """Reset the resident-set high-water mark (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def extra_memory(fn):
    """Peak additional memory of ``fn()`` in bytes: (tracemalloc, RSS or None)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    traced = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    gc.collect()
    rss = None
    if _reset_peak_rss():
        before = _status_kib("VmRSS")
        fn()
        peak = _status_kib("VmHWM")
        if before is not None and peak is not None:
            rss = max(peak - before, 0) * 1024
    return traced, rss


# ---------------------------------------------------------------------------
# table rows


@dataclass
class Row:
    """One line of the table: our time, the peers' times, throughput, memory."""

    group: str
    name: str
    params: str
    ours: float
    peers: dict = field(default_factory=dict)  # peer name -> seconds or None (n/a)
    gflops: float = None
    mem_traced: float = None  # additional bytes / (inputs + outputs)
    mem_rss: float = None
    note: str = ""


def _fmt_time(seconds):
    if seconds is None:
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def print_table(rows, out=sys.stdout):
    peer_names = []
    for row in rows:
        for name in row.peers:
            if name not in peer_names:
                peer_names.append(name)
    header = ["group", "case", "B, T, k, w", "ours", "GFLOP/s"]
    for name in peer_names:
        header += [name, "x"]
    header += ["mem/io (traced)", "mem/io (RSS)"]
    lines = []
    for row in rows:
        cells = [row.group, row.name, row.params, _fmt_time(row.ours), _fmt(row.gflops, ".2f")]
        for name in peer_names:
            t = row.peers.get(name)
            cells += [_fmt_time(t), "n/a" if t is None else f"{t / row.ours:.2f}"]
        cells += [_fmt(row.mem_traced, ".2f"), _fmt(row.mem_rss, ".2f")]
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*header), file=out)
    print(fmt.format(*["-" * w for w in widths]), file=out)
    for cells in lines:
        print(fmt.format(*cells), file=out)
    notes = [f"  {row.name}: {row.note}" for row in rows if row.note]
    if notes:
        print("notes:", file=out)
        print("\n".join(notes), file=out)


# ---------------------------------------------------------------------------
# bandsolve: factor + solve against SciPy and dense NumPy


def _scipy_loop(ab, b_cols, check_finite):
    def run():
        for i in range(ab.shape[0]):
            scipy.linalg.solveh_banded(ab[i], b_cols[i], lower=True, check_finite=check_finite)
    return run


def bandsolve_factor_solve_row(name, case, repeats, dtype=np.float64, peers=True,
                               kind="dominant"):
    """Row for one factor+solve case: bandsolve vs SciPy loop and dense NumPy."""
    B, T, k, w = case
    bands, b = make_system(B, T, k, w, dtype, kind=kind)
    ours = median_time(lambda: bandsolve.solve(bands, b), repeats)
    flops = B * (factor_flops(T, k, w) + solve_flops(T, k, w))
    row = Row("bandsolve", name, f"{B}, {T}, {k}, {w}", ours, gflops=flops / ours / 1e9)

    io_bytes = bands.nbytes + 2 * b.nbytes  # inputs + output x
    traced, rss = extra_memory(lambda: bandsolve.solve(bands, b))
    row.mem_traced = traced / io_bytes
    if rss is not None and io_bytes >= RSS_MIN_BYTES:
        row.mem_rss = rss / io_bytes

    if peers:
        ab = scalar_band(bands)
        b_cols = b.reshape(B, T * k)
        row.peers["SciPy loop"] = median_time(_scipy_loop(ab, b_cols, True), repeats)
        row.peers["SciPy loop, cf=False"] = median_time(_scipy_loop(ab, b_cols, False), repeats)
        del ab
        n = T * k
        dense_bytes = B * n * n * np.dtype(dtype).itemsize
        if dense_bytes <= DENSE_LIMIT_BYTES:
            dense = dense_matrices(bands)
            rhs = b.reshape(B, n, 1)
            row.peers["dense NumPy"] = median_time(lambda: np.linalg.solve(dense, rhs), repeats)
            del dense
        else:
            row.peers["dense NumPy"] = None
            row.note = (f"dense NumPy n/a: {B} x {n}^2 matrices take "
                        f"{dense_bytes / 2**30:.1f} GiB")
    return row


#: name -> ((B, T, k, w), quick variant or None to leave the case out of --quick)
_QUICK = {
    "baseline": (64, 1000, 9, 1),
    "throughput": None,
    "latency": (1, 100000, 9, 1),
    "wide-block": (8, 1000, 30, 1),
    "pentadiagonal": (64, 1000, 9, 2),
}


def bandsolve_suite(opts):
    """Factor+solve rows: the issue-8 cases, a case where dense fits, memory over T."""
    rows = []
    cases = []
    for name, case in CASES.items():
        if opts.quick:
            case = _QUICK[name]
            if case is None:
                continue
            if case != CASES[name]:
                name += " (quick: smaller B)"
        cases.append((name, case, True))
    cases.append(("dense fits", (4, 100, 9, 1) if opts.quick else (64, 100, 9, 1), True))
    for B, T, k, w in MEMORY_SERIES:
        if (B, T, k, w) not in [c for _, c, _ in cases]:
            cases.append((f"memory T={T:g}", (B, T, k, w), True))
    # one long ill-conditioned chain: the partitioned solver's worst case
    cases.append(("latency, chain", CASES["latency"], True))
    for name, case, peers in cases:
        if opts.only and not any(o in name for o in opts.only):
            continue
        kind = "chain" if name.endswith("chain") else "dominant"
        rows.append(bandsolve_factor_solve_row(name, case, opts.repeats, peers=peers, kind=kind))
        print(f"  measured {name}", file=sys.stderr, flush=True)
    if not opts.quick:
        # float32 at the baseline size (SciPy computes in float32 too)
        rows.append(bandsolve_factor_solve_row("baseline float32", CASES["baseline"],
                                               opts.repeats, dtype=np.float32))
    return rows


#: Benchmark groups; each takes the parsed options and returns a list of Row.
SUITES = [bandsolve_suite]


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, SciPy {scipy.__version__}, Numba {numba.__version__} "
            f"({numba.config.NUMBA_NUM_THREADS} threads), bandsolve {bandsolve.__version__}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, smaller/fewer cases (well under a minute)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per measurement (median); default 5, 3 with --quick")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only the cases whose name contains one of these strings")
    parser.add_argument("--no-smnn", action="store_true",
                        help="skip the smnn table (benchmarks/compare_smnn.py)")
    opts = parser.parse_args(argv)
    if opts.repeats is None:
        opts.repeats = 3 if opts.quick else 5
    start = time.perf_counter()
    warm_up(np.float64)
    warm_up(np.float32)
    warm_up(np.float64, w=2)
    rows = []
    for suite in SUITES:
        rows += suite(opts)
    print(f"machine: {machine_line()}")
    print(f"times: median of {opts.repeats} after a warm-up; x = peer time / ours; "
          "mem/io = peak additional memory / (inputs + outputs)")
    print_table(rows)
    if not opts.no_smnn:
        # smnn forward / forward+vjp against dense and banded PyTorch peers, same run
        import compare_smnn

        print("\nsmnn (S-MNN layer) against PyTorch peers:")
        compare_smnn.main(["--quick"] if opts.quick else [])
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
