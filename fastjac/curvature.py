"""Per-example and curvature quantities of an ``MLP``, straight from the structure.

For a network ``z_l = W_l^T a_{l-1} + b_l``, ``a_l = f(z_l)`` and one row n,
every quantity below has a closed form in what the backward pass holds per
row: the layer inputs ``a_{l-1,n}`` and the vectors ``g_{l,n}`` backpropagated
from the logits (``g_{l-1} = (W_l g_l) o f'(z_{l-1})``). Fused kernels
(``curvature_kernels``) compute them over row blocks, as the gradient's do;
nothing with N rows is held except the outputs asked for.

Conventions (the README's table):

* ``l_n`` is row n's own loss (no weight, no 1/N); the parameters of layer l
  are ``[W_l; b_l]`` ((n_{l-1} + 1) x n_l), biases in the usual augmented form.
* Per-example gradients are ``grad l_n``: ``a_{l-1,n} g_{l,n}^T`` and
  ``g_{l,n}`` with ``g_L = dl_n/dz``; their mean is the data term's gradient
  (without alpha). ``sum_grad_squared`` is ``sum_n (grad l_n)^2``.
* Curvature is that of the mean loss: ``G = (1/N) sum_n J_n^T H_n J_n`` with
  ``J_n = dz_L/dtheta`` (the logits) and ``H_n`` the loss Hessian in the
  logits; ``H = G + (1/N) sum_n sum_k (dl_n/dz_k) d^2 z_k / dtheta^2``. alpha's
  ``(alpha/N) I`` on the weights is added to ``G``, ``H`` and their diagonals.
* ``kfac`` gives per layer ``(A, B)``, ``A = (1/N) sum_n abar abar^T`` over the
  augmented inputs ``abar = [a; 1]`` ((n_{l-1} + 1)^2) and ``B = (1/N) sum_n
  S_n S_n^T`` of the backpropagated Hessian square roots (n_l^2; Monte Carlo
  or empirical gradients for ``fisher="mc"``/``"empirical"``), so that
  ``A (x) B`` approximates the GGN block of ``vec([W_l; b_l])`` in row-major
  order (``np.kron(A, B)`` indexes ``(i, j)`` as ``i n_l + j``), which is
  ``(1/N) sum_n (abar abar^T) (x) (S_n S_n^T)``: it equals it at N = 1 and
  wherever ``S_n S_n^T`` does not depend on n (a deep linear network with
  squared error). No alpha.
* ``jacobian_params`` and ``empirical_ntk`` are of the logits ``z_L``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from fastjac import fused, losses
from fastjac._jit import kernel
from fastjac.activations import second_derivative
from fastjac.fused import forward_block, last_weights_T
from fastjac.blas import N as NOTR
from fastjac.blas import T as TR
from fastjac.blas import gemm
from fastjac.scalar import flush_threshold
from fastjac.views import row_range, view1, view2
from fastjac.losses import (
    HESSIAN_SQRT,
    IDENTITY_COTANGENTS,
    LOSS_GRADIENT,
    MONTE_CARLO,
    row_cotangents,
    row_derivatives,
    row_hessian_vector,
)

if TYPE_CHECKING:
    from fastjac.mlp import MLP, Params

# What ``factors_pass`` does with the backpropagated vectors of a block.
PER_EXAMPLE, NORMS, SUM_SQUARES, KFAC, FACTORS, JACOBIAN = 0, 1, 2, 3, 4, 5


# ---------------------------------------------------------------- what a block's vectors feed

@kernel(helper=True)
def per_example_rows(A: np.ndarray, G: np.ndarray, oW: int, ob: int, out: np.ndarray) -> None:
    """``out[r, oW + i n + j] = A[r, i] G[r, j]`` and ``out[r, ob + j] = G[r, j]``:
    row r's gradient of layer l; A (B, p), G (B, n), out (B, P)."""
    B, p = A.shape
    n = G.shape[1]
    for r in range(B):
        o = out[r]
        g = G[r]
        for i in range(p):
            a = A[r, i]
            for j in range(n):
                o[oW + i * n + j] = a * g[j]
        for j in range(n):
            o[ob + j] = g[j]


@kernel(helper=True)
def norm_rows(A: np.ndarray, G: np.ndarray, out: np.ndarray) -> None:
    """``out[r] += (|A[r]|^2 + 1) |G[r]|^2``: the squared norm of row r's ``[W_l; b_l]``
    gradient, never formed."""
    B, p = A.shape
    n = G.shape[1]
    for r in range(B):
        aa = 1.0
        for i in range(p):
            aa += A[r, i] * A[r, i]
        gg = 0.0
        for j in range(n):
            gg += G[r, j] * G[r, j]
        out[r] += aa * gg


@kernel(helper=True)
def square_sums(A: np.ndarray, G: np.ndarray, C: int, A2: np.ndarray, M: np.ndarray,
                accW: np.ndarray, accb: np.ndarray) -> None:
    """``accW += (A o A)^T M``, ``accb += sum_rows M`` with ``M[r, j] = sum_c G[r C + c, j]^2``:
    the sum over rows and columns c of the squared ``a g_c^T`` (diagonals of sums of
    outer products). A (B, p), G (B C, n); A2 (B, p) and M (B, n) scratch."""
    B, p = A.shape
    n = G.shape[1]
    for r in range(B):
        for i in range(p):
            A2[r, i] = A[r, i] * A[r, i]
        for j in range(n):
            M[r, j] = 0.0
        for c in range(C):
            g = G[r * C + c]
            for j in range(n):
                M[r, j] += g[j] * g[j]
        for j in range(n):
            accb[j] += M[r, j]
    gemm(TR, NOTR, 1.0, A2, M, 1.0, accW)


@kernel(helper=True)
def kfac_sums(A: np.ndarray, G: np.ndarray, AA: np.ndarray, accA: np.ndarray,
              accB: np.ndarray) -> None:
    """``accA += abar^T abar`` over the rows (``abar = [A 1]``, accA (p+1, p+1)) and
    ``accB += G^T G`` (G (B C, n)); AA (p, p) scratch."""
    B, p = A.shape
    gemm(TR, NOTR, 1.0, A, A, 0.0, AA)
    for i in range(p):
        s = 0.0
        for r in range(B):
            s += A[r, i]
        accA[i, p] += s
        accA[p, i] += s
        for k in range(p):
            accA[i, k] += AA[i, k]
    accA[p, p] += B
    gemm(TR, NOTR, 1.0, G, G, 1.0, accB)


@kernel(helper=True)
def factor_rows(A: np.ndarray, G: np.ndarray, C: int, oa: int, og: int,
                out: np.ndarray) -> None:
    """Row r's factors: ``out[r, oa:oa + p] = A[r]`` and ``out[r, og:og + C n] = G[r C:(r+1) C]``."""
    B, p = A.shape
    n = G.shape[1]
    for r in range(B):
        for i in range(p):
            out[r, oa + i] = A[r, i]
        for c in range(C):
            for j in range(n):
                out[r, og + c * n + j] = G[r * C + c, j]


@kernel(helper=True)
def jacobian_rows(A: np.ndarray, G: np.ndarray, C: int, oW: int, ob: int,
                  out: np.ndarray) -> None:
    """Row r's Jacobian of logit c in layer l: ``out[r, c, oW + i n + j] = A[r, i] G[r C + c, j]``,
    ``out[r, c, ob + j] = G[r C + c, j]``; out (B, C, P)."""
    B, p = A.shape
    n = G.shape[1]
    for r in range(B):
        for c in range(C):
            o = out[r, c]
            g = G[r * C + c]
            for i in range(p):
                a = A[r, i]
                for j in range(n):
                    o[oW + i * n + j] = a * g[j]
            for j in range(n):
                o[ob + j] = g[j]


@kernel(helper=True)
def scale_rows_by(G: np.ndarray, C: int, D: np.ndarray, tiny: float) -> None:
    """``G[r C + c] *= D[r]`` (the slopes of the layer below, for every column c)."""
    B, n = D.shape
    for r in range(B):
        for c in range(C):
            g = G[r * C + c]
            for j in range(n):
                v = g[j] * D[r, j]
                g[j] = 0.0 if abs(v) < tiny else v


# ---------------------------------------------------------------- the kernels of one network kind

class CurvatureKernels(NamedTuple):
    """The curvature kernels made for one activation ``mode`` and one loss."""

    factors_pass: Any
    tangent_pass: Any
    hessian_diag_pass: Any


@functools.cache
def curvature_kernels(mode: int, loss: int) -> CurvatureKernels:
    """The curvature kernels for hidden activation ``mode`` and loss code ``loss`` (constants
    of the kernels, as in ``fastjac.fused.kernels``: compiled once per dtype for every shape)."""
    MODE, LOSS = int(mode), int(loss)

    @kernel
    def factors_pass(X: np.ndarray, Y: np.ndarray, rnd: np.ndarray, theta: np.ndarray,
                     offs: np.ndarray, sizes: np.ndarray, acts: np.ndarray, lo: int, hi: int,
                     block: int, hoffs: np.ndarray, work: np.ndarray, source: int, C: int,
                     what: int, G0: np.ndarray, G1: np.ndarray, S0: np.ndarray, S1: np.ndarray,
                     zrow: np.ndarray, prow: np.ndarray, out: np.ndarray, aux: np.ndarray,
                     acc: np.ndarray, aoffs: np.ndarray, fns: np.ndarray) -> None:
        """Backpropagate C vectors a row (``source``, ``losses.row_cotangents``) through rows
        ``[lo, hi)`` and feed each layer's (a_{l-1}, g_l) to ``what``.

        PER_EXAMPLE: out (N, P) rows of per-example gradients; NORMS: aux (N,)
        squared norms; SUM_SQUARES: acc (P,); KFAC: acc, layer l's A at
        ``aoffs[2l-2]`` and B at ``aoffs[2l-1]``; FACTORS: out (N, sum n_{l-1}
        + C sum n_l), a's then g's, at ``aoffs``; JACOBIAN: out (N, C P) as (C, P).
        G0, G1 (>= block C max n), S0, S1 (>= block max n): scratch.
        """
        L = sizes.shape[0] - 1
        m = sizes[L]
        WLT = last_weights_T(theta, offs, sizes, work)
        bL = view1(theta, offs[2 * L - 1], m)
        tiny = flush_threshold(work)
        P = offs[2 * L]
        for start in range(lo, hi, block):
            stop = min(start + block, hi)
            B = stop - start
            forward_block(row_range(X, start, stop), theta, offs, sizes, acts, block, hoffs,
                          work, WLT, bL, True, fns)
            ZT = view2(work, hoffs[L], m, B)
            G = view2(G0, 0, B * C, m)
            z = zrow[:m]
            for r in range(B):
                for i in range(m):
                    z[i] = ZT[i, r]
                y = Y[start + r] if Y.shape[0] else z
                rr = rnd[start + r] if rnd.shape[0] else z
                row_cotangents(LOSS, source, z, y, rr, prow[:m], G[r * C:(r + 1) * C])
            for l in range(L, 0, -1):
                n = sizes[l]
                p = sizes[l - 1]
                Ap = row_range(X, start, stop) if l == 1 else view2(work, hoffs[l - 1], B, p)
                if what == PER_EXAMPLE:
                    per_example_rows(Ap, G, offs[2 * l - 2], offs[2 * l - 1],
                                     row_range(out, start, stop))
                elif what == NORMS:
                    norm_rows(Ap, G, aux[start:stop])
                elif what == SUM_SQUARES:
                    square_sums(Ap, G, C, view2(S0, 0, B, p), view2(S1, 0, B, n),
                                view2(acc, offs[2 * l - 2], p, n),
                                view1(acc, offs[2 * l - 1], n))
                elif what == KFAC:
                    oA, oB = aoffs[2 * l - 2], aoffs[2 * l - 1]
                    kfac_sums(Ap, G, view2(S0, 0, p, p),
                              view2(acc, oA, p + 1, p + 1),
                              view2(acc, oB, n, n))
                elif what == FACTORS:
                    factor_rows(Ap, G, C, aoffs[l - 1], aoffs[L + l - 1], out[start:stop])
                else:
                    jacobian_rows(Ap, G, C, offs[2 * l - 2], offs[2 * l - 1],
                                  row_range(out, start, stop).reshape((B, C, P)))
                if l > 1:  # g_{l-1} = (g_l W_l^T) f'(z_{l-1}), into the other buffer
                    nxt = G1 if (L - l) % 2 == 0 else G0
                    Gp = view2(nxt, 0, B * C, p)
                    W = view2(theta, offs[2 * l - 2], p, n)
                    gemm(NOTR, TR, 1.0, G, W, 0.0, Gp)
                    o = hoffs[l - 1]
                    scale_rows_by(Gp, C, view2(work, o + block * p, B, p),
                                  tiny)
                    G = Gp

    @kernel
    def tangent_pass(X: np.ndarray, Y: np.ndarray, theta: np.ndarray, v: np.ndarray,
                     offs: np.ndarray, sizes: np.ndarray, acts: np.ndarray, lo: int, hi: int,
                     block: int, hoffs: np.ndarray, work: np.ndarray, Zd: np.ndarray,
                     T0: np.ndarray, T1: np.ndarray, T2: np.ndarray, T3: np.ndarray,
                     T4: np.ndarray, hessian: bool, denom: float, zrow: np.ndarray,
                     prow: np.ndarray, urow: np.ndarray, hrow: np.ndarray,
                     out: np.ndarray, fns: np.ndarray) -> None:
        """Add the rows ``[lo, hi)``' part of ``G v`` (or ``H v`` if ``hessian``) to ``out``.

        Forward tangents ``zd_l = ad_{l-1} W_l + a_{l-1} V_l + vb_l``, ``ad_l = f'(z_l) zd_l``;
        at the logits ``gd_L = H_n zd_L / denom`` (and ``g_L = dl_n/dz / denom``);
        backward ``out_W_l += a_{l-1}^T gd_l (+ ad_{l-1}^T g_l)``, ``out_b_l += sum gd_l``,
        ``gd_{l-1} = (gd_l W_l^T (+ g_l V_l^T)) f'(z_{l-1}) (+ (g_l W_l^T) f''(z_{l-1}) zd_{l-1})``.
        Zd: the hidden layers' zd_l at ``hoffs[l] // 2`` (block n_l each) and the logits'
        tangent (B, m) after; T0..T4 (>= block max n) scratch.
        """
        L = sizes.shape[0] - 1
        m = sizes[L]
        WLT = last_weights_T(theta, offs, sizes, work)
        bL = view1(theta, offs[2 * L - 1], m)
        for start in range(lo, hi, block):
            stop = min(start + block, hi)
            B = stop - start
            Xb = row_range(X, start, stop)
            forward_block(Xb, theta, offs, sizes, acts, block, hoffs, work, WLT, bL, True, fns)
            # forward tangents
            Adp = view2(T0, 0, 0, 1)
            for l in range(1, L + 1):
                n = sizes[l]
                p = sizes[l - 1]
                o = hoffs[l] // 2 if l < L else hoffs[L] // 2
                Zl = view2(Zd, o, B, n)
                Ap = Xb if l == 1 else view2(work, hoffs[l - 1], B, p)
                V = view2(v, offs[2 * l - 2], p, n)
                gemm(NOTR, NOTR, 1.0, Ap, V, 0.0, Zl)
                if l > 1:
                    gemm(NOTR, NOTR, 1.0, Adp, view2(theta, offs[2 * l - 2], p, n),
                         1.0, Zl)
                vb = view1(v, offs[2 * l - 1], n)
                for r in range(B):
                    for j in range(n):
                        Zl[r, j] += vb[j]
                if l < L:  # ad_l = f'(z_l) zd_l, over ad_{l-1} (no longer needed)
                    D = view2(work, hoffs[l] + block * n, B, n)
                    Adp = view2(T0, 0, B, n)
                    for r in range(B):
                        for j in range(n):
                            Adp[r, j] = D[r, j] * Zl[r, j]
            # at the logits
            ZT = view2(work, hoffs[L], m, B)
            ZdL = view2(Zd, hoffs[L] // 2, B, m)
            Gd = view2(T2, 0, B, m)
            Gg = view2(T3, 0, B, m)
            z, p_, u, hv = zrow[:m], prow[:m], urow[:m], hrow[:m]
            for r in range(B):
                for i in range(m):
                    z[i] = ZT[i, r]
                row_derivatives(LOSS, z, Y[start + r], u, p_)
                row_hessian_vector(LOSS, Y[start + r], p_, ZdL[r], hv)
                for i in range(m):
                    Gd[r, i] = hv[i] / denom
                    Gg[r, i] = u[i] / denom
            # backward: gd_l (and g_l) of the current layer in T2 (and T3)
            for l in range(L, 0, -1):
                n = sizes[l]
                p = sizes[l - 1]
                Gd = view2(T2, 0, B, n)
                Gg = view2(T3, 0, B, n)
                Ap = Xb if l == 1 else view2(work, hoffs[l - 1], B, p)
                oW = view2(out, offs[2 * l - 2], p, n)
                gemm(TR, NOTR, 1.0, Ap, Gd, 1.0, oW)
                ob = view1(out, offs[2 * l - 1], n)
                for r in range(B):
                    for j in range(n):
                        ob[j] += Gd[r, j]
                if l == 1:
                    break
                W = view2(theta, offs[2 * l - 2], p, n)
                D = view2(work, hoffs[l - 1] + block * p, B, p)
                Zp = view2(Zd, hoffs[l - 1] // 2, B, p)
                Gdn = view2(T0, 0, B, p)
                gemm(NOTR, TR, 1.0, Gd, W, 0.0, Gdn)
                if hessian:
                    Adp = view2(T4, 0, B, p)  # ad_{l-1} = f'(z_{l-1}) zd_{l-1}
                    for r in range(B):
                        for j in range(p):
                            Adp[r, j] = D[r, j] * Zp[r, j]
                    gemm(TR, NOTR, 1.0, Adp, Gg, 1.0, oW)
                    Ggn = view2(T1, 0, B, p)
                    gemm(NOTR, TR, 1.0, Gg, view2(v, offs[2 * l - 2], p, n),
                         1.0, Gdn)
                    gemm(NOTR, TR, 1.0, Gg, W, 0.0, Ggn)
                    A1 = view2(work, hoffs[l - 1], B, p)
                    Gg2 = view2(T3, 0, B, p)
                    for r in range(B):
                        for j in range(p):
                            d = D[r, j]
                            f2 = second_derivative(MODE, acts[l - 2], A1[r, j], d)
                            Gdn[r, j] = Gdn[r, j] * d + Ggn[r, j] * f2 * Zp[r, j]
                            Gg2[r, j] = Ggn[r, j] * d
                else:
                    for r in range(B):
                        for j in range(p):
                            Gdn[r, j] = Gdn[r, j] * D[r, j]
                Gd2 = view2(T2, 0, B, p)
                for r in range(B):
                    for j in range(p):
                        Gd2[r, j] = Gdn[r, j]

    @kernel
    def hessian_diag_pass(X: np.ndarray, Y: np.ndarray, theta: np.ndarray, offs: np.ndarray,
                          sizes: np.ndarray, acts: np.ndarray, lo: int, hi: int, block: int,
                          hoffs: np.ndarray, work: np.ndarray, H0: np.ndarray, H1: np.ndarray,
                          Tm: np.ndarray, g0: np.ndarray, g1: np.ndarray, zrow: np.ndarray,
                          prow: np.ndarray, erow: np.ndarray, acc: np.ndarray,
                          fns: np.ndarray) -> None:
        """Add the rows ``[lo, hi)``' ``sum_n diag(d^2 l_n / dtheta^2)`` to ``acc`` (P,), from each
        row's Hessian in every layer's pre-activation, by the exact recursion
        ``H_{l-1} = D W_l H_l W_l^T D + diag(f''(z_{l-1}) (W_l g_l))``, ``D = diag f'(z_{l-1})``,
        and ``diag d^2 l/dW_l^2 = a_{l-1}^2 diag(H_l)^T``. H0, H1, Tm (>= max n^2), g0, g1,
        erow (>= max n) scratch."""
        L = sizes.shape[0] - 1
        m = sizes[L]
        WLT = last_weights_T(theta, offs, sizes, work)
        bL = view1(theta, offs[2 * L - 1], m)
        for start in range(lo, hi, block):
            stop = min(start + block, hi)
            B = stop - start
            Xb = row_range(X, start, stop)
            forward_block(Xb, theta, offs, sizes, acts, block, hoffs, work, WLT, bL, True, fns)
            ZT = view2(work, hoffs[L], m, B)
            z, p_, e = zrow[:m], prow[:m], erow[:m]
            for r in range(B):
                for i in range(m):
                    z[i] = ZT[i, r]
                y = Y[start + r]
                H = view2(H0, 0, m, m)
                g = g0[:m]
                row_derivatives(LOSS, z, y, g, p_)
                for c in range(m):
                    for i in range(m):
                        e[i] = 1.0 if i == c else 0.0
                    row_hessian_vector(LOSS, y, p_, e, H[c])
                for l in range(L, 0, -1):
                    n = sizes[l]
                    p = sizes[l - 1]
                    a = Xb[r] if l == 1 else work[hoffs[l - 1] + r * p:hoffs[l - 1] + (r + 1) * p]
                    accW = view2(acc, offs[2 * l - 2], p, n)
                    accb = view1(acc, offs[2 * l - 1], n)
                    for j in range(n):
                        h = H[j, j]
                        accb[j] += h
                        for i in range(p):
                            accW[i, j] += a[i] * a[i] * h
                    if l == 1:
                        break
                    W = view2(theta, offs[2 * l - 2], p, n)
                    D = work[hoffs[l - 1] + block * p + r * p:hoffs[l - 1] + block * p + (r + 1) * p]
                    Tw = view2(Tm, 0, p, n)
                    for i in range(p):  # Tw = W H
                        for k in range(n):
                            s = 0.0
                            for j in range(n):
                                s += W[i, j] * H[j, k]
                            Tw[i, k] = s
                    odd = (L - l) % 2 == 0
                    Hn = (H1 if odd else H0)[:p * p].reshape((p, p))
                    gn = (g1 if odd else g0)[:p]
                    for i in range(p):
                        h = 0.0
                        for j in range(n):
                            h += W[i, j] * g[j]
                        gn[i] = h * D[i]
                        for k in range(p):
                            s = 0.0
                            for j in range(n):
                                s += Tw[i, j] * W[k, j]
                            Hn[i, k] = D[i] * s * D[k]
                        Hn[i, i] += second_derivative(MODE, acts[l - 2], a[i], D[i]) * h
                    H = Hn
                    g = gn

    return CurvatureKernels(factors_pass, tangent_pass, hessian_diag_pass)

# ---------------------------------------------------------------- wrappers

def _setup(net: MLP, X: Any, Y: Any, params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                               fused.NetworkPass, CurvatureKernels]:
    """X, Y (or an empty Y) and the flat parameters in one dtype, the plan, the kernels."""
    Xc, Yc, _, theta, _, run = net._prepared(X, Y, None)(params)
    if Yc is None:
        Yc = np.empty((0, net.sizes[-1]), dtype=Xc.dtype)
    return Xc, Yc, theta, run, curvature_kernels(net._mode, net._loss)


def _factors(net: MLP, X: Any, Y: Any, params: Params, source: int, C: int, what: int,
             rnd: np.ndarray | None = None, out_width: int = 0, acc_size: int = 0,
             aoffs: Sequence[int] = (0,)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``factors_pass`` over all rows: ``(out (N, out_width), aux (N,), acc (acc_size,))``,
    the accumulators added in chunk order."""
    Xc, Yc, theta, run, kern = _setup(net, X, Y, params)
    N, dtype = Xc.shape[0], Xc.dtype
    sizes, block, nchunks = run.sizes, run.block, run.nchunks
    widest = int(max(sizes))
    out = np.zeros((N, out_width), dtype=dtype) if out_width else np.empty((0, 0), dtype=dtype)
    aux = np.zeros(N if what == NORMS else 0, dtype=dtype)
    acc = np.zeros((nchunks, acc_size), dtype=dtype)
    work = np.empty((nchunks, run.scratch), dtype=dtype)
    G = np.empty((nchunks, 2, block * C * widest), dtype=dtype)
    S = np.empty((nchunks, 2, max(block * widest, widest * widest)), dtype=dtype)
    rows = np.empty((nchunks, 2, widest), dtype=dtype)
    rnd = np.empty((0, 0), dtype=dtype) if rnd is None else rnd.astype(dtype)
    aoffs_arr = np.asarray(aoffs, dtype=np.int64)
    fns = run.helpers(dtype)

    def chunk(c: int) -> None:
        kern.factors_pass(Xc, Yc, rnd, theta, run.offs, sizes, run.acts, c * N // nchunks,
                          (c + 1) * N // nchunks, block, run.hoffs, work[c], source, C, what,
                          G[c, 0], G[c, 1], S[c, 0], S[c, 1], rows[c, 0], rows[c, 1], out, aux,
                          acc[c], aoffs_arr, fns)

    fused.run_chunks(chunk, nchunks, one_blas_thread=nchunks > 1)
    for c in range(1, nchunks):
        np.add(acc[0], acc[c], out=acc[0])
    return out, aux, acc[0]


def _mc_numbers(net: MLP, N: int, samples: int, seed: Any) -> np.ndarray:
    """The random numbers of ``samples`` Monte Carlo targets a row (``losses.row_cotangents``)."""
    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise ValueError(f"mc_samples must be a positive integer, got {samples!r}")
    rng = np.random.default_rng(seed)
    m = net.sizes[-1]
    if net._loss == losses.SOFTMAX_CROSS_ENTROPY:
        return rng.random((N, samples))
    if net._loss == losses.BINARY_CROSS_ENTROPY:
        return rng.random((N, samples * m))
    return rng.standard_normal((N, samples * m))


def _per_layer(net: MLP, flat: np.ndarray, lead: tuple[int, ...] = ()) -> list[NDArray[np.floating]]:
    """Blocks ``[W_1 (*lead, n_0, n_1), b_1 (*lead, n_1), ...]`` of flat parameter-shaped rows."""
    return [flat[..., a:b].reshape(lead + shape) for a, b, shape in net._views]


def _add_alpha(net: MLP, blocks: list[np.ndarray], v: Sequence[np.ndarray] | None, N: int) -> None:
    """Add the penalty's curvature ``(alpha / N) I`` on the weights (times v, or its diagonal)."""
    if net.alpha == 0:
        return
    for l in range(net.n_layers):
        blocks[2 * l] += (net.alpha / N) * (1.0 if v is None else np.asarray(v[2 * l]))


def per_example_gradients(net: MLP, X: Any, Y: Any, params: Params) -> list[NDArray[np.floating]]:
    """``grad l_n`` for every row: blocks ``W_l (N, n_{l-1}, n_l)``, ``b_l (N, n_l)``, filled
    block of rows by block of rows (``a_{l-1,n} g_{l,n}^T``); memory N P."""
    N = np.shape(X)[0]
    out, _, _ = _factors(net, X, Y, params, LOSS_GRADIENT, 1, PER_EXAMPLE, out_width=net.n_params)
    return _per_layer(net, out, (N,))


def per_example_gradient_norms(net: MLP, X: Any, Y: Any, params: Params) -> NDArray[np.floating]:
    """``|grad l_n|`` (N,): ``sqrt(sum_l (|a_{l-1,n}|^2 + 1) |g_{l,n}|^2)``, never forming the
    gradients; memory O(N + P)."""
    _, aux, _ = _factors(net, X, Y, params, LOSS_GRADIENT, 1, NORMS)
    return np.sqrt(aux)


def sum_grad_squared(net: MLP, X: Any, Y: Any, params: Params) -> list[NDArray[np.floating]]:
    """``sum_n (grad l_n)^2`` per block (BackPACK's SumGradSquared for the per-example losses
    l_n; BackPACK's with a mean-reduced loss is this over N^2): ``(A o A)^T (G o G)``."""
    _, _, acc = _factors(net, X, Y, params, LOSS_GRADIENT, 1, SUM_SQUARES, acc_size=net.n_params)
    return _per_layer(net, acc)


def diag_ggn(net: MLP, X: Any, Y: Any, params: Params, mc_samples: int | None = None,
             seed: Any = None) -> list[NDArray[np.floating]]:
    """The diagonal of ``G = (1/N) sum_n J_n^T H_n J_n`` (+ alpha/N on the weights), per block:
    ``(1/N) (A o A)^T sum_c (S_c o S_c)`` with S the backpropagated square root of the
    loss Hessian (m columns), or, with ``mc_samples``, of its Monte Carlo estimate (the
    Fisher's: gradients of targets drawn from the model, ``seed`` for the draws)."""
    N = np.shape(X)[0]
    if mc_samples is None:
        source, C, rnd = HESSIAN_SQRT, net.sizes[-1], None
    else:
        source, C, rnd = MONTE_CARLO, int(mc_samples), _mc_numbers(net, N, mc_samples, seed)
    _, _, acc = _factors(net, X, Y, params, source, C, SUM_SQUARES, rnd=rnd, acc_size=net.n_params)
    blocks = _per_layer(net, acc / N)
    _add_alpha(net, blocks, None, N)
    return blocks


def kfac(net: MLP, X: Any, Y: Any, params: Params, fisher: str = "exact", mc_samples: int = 1,
         seed: Any = None) -> list[tuple[NDArray[np.floating], NDArray[np.floating]]]:
    """K-FAC factors per layer ``(A_l, B_l)``: ``A_l = (1/N) sum_n abar abar^T`` ((n_{l-1} + 1)^2,
    ``abar = [a_{l-1,n}; 1]``) and ``B_l = (1/N) sum_n S S^T`` (n_l^2) with S the
    backpropagated vectors: the Hessian's square root (``fisher="exact"``, KFLR), Monte
    Carlo gradients (``"mc"``, ``mc_samples`` a row) or the loss gradient
    (``"empirical"``). ``kron(A_l, B_l)`` approximates the GGN block of
    ``vec([W_l; b_l])`` (row-major; W_l's entries, then b_l's); exact at N = 1.
    No alpha."""
    N = np.shape(X)[0]
    if fisher == "exact":
        source, C, rnd = HESSIAN_SQRT, net.sizes[-1], None
    elif fisher == "mc":
        source, C, rnd = MONTE_CARLO, int(mc_samples), _mc_numbers(net, N, mc_samples, seed)
    elif fisher == "empirical":
        source, C, rnd = LOSS_GRADIENT, 1, None
    else:
        raise ValueError(f"fisher must be 'exact', 'mc' or 'empirical', got {fisher!r}")
    aoffs, o = [], 0
    for p, n in zip(net.sizes[:-1], net.sizes[1:]):
        aoffs += [o, o + (p + 1) ** 2]
        o += (p + 1) ** 2 + n * n
    _, _, acc = _factors(net, X, Y, params, source, C, KFAC, rnd=rnd, acc_size=o, aoffs=aoffs)
    out = []
    for l, (p, n) in enumerate(zip(net.sizes[:-1], net.sizes[1:])):
        A = acc[aoffs[2 * l]:aoffs[2 * l] + (p + 1) ** 2].reshape(p + 1, p + 1) / N
        B = acc[aoffs[2 * l + 1]:aoffs[2 * l + 1] + n * n].reshape(n, n) / N
        out.append((A, B))
    return out


def _tangent(net: MLP, X: Any, Y: Any, params: Params, v: Params, hessian: bool
             ) -> list[NDArray[np.floating]]:
    Xc, Yc, theta, run, kern = _setup(net, X, Y, params)
    vflat = net.pack(v, dtype=theta.dtype)
    N, dtype = Xc.shape[0], Xc.dtype
    block, nchunks = run.block, run.nchunks
    widest = int(max(run.sizes))
    m = int(run.sizes[-1])
    out = np.zeros((nchunks, net.n_params), dtype=dtype)
    work = np.empty((nchunks, run.scratch), dtype=dtype)
    Zd = np.empty((nchunks, int(run.hoffs[-1]) // 2 + block * m), dtype=dtype)
    T = np.empty((nchunks, 5, block * widest), dtype=dtype)
    rows = np.empty((nchunks, 4, widest), dtype=dtype)
    fns = run.helpers(dtype)

    def chunk(c: int) -> None:
        kern.tangent_pass(Xc, Yc, theta, vflat, run.offs, run.sizes, run.acts, c * N // nchunks,
                          (c + 1) * N // nchunks, block, run.hoffs, work[c], Zd[c], T[c, 0],
                          T[c, 1], T[c, 2], T[c, 3], T[c, 4], hessian, float(N), rows[c, 0],
                          rows[c, 1], rows[c, 2], rows[c, 3], out[c], fns)

    fused.run_chunks(chunk, nchunks, one_blas_thread=nchunks > 1)
    for c in range(1, nchunks):
        np.add(out[0], out[c], out=out[0])
    blocks = _per_layer(net, out[0])
    _add_alpha(net, blocks, net._blocks(v), N)
    return blocks


def ggn_vector_product(net: MLP, X: Any, Y: Any, params: Params, v: Params
                       ) -> list[NDArray[np.floating]]:
    """``G v`` (+ alpha/N v on the weights): a forward pass of tangents ``J_n v``, ``H_n``
    at the logits, and the backward pass; v and the result are lists of blocks."""
    return _tangent(net, X, Y, params, v, False)


def hessian_vector_product(net: MLP, X: Any, Y: Any, params: Params, v: Params
                           ) -> list[NDArray[np.floating]]:
    """``H v`` of the mean loss (+ alpha/N v on the weights), exact: Pearlmutter's R-operator
    on the fused backward pass (the GGN's terms plus ``g_l V_l^T`` and ``f''`` ones)."""
    return _tangent(net, X, Y, params, v, True)


def diag_hessian(net: MLP, X: Any, Y: Any, params: Params) -> list[NDArray[np.floating]]:
    """The exact diagonal of the Hessian of the mean loss (+ alpha/N on the weights), per
    block, from each row's Hessian in every pre-activation (``hessian_diag_pass``);
    cost per row O(sum_l n_{l-1}^2 n_l)."""
    Xc, Yc, theta, run, kern = _setup(net, X, Y, params)
    N, dtype = Xc.shape[0], Xc.dtype
    block, nchunks = run.block, run.nchunks
    widest = int(max(run.sizes))
    acc = np.zeros((nchunks, net.n_params), dtype=dtype)
    work = np.empty((nchunks, run.scratch), dtype=dtype)
    Hs = np.empty((nchunks, 3, widest * widest), dtype=dtype)
    vecs = np.empty((nchunks, 5, widest), dtype=dtype)
    fns = run.helpers(dtype)

    def chunk(c: int) -> None:
        kern.hessian_diag_pass(Xc, Yc, theta, run.offs, run.sizes, run.acts, c * N // nchunks,
                               (c + 1) * N // nchunks, block, run.hoffs, work[c], Hs[c, 0],
                               Hs[c, 1], Hs[c, 2], vecs[c, 0], vecs[c, 1], vecs[c, 2],
                               vecs[c, 3], vecs[c, 4], acc[c], fns)

    fused.run_chunks(chunk, nchunks, one_blas_thread=nchunks > 1)
    for c in range(1, nchunks):
        np.add(acc[0], acc[c], out=acc[0])
    blocks = _per_layer(net, acc[0] / N)
    _add_alpha(net, blocks, None, N)
    return blocks


class FactoredJacobian:
    """Per-example Jacobians of the logits in factored form: for layer l and row n,
    ``dz_L / dW_l = a_{l-1,n} (x) B_{l,n}`` and ``dz_L / db_l = B_{l,n}``.

    ``B[l]`` (N, m, n_l) and ``a[l]`` (N, n_{l-1}): ``N sum_l (m n_l + n_{l-1})``
    values instead of the ``N m P`` of ``to_dense()``.
    """

    def __init__(self, net: MLP, a: list[np.ndarray], B: list[np.ndarray]) -> None:
        self.net, self.a, self.B = net, a, B

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.a) + sum(x.nbytes for x in self.B)

    def to_dense(self) -> list[NDArray[np.floating]]:
        """The blocks of ``jacobian_params``: ``(N, m, n_{l-1}, n_l)`` and ``(N, m, n_l)``."""
        out: list[NDArray[np.floating]] = []
        for a, B in zip(self.a, self.B):
            out += [a[:, None, :, None] * B[:, :, None, :], B.copy()]
        return out


def _factored(net: MLP, X: Any, params: Params) -> FactoredJacobian:
    N = np.shape(X)[0]
    m, L = net.sizes[-1], net.n_layers
    inputs, grads = list(net.sizes[:-1]), list(net.sizes[1:])
    aoffs = list(np.cumsum([0] + inputs)[:-1]) + list(sum(inputs) + m * np.cumsum([0] + grads)[:-1])
    width = sum(inputs) + m * sum(grads)
    out, _, _ = _factors(net, X, None, params, IDENTITY_COTANGENTS, m, FACTORS, out_width=width,
                         aoffs=[int(o) for o in aoffs])
    a = [out[:, aoffs[l]:aoffs[l] + inputs[l]] for l in range(L)]
    B = [out[:, aoffs[L + l]:aoffs[L + l] + m * grads[l]].reshape(N, m, grads[l]) for l in range(L)]
    return FactoredJacobian(net, a, B)


def jacobian_params(net: MLP, X: Any, params: Params, factored: bool = False
                    ) -> list[NDArray[np.floating]] | FactoredJacobian:
    """Per-example Jacobians of the logits: blocks ``(N, m, n_{l-1}, n_l)``, ``(N, m, n_l)``
    (memory N m P), or with ``factored=True`` a ``FactoredJacobian``."""
    if factored:
        return _factored(net, X, params)
    N, m = np.shape(X)[0], net.sizes[-1]
    out, _, _ = _factors(net, X, None, params, IDENTITY_COTANGENTS, m, JACOBIAN,
                         out_width=m * net.n_params)
    return _per_layer(net, out.reshape(N, m, net.n_params), (N, m))


def empirical_ntk(net: MLP, X1: Any, params: Params, X2: Any = None, trace: bool = True
                  ) -> NDArray[np.floating]:
    """``Theta[n, n'] = sum_c J_{n,c} . J_{n',c}`` (N1, N2), or ``(N1, N2, m, m)`` with
    ``trace=False``, from the factored Jacobians: ``sum_l (a a'^T + 1) o (B B'^T)``,
    one GEMM a layer, never the N m P Jacobians."""
    F1 = _factored(net, X1, params)
    F2 = F1 if X2 is None else _factored(net, X2, params)
    N1, N2 = F1.B[0].shape[0], F2.B[0].shape[0]
    m = net.sizes[-1]
    out = np.zeros((N1, N2) if trace else (N1, N2, m, m), dtype=F1.B[0].dtype)
    for a1, B1, a2, B2 in zip(F1.a, F1.B, F2.a, F2.B):
        inner = a1 @ a2.T + 1.0
        if trace:
            out += inner * (B1.reshape(N1, -1) @ B2.reshape(N2, -1).T)
        else:
            out += inner[:, :, None, None] * np.einsum("ncj,pdj->npcd", B1, B2)
    return out
