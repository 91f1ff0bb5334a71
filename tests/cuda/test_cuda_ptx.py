"""Compile every CUDA kernel specialisation the tests launch to PTX for real GPUs.

The simulator runs kernels as Python, so it accepts code the CUDA compiler
rejects (arrays sized at run time, untyped branches, float64 leaking into
float32 kernels, shared memory over the 48 KiB static limit). This module
runs in the normal pytest process (no simulator, no GPU needed) and compiles
the same Python kernel functions the backend launches with
``numba.cuda.compile_ptx`` for sm_80 and sm_90. Compilations run in worker
processes, one per core.
"""

import concurrent.futures
import multiprocessing
import os

import numpy as np
import pytest

from _cuda_cases import DTYPES, compile_ptx_summary, suite_specialisations

ARCHS = [(8, 0), (9, 0)]
STATIC_SHARED_LIMIT = 48 * 1024


def _keys():
    plans, cotangents = suite_specialisations()
    from bandsolve.cuda import _kernels as K

    keys = [("factor", p) for p in plans] + [("solve", p) for p in plans]
    keys += [("cotangent", c) for c in cotangents]
    keys += [("logdet", (np.dtype(dt).name, n)) for dt in DTYPES for n in (4, K.LOGDET_BLOCK)]
    return keys


KEYS = _keys()


def _key_id(key):
    kind, spec = key
    if kind in ("factor", "solve"):
        where = "shared" if spec.window_in_shared else "global"
        return (f"{kind}-{spec.dtype}-k{spec.block_size}-w{spec.bandwidth}"
                f"-teams{spec.teams_per_block}-{where}")
    return f"{kind}-" + "-".join(str(v) for v in spec)


@pytest.fixture(scope="module")
def compiled(request):
    """Futures of the selected tests' compilations, submitted at once to a process pool."""
    selected = [item.callspec.params["key"] for item in request.session.items
                if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
                and "key" in item.callspec.params]
    workers = max(1, min(len(os.sched_getaffinity(0)), 8, len(selected)))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield {key: pool.submit(compile_ptx_summary, *key, ARCHS) for key in selected}


@pytest.mark.parametrize("key", KEYS, ids=[_key_id(k) for k in KEYS])
def test_kernel_compiles_to_ptx(compiled, key):
    kind, spec = key
    facts = compiled[key].result()
    dtype = spec.dtype if kind in ("factor", "solve") else spec[0]
    for cc in ARCHS:
        f = facts[cc]
        assert f["target"] == f"sm_{cc[0]}{cc[1]}"
        assert f["entries"] == 1
        assert f["shared_bytes"] <= STATIC_SHARED_LIMIT
        assert f["local_bytes"] == 0, "no spilled local arrays in these kernels"
        if dtype == "float32" and kind != "logdet":  # logdet accumulates in float64
            assert f["f64_ops"] == 0, "float32 kernels must not compute in float64"
        if kind == "factor" and spec.window_in_shared:
            window = spec.teams_per_block * (spec.bandwidth + 1) ** 2 * spec.block_size ** 2
            assert f["shared_bytes"] >= window * np.dtype(dtype).itemsize


def test_suite_covers_both_window_kinds_and_team_packings():
    plans = [spec for kind, spec in KEYS if kind == "factor"]
    assert {p.window_in_shared for p in plans} == {True, False}
    assert any(p.teams_per_block == 1 for p in plans)
    assert any(p.teams_per_block > 1 for p in plans)
    assert any(p.team_size > 32 for p in plans)  # multi-warp teams
