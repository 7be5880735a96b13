"""BLAS GEMM on row-major blocks from inside kernels, and BLAS's own threads.

Numba's own GEMM entry point (``numba_xxgemm``, what ``np.dot`` calls) is
scipy's BLAS, resolved at run time, so kernels that call it can be cached.

``single_threaded()`` holds that BLAS at one thread while fastjac's own
threads each run a chunk of rows: BLAS threads inside those threads would
fight them for the cores (OpenBLAS threads any GEMM from 4 x 65536
multiply-adds on), and a GEMM's rounding can depend on BLAS's thread count.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

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




# ---------------------------------------------------------------- BLAS threads

class _Threads(NamedTuple):
    """The thread-count functions of the BLAS library kernels call."""

    get: Callable[[], int]
    set: Callable[[int], None]


@functools.cache
def _kernel_blas() -> _Threads | None:
    """The thread-count functions of the library behind scipy's ``cython_blas`` (the GEMM
    ``numba_xxgemm`` calls), if it is OpenBLAS with its own thread pool (pthreads: one
    process-wide count); else None.

    OpenBLAS's functions are called directly: threadpoolctl's limits only take effect
    from the first thread that set one.
    """
    try:
        import scipy.linalg.cython_blas
        from threadpoolctl import ThreadpoolController

        class DlInfo(ctypes.Structure):
            _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                        ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

        wrapper = ctypes.CDLL(scipy.linalg.cython_blas.__file__)
        dgemm = next(getattr(wrapper, name) for name in ("scipy_dgemm_", "dgemm_", "dgemm")
                     if hasattr(wrapper, name))
        info = DlInfo()
        if not ctypes.CDLL(None).dladdr(ctypes.cast(dgemm, ctypes.c_void_p), ctypes.byref(info)):
            return None
        path = os.path.realpath(info.fname.decode())
        for lib in ThreadpoolController().lib_controllers:
            if (os.path.realpath(lib.filepath) == path and lib.internal_api == "openblas"
                    and lib.threading_layer == "pthreads"):
                for prefix in ("", "scipy_"):
                    for suffix in ("", "64_", "_64"):
                        name = f"{prefix}openblas_set_num_threads{suffix}"
                        if hasattr(lib.dynlib, name):
                            get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}")
                            set_ = getattr(lib.dynlib, name)
                            get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
                            return _Threads(get, set_)
    except Exception:  # no dladdr, no threadpoolctl, an unknown library: no control
        pass
    return None


def threads_controllable() -> bool:
    """Whether ``single_threaded`` can hold the kernels' BLAS at one thread here."""
    return _kernel_blas() is not None


_LOCK = threading.Lock()
_HOLDERS = 0  # calls inside single_threaded() now
_SAVED = 0  # the thread count before the first of them


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked, which holds nothing here (only
    fastjac's passes run inside ``single_threaded``): give BLAS back its thread count."""
    global _LOCK, _HOLDERS
    _LOCK = threading.Lock()
    if _HOLDERS:
        _HOLDERS = 0
        lib = _kernel_blas()
        if lib is not None:
            lib.set(_SAVED)


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with the kernels' BLAS (``_kernel_blas``) at one thread; restore the
    count after.

    Calls may overlap (several Python threads): the first sets one thread, the
    last restores the count it found. That library's other callers meanwhile
    also run on one thread. A no-op where ``threads_controllable()`` is false.
    """
    global _HOLDERS, _SAVED
    lib = _kernel_blas()
    if lib is None:
        yield
        return
    with _LOCK:
        if _HOLDERS == 0:
            _SAVED = lib.get()
            lib.set(1)
        _HOLDERS += 1
    try:
        yield
    finally:
        with _LOCK:
            _HOLDERS -= 1
            if _HOLDERS == 0:
                lib.set(_SAVED)
