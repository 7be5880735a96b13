"""The lecture's backpropagation with dense Jacobian tensors: the reference.

Every ``D*`` function returns ``(jacobian, var_shape)`` where ``jacobian`` is a
dense ndarray of shape ``out_shape + in_shape`` and ``var_shape`` is the shape
of the variable differentiated, exactly as in the lecture. ``chain_rule``
contracts them with ``np.tensordot``. This module is both the oracle the
structured module is tested against and the baseline it is benchmarked
against, so it stays the dense algorithm: the same tensors and contractions.

Differences from the lecture's notebook (none changes a finite value):

* tensors are filled by vectorised indexing instead of Python loops;
* ``matrix_softmax``/``Dmatrix_softmax`` shift each row by its maximum before
  ``exp``, so logits past ~709 give the right answer instead of NaN;
* tensors keep the inputs' floating dtype (float32 stays float32; integers
  become float64); the notebook always allocated float64;
* every tensor builder (and ``chain_rule``'s result) is checked against the
  dense memory budget (``fastjac.budget``) before it allocates: above it,
  ``DenseMemoryError`` says the shape and the bytes instead of thrashing;
* ``logit`` computes the same values without numpy's overflow warning
  (``exp(-z) = inf`` gives the right limit 0).

Kept on purpose (the lecture's quirks):

* ``Db_affine`` returns an ``(N, k, k)`` tensor with ``var_shape = b.shape``
  (``(1, k)``), so the bias gradient comes out with shape ``(k,)``;
* ``chain_rule`` uses only ``len(var_shape)``; the lecture passes the shape of
  the differentiated variable, which has as many axes as the contracted one;
* ``logit`` is the logistic sigmoid ``1 / (1 + exp(-z))`` (the lecture's name),
  and ``cross_entropy`` takes ``log(Q)`` directly (``inf`` where ``Q == 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, overload

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

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
from fastjac._validate import as_float, check_affine, check_chain_axes
from fastjac import activations, budget


def chain_rule(Dg: ArrayLike, Df: ArrayLike, var_shape: Sequence[int]) -> np.ndarray:
    """Contract the Jacobians of g and f into the Jacobian of g o f.

    ``D(g o f)[i..., j...] = sum_k Dg[i..., k...] Df[k..., j...]`` with ``k``
    running over the last ``len(var_shape)`` axes of ``Dg`` and the first ones
    of ``Df``.

    Parameters
    ----------
    Dg : ndarray, shape ``out_g + mid``
    Df : ndarray, shape ``mid + in_f``
    var_shape : tuple, only ``len(var_shape) == len(mid)`` is used

    Returns
    -------
    ndarray, shape ``out_g + in_f``

    See Also
    --------
    fastjac.structured.chain_rule : the same contraction on structured Jacobians.
    """
    Dg, Df = np.asarray(Dg), np.asarray(Df)
    dim = check_chain_axes(Dg.shape, Df.shape, var_shape)
    budget.check_dense(Dg.shape[:Dg.ndim - dim] + Df.shape[dim:], np.result_type(Dg, Df),
                "fastjac.dense.chain_rule")
    Dg_axes = list(range(Dg.ndim - dim, Dg.ndim))
    Df_axes = list(range(dim))
    return np.tensordot(Dg, Df, axes=(Dg_axes, Df_axes))


def _zeros(shape: tuple[int, ...], dtype: DTypeLike, name: str) -> np.ndarray:
    """``np.zeros(shape, dtype)`` once ``fastjac.budget`` allows it."""
    budget.check_dense(shape, dtype, f"fastjac.dense.{name}")
    return np.zeros(shape, dtype=dtype)


def DX_affine(X: ArrayLike, W: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, tuple[int, ...]]:
    """Jacobian of ``X @ W + b`` in ``X``: ``I_N (x) W^T``.

    ``D[a, j, a', i] = [a == a'] W[i, j]``; X (N, d), W (d, k) -> D (N, k, N, d).

    See Also
    --------
    fastjac.structured.DX_affine
    """
    X, W, b = check_affine(X, W, b)
    N = X.shape[0]
    D = _zeros((N, W.shape[1], N, X.shape[1]), np.result_type(X, W), "DX_affine")
    rows = np.arange(N)
    D[rows, :, rows, :] = W.T
    return D, X.shape


def DW_affine(X: ArrayLike, W: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, tuple[int, ...]]:
    """Jacobian of ``X @ W + b`` in ``W``: ``X (x) I_k``.

    ``D[a, j, i, j'] = X[a, i] [j == j']``; X (N, d), W (d, k) -> D (N, k, d, k).

    See Also
    --------
    fastjac.structured.DW_affine
    """
    X, W, b = check_affine(X, W, b)
    k = W.shape[1]
    D = _zeros((X.shape[0], k, W.shape[0], k), np.result_type(X, W), "DW_affine")
    cols = np.arange(k)
    D[:, cols, :, cols] = X
    return D, W.shape


def Db_affine(X: ArrayLike, W: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, tuple[int, int]]:
    """Jacobian of ``X @ W + b`` in ``b``: ``1_N (x) I_k``.

    ``D[a, j, j'] = [j == j']``; X (N, d), W (d, k), b (1, k) -> D (N, k, k),
    returned with ``var_shape = (1, k)``: the lecture's ``b.shape``. A bias of
    shape (k,) is accepted too and gets the same ``var_shape``, because
    ``chain_rule`` contracts ``len(var_shape)`` = 2 axes, the (N, k) output.

    See Also
    --------
    fastjac.structured.Db_affine
    """
    X, W, b = check_affine(X, W, b)
    k = W.shape[1]
    D = _zeros((X.shape[0], k, k), np.result_type(X, W, b), "Db_affine")
    cols = np.arange(k)
    D[:, cols, cols] = 1
    return D, (1, k)


@overload
def logit(z: np.ndarray) -> NDArray[np.floating]: ...
@overload
def logit(z: float) -> np.floating: ...
def logit(z: np.ndarray | float) -> NDArray[np.floating] | np.floating:
    """The logistic sigmoid (the lecture's ``logit``): ``1 / (1 + exp(-z))``, elementwise.

    The lecture's formula; ``exp(-z)`` overflows to inf for z < -709 and
    gives the right limit 0, so that overflow is not warned about.
    """
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


def Dlogit(Z: ArrayLike) -> tuple[np.ndarray, tuple[int, ...]]:
    """Jacobian of the elementwise logistic: diagonal ``s(Z) * s(-Z)``.

    ``D[i, j, i', j'] = [i == i'][j == j'] s(Z[i, j]) s(-Z[i, j])``;
    Z (N, k) -> D (N, k, N, k).

    See Also
    --------
    fastjac.structured.Dlogit
    """
    Z = as_float(Z, "Z", 2)
    D = _zeros(Z.shape + Z.shape, Z.dtype, "Dlogit")
    A = logit(Z) * logit(-Z)
    n = Z.size
    D.reshape(n, n)[np.arange(n), np.arange(n)] = A.ravel()
    return D, Z.shape


def activation(Z: ArrayLike, name: str) -> NDArray[np.floating]:
    """A hidden activation by scikit-learn's name (``fastjac.activations``), elementwise:
    its textbook formula (``logistic`` is ``logit``).

    See Also
    --------
    fastjac.structured.activation
    """
    return activations.get(name).value(as_float(Z, "Z"))


def Dactivation(Z: ArrayLike, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Jacobian of an elementwise activation: ``D[i, j, i, j] = f'(Z[i, j])``, zero elsewhere.

    Z (N, k) -> D (N, k, N, k); returns ``(D, Z.shape)``. ``Dactivation(Z, "logistic")``
    is ``Dlogit(Z)``.

    See Also
    --------
    fastjac.structured.Dactivation
    """
    Z = as_float(Z, "Z", 2)
    slope = activations.get(name).slope
    D = _zeros(Z.shape + Z.shape, Z.dtype, "Dactivation")
    n = Z.size
    D.reshape(n, n)[np.arange(n), np.arange(n)] = slope(Z).ravel()
    return D, Z.shape


def softmax(z: np.ndarray) -> NDArray[np.floating]:
    """``exp(z) / sum(exp(z))`` of a vector, shifted by its maximum."""
    v = np.exp(z - np.max(z))
    return v / np.sum(v)


def matrix_softmax(Z: ArrayLike) -> NDArray[np.floating]:
    """Softmax of each row of Z (N, m) -> (N, m)."""
    Z = as_float(Z, "Z", 2)
    v = np.exp(Z - np.max(Z, axis=1, keepdims=True))
    return v / np.sum(v, axis=1, keepdims=True)


def Dmatrix_softmax(Z: ArrayLike) -> tuple[np.ndarray, tuple[int, ...]]:
    """Jacobian of the row-wise softmax: one block ``diag(v) - v v^T`` per row.

    ``D[a, i, a', j] = [a == a'] (v[a, i] [i == j] - v[a, i] v[a, j])``,
    ``v = matrix_softmax(Z)``; Z (N, m) -> D (N, m, N, m).

    See Also
    --------
    fastjac.structured.Dmatrix_softmax
    """
    Z = as_float(Z, "Z", 2)
    N, m = Z.shape
    D = _zeros((N, m, N, m), Z.dtype, "Dmatrix_softmax")
    v = matrix_softmax(Z)
    rows = np.arange(N)
    blocks = -v[:, :, None] * v[:, None, :]
    blocks[:, np.arange(m), np.arange(m)] += v
    D[rows, :, rows, :] = blocks
    return D, Z.shape


def cross_entropy(P: np.ndarray, Q: np.ndarray) -> np.floating:
    """Mean cross-entropy ``-sum(P * log(Q)) / N`` of P, Q (N, m) -> scalar."""
    return -np.sum(P * np.log(Q)) / P.shape[0]


def DQcross_entropy(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Jacobian of ``cross_entropy(P, Q)`` in Q: ``-P / Q / N``, shape (N, m).

    See Also
    --------
    fastjac.structured.DQcross_entropy
    """
    return -P * (1 / Q) / P.shape[0], Q.shape


def nn_loss_closure(X: np.ndarray, Y: np.ndarray) -> Callable[[Sequence[np.ndarray]], np.floating]:
    """``f(var)``: the network's mean cross-entropy, var = [W1, b1, W2, b2].

    ``cross_entropy(Y, matrix_softmax(logit(X @ W1 + b1) @ W2 + b2))``;
    X (N, d), Y (N, m), W1 (d, k), b1 (1, k), W2 (k, m), b2 (1, m).

    See Also
    --------
    fastjac.structured.nn_loss_closure
    """

    def f(var: Sequence[np.ndarray]) -> np.floating:
        return cross_entropy(Y, matrix_softmax((logit((X @ var[0]) + var[1]) @ var[2]) + var[3]))

    return f


def nn_loss_gradient_closure(X: np.ndarray, Y: np.ndarray
                             ) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    """``df(var) -> [dW1 (d, k), db1 (k,), dW2 (k, m), db2 (m,)]`` by dense chain rule.

    The lecture's gradient code, step by step (bias gradients are (k,), see
    ``Db_affine``), after one check that its tensors together fit the dense
    budget (``fastjac.budget``): over it, ``DenseMemoryError`` before any is built.

    See Also
    --------
    fastjac.structured.nn_loss_gradient_closure
    """

    def df(var):  # type: (Sequence[np.ndarray]) -> list[np.ndarray]
        _check_gradient_memory(X, Y, var)
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


def _check_gradient_memory(X: ArrayLike, Y: ArrayLike, var: Sequence[ArrayLike]) -> None:
    """``DenseMemoryError`` if the lecture's gradient tensors at these shapes exceed the budget."""
    (N, d), (k, m) = np.shape(X), np.shape(var[2])
    dtype = np.result_type(*(np.asarray(a).dtype for a in (X, Y, *var)), np.float32)
    budget.check_dense_gradient(N, d, k, m, dtype, "fastjac.dense.nn_loss_gradient_closure")


def nn_predict(X: np.ndarray, var: Sequence[np.ndarray]) -> NDArray[np.intp]:
    """Predicted class of each row of X (N, d): the lecture's ``argmax`` of the softmax, (N,) int64.

    ``np.argmax(matrix_softmax(logit(X @ W1 + b1) @ W2 + b2), axis=1)``.

    See Also
    --------
    fastjac.structured.nn_predict
    """
    W1, b1, W2, b2 = var
    return np.argmax(matrix_softmax(logit(X @ W1 + b1) @ W2 + b2), axis=1)


# fg's results: (loss, gradient blocks), and with classes=True the predicted classes too
_LossGrad = tuple[np.floating, list[np.ndarray]]
_LossGradClasses = tuple[np.floating, list[np.ndarray], NDArray[np.intp]]


@overload
def nn_loss_and_gradient_closure(
    X: np.ndarray, Y: np.ndarray, *, classes: Literal[False] = False
) -> Callable[[Sequence[np.ndarray]], _LossGrad]: ...
@overload
def nn_loss_and_gradient_closure(
    X: np.ndarray, Y: np.ndarray, *, classes: Literal[True]
) -> Callable[[Sequence[np.ndarray]], _LossGradClasses]: ...
@overload
def nn_loss_and_gradient_closure(
    X: np.ndarray, Y: np.ndarray, *, classes: bool = False
) -> Callable[[Sequence[np.ndarray]], _LossGrad | _LossGradClasses]: ...
def nn_loss_and_gradient_closure(
    X: np.ndarray, Y: np.ndarray, *, classes: bool = False
) -> Callable[[Sequence[np.ndarray]], _LossGrad | _LossGradClasses]:
    """``fg(var) -> (loss, [dW1 (d, k), db1 (k,), dW2 (k, m), db2 (m,)])``.

    ``nn_loss_closure`` and ``nn_loss_gradient_closure`` (the dense chain
    rule) evaluated together: the reference for the fused version. With
    ``classes=True``, ``fg`` also returns ``nn_predict(X, var)``.

    See Also
    --------
    fastjac.structured.nn_loss_and_gradient_closure
    """
    f = nn_loss_closure(X, Y)
    df = nn_loss_gradient_closure(X, Y)

    def fg(var: Sequence[np.ndarray]) -> _LossGrad | _LossGradClasses:
        if classes:
            return f(var), df(var), nn_predict(X, var)
        return f(var), df(var)

    return fg


def nn_line_search_closure(X: np.ndarray, Y: np.ndarray) -> _LineSearch:
    """``ls(x0, dx, df0, alpha=0.1, beta=0.5, max_iter=None, *, f0=None)``: Armijo backtracking on the loss.

    Exactly ``block_backtracking(x0, nn_loss_closure(X, Y), dx, df0, alpha,
    beta, max_iter=max_iter, f0=f0)``; returns its ``LineSearchResult``.

    See Also
    --------
    fastjac.structured.nn_line_search_closure
    """
    f = nn_loss_closure(X, Y)

    def ls(x0: Sequence[np.ndarray], dx: Sequence[np.ndarray], df0: Sequence[np.ndarray],
           alpha: float = 0.1, beta: float = 0.5, max_iter: int | None = None, *,
           f0: float | np.floating | None = None) -> LineSearchResult:
        return block_backtracking(x0, f, dx, df0, alpha, beta, max_iter=max_iter, f0=f0)

    return ls
