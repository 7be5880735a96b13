"""Numba kernels for structured Jacobians: arrays in, arrays out, loops only.

Wrappers (in ``fastjac.jacobians``) validate, make inputs C-contiguous in one
float dtype and allocate outputs; kernels never check anything. Naming:

* ``*_vjp``: a dense cotangent batch ``G`` (B, out...) times the Jacobian,
  giving (B, in...). This is ``chain_rule(dense, structured)``.
* ``*_jvp``: the Jacobian times a dense ``F`` (in..., R), giving (out..., R).
  This is ``chain_rule(structured, dense)``.

Shapes use N rows, p/q block sizes, d inputs and k outputs of an affine map.
"""

from __future__ import annotations

import numpy as np

from fastjac._jit import kernel


# --- building Jacobian data ---------------------------------------------------

@kernel
def logistic(z: np.ndarray, out: np.ndarray) -> None:
    """out = 1 / (1 + exp(-z)) without overflow, z and out flat (n,)."""
    for i in range(z.size):
        zi = z[i]
        if zi >= 0:
            out[i] = 1 / (1 + np.exp(-zi))
        else:
            e = np.exp(zi)
            out[i] = e / (1 + e)


@kernel
def logistic_derivative(z: np.ndarray, out: np.ndarray) -> None:
    """out = s(z) s(-z) = e / (1 + e)^2 with e = exp(-|z|); z and out flat (n,)."""
    for i in range(z.size):
        e = np.exp(-abs(z[i]))
        out[i] = e / ((1 + e) * (1 + e))


@kernel
def softmax_rows(Z: np.ndarray, V: np.ndarray) -> None:
    """V[a] = exp(Z[a] - max Z[a]) / sum(...), row by row; Z, V (N, m)."""
    N, m = Z.shape
    for a in range(N):
        mx = Z[a, 0]
        for j in range(1, m):
            mx = max(mx, Z[a, j])
        s = 0.0
        for j in range(m):
            V[a, j] = np.exp(Z[a, j] - mx)
            s += V[a, j]
        for j in range(m):
            V[a, j] = V[a, j] / s


@kernel
def softmax_blocks(V: np.ndarray, B: np.ndarray) -> None:
    """B[a] = diag(V[a]) - V[a] V[a]^T; V (N, m), B (N, m, m)."""
    N, m = V.shape
    for a in range(N):
        for i in range(m):
            for j in range(m):
                B[a, i, j] = -V[a, i] * V[a, j]
            B[a, i, i] += V[a, i]


# --- dense cotangents times structured Jacobians (chain_rule(dense, J)) -------

@kernel
def diagonal_vjp(G: np.ndarray, d: np.ndarray, out: np.ndarray) -> None:
    """out[b, i] = G[b, i] d[i]; G, out (B, n), d (n,)."""
    B, n = G.shape
    for b in range(B):
        for i in range(n):
            out[b, i] = G[b, i] * d[i]


@kernel
def block_diagonal_vjp(G: np.ndarray, blocks: np.ndarray, out: np.ndarray) -> None:
    """out[b, a, j] = sum_i G[b, a, i] blocks[a, i, j]; G (B, N, p), blocks (N, p, q)."""
    B, N, p = G.shape
    q = blocks.shape[2]
    for b in range(B):
        for a in range(N):
            for j in range(q):
                out[b, a, j] = 0
            for i in range(p):
                g = G[b, a, i]
                for j in range(q):
                    out[b, a, j] += g * blocks[a, i, j]


@kernel
def kron_iw_vjp(G: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(I (x) W^T) from the left: G (B*N, k) @ W^T -> (B*N, d); W (d, k)."""
    return np.dot(G, W.T.copy())


@kernel
def kron_xi_vjp(G: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
    """(X (x) I) from the left: out[b] = X^T G[b]; G (B, N, k), X (N, d), out (B, d, k)."""
    Xt = X.T.copy()
    for b in range(G.shape[0]):
        out[b] = np.dot(Xt, G[b])


@kernel
def ones_kron_vjp(G: np.ndarray, out: np.ndarray) -> None:
    """(1 (x) I) from the left: out[b, j] = sum_a G[b, a, j]; G (B, N, k), out (B, k)."""
    B, N, k = G.shape
    for b in range(B):
        for j in range(k):
            out[b, j] = 0
        for a in range(N):
            for j in range(k):
                out[b, j] += G[b, a, j]


@kernel
def softmax_vjp(G: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    """out[b, a] = q[a] o G[b, a] - (G[b, a] . q[a]) q[a]; G, out (B, N, m), q (N, m)."""
    B, N, m = G.shape
    for b in range(B):
        for a in range(N):
            s = 0.0
            for i in range(m):
                s += G[b, a, i] * q[a, i]
            for i in range(m):
                out[b, a, i] = q[a, i] * (G[b, a, i] - s)


# --- structured Jacobians times dense tensors (chain_rule(J, dense)) ----------

@kernel
def diagonal_jvp(d: np.ndarray, F: np.ndarray, out: np.ndarray) -> None:
    """out[i, r] = d[i] F[i, r]; d (n,), F, out (n, R)."""
    n, R = F.shape
    for i in range(n):
        for r in range(R):
            out[i, r] = d[i] * F[i, r]


@kernel
def block_diagonal_jvp(blocks: np.ndarray, F: np.ndarray, out: np.ndarray) -> None:
    """out[a] = blocks[a] @ F[a]; blocks (N, p, q), F (N, q, R), out (N, p, R)."""
    N, p, q = blocks.shape
    R = F.shape[2]
    for a in range(N):
        for i in range(p):
            for r in range(R):
                out[a, i, r] = 0
            for j in range(q):
                c = blocks[a, i, j]
                for r in range(R):
                    out[a, i, r] += c * F[a, j, r]


@kernel
def softmax_jvp(q: np.ndarray, F: np.ndarray, out: np.ndarray) -> None:
    """out[a, :, r] = q[a] o F[a, :, r] - (q[a] . F[a, :, r]) q[a]; q (N, m), F, out (N, m, R)."""
    N, m, R = F.shape
    for a in range(N):
        for r in range(R):
            s = 0.0
            for j in range(m):
                s += q[a, j] * F[a, j, r]
            for i in range(m):
                out[a, i, r] = q[a, i] * (F[a, i, r] - s)


@kernel
def kron_iw_jvp(W: np.ndarray, F: np.ndarray, out: np.ndarray) -> None:
    """out[a] = W^T F[a]; W (d, k), F (N, d, R), out (N, k, R)."""
    Wt = W.T.copy()
    for a in range(F.shape[0]):
        out[a] = np.dot(Wt, F[a])


@kernel
def kron_xi_jvp(X: np.ndarray, F: np.ndarray) -> np.ndarray:
    """(X (x) I) F = X @ F; X (N, d), F (d, k*R) -> (N, k*R)."""
    return np.dot(X, F)


# --- structured times structured, where the product stays structured ----------

@kernel
def block_diagonal_product(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> None:
    """out[a] = A[a] @ B[a]; A (N, p, q), B (N, q, r), out (N, p, r)."""
    N, p, q = A.shape
    r = B.shape[2]
    for a in range(N):
        for i in range(p):
            for j in range(r):
                s = 0.0
                for l in range(q):
                    s += A[a, i, l] * B[a, l, j]
                out[a, i, j] = s
