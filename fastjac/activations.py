"""Hidden-layer activations, each in one place: scikit-learn's names, values and slopes.

Each activation is, here and only here:

* a scalar function ``f(z, tiny) -> (f(z), f'(z))`` that the fused kernels
  inline (``tiny``: ``scalar.flush_threshold``, to flush float32 subnormals),
  and a branch in ``runtime_value_and_slope`` and an entry of ``_LOOPS`` (its
  loops, which the kernels call by address: ``rows_loop``, ``line_loop``);
* its ``f''`` from f and f' (``second_derivative``, for the curvature kernels);
* an ``Activation`` entry: its name and kernel code, and the numpy formulas
  (f, f', f'') of its dense twin (``fastjac.dense.activation``/``Dactivation``).

The structured Jacobian of any activation is ``Diagonal(f'(Z))`` with the
kernels' slopes (``fastjac.structured.Dactivation``). Adding an activation
touches this file and its tests, nothing else.

==========  ====  ==========================  =====================================
name        code  f(z)                        f'(z)
==========  ====  ==========================  =====================================
identity    0     z                           1
logistic    1     1 / (1 + e^-z)              e / (1 + e)^2, e = e^-|z|
tanh        2     tanh z                      1 - tanh^2 z = 4 e / (1 + e)^2, e = e^-2|z|
relu        3     max(z, 0)                   1 if z > 0 else 0 (0 at z = 0, as sklearn)
==========  ====  ==========================  =====================================

The kernels compute every f and f' without overflow and vectorised (no libm
calls). NaN goes through as NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
import numpy as np

from numba.core import types

from fastjac._jit import inline, kernel
from fastjac.native import Native
from fastjac.scalar import exp_nonpos, exp_poly_nonpos, flush, flush_threshold

IDENTITY, LOGISTIC, TANH, RELU = 0, 1, 2, 3


# ---------------------------------------------------------------- the kernels' scalars

@kernel(helper=True, forceinline=True)
def logistic_and_slope(z: float, tiny: float) -> tuple[float, float]:
    """``(s(z), s'(z))`` with ``e = exp(-|z|)``: ``s = 1 / (1 + e)`` or ``e / (1 + e)`` by
    the sign of z, ``s' = e / (1 + e)^2``; neither overflows. ``tiny``: float32
    subnormals below it are flushed (``scalar.flush``)."""
    e = flush(exp_nonpos(-abs(z)), tiny)
    q = 1 / (1 + e)
    return (q if z >= 0 else e * q), e * q * q


# tanh on |z| < 0.625: z + z^3 P(z^2) / Q(z^2) (Cephes' tanh.c, relative error < 2.5e-16);
# above it 1 - 2 e / (1 + e) with e = exp(-2|z|) >= 0.29 away from 1: no cancellation.
_TP0, _TP1, _TP2 = -9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3
_TQ0, _TQ1, _TQ2 = 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3


@kernel(helper=True, forceinline=True)
def tanh_and_slope(z: float, tiny: float) -> tuple[float, float]:
    """``(tanh z, 1 - tanh^2 z)`` with one division: ``t = x + x^3 P(x^2) / Q(x^2)`` for
    x = |z| < 0.625, else ``t = 1 + d`` with ``d = -2 e / (1 + e)``, ``e = exp(-2x)``;
    the slope is ``(1 - t)(1 + t)``, with ``1 - t = -d`` where it would cancel."""
    # both branches are computed and then selected: a loop over this vectorises only
    # if LLVM sees selects, not branches
    x = abs(z)
    x2 = x * x
    small = x < 0.625
    e = flush(exp_poly_nonpos(-2.0 * x), tiny)
    num_small = x * x2 * ((_TP0 * x2 + _TP1) * x2 + _TP2)
    den_small = ((x2 + _TQ0) * x2 + _TQ1) * x2 + _TQ2
    num = num_small if small else -2.0 * e
    den = den_small if small else 1.0 + e
    d = num / den
    base = x if small else 1.0
    t = base + d
    one_minus_t = 1.0 - t if small else -d
    slope = one_minus_t * (1.0 + t)
    return (t if z >= 0 else -t), slope


@kernel(helper=True, forceinline=True)
def relu_and_slope(z: float, tiny: float) -> tuple[float, float]:
    """``(max(z, 0), [z > 0])``; NaN stays NaN."""
    return (z if z > 0 else (0.0 if z <= 0 else z)), (1.0 if z > 0 else (0.0 if z <= 0 else z))


@kernel(helper=True, forceinline=True)
def identity_and_slope(z: float, tiny: float) -> tuple[float, float]:
    """``(z, 1)``."""
    return z, 1.0


@inline
def runtime_value_and_slope(code: int, z: float, tiny: float) -> tuple[float, float]:
    """``(f(z), f'(z))`` of the activation with run-time code ``code``."""
    if code == LOGISTIC:
        return logistic_and_slope(z, tiny)
    if code == TANH:
        return tanh_and_slope(z, tiny)
    if code == RELU:
        return relu_and_slope(z, tiny)
    return identity_and_slope(z, tiny)


def _loops(code: int) -> tuple[Any, Any]:
    """The two loop kernels of the activation with code ``code`` (``MIXED``: the layer's code,
    read at run time). ``code`` is a constant of both, so only that activation is compiled;
    they are cached (Numba keys closures by the values they capture)."""
    fixed = int(code)

    @kernel(helper=True)
    def rows(layer_code: int, A: np.ndarray, b: np.ndarray, D: np.ndarray,
             with_slope: bool) -> None:
        """``A <- f(A + b)`` row by row (b (k,) along each row of A (B, k)); ``D <- f'(A + b)``
        if ``with_slope``. A and D must not overlap (LLVM would not vectorise)."""
        c = layer_code if fixed == MIXED else fixed
        tiny = flush_threshold(A)
        B, k = A.shape
        for r in range(B):
            a = A[r]
            s = D[r]
            if with_slope:
                for j in range(k):
                    a[j], s[j] = runtime_value_and_slope(c, a[j] + b[j], tiny)
            else:
                for j in range(k):
                    a[j] = runtime_value_and_slope(c, a[j] + b[j], tiny)[0]

    @kernel(helper=True)
    def line(layer_code: int, z0: np.ndarray, p: np.ndarray, t: float, out: np.ndarray) -> None:
        """``out <- f(z0 + t p)`` (``f(z0)`` at t = 0) for contiguous vectors."""
        c = layer_code if fixed == MIXED else fixed
        tiny = flush_threshold(out)
        for r in range(out.shape[0]):
            out[r] = runtime_value_and_slope(c, z0[r] + t * p[r] if t != 0 else z0[r], tiny)[0]

    return rows, line


# Kernels are made for one activation ``mode`` (a constant of the kernel: Numba prunes
# the other branches below, so only that activation's loops are compiled, once, whatever
# the network's shape), or for ``MIXED`` networks whose hidden layers differ: those
# branch at run time on each layer's code and compile every activation.
MIXED = -1
_LOOPS = {code: _loops(code) for code in (IDENTITY, LOGISTIC, TANH, RELU, MIXED)}

# The loops as kernels call them, through their addresses (``fastjac.native``):
# ``rows(layer code, A (B, k), b (k,), D (B, k), with_slope)`` and
# ``line(layer code, z0 (B,), p (B,), t, out (B,))``.
ROWS = Native("activations.ROWS",
              lambda f: (types.int64, f[:, ::1], f[::1], f[:, ::1], types.boolean), types.none)
LINE = Native("activations.LINE", lambda f: (types.int64, f[::1], f[::1], f, f[::1]), types.none)


def rows_loop(mode: int) -> Any:
    """The row loop kernels call for activation ``mode`` (``MIXED``: by each layer's code)."""
    return _LOOPS[mode][0]


def line_loop(mode: int) -> Any:
    """The line loop kernels call for activation ``mode`` (``MIXED``: by each layer's code)."""
    return _LOOPS[mode][1]


@inline
def second_derivative(mode: int, code: int, a: float, s: float) -> float:
    """``f''(z)`` from the activation's value ``a = f(z)`` and slope ``s = f'(z)``:
    logistic ``s (1 - 2a)``, tanh ``-2 a s``, identity and relu 0 (relu's kink is
    measure zero). ``mode``/``code`` as in ``value_and_slope``."""
    c = code if mode == MIXED else mode
    if c == LOGISTIC:
        return s * (1.0 - 2.0 * a)
    if c == TANH:
        return -2.0 * a * s
    return 0.0


@kernel
def activation_values(code: int, Z: np.ndarray, A: np.ndarray, D: np.ndarray) -> None:
    """``A = f(Z)``, ``D = f'(Z)`` elementwise over flat arrays (the structured route)."""
    tiny = flush_threshold(A)
    for i in range(Z.shape[0]):
        A[i], D[i] = runtime_value_and_slope(code, Z[i], tiny)


# ---------------------------------------------------------------- the registry

def _logistic(Z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-z) = inf gives the right limit 0
        return 1 / (1 + np.exp(-Z))


@dataclass(frozen=True)
class Activation:
    """An activation: scikit-learn's name, the kernels' code, and its dense twin.

    ``value(Z)``, ``slope(Z)`` and ``second(Z)`` (f, f', f'') are the textbook
    numpy formulas the dense reference and the numpy twins use
    (``fastjac.dense.activation``/``Dactivation``, ``fastjac.backprop``).
    """

    name: str
    code: int
    value: Callable[[np.ndarray], np.ndarray]
    slope: Callable[[np.ndarray], np.ndarray]
    second: Callable[[np.ndarray], np.ndarray]


def _tanh_second(Z: np.ndarray) -> np.ndarray:
    t = np.tanh(Z)
    return -2 * t * (1 - t ** 2)


def _logistic_second(Z: np.ndarray) -> np.ndarray:
    s = _logistic(Z)
    return s * _logistic(-Z) * (1 - 2 * s)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("identity", IDENTITY, lambda Z: Z.copy(), lambda Z: np.ones_like(Z),
               lambda Z: np.zeros_like(Z)),
    # the lecture's logit and Dlogit: s(z) s(-z)
    Activation("logistic", LOGISTIC, _logistic, lambda Z: _logistic(Z) * _logistic(-Z),
               _logistic_second),
    Activation("tanh", TANH, np.tanh, lambda Z: 1 - np.tanh(Z) ** 2, _tanh_second),
    Activation("relu", RELU, lambda Z: np.maximum(Z, 0), lambda Z: (Z > 0).astype(Z.dtype),
               lambda Z: np.zeros_like(Z)),
)}


def get(name: str | Activation) -> Activation:
    """The ``Activation`` called ``name``; ``ValueError`` listing the known names otherwise."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None
