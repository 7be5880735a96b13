"""Fused kernels for multilayer perceptrons of any depth: forward and backward in one pass.

The network maps X (N, n_0) through layers ``Z_l = A_{l-1} W_l + b_l``,
``A_l = f_l(Z_l)`` (hidden activations, ``fastjac.activations``) to the
logits ``Z_L`` (N, m), compared with Y by a loss (``fastjac.losses``). With
``G_L`` the loss's gradient in the logits, the backward pass is the chain
rule contracted by hand::

    dW_l = A_{l-1}^T G_l,  db_l = sum_rows G_l,  G_{l-1} = (G_l W_l^T) * f'(Z_{l-1})

How it is made fast and cheap to compile (each choice measured on the
2-core development machines; thresholds in ``fastjac._jit``):

* **One kernel for every network.** ``rows_pass`` takes the parameters as
  one flat buffer ``theta`` ([W_1, b_1, ..., W_L, b_L] back to back, W_l
  row-major), the widths ``sizes`` (n_0, ..., n_L) and activation codes,
  all run-time values, and calls the activation's and the loss's loops and
  the output layer through their addresses ``fns`` (``helper_addresses``,
  ``fastjac.native``): it compiles once per dtype, without linking those
  loops, and any depth, width, activation or loss reuses it (Numba
  specialises on types, never on shapes).
* **Row blocks.** Rows go in blocks of at most ``block``; a block's forward
  and backward passes run back to back while it is in cache. Scratch is
  ``block (2 sum(hidden) + m + 4)`` values per thread: no array has N rows.
* **BLAS on blocks.** Every ``A W`` and ``A^T G`` of a block is a GEMM with
  ``beta = 1`` accumulating the gradient in place; the output layer's
  ``G W^T`` (only m terms per entry) is loops up to ``SMALL_M`` outputs.
  Logits are held transposed (m, B) so that the losses vectorise over rows.
* **Threads, chosen from the sizes** (``plan``): small problems run
  serially; larger ones split the rows into one contiguous chunk per thread
  (Python threads calling the GIL-free kernel: no ``parallel=True``
  compilation), while BLAS runs each chunk's GEMMs on one thread
  (``blas.single_threaded``).
* **Determinism.** Chunk partial sums are added in chunk order and blocks in
  row order, so for a fixed number of threads repeated calls are bitwise
  identical.

The line search (``LineLoss``) computes ``[X W_1 + b_1 | X dW_1 + db_1]^T``
once; each trial step then costs the layers above the first.

Kernels only loop (arrays in, arrays or ``out`` out); the wrappers at the end
take validated, C-contiguous arrays of one dtype (float32 or float64) and
allocate all scratch, so ``tracemalloc`` sees every byte.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numba
import numpy as np
from numba.core import types
from numpy.typing import NDArray

from fastjac import activations, blas, losses
from fastjac._jit import (
    BLAS_THREAD_MIN_MNK,
    BLOCK_ROWS,
    CHUNK_BLOCK_ROWS,
    CHUNK_SCRATCH_BYTES,
    LINE_PARALLEL_MIN_ELEMENTS,
    LINE_THREAD_MIN_ELEMENTS,
    LINESEARCH_MAX_HELD,
    LINESEARCH_MIN_INPUTS,
    MIN_CHUNK_BLOCK_ROWS,
    PARALLEL_MIN_ELEMENTS,
    THREAD_MIN_ELEMENTS,
    WIDE_BLOCK_ROWS,
    inline,
    kernel,
)
from fastjac.blas import N, T, gemm
from fastjac.losses import argmax_rows, loss_outputs
from fastjac.native import Native
from fastjac.scalar import flush, flush_threshold
from fastjac.views import row_range, view1, view2

Sizes = Sequence[int] | NDArray[np.int64]  # the widths [n_0, ..., n_L]

# G W^T (K = m) by loops up to this m, by GEMM above: per block of 256-400
# rows the loops were 1.0-1.7x faster for m = 2..8 (k = 20..512) and the GEMM
# 1.3x faster for m = 10, k = 512.
SMALL_M = 8

# ``with_grad=False`` as a value Numba types as a plain bool, not a literal: the type the
# loss loops' declared signature (``losses.ROWS``) takes
NO_GRAD = np.bool_(False)


# ---------------------------------------------------------------- layouts

def layout_offsets(sizes: Sizes) -> NDArray[np.int64]:
    """Where ``[W_1, b_1, ..., W_L, b_L]`` start in the flat parameters, and their end (2L + 1):
    ``W_l = theta[offs[2l - 2]:offs[2l - 1]]``, ``b_l = theta[offs[2l - 1]:offs[2l]]``."""
    offs = [0]
    for i in range(len(sizes) - 1):
        offs.append(offs[-1] + int(sizes[i]) * int(sizes[i + 1]))
        offs.append(offs[-1] + int(sizes[i + 1]))
    return np.array(offs, dtype=np.int64)


def scratch_layout(block: int, sizes: Sizes) -> tuple[NDArray[np.int64], int]:
    """``(hoffs, size)`` of one thread's scratch for blocks of ``block`` rows.

    Hidden layer l (1..L-1) keeps its activations (block, n_l) at ``hoffs[l]``
    and its slopes f'(Z_l) right after; the logits (m, block) start at
    ``hoffs[L]``, then 4 row vectors of the loss (4, block), and W_L^T
    (m, n_{L-1}) ends the scratch (``last_weights_T``). ``size`` values in all.
    """
    L = len(sizes) - 1
    hoffs = np.zeros(L + 1, dtype=np.int64)
    for i in range(1, L):
        hoffs[i + 1] = hoffs[i] + 2 * block * int(sizes[i])
    return hoffs, int(hoffs[L]) + block * (int(sizes[L]) + 4) + int(sizes[L]) * int(sizes[L - 1])


# ---------------------------------------------------------------- helpers of every network

@kernel(helper=True)
def output_layer(A: np.ndarray, WT: np.ndarray, b: np.ndarray, ZT: np.ndarray,
                 blas: bool) -> None:
    """``ZT = (A W + b)^T``: A (B, k), WT = W^T (m, k), b (m,), ZT (m, B).

    ``blas``: one GEMM; else m dot products per row, vectorised over k (no
    BLAS call, so safe inside threads).
    """
    m, B = ZT.shape
    k = A.shape[1]
    if blas:
        for c in range(m):
            for r in range(B):
                ZT[c, r] = b[c]
        gemm(N, T, 1.0, WT, A, 1.0, ZT)
    else:
        for r in range(B):
            for c in range(m):
                z = b[c]
                for j in range(k):
                    z += A[r, j] * WT[c, j]
                ZT[c, r] = z


@kernel(helper=True)
def output_layer_T(AT: np.ndarray, WT: np.ndarray, b: np.ndarray, ZT: np.ndarray) -> None:
    """``ZT = (A W + b)^T`` from ``AT = A^T`` (k, B): k axpys per output, vectorised over
    rows (m <= ``SMALL_M``), or one GEMM."""
    m, B = ZT.shape
    k = AT.shape[0]
    for c in range(m):
        for r in range(B):
            ZT[c, r] = b[c]
    if m > SMALL_M:
        gemm(N, N, 1.0, WT, AT, 1.0, ZT)
        return
    for c in range(m):
        for j in range(k):
            wc = WT[c, j]
            for r in range(B):
                ZT[c, r] += wc * AT[j, r]


@kernel(helper=True)
def backward_output(ZT: np.ndarray, WT: np.ndarray, W: np.ndarray, A: np.ndarray,
                    D: np.ndarray) -> None:
    """``D <- (G W^T) * D`` for the layer below the output: G = ZT^T (B, m), W (k, m),
    WT = W^T; A (B, k) is dead and serves as scratch."""
    m, B = ZT.shape
    k = A.shape[1]
    tiny = flush_threshold(D)
    if m <= SMALL_M:
        # K = m is too short for a GEMM to pay off: m axpys per row, vectorised over k
        h = A[0]
        for a in range(B):
            for j in range(k):
                h[j] = ZT[0, a] * WT[0, j]
            for c in range(1, m):
                g = ZT[c, a]
                for j in range(k):
                    h[j] += g * WT[c, j]
            for j in range(k):
                D[a, j] = flush(D[a, j] * h[j], tiny)
    else:
        gemm(T, T, 1.0, ZT, W, 0.0, A)
        for a in range(B):
            for j in range(k):
                D[a, j] = flush(D[a, j] * A[a, j], tiny)


# The output layer and its backward step as kernels call them, through their addresses
# (``fastjac.native``), and where each helper's address sits in the kernels' ``fns``
OUTPUT_LAYER = Native("fused.OUTPUT_LAYER",
                      lambda f: (f[:, ::1], f[:, ::1], f[::1], f[:, ::1], types.boolean), types.none)
BACKWARD_OUTPUT = Native("fused.BACKWARD_OUTPUT", lambda f: (f[:, ::1],) * 5, types.none)
OUTPUT_LAYER_T = Native("fused.OUTPUT_LAYER_T", lambda f: (f[:, ::1],) * 2 + (f[::1], f[:, ::1]),
                        types.none)
LOSS_FN, OUTPUT_FN, BACKWARD_FN, ACTIVATION_FN = range(4)  # in rows_pass's fns (gradient_loops)
LINE_LOSS_FN, LINE_OUTPUT_FN, LINE_ACTIVATION_FN = range(3)  # in line_rows' fns (line_loops)
# the calls, as module globals (a kernel types a global function, not a Python object's attribute)
call_loss, call_activation = losses.ROWS.call, activations.ROWS.call
call_output_layer, call_backward_output = OUTPUT_LAYER.call, BACKWARD_OUTPUT.call
call_output_layer_T, call_activation_line = OUTPUT_LAYER_T.call, activations.LINE.call


Loops = list[tuple[Native, Any]]  # (signature, loop) pairs, in the order of a kernel's fns


def gradient_loops(mode: int, loss: int) -> Loops:
    """The loops ``rows_pass`` (and the curvature kernels) call: loss ``loss``'s row loop,
    ``output_layer``, ``backward_output`` and activation ``mode``'s row loop."""
    return [(losses.ROWS, losses.rows_loop(loss)), (OUTPUT_LAYER, output_layer),
            (BACKWARD_OUTPUT, backward_output), (activations.ROWS, activations.rows_loop(mode))]


def line_loops(mode: int, loss: int) -> Loops:
    """The loops ``line_rows`` calls: loss ``loss``'s row loop, ``output_layer_T`` and
    activation ``mode``'s line loop."""
    return [(losses.ROWS, losses.rows_loop(loss)), (OUTPUT_LAYER_T, output_layer_T),
            (activations.LINE, activations.line_loop(mode))]


# fns by (loops, mode, loss, dtype), once a process
_ADDRESSES: dict[tuple[Any, int, int, np.dtype], NDArray[np.int64]] = {}


def _addresses(loops: Any, mode: int, loss: int, dtype: Any) -> NDArray[np.int64]:
    """The entry points of ``loops(mode, loss)``, each compiled (or loaded from the cache)
    for ``dtype``."""
    key = (loops, mode, loss, np.dtype(dtype))
    fns = _ADDRESSES.get(key)
    if fns is None:
        fns = _ADDRESSES[key] = np.array(
            [native.address(fn, dtype) for native, fn in loops(mode, loss)], dtype=np.int64)
    return fns


def helper_addresses(mode: int, loss: int, dtype: Any) -> NDArray[np.int64]:
    """``rows_pass``'s ``fns`` (4,): the entry points of ``gradient_loops``."""
    return _addresses(gradient_loops, mode, loss, dtype)


def line_addresses(mode: int, loss: int, dtype: Any) -> NDArray[np.int64]:
    """``line_rows``' ``fns`` (3,): the entry points of ``line_loops``."""
    return _addresses(line_loops, mode, loss, dtype)


def first_helper_addresses(mode: int, loss: int, dtype: np.dtype, kernel: Any,
                           args: Callable[[], Sequence[Any]]) -> NDArray[np.int64]:
    """``helper_addresses`` for a call of ``kernel`` with ``args()`` (``fns`` last; built
    only the first time). The first time in a process, if the kernel is not compiled for
    them yet, it is compiled here while, on a cold cache, a helper process compiles the
    loss's loop and the output layer (``precompile.loop_addresses``)."""
    fns = _ADDRESSES.get((gradient_loops, mode, loss, dtype))
    if fns is not None:
        return fns
    from fastjac import precompile  # it imports this module

    sig = tuple(numba.typeof(a) for a in args())
    if sig in kernel.overloads:
        return helper_addresses(mode, loss, dtype)
    return precompile.loop_addresses(mode, loss, dtype, lambda: kernel.compile(sig))


@kernel
def line_products(X: np.ndarray, XT1: np.ndarray, theta: np.ndarray, dtheta: np.ndarray,
                  offs: np.ndarray, sizes: np.ndarray, Wbuf: np.ndarray, ZPT: np.ndarray) -> None:
    """``ZPT = [X W_1 + b_1 | X dW_1 + db_1]^T`` (2 n_1, N), one GEMM.

    With ``XT1 = [X^T; 1]`` (n_0 + 1, N): no transposed operand and no bias
    pass (the bias is the last column of ``Wbuf = [W_1^T b_1; dW_1^T db_1]``,
    (2 n_1, n_0 + 1)); 1.6x faster at N = 400. With XT1 empty (X too large to
    copy): ``Wbuf = [W_1 | dW_1]`` (n_0, 2 n_1) against X, after a bias pass.
    """
    d, k = sizes[0], sizes[1]
    W1 = view2(theta, offs[0], d, k)
    dW1 = view2(dtheta, offs[0], d, k)
    b1, db1 = view1(theta, offs[1], k), view1(dtheta, offs[1], k)
    if XT1.size:
        for j in range(k):
            for i in range(d):
                Wbuf[j, i] = W1[i, j]
                Wbuf[k + j, i] = dW1[i, j]
            Wbuf[j, d] = b1[j]
            Wbuf[k + j, d] = db1[j]
        gemm(N, N, 1.0, Wbuf, XT1, 0.0, ZPT)
    else:
        for i in range(d):
            for j in range(k):
                Wbuf[i, j] = W1[i, j]
                Wbuf[i, k + j] = dW1[i, j]
        for j in range(k):
            bj = b1[j]
            dbj = db1[j]
            for a in range(X.shape[0]):
                ZPT[j, a] = bj
                ZPT[k + j, a] = dbj
        gemm(T, T, 1.0, Wbuf, X, 1.0, ZPT)


@inline
def last_weights_T(theta: np.ndarray, offs: np.ndarray, sizes: np.ndarray,
                   work: np.ndarray) -> np.ndarray:
    """``W_L^T`` (m, n_{L-1}), copied into the end of the scratch ``work`` (``scratch_layout``)
    by a plain loop (no allocation in the kernel; Numba's generic
    ``np.ascontiguousarray`` costs about 1000 lines of LLVM IR in every kernel)."""
    L = sizes.shape[0] - 1
    n, m = sizes[L - 1], sizes[L]
    W = view2(theta, offs[2 * L - 2], n, m)
    WT = view2(work, work.size - m * n, m, n)
    for i in range(n):
        for j in range(m):
            WT[j, i] = W[i, j]
    return WT


@inline
def forward_block(Xb: np.ndarray, theta: np.ndarray, offs: np.ndarray, sizes: np.ndarray,
                  acts: np.ndarray, block: int, hoffs: np.ndarray, work: np.ndarray,
                  WLT: np.ndarray, bL: np.ndarray, with_slope: bool, fns: np.ndarray) -> np.ndarray:
    """The forward pass of a block of rows Xb (B, n_0): hidden layer l's activations
    A_l (B, n_l) at ``work[hoffs[l]:]``, its slopes f'(Z_l) after them (if
    ``with_slope``), the logits transposed (m, B) at ``work[hoffs[L]:]``; returns
    A_{L-1} (Xb itself for L = 1). ``fns``: ``helper_addresses``.
    """
    L = sizes.shape[0] - 1
    B = Xb.shape[0]
    Aprev = Xb
    for l in range(1, L):
        n = sizes[l]
        o = hoffs[l]
        A = view2(work, o, B, n)
        D = view2(work, o + block * n, B, n)
        W = view2(theta, offs[2 * l - 2], sizes[l - 1], n)
        gemm(N, N, 1.0, Aprev, W, 0.0, A)
        call_activation(fns[ACTIVATION_FN],
                        (acts[l - 1], A, view1(theta, offs[2 * l - 1], n), D, with_slope))
        Aprev = A
    m = sizes[L]
    o = hoffs[L]
    call_output_layer(fns[OUTPUT_FN], (Aprev, WLT, bL, view2(work, o, m, B), m > SMALL_M))
    return Aprev


# ---------------------------------------------------------------- the kernels of one network kind


class Kernels(NamedTuple):
    """The kernels for one activation ``mode``, one loss and ``outputs`` (``kernels``)."""

    rows_pass: Any
    line_rows: Any


def kernels(mode: int, loss: int, outputs: bool = False) -> Kernels:
    """The fused kernels for hidden activation ``mode`` (a code, or ``MIXED``) and loss code
    ``loss``; with ``outputs``, the ``rows_pass`` that writes the outputs F (``predict``).

    The gradient's ``rows_pass`` is one kernel for every activation and loss:
    it calls their loops through ``fns`` (``helper_addresses``). Each kernel
    compiles once per dtype, and every depth and width reuses it (Numba's
    cache, which keys closures by the values they capture, serves them to
    later processes).
    """
    return Kernels(_rows_pass(int(loss) if outputs else NO_OUTPUTS), _line_rows())


NO_OUTPUTS = -1


@functools.cache
def _rows_pass(outputs: int) -> Any:
    """``rows_pass``; for ``outputs`` a loss code, the kernel that writes that loss's outputs
    instead of computing the loss (a constant: a gradient pass does not compile the
    outputs, about 1.4 s of a cold first gradient, measured)."""
    OUTPUTS, LOSS = outputs != NO_OUTPUTS, outputs

    @kernel
    def rows_pass(X: np.ndarray, Y: np.ndarray, w: np.ndarray, theta: np.ndarray,
                  offs: np.ndarray, sizes: np.ndarray, acts: np.ndarray, lo: int, hi: int,
                  block: int, hoffs: np.ndarray, work: np.ndarray, g: np.ndarray,
                  with_grad: bool, denom: float, out: np.ndarray, classes: np.ndarray,
                  fns: np.ndarray) -> float:
        """One thread's pass over rows ``[lo, hi)``: the loss sum ``sum_r w_r l_r``, the
        gradient terms added to ``g``, the outputs or classes written.

        X (N, n_0), Y (N, m) (or no rows: no loss, only outputs or classes), w
        (N,) or empty (unit weights); theta, offs (``layout_offsets``), sizes,
        acts (L - 1 codes, read by the MIXED activation): the network; work and
        hoffs (``scratch_layout(block, sizes)``): scratch; g (len(theta),)
        accumulates the gradient (divided by ``denom``) if ``with_grad``; out
        (N, m) gets the outputs F, and no loss is computed, in the kernel made
        with ``outputs`` (else it is ignored); classes (N,) int64, if not empty,
        gets the argmax of each row's logits.
        """
        L = sizes.shape[0] - 1
        m = sizes[L]
        n_in = sizes[L - 1]
        WL = view2(theta, offs[2 * L - 2], n_in, m)
        bL = view1(theta, offs[2 * L - 1], m)
        WLT = last_weights_T(theta, offs, sizes, work)
        tiny = flush_threshold(work)
        total = 0.0
        for start in range(lo, hi, block):
            stop = min(start + block, hi)
            B = stop - start
            Xb = row_range(X, start, stop)
            Aprev = forward_block(Xb, theta, offs, sizes, acts, block, hoffs, work, WLT, bL,
                                  with_grad, fns)
            o = hoffs[L]
            ZT = view2(work, o, m, B)
            rows = view2(work, o + m * block, 4, block)
            if classes.size:
                argmax_rows(ZT, view1(classes, start, B))
            if OUTPUTS:  # a constant: only the kernel made for outputs compiles them
                loss_outputs(LOSS, ZT, row_range(out, start, stop), rows)
                continue
            if Y.shape[0] == 0:  # classes only
                continue
            total += call_loss(fns[LOSS_FN], (ZT, row_range(Y, start, stop), w[start:stop],
                                              with_grad, denom, rows))
            if not with_grad:
                continue
            # backward: ZT holds G_L^T
            gemm(T, T, 1.0, Aprev, ZT, 1.0, view2(g, offs[2 * L - 2], n_in, m))
            gb = view1(g, offs[2 * L - 1], m)
            for c in range(m):
                for r in range(B):
                    gb[c] += ZT[c, r]
            Gnext = view2(work, 0, 0, 1)  # G_{l+1} below the output layer
            for l in range(L - 1, 0, -1):
                n = sizes[l]
                p = sizes[l - 1]
                o = hoffs[l]
                A = view2(work, o, B, n)  # dead: scratch for G_{l+1} W_{l+1}^T
                G = view2(work, o + block * n, B, n)  # f'(Z_l), then G_l
                if l == L - 1:
                    call_backward_output(fns[BACKWARD_FN], (ZT, WLT, WL, A, G))
                else:
                    W = view2(theta, offs[2 * l], n, sizes[l + 1])
                    gemm(N, T, 1.0, Gnext, W, 0.0, A)
                    for a in range(B):
                        for j in range(n):
                            G[a, j] = flush(G[a, j] * A[a, j], tiny)
                gb = view1(g, offs[2 * l - 1], n)
                for a in range(B):
                    for j in range(n):
                        gb[j] += G[a, j]
                Ap = Xb if l == 1 else view2(work, hoffs[l - 1], B, p)
                gemm(T, N, 1.0, Ap, G, 1.0, view2(g, offs[2 * l - 2], p, n))
                Gnext = G
        return total

    return rows_pass


@functools.cache
def _line_rows() -> Any:
    """``line_rows``, one kernel for every activation and loss: it calls their loops through
    ``fns`` (``line_addresses``)."""

    @kernel
    def line_rows(ZPT: np.ndarray, Y: np.ndarray, w: np.ndarray, thetas: np.ndarray,
                  WLTs: np.ndarray, ts: np.ndarray, K: int, offs: np.ndarray, sizes: np.ndarray,
                  acts: np.ndarray, lo: int, hi: int, block: int, hoffs: np.ndarray,
                  work: np.ndarray, ones: np.ndarray, out: np.ndarray, fns: np.ndarray) -> None:
        """``out[q]`` = loss sum ``sum_r w_r l_r`` of rows ``[lo, hi)`` at step ``ts[q]``, q < K.

        ``ZPT = [X W_1 + b_1 | X dW_1 + db_1]^T`` (2 n_1, N): the first layer's
        pre-activation at t is ``ZPT[:n_1] + t ZPT[n_1:]`` (transposed). The
        layers above take their parameters at step q from ``thetas[q]`` and
        ``WLTs[q]`` (W_L^T). Each block of rows is evaluated at all K steps
        while in cache; every array is transposed (rows last) so that loops
        vectorise over rows. ``ones``: (block,) ones.
        """
        L = sizes.shape[0] - 1
        m = sizes[L]
        n1 = sizes[1]
        for q in range(K):
            out[q] = 0.0
        for start in range(lo, hi, block):
            stop = min(start + block, hi)
            B = stop - start
            o = hoffs[L]
            ZT = view2(work, o, m, B)
            rows = view2(work, o + m * block, 4, block)
            for q in range(K):
                t = ts[q]
                theta = thetas[q]
                if L == 1:  # the first layer gives the logits
                    for c in range(m):
                        for r in range(B):
                            ZT[c, r] = ZPT[c, start + r] + t * ZPT[n1 + c, start + r]
                else:
                    AT = view2(work, 0, n1, B)
                    for j in range(n1):
                        call_activation_line(fns[LINE_ACTIVATION_FN], (
                            acts[0], ZPT[j, start:stop], ZPT[n1 + j, start:stop], t, AT[j]))
                    for l in range(2, L):
                        n = sizes[l]
                        o = hoffs[l]
                        ZlT = view2(work, o, n, B)
                        W = view2(theta, offs[2 * l - 2], sizes[l - 1], n)
                        gemm(T, N, 1.0, W, AT, 0.0, ZlT)
                        b = view1(theta, offs[2 * l - 1], n)
                        for j in range(n):  # f(z + b_j), as f(z + b_j * 1)
                            call_activation_line(fns[LINE_ACTIVATION_FN],
                                                 (acts[l - 1], ZlT[j], ones[:B], b[j], ZlT[j]))
                        AT = ZlT
                    call_output_layer_T(fns[LINE_OUTPUT_FN],
                                        (AT, WLTs[q], view1(theta, offs[2 * L - 1], m), ZT))
                out[q] += call_loss(fns[LINE_LOSS_FN], (ZT, row_range(Y, start, stop),
                                                        w[start:stop], NO_GRAD, 1.0, rows))

    return line_rows


# ---------------------------------------------------------------- threads

class _Worker(threading.Thread):
    """A persistent daemon thread that runs one chunk at a time for ``run_chunks``
    (a handoff costs about 14 us here, against 47 us through ``concurrent.futures``).

    Each chunk comes with its call's number, and its result goes back with it: a call
    that ended before collecting its chunks (Ctrl-C, or an error in its own chunk)
    leaves results behind, which the next call's ``result`` skips.
    """

    def __init__(self) -> None:
        super().__init__(name="fastjac-chunk", daemon=True)
        self.inbox: queue.SimpleQueue[tuple[Callable[[int], Any], int, int]] = queue.SimpleQueue()
        self.done = threading.Semaphore(0)
        self.last: tuple[int, Any, BaseException | None] = (-1, None, None)
        self.start()

    def run(self) -> None:
        while True:
            fn, c, job = self.inbox.get()
            try:
                self.last = (job, fn(c), None)
            except BaseException as exc:  # handed to the caller
                self.last = (job, None, exc)
            self.done.release()

    def result(self, job: int) -> Any:
        """This worker's chunk of call ``job`` (waits for it; skips results left by earlier
        calls)."""
        while True:
            self.done.acquire()
            done, value, error = self.last
            if done == job:
                break
        if error is not None:
            raise error
        return value


_WORKERS: list[_Worker] = []
_BUSY = threading.Lock()  # held by the call that uses the workers
_JOBS = itertools.count()  # a number for each call that uses them
R = TypeVar("R")


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: the workers are gone (handing
    them a chunk would wait forever), and no call holds them."""
    global _BUSY
    _WORKERS.clear()
    _BUSY = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_chunks(fn: Callable[[int], R], nchunks: int, threaded: bool = True,
               one_blas_thread: bool = False) -> list[R]:
    """``[fn(0), ..., fn(nchunks - 1)]``: chunk 0 on this thread, the others on persistent
    worker threads (the kernels release the GIL); results in chunk order.

    With ``threaded=False`` (work too small to pay for a handoff), or if another
    call holds the workers (calls from several threads at once), the chunks run
    one after the other on this thread: each chunk computes the same numbers
    wherever it runs, so the results are the same bits. ``one_blas_thread``:
    BLAS runs at one thread meanwhile (``blas.single_threaded``; the plan asks
    for it when a chunk's GEMMs are large enough for BLAS to thread them,
    whose rounding can depend on its thread count).
    """
    serial = nchunks == 1 or not threaded
    if serial and not one_blas_thread:
        return [fn(c) for c in range(nchunks)]
    with blas.single_threaded() if one_blas_thread else contextlib.nullcontext():
        if serial or not _BUSY.acquire(blocking=False):
            return [fn(c) for c in range(nchunks)]
        try:
            while len(_WORKERS) < nchunks - 1:
                _WORKERS.append(_Worker())
            job = next(_JOBS)
            for c in range(1, nchunks):
                _WORKERS[c - 1].inbox.put((fn, c, job))
            first = fn(0)
            return [first] + [_WORKERS[c - 1].result(job) for c in range(1, nchunks)]
        finally:
            _BUSY.release()


# ---------------------------------------------------------------- plans

def layer_products(sizes: Sizes) -> list[int]:
    """``n_{l-1} n_l`` for each layer: the GEMM sizes per row."""
    return [int(sizes[i]) * int(sizes[i + 1]) for i in range(len(sizes) - 1)]


class Plan(NamedTuple):
    """How a pass over N rows runs: row chunks (one thread each) and rows per block."""

    nchunks: int
    block: int


def plan(N: int, sizes: Sizes) -> Plan:
    """The ``Plan`` for a pass over N rows of a network of widths ``sizes``.

    * small problems (``N sum(n_{l-1} n_l) < PARALLEL_MIN_ELEMENTS``) or one
      thread: serial, blocks of up to ``BLOCK_ROWS`` rows;
    * otherwise one contiguous row chunk per thread (``numba.get_num_threads()``),
      partial sums added in chunk order, in blocks of up to ``CHUNK_BLOCK_ROWS``
      rows whose scratch stays below ``CHUNK_SCRATCH_BYTES``; BLAS runs at one
      thread meanwhile (``blas.single_threaded``, see ``one_blas_thread``);
      below ``THREAD_MIN_ELEMENTS`` the chunks run one after the other on the
      calling thread (the same bits, no handoff);
    * where BLAS's threads cannot be controlled (``blas.threads_controllable``),
      blocks are also capped so that every GEMM stays below
      ``BLAS_THREAD_MIN_MNK`` multiply-adds (OpenBLAS then runs it on the
      chunk's own thread), unless that leaves fewer than ``MIN_CHUNK_BLOCK_ROWS``
      rows a block: then one thread walks blocks of ``WIDE_BLOCK_ROWS`` rows and
      BLAS threads each GEMM.
    """
    products = layer_products(sizes)
    threads = numba.get_num_threads()
    if threads == 1 or N * sum(products) < PARALLEL_MIN_ELEMENTS:
        return Plan(1, max(1, min(N, BLOCK_ROWS)))
    nchunks = max(1, min(threads, N))
    row_bytes = 8 * (2 * sum(int(n) for n in sizes[1:-1]) + int(sizes[-1]) + 4)
    block = min(CHUNK_BLOCK_ROWS, CHUNK_SCRATCH_BYTES // row_bytes, -(-N // nchunks))
    if one_blas_thread(nchunks, block, products) and not blas.threads_controllable():
        cap = (BLAS_THREAD_MIN_MNK - 1) // max(products)
        if cap < MIN_CHUNK_BLOCK_ROWS:
            return Plan(1, max(1, min(N, WIDE_BLOCK_ROWS)))
        block = min(block, cap)
    return Plan(nchunks, max(1, block))


def one_blas_thread(nchunks: int, block: int, products: Sequence[int]) -> bool:
    """Whether chunks of ``block`` rows with GEMMs of ``products`` multiply-adds per row
    must hold BLAS at one thread: several chunks, and a GEMM from ``BLAS_THREAD_MIN_MNK``
    multiply-adds (where OpenBLAS starts threading)."""
    return nchunks > 1 and bool(products) and block * max(products) >= BLAS_THREAD_MIN_MNK


_NO_INT = np.empty(0, dtype=np.int64)
# read-only empty arrays of each float dtype: the kernels' "none" for optional arguments
_EMPTY = {np.dtype(t): (np.empty(0, dtype=t), np.empty((0, 0), dtype=t))
          for t in (np.float32, np.float64)}


_NO_FNS = np.zeros(4, dtype=np.int64)  # typed as ``fns``: to compile a kernel before calling it


def _empty(dtype: np.dtype, ndim: int = 1) -> np.ndarray:
    return np.empty((0,) * ndim, dtype=dtype)


class NetworkPass:
    """Fused passes of one network over the N rows of one X: the plan, the parameter and
    scratch layouts and the kernel, worked out once; each call allocates its own buffers
    (calls from several threads at once are safe)."""

    def __init__(self, N: int, sizes: np.ndarray, mode: int, acts: np.ndarray, loss: int, *,
                 nchunks: int | None = None, block: int | None = None) -> None:
        auto = plan(N, sizes)
        self.N, self.sizes, self.acts, self.mode, self.loss = N, sizes, acts, mode, loss
        self.nchunks = auto.nchunks if nchunks is None else nchunks
        self.block = auto.block if block is None else block
        self.offs = layout_offsets(sizes)
        self.hoffs, self.scratch = scratch_layout(self.block, sizes)
        self.rows_pass = kernels(mode, loss).rows_pass
        self.outputs_pass = kernels(mode, loss, outputs=True).rows_pass
        products = layer_products(sizes)
        self.threaded = N * sum(products) >= THREAD_MIN_ELEMENTS
        self.one_blas_thread = one_blas_thread(self.nchunks, self.block, products)
        self.bounds = [(c * N // self.nchunks, (c + 1) * N // self.nchunks)
                       for c in range(self.nchunks)]

    def helpers(self, dtype: np.dtype) -> NDArray[np.int64]:
        """The kernels' ``fns`` for this network and ``dtype`` (``helper_addresses``)."""
        return helper_addresses(self.mode, self.loss, dtype)

    def __call__(self, X: np.ndarray, Y: np.ndarray | None, w: np.ndarray | None,
                 theta: np.ndarray, *, with_grad: bool, denom: float = 1.0,
                 outputs: bool = False, classes: NDArray[np.int64] | None = None
                 ) -> tuple[float, np.ndarray | None, np.ndarray | None]:
        """``(loss sum, gradient (len(theta),) or None, outputs (N, m) or None)``; see
        ``network_pass``."""
        if Y is None and with_grad:
            raise ValueError("a gradient needs the targets Y")
        N, nchunks, dtype = self.N, self.nchunks, X.dtype
        denom = float(denom)  # the kernel's type for it, whatever the caller's number
        none1, none2 = _EMPTY[dtype]
        G = np.zeros((nchunks, theta.size), dtype=dtype) if with_grad else none2
        work = np.empty((nchunks, self.scratch), dtype=dtype)
        out = np.empty((N, int(self.sizes[-1])), dtype=dtype) if outputs else none2
        Yc = none2 if Y is None else Y
        wc = none1 if w is None else w
        cls = _NO_INT if classes is None else classes
        rows_pass = self.outputs_pass if outputs else self.rows_pass
        head = (X, Yc, wc, theta, self.offs, self.sizes, self.acts)

        def args(c: int, lo: int, hi: int, fns: NDArray[np.int64]) -> tuple[Any, ...]:
            return head + (lo, hi, self.block, self.hoffs, work[c],
                           G[c] if with_grad else none1, with_grad, denom, out, cls, fns)

        fns = first_helper_addresses(self.mode, self.loss, dtype, rows_pass,
                                     lambda: args(0, 0, N, _NO_FNS))
        calls = [args(c, lo, hi, fns) for c, (lo, hi) in enumerate(self.bounds)]

        def chunk(c: int) -> float:
            return rows_pass(*calls[c])

        losses = run_chunks(chunk, nchunks, self.threaded, self.one_blas_thread)
        total = losses[0]
        for c in range(1, nchunks):
            total += losses[c]
        if with_grad:
            for c in range(1, nchunks):
                np.add(G[0], G[c], out=G[0])
        return total, (G[0] if with_grad else None), (out if outputs else None)


def network_pass(X: np.ndarray, Y: np.ndarray | None, w: np.ndarray | None, theta: np.ndarray,
                 sizes: np.ndarray, mode: int, acts: np.ndarray, loss: int, *, with_grad: bool,
                 denom: float = 1.0, outputs: bool = False, classes: NDArray[np.int64] | None = None,
                 nchunks: int | None = None, block: int | None = None
                 ) -> tuple[float, np.ndarray | None, np.ndarray | None]:
    """One fused pass: ``(loss sum, gradient (len(theta),) or None, outputs (N, m) or None)``.

    Arrays validated, C-contiguous, X's dtype; Y (N, m), or None for no loss (only
    the outputs or the classes); w (N,) or None; the gradient is divided by
    ``denom`` (the loss sum is not).
    ``nchunks`` and ``block`` override ``plan`` (tests use them to force a path).
    """
    run = NetworkPass(X.shape[0], sizes, mode, acts, loss, nchunks=nchunks, block=block)
    return run(X, Y, w, theta, with_grad=with_grad, denom=denom, outputs=outputs, classes=classes)


def precompute_line(N: int, sizes: Sizes) -> bool:
    """Whether a line search should compute ``[X W_1 + b_1 | X dW_1 + db_1]`` once.

    Yes when the input is wide (``LINESEARCH_MIN_INPUTS``: each trial then
    skips an X W_1 product) or when those 2 N n_1 values are few enough
    (``LINESEARCH_MAX_HELD``); otherwise each trial is one fused loss
    evaluation, without N-row memory.
    """
    return int(sizes[0]) >= LINESEARCH_MIN_INPUTS or 2 * N * int(sizes[1]) <= LINESEARCH_MAX_HELD


class LineLoss:
    """The loss sum along ``theta + t dtheta`` with the first layer's products done once.

    ``ZPT = [X W_1 + b_1 | X dW_1 + db_1]^T`` (2 n_1, N) is one GEMM on
    ``[X^T; 1]`` (``move_to`` recomputes it for another line, reusing every
    buffer); ``sums(ts)`` then gives the loss sums at the steps ``ts``
    (batched: each block of rows is evaluated at all of them while in cache),
    costing the layers above the first instead of a new X W_1 product.
    The parameters at t are ``theta + t dtheta`` rounded as numpy's
    ``x + t * dx`` (``update_blocks``), t in the parameters' dtype.
    """

    MAX_BATCH = 16  # trials per kernel pass at most (bounds the per-trial scratch)

    def __init__(self, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None, sizes: np.ndarray,
                 mode: int, acts: np.ndarray, loss: int, theta: np.ndarray, dtheta: np.ndarray, *,
                 nchunks: int | None = None, block: int | None = None) -> None:
        N, d = X.shape
        k, m = int(sizes[1]), int(sizes[-1])
        self.X, self.Y, self.sizes, self.acts = X, Y, sizes, acts
        self.offs = layout_offsets(sizes)
        self.line_rows = kernels(mode, loss).line_rows
        self.fns = line_addresses(mode, loss, X.dtype)
        self.w = w if w is not None else _empty(X.dtype)
        if X.size <= LINESEARCH_MAX_HELD:
            self.XT1 = np.ones((d + 1, N), dtype=X.dtype)
            self.XT1[:d] = X.T
            self.Wbuf = np.empty((2 * k, d + 1), dtype=X.dtype)
        else:  # no copy of a large X
            self.XT1 = _empty(X.dtype, 2)
            self.Wbuf = np.empty((d, 2 * k), dtype=X.dtype)
        self.ZPT = np.empty((2 * k, N), dtype=X.dtype)
        width = int(sum(sizes[1:-1])) + 4 * m
        threads = 1 if N * width < LINE_PARALLEL_MIN_ELEMENTS else numba.get_num_threads()
        self.threaded = N * width >= LINE_THREAD_MIN_ELEMENTS
        self.nchunks = max(1, min(threads, N)) if nchunks is None else nchunks
        self.block = max(1, min(BLOCK_ROWS, -(-N // self.nchunks))) if block is None else block
        # the trials' GEMMs: layers 2..L-1, and the output layer's where it is one
        # (``output_layer_T``: m > SMALL_M); the first layer's product is held in ZPT
        products = layer_products(sizes)
        deeper = products[1:-1] + (products[-1:] if len(products) > 1 and m > SMALL_M else [])
        if (block is None and one_blas_thread(self.nchunks, self.block, deeper)
                and not blas.threads_controllable()):
            self.block = max(1, min(self.block, (BLAS_THREAD_MIN_MNK - 1) // max(deeper)))
        self.one_blas_thread = one_blas_thread(self.nchunks, self.block, deeper)
        self.hoffs, size = scratch_layout(self.block, sizes)
        self.work = np.empty((self.nchunks, size), dtype=X.dtype)
        self.ones = np.ones(self.block, dtype=X.dtype)
        self.thetas = np.empty((self.MAX_BATCH, theta.size), dtype=X.dtype)
        self.WLTs = np.empty((self.MAX_BATCH, m, int(sizes[-2])), dtype=X.dtype)
        self.ts = np.empty(self.MAX_BATCH, dtype=X.dtype)
        self.out = np.empty((self.nchunks, self.MAX_BATCH))
        self.move_to(theta, dtheta)

    def move_to(self, theta: np.ndarray, dtheta: np.ndarray) -> LineLoss:
        """Put the line through ``theta`` along ``dtheta`` (flat, X's dtype)."""
        self.theta, self.dtheta = theta, dtheta
        line_products(self.X, self.XT1, theta, dtheta, self.offs, self.sizes, self.Wbuf, self.ZPT)
        return self

    def sums(self, ts: Sequence[float]) -> list[float]:
        """The loss sums ``sum_r w_r l_r`` at the steps ``ts`` (at most ``MAX_BATCH``)."""
        K = len(ts)
        sizes = self.sizes
        L = len(sizes) - 1
        self.ts[:K] = ts  # rounded to the parameters' dtype, as numpy rounds a Python float
        np.multiply(self.ts[:K, None], self.dtheta, out=self.thetas[:K])
        np.add(self.theta, self.thetas[:K], out=self.thetas[:K])
        n_in, m = int(sizes[-2]), int(sizes[-1])
        o = int(self.offs[2 * L - 2])
        self.WLTs[:K] = self.thetas[:K, o:o + n_in * m].reshape(K, n_in, m).transpose(0, 2, 1)
        rows = self.X.shape[0]
        nchunks = self.nchunks

        def chunk(c: int) -> None:
            self.line_rows(self.ZPT, self.Y, self.w, self.thetas, self.WLTs, self.ts, K,
                           self.offs, sizes, self.acts, c * rows // nchunks,
                           (c + 1) * rows // nchunks, self.block, self.hoffs, self.work[c],
                           self.ones, self.out[c], self.fns)

        run_chunks(chunk, nchunks, self.threaded, self.one_blas_thread)
        totals = []
        for q in range(K):
            total = self.out[0, q]
            for c in range(1, nchunks):  # chunk order
                total += self.out[c, q]
            totals.append(float(total))
        return totals
