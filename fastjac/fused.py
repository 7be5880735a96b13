"""Fused Numba kernels for the lecture's network: one pass over the rows, no Jacobians.

The network is ``Q = softmax(logit(X W1 + b1) W2 + b2)`` row by row, with the
loss ``-sum(Y * log Q) / N`` taken through log-softmax (finite for any finite
logits). Rows are split into a fixed number of contiguous chunks whose partial
sums are added in chunk order, so a result does not depend on scheduling.
"""

import numpy as np
from numba import prange

from fastjac._jit import PARALLEL_MIN_ELEMENTS, kernel


@kernel
def loss_rows(X, Y, W1, b1, W2, b2, lo, hi):
    """``-sum_{a in [lo, hi)} sum_j Y[a, j] log softmax(Z2[a])_j`` (not divided by N).

    X (N, d), Y (N, m), W1 (d, k), b1 (k,), W2 (k, m), b2 (m,).
    """
    d, k = W1.shape
    m = W2.shape[1]
    z1 = np.empty(k, dtype=X.dtype)
    z2 = np.empty(m, dtype=X.dtype)
    total = 0.0
    for a in range(lo, hi):
        z1[:] = b1
        for i in range(d):
            x = X[a, i]
            for j in range(k):
                z1[j] += x * W1[i, j]
        z2[:] = b2
        for j in range(k):
            z = z1[j]
            if z >= 0:
                s = 1 / (1 + np.exp(-z))
            else:
                e = np.exp(z)
                s = e / (1 + e)
            for c in range(m):
                z2[c] += s * W2[j, c]
        mx = z2[0]
        for c in range(1, m):
            mx = max(mx, z2[c])
        se = 0.0
        for c in range(m):
            se += np.exp(z2[c] - mx)
        lse = mx + np.log(se)
        for c in range(m):
            y = Y[a, c]
            if y != 0:
                total -= y * (z2[c] - lse)
    return total


@kernel(parallel=True)
def loss_chunks(X, Y, W1, b1, W2, b2, nchunks):
    """``loss_rows`` over ``nchunks`` contiguous row chunks in parallel, summed in order."""
    N = X.shape[0]
    partial = np.zeros(nchunks)
    for c in prange(nchunks):
        partial[c] = loss_rows(X, Y, W1, b1, W2, b2, c * N // nchunks, (c + 1) * N // nchunks)
    total = 0.0
    for c in range(nchunks):
        total += partial[c]
    return total


def nchunks_for(N, work_per_row):
    """1 (serial) below the measured parallel threshold, else one chunk per Numba thread."""
    import numba

    if N * work_per_row < PARALLEL_MIN_ELEMENTS or N < 2:
        return 1
    return min(numba.get_num_threads(), N)


def nn_loss(X, Y, W1, b1, W2, b2):
    """Mean cross-entropy of the network; arrays already validated, contiguous, one dtype."""
    N = X.shape[0]
    nchunks = nchunks_for(N, W1.size + W2.size)
    if nchunks == 1:
        total = loss_rows(X, Y, W1, b1, W2, b2, 0, N)
    else:
        total = loss_chunks(X, Y, W1, b1, W2, b2, nchunks)
    return total / N
