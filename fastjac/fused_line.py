"""The fused line search: block Armijo backtracking along a line, in one kernel call.

Along ``x0 + t dx`` the first layer's pre-activation is affine in t,
``X (W1 + t dW1) + b1 + t db1 = Z0 + t P``, so ``LineLoss`` computes
``ZPT = [Z0 | P]^T`` (2k, N) once (one GEMM) and each trial step is then
elementwise work (the logistic of ``Z0 + t P``) and m axpys per output,
without BLAS, so its row chunks run in parallel at any width. ``backtrack``
runs the whole Armijo loop in one kernel call, evaluating trials in batches
(one pass over the rows per batch). The arrays are transposed (rows last)
so that every loop, softmax included, vectorises over rows: with m = 2 a
loop over the m classes of one row cannot.

``Z0 + t P`` rounds differently from ``X (W1 + t dW1) + b1 + t db1``, so the
losses here equal ``fastjac.fused.nn_loss`` at the trial points to rounding
(about 1e-16 relative); the second layer's trial blocks are rounded exactly
as ``update_blocks`` rounds them, so the accepted x is the Python loop's.
"""

import numba
import numpy as np
from numba import prange

from fastjac._jit import (
    BLOCK_ROWS,
    LINE_PARALLEL_MIN_ELEMENTS,
    LINESEARCH_MAX_HELD,
    LINESEARCH_MIN_INPUTS,
    kernel,
)
from fastjac.fused import exp_nonpos, flush_float32, gemm, softmax_cross_entropy

# ---------------------------------------------------------------- the line's first layer


@kernel
def line_products(X, W1, b1, dW1, db1, W, b, ZPT):
    """``ZPT = [X W1 + b1 | X dW1 + db1]^T`` (2k, N), one GEMM; W (d, 2k), b (2k,) scratch."""
    d, k = W1.shape
    for i in range(d):
        for j in range(k):
            W[i, j] = W1[i, j]
            W[i, k + j] = dW1[i, j]
    for j in range(k):
        b[j] = b1[j]
        b[k + j] = db1[j]
    N = X.shape[0]
    for j in range(2 * k):
        for a in range(N):
            ZPT[j, a] = b[j]
    gemm(True, True, 1.0, W, X, 1.0, ZPT)


@kernel
def line_products_T(XT1, W1, b1, dW1, db1, WT1, ZPT):
    """``line_products`` from ``XT1 = [X^T; 1]`` (d + 1, N): one GEMM, no transposed operand and
    no bias pass (the bias is the last column of ``WT1 = [W1^T b1; dW1^T db1]`` (2k, d + 1))."""
    d, k = W1.shape
    for j in range(k):
        for i in range(d):
            WT1[j, i] = W1[i, j]
            WT1[k + j, i] = dW1[i, j]
        WT1[j, d] = b1[j]
        WT1[k + j, d] = db1[j]
    gemm(False, False, 1.0, WT1, XT1, 0.0, ZPT)


# ---------------------------------------------------------------- trials


@kernel
def logistic_line(ZPT, start, t, AT):
    """``AT = s(Z0 + t P)`` for the rows ``start, start + 1, ...`` of
    ``ZPT = [Z0 | P]^T`` (2k, N); AT (k, B). ``t = 0`` reads Z0 only.

    One row of ZPT at a time as a 1-D slice: Numba then knows it is
    contiguous and the loop vectorises (a 2-D slice was 2x slower).
    """
    k, B = AT.shape
    for j in range(k):
        z0 = ZPT[j, start:start + B]
        p = ZPT[k + j, start:start + B]
        a = AT[j]
        for r in range(B):
            z = z0[r] + t * p[r] if t != 0 else z0[r]
            e = flush_float32(exp_nonpos(-abs(z)), AT)
            q = 1 / (1 + e)
            a[r] = q if z >= 0 else e * q


@kernel
def output_layer_T(AT, W2T, b2, Z2T):
    """``Z2T = (A W2 + b2)^T`` from ``AT = A^T`` (k, B): k axpys per output, vectorised over rows."""
    m, B = Z2T.shape
    k = AT.shape[0]
    for c in range(m):
        for r in range(B):
            Z2T[c, r] = b2[c]
        for j in range(k):
            w = W2T[c, j]
            for r in range(B):
                Z2T[c, r] += w * AT[j, r]


@kernel
def trial_rows(ZPT, Y, W2Ts, b2s, ts, K, lo, hi, block, work, out):
    """``out[q]`` = loss sum of rows ``[lo, hi)`` at step ``ts[q]``, q < K (not divided by N).

    ``ZPT = [X W1 + b1 | X dW1 + db1]^T`` (2k, N) holds the first layer's
    pre-activation and its change along the line, transposed: at t it is
    ``ZPT[:k] + t ZPT[k:]``. ``W2Ts[q]`` (m, k) = W2^T and ``b2s[q]`` (m,)
    are the second layer's blocks at ``ts[q]``; work (>= block (k + m + 4),).
    Each block of rows is evaluated at all K steps while it is in cache; the
    sum for one step is over blocks in row order whatever K is. Every loop
    runs over rows (vectorised); no BLAS, so row chunks can run in parallel.
    """
    m, k = W2Ts.shape[1], W2Ts.shape[2]
    for q in range(K):
        out[q] = 0.0
    for start in range(lo, hi, block):
        stop = min(start + block, hi)
        B = stop - start
        AT = work[:k * B].reshape((k, B))
        Z2T = work[block * k:block * k + m * B].reshape((m, B))
        rows = work[block * (k + m):block * (k + m + 4)].reshape((4, block))
        for q in range(K):
            logistic_line(ZPT, start, ts[q], AT)
            output_layer_T(AT, W2Ts[q], b2s[q], Z2T)
            out[q] += softmax_cross_entropy(Z2T, Y[start:stop], False, 1, rows)


@kernel(parallel=True)
def trial_chunks(ZPT, Y, W2Ts, b2s, ts, K, block, work, out):
    """``trial_rows`` on ``len(work)`` contiguous row chunks in parallel: chunk c's sums in ``out[c]``."""
    nchunks = work.shape[0]
    N = ZPT.shape[1]
    for c in prange(nchunks):
        trial_rows(ZPT, Y, W2Ts, b2s, ts, K, c * N // nchunks, (c + 1) * N // nchunks,
                   block, work[c], out[c])


# No fastmath: these must round exactly as the Python line search does.
@kernel(fastmath=frozenset())
def step_output_layer(W2, b2, dW2, db2, t, W2T, b2t):
    """The second layer's blocks at step t: ``W2T = (W2 + t dW2)^T``, ``b2t = b2 + t db2``.

    Rounded as numpy's ``x + t * dx`` (``update_blocks``): t in the blocks'
    dtype, a product then a sum, no fused multiply-add.
    """
    k, m = W2.shape
    b2t[0] = t  # t rounded to the blocks' dtype, as numpy does with a Python float
    tt = b2t[0]
    for c in range(m):
        b2t[c] = b2[c] + tt * db2[c]
        for j in range(k):
            W2T[c, j] = W2[j, c] + tt * dW2[j, c]


@kernel(parallel=True, fastmath=frozenset())
def backtrack(ZPT, Y, W2, b2, dW2, db2, f0, delta, beta, max_iter, batch, block, work,
              W2Ts, b2s, ts, out):
    """``armijo_backtrack`` on the line ``ZPT`` without leaving the kernel: ``(i, t, fx)``.

    Trial i = 1, 2, ... takes ``t = beta^(i-1)`` (by repeated products, as
    the Python loop) and accepts when ``fx`` is finite and
    ``fx <= f0 + t delta``; ``i = 0`` if ``max_iter`` trials fail (t and fx
    are then the last trial's). Trials are evaluated ``batch`` at a time
    (then 2 at a time), in one pass over the rows per batch: a batch that
    overshoots the accepted trial wastes its later trials but not the
    answer, which is the same for any batch. Scratch: W2Ts (>= batch, m, k),
    b2s (>= batch, m), ts (>= batch,), out (len(work), >= batch). The rows
    run in ``len(work)`` contiguous chunks in parallel (the only ``prange``
    here); each step's chunk sums are added in chunk order.
    """
    N = ZPT.shape[1]
    nchunks = work.shape[0]
    i = 1
    t = 1.0
    K = min(batch, max_iter)
    fx = np.nan
    while True:
        for q in range(K):
            if q > 0:
                t = beta * t
            ts[q] = t
            step_output_layer(W2, b2, dW2, db2, t, W2Ts[q], b2s[q])
        for c in prange(nchunks):
            trial_rows(ZPT, Y, W2Ts, b2s, ts, K, c * N // nchunks, (c + 1) * N // nchunks,
                       block, work[c], out[c])
        for q in range(K):
            total = out[0, q]
            for c in range(1, nchunks):
                total += out[c, q]
            fx = total / N
            if np.isfinite(fx) and fx <= f0 + ts[q] * delta:
                return i + q, ts[q], fx
        i += K
        if i > max_iter:
            return 0, t, fx
        t = beta * t
        K = min(2, max_iter - i + 1)


# ---------------------------------------------------------------- wrappers


def precompute_line(N, d, k, m):
    """Whether a line search should compute ``[X W1 + b1 | X dW1 + db1]`` once.

    Yes when d is large (``LINESEARCH_MIN_INPUTS``: each trial then skips an
    X W1 product) or when those 2 N k values are few enough
    (``LINESEARCH_MAX_HELD``) for the whole search to run in one kernel call;
    otherwise each trial is one fused loss evaluation, without N-row memory.
    """
    return d >= LINESEARCH_MIN_INPUTS or 2 * N * k <= LINESEARCH_MAX_HELD


class LineLoss:
    """The mean loss along ``x0 + t dx`` with the first layer's products done once.

    ``ZPT = [X W1 + b1 | X dW1 + db1]^T`` (2k, N) is one GEMM (``move_to``
    recomputes it for another line, reusing every buffer); ``self(t, W2, b2)``
    is then the mean cross-entropy with first-layer pre-activation
    ``ZPT[:k] + t ZPT[k:]`` (transposed) and second-layer blocks W2 (k, m),
    b2 (m,), costing O(N k m) instead of a new X W1 product; ``backtrack``
    runs the whole Armijo loop in one kernel call. When X is small
    (``LINESEARCH_MAX_HELD`` values) it keeps ``[X^T; 1]`` so that the GEMM has no
    transposed operand and adds the bias itself (1.6x faster at N = 400).
    """

    MAX_BATCH = 16  # trials per kernel pass at most (bounds the per-trial scratch)

    def __init__(self, X, Y, W1, b1, dW1, db1, *, nchunks=None, block=None):
        N, d = X.shape
        k = W1.shape[1]
        m = Y.shape[1]
        self.X, self.Y = X, Y
        self.ZPT = np.empty((2 * k, N), dtype=X.dtype)
        if X.size <= LINESEARCH_MAX_HELD:
            self.XT1 = np.ones((d + 1, N), dtype=X.dtype)
            self.XT1[:d] = X.T
            self.Wcat = np.empty((2 * k, d + 1), dtype=X.dtype)
        else:
            self.XT1 = None
            self.Wcat = np.empty((d, 2 * k), dtype=X.dtype)
        self.bcat = np.empty(2 * k, dtype=X.dtype)
        # no BLAS in a trial, so no wide case: rows chunked above the size threshold
        threads = 1 if N * (k + 4 * m) < LINE_PARALLEL_MIN_ELEMENTS else numba.get_num_threads()
        self.nchunks = min(threads, N) if nchunks is None else nchunks
        # no BLAS in a trial: blocks only bound the scratch
        self.block = max(1, min(BLOCK_ROWS, -(-N // self.nchunks))) if block is None else block
        self.work = np.empty((self.nchunks, self.block * (k + m + 4)), dtype=X.dtype)
        size = self.MAX_BATCH
        self.W2Ts = np.empty((size, m, k), dtype=X.dtype)
        self.b2s = np.empty((size, m), dtype=X.dtype)
        self.ts = np.empty(size)
        self.out = np.empty((self.nchunks, size))
        self.move_to(W1, b1, dW1, db1)

    def move_to(self, W1, b1, dW1, db1):
        """Put the line through first layer W1 (d, k), b1 (k,) along dW1, db1 (X's dtype)."""
        if self.XT1 is None:
            line_products(self.X, W1, b1, dW1, db1, self.Wcat, self.bcat, self.ZPT)
        else:
            line_products_T(self.XT1, W1, b1, dW1, db1, self.Wcat, self.ZPT)
        return self

    def __call__(self, t, W2, b2):
        self.ts[0] = t
        self.W2Ts[0] = W2.T
        self.b2s[0] = np.ravel(b2)
        trial_chunks(self.ZPT, self.Y, self.W2Ts, self.b2s, self.ts, 1, self.block, self.work,
                     self.out)
        total = self.out[0, 0]
        for c in range(1, self.nchunks):  # chunk order, as in backtrack
            total += self.out[c, 0]
        return float(total / self.ZPT.shape[1])

    def backtrack(self, W2, b2, dW2, db2, f0, delta, beta, max_iter, batch=1):
        """``(i, t, fx)`` of ``backtrack`` from x0's second layer W2 (k, m), b2 (m,) along
        dW2, db2 (all of ZPT's dtype, contiguous); ``i = 0`` if no step is accepted.
        ``batch``: trials in the first pass (a guess of the accepted i; any value gives
        the same answer), at most ``MAX_BATCH``."""
        return backtrack(self.ZPT, self.Y, W2, b2, dW2, db2, float(f0), float(delta),
                         float(beta), int(max_iter), max(1, min(int(batch), self.MAX_BATCH)),
                         self.block, self.work, self.W2Ts, self.b2s, self.ts, self.out)
