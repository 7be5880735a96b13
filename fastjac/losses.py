"""Output layers and their losses, each in one place: value, gradient in the logits, outputs.

A loss takes the network's last pre-activation Z (the logits, N x m), maps
it to outputs F and compares them with the targets Y; the per-row losses are
averaged with weights w (all ones by default) over ``W = sum(w)``:

=====================  ====  ============  ===================================  =================
name                   code  outputs F     row loss l_n                         dl_n/dz
=====================  ====  ============  ===================================  =================
softmax_cross_entropy  0     softmax(z)    -sum_c y_c log F_c                   F rowsum(y) - y
binary_cross_entropy   1     logistic(z)   -sum_c y_c log F_c + (1-y_c) log(1-F_c)  F - y
squared_error          2     z             0.5 sum_c (y_c - z_c)^2              z - y
=====================  ====  ============  ===================================  =================

so the loss is ``sum_n w_n l_n / W`` and its gradient in the logits is
``w_n dl_n/dz / W``. Each loss is computed stably from the logits
(log-softmax; ``softplus(z) - y z``), never through ``log F``.

scikit-learn's ``MLPRegressor`` reports, for m outputs, the squared error
divided by m (``squared_loss`` averages over outputs), while its gradient is
that of the value above (scikit-learn#8349); fastjac's loss is the function
whose gradient both compute.

Here live the row-block loops the fused kernels call by address
(``rows_loop``) or inline (``loss_outputs``) and the numpy twins of the dense
and structured routes (``Loss``). Adding a loss touches this file and its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from numba.core import types

from fastjac._jit import inline, kernel
from fastjac.native import Native
from fastjac.activations import logistic_and_slope
from fastjac.scalar import exp_nonpos, flush, flush_threshold, log1p_small, log_pos

SOFTMAX_CROSS_ENTROPY, BINARY_CROSS_ENTROPY, SQUARED_ERROR = 0, 1, 2


# ---------------------------------------------------------------- the kernels' loops

@kernel(helper=True)
def softmax_cross_entropy_rows(ZT: np.ndarray, Y: np.ndarray, w: np.ndarray, with_grad: bool,
                               denom: float, rows: np.ndarray) -> float:
    """Softmax cross-entropy of each row of ``ZT^T`` against Y, summed with weights w.

    ZT (m, B) holds the logits transposed, Y (B, m), w (B,) or empty (all ones);
    ``rows`` (4, >= B) is scratch. Per row ``rowsum(Y) log(sum_c exp(z_c - max z)) -
    sum_c Y_c (z_c - max z)``. Every loop runs over rows (vectorised). If
    ``with_grad``, ZT ends as ``G^T``, ``G = w (Q rowsum(Y) - Y) / denom``.
    """
    m, B = ZT.shape
    tiny = flush_threshold(ZT)
    mx, se, yz, sy = rows[0], rows[1], rows[2], rows[3]
    for r in range(B):
        mx[r] = ZT[0, r]
        se[r] = 0.0
        yz[r] = 0.0
        sy[r] = 0.0
    for c in range(1, m):
        for r in range(B):
            mx[r] = max(mx[r], ZT[c, r])
    for c in range(m):  # a pass of its own: with Y's strided reads the exp did not vectorise
        for r in range(B):
            y = Y[r, c]
            yz[r] += y * (ZT[c, r] - mx[r]) if y != 0 else 0.0  # 0 * (-inf) would be NaN
            sy[r] += y
    for c in range(m):
        for r in range(B):
            e = flush(exp_nonpos(ZT[c, r] - mx[r]), tiny)
            ZT[c, r] = e
            se[r] += e
    loss = 0.0
    if w.size == 0:
        for r in range(B):
            loss += sy[r] * log_pos(se[r]) - yz[r]
    else:
        for r in range(B):
            loss += w[r] * (sy[r] * log_pos(se[r]) - yz[r])
    if with_grad:
        if w.size == 0:
            for c in range(m):
                for r in range(B):
                    ZT[c, r] = (ZT[c, r] / se[r] * sy[r] - Y[r, c]) / denom
        else:
            for c in range(m):
                for r in range(B):
                    ZT[c, r] = (ZT[c, r] / se[r] * sy[r] - Y[r, c]) * w[r] / denom
    return loss


@kernel(helper=True)
def binary_cross_entropy_rows(ZT: np.ndarray, Y: np.ndarray, w: np.ndarray, with_grad: bool,
                              denom: float, rows: np.ndarray) -> float:
    """Binary cross-entropy of a logistic output per column, summed with weights w.

    Per entry ``softplus(z) - y z = max(z, 0) - y z + log(1 + exp(-|z|))``,
    finite for any finite z; if ``with_grad`` ZT ends as ``w (s(z) - y) / denom``.
    """
    m, B = ZT.shape
    tiny = flush_threshold(ZT)
    acc = rows[0]
    for r in range(B):
        acc[r] = 0.0
    for c in range(m):
        for r in range(B):
            z = ZT[c, r]
            y = Y[r, c]
            e = flush(exp_nonpos(-abs(z)), tiny)
            acc[r] += max(z, 0.0) - (y * z if y != 0 else 0.0) + log1p_small(e)
            if with_grad:
                ZT[c, r] = logistic_and_slope(z, tiny)[0] - y
    loss = 0.0
    if w.size == 0:
        for r in range(B):
            loss += acc[r]
    else:
        for r in range(B):
            loss += w[r] * acc[r]
    if with_grad:
        _scale_rows(ZT, w, denom)
    return loss


@kernel(helper=True)
def squared_error_rows(ZT: np.ndarray, Y: np.ndarray, w: np.ndarray, with_grad: bool,
                       denom: float, rows: np.ndarray) -> float:
    """``0.5 sum_c (y_c - z_c)^2`` per row, summed with weights w; if ``with_grad``
    ZT ends as ``w (z - y) / denom``."""
    m, B = ZT.shape
    acc = rows[0]
    for r in range(B):
        acc[r] = 0.0
    for c in range(m):
        for r in range(B):
            d = ZT[c, r] - Y[r, c]
            acc[r] += d * d
            if with_grad:
                ZT[c, r] = d
    loss = 0.0
    if w.size == 0:
        for r in range(B):
            loss += 0.5 * acc[r]
    else:
        for r in range(B):
            loss += w[r] * (0.5 * acc[r])
    if with_grad:
        _scale_rows(ZT, w, denom)
    return loss


@inline
def _scale_rows(ZT: np.ndarray, w: np.ndarray, denom: float) -> None:
    """``ZT[:, r] <- ZT[:, r] w_r / denom`` (``/ denom`` without weights)."""
    m, B = ZT.shape
    if w.size == 0:
        for c in range(m):
            for r in range(B):
                ZT[c, r] = ZT[c, r] / denom
    else:
        for c in range(m):
            for r in range(B):
                ZT[c, r] = ZT[c, r] * w[r] / denom


# A loss's row loop as kernels call it, through its address (``fastjac.native``):
# ``rows(ZT (m, B), Y (B, m), w (B,) or empty, with_grad, denom, rows (4, B))`` -> the loss sum.
ROWS = Native("losses.ROWS", lambda f: (f[:, ::1], f[:, ::1], f[::1], types.boolean, types.float64,
                                        f[:, ::1]), types.float64)


def rows_loop(loss: int) -> Any:
    """The row loop kernels call for loss code ``loss``."""
    return {SOFTMAX_CROSS_ENTROPY: softmax_cross_entropy_rows,
            BINARY_CROSS_ENTROPY: binary_cross_entropy_rows,
            SQUARED_ERROR: squared_error_rows}[loss]


@kernel(helper=True)
def softmax_rows(ZT: np.ndarray, out: np.ndarray, rows: np.ndarray) -> None:
    """``out`` (B, m) = softmax of each column of ZT (m, B) (ZT is overwritten)."""
    m, B = ZT.shape
    mx, se = rows[0], rows[1]
    for r in range(B):
        mx[r] = ZT[0, r]
        se[r] = 0.0
    for c in range(1, m):
        for r in range(B):
            mx[r] = max(mx[r], ZT[c, r])
    for c in range(m):
        for r in range(B):
            e = exp_nonpos(ZT[c, r] - mx[r])
            ZT[c, r] = e
            se[r] += e
    for r in range(B):
        for c in range(m):
            out[r, c] = ZT[c, r] / se[r]


@inline
def loss_outputs(loss: int, ZT: np.ndarray, out: np.ndarray, rows: np.ndarray) -> None:
    """``out`` (B, m) = the outputs F of the logits ZT (m, B): softmax, logistic or identity."""
    m, B = ZT.shape
    if loss == SOFTMAX_CROSS_ENTROPY:
        softmax_rows(ZT, out, rows)
    elif loss == BINARY_CROSS_ENTROPY:
        for r in range(B):
            for c in range(m):
                out[r, c] = logistic_and_slope(ZT[c, r], 0.0)[0]
    else:
        for r in range(B):
            for c in range(m):
                out[r, c] = ZT[c, r]


@inline
def argmax_rows(ZT: np.ndarray, out: np.ndarray) -> None:
    """``out[r] = argmax_c ZT[c, r]`` as ``np.argmax`` does: the first maximum, or the first NaN.

    The argmax of the logits is that of the outputs (softmax and logistic increase)."""
    m, B = ZT.shape
    for r in range(B):
        best = 0
        for c in range(1, m):
            if ZT[best, r] != ZT[best, r]:
                break
            if ZT[c, r] > ZT[best, r] or ZT[c, r] != ZT[c, r]:
                best = c
        out[r] = best


# ---------------------------------------------------------------- second order, per row

# What the curvature kernels backpropagate from the logits (C vectors a row):
# the row's loss gradient (C = 1), the square root S of its Hessian in the logits
# (H = S S^T, C = m), Monte Carlo gradients of sampled targets (C = samples, scaled
# 1/sqrt(C): their outer products average to the Fisher), or the identity (C = m: the
# Jacobian of the logits themselves).
LOSS_GRADIENT, HESSIAN_SQRT, MONTE_CARLO, IDENTITY_COTANGENTS = 0, 1, 2, 3


@kernel(helper=True)
def row_softmax(z: np.ndarray, q: np.ndarray) -> float:
    """``q = softmax(z)`` of one row (shifted by the maximum); returns ``sum(exp(z - max))``."""
    m = z.shape[0]
    mx = z[0]
    for c in range(1, m):
        mx = max(mx, z[c])
    se = 0.0
    for c in range(m):
        q[c] = exp_nonpos(z[c] - mx)
        se += q[c]
    for c in range(m):
        q[c] = q[c] / se
    return se


@kernel(helper=True)
def row_derivatives(loss: int, z: np.ndarray, y: np.ndarray, r: np.ndarray, p: np.ndarray) -> None:
    """One row's loss gradient in the logits ``r`` (m,) and the outputs ``p`` (m,) its Hessian
    is built from: softmax q with ``H = rowsum(y) (diag(q) - q q^T)``; logistic p with
    ``H = diag(p (1 - p))``; for squared error ``H = I`` (p unused)."""
    m = z.shape[0]
    if loss == SOFTMAX_CROSS_ENTROPY:
        row_softmax(z, p)
        sy = 0.0
        for c in range(m):
            sy += y[c]
        for c in range(m):
            r[c] = p[c] * sy - y[c]
    elif loss == BINARY_CROSS_ENTROPY:
        for c in range(m):
            p[c] = logistic_and_slope(z[c], 0.0)[0]
            r[c] = p[c] - y[c]
    else:
        for c in range(m):
            r[c] = z[c] - y[c]


@kernel(helper=True)
def row_hessian_vector(loss: int, y: np.ndarray, p: np.ndarray, u: np.ndarray,
                       out: np.ndarray) -> None:
    """``out = H u`` for one row's loss Hessian in the logits (``row_derivatives``' p)."""
    m = u.shape[0]
    if loss == SOFTMAX_CROSS_ENTROPY:
        sy = 0.0
        qu = 0.0
        for c in range(m):
            sy += y[c]
            qu += p[c] * u[c]
        for c in range(m):
            out[c] = sy * p[c] * (u[c] - qu)
    elif loss == BINARY_CROSS_ENTROPY:
        for c in range(m):
            out[c] = p[c] * (1.0 - p[c]) * u[c]
    else:
        for c in range(m):
            out[c] = u[c]


@kernel(helper=True)
def row_cotangents(loss: int, source: int, z: np.ndarray, y: np.ndarray, rnd: np.ndarray,
                   p: np.ndarray, U: np.ndarray) -> None:
    """The C vectors (rows of U, (C, m)) one row backpropagates for ``source``.

    HESSIAN_SQRT: the columns of S with H = S S^T: softmax cross-entropy
    ``sqrt(sy) (diag(sqrt q) - q sqrt(q)^T)`` (column c: ``sqrt(sy q_c) (e_c - q)``),
    binary ``diag(sqrt(p (1 - p)))``, squared error I. MONTE_CARLO: with
    targets drawn from the model (``rnd``: a uniform per sample for softmax, one
    per output and sample for binary, a standard normal for squared error), the
    gradients ``q - e_y``, ``p - y``, ``-noise``, over sqrt(C).
    """
    C, m = U.shape
    if source == IDENTITY_COTANGENTS:
        for c in range(C):
            for i in range(m):
                U[c, i] = 1.0 if i == c else 0.0
        return
    if source == LOSS_GRADIENT:
        row_derivatives(loss, z, y, U[0], p)
        return
    row_derivatives(loss, z, y, U[0], p)  # p: the outputs
    if source == HESSIAN_SQRT:
        if loss == SOFTMAX_CROSS_ENTROPY:
            sy = 0.0
            for i in range(m):
                sy += y[i]
            for c in range(C):
                s = np.sqrt(sy * p[c])
                for i in range(m):
                    U[c, i] = s * ((1.0 if i == c else 0.0) - p[i])
        elif loss == BINARY_CROSS_ENTROPY:
            for c in range(C):
                for i in range(m):
                    U[c, i] = np.sqrt(p[i] * (1.0 - p[i])) if i == c else 0.0
        else:
            for c in range(C):
                for i in range(m):
                    U[c, i] = 1.0 if i == c else 0.0
        return
    scale = 1.0 / np.sqrt(C)  # MONTE_CARLO
    for c in range(C):
        if loss == SOFTMAX_CROSS_ENTROPY:
            u = rnd[c]
            k = m - 1
            acc = 0.0
            for i in range(m):
                acc += p[i]
                if u < acc:
                    k = i
                    break
            for i in range(m):
                U[c, i] = scale * (p[i] - (1.0 if i == k else 0.0))
        elif loss == BINARY_CROSS_ENTROPY:
            for i in range(m):
                U[c, i] = scale * (p[i] - (1.0 if rnd[c * m + i] < p[i] else 0.0))
        else:
            for i in range(m):
                U[c, i] = -scale * rnd[c * m + i]


# ---------------------------------------------------------------- the numpy twins

def _softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - np.max(Z, axis=1, keepdims=True))
    return E / np.sum(E, axis=1, keepdims=True)


def _logistic(Z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-Z))


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x log y`` with ``0 log y = 0`` (the textbook convention)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(y))


@dataclass(frozen=True)
class Loss:
    """A loss: its name, the kernels' code, and the textbook numpy formulas of its twins.

    ``output(Z)``: the outputs F (N, m). ``rows(Y, F)``: the per-row losses
    (N,) from the outputs (the dense reference's formula, ``log F`` and all).
    ``dF(Y, F)``: their gradient in F (N, m). ``dZ(Y, F)``: their gradient
    in the logits, ``dF`` through the output map (the canonical link).
    ``output_jacobian``: which of the lecture's Jacobians the output map has.
    ``hessian(Y, F)``: each row's Hessian in the logits (N, m, m).
    """

    name: str
    code: int
    output: Callable[[np.ndarray], np.ndarray]
    rows: Callable[[np.ndarray, np.ndarray], np.ndarray]
    dF: Callable[[np.ndarray, np.ndarray], np.ndarray]
    dZ: Callable[[np.ndarray, np.ndarray], np.ndarray]
    output_jacobian: str  # "softmax", "logistic" or "identity"
    hessian: Callable[[np.ndarray, np.ndarray], np.ndarray]  # per-row d^2 l / dz^2 (N, m, m)


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (
    Loss("softmax_cross_entropy", SOFTMAX_CROSS_ENTROPY, _softmax,
         lambda Y, F: -np.sum(_xlogy(Y, F), axis=1),
         lambda Y, F: -Y / F,
         lambda Y, F: F * Y.sum(axis=1, keepdims=True) - Y,
         "softmax",
         lambda Y, F: Y.sum(axis=1)[:, None, None] * (
             np.einsum("ni,ij->nij", F, np.eye(F.shape[1])) - F[:, :, None] * F[:, None, :])),
    Loss("binary_cross_entropy", BINARY_CROSS_ENTROPY, _logistic,
         lambda Y, F: -np.sum(_xlogy(Y, F) + _xlogy(1 - Y, 1 - F), axis=1),
         lambda Y, F: (F - Y) / (F * (1 - F)),
         lambda Y, F: F - Y,
         "logistic",
         lambda Y, F: np.einsum("ni,ij->nij", F * (1 - F), np.eye(F.shape[1]))),
    Loss("squared_error", SQUARED_ERROR, lambda Z: Z.copy(),
         lambda Y, F: 0.5 * np.sum((Y - F) ** 2, axis=1),
         lambda Y, F: F - Y,
         lambda Y, F: F - Y,
         "identity",
         lambda Y, F: np.broadcast_to(np.eye(F.shape[1]), (F.shape[0],) + (F.shape[1],) * 2).copy()),
)}


def get(name: str | Loss) -> Loss:
    """The ``Loss`` called ``name``; ``ValueError`` listing the known names otherwise."""
    if isinstance(name, Loss):
        return name
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}") from None
