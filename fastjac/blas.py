"""BLAS GEMM on row-major blocks from inside kernels.

Numba's own GEMM entry point (``numba_xxgemm``, what ``np.dot`` calls) is
scipy's BLAS, resolved at run time, so kernels that call it can be cached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.typing.templates import Signature

from fastjac._jit import kernel
from fastjac.scalar import intrinsic

# Fortran order; see ``gemm``.
# (Typed Any: numba's stubs type calling a numba type as building a signature of
# types; in a kernel this one calls the C function.)
_xxgemm: Any = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char,        # kind ('s'/'d'), transa, transb
    types.intp, types.intp, types.intp,        # m, n, k
    types.voidptr, types.voidptr, types.intp,  # alpha, a, lda
    types.voidptr, types.intp, types.voidptr,  # b, ldb, beta
    types.voidptr, types.intp))                # c, ldc
# op codes: numpy scalars, which Numba types as int8 (not as literals), so that every
# call of ``gemm`` shares one compilation
N = np.int8(110)  # "n": op(A) = A
T = np.int8(116)  # "t": op(A) = A^T
_DOUBLE = np.int8(100)  # "d"
_SINGLE = np.int8(115)  # "s"


@intrinsic
def _scalar_slot(typingctx: Any, value: types.Type,
                 like: types.Array) -> tuple[Signature, Callable[..., Any]]:
    """Pointer to a stack slot holding ``value`` in ``like``'s dtype (BLAS takes alpha, beta by address)."""
    dtype = like.dtype

    def codegen(context: Any, builder: Any, signature: Signature, args: Sequence[Any]) -> Any:
        v = context.cast(builder, args[0], signature.args[0], dtype)
        slot = cgutils.alloca_once_value(builder, v)
        return builder.bitcast(slot, cgutils.voidptr_t)

    return types.voidptr(value, like), codegen


@kernel(helper=True)
def gemm(op_a: np.int8, op_b: np.int8, alpha: float, A: np.ndarray, B: np.ndarray, beta: float,
         C: np.ndarray) -> None:
    """``C = alpha op(A) op(B) + beta C`` for row-major 2-D arrays whose rows are contiguous.

    ``op(A)`` is ``A.T`` when ``op_a`` is ``T``, A when ``N``. A, B and C may be row ranges of
    C-contiguous arrays (their leading dimension is ``shape[1]``). Row-major
    ``C = op(A) op(B)`` is column-major ``C^T = op(B)^T op(A)^T``, hence the swap.
    """
    rows, cols = C.shape
    K = A.shape[0] if op_a == T else A.shape[1]
    kind = _DOUBLE if C.itemsize == 8 else _SINGLE
    _xxgemm(kind, op_b, op_a, cols, rows, K,
            _scalar_slot(alpha, C), B.ctypes, B.shape[1], A.ctypes, A.shape[1],
            _scalar_slot(beta, C), C.ctypes, C.shape[1])


