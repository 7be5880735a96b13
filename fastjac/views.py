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


def _c_array(t: Any, ndim: int) -> bool:
    return isinstance(t, types.Array) and t.ndim == ndim and t.layout == "C"


def _view_codegen(out_type: types.Array, geometry: Callable[..., Any]) -> Callable[..., Any]:
    """The codegen of a view of ``args[0]``: ``geometry(builder, src, ints, itemsize)`` gives
    its ``(offset in items, shape, strides)`` from the array ``src`` and the other arguments
    as intp ``ints``; the view shares ``src``'s memory manager (a new reference)."""

    def codegen(context: Any, builder: Any, signature: Signature, args: Sequence[Any]) -> Any:
        src = make_array(signature.args[0])(context, builder, args[0])
        ints = [context.cast(builder, a, t, types.intp)
                for a, t in zip(args[1:], signature.args[1:])]
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(out_type.dtype)))
        offset, shape, strides = geometry(builder, src, ints, itemsize)
        out = make_array(out_type)(context, builder)
        populate_array(out, data=builder.gep(src.data, [offset]), shape=shape, strides=strides,
                       itemsize=itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, out_type, out._getvalue())

    return codegen


@intrinsic
def view2(typingctx: Any, buf: types.Array, start: types.Integer, rows: types.Integer,
          cols: types.Integer) -> tuple[Signature, Callable[..., Any]] | None:
    """``buf[start:start + rows * cols].reshape((rows, cols))`` for a C-contiguous 1-D
    ``buf`` (a C-contiguous (rows, cols) view, sharing ``buf``'s memory); unchecked."""
    if not _c_array(buf, 1):
        return None
    out_type = types.Array(buf.dtype, 2, "C")

    def geometry(builder: Any, src: Any, ints: list[Any], itemsize: Any) -> Any:
        start, rows, cols = ints
        return start, [rows, cols], [builder.mul(cols, itemsize), itemsize]

    return out_type(buf, start, rows, cols), _view_codegen(out_type, geometry)


@intrinsic
def view1(typingctx: Any, buf: types.Array, start: types.Integer,
          size: types.Integer) -> tuple[Signature, Callable[..., Any]] | None:
    """``buf[start:start + size]`` for a C-contiguous 1-D ``buf``; unchecked."""
    if not _c_array(buf, 1):
        return None
    out_type = types.Array(buf.dtype, 1, "C")

    def geometry(builder: Any, src: Any, ints: list[Any], itemsize: Any) -> Any:
        start, size = ints
        return start, [size], [itemsize]

    return out_type(buf, start, size), _view_codegen(out_type, geometry)


@intrinsic
def row_range(typingctx: Any, A: types.Array, start: types.Integer,
              stop: types.Integer) -> tuple[Signature, Callable[..., Any]] | None:
    """``A[start:stop]`` for a C-contiguous 2-D ``A`` and ``0 <= start <= stop <= len(A)``;
    unchecked."""
    if not _c_array(A, 2):
        return None
    out_type = types.Array(A.dtype, 2, "C")

    def geometry(builder: Any, src: Any, ints: list[Any], itemsize: Any) -> Any:
        start, stop = ints
        cols = cgutils.unpack_tuple(builder, src.shape, 2)[1]
        return (builder.mul(start, cols), [builder.sub(stop, start), cols],
                cgutils.unpack_tuple(builder, src.strides, 2))

    return out_type(A, start, stop), _view_codegen(out_type, geometry)
