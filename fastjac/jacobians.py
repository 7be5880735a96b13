"""Structured Jacobians: small frozen classes that hold only their data.

A Jacobian of a map from ``in_shape`` to ``out_shape`` has the dense shape
``out_shape + in_shape`` (the lecture's layout). Each class here stores
O(size of its structure), builds its dense tensor only on ``to_dense()`` and
a ``scipy.sparse`` CSR matrix of shape ``(prod(out), prod(in))`` directly from
its structure on ``to_scipy()``. ``vjp`` and ``jvp`` contract a dense tensor
from the left and from the right; ``fastjac.chain.chain_rule`` dispatches to them.

==============  ===================  ==========================  ==========
class           map                  dense entry                 stores
==============  ===================  ==========================  ==========
Diagonal        elementwise          D[i.., i..] = v[i..]        v (S)
BlockDiagonal   row-wise             D[a, i, a, j] = B[a, i, j]  B (N, p, q)
KronIW          Z = X W (in X)       D[a, j, a, i] = W[i, j]     W (d, k)
KronXI          Z = X W (in W)       D[a, j, i, j] = X[a, i]     X (N, d)
KronOneI        Z = 1 b (in b)       D[a, j, j] = 1              N, k
Composed        Dg o Df, lazily      chain_rule of both          both
==============  ===================  ==========================  ==========
"""

from dataclasses import dataclass
from math import prod

import numpy as np
import scipy.sparse as sp

from fastjac import kernels
from fastjac._validate import as_float


class Jacobian:
    """Base class: shapes, dtype, size and the dense/sparse/contraction plumbing.

    Subclasses set ``out_shape``, ``in_shape``, ``dtype`` and implement
    ``_vjp(G)`` for G (B, *out_shape) and ``_jvp(F)`` for F (*in_shape, R),
    both C-contiguous in the working dtype, plus ``to_dense`` and ``to_scipy``.
    """

    @property
    def shape(self):
        """Shape of the dense tensor: ``out_shape + in_shape``."""
        return self.out_shape + self.in_shape

    @property
    def nbytes(self):
        """Bytes held by the structure's arrays (not by the dense tensor)."""
        return sum(a.nbytes for a in self._arrays())

    def _arrays(self):
        return ()

    def vjp(self, G):
        """``chain_rule(G, self)``: G (*batch, *out_shape) -> (*batch, *in_shape)."""
        G = as_float(G, "Dg")
        nout = len(self.out_shape)
        if G.shape[G.ndim - nout:] != self.out_shape:
            raise ValueError(f"Dg of shape {G.shape} does not end in Df's output shape {self.out_shape}")
        batch = G.shape[: G.ndim - nout]
        dtype = np.result_type(G.dtype, self.dtype)
        G2 = np.ascontiguousarray(G.reshape((prod(batch),) + self.out_shape), dtype=dtype)
        return self._vjp(G2).reshape(batch + self.in_shape)

    def jvp(self, F):
        """``chain_rule(self, F)``: F (*in_shape, *rest) -> (*out_shape, *rest)."""
        F = as_float(F, "Df")
        nin = len(self.in_shape)
        if F.shape[:nin] != self.in_shape:
            raise ValueError(f"Df of shape {F.shape} does not start with Dg's input shape {self.in_shape}")
        rest = F.shape[nin:]
        dtype = np.result_type(F.dtype, self.dtype)
        F2 = np.ascontiguousarray(F.reshape(self.in_shape + (prod(rest),)), dtype=dtype)
        return self._jvp(F2).reshape(self.out_shape + rest)

    def _data(self, a, dtype):
        return np.ascontiguousarray(a, dtype=dtype)

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, nbytes={self.nbytes})"


def _set_array(obj, name, ndim):
    """Validate and store ``obj.name`` as a float ndarray of ``ndim`` dims (frozen dataclass)."""
    object.__setattr__(obj, name, as_float(getattr(obj, name), name, ndim))


def _check_count(value, name):
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _csr(data, indices, indptr, shape):
    return sp.csr_matrix((np.ravel(data), np.ravel(indices), indptr), shape=shape)


def _block_csr(blocks):
    """CSR of the block-diagonal matrix with blocks (N, p, q)."""
    N, p, q = blocks.shape
    indices = np.broadcast_to(np.arange(N)[:, None, None] * q + np.arange(q), (N, p, q))
    return _csr(blocks, indices, np.arange(N * p + 1) * q, (N * p, N * q))


@dataclass(frozen=True, eq=False, repr=False)
class Diagonal(Jacobian):
    """Jacobian of an elementwise map: ``D[i.., i..] = values[i..]``, zero elsewhere.

    values (*S) -> dense shape S + S. Serves any elementwise derivative.
    """

    values: np.ndarray

    def __post_init__(self):
        _set_array(self, "values", None)

    out_shape = property(lambda self: self.values.shape)
    in_shape = property(lambda self: self.values.shape)
    dtype = property(lambda self: self.values.dtype)

    def _arrays(self):
        return (self.values,)

    def _vjp(self, G):
        out = np.empty_like(G)
        kernels.diagonal_vjp(G.reshape(G.shape[0], -1), self._data(self.values, G.dtype).ravel(),
                             out.reshape(G.shape[0], -1))
        return out

    def _jvp(self, F):
        out = np.empty_like(F)
        kernels.diagonal_jvp(self._data(self.values, F.dtype).ravel(), F.reshape(-1, F.shape[-1]),
                             out.reshape(-1, F.shape[-1]))
        return out

    def to_dense(self):
        n = self.values.size
        D = np.zeros((n, n), dtype=self.dtype)
        D[np.arange(n), np.arange(n)] = self.values.ravel()
        return D.reshape(self.shape)

    def to_scipy(self):
        n = self.values.size
        return _csr(self.values, np.arange(n), np.arange(n + 1), (n, n))


@dataclass(frozen=True, eq=False, repr=False)
class BlockDiagonal(Jacobian):
    """Jacobian of a row-wise map: ``D[a, i, a, j] = blocks[a, i, j]``, zero for other rows.

    blocks (N, p, q) -> dense shape (N, p, N, q). Serves any row-wise map R^q -> R^p.
    """

    blocks: np.ndarray

    def __post_init__(self):
        _set_array(self, "blocks", 3)

    out_shape = property(lambda self: self.blocks.shape[:2])
    in_shape = property(lambda self: (self.blocks.shape[0], self.blocks.shape[2]))
    dtype = property(lambda self: self.blocks.dtype)

    def _arrays(self):
        return (self.blocks,)

    def _vjp(self, G):
        out = np.empty((G.shape[0],) + self.in_shape, dtype=G.dtype)
        kernels.block_diagonal_vjp(G, self._data(self.blocks, G.dtype), out)
        return out

    def _jvp(self, F):
        out = np.empty(self.out_shape + F.shape[-1:], dtype=F.dtype)
        kernels.block_diagonal_jvp(self._data(self.blocks, F.dtype), F, out)
        return out

    def to_dense(self):
        N = self.blocks.shape[0]
        D = np.zeros(self.shape, dtype=self.dtype)
        D[np.arange(N), :, np.arange(N), :] = self.blocks
        return D

    def to_scipy(self):
        return _block_csr(self.blocks)


@dataclass(frozen=True, eq=False, repr=False)
class KronIW(Jacobian):
    """``I_N (x) W^T``: Jacobian of ``X @ W`` in X, ``D[a, j, a, i] = W[i, j]``.

    W (d, k), N rows -> dense shape (N, k, N, d). Serves any layer width.
    """

    W: np.ndarray
    N: int

    def __post_init__(self):
        _set_array(self, "W", 2)
        object.__setattr__(self, "N", _check_count(self.N, "N"))

    out_shape = property(lambda self: (self.N, self.W.shape[1]))
    in_shape = property(lambda self: (self.N, self.W.shape[0]))
    dtype = property(lambda self: self.W.dtype)

    def _arrays(self):
        return (self.W,)

    def _vjp(self, G):
        B, N, k = G.shape
        W = self._data(self.W, G.dtype)
        return kernels.kron_iw_vjp(G.reshape(B * N, k), W).reshape((B,) + self.in_shape)

    def _jvp(self, F):
        out = np.empty(self.out_shape + F.shape[-1:], dtype=F.dtype)
        kernels.kron_iw_jvp(self._data(self.W, F.dtype), F, out)
        return out

    def to_dense(self):
        D = np.zeros(self.shape, dtype=self.dtype)
        D[np.arange(self.N), :, np.arange(self.N), :] = self.W.T
        return D

    def to_scipy(self):
        return _block_csr(np.broadcast_to(self.W.T, (self.N,) + self.W.T.shape))


@dataclass(frozen=True, eq=False, repr=False)
class KronXI(Jacobian):
    """``X (x) I_k``: Jacobian of ``X @ W`` in W, ``D[a, j, i, j] = X[a, i]``.

    X (N, d), k outputs -> dense shape (N, k, d, k).
    """

    X: np.ndarray
    k: int

    def __post_init__(self):
        _set_array(self, "X", 2)
        object.__setattr__(self, "k", _check_count(self.k, "k"))

    out_shape = property(lambda self: (self.X.shape[0], self.k))
    in_shape = property(lambda self: (self.X.shape[1], self.k))
    dtype = property(lambda self: self.X.dtype)

    def _arrays(self):
        return (self.X,)

    def _vjp(self, G):
        out = np.empty((G.shape[0],) + self.in_shape, dtype=G.dtype)
        kernels.kron_xi_vjp(G, self._data(self.X, G.dtype), out)
        return out

    def _jvp(self, F):
        d, k, R = F.shape
        X = self._data(self.X, F.dtype)
        return kernels.kron_xi_jvp(X, F.reshape(d, k * R)).reshape(self.out_shape + (R,))

    def to_dense(self):
        D = np.zeros(self.shape, dtype=self.dtype)
        cols = np.arange(self.k)
        D[:, cols, :, cols] = self.X
        return D

    def to_scipy(self):
        N, d = self.X.shape
        k = self.k
        indices = np.broadcast_to(np.arange(d) * k + np.arange(k)[:, None], (N, k, d))
        data = np.broadcast_to(self.X[:, None, :], (N, k, d))
        return _csr(data, indices, np.arange(N * k + 1) * d, (N * k, d * k))


@dataclass(frozen=True, eq=False, repr=False)
class KronOneI(Jacobian):
    """``1_N (x) I_k``: Jacobian of ``1 b`` in b, ``D[a, j, j] = 1``.

    Stores only N, k and dtype -> dense shape (N, k, k) (the lecture's ``Db_affine``).
    """

    N: int
    k: int
    dtype: np.dtype = np.dtype(np.float64)

    def __post_init__(self):
        object.__setattr__(self, "N", _check_count(self.N, "N"))
        object.__setattr__(self, "k", _check_count(self.k, "k"))
        dtype = np.dtype(self.dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        object.__setattr__(self, "dtype", dtype)

    out_shape = property(lambda self: (self.N, self.k))
    in_shape = property(lambda self: (self.k,))

    def _vjp(self, G):
        out = np.empty((G.shape[0], self.k), dtype=G.dtype)
        kernels.ones_kron_vjp(G, out)
        return out

    def _jvp(self, F):
        return np.broadcast_to(F, self.out_shape + F.shape[-1:]).copy()

    def to_dense(self):
        D = np.zeros(self.shape, dtype=self.dtype)
        cols = np.arange(self.k)
        D[:, cols, cols] = 1
        return D

    def to_scipy(self):
        n = self.N * self.k
        return _csr(np.ones(n, self.dtype), np.tile(np.arange(self.k), self.N), np.arange(n + 1),
                    (n, self.k))


@dataclass(frozen=True, eq=False, repr=False)
class Composed(Jacobian):
    """``outer o inner`` kept lazy where the product has no compact structure.

    Dense shape ``outer.out_shape + inner.in_shape``; contractions go through
    both factors, so nothing larger than either factor's result is allocated.
    """

    outer: Jacobian
    inner: Jacobian

    def __post_init__(self):
        if self.outer.in_shape != self.inner.out_shape:
            raise ValueError(f"cannot compose: outer Jacobian {self.outer.shape} takes input "
                             f"{self.outer.in_shape} but inner {self.inner.shape} gives {self.inner.out_shape}")

    out_shape = property(lambda self: self.outer.out_shape)
    in_shape = property(lambda self: self.inner.in_shape)
    dtype = property(lambda self: np.result_type(self.outer.dtype, self.inner.dtype))

    def _arrays(self):
        return self.outer._arrays() + self.inner._arrays()

    def _vjp(self, G):
        return self.inner.vjp(self.outer.vjp(G))

    def _jvp(self, F):
        return self.outer.jvp(self.inner.jvp(F))

    def to_dense(self):
        return self.outer.jvp(self.inner.to_dense())

    def to_scipy(self):
        return (self.outer.to_scipy() @ self.inner.to_scipy()).tocsr()
