"""The lecture's backpropagation with structured Jacobians: same names, same signatures.

Every ``D*`` returns ``(jacobian, var_shape)`` as in ``fastjac.dense``, but the
jacobian is a structured object (``fastjac.jacobians``) holding O(N) data, and
``chain_rule`` contracts it with a fused kernel instead of ``np.tensordot``.
``J.to_dense()`` gives exactly the dense reference's tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastjac import fused, kernels
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


# The network's arrays as the fused kernels take them: X, Y, W1, b1 (k,), W2, b2 (m,)
_NetworkArgs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _network_args(X: ArrayLike, Y: ArrayLike, var: Sequence[ArrayLike]) -> _NetworkArgs:
    """Validate the network's data and blocks; return them contiguous in one dtype."""
    X, Y = as_float(X, "X", 2), as_float(Y, "Y", 2)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got X {X.shape} and Y {Y.shape}")
    if X.shape[0] == 0:
        raise ValueError("X and Y have no rows (N=0): the mean cross-entropy is undefined")
    X, W1, b1, W2, b2 = _layer_args(X, var)
    if W2.shape[1] != Y.shape[1]:
        raise ValueError(f"W2 has shape {W2.shape} but Y has {Y.shape[1]} columns")
    dtype = np.result_type(X, Y, W1, b1, W2, b2)
    c = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    return c(X), c(Y), c(W1), c(b1).ravel(), c(W2), c(b2).ravel()


def _layer_args(X: ArrayLike, var: Sequence[ArrayLike]) -> tuple[
        NDArray[np.floating], NDArray[np.floating], NDArray[np.floating], NDArray[np.floating],
        NDArray[np.floating]]:
    """Validate X (N, d) and the blocks [W1 (d, k), b1, W2 (k, m), b2] against each other."""
    if len(var) != 4:
        raise ValueError(f"var must be the 4 blocks [W1, b1, W2, b2], got {len(var)} blocks")
    W1, b1, W2, b2 = var
    X, W1, b1 = check_affine(X, W1, b1, ("X", "W1", "b1"))
    W2 = as_float(W2, "W2", 2)
    if W2.shape[0] != W1.shape[1]:
        raise ValueError(f"W2 has shape {W2.shape} but W1 of shape {W1.shape} gives "
                         f"{W1.shape[1]} hidden units; W2 needs {W1.shape[1]} rows")
    return X, W1, b1, W2, check_bias(b2, W2, "b2", "W2")


def nn_predict(X: ArrayLike, var: Sequence[ArrayLike]) -> NDArray[np.int64]:
    """Predicted class of each row of X (N, d): ``argmax`` over the network's outputs, (N,) int64.

    The argmax of ``logit(X @ W1 + b1) @ W2 + b2`` by a fused kernel: the
    softmax is increasing, so it is the class ``fastjac.dense.nn_predict``
    picks from the probabilities (ties as ``np.argmax``: the first).

    See Also
    --------
    fastjac.dense.nn_predict
    """
    X, W1, b1, W2, b2 = _layer_args(X, var)
    dtype = np.result_type(X, W1, b1, W2, b2)
    c = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    return fused.predict(c(X), c(W1), c(b1).ravel(), c(W2), c(b2).ravel())


def nn_loss_closure(X: ArrayLike, Y: ArrayLike) -> Callable[[Sequence[np.ndarray]], float]:
    """``f(var)``: the network's mean cross-entropy by a fused Numba kernel.

    ``cross_entropy(Y, matrix_softmax(logit(X @ W1 + b1) @ W2 + b2))`` taken
    through log-softmax; var = [W1 (d, k), b1 (1, k), W2 (k, m), b2 (1, m)].

    See Also
    --------
    fastjac.dense.nn_loss_closure
    """

    args = _repeated_network_args(X, Y)

    def f(var: Sequence[np.ndarray]) -> float:
        return float(fused.nn_loss(*args(var)))

    return f


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
def nn_loss_and_gradient_closure(
    X: ArrayLike, Y: ArrayLike, *, classes: Literal[False] = False
) -> Callable[[Sequence[np.ndarray]], _LossGrad]: ...
@overload
def nn_loss_and_gradient_closure(
    X: ArrayLike, Y: ArrayLike, *, classes: Literal[True]
) -> Callable[[Sequence[np.ndarray]], _LossGradClasses]: ...
@overload
def nn_loss_and_gradient_closure(
    X: ArrayLike, Y: ArrayLike, *, classes: bool = False
) -> Callable[[Sequence[np.ndarray]], _LossGrad | _LossGradClasses]: ...
def nn_loss_and_gradient_closure(
    X: ArrayLike, Y: ArrayLike, *, classes: bool = False
) -> Callable[[Sequence[np.ndarray]], _LossGrad | _LossGradClasses]:
    """``fg(var) -> (loss, [dW1 (d, k), db1 (k,), dW2 (k, m), db2 (m,)])`` in one fused pass.

    The values of ``nn_loss_closure`` and ``nn_loss_gradient_closure`` (to
    rounding) from a single forward-and-backward sweep over row blocks
    (``fastjac.fused``): no Jacobians, no (N, k) temporaries, BLAS on blocks,
    serial or threaded chosen from the sizes. Gradients keep the inputs'
    float dtype; repeated calls are bitwise identical for a fixed number of
    Numba threads. With ``classes=True``, ``fg`` returns a third value, each
    row's predicted class (N,) int64 (``nn_predict``), from the same pass.

    See Also
    --------
    fastjac.dense.nn_loss_and_gradient_closure
    """

    args = _repeated_network_args(X, Y)

    def fg(var: Sequence[np.ndarray]) -> _LossGrad | _LossGradClasses:
        a = args(var)
        if not classes:
            loss, grad = fused.nn_loss_and_gradient(*a)
            return float(loss), grad
        predicted = np.empty(a[0].shape[0], dtype=np.int64)
        loss, grad = fused.nn_loss_and_gradient(*a, classes=predicted)
        return float(loss), grad, predicted

    return fg


# Each block's (shape, dtype, C-contiguous): what decides that a block passes the checks as it is
_Layout = tuple[tuple[tuple[int, ...], np.dtype, bool], ...]


def _repeated_network_args(X: ArrayLike, Y: ArrayLike
                           ) -> Callable[[Sequence[np.ndarray]], _NetworkArgs]:
    """``args(var)``, equal to ``_network_args(X, Y, var)`` but cheap when called again.

    A closure's X and Y never change, so once a call has validated them and
    the blocks without converting anything (all C-contiguous, one float
    dtype), a later call whose blocks have the same shapes, dtype and layout
    would pass the same checks: it returns the blocks as they are (about 1 us
    instead of 6, a tenth of a small fused call).
    """
    seen: list[tuple[_Layout, np.ndarray, np.ndarray] | None] = [None]

    def layout(var: Sequence[np.ndarray]) -> _Layout | None:
        if len(var) != 4 or any(type(v) is not np.ndarray for v in var):
            return None
        return tuple((v.shape, v.dtype, v.flags.c_contiguous) for v in var)

    def args(var: Sequence[np.ndarray]) -> _NetworkArgs:
        key = layout(var)
        last = seen[0]
        if key is not None and last is not None and last[0] == key:
            W1, b1, W2, b2 = var
            return last[1], last[2], W1, b1.reshape(-1), W2, b2.reshape(-1)
        out = _network_args(X, Y, var)
        if key is not None and out[0] is X and out[1] is Y and all(
                v.dtype == X.dtype and v.flags.c_contiguous for v in var):
            seen[0] = (key, X, Y)
        return out

    return args


def nn_line_search_closure(X: ArrayLike, Y: ArrayLike) -> _LineSearch:
    """``ls(x0, dx, df0, alpha=0.1, beta=0.5, max_iter=None, *, f0=None)``: ``block_backtracking`` on the loss.

    Accepts the same step as ``block_backtracking(x0, nn_loss_closure(X, Y),
    dx, df0, alpha, beta, max_iter=max_iter, f0=f0)``, with the same errors
    and the same ``LineSearchResult`` (``x`` built by ``update_blocks``).
    When it pays (``fastjac.fused.precompute_line``: d large, or N k small)
    the first layer along the line is ``Z1 + t P`` with ``Z1 = X W1 + b1``
    and ``P = X dW1 + db1`` computed once (2 N k values held during the
    call), so each trial costs O(N k m), and with all blocks in X's dtype
    the whole backtracking loop runs in one kernel call. Otherwise each
    trial is one fused loss evaluation. ``fx`` is the fused loss at the
    accepted point (to rounding: ``Z1 + t P`` rounds differently from
    ``X (W1 + t dW1) + b1 + t db1``).

    See Also
    --------
    fastjac.dense.nn_line_search_closure
    """

    from fastjac.linesearch import armijo_backtrack, armijo_setup, check_start, no_step_error

    f = nn_loss_closure(X, Y)
    x_args, dx_args = _repeated_network_args(X, Y), _repeated_network_args(X, Y)
    last_trials = [1]  # the previous search's accepted trial: the next one's first batch
    # X and Y are fixed, so one LineLoss serves every call of the same layout
    cache: list[fused.LineLoss | None] = [None]

    def line_loss(Xc: np.ndarray, Yc: np.ndarray, W1: np.ndarray, b1: np.ndarray,
                  dW1: np.ndarray, db1: np.ndarray) -> fused.LineLoss:
        line = cache[0]
        if (line is not None and line.X is Xc and line.Y is Yc
                and line.ZPT.shape[0] == 2 * W1.shape[1]):
            return line.move_to(W1, b1, dW1, db1)
        cache[0] = line = fused.LineLoss(Xc, Yc, W1, b1, dW1, db1)
        return line

    def ls(x0: Sequence[np.ndarray], dx: Sequence[np.ndarray], df0: Sequence[np.ndarray],
           alpha: float = 0.1, beta: float = 0.5, max_iter: int | None = None, *,
           f0: float | np.floating | None = None) -> LineSearchResult:
        delta, max_iter = armijo_setup(x0, dx, df0, alpha, beta, max_iter)
        Xc, Yc, W1, b1, W2, b2 = x_args(x0)
        if not fused.precompute_line(*Xc.shape, *W2.shape):
            def trial(t: float) -> tuple[list[np.ndarray], float]:
                x = update_blocks(x0, dx, t)
                return x, f(x)

            return armijo_backtrack(f(x0) if f0 is None else f0, delta, beta, max_iter, trial)

        _, _, dW1, db1, dW2, db2 = dx_args(dx)
        # One dtype throughout: the args are X's dtype and contiguous already, and
        # update_blocks rounds x0 + t dx exactly as the kernel does.
        one_dtype = all(type(v) is np.ndarray and v.dtype == Xc.dtype for v in (*x0, *dx))
        dtype = np.result_type(W1, dW1)
        c = (lambda a: a) if one_dtype else (lambda a: np.ascontiguousarray(a, dtype=dtype))
        line = line_loss(c(Xc), c(Yc), c(W1), c(b1), c(dW1), c(db1))
        if f0 is None:
            f0 = line(0.0, c(W2), c(b2))
        check_start(f0)
        if one_dtype:
            i, t, fx = line.backtrack(W2, b2, dW2, db2, f0, delta, beta, max_iter,
                                      batch=last_trials[0])
            if i == 0:
                raise no_step_error(max_iter, t, f0, fx)
            last_trials[0] = i
            # update_blocks without its shape checks: armijo_setup made them
            x = [xi + t * di for xi, di in zip(x0, dx)]
            return LineSearchResult(x, fx, t, i + 1)

        def line_trial(t: float) -> tuple[list[np.ndarray], float]:
            x = update_blocks(x0, dx, t)
            return x, line(t, c(x[2]), c(x[3]).ravel())

        return armijo_backtrack(f0, delta, beta, max_iter, line_trial)

    return ls
