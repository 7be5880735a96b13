"""The lecture's backpropagation with structured Jacobians: same names, same signatures.

Every ``D*`` returns ``(jacobian, var_shape)`` as in ``fastjac.dense``, but the
jacobian is a structured object (``fastjac.jacobians``) holding O(N) data, and
``chain_rule`` contracts it with a fused kernel instead of ``np.tensordot``.
``J.to_dense()`` gives exactly the dense reference's tensor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastjac import activations, kernels
from fastjac._validate import as_float, check_affine, check_bias, check_distributions
from fastjac.chain import chain_rule  # noqa: F401
from fastjac.jacobians import (
    CrossEntropyGradient,
    Diagonal,
    KronIW,
    KronOneI,
    KronXI,
    SoftmaxJacobian,
)
from fastjac.linesearch import (  # noqa: F401  (shared, Jacobian-free)
    LineSearchError,
    LineSearchResult,
    block_backtracking,
    block_norm,
    negate_blocks,
    random_matrix,
    update_blocks,
)
from fastjac.linesearch import _LineSearch
from fastjac.mlp import MLP


def DX_affine(X: ArrayLike, W: ArrayLike, b: ArrayLike) -> tuple[KronIW, tuple[int, ...]]:
    """Jacobian of ``X @ W + b`` in X: ``KronIW`` = ``I_N (x) W^T``, storing W.

    X (N, d), W (d, k) -> dense shape (N, k, N, d); returns ``(J, X.shape)``.

    See Also
    --------
    fastjac.dense.DX_affine
    """
    X, W, b = check_affine(X, W, b)
    return KronIW(W.astype(np.result_type(X, W), copy=False), X.shape[0]), X.shape


def DW_affine(X: ArrayLike, W: ArrayLike, b: ArrayLike) -> tuple[KronXI, tuple[int, ...]]:
    """Jacobian of ``X @ W + b`` in W: ``KronXI`` = ``X (x) I_k``, storing X.

    X (N, d), W (d, k) -> dense shape (N, k, d, k); returns ``(J, W.shape)``.

    See Also
    --------
    fastjac.dense.DW_affine
    """
    X, W, b = check_affine(X, W, b)
    return KronXI(X.astype(np.result_type(X, W), copy=False), W.shape[1]), W.shape


def Db_affine(X: ArrayLike, W: ArrayLike, b: ArrayLike) -> tuple[KronOneI, tuple[int, int]]:
    """Jacobian of ``X @ W + b`` in b: ``KronOneI`` = ``1_N (x) I_k``, storing its shape.

    X (N, d), W (d, k), b (1, k) or (k,) -> dense shape (N, k, k); returns
    ``(J, (1, k))`` (the lecture's ``b.shape``, for either shape of b).

    See Also
    --------
    fastjac.dense.Db_affine
    """
    X, W, b = check_affine(X, W, b)
    return KronOneI(X.shape[0], W.shape[1], np.result_type(X, W, b)), (1, W.shape[1])


@overload
def logit(z: np.ndarray) -> NDArray[np.floating]: ...
@overload
def logit(z: float) -> np.floating: ...
@overload
def logit(z: ArrayLike) -> Any: ...
def logit(z: ArrayLike) -> Any:
    """The logistic sigmoid ``1 / (1 + exp(-z))``, elementwise, without overflow.

    See Also
    --------
    fastjac.dense.logit
    """
    z = as_float(z, "z")
    zc = np.ascontiguousarray(z)
    out = np.empty_like(zc)
    kernels.logistic(zc.reshape(-1), out.reshape(-1))
    return out.reshape(z.shape)[()]  # [()]: a scalar for 0-d input, as numpy gives


def Dlogit(Z: ArrayLike) -> tuple[Diagonal, tuple[int, ...]]:
    """Jacobian of the elementwise logistic: ``Diagonal(s(Z) s(-Z))``, storing (N, k).

    Z (N, k) -> dense shape (N, k, N, k); returns ``(J, Z.shape)``.

    See Also
    --------
    fastjac.dense.Dlogit
    """
    Z = np.ascontiguousarray(as_float(Z, "Z", 2))
    A = np.empty_like(Z)
    kernels.logistic_derivative(Z.ravel(), A.ravel())
    return Diagonal(A), Z.shape


def activation(Z: ArrayLike, name: str) -> NDArray[np.floating]:
    """A hidden activation by scikit-learn's name (``fastjac.activations``), elementwise, by
    the kernels' scalar functions (no overflow; the fused kernels' values).

    See Also
    --------
    fastjac.dense.activation
    """
    return _activation_and_slope(Z, name)[0]


def Dactivation(Z: ArrayLike, name: str) -> tuple[Diagonal, tuple[int, ...]]:
    """Jacobian of an elementwise activation: ``Diagonal(f'(Z))``, storing (N, k).

    Z (N, k) -> dense shape (N, k, N, k); returns ``(J, Z.shape)``.

    See Also
    --------
    fastjac.dense.Dactivation
    """
    Z = as_float(Z, "Z", 2)
    return Diagonal(_activation_and_slope(Z, name)[1]), Z.shape


def _activation_and_slope(Z: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    code = activations.get(name).code
    Zc = np.ascontiguousarray(as_float(Z, "Z"))
    A, D = np.empty_like(Zc), np.empty_like(Zc)
    activations.activation_values(code, Zc.reshape(-1), A.reshape(-1), D.reshape(-1))
    return A, D


def softmax(z: ArrayLike) -> NDArray[np.floating]:
    """``exp(z) / sum(exp(z))`` of a vector, shifted by its maximum.

    See Also
    --------
    fastjac.dense.softmax
    """
    return matrix_softmax(as_float(z, "z", 1)[None, :])[0]


def matrix_softmax(Z: ArrayLike) -> NDArray[np.floating]:
    """Softmax of each row, shifted by the row maximum: Z (N, m) -> (N, m).

    See Also
    --------
    fastjac.dense.matrix_softmax
    """
    Z = np.ascontiguousarray(as_float(Z, "Z", 2))
    V = np.empty_like(Z)
    kernels.softmax_rows(Z, V)
    return V


def Dmatrix_softmax(Z: ArrayLike) -> tuple[SoftmaxJacobian, tuple[int, ...]]:
    """Jacobian of the row-wise softmax: ``SoftmaxJacobian``, the ``BlockDiagonal`` of
    ``diag(v) - v v^T`` per row, storing only ``v = matrix_softmax(Z)``.

    Z (N, m) -> stores v (N, m), dense shape (N, m, N, m); returns ``(J, Z.shape)``.

    See Also
    --------
    fastjac.dense.Dmatrix_softmax
    """
    V = matrix_softmax(Z)
    return SoftmaxJacobian(V), V.shape


def cross_entropy(P: ArrayLike, Q: ArrayLike) -> np.floating:
    """Mean cross-entropy ``-sum(P * log(Q)) / N`` of P, Q (N, m) -> scalar.

    See Also
    --------
    fastjac.dense.cross_entropy
    """
    P, Q = check_distributions(P, Q)
    return -np.sum(P * np.log(Q)) / P.shape[0]


def DQcross_entropy(P: ArrayLike, Q: ArrayLike) -> tuple[CrossEntropyGradient, tuple[int, ...]]:
    """Jacobian of ``cross_entropy(P, Q)`` in Q: ``CrossEntropyGradient``, storing P and Q.

    Dense (N, m): ``-P / Q / N``. ``chain_rule`` of it with ``Dmatrix_softmax``
    of the logits that gave Q is ``(Q rowsum(P) - P) / N``, finite whenever the
    logits are (``-P / Q`` overflows once Q underflows). Returns ``(D, Q.shape)``.

    See Also
    --------
    fastjac.dense.DQcross_entropy
    """
    P, Q = check_distributions(P, Q)
    return CrossEntropyGradient(P, Q), Q.shape


def _network_args(X: ArrayLike, Y: ArrayLike, var: Sequence[ArrayLike]) -> None:
    """Check the lecture's network's data and blocks (``MLP``'s errors)."""
    Y = as_float(Y, "Y", 2)
    W2 = as_float(var[2], "W2", 2) if len(var) == 4 else None
    net = _lecture_net(X, var)
    if W2 is not None and Y.shape[1:] != W2.shape[1:]:
        raise ValueError(f"W2 has shape {W2.shape} but Y has {Y.shape[1]} columns")
    net._data(X, Y, None)


def _lecture_net(X: ArrayLike, var: Sequence[ArrayLike]) -> MLP:
    """``MLP([d, k, m], "logistic")``, the lecture's network, for these blocks."""
    if len(var) != 4:
        raise ValueError(f"var must be the 4 blocks [W1, b1, W2, b2], got {len(var)} blocks")
    W1, W2 = as_float(var[0], "W1", 2), as_float(var[2], "W2", 2)
    X = as_float(X, "X", 2)
    if W1.shape[0] != X.shape[1]:
        raise ValueError(f"X has {X.shape[1]} columns (shape {X.shape}) but W1 has shape "
                         f"{W1.shape}: X @ W1 needs X with {W1.shape[0]} columns")
    if W2.shape[0] != W1.shape[1]:
        raise ValueError(f"W2 has shape {W2.shape} but W1 of shape {W1.shape} gives "
                         f"{W1.shape[1]} hidden units; W2 needs {W1.shape[1]} rows")
    net = _net(W1.shape[0], W1.shape[1], W2.shape[1])
    net._blocks(var)
    return net


@functools.cache
def _net(d: int, k: int, m: int) -> MLP:
    return MLP([d, k, m], activation="logistic")


def _closure(X: ArrayLike, Y: ArrayLike, make: Callable[[MLP], Any]) -> Callable[..., Any]:
    """A closure of the lecture's network: ``make(MLP([d, k, m], "logistic"))`` for the shapes
    of the blocks it is called with, made (and the lecture's checks run) once per shape."""
    made: dict[tuple[tuple[int, ...], ...], Any] = {}

    def call(var: Sequence[ArrayLike], *rest: Any, **kw: Any) -> Any:
        key = tuple([v.shape if type(v) is np.ndarray else np.shape(v) for v in var])
        fn = made.get(key)
        if fn is None:
            _network_args(X, Y, var)
            fn = made[key] = make(_lecture_net(X, var))
        return fn(var, *rest, **kw)

    return call


def nn_predict(X: ArrayLike, var: Sequence[ArrayLike]) -> NDArray[np.int64]:
    """Predicted class of each row of X (N, d): ``argmax`` over the network's outputs, (N,) int64.

    The argmax of ``logit(X @ W1 + b1) @ W2 + b2`` by a fused kernel
    (``MLP.predict_classes``): the softmax is increasing, so it is the class
    ``fastjac.dense.nn_predict`` picks from the probabilities (ties as
    ``np.argmax``: the first).

    See Also
    --------
    fastjac.dense.nn_predict
    """
    return _lecture_net(X, var).predict_classes(X, var)


def nn_loss_closure(X: ArrayLike, Y: ArrayLike) -> Callable[[Sequence[np.ndarray]], float]:
    """``f(var)``: the network's mean cross-entropy by a fused Numba kernel.

    ``cross_entropy(Y, matrix_softmax(logit(X @ W1 + b1) @ W2 + b2))`` taken
    through log-softmax; var = [W1 (d, k), b1 (1, k), W2 (k, m), b2 (1, m)]:
    ``MLP([d, k, m], "logistic").loss_closure``.

    See Also
    --------
    fastjac.dense.nn_loss_closure
    """
    return _closure(X, Y, lambda net: net.loss_closure(X, Y))


def nn_loss_gradient_closure(X: np.ndarray, Y: ArrayLike
                             ) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    """``df(var) -> [dW1 (d, k), db1 (k,), dW2 (k, m), db2 (m,)]`` by structured chain rule.

    The lecture's gradient code line for line; each ``D_*`` is structured and
    each ``chain_rule`` a fused contraction, so memory stays O(N (d + k + m)).

    See Also
    --------
    fastjac.dense.nn_loss_gradient_closure
    """

    def df(var):  # type: (Sequence[np.ndarray]) -> list[np.ndarray]
        _network_args(X, Y, var)
        # Activation of first layer
        Z1 = (X @ var[0]) + var[1]
        X2 = logit(Z1)

        # Activation of second layer
        Z2 = (X2 @ var[2]) + var[3]
        Q = matrix_softmax(Z2)

        # Backpropagation tells us we can immediately contract DQ DZ2
        D_Q, Qshape = DQcross_entropy(Y, Q)
        D_Z2, Z2shape = Dmatrix_softmax(Z2)
        back_prop2 = chain_rule(D_Q, D_Z2, Qshape)

        # Jacobians for phi_2
        D_X2, X2shape = DX_affine(X2, var[2], var[3])
        D_W2, W2shape = DW_affine(X2, var[2], var[3])
        D_b2, b2shape = Db_affine(X2, var[2], var[3])

        # Jacobian for psi_1
        D_Z1, Z1shape = Dlogit(Z1)
        back_prop1 = chain_rule(chain_rule(back_prop2, D_X2, X2shape), D_Z1, Z1shape)

        # Jacobians for phi_1
        D_W1, W1shape = DW_affine(X, var[0], var[1])
        D_b1, b1shape = Db_affine(X, var[0], var[1])

        # Compute all the gradients
        W1grad = chain_rule(back_prop1, D_W1, W1shape)
        b1grad = chain_rule(back_prop1, D_b1, b1shape)
        W2grad = chain_rule(back_prop2, D_W2, W2shape)
        b2grad = chain_rule(back_prop2, D_b2, b2shape)

        return [W1grad, b1grad, W2grad, b2grad]

    return df


# fg's results: (loss, gradient blocks), and with classes=True the predicted classes too
_LossGrad = tuple[float, list[np.ndarray]]
_LossGradClasses = tuple[float, list[np.ndarray], NDArray[np.int64]]


@overload
@overload
def nn_loss_and_gradient_closure(
    X: ArrayLike, Y: ArrayLike, *, classes: Literal[False] = False
) -> Callable[[Sequence[np.ndarray]], tuple[float, list[np.ndarray]]]: ...
@overload
def nn_loss_and_gradient_closure(
    X: ArrayLike, Y: ArrayLike, *, classes: Literal[True]
) -> Callable[[Sequence[np.ndarray]], tuple[float, list[np.ndarray], NDArray[np.int64]]]: ...
def nn_loss_and_gradient_closure(X: ArrayLike, Y: ArrayLike, *, classes: bool = False) -> Any:
    """``fg(var) -> (loss, [dW1 (d, k), db1 (k,), dW2 (k, m), db2 (m,)])`` in one fused pass.

    The values of ``nn_loss_closure`` and ``nn_loss_gradient_closure`` (to
    rounding) from a single forward-and-backward sweep over row blocks
    (``MLP([d, k, m], "logistic").loss_and_gradient_closure``): no Jacobians,
    no (N, k) temporaries, BLAS on blocks, serial or threaded chosen from the
    sizes. Gradients keep the inputs' float dtype; repeated calls are bitwise
    identical for a fixed number of threads. With ``classes=True``, ``fg``
    returns a third value, each row's predicted class (N,) int64
    (``nn_predict``), from the same pass.

    See Also
    --------
    fastjac.dense.nn_loss_and_gradient_closure
    """
    return _closure(X, Y, lambda net: net.loss_and_gradient_closure(X, Y, classes=classes))


def nn_line_search_closure(X: ArrayLike, Y: ArrayLike) -> _LineSearch:
    """``ls(x0, dx, df0, alpha=0.1, beta=0.5, max_iter=None, *, f0=None)``: ``block_backtracking`` on the loss.

    Accepts the same step as ``block_backtracking(x0, nn_loss_closure(X, Y),
    dx, df0, alpha, beta, max_iter=max_iter, f0=f0)``, with the same errors
    and the same ``LineSearchResult`` (``x`` built by ``update_blocks``):
    ``MLP([d, k, m], "logistic").line_search_closure``, which computes the
    first layer along the line once where that pays.

    See Also
    --------
    fastjac.dense.nn_line_search_closure
    """
    return _closure(X, Y, lambda net: net.line_search_closure(X, Y))
