"""Fused Numba kernels for the lecture's network: forward and backward in one pass, no Jacobians.

The network is ``Q = softmax(logit(X W1 + b1) W2 + b2)`` row by row, with the
loss ``-sum(Y * log Q) / N`` taken through log-softmax (finite for any finite
logits). With ``A = logit(X W1 + b1)`` the backward pass is the lecture's
chain rule contracted by hand::

    G2 = (Q * rowsum(Y) - Y) / N        # D_Q cross_entropy * D softmax, (N, m)
    dW2 = A^T G2,  db2 = sum_rows G2
    G1 = (G2 W2^T) * A (1 - A)          # * D logit, (N, k)
    dW1 = X^T G1,  db1 = sum_rows G1

How it is made fast (each choice measured on the 2-core development machine;
the thresholds and their measurements are in ``fastjac._jit``):

* **Row blocks.** Rows are processed in blocks of at most ``block`` rows; for
  each block the forward and the backward pass run back to back while the
  block of X is in cache. Scratch is ``block * (2k + m)`` values per thread;
  no array has N rows (a call at N = 400,000, d, k, m = 30, 20, 2 allocates
  0.2 MB; at N = 40,000, d, k, m = 256, 512, 10 it allocates 5.4 MB).
* **BLAS on blocks.** X W1, A W2, A^T G2 and X^T G1 of a block are BLAS GEMMs
  (Numba's own entry point, i.e. scipy's BLAS), with ``beta = 1`` so the
  gradients accumulate in place. Hand-written loops for them were 5x slower
  at d, k = 30, 20. G2 W2^T has only m terms per entry: loops up to
  ``SMALL_M``, a GEMM above.
* **A vectorisable exp and log.** ``exp_nonpos`` is a table-and-polynomial exp that
  LLVM vectorises, where libm's ``exp`` is a scalar call: logistic plus
  derivative cost about 2 ns per element instead of 6-8 ns. Its scale 2^(n/64)
  comes from one integer add on a table's bits (0.9 ns per exp, from 1.2 ns
  with two exponent-bit multiplies; the same bits). Arguments below -745.2 give an
  exact 0 without computing an underflow (a microcode assist, 6x slower).
  ``log_pos`` (fdlibm's polynomial, 1.4 ns against libm's 6.7 ns) does the
  same for the softmax's log-sum: the softmax of 400 rows of 2 classes went
  from 11.5 us to 4 us with it and with its loops running over rows.
* **Threads, chosen from the sizes** (``plan``): small problems run serially;
  larger narrow ones split the rows into one contiguous chunk per Numba
  thread, each with its own scratch and partial sums, with blocks small
  enough for BLAS to run their GEMMs single-threaded (no BLAS threads inside
  Numba threads); wide layers (``d k >= WIDE_MIN_ELEMENTS``) walk the blocks
  in one thread and let BLAS thread each large GEMM. Mixing the two (Numba
  threads for the elementwise work between BLAS-threaded GEMMs) was 2-10x
  slower: the two thread pools spin against each other on 2 cores.
* **Determinism.** Chunk partial sums are added in chunk order and blocks in
  row order, so for a fixed number of threads repeated calls are bitwise
  identical; the result may change with the number of threads.

The line search (``LineLoss``) computes ``[X W1 + b1 | X dW1 + db1]^T`` once;
each trial step is then elementwise work and m axpys per output, without
BLAS, so its row chunks run in parallel at any width, and ``backtrack`` runs
the whole Armijo loop in one kernel call. Its arrays are transposed (rows
last) so that every loop, softmax included, vectorises over rows: with m = 2
a loop over the m classes of one row cannot.

The line search's kernels live here too, not in a module of their own: they
call this module's exp, log and softmax, and Numba's on-disk cache is
invalidated only by changes to the calling function's own file, so a
separate file could keep running a stale copy of an edited kernel.

Kernels only loop (arrays in, arrays or ``out`` out); the wrappers at the end
take validated, C-contiguous arrays of one dtype (float32 or float64) and
allocate all scratch, so ``tracemalloc`` sees every byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np
from numba import prange, types
from numba.core import cgutils
from numba.core.typing.templates import Signature
from numba.extending import intrinsic as _numba_intrinsic
from numpy.typing import NDArray

from fastjac._jit import (
    BLAS_SMALL_MNK,
    BLOCK_ROWS,
    CHUNK_BLOCK_ROWS,
    FASTMATH_CONTRACT,
    LINE_PARALLEL_MIN_ELEMENTS,
    LINESEARCH_MAX_HELD,
    LINESEARCH_MIN_INPUTS,
    PARALLEL_MIN_ELEMENTS,
    WIDE_BLOCK_ROWS,
    WIDE_MIN_ELEMENTS,
    kernel,
)

# numba's stubs type a call of an ``@intrinsic`` as a call from Python (which raises,
# so a ``Never`` result) with the typing function's parameters, ``typingctx``
# included; in a kernel it takes the other arguments and returns a value. So the
# intrinsics below are typed ``Any``, as ``@kernel``'s dispatchers are.
intrinsic: Callable[[Callable[..., Any]], Any] = _numba_intrinsic

# ---------------------------------------------------------------- scalar helpers


@intrinsic
def _float64_from_bits(typingctx: Any, bits: types.Type) -> tuple[Signature, Callable[..., Any]]:
    """Reinterpret an int64 as the float64 with the same bits (free; vectorises)."""

    def codegen(context: Any, builder: Any, signature: Signature, args: Sequence[Any]) -> Any:
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@intrinsic
def _int64_from_bits(typingctx: Any, x: types.Type) -> tuple[Signature, Callable[..., Any]]:
    """Reinterpret a float64 as the int64 with the same bits (free; vectorises)."""

    def codegen(context: Any, builder: Any, signature: Signature, args: Sequence[Any]) -> Any:
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


# exp(x) = 2^q 2^(j/64) exp(r): n = round(64 x / ln2) = 64 q + j, r = x - n ln2/64,
# |r| <= ln2/128. ln2/64 is split so that n * _LN2_64_HI is exact for |n| < 2^29
# (a 24-bit high part; Cody and Waite).
_N_PER_LN2 = 92.33248261689366
_LN2_64_HI = 0.010830424726009369
_LN2_64_LO = -2.9760223436661086e-11
# 2^(j/64), j = 0..63, correctly rounded (from 80-bit long double; tests check them)
_EXP2_J64 = np.array([
    1.0, 1.0108892860517005, 1.0218971486541166, 1.0330248790212284,
    1.0442737824274138, 1.0556451783605572, 1.0671404006768237, 1.0787607977571199,
    1.0905077326652577, 1.102382583307841, 1.1143867425958924, 1.1265216186082418,
    1.1387886347566916, 1.1511892299529827, 1.1637248587775775, 1.1763969916502812,
    1.189207115002721, 1.202156731452703, 1.215247359980469, 1.22848053610687,
    1.241857812073484, 1.255380757024691, 1.2690509571917332, 1.2828700160787783,
    1.2968395546510096, 1.3109612115247644, 1.3252366431597413, 1.339667524053303,
    1.3542555469368927, 1.3690024229745905, 1.383909881963832, 1.3989796725383112,
    1.4142135623730951, 1.42961333839197, 1.4451808069770467, 1.460917794180647,
    1.4768261459394993, 1.4929077282912648, 1.5091644275934228, 1.5255981507445384,
    1.5422108254079407, 1.559004400237837, 1.5759808451078865, 1.593142151342267,
    1.6104903319492543, 1.6280274218573478, 1.645755478153965, 1.6636765803267364,
    1.681792830507429, 1.7001063537185235, 1.718619298122478, 1.7373338352737062,
    1.7562521603732995, 1.7753764925265212, 1.7947090750031072, 1.8142521755003989,
    1.8340080864093424, 1.8539791250833855, 1.8741676341103, 1.8945759815869656,
    1.9152065613971474, 1.9360617934922943, 1.9571441241754002, 1.978456026387951,
])


# The bits of 2^(j/64) less j << 46: adding n << 46 (n = 64 q + j) then adds q to
# the exponent, so 2^(n/64) is one integer add and one load (Arm's optimized-routines).
_EXP2_J64_BITS = _EXP2_J64.view(np.int64) - (np.arange(64, dtype=np.int64) << 46)
_SHIFT = 6755399441055744.0  # 1.5 * 2^52: x + _SHIFT rounds x to an integer, in the low bits
_TWO_M512 = 2.0 ** -512


# Reassociation would fold the two-constant reduction into one and lose ~10
# bits at |x| ~ 700, so this function gets only FMA contraction.
@kernel(fastmath=FASTMATH_CONTRACT)
def exp_nonpos(x: float) -> float:
    """``exp(x)`` for ``x <= 0`` in float64, within 2.1 ulp; NaN gives NaN, -inf gives 0.

    ``x = (64 q + j) ln2/64 + r`` with ``|r| <= ln2/128``: ``exp(r)`` by its
    degree-5 Taylor polynomial (truncation < 4e-17), times ``2^q 2^(j/64)``
    built from a table's bits, with n = 64 q + j read from the low bits of
    ``x 64/ln2 + 1.5 2^52``. Below -708 (subnormal results) the scale is
    2^512 too large and the product is multiplied by 2^-512, so the one
    rounding is the subnormal's. No calls, only selects and a gather: loops
    over it vectorise (about 0.9 ns per element, against 6-8 ns for libm's
    scalar exp).
    """
    # Below -745.2, exp(x) rounds to 0: return an exact 0 instead of computing
    # an underflow, which costs a microcode assist (6x slower per element).
    underflow = x < -745.2
    if underflow:
        x = 0.0
    kd = x * _N_PER_LN2 + _SHIFT
    n = kd - _SHIFT
    r = (x - n * _LN2_64_HI) - n * _LN2_64_LO
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120)))))
    ni = _int64_from_bits(kd)  # low 18 bits: n in two's complement (|n| < 2^17)
    tiny = x < -708.0
    if tiny:
        ni += 512 * 64
    e = p * _float64_from_bits(_EXP2_J64_BITS[ni & 63] + (ni << 46))
    if tiny:
        e *= _TWO_M512
    return 0.0 if underflow else e


# fdlibm's e_log.c: log(1 + f) = f - (f^2/2 - s (f^2/2 + R(s^2))), s = f / (2 + f)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
       2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
       1.479819860511658591e-01)


@kernel(fastmath=FASTMATH_CONTRACT)
def log_pos(x: float) -> float:
    """``log(x)`` for normal ``x > 0`` in float64, within 1 ulp; NaN gives NaN, inf gives inf.

    fdlibm's method without its branches: ``x = 2^e (1 + f)`` with
    ``1 + f`` in [sqrt(2)/2, sqrt(2)) read from the bits, then a degree-7
    polynomial in ``s^2``. No calls: loops over it vectorise (libm's ``log``
    is a scalar call, about 10 ns). Zero, negative and subnormal ``x`` are
    outside its domain (the softmax sums it is used on are >= 1).
    """
    special = not (x < np.inf)  # NaN or +inf: returned as they are
    bits = _int64_from_bits(1.0 if special else x)
    # shift the mantissa so that 1 + f lands in [sqrt(2)/2, sqrt(2))
    bits += 0x3FF0000000000000 - 0x3FE6A09E667F3BCD
    e = (bits >> 52) - 1023
    f = _float64_from_bits((bits & 0x000FFFFFFFFFFFFF) + 0x3FE6A09E667F3BCD) - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG[1] + w * (_LG[3] + w * _LG[5]))
    t2 = z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6])))
    hfsq = 0.5 * f * f
    k = np.float64(e)
    r = k * _LN2_HI - ((hfsq - (s * (hfsq + (t1 + t2)) + k * _LN2_LO)) - f)
    return x if special else r


# ---------------------------------------------------------------- BLAS

# Numba's own GEMM entry point (what np.dot calls): scipy's BLAS, resolved at
# run time, so kernels calling it can be cached. Fortran order; see ``gemm``.
# (Typed Any: numba's stubs type calling a numba type as building a signature of
# types; in a kernel this one calls the C function.)
_xxgemm: Any = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char,        # kind ('s'/'d'), transa, transb
    types.intp, types.intp, types.intp,        # m, n, k
    types.voidptr, types.voidptr, types.intp,  # alpha, a, lda
    types.voidptr, types.intp, types.voidptr,  # b, ldb, beta
    types.voidptr, types.intp))                # c, ldc
_NOTRANS = np.int8(ord("n"))
_TRANS = np.int8(ord("t"))


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


@kernel
def gemm(trans_a: bool, trans_b: bool, alpha: float, A: np.ndarray, B: np.ndarray, beta: float,
         C: np.ndarray) -> None:
    """``C = alpha op(A) op(B) + beta C`` for row-major 2-D arrays whose rows are contiguous.

    ``op(A)`` is ``A.T`` when ``trans_a``. A, B and C may be row ranges of
    C-contiguous arrays (their leading dimension is ``shape[1]``). Row-major
    ``C = op(A) op(B)`` is column-major ``C^T = op(B)^T op(A)^T``, hence the swap.
    """
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    kind = np.int8(ord("d")) if C.itemsize == 8 else np.int8(ord("s"))
    _xxgemm(kind, _TRANS if trans_b else _NOTRANS, _TRANS if trans_a else _NOTRANS, N, M, K,
            _scalar_slot(alpha, C), B.ctypes, B.shape[1], A.ctypes, A.shape[1],
            _scalar_slot(beta, C), C.ctypes, C.shape[1])


# ---------------------------------------------------------------- one block of rows

# G2 W2^T (K = m) by loops up to this m, by GEMM above: per block of 256-400
# rows the loops were 1.0-1.7x faster for m = 2..8 (k = 20..512) and the GEMM
# 1.3x faster for m = 10, k = 512.
SMALL_M = 8


@kernel
def line_products(X: np.ndarray, W1: np.ndarray, b1: np.ndarray, dW1: np.ndarray, db1: np.ndarray,
                  W: np.ndarray, b: np.ndarray, ZPT: np.ndarray) -> None:
    """``ZPT = [X W1 + b1 | X dW1 + db1]^T`` (2k, N), one GEMM; W (d, 2k), b (2k,) scratch."""
    d, k = W1.shape
    for i in range(d):
        for j in range(k):
            W[i, j] = W1[i, j]
            W[i, k + j] = dW1[i, j]
    for j in range(k):
        b[j] = b1[j]
        b[k + j] = db1[j]
    N = X.shape[0]
    for j in range(2 * k):
        for a in range(N):
            ZPT[j, a] = b[j]
    gemm(True, True, 1.0, W, X, 1.0, ZPT)


@kernel
def line_products_T(XT1: np.ndarray, W1: np.ndarray, b1: np.ndarray, dW1: np.ndarray,
                    db1: np.ndarray, WT1: np.ndarray, ZPT: np.ndarray) -> None:
    """``line_products`` from ``XT1 = [X^T; 1]`` (d + 1, N): one GEMM, no transposed operand and
    no bias pass (the bias is the last column of ``WT1 = [W1^T b1; dW1^T db1]`` (2k, d + 1))."""
    d, k = W1.shape
    for j in range(k):
        for i in range(d):
            WT1[j, i] = W1[i, j]
            WT1[k + j, i] = dW1[i, j]
        WT1[j, d] = b1[j]
        WT1[k + j, d] = db1[j]
    gemm(False, False, 1.0, WT1, XT1, 0.0, ZPT)


_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


@kernel
def flush_float32(e: float, like: np.ndarray) -> float:
    """``e``, or 0 if ``like`` is float32 and ``e`` would be a float32 subnormal.

    Subnormal operands make every later product a microcode assist: with the
    lecture's unscaled breast-cancer data (44% of |Z1| > 87, so s(-|Z1|) and
    then G1 = H * s' fall below 1.2e-38) a float32 call was 4-5x slower than
    float64. The change is below 1.2e-38 absolute. float64 needs no such
    flush: its subnormals start at |z| > 708.
    """
    if like.itemsize == 4 and abs(e) < _FLOAT32_TINY:
        return 0.0
    return e


@kernel
def logistic_and_slope(z: float, like: np.ndarray) -> tuple[float, float]:
    """``(s(z), s'(z))`` with ``e = exp(-|z|)``: ``s = 1 / (1 + e)`` or ``e / (1 + e)`` by
    the sign of z, ``s' = e / (1 + e)^2``; neither overflows. ``like`` gives the dtype
    (float32 flushes subnormals). Inlined: callers that drop ``s'`` do not compute it.
    """
    e = flush_float32(exp_nonpos(-abs(z)), like)
    q = 1 / (1 + e)
    return (q if z >= 0 else e * q), e * q * q


@kernel
def logistic_inplace(A: np.ndarray, b: np.ndarray) -> None:
    """``A <- s(A + b)`` row by row, A (B, k), b (k,).

    Adding the bias here, after a GEMM with beta = 0, saves a pass writing b
    into every row before the GEMM (measured: 5-8% of a wide call).
    """
    B, k = A.shape
    for r in range(B):
        a = A[r]
        for j in range(k):
            a[j] = logistic_and_slope(a[j] + b[j], A)[0]


@kernel
def logistic_slope(A: np.ndarray, b: np.ndarray, D: np.ndarray) -> None:
    """``A <- s(A + b)`` and ``D <- s'(A + b)``; A, D (B, k), not overlapping.

    A separate kernel from ``logistic_inplace``: with ``D`` possibly
    aliasing ``A``, LLVM would not vectorise either loop.
    """
    B, k = A.shape
    for r in range(B):
        a = A[r]
        s = D[r]
        for j in range(k):
            a[j], s[j] = logistic_and_slope(a[j] + b[j], A)


@kernel
def output_layer(A: np.ndarray, W2T: np.ndarray, b2: np.ndarray, Z2T: np.ndarray,
                 blas: bool) -> None:
    """``Z2T = (A W2 + b2)^T``: A (B, k), W2T = W2^T (m, k), b2 (m,), Z2T (m, B).

    The logits are stored transposed so that the softmax below vectorises
    over rows. ``blas``: one GEMM; else m dot products per row, vectorised
    over k (no BLAS call, so safe inside Numba threads).
    """
    m, B = Z2T.shape
    k = A.shape[1]
    if blas:
        for c in range(m):
            for r in range(B):
                Z2T[c, r] = b2[c]
        gemm(False, True, 1.0, W2T, A, 1.0, Z2T)
    else:
        for r in range(B):
            for c in range(m):
                z = b2[c]
                for j in range(k):
                    z += A[r, j] * W2T[c, j]
                Z2T[c, r] = z


@kernel
def softmax_cross_entropy(Z2T: np.ndarray, Y: np.ndarray, with_grad: bool, N: int,
                          rows: np.ndarray) -> float:
    """Cross-entropy of ``softmax`` of each row against Y, summed over rows.

    Z2T (m, B) holds the logits transposed, Y (B, m); ``rows`` (4, >= B) is
    scratch. Per row ``rowsum(Y) log(sum_c exp(z_c - max z)) - sum_c Y_c (z_c - max z)``.
    Every loop runs over rows (vectorised, with ``exp_nonpos`` and ``log_pos``).
    If ``with_grad``, Z2T ends as ``G2^T``, ``G2 = (Q rowsum(Y) - Y) / N`` (else as scratch).
    """
    m, B = Z2T.shape
    mx, se, yz, sy = rows[0], rows[1], rows[2], rows[3]
    for r in range(B):
        mx[r] = Z2T[0, r]
        se[r] = 0.0
        yz[r] = 0.0
        sy[r] = 0.0
    for c in range(1, m):
        for r in range(B):
            mx[r] = max(mx[r], Z2T[c, r])
    for c in range(m):  # a pass of its own: with Y's strided reads the exp did not vectorise
        for r in range(B):
            y = Y[r, c]
            yz[r] += y * (Z2T[c, r] - mx[r]) if y != 0 else 0.0  # 0 * (-inf) would be NaN
            sy[r] += y
    for c in range(m):
        for r in range(B):
            e = flush_float32(exp_nonpos(Z2T[c, r] - mx[r]), Z2T)
            Z2T[c, r] = e
            se[r] += e
    loss = 0.0
    for r in range(B):
        loss += sy[r] * log_pos(se[r]) - yz[r]
    if with_grad:
        for c in range(m):
            for r in range(B):
                Z2T[c, r] = (Z2T[c, r] / se[r] * sy[r] - Y[r, c]) / N
    return loss


@kernel
def backward(X: np.ndarray, A: np.ndarray, D: np.ndarray, G2T: np.ndarray, W2: np.ndarray,
             W2T: np.ndarray, gW1: np.ndarray, gb1: np.ndarray, gW2: np.ndarray,
             gb2: np.ndarray) -> None:
    """Add one block's gradient sums: ``gW2 += A^T G2``, ``gb2 += sum G2``,
    ``gW1 += X^T G1``, ``gb1 += sum G1`` with ``G1 = (G2 W2^T) * D``.

    X (B, d), A and D (B, k), G2T = G2^T (m, B), W2 (k, m) and W2T = W2^T contiguous.
    A is overwritten and D ends as G1: both are dead after this.
    """
    B, k = A.shape
    m = G2T.shape[0]
    gemm(True, True, 1.0, A, G2T, 1.0, gW2)
    for c in range(m):
        for r in range(B):
            gb2[c] += G2T[c, r]
    if m <= SMALL_M:
        # K = m is too short for a GEMM to pay off: m axpys per row, vectorised over k
        h = A[0]
        for a in range(B):
            for j in range(k):
                h[j] = G2T[0, a] * W2T[0, j]
            for c in range(1, m):
                g = G2T[c, a]
                for j in range(k):
                    h[j] += g * W2T[c, j]
            for j in range(k):
                D[a, j] = flush_float32(D[a, j] * h[j], D)
        for a in range(B):
            for j in range(k):
                gb1[j] += D[a, j]
    else:
        gemm(True, True, 1.0, G2T, W2, 0.0, A)
        for a in range(B):
            for j in range(k):
                D[a, j] = flush_float32(D[a, j] * A[a, j], D)
                gb1[j] += D[a, j]
    gemm(True, False, 1.0, X, D, 1.0, gW1)


@kernel
def split_gradient(g: np.ndarray, d: int, k: int, m: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Views ``gW1 (d, k), gb1 (k,), gW2 (k, m), gb2 (m,)`` of a flat ``g``."""
    gW1 = g[:d * k].reshape((d, k))
    gb1 = g[d * k:d * k + k]
    gW2 = g[d * k + k:d * k + k + k * m].reshape((k, m))
    gb2 = g[d * k + k + k * m:d * k + k + k * m + m]
    return gW1, gb1, gW2, gb2


def scratch_size(block: int, k: int, m: int, with_grad: bool = True) -> int:
    """Values of scratch one thread needs: A (block, k), D (block, k) for the
    gradient, Z2^T (m, block) and the softmax's 4 row vectors (4, block)."""
    return block * ((2 if with_grad else 1) * k + m + 4)


# ---------------------------------------------------------------- row ranges


@kernel
def loss_grad_rows(X: np.ndarray, Y: np.ndarray, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray,
                   b2: np.ndarray, lo: int, hi: int, block: int, work: np.ndarray, g: np.ndarray,
                   with_grad: bool, classes: np.ndarray) -> float:
    """Loss sum of rows ``[lo, hi)`` (not divided by N); if ``with_grad``, their
    gradient terms are added to ``g``; if ``classes`` is not empty, ``classes[r]``
    gets row r's predicted class (``argmax_rows`` of its logits).

    X (N, d), Y (N, m), W1 (d, k), b1 (k,), W2 (k, m), b2 (m,); work scratch
    of ``scratch_size(block, k, m, with_grad)``; g (d k + k + k m + m,) as
    ``split_gradient`` (untouched without ``with_grad``). ``with_grad`` is a run-time flag so that
    the loss alone and loss-and-gradient share one compiled kernel.
    """
    d, k = W1.shape
    m = W2.shape[1]
    gW1, gb1, gW2, gb2 = split_gradient(g, d, k, m)
    W2T = np.ascontiguousarray(W2.T)
    loss = 0.0
    for start in range(lo, hi, block):
        stop = min(start + block, hi)
        B = stop - start
        a = work[:B * k]
        slope = work[block * k:block * k + B * k] if with_grad else a
        A = a.reshape((B, k))
        D = slope.reshape((B, k))
        z2 = (2 if with_grad else 1) * block * k
        Z2T = work[z2:z2 + m * B].reshape((m, B))
        rows = work[z2 + m * block:z2 + (m + 4) * block].reshape((4, block))
        gemm(False, False, 1.0, X[start:stop], W1, 0.0, A)
        if with_grad:
            logistic_slope(A, b1, D)
        else:
            logistic_inplace(A, b1)
        output_layer(A, W2T, b2, Z2T, m > SMALL_M)
        if classes.size:
            argmax_rows(Z2T, classes[start:stop])
        loss += softmax_cross_entropy(Z2T, Y[start:stop], with_grad, X.shape[0], rows)
        if with_grad:
            backward(X[start:stop], A, D, Z2T, W2, W2T, gW1, gb1, gW2, gb2)
    return loss


@kernel
def add_rows_in_order(G: np.ndarray) -> None:
    """``G[0] += G[1]; G[0] += G[2]; ...``: chunk partial sums merged in a fixed order."""
    for c in range(1, G.shape[0]):
        for i in range(G.shape[1]):
            G[0, i] += G[c, i]


@kernel(parallel=True)
def loss_grad_chunks(X: np.ndarray, Y: np.ndarray, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray,
                     b2: np.ndarray, block: int, work: np.ndarray, G: np.ndarray, with_grad: bool,
                     classes: np.ndarray) -> float:
    """``loss_grad_rows`` on ``len(G)`` contiguous row chunks in parallel; the loss sum.

    Chunk c uses scratch ``work[c]`` and adds its gradient terms to ``G[c]``;
    then ``G[0]`` gets the others added in chunk order (if ``with_grad``).
    """
    nchunks = G.shape[0]
    N = X.shape[0]
    losses = np.empty((nchunks, 1))
    for c in prange(nchunks):
        losses[c, 0] = loss_grad_rows(X, Y, W1, b1, W2, b2, c * N // nchunks,
                                      (c + 1) * N // nchunks, block, work[c], G[c], with_grad,
                                      classes)
    if with_grad:
        add_rows_in_order(G)
    add_rows_in_order(losses)
    return losses[0, 0]


@kernel
def logistic_line(ZPT: np.ndarray, start: int, t: float, AT: np.ndarray) -> None:
    """``AT = s(Z0 + t P)`` for the rows ``start, start + 1, ...`` of
    ``ZPT = [Z0 | P]^T`` (2k, N); AT (k, B). ``t = 0`` reads Z0 only.

    One row of ZPT at a time as a 1-D slice: Numba then knows it is
    contiguous and the loop vectorises (a 2-D slice was 2x slower).
    """
    k, B = AT.shape
    for j in range(k):
        z0 = ZPT[j, start:start + B]
        p = ZPT[k + j, start:start + B]
        a = AT[j]
        for r in range(B):
            a[r] = logistic_and_slope(z0[r] + t * p[r] if t != 0 else z0[r], AT)[0]


@kernel
def output_layer_T(AT: np.ndarray, W2T: np.ndarray, b2: np.ndarray, Z2T: np.ndarray) -> None:
    """``Z2T = (A W2 + b2)^T`` from ``AT = A^T`` (k, B): k axpys per output, vectorised over rows."""
    m, B = Z2T.shape
    k = AT.shape[0]
    for c in range(m):
        for r in range(B):
            Z2T[c, r] = b2[c]
        for j in range(k):
            w = W2T[c, j]
            for r in range(B):
                Z2T[c, r] += w * AT[j, r]


@kernel
def trial_rows(ZPT: np.ndarray, Y: np.ndarray, W2Ts: np.ndarray, b2s: np.ndarray, ts: np.ndarray,
               K: int, lo: int, hi: int, block: int, work: np.ndarray, out: np.ndarray) -> None:
    """``out[q]`` = loss sum of rows ``[lo, hi)`` at step ``ts[q]``, q < K (not divided by N).

    ``ZPT = [X W1 + b1 | X dW1 + db1]^T`` (2k, N) holds the first layer's
    pre-activation and its change along the line, transposed: at t it is
    ``ZPT[:k] + t ZPT[k:]``. ``W2Ts[q]`` (m, k) = W2^T and ``b2s[q]`` (m,)
    are the second layer's blocks at ``ts[q]``; work (>= block (k + m + 4),).
    Each block of rows is evaluated at all K steps while it is in cache; the
    sum for one step is over blocks in row order whatever K is. Every loop
    runs over rows (vectorised); no BLAS, so row chunks can run in parallel.
    """
    m, k = W2Ts.shape[1], W2Ts.shape[2]
    for q in range(K):
        out[q] = 0.0
    for start in range(lo, hi, block):
        stop = min(start + block, hi)
        B = stop - start
        AT = work[:k * B].reshape((k, B))
        Z2T = work[block * k:block * k + m * B].reshape((m, B))
        rows = work[block * (k + m):block * (k + m + 4)].reshape((4, block))
        for q in range(K):
            logistic_line(ZPT, start, ts[q], AT)
            output_layer_T(AT, W2Ts[q], b2s[q], Z2T)
            out[q] += softmax_cross_entropy(Z2T, Y[start:stop], False, 1, rows)


@kernel(parallel=True)
def trial_chunks(ZPT: np.ndarray, Y: np.ndarray, W2Ts: np.ndarray, b2s: np.ndarray, ts: np.ndarray,
                 K: int, block: int, work: np.ndarray, out: np.ndarray) -> None:
    """``trial_rows`` on ``len(work)`` contiguous row chunks in parallel: chunk c's sums in ``out[c]``."""
    nchunks = work.shape[0]
    N = ZPT.shape[1]
    for c in prange(nchunks):
        trial_rows(ZPT, Y, W2Ts, b2s, ts, K, c * N // nchunks, (c + 1) * N // nchunks,
                   block, work[c], out[c])


# No fastmath: these must round exactly as the Python line search does.
@kernel(fastmath=frozenset())
def step_output_layer(W2: np.ndarray, b2: np.ndarray, dW2: np.ndarray, db2: np.ndarray, t: float,
                      W2T: np.ndarray, b2t: np.ndarray) -> None:
    """The second layer's blocks at step t: ``W2T = (W2 + t dW2)^T``, ``b2t = b2 + t db2``.

    Rounded as numpy's ``x + t * dx`` (``update_blocks``): t in the blocks'
    dtype, a product then a sum, no fused multiply-add.
    """
    k, m = W2.shape
    b2t[0] = t  # t rounded to the blocks' dtype, as numpy does with a Python float
    tt = b2t[0]
    for c in range(m):
        b2t[c] = b2[c] + tt * db2[c]
        for j in range(k):
            W2T[c, j] = W2[j, c] + tt * dW2[j, c]


@kernel(parallel=True, fastmath=frozenset())
def backtrack(ZPT: np.ndarray, Y: np.ndarray, W2: np.ndarray, b2: np.ndarray, dW2: np.ndarray,
              db2: np.ndarray, f0: float, delta: float, beta: float, max_iter: int, batch: int,
              block: int, work: np.ndarray, W2Ts: np.ndarray, b2s: np.ndarray, ts: np.ndarray,
              out: np.ndarray) -> tuple[int, float, float]:
    """``armijo_backtrack`` on the line ``ZPT`` without leaving the kernel: ``(i, t, fx)``.

    Trial i = 1, 2, ... takes ``t = beta^(i-1)`` (by repeated products, as
    the Python loop) and accepts when ``fx`` is finite and
    ``fx <= f0 + t delta``; ``i = 0`` if ``max_iter`` trials fail (t and fx
    are then the last trial's). Trials are evaluated ``batch`` at a time
    (then 2 at a time), in one pass over the rows per batch: a batch that
    overshoots the accepted trial wastes its later trials but not the
    answer, which is the same for any batch. Scratch: W2Ts (>= batch, m, k),
    b2s (>= batch, m), ts (>= batch,), out (len(work), >= batch). The rows
    run in ``len(work)`` contiguous chunks in parallel (the only ``prange``
    here); each step's chunk sums are added in chunk order.
    """
    N = ZPT.shape[1]
    nchunks = work.shape[0]
    i = 1
    t = 1.0
    K = min(batch, max_iter)
    fx = np.nan
    while True:
        for q in range(K):
            if q > 0:
                t = beta * t
            ts[q] = t
            step_output_layer(W2, b2, dW2, db2, t, W2Ts[q], b2s[q])
        for c in prange(nchunks):
            trial_rows(ZPT, Y, W2Ts, b2s, ts, K, c * N // nchunks, (c + 1) * N // nchunks,
                       block, work[c], out[c])
        for q in range(K):
            total = out[0, q]
            for c in range(1, nchunks):
                total += out[c, q]
            fx = total / N
            if np.isfinite(fx) and fx <= f0 + ts[q] * delta:
                return i + q, ts[q], fx
        i += K
        if i > max_iter:
            return 0, t, fx
        t = beta * t
        K = min(2, max_iter - i + 1)


@kernel
def argmax_rows(Z2T: np.ndarray, out: np.ndarray) -> None:
    """``out[r] = argmax_c Z2T[c, r]`` as ``np.argmax`` does: the first maximum, or the first NaN."""
    m, B = Z2T.shape
    for r in range(B):
        best = 0
        for c in range(1, m):
            if Z2T[best, r] != Z2T[best, r]:
                break
            if Z2T[c, r] > Z2T[best, r] or Z2T[c, r] != Z2T[c, r]:
                best = c
        out[r] = best


@kernel
def predict_rows(X: np.ndarray, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray, b2: np.ndarray,
                 block: int, work: np.ndarray, out: np.ndarray) -> None:
    """Class of each row, ``argmax(logit(X W1 + b1) W2 + b2)`` (= argmax of the softmax); out (N,) int64.

    work: ``block (k + m)`` values of scratch.
    """
    N = X.shape[0]
    k, m = W2.shape
    W2T = np.ascontiguousarray(W2.T)
    for start in range(0, N, block):
        stop = min(start + block, N)
        B = stop - start
        a = work[:B * k]
        A = a.reshape((B, k))
        Z2T = work[block * k:block * k + m * B].reshape((m, B))
        gemm(False, False, 1.0, X[start:stop], W1, 0.0, A)
        logistic_inplace(A, b1)
        output_layer(A, W2T, b2, Z2T, m > SMALL_M)
        argmax_rows(Z2T, out[start:stop])


# ---------------------------------------------------------------- wrappers


def plan(N: int, d: int, k: int, m: int) -> tuple[int, int]:
    """``(nchunks, block)`` for a pass over N rows of a (d, k, m) network.

    * wide layers (``max(d k, k m) >= WIDE_MIN_ELEMENTS``): one thread walks
      blocks of ``WIDE_BLOCK_ROWS`` rows and BLAS threads each (large) GEMM;
    * small problems (``N (d k + k m) < PARALLEL_MIN_ELEMENTS``): serial, one
      block of up to ``BLOCK_ROWS`` rows at a time;
    * otherwise one contiguous row chunk per Numba thread, partial sums
      added in chunk order, blocks of up to ``CHUNK_BLOCK_ROWS`` rows but
      small enough (``block * d * k <= BLAS_SMALL_MNK``) that BLAS runs each
      GEMM single-threaded inside the Numba thread.
    """
    if max(d * k, k * m) >= WIDE_MIN_ELEMENTS:
        return 1, max(1, min(N, WIDE_BLOCK_ROWS))
    if N * (d * k + k * m) < PARALLEL_MIN_ELEMENTS:
        return 1, max(1, min(N, BLOCK_ROWS))
    nchunks = min(numba.get_num_threads(), N)
    block = min(CHUNK_BLOCK_ROWS, BLAS_SMALL_MNK // max(d * k, k * m, 1), -(-N // nchunks))
    return nchunks, max(1, block)


def _loss_pass(X: np.ndarray, Y: np.ndarray, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray,
               b2: np.ndarray, nchunks: int | None, block: int | None, with_grad: bool,
               classes: NDArray[np.int64] | None = None) -> tuple[float, np.ndarray]:
    """Loss sum and the gradient buffer (row 0 of G) of one fused pass; ``classes``
    (N,) int64, if given, gets each row's predicted class."""
    N, d = X.shape
    k, m = W2.shape
    auto_chunks, auto_block = plan(N, d, k, m)
    nchunks = auto_chunks if nchunks is None else nchunks
    block = auto_block if block is None else block
    size = d * k + k + k * m + m
    alloc = np.zeros if with_grad else np.empty  # without gradient G is never touched
    G = alloc((nchunks, size), dtype=X.dtype)
    work = np.empty((nchunks, scratch_size(block, k, m, with_grad)), dtype=X.dtype)
    classes = _NO_CLASSES if classes is None else classes
    if nchunks == 1:
        loss = loss_grad_rows(X, Y, W1, b1, W2, b2, 0, N, block, work[0], G[0], with_grad, classes)
    else:
        loss = loss_grad_chunks(X, Y, W1, b1, W2, b2, block, work, G, with_grad, classes)
    return loss, G[0]


_NO_CLASSES = np.empty(0, dtype=np.int64)


def nn_loss_and_gradient(X: np.ndarray, Y: np.ndarray, W1: np.ndarray, b1: np.ndarray,
                         W2: np.ndarray, b2: np.ndarray, *, nchunks: int | None = None,
                         block: int | None = None, classes: NDArray[np.int64] | None = None
                         ) -> tuple[float, list[np.ndarray]]:
    """Mean cross-entropy and its gradient ``[dW1 (d, k), db1 (k,), dW2 (k, m), db2 (m,)]``.

    Arrays already validated, C-contiguous, one float dtype; b1 (k,), b2 (m,).
    ``nchunks`` and ``block`` override ``plan`` (tests use them to force a path).
    ``classes``: an (N,) int64 array to receive each row's predicted class.
    """
    N, d = X.shape
    k, m = W2.shape
    loss, g = _loss_pass(X, Y, W1, b1, W2, b2, nchunks, block, True, classes)
    i, j, l = d * k, d * k + k, d * k + k + k * m
    return loss / N, [g[:i].reshape(d, k), g[i:j], g[j:l].reshape(k, m), g[l:]]


def nn_loss(X: np.ndarray, Y: np.ndarray, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray,
            b2: np.ndarray, *, nchunks: int | None = None, block: int | None = None) -> float:
    """Mean cross-entropy of the network; arrays already validated, contiguous, one dtype."""
    return _loss_pass(X, Y, W1, b1, W2, b2, nchunks, block, False)[0] / X.shape[0]


def precompute_line(N: int, d: int, k: int, m: int) -> bool:
    """Whether a line search should compute ``[X W1 + b1 | X dW1 + db1]`` once.

    Yes when d is large (``LINESEARCH_MIN_INPUTS``: each trial then skips an
    X W1 product) or when those 2 N k values are few enough
    (``LINESEARCH_MAX_HELD``) for the whole search to run in one kernel call;
    otherwise each trial is one fused loss evaluation, without N-row memory.
    """
    return d >= LINESEARCH_MIN_INPUTS or 2 * N * k <= LINESEARCH_MAX_HELD


class LineLoss:
    """The mean loss along ``x0 + t dx`` with the first layer's products done once.

    ``ZPT = [X W1 + b1 | X dW1 + db1]^T`` (2k, N) is one GEMM (``move_to``
    recomputes it for another line, reusing every buffer); ``self(t, W2, b2)``
    is then the mean cross-entropy with first-layer pre-activation
    ``ZPT[:k] + t ZPT[k:]`` (transposed) and second-layer blocks W2 (k, m),
    b2 (m,), costing O(N k m) instead of a new X W1 product; ``backtrack``
    runs the whole Armijo loop in one kernel call. When X is small
    (``LINESEARCH_MAX_HELD`` values) it keeps ``[X^T; 1]`` so that the GEMM has no
    transposed operand and adds the bias itself (1.6x faster at N = 400).
    """

    MAX_BATCH = 16  # trials per kernel pass at most (bounds the per-trial scratch)

    def __init__(self, X: np.ndarray, Y: np.ndarray, W1: np.ndarray, b1: np.ndarray,
                 dW1: np.ndarray, db1: np.ndarray, *, nchunks: int | None = None,
                 block: int | None = None) -> None:
        N, d = X.shape
        k = W1.shape[1]
        m = Y.shape[1]
        self.X, self.Y = X, Y
        self.ZPT = np.empty((2 * k, N), dtype=X.dtype)
        if X.size <= LINESEARCH_MAX_HELD:
            self.XT1: np.ndarray | None = np.ones((d + 1, N), dtype=X.dtype)
            self.XT1[:d] = X.T
            self.Wcat = np.empty((2 * k, d + 1), dtype=X.dtype)
        else:
            self.XT1 = None
            self.Wcat = np.empty((d, 2 * k), dtype=X.dtype)
            self.bcat = np.empty(2 * k, dtype=X.dtype)
        # no BLAS in a trial, so no wide case: rows chunked above the size threshold
        threads = 1 if N * (k + 4 * m) < LINE_PARALLEL_MIN_ELEMENTS else numba.get_num_threads()
        self.nchunks = min(threads, N) if nchunks is None else nchunks
        # no BLAS in a trial: blocks only bound the scratch
        self.block = max(1, min(BLOCK_ROWS, -(-N // self.nchunks))) if block is None else block
        self.work = np.empty((self.nchunks, self.block * (k + m + 4)), dtype=X.dtype)
        size = self.MAX_BATCH
        self.W2Ts = np.empty((size, m, k), dtype=X.dtype)
        self.b2s = np.empty((size, m), dtype=X.dtype)
        self.ts = np.empty(size)
        self.out = np.empty((self.nchunks, size))
        self.move_to(W1, b1, dW1, db1)

    def move_to(self, W1: np.ndarray, b1: np.ndarray, dW1: np.ndarray, db1: np.ndarray) -> LineLoss:
        """Put the line through first layer W1 (d, k), b1 (k,) along dW1, db1 (X's dtype)."""
        if self.XT1 is None:
            line_products(self.X, W1, b1, dW1, db1, self.Wcat, self.bcat, self.ZPT)
        else:
            line_products_T(self.XT1, W1, b1, dW1, db1, self.Wcat, self.ZPT)
        return self

    def __call__(self, t: float, W2: np.ndarray, b2: np.ndarray) -> float:
        self.ts[0] = t
        self.W2Ts[0] = W2.T
        self.b2s[0] = np.ravel(b2)
        trial_chunks(self.ZPT, self.Y, self.W2Ts, self.b2s, self.ts, 1, self.block, self.work,
                     self.out)
        total = self.out[0, 0]
        for c in range(1, self.nchunks):  # chunk order, as in backtrack
            total += self.out[c, 0]
        return float(total / self.ZPT.shape[1])

    def backtrack(self, W2: np.ndarray, b2: np.ndarray, dW2: np.ndarray, db2: np.ndarray,
                  f0: float | np.floating, delta: float, beta: float, max_iter: int,
                  batch: int = 1) -> tuple[int, float, float]:
        """``(i, t, fx)`` of ``backtrack`` from x0's second layer W2 (k, m), b2 (m,) along
        dW2, db2 (all of ZPT's dtype, contiguous); ``i = 0`` if no step is accepted.
        ``batch``: trials in the first pass (a guess of the accepted i; any value gives
        the same answer), at most ``MAX_BATCH``."""
        return backtrack(self.ZPT, self.Y, W2, b2, dW2, db2, float(f0), float(delta),
                         float(beta), int(max_iter), max(1, min(int(batch), self.MAX_BATCH)),
                         self.block, self.work, self.W2Ts, self.b2s, self.ts, self.out)


def predict(X: np.ndarray, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray,
            b2: np.ndarray) -> NDArray[np.int64]:
    """Predicted class (N,) int64 of each row; arrays validated, contiguous, one dtype; b1 (k,), b2 (m,)."""
    N, d = X.shape
    k, m = W2.shape
    block = plan(N, d, k, m)[1]
    out = np.empty(N, dtype=np.int64)
    predict_rows(X, W1, b1, W2, b2, block, np.empty(block * (k + m), dtype=X.dtype), out)
    return out
