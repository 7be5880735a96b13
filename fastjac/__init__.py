"""fastjac: the lecture's backpropagation with structured Jacobians and Numba kernels.

``import fastjac`` gives the structured implementation's names at top level
(``fastjac.chain_rule``, ``fastjac.Dlogit``, ...); ``fastjac.dense`` is the
lecture's dense reference with the same names and signatures. ``fastjac.MLP`` is a
network of any depth with scikit-learn's activations and losses;
``fastjac.MLPClassifier`` and ``fastjac.MLPRegressor`` are scikit-learn
estimators on it (imported on first use, so ``import fastjac`` does not import
scikit-learn). Structured
Jacobians (``fastjac.Diagonal``, ...) are linear operators (``J @ v``,
``J.T``, ``J.aslinearoperator()``); densifying any of them, or building the
dense reference's tensors, is checked against one memory budget
(``fastjac.set_dense_budget``, ``$FASTJAC_DENSE_BUDGET``, 4 GiB by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastjac import dense, structured
from fastjac.budget import (
    DenseMemoryError,
    dense_budget,
    get_dense_budget,
    set_dense_budget,
)
from fastjac.jacobians import (
    BlockDiagonal,
    Composed,
    CrossEntropyGradient,
    Diagonal,
    Jacobian,
    KronIW,
    KronOneI,
    KronXI,
    SoftmaxJacobian,
    Transposed,
)
from fastjac.mlp import MLP

if TYPE_CHECKING:
    from fastjac.sklearn import MLPClassifier, MLPRegressor
from fastjac.structured import (
    Dactivation,
    DQcross_entropy,
    DW_affine,
    DX_affine,
    Db_affine,
    Dlogit,
    Dmatrix_softmax,
    LineSearchError,
    activation,
    LineSearchResult,
    block_backtracking,
    block_norm,
    chain_rule,
    cross_entropy,
    logit,
    matrix_softmax,
    negate_blocks,
    nn_line_search_closure,
    nn_loss_and_gradient_closure,
    nn_loss_closure,
    nn_loss_gradient_closure,
    nn_predict,
    random_matrix,
    softmax,
    update_blocks,
)

__version__ = "0.2.0.dev0"

__all__ = [
    # modules
    "dense", "structured",
    # the lecture's names over structured Jacobians
    "chain_rule", "DX_affine", "DW_affine", "Db_affine", "logit", "Dlogit", "softmax",
    "matrix_softmax", "Dmatrix_softmax", "cross_entropy", "DQcross_entropy",
    "nn_loss_closure", "nn_loss_gradient_closure", "nn_loss_and_gradient_closure",
    "nn_line_search_closure", "nn_predict", "activation", "Dactivation",
    # networks of any depth, and scikit-learn estimators on them
    "MLP", "MLPClassifier", "MLPRegressor",
    "block_backtracking", "block_norm", "negate_blocks", "update_blocks", "random_matrix",
    "LineSearchError", "LineSearchResult",
    # structured Jacobians
    "Jacobian", "Diagonal", "BlockDiagonal", "SoftmaxJacobian", "KronIW", "KronXI", "KronOneI",
    "CrossEntropyGradient", "Composed", "Transposed",
    # the dense memory budget
    "DenseMemoryError", "set_dense_budget", "get_dense_budget", "dense_budget",
]


def __getattr__(name: str) -> Any:
    """The estimators of ``fastjac.sklearn``, imported on first access (PEP 562)."""
    if name in ("MLPClassifier", "MLPRegressor"):
        from fastjac import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module 'fastjac' has no attribute {name!r}")
