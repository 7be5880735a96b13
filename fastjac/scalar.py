"""Scalar math the kernels inline: a vectorisable exp and log, and float32's subnormal flush.

libm's ``exp`` and ``log`` are scalar calls, so a loop over them cannot
vectorise; ``exp_nonpos`` and ``log_pos`` are branch-free polynomials with
table lookups that LLVM vectorises (about 0.9 ns and 1.4 ns per element,
against 6-10 ns). Their rounding is designed, so they are compiled on their
own with FMA contraction only (``@kernel``), not inlined into callers that
reassociate; the small helpers (``@inline``) are inlined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba import types
from numba.core.typing.templates import Signature
from numba.extending import intrinsic as _numba_intrinsic

from fastjac._jit import FASTMATH_CONTRACT, inline, kernel

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
@kernel(fastmath=FASTMATH_CONTRACT, helper=True)
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


# exp without a table: x = n ln2 + r, |r| <= ln2/2, exp(r) by its degree-13 Taylor
# polynomial (truncation below 4e-18), 2^n built in the exponent bits. No gather, so
# loops over it vectorise on every x86-64 (the table above needs a gather, which LLVM
# does not emit for AMD Zen: there that exp costs 6-7 ns, this one about 1 ns).
_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# ln2 = _LN2_HI + _LN2_LO (below, fdlibm's): _LN2_HI has 32 bits, so n * _LN2_HI is exact


@kernel(fastmath=FASTMATH_CONTRACT, helper=True)
def exp_poly_nonpos(x: float) -> float:
    """``exp(x)`` for ``x <= 0`` in float64, within 2.1 ulp; NaN gives NaN, -inf gives 0.

    Branch-free and table-free (Cody-Waite reduction by ln2, Estrin's scheme,
    the scale from integer bits; subnormal results scaled in two steps), so
    loops over it vectorise with plain SIMD.
    """
    underflow = x < -745.2
    if underflow:
        x = 0.0
    kd = x * _INV_LN2 + _SHIFT
    n = kd - _SHIFT
    r = (x - n * _LN2_HI) - n * _LN2_LO
    # Estrin's scheme: short dependency chains, so that vector lanes overlap
    r2 = r * r
    r4 = r2 * r2
    p = ((1.0 + r) + r2 * (1 / 2 + r * (1 / 6))
         + r4 * ((1 / 24 + r * (1 / 120)) + r2 * (1 / 720 + r * (1 / 5040)))
         + (r4 * r4) * ((1 / 40320 + r * (1 / 362880)) + r2 * (1 / 3628800 + r * (1 / 39916800))
                        + r4 * (1 / 479001600 + r * (1 / 6227020800))))
    ni = _int64_from_bits(kd) & 0xFFFF  # n in two's complement, low bits
    ni = ni - 0x10000 if ni >= 0x8000 else ni
    tiny = x < -708.0
    if tiny:
        ni += 512
    e = p * _float64_from_bits((ni + 1023) << 52)
    if tiny:
        e *= _TWO_M512
    return 0.0 if underflow else e


# fdlibm's e_log.c: log(1 + f) = f - (f^2/2 - s (f^2/2 + R(s^2))), s = f / (2 + f)
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
       2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
       1.479819860511658591e-01)


@kernel(fastmath=FASTMATH_CONTRACT, helper=True)
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




@inline
def log1p_small(e: float) -> float:
    """``log(1 + e)`` for ``0 <= e <= 1``, accurate for tiny e too (``u = 1 + e`` and the
    rounding of u corrected: ``log(u) - ((u - 1) - e) / u``); vectorises."""
    u = 1.0 + e
    return log_pos(u) - ((u - 1.0) - e) / u


_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


@inline
def flush_threshold(like: np.ndarray) -> float:
    """The ``tiny`` of ``flush``: float32's smallest normal for float32 arrays, 0 (never
    flush) for float64. Read once per loop: scalar helpers take it, not the array (an
    array argument of an inlined helper costs reference counting in the loop, which then
    does not vectorise)."""
    return _FLOAT32_TINY if like.itemsize == 4 else 0.0


@inline
def flush(e: float, tiny: float) -> float:
    """``e``, or 0 where ``|e| < tiny``: float32's subnormals (``tiny = flush_threshold``).

    Subnormal operands make every later product a microcode assist: with the
    lecture's unscaled breast-cancer data (44% of |Z1| > 87, so s(-|Z1|) and
    then G1 = H * s' fall below 1.2e-38) a float32 call was 4-5x slower than
    float64. The change is below 1.2e-38 absolute. float64 needs no such
    flush (tiny = 0): its subnormals start at |z| > 708.
    """
    return 0.0 if abs(e) < tiny else e
