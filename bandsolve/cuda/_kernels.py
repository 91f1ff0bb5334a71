"""Numba CUDA kernels for batches of block-banded SPD matrices.

Storage (as in ``bandsolve._kernels``; i = batch item, blocks k x k)::

    A[i, d, t] = M_i[t+d, t]       0 <= d <= w, t + d < T    (lower block band)
    L[i, d, t] = L_i[t+d, t]       same storage for M = L L^T
    x[i, t]    : (k, nrhs)         right-hand sides / solutions

Only the lower triangle of the diagonal blocks is read; the factor's diagonal
blocks are lower triangular (zero above). Padding blocks (t + d >= T) are
copied from A to L. Status ``info`` follows LAPACK: 0 ok, ``j > 0`` the
leading minor of order j is not positive definite (its pivot is not finite
and positive). A non-finite entry always fails the pivot of its row or an
earlier one; with ``check_finite`` a failed item holding one reports ``-j``,
j the first scalar row (``t*k + r + 1``) with a non-finite entry that is read.
Failed items are filled with NaN; the other items are unaffected. These are
the codes of the CPU backend.

Algorithms
----------
``factor_kernel`` -- right-looking block Cholesky over a sliding window. At
block step s, with D = min(w, T-1-s) sub-diagonal blocks below the pivot::

    L[s, s]   = chol(M'[s, s])                                (POTRF, k x k)
    L[s+d, s] = M'[s+d, s] L[s, s]^{-T}            1 <= d <= D (TRSM panel)
    M'[s+i, s+j] -= L[s+i, s] L[s+j, s]^T     1 <= j <= i <= D (GEMM/SYRK)

where M' is M with the updates of the previous steps applied. Only the
``(w+1)(w+2)/2`` blocks ``M'[s+i, s+j]`` (0 <= j <= i <= w) are live at step s;
block row s+w enters the window at step s. When right-hand sides are given
(the fused factor + solve) the forward substitution rides along:
``y_s = L[s, s]^{-1} b_s`` joins the panel TRSM (one more "row" per right-hand
side) and ``b_{s+d} -= L[s+d, s] y_s`` joins the GEMM phase; the backward
substitution follows the factor in the same launch.

``solve_kernel`` -- forward (L y = b) then backward (L^T x = y) substitution,
in place on x, ``x[i] <- M[index[i]]^{-1} x[i]``::

    y_t = L[t,t]^{-1} (b_t - sum_{d=1}^{w} L[t, t-d] y_{t-d})
    x_t = L[t,t]^{-T} (y_t - sum_{d=1}^{w} L[t+d, t]^T x_{t+d})

``cotangent_kernel`` -- the band cotangent of the adjoint (DESIGN.md sec. 2),
summed over the right-hand-side items ``i`` that share matrix j::

    out[j, d, t] = -c_d sum_i (bbar_i[t+d] x_i[t]^T + x_i[t+d] bbar_i[t]^T),
    c_0 = 1/2, c_d = 1 (d >= 1), zero in the padding.

``logdet_kernel`` -- ``log det M_i = 2 sum_{t,r} log L[i, 0, t, r, r]``,
accumulated in float64.

Thread mapping
--------------
A *team* of G threads (G = ``team_size(k)``: the power of two >= k up to
k = 32, then 128 or 256) owns one batch item from start to end; a CUDA block
packs ``teams_per_block`` teams (several for small k, one for large k). Items
never exchange data. Inside a team the k x k block operations are split as:

* loads, stores, GEMM/SYRK updates and the rank-1 updates of the diagonal
  Cholesky: one matrix entry (r, c) per thread, strided by G, entries in
  row-major order, so consecutive threads touch consecutive addresses
  (coalesced) and each entry is a k-term dot product;
* POTRF of the diagonal block: right-looking, one barrier per column (column
  c-1 is scaled while column c updates the trailing triangle, so no entry is
  read and written in the same phase);
* panel TRSM and the fused forward solve: one row of the panel (or one
  right-hand side) per thread, a sequential substitution over k columns;
* triangular solves in ``solve_kernel``: one entry (r, q) of the k x nrhs
  block per thread, k barrier-separated column steps. Its off-diagonal terms
  are subtracted farthest block first, the order in which the fused kernel
  applies them, so the fused and the two-kernel solves give the same bits.

Teams of one CUDA block step through the same T, k and w, so they reach the
same ``syncthreads`` barriers in lockstep; a team whose item failed (or lies
past the batch) keeps meeting the barriers but does no work. The window of
live blocks lives in shared memory when ``(w+1)^2 k^2`` values per team fit the
static budget (ring buffer indexed by block column modulo w+1); otherwise the
kernel works in place in the global array L, read through the L1 cache. All
sizes in shared memory are compile-time constants: each kernel is built by a
factory memoised on (dtype, k, w, team layout), and the same Python kernel
function is launched and compiled to PTX by the tests.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import cuda, types

__all__ = [
    "Plan",
    "make_plan",
    "team_size",
    "factor_kernel",
    "solve_kernel",
    "cotangent_kernel",
    "logdet_kernel",
    "KernelSpec",
]

_NUMBA_FLOAT = {np.dtype(np.float32): types.float32, np.dtype(np.float64): types.float64}

#: Static shared memory a factor kernel may use per CUDA block (limit 48 KiB).
SHARED_WINDOW_BYTES = 40 * 1024
#: Threads per CUDA block aimed at when packing small teams.
THREADS_PER_BLOCK = 64
#: Threads per CUDA block of the element-wise kernels (cotangent, logdet).
FLAT_BLOCK = 128
LOGDET_BLOCK = 64

_NO_KEY = 1 << 62  # "no non-finite entry seen" in the per-team key slot
_NAN = float("nan")


def team_size(k):
    """Threads cooperating on one batch item with blocks of size ``k``."""
    if k <= 32:
        return 1 << max(0, (k - 1).bit_length())
    return 128 if k <= 64 else 256


@dataclass(frozen=True)
class Plan:
    """Compile-time layout of the factor and solve kernels.

    Attributes
    ----------
    dtype : str
        ``"float32"`` or ``"float64"``.
    block_size, bandwidth : int
        k and w.
    team_size : int
        Threads per batch item (G).
    teams_per_block : int
        Batch items per CUDA block.
    window_in_shared : bool
        Whether the factor's window of live blocks is kept in shared memory
        (else it is worked on in place in L).
    """

    dtype: str
    block_size: int
    bandwidth: int
    team_size: int
    teams_per_block: int
    window_in_shared: bool

    @property
    def threads_per_block(self):
        return self.team_size * self.teams_per_block

    def blocks_for(self, n_items):
        """CUDA blocks needed for ``n_items`` teams."""
        return -(-n_items // self.teams_per_block)


@functools.lru_cache(maxsize=None)
def make_plan(dtype, block_size, bandwidth, threads_per_block=THREADS_PER_BLOCK,
              window_in_shared=None):
    """Choose the team layout for (dtype, k, w).

    ``window_in_shared=None`` keeps the window in shared memory whenever
    ``(w+1)^2 k^2`` values fit :data:`SHARED_WINDOW_BYTES`; ``False`` forces the
    in-place (global memory) variant, ``True`` asks for shared memory and
    raises ValueError if it does not fit.
    """
    dtype = np.dtype(dtype)
    if dtype not in _NUMBA_FLOAT:
        raise TypeError(f"CUDA kernels support float32 and float64; got dtype {dtype}")
    k, w = int(block_size), int(bandwidth)
    if k < 1 or w < 0:
        raise ValueError(f"need block_size >= 1 and bandwidth >= 0; got k={k}, w={w}")
    G = team_size(k)
    teams = max(1, threads_per_block // G)
    window_bytes = (w + 1) ** 2 * k * k * dtype.itemsize
    fits = window_bytes <= SHARED_WINDOW_BYTES
    if window_in_shared is None:
        window_in_shared = fits
    elif window_in_shared and not fits:
        raise ValueError(
            f"a shared-memory window for k={k}, w={w}, {dtype} needs {window_bytes} "
            f"bytes; the budget is {SHARED_WINDOW_BYTES}"
        )
    if window_in_shared:
        teams = max(1, min(teams, SHARED_WINDOW_BYTES // window_bytes))
    return Plan(dtype.name, k, w, G, teams, bool(window_in_shared))


@dataclass(frozen=True)
class KernelSpec:
    """A kernel: the Python function, its launchable dispatcher and signature.

    ``cuda.compile_ptx(spec.py_func, spec.signature, cc=...)`` compiles exactly
    what ``spec.kernel[grid, block, stream](...)`` launches.
    """

    py_func: object
    kernel: object
    signature: tuple


def _array(dtype, ndim):
    return types.Array(dtype, ndim, "C")


# ---------------------------------------------------------------------------
# substitutions (shared by the solve kernel and the fused factor + solve)


@functools.lru_cache(maxsize=None)
def _substitutions(k, w, G):
    """Team-cooperative forward and backward block substitution for (k, w, G).

    Both work in place on ``x[xi]`` (T, k, nrhs) with the factor ``L[li]`` and
    contain ``syncthreads`` barriers, so every thread of the CUDA block must
    call them; ``live=False`` threads only meet the barriers.
    """
    K, W = k, w

    @cuda.jit(device=True, inline="always")
    def forward(L, li, x, xi, live, lane, T, nrhs):
        n_entries = K * nrhs
        for t in range(T):
            d_max = min(W, t)
            if live:
                # x_t -= sum_d L[t, t-d] x_{t-d}: one entry (r, q) per thread,
                # farthest block first, in the order the fused factor + solve
                # applies the same terms (so both give identical bits)
                for e in range(lane, n_entries, G):
                    r = e // nrhs
                    q = e - r * nrhs
                    v = x[xi, t, r, q]
                    for d in range(d_max, 0, -1):
                        for p in range(K):
                            v -= L[li, d, t - d, r, p] * x[xi, t - d, p, q]
                    x[xi, t, r, q] = v
            cuda.syncthreads()
            # L[t,t] y = v, column by column: rows r > c drop column c's term
            for c in range(K - 1):
                if live:
                    for e in range(lane, (K - 1 - c) * nrhs, G):
                        r = c + 1 + e // nrhs
                        q = e - (r - c - 1) * nrhs
                        x[xi, t, r, q] -= L[li, 0, t, r, c] * (x[xi, t, c, q] / L[li, 0, t, c, c])
                cuda.syncthreads()
            if live:
                for e in range(lane, n_entries, G):
                    r = e // nrhs
                    q = e - r * nrhs
                    x[xi, t, r, q] = x[xi, t, r, q] / L[li, 0, t, r, r]
            cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def backward(L, li, x, xi, live, lane, T, nrhs):
        n_entries = K * nrhs
        for t in range(T - 1, -1, -1):
            d_max = min(W, T - 1 - t)
            if live:
                # y_t -= sum_d L[t+d, t]^T x_{t+d}
                for e in range(lane, n_entries, G):
                    r = e // nrhs
                    q = e - r * nrhs
                    v = x[xi, t, r, q]
                    for d in range(1, d_max + 1):
                        for p in range(K):
                            v -= L[li, d, t, p, r] * x[xi, t + d, p, q]
                    x[xi, t, r, q] = v
            cuda.syncthreads()
            # L[t,t]^T x = v, last column first: rows r < c drop column c's term
            for c in range(K - 1, 0, -1):
                if live:
                    for e in range(lane, c * nrhs, G):
                        r = e // nrhs
                        q = e - r * nrhs
                        x[xi, t, r, q] -= L[li, 0, t, c, r] * (x[xi, t, c, q] / L[li, 0, t, c, c])
                cuda.syncthreads()
            if live:
                for e in range(lane, n_entries, G):
                    r = e // nrhs
                    q = e - r * nrhs
                    x[xi, t, r, q] = x[xi, t, r, q] / L[li, 0, t, r, r]
            cuda.syncthreads()

    return forward, backward


# ---------------------------------------------------------------------------
# factor (optionally fused with the solve)


@functools.lru_cache(maxsize=None)
def factor_kernel(plan):
    """Block Cholesky kernel ``(A, L, x, info, check_finite)`` for ``plan``.

    Launch with ``plan.blocks_for(B)`` blocks of ``plan.threads_per_block``
    threads. A (B, w+1, T, k, k) is factored into L (same shape, may be A);
    ``info`` (B,) int64 receives the status. x (B, T, k, nrhs) holds
    right-hand sides solved in place with the new factor (x item i uses
    matrix i); with nrhs = 0 the kernel only factors.
    """
    K, W, G = plan.block_size, plan.bandwidth, plan.team_size
    TEAMS = plan.teams_per_block
    DT = _NUMBA_FLOAT[np.dtype(plan.dtype)]
    KK = K * K
    NW = W + 1
    SHARED = plan.window_in_shared
    WIN_SHAPE = (TEAMS, NW, NW, K, K) if SHARED else (1, 1, 1, 1, 1)
    _, backward = _substitutions(K, W, G)

    def kernel(A, L, x, info, check_finite):
        win = cuda.shared.array(WIN_SHAPE, DT)
        first_bad = cuda.shared.array(TEAMS, types.int64)
        tid = cuda.threadIdx.x
        team = tid // G
        lane = tid - team * G
        item = cuda.blockIdx.x * TEAMS + team
        n_items = A.shape[0]
        T = A.shape[2]
        nrhs = x.shape[3]
        zero = DT(0)
        one = DT(1)
        inf = DT(math.inf)
        valid = item < n_items
        live = valid
        status = 0
        fail_step = T  # block row whose pivot failed
        # The window: block (row c+d, column c) is window[d, c % n_cols], a
        # ring over block columns in shared memory, or L[item] itself.
        if SHARED:
            window = win[team]
            n_cols = NW
        else:
            window = L[min(item, n_items - 1)]
            n_cols = T
        if lane == 0:
            first_bad[team] = _NO_KEY
        cuda.syncthreads()

        for s in range(T):
            n_sub = min(W, T - 1 - s)
            # Block rows enter the window: rows 0..w at step 0, row s+w later.
            # Entries of row r: blocks (r, r-d), d = 0..min(w, r), only the
            # lower triangle on the diagonal. The first scalar row holding a
            # non-finite entry is kept (atomic min) for the status; it has to
            # be noted now, as L may overwrite A.
            if live:
                first_row = 0 if s == 0 else s + W
                for r in range(first_row, min(s + W + 1, T)):
                    d_max = min(W, r)
                    for e in range(lane, (d_max + 1) * KK, G):
                        d = e // KK
                        rc = e - d * KK
                        rr = rc // K
                        cc = rc - rr * K
                        if d > 0 or cc <= rr:
                            v = A[item, d, r - d, rr, cc]
                            window[d, (r - d) % n_cols, rr, cc] = v
                            if check_finite and not math.isfinite(v):
                                cuda.atomic.min(first_bad, team, r * K + rr)
            if s == 0 or W == 0:
                cuda.syncthreads()

            # POTRF of the diagonal block, right-looking, lazy column scaling.
            col = s % n_cols
            prev_root = one
            prev_scale = one
            for c in range(K):
                a = one
                if live:
                    a = window[0, col, c, c]
                    if not (a > zero and a < inf):
                        status = s * K + c + 1
                        live = False
                        fail_step = s
                if live:
                    root = math.sqrt(a)
                    scale = one / root
                    for e in range(lane, KK, G):
                        r = e // K
                        cc = e - r * K
                        if cc == c - 1 and r >= cc:
                            if r == cc:
                                window[0, col, r, cc] = prev_root
                            else:
                                window[0, col, r, cc] = window[0, col, r, cc] * prev_scale
                        elif cc > c and r >= cc:
                            window[0, col, r, cc] -= ((window[0, col, r, c] * scale)
                                                      * (window[0, col, cc, c] * scale))
                    prev_root = root
                    prev_scale = scale
                cuda.syncthreads()
            if live and lane == (KK - 1) % G:
                window[0, col, K - 1, K - 1] = prev_root
            cuda.syncthreads()

            # Panel TRSM  L[s+d, s] = M'[s+d, s] L[s,s]^{-T}  (one row per
            # thread) and the forward solve  L[s,s] y_s = b_s  (one right-hand
            # side per thread).
            if live:
                panel_rows = n_sub * K
                for row in range(lane, panel_rows + nrhs, G):
                    if row < panel_rows:
                        d = row // K + 1
                        rr = row - (d - 1) * K
                        for c in range(K):
                            v = window[d, col, rr, c]
                            for p in range(c):
                                v -= window[d, col, rr, p] * window[0, col, c, p]
                            window[d, col, rr, c] = v / window[0, col, c, c]
                    else:
                        q = row - panel_rows
                        for c in range(K):
                            v = x[item, s, c, q]
                            for p in range(c):
                                v -= window[0, col, c, p] * x[item, s, p, q]
                            x[item, s, c, q] = v / window[0, col, c, c]
            cuda.syncthreads()

            # Trailing update M'[s+i, s+j] -= L[s+i, s] L[s+j, s]^T, the
            # forward-solve update b_{s+i} -= L[s+i, s] y_s, and the write-out
            # of the finished block column s.
            if live:
                n_blocks = n_sub * (n_sub + 1) // 2
                for e in range(lane, n_blocks * KK, G):
                    b = e // KK
                    rc = e - b * KK
                    rr = rc // K
                    cc = rc - rr * K
                    i = 1
                    while b >= i:
                        b -= i
                        i += 1
                    j = b + 1
                    if i != j or cc <= rr:
                        target = (s + j) % n_cols
                        v = window[i - j, target, rr, cc]
                        for p in range(K):
                            v -= window[i, col, rr, p] * window[j, col, cc, p]
                        window[i - j, target, rr, cc] = v
                rhs_entries = K * nrhs
                for e in range(lane, n_sub * rhs_entries, G):
                    i = e // rhs_entries + 1
                    rq = e - (i - 1) * rhs_entries
                    rr = rq // nrhs
                    q = rq - rr * nrhs
                    v = x[item, s + i, rr, q]
                    for p in range(K):
                        v -= window[i, col, rr, p] * x[item, s, p, q]
                    x[item, s + i, rr, q] = v
                for e in range(lane, (n_sub + 1) * KK, G):
                    d = e // KK
                    rc = e - d * KK
                    rr = rc // K
                    cc = rc - rr * K
                    if d == 0 and cc > rr:
                        L[item, 0, s, rr, cc] = zero
                    elif SHARED:
                        L[item, d, s, rr, cc] = window[d, col, rr, cc]
            cuda.syncthreads()

        if nrhs > 0:
            backward(L, item, x, item, live, lane, T, nrhs)

        # A non-finite entry always fails the pivot of its row or an earlier
        # one. Failed items report the first scalar row holding a non-finite
        # entry, if any: rows past those that entered the window are scanned
        # now (they were not overwritten).
        rescan = check_finite and valid and status != 0
        if rescan:
            first = min(fail_step + W + 1, T)
            for e in range(lane, (T - first) * NW * KK, G):
                t = first + e // (NW * KK)
                rest = e - (t - first) * (NW * KK)
                d = rest // KK
                rc = rest - d * KK
                rr = rc // K
                cc = rc - rr * K
                if t - d >= 0 and (d > 0 or cc <= rr):
                    if not math.isfinite(A[item, d, t - d, rr, cc]):
                        cuda.atomic.min(first_bad, team, t * K + rr)
        cuda.syncthreads()
        if rescan:
            row = first_bad[team]
            if row != _NO_KEY:
                status = -(row + 1)

        if valid:
            if status == 0:
                # padding blocks (t + d >= T) are copied through
                for d in range(1, NW):
                    start = max(T - d, 0)
                    for e in range(lane, (T - start) * KK, G):
                        t = start + e // KK
                        rc = e - (t - start) * KK
                        rr = rc // K
                        cc = rc - rr * K
                        L[item, d, t, rr, cc] = A[item, d, t, rr, cc]
            else:
                nan = DT(_NAN)
                for e in range(lane, NW * T * KK, G):
                    d = e // (T * KK)
                    rest = e - d * (T * KK)
                    t = rest // KK
                    rc = rest - t * KK
                    rr = rc // K
                    cc = rc - rr * K
                    L[item, d, t, rr, cc] = nan
                for e in range(lane, T * K * nrhs, G):
                    t = e // (K * nrhs)
                    rest = e - t * (K * nrhs)
                    rr = rest // nrhs
                    q = rest - rr * nrhs
                    x[item, t, rr, q] = nan
            if lane == 0:
                info[item] = status

    signature = (_array(DT, 5), _array(DT, 5), _array(DT, 4), _array(types.int64, 1),
                 types.boolean)
    return KernelSpec(kernel, cuda.jit(kernel), signature)


# ---------------------------------------------------------------------------
# solve


@functools.lru_cache(maxsize=None)
def solve_kernel(plan):
    """Substitution kernel ``(L, x, index)``: ``x[i] <- M[index[i]]^{-1} x[i]``.

    Launch with ``plan.blocks_for(Bx)`` blocks of ``plan.threads_per_block``
    threads for x of shape (Bx, T, k, nrhs).
    """
    K, W, G = plan.block_size, plan.bandwidth, plan.team_size
    TEAMS = plan.teams_per_block
    DT = _NUMBA_FLOAT[np.dtype(plan.dtype)]
    forward, backward = _substitutions(K, W, G)

    def kernel(L, x, index):
        tid = cuda.threadIdx.x
        team = tid // G
        lane = tid - team * G
        item = cuda.blockIdx.x * TEAMS + team
        T = x.shape[1]
        nrhs = x.shape[3]
        live = item < x.shape[0]
        li = 0
        if live:
            li = index[item]
        forward(L, li, x, item, live, lane, T, nrhs)
        backward(L, li, x, item, live, lane, T, nrhs)

    signature = (_array(DT, 5), _array(DT, 4), _array(types.int64, 1))
    return KernelSpec(kernel, cuda.jit(kernel), signature)


# ---------------------------------------------------------------------------
# band cotangent


@functools.lru_cache(maxsize=None)
def cotangent_kernel(dtype, k, w):
    """Kernel ``(bbar, x, group_start, group_items, out)``, one output entry per thread.

    ``out`` (n_matrices, w+1, T, k, k) is fully written;
    ``group_items[group_start[j]:group_start[j+1]]`` are the right-hand-side
    items of matrix j. Launch with ``ceil(out.size / FLAT_BLOCK)`` blocks of
    :data:`FLAT_BLOCK` threads.
    """
    K, NW = int(k), int(w) + 1
    DT = _NUMBA_FLOAT[np.dtype(dtype)]
    KK = K * K

    def kernel(bbar, x, group_start, group_items, out):
        e = cuda.blockIdx.x * types.int64(cuda.blockDim.x) + cuda.threadIdx.x
        n_mats = out.shape[0]
        T = out.shape[2]
        per_matrix = NW * T * KK
        if e >= n_mats * per_matrix:
            return
        j = e // per_matrix
        rest = e - j * per_matrix
        d = rest // (T * KK)
        rest -= d * (T * KK)
        t = rest // KK
        rc = rest - t * KK
        r = rc // K
        c = rc - r * K
        v = DT(0)
        if t + d < T:
            for m in range(group_start[j], group_start[j + 1]):
                i = group_items[m]
                for q in range(x.shape[3]):
                    v += bbar[i, t + d, r, q] * x[i, t, c, q] + x[i, t + d, r, q] * bbar[i, t, c, q]
            if d == 0:
                v = v * DT(0.5)
        out[j, d, t, r, c] = -v

    signature = (_array(DT, 4), _array(DT, 4), _array(types.int64, 1),
                 _array(types.int64, 1), _array(DT, 5))
    return KernelSpec(kernel, cuda.jit(kernel), signature)


# ---------------------------------------------------------------------------
# logdet


@functools.lru_cache(maxsize=None)
def logdet_kernel(dtype, threads=LOGDET_BLOCK):
    """Kernel ``(L, out)``: ``out[i] = 2 sum log diag(L[i])``, one item per block.

    Launch with B blocks of ``threads`` threads (a power of two); partial sums
    are float64 and reduced in a fixed tree order.
    """
    if threads < 1 or threads & (threads - 1):
        raise ValueError(f"threads must be a power of two; got {threads}")
    DT = _NUMBA_FLOAT[np.dtype(dtype)]
    NT = threads

    def kernel(L, out):
        partial = cuda.shared.array(NT, types.float64)
        i = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        T = L.shape[2]
        K = L.shape[3]
        acc = types.float64(0)
        for e in range(tid, T * K, NT):
            t = e // K
            r = e - t * K
            acc += math.log(L[i, 0, t, r, r])
        partial[tid] = acc
        cuda.syncthreads()
        width = NT // 2
        while width > 0:
            if tid < width:
                partial[tid] += partial[tid + width]
            cuda.syncthreads()
            width //= 2
        if tid == 0:
            out[i] = 2 * partial[0]

    signature = (_array(DT, 5), _array(DT, 1))
    return KernelSpec(kernel, cuda.jit(kernel), signature)
