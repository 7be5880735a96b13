"""fastjac: the lecture's backpropagation with structured Jacobians and Numba kernels.

``import fastjac`` gives the structured implementation's names at top level
(``fastjac.chain_rule``, ``fastjac.Dlogit``, ...); ``fastjac.dense`` is the
lecture's dense reference with the same names and signatures.
"""

from fastjac import dense, structured  # noqa: F401
from fastjac.jacobians import (  # noqa: F401
    BlockDiagonal,
    Composed,
    Diagonal,
    Jacobian,
    KronIW,
    KronOneI,
    KronXI,
)
from fastjac.structured import (  # noqa: F401
    DQcross_entropy,
    DW_affine,
    DX_affine,
    Db_affine,
    Dlogit,
    Dmatrix_softmax,
    LineSearchError,
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

__version__ = "0.1.0"
