"""Hand-written numpy backpropagation for a network of any depth: the baseline of issue 10.

``Z_l = A_{l-1} W_l + b_l``, ``A_l = f(Z_l)`` from ``A_0 = X`` to the logits
``Z_L``, softmax cross-entropy ``-sum(Y * log softmax(Z_L)) / N`` (``fastjac.MLP``
with ``loss="softmax_cross_entropy"``, ``alpha=0``, no sample weights), written
the way a competent numpy user writes it: one vectorised forward pass that
keeps each layer's activations, one backward pass, in-place elementwise work
where it is natural, no Numba. Hidden activations are scikit-learn's
``identity``, ``logistic``, ``tanh`` and ``relu``, one name for every hidden
layer or one per hidden layer; each slope is taken from the layer's output
(``A (1 - A)``, ``1 - A^2``, ``[A > 0]``), as scikit-learn's ``_backprop``
does. Labels are one-hot (each row of Y sums to 1), so the cotangent of the
logits is ``(softmax(Z_L) - Y) / N``. The dtype of the inputs is kept.

Parameters are ``[W_1, b_1, ..., W_L, b_L]`` with W_l (n_{l-1}, n_l) and b_l
(1, n_l) or (n_l,); gradients come back as W_l (n_{l-1}, n_l), b_l (n_l,),
``fastjac.MLP``'s layout.
"""

import numpy as np

ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


def _activate(name, Z):
    """``f(Z)`` in place (Z is a fresh product, owned here)."""
    if name == "tanh":
        np.tanh(Z, out=Z)
    elif name == "logistic":
        # exp(-z) overflows to inf for z < -709: 1 / (1 + inf) = 0 is the right answer
        with np.errstate(over="ignore"):
            np.exp(np.negative(Z, out=Z), out=Z)
        Z += 1
        np.reciprocal(Z, out=Z)
    elif name == "relu":
        np.maximum(Z, 0, out=Z)
    elif name != "identity":
        raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")
    return Z


def _times_slope(name, G, A):
    """``G *= f'(Z)`` with the slope written through the layer's output ``A = f(Z)``."""
    if name == "tanh":
        G *= 1 - A * A
    elif name == "logistic":
        G *= A * (1 - A)
    elif name == "relu":
        G[A <= 0] = 0
    return G


def _names(activation, hidden):
    names = (activation,) * hidden if isinstance(activation, str) else tuple(activation)
    if len(names) != hidden:
        raise ValueError(f"one activation per hidden layer: {hidden}, got {len(names)}")
    return names


def _forward(X, params, names):
    """``(activations [A_0 = X, A_1, ..., A_{L-1}], log softmax(Z_L))``."""
    A = [X]
    L = len(params) // 2
    for l in range(L - 1):
        W, b = params[2 * l], params[2 * l + 1]
        Z = A[-1] @ W
        Z += np.reshape(b, (1, -1))
        A.append(_activate(names[l], Z))
    Z = A[-1] @ params[-2]
    Z += np.reshape(params[-1], (1, -1))
    # log-softmax through the row maximum: finite for any finite logits
    Z -= Z.max(axis=1, keepdims=True)
    Z -= np.log(np.exp(Z).sum(axis=1, keepdims=True))
    return A, Z


def loss(X, Y, params, activation="tanh"):
    """Mean softmax cross-entropy of the network at ``params``."""
    _, logQ = _forward(X, params, _names(activation, len(params) // 2 - 1))
    return -np.sum(Y * logQ) / X.shape[0]


def loss_and_gradient(X, Y, params, activation="tanh"):
    """``(loss, [dW_1, db_1, ..., dW_L, db_L])`` by one forward and one backward pass."""
    L = len(params) // 2
    names = _names(activation, L - 1)
    N = X.shape[0]
    A, logQ = _forward(X, params, names)
    value = -np.sum(Y * logQ) / N
    G = np.exp(logQ, out=logQ)  # softmax, in the log-softmax's memory
    G -= Y
    G /= N  # d loss / d Z_L for one-hot rows of Y
    grads = [None] * (2 * L)
    for l in range(L - 1, -1, -1):
        grads[2 * l] = A[l].T @ G
        grads[2 * l + 1] = G.sum(axis=0)
        if l:
            G = _times_slope(names[l - 1], G @ params[2 * l].T, A[l])
    return value, grads


def loss_closure(X, Y, activation="tanh"):
    """``f(params) -> loss``."""
    return lambda params: loss(X, Y, params, activation)


def loss_and_gradient_closure(X, Y, activation="tanh"):
    """``fg(params) -> (loss, grads)``, like ``fastjac.MLP.loss_and_gradient_closure``."""
    return lambda params: loss_and_gradient(X, Y, params, activation)
