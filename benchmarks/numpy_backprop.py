"""Hand-written numpy backpropagation: the baseline every ratio in benchmarks/ is taken against.

The lecture's network ``Q = softmax(logit(X W1 + b1) W2 + b2)`` with the loss
``-sum(Y * log Q) / N``, written the way a competent numpy user writes it: one
vectorised forward pass, one backward pass, no Jacobians, no Numba. Labels are
one-hot (each row of Y sums to 1), so the softmax/cross-entropy cotangent is
``(Q - Y) / N``. The dtype of the inputs is kept (float32 stays float32).

Shapes: X (N, d), Y (N, m), W1 (d, k), b1 (1, k) or (k,), W2 (k, m),
b2 (1, m) or (m,). Gradients come back as [dW1 (d, k), db1 (k,), dW2 (k, m),
db2 (m,)], the layout of ``fastjac.nn_loss_and_gradient_closure``.
"""

import numpy as np


def _forward(X, W1, b1, W2, b2):
    H = 1 / (1 + np.exp(-(X @ W1 + b1)))
    Z2 = H @ W2 + b2
    # log-softmax through the row maximum: finite for any finite logits
    Z2 -= Z2.max(axis=1, keepdims=True)
    logQ = Z2 - np.log(np.exp(Z2).sum(axis=1, keepdims=True))
    return H, logQ


def loss(X, Y, var):
    """Mean cross-entropy of the network; var = [W1, b1, W2, b2]."""
    _, logQ = _forward(X, *var)
    return -np.sum(Y * logQ) / X.shape[0]


def loss_and_gradient(X, Y, var):
    """``(loss, [dW1, db1, dW2, db2])`` by one forward and one backward pass."""
    W1, b1, W2, b2 = var
    N = X.shape[0]
    H, logQ = _forward(X, W1, b1, W2, b2)
    value = -np.sum(Y * logQ) / N
    G2 = (np.exp(logQ) - Y) / N  # d loss / d Z2 for one-hot rows of Y
    G1 = (G2 @ W2.T) * H * (1 - H)  # through W2, then the logistic's derivative
    return value, [X.T @ G1, G1.sum(axis=0), H.T @ G2, G2.sum(axis=0)]


def loss_closure(X, Y):
    """``f(var) -> loss``, like ``fastjac.nn_loss_closure``."""
    return lambda var: loss(X, Y, var)


def loss_and_gradient_closure(X, Y):
    """``fg(var) -> (loss, [dW1, db1, dW2, db2])``, like ``fastjac.nn_loss_and_gradient_closure``."""
    return lambda var: loss_and_gradient(X, Y, var)


def gemms(X, Y, var):
    """The baseline's matrix products alone, with preallocated outputs: ``run() -> None``.

    ``X W1``, ``H W2``, ``G2 W2^T``, ``H^T G2`` and ``X^T G1``: the floor any
    implementation that calls the same BLAS pays. ``H``, ``G1`` and ``G2`` are
    taken from one real backward pass so the operands are realistic.
    """
    W1, b1, W2, b2 = var
    N = X.shape[0]
    H, logQ = _forward(X, W1, b1, W2, b2)
    G2 = (np.exp(logQ) - Y) / N
    G1 = (G2 @ W2.T) * H * (1 - H)
    Z1, Z2, B1 = np.empty_like(H), np.empty_like(G2), np.empty_like(H)
    dW1, dW2 = np.empty_like(W1), np.empty_like(W2)
    W2T = np.ascontiguousarray(W2.T)

    def run():
        np.matmul(X, W1, out=Z1)
        np.matmul(H, W2, out=Z2)
        np.matmul(G2, W2T, out=B1)
        np.matmul(H.T, G2, out=dW2)
        np.matmul(X.T, G1, out=dW1)

    return run
