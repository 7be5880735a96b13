"""``chain_rule`` on dense and structured Jacobians, dispatching on the pair.

========================  ===============================================
Dg, Df                    result
========================  ===============================================
dense, dense              ``np.tensordot`` (as the lecture)
dense, structured         ``Df.vjp(Dg)``: a fused kernel, dense result
structured, dense         ``Dg.jvp(Df)``: a fused kernel, dense result
Diagonal, Diagonal        Diagonal (product of the diagonals)
BlockDiagonal, Diagonal   BlockDiagonal (columns of each block scaled)
Diagonal, BlockDiagonal   BlockDiagonal (rows of each block scaled)
BlockDiagonal, BlockDiag  BlockDiagonal (blockwise matrix products)
CrossEntropyGradient,     ndarray ``(Q rowsum(P) - P) / N`` if the softmax
SoftmaxJacobian           gave that Q; else the dense ``-P / Q / N`` product
CrossEntropyGradient, J   ndarray ``J.vjp(-P / Q / N)`` (the lecture's)
other structured pairs    Composed (lazy; contracts and densifies)
========================  ===============================================

No path allocates an array larger than its inputs and result; dense x dense
checks its result against ``fastjac.budget`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fastjac import kernels
from fastjac._validate import as_float, check_chain_axes
from fastjac.budget import check_dense
from fastjac.jacobians import (
    BlockDiagonal,
    Composed,
    CrossEntropyGradient,
    Diagonal,
    Jacobian,
    SoftmaxJacobian,
)


def chain_rule(Dg: ArrayLike | Jacobian, Df: ArrayLike | Jacobian, var_shape: Sequence[int]) -> Any:
    """Contract the Jacobians of g and f into the Jacobian of g o f.

    ``D(g o f)[i..., j...] = sum_k Dg[i..., k...] Df[k..., j...]`` over the last
    ``len(var_shape)`` axes of Dg and the first ones of Df, as the lecture's.

    Parameters
    ----------
    Dg : ndarray (*batch, *mid) or Jacobian with ``in_shape == mid``
    Df : ndarray (*mid, *in_f) or Jacobian with ``out_shape == mid``
    var_shape : tuple; only ``len(var_shape)`` (the number of axes of mid) is used

    Returns
    -------
    ndarray of shape (*batch, *in_f), or a Jacobian when both are structured
    (except a ``CrossEntropyGradient`` Dg, whose products are (N, m) ndarrays).

    Raises
    ------
    ValueError
        When the contracted axes differ, naming both shapes.

    See Also
    --------
    fastjac.dense.chain_rule : the dense reference (``np.tensordot``).
    """
    if not isinstance(Dg, Jacobian):
        Dg = as_float(Dg, "Dg")
    if not isinstance(Df, Jacobian):
        Df = as_float(Df, "Df")
    dim = check_chain_axes(Dg.shape, Df.shape, var_shape)
    if isinstance(Dg, Jacobian) and dim != len(Dg.in_shape):
        raise ValueError(
            f"chain_rule: var_shape {tuple(var_shape)} has {dim} axes but the structured Dg "
            f"{Dg.shape} has input shape {Dg.in_shape}; all of its input axes must be contracted"
        )
    if isinstance(Df, Jacobian) and dim != len(Df.out_shape):
        raise ValueError(
            f"chain_rule: var_shape {tuple(var_shape)} has {dim} axes but the structured Df "
            f"{Df.shape} has output shape {Df.out_shape}; all of its output axes must be contracted"
        )
    if isinstance(Dg, Jacobian) and isinstance(Df, Jacobian):
        return compose(Dg, Df)
    if isinstance(Df, Jacobian):
        return Df.vjp(Dg)
    if isinstance(Dg, Jacobian):
        return Dg.jvp(Df)
    check_dense(Dg.shape[:Dg.ndim - dim] + Df.shape[dim:], np.result_type(Dg, Df), "chain_rule")
    axes = (list(range(Dg.ndim - dim, Dg.ndim)), list(range(dim)))
    return np.tensordot(Dg, Df, axes=axes)


def compose(outer: Jacobian, inner: Jacobian) -> Any:
    """``outer o inner`` for structured Jacobians: structured where the algebra closes."""
    if isinstance(outer, CrossEntropyGradient):
        if isinstance(inner, SoftmaxJacobian) and same_values(outer.Q, inner.q):
            return outer.through_softmax()
        return inner.vjp(outer.to_dense())
    if isinstance(outer, Diagonal) and isinstance(inner, Diagonal):
        return Diagonal(outer.values * inner.values)
    if isinstance(outer, BlockDiagonal) and isinstance(inner, Diagonal):
        return BlockDiagonal(outer.blocks * inner.values[:, None, :])
    if isinstance(outer, Diagonal) and isinstance(inner, BlockDiagonal):
        return BlockDiagonal(outer.values[:, :, None] * inner.blocks)
    if isinstance(outer, BlockDiagonal) and isinstance(inner, BlockDiagonal):
        dtype = np.result_type(outer.dtype, inner.dtype)
        A = np.ascontiguousarray(outer.blocks, dtype=dtype)
        B = np.ascontiguousarray(inner.blocks, dtype=dtype)
        out = np.empty((A.shape[0], A.shape[1], B.shape[2]), dtype=dtype)
        kernels.block_diagonal_product(A, B, out)
        return BlockDiagonal(out)
    return Composed(outer, inner)


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` and ``b`` hold the same numbers (the same array, or equal shapes and values)."""
    return a is b or (a.shape == b.shape and bool(np.array_equal(a, b)))
