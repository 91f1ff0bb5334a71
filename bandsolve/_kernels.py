"""Reference Numba CPU kernels for batched block-banded SPD matrices.

Storage (lower block band, ``w`` block sub-diagonals, blocks of size k x k)::

    A[i, d, t] = M_i[t+d, t]        i < B, 0 <= d <= w, t < T, t + d < T

Only the lower triangle of the diagonal blocks ``A[i, 0, t]`` is read and the
padding blocks ``A[i, d, t]`` with ``t + d >= T`` are ignored.

``factor`` computes the block Cholesky factor M = L L^T in the same storage
(left-looking, one block row at a time)::

    L[t, t-d] = (M[t, t-d] - sum_{j=d+1}^{w} L[t, t-j] L[t-d, t-j]^T) L[t-d, t-d]^{-T}
    L[t, t]   = chol(M[t, t] - sum_{d=1}^{w} L[t, t-d] L[t, t-d]^T)

where ``L[t-d, t-j]`` is stored at ``[j-d, t-j]``. ``solve`` runs the forward
(L y = b) and backward (L^T x = y) block substitutions in place on ``x`` of
shape (B, T, k, nrhs). ``band_cotangent`` forms the symmetrised outer products
of the adjoint (DESIGN.md section 2).

Status codes (``info``) follow LAPACK: 0 success, ``j > 0`` the leading minor
of order j (1-based scalar row ``t*k + r + 1``) is not positive definite: its
pivot is not finite and positive. Failed items are filled with NaN; the others
are exact. A non-finite input entry always makes the pivot of its own row (or
an earlier one) fail, so non-finite input is found by re-scanning only the
failed items (``scan_nonfinite`` in ``_kernels_simd.py``), which turns their
code into ``-j``, j the first scalar row holding a non-finite entry.

These kernels work for any k and w and are the reference for the tuned kernels
in ``_kernels_simd.py`` and ``_kernels_part.py``. They take contiguous, already validated arrays.
"""

import math

import numpy as np
from numba import njit, prange

_OPTS = dict(cache=True, nogil=True, fastmath={"contract"})


@njit(**_OPTS)
def factor_item(A, L):
    """Factor one system A (w+1, T, k, k) into L (may alias A); return info."""
    n_diag, T, k = A.shape[0], A.shape[1], A.shape[2]
    w = n_diag - 1
    for t in range(T):
        dmax = min(w, t)
        # Off-diagonal blocks of block row t, farthest first.
        for d in range(dmax, 0, -1):
            s = t - d
            for r in range(k):
                for c in range(k):
                    v = A[d, s, r, c]
                    for j in range(d + 1, dmax + 1):
                        for p in range(k):
                            v -= L[j, t - j, r, p] * L[j - d, t - j, c, p]
                    for p in range(c):
                        v -= L[d, s, r, p] * L[0, s, c, p]
                    L[d, s, r, c] = v / L[0, s, c, c]
        # Diagonal block: Cholesky of the Schur complement.
        for r in range(k):
            for c in range(r + 1):
                v = A[0, t, r, c]
                for d in range(1, dmax + 1):
                    for p in range(k):
                        v -= L[d, t - d, r, p] * L[d, t - d, c, p]
                for p in range(c):
                    v -= L[0, t, r, p] * L[0, t, c, p]
                if r == c:
                    if not (v > 0.0 and v < np.inf):
                        return t * k + r + 1
                    L[0, t, r, r] = math.sqrt(v)
                else:
                    L[0, t, r, c] = v / L[0, t, c, c]
            for c in range(r + 1, k):
                L[0, t, r, c] = 0.0
    # Padding blocks are copied through (SciPy leaves them untouched).
    for d in range(1, n_diag):
        for t in range(max(T - d, 0), T):
            for r in range(k):
                for c in range(k):
                    L[d, t, r, c] = A[d, t, r, c]
    return 0


@njit(parallel=True, **_OPTS)
def factor(A, L, info):
    """Factor every item of A (B, w+1, T, k, k) into L; info (B,) per item."""
    for i in prange(A.shape[0]):
        status = factor_item(A[i], L[i])
        info[i] = status
        if status != 0:
            L[i] = np.nan


@njit(**_OPTS)
def solve_item(L, x):
    """Solve L L^T x = b in place for one system; x is (T, k, nrhs)."""
    n_diag, T, k = L.shape[0], L.shape[1], L.shape[2]
    w = n_diag - 1
    nrhs = x.shape[2]
    for t in range(T):
        dmax = min(w, t)
        for r in range(k):
            for q in range(nrhs):
                v = x[t, r, q]
                for d in range(1, dmax + 1):
                    for p in range(k):
                        v -= L[d, t - d, r, p] * x[t - d, p, q]
                for p in range(r):
                    v -= L[0, t, r, p] * x[t, p, q]
                x[t, r, q] = v / L[0, t, r, r]
    for t in range(T - 1, -1, -1):
        dmax = min(w, T - 1 - t)
        for r in range(k - 1, -1, -1):
            for q in range(nrhs):
                v = x[t, r, q]
                for d in range(1, dmax + 1):
                    for p in range(k):
                        v -= L[d, t, p, r] * x[t + d, p, q]
                for p in range(r + 1, k):
                    v -= L[0, t, p, r] * x[t, p, q]
                x[t, r, q] = v / L[0, t, r, r]


@njit(parallel=True, **_OPTS)
def solve(L, x, index):
    """Solve in place: x[i] <- M[index[i]]^{-1} x[i]; x is (B, T, k, nrhs)."""
    for i in prange(x.shape[0]):
        solve_item(L[index[i]], x[i])


@njit(**_OPTS)
def _cotangent_accumulate(out, bbar, x, scale):
    n_diag, T, k = out.shape[0], out.shape[1], out.shape[2]
    nrhs = x.shape[2]
    for d in range(n_diag):
        half = 0.5 if d == 0 else 1.0
        for t in range(T - d):
            for r in range(k):
                for c in range(k):
                    v = 0.0
                    for q in range(nrhs):
                        v += bbar[t + d, r, q] * x[t, c, q] + x[t + d, r, q] * bbar[t, c, q]
                    out[d, t, r, c] -= scale * half * v


@njit(parallel=True, **_OPTS)
def band_cotangent(out, bbar, x, group_start, group_items):
    """Accumulate the band cotangent of x = M^{-1} b into ``out`` (zeroed).

    ``out[j]`` receives ``-sym(bbar[i] x[i]^T)`` restricted to the band, summed
    over the right-hand-side items ``i = group_items[group_start[j]:group_start[j+1]]``
    that share matrix j (broadcasting).
    """
    for j in prange(out.shape[0]):
        for m in range(group_start[j], group_start[j + 1]):
            i = group_items[m]
            _cotangent_accumulate(out[j], bbar[i], x[i], 1.0)


@njit(parallel=True, **_OPTS)
def logdet(L, out):
    """out[i] = log det M_i = 2 sum log diag(L_i)."""
    k = L.shape[3]
    for i in prange(L.shape[0]):
        acc = 0.0
        for t in range(L.shape[2]):
            for r in range(k):
                acc += math.log(L[i, 0, t, r, r])
        out[i] = 2.0 * acc
