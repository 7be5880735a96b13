"""The chain-rule routes of ``MLP``: the lecture's backpropagation, written once for any depth.

The same code runs over ``fastjac.dense`` (the lecture's dense tensors and
``np.tensordot``) and ``fastjac.structured`` (structured Jacobians and fused
contractions), which share every name. With ``back`` the gradient of the
loss in the current layer's pre-activation::

    dW_l = chain_rule(back, DW_affine(A_{l-1}, W_l, b_l))
    db_l = chain_rule(back, Db_affine(A_{l-1}, W_l, b_l))
    back = chain_rule(chain_rule(back, DX_affine(A_{l-1}, W_l, b_l)), Dactivation(Z_{l-1}))

starting from the loss's gradient in the logits: the lecture's
``chain_rule(D_F loss, D_Z output)`` with the dense module; with the
structured one, ``DQcross_entropy`` through ``Dmatrix_softmax`` for softmax
cross-entropy (``(Q rowsum(Y) - Y) / N``, no division) and the canonical
link ``F - Y`` for the others. Sample weights w scale each row's terms by
``w_n N / W``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from fastjac import activations, dense, losses, structured

if TYPE_CHECKING:
    from fastjac.mlp import MLP, Grads, Params


def _module(impl: str) -> ModuleType:
    return dense if impl == "dense" else structured


def forward(module: ModuleType, net: MLP, X: np.ndarray, blocks: list[np.ndarray]
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(A, Z)``: the layers' inputs ``[X, A_1, ..., A_{L-1}]`` and pre-activations
    ``[Z_1, ..., Z_L]`` by ``module``'s activations."""
    A, Z = [X], []
    for l in range(1, net.n_layers + 1):
        Z.append((A[-1] @ blocks[2 * l - 2]) + blocks[2 * l - 1])
        if l < net.n_layers:
            A.append(module.activation(Z[-1], net.activations[l - 1]))
    return A, Z


def _row_scale(w: np.ndarray | None, N: int, denom: float) -> np.ndarray | float:
    """``w_n N / W`` per row (1 without weights): turns the mean over N rows into the weighted one."""
    return 1.0 if w is None else (w * (N / denom))[:, None]


def output_gradient(module: ModuleType, loss: losses.Loss, Y: np.ndarray, Z: np.ndarray,
                    w: np.ndarray | None, denom: float) -> Any:
    """The gradient (N, m) of the weighted mean loss in the logits Z, by ``module``."""
    N = Z.shape[0]
    scale = _row_scale(w, N, denom)
    if module is dense:
        F = loss.output(Z)
        D_F = scale * loss.dF(Y, F) / N  # the lecture's D_Q: -Y / Q / N for cross-entropy
        if loss.output_jacobian == "softmax":
            D_Z, _ = dense.Dmatrix_softmax(Z)
        else:
            D_Z, _ = dense.Dactivation(Z, loss.output_jacobian)
        return dense.chain_rule(D_F, D_Z, F.shape)
    if loss.output_jacobian == "softmax":
        Q = structured.matrix_softmax(Z)
        D_Q, Qshape = structured.DQcross_entropy(scale * Y, Q)
        D_S, _ = structured.Dmatrix_softmax(Z)
        return structured.chain_rule(D_Q, D_S, Qshape)
    F = structured.activation(Z, loss.output_jacobian)
    return scale * loss.dZ(Y, F) / N


def gradient(module: ModuleType, net: MLP, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None,
             blocks: list[np.ndarray]) -> Grads:
    """``[dW_1, db_1, ..., dW_L, db_L]`` of ``net``'s loss by the chain rule over ``module``."""
    denom = float(X.shape[0] if w is None else w.sum())
    A, Z = forward(module, net, X, blocks)
    back = output_gradient(module, losses.LOSSES[net.loss], Y, Z[-1], w, denom)
    grads: list[Any] = [None] * (2 * net.n_layers)
    for l in range(net.n_layers, 0, -1):
        W, b = blocks[2 * l - 2], blocks[2 * l - 1]
        D_W, Wshape = module.DW_affine(A[l - 1], W, b)
        D_b, bshape = module.Db_affine(A[l - 1], W, b)
        grads[2 * l - 2] = module.chain_rule(back, D_W, Wshape) + (net.alpha / denom) * W
        grads[2 * l - 1] = module.chain_rule(back, D_b, bshape)
        if l > 1:
            D_X, Xshape = module.DX_affine(A[l - 1], W, b)
            D_Z, Zshape = module.Dactivation(Z[l - 2], net.activations[l - 2])
            back = module.chain_rule(module.chain_rule(back, D_X, Xshape), D_Z, Zshape)
    return grads


def loss_value(module: ModuleType, net: MLP, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None,
               blocks: list[np.ndarray]) -> float:
    """``sum_n w_n l_n / W + alpha / (2 W) sum_l ||W_l||^2`` from ``module``'s forward pass and
    the loss's textbook formula on the outputs (``log F``: inf where F underflows)."""
    loss = losses.LOSSES[net.loss]
    _, Z = forward(module, net, X, blocks)
    if module is dense or loss.output_jacobian == "softmax":
        F = loss.output(Z[-1]) if module is dense else structured.matrix_softmax(Z[-1])
    else:
        F = structured.activation(Z[-1], loss.output_jacobian)
    rows = loss.rows(Y, F)
    denom = float(X.shape[0] if w is None else w.sum())
    data = float(np.sum(rows if w is None else w * rows)) / denom
    penalty = 0.5 * net.alpha * sum(float(np.sum(blocks[2 * l] ** 2))
                                    for l in range(net.n_layers)) / denom
    return data + penalty


def _route(net: MLP, X: ArrayLike, Y: ArrayLike, sample_weight: ArrayLike | None
           ) -> Callable[[Params], tuple[np.ndarray, np.ndarray, np.ndarray | None, list[np.ndarray]]]:
    X0, Y0, w0 = net._data(X, Y, sample_weight)

    def args(params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[np.ndarray]]:
        blocks = net._blocks(params)
        dtype = np.result_type(X0, Y0, *blocks)
        c = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
        assert Y0 is not None
        return c(X0), c(Y0), None if w0 is None else c(w0), [c(b) for b in blocks]

    return args


def gradient_closure(net: MLP, X: ArrayLike, Y: ArrayLike, sample_weight: ArrayLike | None,
                     impl: str) -> Callable[[Params], Grads]:
    """``df(params) -> grads`` of ``net`` by the chain rule over ``impl``'s module."""
    module, args = _module(impl), _route(net, X, Y, sample_weight)
    return lambda params: gradient(module, net, *args(params))


def loss_closure(net: MLP, X: ArrayLike, Y: ArrayLike, sample_weight: ArrayLike | None,
                 impl: str) -> Callable[[Params], float]:
    """``f(params) -> loss`` of ``net`` by ``impl``'s module and the textbook formulas."""
    module, args = _module(impl), _route(net, X, Y, sample_weight)
    return lambda params: loss_value(module, net, *args(params))


# ---------------------------------------------------------------- second order, the twins

def logit_jacobians(module: ModuleType, net: MLP, X: np.ndarray, blocks: list[np.ndarray]
                    ) -> list[np.ndarray]:
    """Per-example Jacobians of the logits, blocks ``(N, m, *block)``, by the chain rule over
    ``module``'s Jacobians from the identity ``dZ_L/dZ_L`` (N, m, N, m): the dense route
    of ``fastjac.curvature`` (small N: it holds (N m)^2-sized tensors)."""
    A, Z = forward(module, net, X, blocks)
    N, m = Z[-1].shape
    back: Any = dense._zeros((N, m, N, m), Z[-1].dtype, "logit_jacobians")
    back.reshape(N * m, N * m)[np.arange(N * m), np.arange(N * m)] = 1
    out: list[Any] = [None] * (2 * net.n_layers)
    for l in range(net.n_layers, 0, -1):
        W, b = blocks[2 * l - 2], blocks[2 * l - 1]
        D_W, Wshape = module.DW_affine(A[l - 1], W, b)
        D_b, bshape = module.Db_affine(A[l - 1], W, b)
        out[2 * l - 2] = module.chain_rule(back, D_W, Wshape)
        out[2 * l - 1] = module.chain_rule(back, D_b, bshape)
        if l > 1:
            D_X, Xshape = module.DX_affine(A[l - 1], W, b)
            D_Z, Zshape = module.Dactivation(Z[l - 2], net.activations[l - 2])
            back = module.chain_rule(module.chain_rule(back, D_X, Xshape), D_Z, Zshape)
    return [np.asarray(J) for J in out]  # (N, m, *block): row n's Jacobian at index n


def hessian_vector_product_twin(net: MLP, X: np.ndarray, Y: np.ndarray, blocks: list[np.ndarray],
                                v: list[np.ndarray], gauss_newton: bool = False) -> list[np.ndarray]:
    """``H v`` (or ``G v``) of the mean loss, in plain numpy over all rows: Pearlmutter's
    R-operator on the textbook backward pass, with the activations' f, f', f'' and the
    loss's per-row gradient and Hessian from the registries (+ alpha/N v on the weights)."""
    L, N = net.n_layers, X.shape[0]
    loss = losses.LOSSES[net.loss]
    acts = [activations.ACTIVATIONS[a] for a in net.activations]
    A, Ad, Z, Zd = [X], [np.zeros_like(X)], [], []
    for l in range(1, L + 1):
        W, b, V, vb = blocks[2 * l - 2], blocks[2 * l - 1], v[2 * l - 2], v[2 * l - 1]
        Z.append(A[-1] @ W + b)
        Zd.append(Ad[-1] @ W + A[-1] @ V + vb)
        if l < L:
            A.append(acts[l - 1].value(Z[-1]))
            Ad.append(acts[l - 1].slope(Z[-1]) * Zd[-1])
    F = loss.output(Z[-1])
    g = loss.dZ(Y, F) / N
    gd = np.einsum("nij,nj->ni", loss.hessian(Y, F), Zd[-1]) / N
    out: list[Any] = [None] * (2 * L)
    for l in range(L, 0, -1):
        W, V = blocks[2 * l - 2], v[2 * l - 2]
        out[2 * l - 2] = A[l - 1].T @ gd + (0 if gauss_newton else Ad[l - 1].T @ g) + (
            net.alpha / N) * V
        out[2 * l - 1] = gd.sum(axis=0)
        if l > 1:
            act, z = acts[l - 2], Z[l - 2]
            h = g @ W.T
            gd_prev = (gd @ W.T) * act.slope(z)
            if not gauss_newton:
                gd_prev += (g @ V.T) * act.slope(z) + h * act.second(z) * Zd[l - 2]
            g, gd = h * act.slope(z), gd_prev
    return out
