"""Kernels call their large helpers through the helpers' addresses, without linking them.

When a Numba kernel calls another jitted function, Numba links the callee's
LLVM IR into the kernel's module and LLVM optimises the callee again, inside
every kernel that calls it. Measured on 2026-12-03 (fresh processes taking
turns, same bits): a cold first gradient of a depth-3 network took 4.0-4.2 s
with ``fused.rows_pass`` linking its loss, output-layer and activation
helpers, and 3.3 s calling them through their addresses.

A helper is compiled (or loaded from Numba's cache) on its own, once per
process and signature, and a kernel calls its native entry point through an
address passed in as a run-time int64. The kernel then compiles without the
helper, and one kernel serves every helper of the same signature (every
activation, every loss).

``Native(spec, restype)`` declares such a signature once: ``spec(f)`` gives
the argument types for the kernels' float type ``f``. In a kernel,
``H.call(address, (args...))`` checks the call's argument types against the
spec when the kernel compiles (a ``TypingError``, never a call with the wrong
types; a read-only array may stand for a writable one the helper only reads).
In Python, ``H.address(fn, dtype)`` compiles ``fn`` for exactly that spec and
gives its entry point, which lives as long as ``fn``'s dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.core.typing.templates import Signature

from fastjac.scalar import intrinsic

Spec = Callable[[types.Float], tuple[types.Type, ...]]


def _writable(t: types.Type) -> types.Type:
    """An array type as writable: a read-only array (the caller's data) may stand for a
    writable one the helper only reads; both have the same native layout."""
    return t.copy(readonly=False) if isinstance(t, types.Array) and not t.mutable else t


def _float_of(args: Sequence[types.Type]) -> Any:
    """The kernel's float type: the dtype of the first array argument."""
    for t in args:
        if isinstance(t, types.Array):
            return t.dtype
    raise TypingError("a native call needs an array argument (its dtype picks the signature)")


class Native:
    """A helper signature whose functions kernels call through their addresses."""

    def __init__(self, name: str, spec: Spec, restype: types.Type) -> None:
        self.name, self.spec, self.restype = name, spec, restype
        self.call = self._caller()

    def argtypes(self, dtype: Any) -> tuple[types.Type, ...]:
        """The argument types for float32 or float64 kernels."""
        floats: dict[np.dtype, Any] = {np.dtype(np.float32): types.float32,
                                       np.dtype(np.float64): types.float64}
        if np.dtype(dtype) not in floats:
            raise TypeError(f"{self.name}: kernels run in float32 or float64, not {np.dtype(dtype)}")
        return self.spec(floats[np.dtype(dtype)])

    def address(self, fn: Any, dtype: Any) -> int:
        """The native entry point of helper ``fn`` compiled for this signature and ``dtype``."""
        argtypes = self.argtypes(dtype)
        fn.compile(argtypes)
        cres = fn.overloads[argtypes]
        if cres.signature.return_type != self.restype:
            raise TypeError(f"{fn.py_func.__qualname__} returns {cres.signature.return_type}, "
                            f"not {self.restype} as {self.name} calls expect")
        return int(cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))

    def _caller(self) -> Any:
        native, restype = self, self.restype

        @intrinsic
        def call(typingctx: Any, address: Any, args: Any) -> Any:
            """``fn(*args)`` for the helper ``fn`` whose entry point is at ``address``."""
            is_tuple = isinstance(args, types.BaseTuple)  # (not narrowing args: numba's Any)
            if not isinstance(address, types.Integer) or not is_tuple:
                raise TypingError(f"{native.name}.call takes an address and a tuple of arguments")
            given = tuple(args)
            expected = native.spec(_float_of(given))
            if tuple(_writable(t) for t in given) != expected:
                raise TypingError(f"{native.name}.call: arguments {given} are not the "
                                  f"declared {expected}")
            sig = restype(address, args)

            def codegen(context: Any, builder: Any, signature: Signature, llargs: Any) -> Any:
                argtys = expected  # the helper's types: read-only arrays passed as they are
                vals = cgutils.unpack_tuple(builder, llargs[1], len(argtys))
                fnty = context.call_conv.get_function_type(restype, argtys)
                addr = context.cast(builder, llargs[0], signature.args[0], types.intp)
                fn = builder.inttoptr(addr, fnty.as_pointer())
                status, out = context.call_conv.call_function(builder, fn, restype, argtys, vals)
                with cgutils.if_unlikely(builder, status.is_error):
                    context.call_conv.return_status_propagate(builder, status)
                return out if restype != types.none else context.get_dummy_value()

            return sig, codegen

        return call
