"""Array views for kernels: a 2-D block of a flat buffer, without ``reshape``'s code.

``buf[start:start + rows * cols].reshape((rows, cols))`` costs Numba hundreds
of lines of LLVM IR at every use (slice clamping, the reshape's size check and
its error path). The fused kernels take dozens of such views of their scratch
and parameters: in ``fused.rows_pass`` (14 of them) that code was 4,700 of
14,600 lines, and replacing it with ``view2`` took a cold first gradient of a
depth-3 network from 5.1-5.3 s to 4.2 s. These build the same views directly,
sharing the buffer's memory manager as numpy's views hold their base; the
caller guarantees the bounds (kernels only loop: their wrappers lay out every
buffer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.core.typing.templates import Signature
from numba.np.arrayobj import make_array, populate_array

from fastjac.scalar import intrinsic


@intrinsic
def view2(typingctx: Any, buf: types.Array, start: types.Integer, rows: types.Integer,
          cols: types.Integer) -> tuple[Signature, Callable[..., Any]] | None:
    """``buf[start:start + rows * cols].reshape((rows, cols))`` for a C-contiguous 1-D
    ``buf`` (a C-contiguous (rows, cols) view, sharing ``buf``'s memory); unchecked."""
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"):
        return None
    out_type = types.Array(buf.dtype, 2, "C")

    def codegen(context: Any, builder: Any, signature: Signature, args: Sequence[Any]) -> Any:
        src = make_array(signature.args[0])(context, builder, args[0])
        out = make_array(out_type)(context, builder)
        start, rows, cols = (context.cast(builder, a, t, types.intp)
                             for a, t in zip(args[1:], signature.args[1:]))
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(out_type.dtype)))
        populate_array(out, data=builder.gep(src.data, [start]), shape=[rows, cols],
                       strides=[builder.mul(cols, itemsize), itemsize], itemsize=itemsize,
                       meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, out_type, out._getvalue())

    return out_type(buf, start, rows, cols), codegen


@intrinsic
def view1(typingctx: Any, buf: types.Array, start: types.Integer,
          size: types.Integer) -> tuple[Signature, Callable[..., Any]] | None:
    """``buf[start:start + size]`` for a C-contiguous 1-D ``buf``; unchecked."""
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"):
        return None
    out_type = types.Array(buf.dtype, 1, "C")

    def codegen(context: Any, builder: Any, signature: Signature, args: Sequence[Any]) -> Any:
        src = make_array(signature.args[0])(context, builder, args[0])
        out = make_array(out_type)(context, builder)
        start, size = (context.cast(builder, a, t, types.intp)
                       for a, t in zip(args[1:], signature.args[1:]))
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(out_type.dtype)))
        populate_array(out, data=builder.gep(src.data, [start]), shape=[size],
                       strides=[itemsize], itemsize=itemsize, meminfo=src.meminfo,
                       parent=src.parent)
        return impl_ret_borrowed(context, builder, out_type, out._getvalue())

    return out_type(buf, start, size), codegen


@intrinsic
def row_range(typingctx: Any, A: types.Array, start: types.Integer,
              stop: types.Integer) -> tuple[Signature, Callable[..., Any]] | None:
    """``A[start:stop]`` for a C-contiguous 2-D ``A`` and ``0 <= start <= stop <= len(A)``;
    unchecked."""
    if not (isinstance(A, types.Array) and A.ndim == 2 and A.layout == "C"):
        return None
    out_type = types.Array(A.dtype, 2, "C")

    def codegen(context: Any, builder: Any, signature: Signature, args: Sequence[Any]) -> Any:
        src = make_array(signature.args[0])(context, builder, args[0])
        out = make_array(out_type)(context, builder)
        start, stop = (context.cast(builder, a, t, types.intp)
                       for a, t in zip(args[1:], signature.args[1:]))
        shape = cgutils.unpack_tuple(builder, src.shape, 2)
        strides = cgutils.unpack_tuple(builder, src.strides, 2)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(out_type.dtype)))
        populate_array(out, data=builder.gep(src.data, [builder.mul(start, shape[1])]),
                       shape=[builder.sub(stop, start), shape[1]], strides=strides,
                       itemsize=itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, out_type, out._getvalue())

    return out_type(A, start, stop), codegen
