"""Structured Jacobians: small frozen classes that hold only their data.

A Jacobian of a map from ``in_shape`` to ``out_shape`` has the dense shape
``out_shape + in_shape`` (the lecture's layout). Each class stores
O(size of its structure), builds its dense tensor only on ``to_dense()`` and
a ``scipy.sparse`` CSR matrix of shape ``(prod(out), prod(in))`` directly from
its structure on ``to_scipy()``. ``vjp`` and ``jvp`` contract a dense tensor
from the left and from the right; ``fastjac.chain.chain_rule`` dispatches to them.

===================  ====================  ===============================  ==========
class                map                   dense entry                      stores
===================  ====================  ===============================  ==========
Diagonal             elementwise           D[i.., i..] = v[i..]             v (S)
BlockDiagonal        row-wise              D[a, i, a, j] = B[a, i, j]       B (N, p, q)
SoftmaxJacobian      row-wise softmax      D[a, :, a, :] = diag(q) - q q^T  q (N, m)
KronIW               Z = X W (in X)        D[a, j, a, i] = W[i, j]          W (d, k)
KronXI               Z = X W (in W)        D[a, j, i, j] = X[a, i]          X (N, d)
KronOneI             Z = 1 b (in b)        D[a, j, j] = 1                   N, k
CrossEntropyGradient cross_entropy in Q    D[a, j] = -P[a, j] / Q[a, j] / N P, Q (N, m)
Composed             Dg o Df, lazily       chain_rule of both               both
Transposed           J^T, lazily           D[in.., out..] = J[out.., in..]  J
===================  ====================  ===============================  ==========

Every Jacobian is also the linear operator of its matrix ``J.to_scipy()``,
(prod(out), prod(in)), on flattened vectors: ``J @ v`` and ``J.matvec(v)``
for v (n,) or (n, R); ``u @ J`` and ``J.rmatvec(u)`` (``J^T u``) for u (M,)
or (R, M); ``J.T`` (structured), ``J.aslinearoperator()`` (scipy) and
``np.asarray(J)`` (= ``to_dense()``). Densifying checks ``fastjac.budget``
first: ``DenseMemoryError`` instead of an allocation over the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastjac import kernels
from fastjac._validate import as_float
from fastjac.budget import check_dense

if TYPE_CHECKING:  # imported where used: scipy.sparse is 0.1-0.2 s of ``import fastjac``
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator

__all__ = ["Jacobian", "Diagonal", "BlockDiagonal", "SoftmaxJacobian", "KronIW", "KronXI",
           "KronOneI", "CrossEntropyGradient", "Composed", "Transposed"]

Shape = tuple[int, ...]


class Jacobian:
    """Base class: shapes, dtype, size, the dense/sparse forms and the operator interface.

    Subclasses provide ``out_shape``, ``in_shape``, ``dtype``, ``_vjp(G)`` for
    G (B, *out_shape) and ``_jvp(F)`` for F (*in_shape, R), both C-contiguous
    in the working dtype, ``_dense()`` and ``to_scipy()``; ``T`` where the
    transpose has a structure of its own.
    """

    # numpy defers to the Jacobian's own operators (``u @ J`` runs ``__rmatmul__``)
    __array_ufunc__ = None

    @property
    def out_shape(self) -> Shape:
        raise NotImplementedError

    @property
    def in_shape(self) -> Shape:
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype:
        raise NotImplementedError

    @property
    def shape(self) -> Shape:
        """Shape of the dense tensor: ``out_shape + in_shape``."""
        return self.out_shape + self.in_shape

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(prod(out_shape), prod(in_shape))``: the shape of ``to_scipy()`` and of the operator."""
        return prod(self.out_shape), prod(self.in_shape)

    @property
    def nbytes(self) -> int:
        """Bytes held by the structure's arrays (not by the dense tensor)."""
        return sum(a.nbytes for a in self._arrays())

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return ()

    # --- contractions ----------------------------------------------------------

    def vjp(self, G: ArrayLike) -> NDArray[np.floating]:
        """``chain_rule(G, self)``: G (*batch, *out_shape) -> (*batch, *in_shape)."""
        G = as_float(G, "Dg")
        nout = len(self.out_shape)
        if G.shape[G.ndim - nout:] != self.out_shape:
            raise ValueError(f"Dg of shape {G.shape} does not end in Df's output shape {self.out_shape}")
        batch = G.shape[: G.ndim - nout]
        dtype = np.result_type(G.dtype, self.dtype)
        G2 = np.ascontiguousarray(G.reshape((prod(batch),) + self.out_shape), dtype=dtype)
        return self._vjp(G2).reshape(batch + self.in_shape)

    def jvp(self, F: ArrayLike) -> NDArray[np.floating]:
        """``chain_rule(self, F)``: F (*in_shape, *rest) -> (*out_shape, *rest)."""
        F = as_float(F, "Df")
        nin = len(self.in_shape)
        if F.shape[:nin] != self.in_shape:
            raise ValueError(f"Df of shape {F.shape} does not start with Dg's input shape {self.in_shape}")
        rest = F.shape[nin:]
        dtype = np.result_type(F.dtype, self.dtype)
        F2 = np.ascontiguousarray(F.reshape(self.in_shape + (prod(rest),)), dtype=dtype)
        return self._jvp(F2).reshape(self.out_shape + rest)

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --- the linear operator on flattened vectors ------------------------------

    def matvec(self, v: ArrayLike) -> NDArray[np.floating]:
        """``J v``: v (n,) -> (M,), or (n, R) -> (M, R), with (M, n) = ``matrix_shape``."""
        v = self._operand(v, self.matrix_shape[1], "matvec")
        R = v.shape[1] if v.ndim == 2 else 1
        out = self.jvp(v.reshape(self.in_shape + (R,)))
        return out.reshape((self.matrix_shape[0],) + v.shape[1:])

    def rmatvec(self, u: ArrayLike) -> NDArray[np.floating]:
        """``J^T u``: u (M,) -> (n,), or (M, R) -> (n, R)."""
        u = self._operand(u, self.matrix_shape[0], "rmatvec")
        R = u.shape[1] if u.ndim == 2 else 1
        out = self.vjp(u.reshape(self.matrix_shape[0], R).T.reshape((R,) + self.out_shape))
        return out.reshape(R, self.matrix_shape[1]).T.reshape((self.matrix_shape[1],) + u.shape[1:])

    matmat = matvec
    rmatmat = rmatvec

    def _operand(self, v: ArrayLike, n: int, what: str) -> np.ndarray:
        v = as_float(v, "v")
        if v.ndim not in (1, 2) or v.shape[0] != n:
            raise ValueError(f"{what}: the {type(self).__name__} of matrix shape {self.matrix_shape} "
                             f"takes ({n},) or ({n}, R) operands, got shape {v.shape}")
        return v

    def __matmul__(self, other: Any) -> Any:
        """``J @ v`` (``matvec``), or ``J @ K`` for a Jacobian K: ``chain_rule(J, K)``."""
        if isinstance(other, Jacobian):
            from fastjac.chain import chain_rule

            return chain_rule(self, other, self.in_shape)
        return self.matvec(other)

    def __rmatmul__(self, other: Any) -> Any:
        """``u @ J``: u (M,) -> (n,), U (R, M) -> (R, n)."""
        u = as_float(other, "u")
        if u.ndim == 2:
            return self.rmatvec(u.T).T
        return self.rmatvec(u)

    @property
    def T(self) -> Jacobian:
        """The transpose: a Jacobian from ``out_shape`` to ``in_shape``, dense axes swapped."""
        return Transposed(self)

    def aslinearoperator(self) -> LinearOperator:
        """``scipy.sparse.linalg.LinearOperator`` of shape ``matrix_shape`` (matvec, rmatvec, matmat)."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(self.matrix_shape, matvec=self.matvec, rmatvec=self.rmatvec,
                              matmat=self.matmat, rmatmat=self.rmatmat, dtype=self.dtype)

    # --- dense and sparse forms --------------------------------------------------

    def to_dense(self) -> NDArray[np.floating]:
        """The dense tensor (``out_shape + in_shape``), if it fits ``fastjac.budget``'s budget.

        Raises ``fastjac.DenseMemoryError`` (before allocating) when it does not.
        """
        check_dense(self.shape, self.dtype, f"{type(self).__name__}.to_dense()")
        return self._dense()

    def _dense(self) -> np.ndarray:
        raise NotImplementedError

    def to_scipy(self) -> sp.csr_matrix:
        """CSR matrix of shape ``matrix_shape`` built from the structure."""
        raise NotImplementedError

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(f"a {type(self).__name__} holds no dense array to share; "
                             "np.asarray(J) densifies (a copy)")
        D = self.to_dense()
        return D if dtype is None else D.astype(dtype, copy=False)

    def _data(self, a: np.ndarray, dtype: DTypeLike) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, nbytes={self.nbytes})"


def _set_array(obj: Any, name: str, ndim: int | None) -> None:
    """Validate and store ``obj.name`` as a float ndarray of ``ndim`` dims (frozen dataclass)."""
    object.__setattr__(obj, name, as_float(getattr(obj, name), name, ndim))


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _csr(data: ArrayLike, indices: ArrayLike, indptr: ArrayLike, shape: tuple[int, int]) -> sp.csr_matrix:
    import scipy.sparse as sp

    return sp.csr_matrix((np.ravel(data), np.ravel(indices), indptr), shape=shape)


def _block_csr(blocks: np.ndarray) -> sp.csr_matrix:
    """CSR of the block-diagonal matrix with blocks (N, p, q)."""
    N, p, q = blocks.shape
    indices = np.broadcast_to(np.arange(N)[:, None, None] * q + np.arange(q), (N, p, q))
    return _csr(blocks, indices, np.arange(N * p + 1) * q, (N * p, N * q))


@dataclass(frozen=True, eq=False, repr=False)
class Diagonal(Jacobian):
    """Jacobian of an elementwise map: ``D[i.., i..] = values[i..]``, zero elsewhere.

    values (*S) -> dense shape S + S. Serves any elementwise derivative. Symmetric.
    """

    values: np.ndarray

    def __post_init__(self) -> None:
        _set_array(self, "values", None)

    @property
    def out_shape(self) -> Shape:
        return self.values.shape

    @property
    def in_shape(self) -> Shape:
        return self.values.shape

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def T(self) -> Jacobian:
        return self

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.values,)

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        out = np.empty_like(G)
        kernels.diagonal_vjp(G.reshape(G.shape[0], -1), self._data(self.values, G.dtype).ravel(),
                             out.reshape(G.shape[0], -1))
        return out

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        out = np.empty_like(F)
        kernels.diagonal_jvp(self._data(self.values, F.dtype).ravel(), F.reshape(-1, F.shape[-1]),
                             out.reshape(-1, F.shape[-1]))
        return out

    def _dense(self) -> np.ndarray:
        n = self.values.size
        D = np.zeros((n, n), dtype=self.dtype)
        D[np.arange(n), np.arange(n)] = self.values.ravel()
        return D.reshape(self.shape)

    def to_scipy(self) -> sp.csr_matrix:
        n = self.values.size
        return _csr(self.values, np.arange(n), np.arange(n + 1), (n, n))


@dataclass(frozen=True, eq=False, repr=False)
class BlockDiagonal(Jacobian):
    """Jacobian of a row-wise map: ``D[a, i, a, j] = blocks[a, i, j]``, zero for other rows.

    blocks (N, p, q) -> dense shape (N, p, N, q). Serves any row-wise map R^q -> R^p.
    """

    blocks: np.ndarray

    def __post_init__(self) -> None:
        _set_array(self, "blocks", 3)

    @property
    def out_shape(self) -> Shape:
        return self.blocks.shape[:2]

    @property
    def in_shape(self) -> Shape:
        return (self.blocks.shape[0], self.blocks.shape[2])

    @property
    def dtype(self) -> np.dtype:
        return self.blocks.dtype

    @property
    def T(self) -> Jacobian:
        return BlockDiagonal(self.blocks.transpose(0, 2, 1))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.blocks,)

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        out = np.empty((G.shape[0],) + self.in_shape, dtype=G.dtype)
        kernels.block_diagonal_vjp(G, self._data(self.blocks, G.dtype), out)
        return out

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        out = np.empty(self.out_shape + F.shape[-1:], dtype=F.dtype)
        kernels.block_diagonal_jvp(self._data(self.blocks, F.dtype), F, out)
        return out

    def _dense(self) -> np.ndarray:
        N = self.blocks.shape[0]
        D = np.zeros(self.shape, dtype=self.dtype)
        D[np.arange(N), :, np.arange(N), :] = self.blocks
        return D

    def to_scipy(self) -> sp.csr_matrix:
        return _block_csr(self.blocks)


@dataclass(frozen=True, eq=False, repr=False, init=False)
class SoftmaxJacobian(BlockDiagonal):
    """Jacobian of the row-wise softmax: the ``BlockDiagonal`` of ``diag(q_a) - q_a q_a^T``.

    Stores only q (N, m), the softmax output; dense shape (N, m, N, m).
    ``vjp``/``jvp`` cost O(N m): ``u o q - (u . q) q`` per row. ``blocks``
    (N, m, m) is built each time it is asked for. Symmetric.
    """

    q: np.ndarray

    def __init__(self, q: ArrayLike) -> None:
        object.__setattr__(self, "q", as_float(q, "q", 2))

    @property  # type: ignore[misc]
    def blocks(self) -> np.ndarray:
        """``diag(q_a) - q_a q_a^T`` for every row a: (N, m, m), built on each access."""
        q = np.ascontiguousarray(self.q)
        B = np.empty(q.shape + q.shape[1:], dtype=q.dtype)
        kernels.softmax_blocks(q, B)
        return B

    @property
    def out_shape(self) -> Shape:
        return self.q.shape

    @property
    def in_shape(self) -> Shape:
        return self.q.shape

    @property
    def dtype(self) -> np.dtype:
        return self.q.dtype

    @property
    def T(self) -> Jacobian:
        return self

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.q,)

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        out = np.empty_like(G)
        kernels.softmax_vjp(G, self._data(self.q, G.dtype), out)
        return out

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        out = np.empty_like(F)
        kernels.softmax_jvp(self._data(self.q, F.dtype), F, out)
        return out


@dataclass(frozen=True, eq=False, repr=False)
class KronIW(Jacobian):
    """``I_N (x) W^T``: Jacobian of ``X @ W`` in X, ``D[a, j, a, i] = W[i, j]``.

    W (d, k), N rows -> dense shape (N, k, N, d). Transpose: ``KronIW(W^T, N)``.
    """

    W: np.ndarray
    N: int

    def __post_init__(self) -> None:
        _set_array(self, "W", 2)
        object.__setattr__(self, "N", _check_count(self.N, "N"))

    @property
    def out_shape(self) -> Shape:
        return (self.N, self.W.shape[1])

    @property
    def in_shape(self) -> Shape:
        return (self.N, self.W.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.W.dtype

    @property
    def T(self) -> Jacobian:
        return KronIW(self.W.T, self.N)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.W,)

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        B, N, k = G.shape
        W = self._data(self.W, G.dtype)
        return kernels.kron_iw_vjp(G.reshape(B * N, k), W).reshape((B,) + self.in_shape)

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        out = np.empty(self.out_shape + F.shape[-1:], dtype=F.dtype)
        kernels.kron_iw_jvp(self._data(self.W, F.dtype), F, out)
        return out

    def _dense(self) -> np.ndarray:
        D = np.zeros(self.shape, dtype=self.dtype)
        D[np.arange(self.N), :, np.arange(self.N), :] = self.W.T
        return D

    def to_scipy(self) -> sp.csr_matrix:
        return _block_csr(np.broadcast_to(self.W.T, (self.N,) + self.W.T.shape))


@dataclass(frozen=True, eq=False, repr=False)
class KronXI(Jacobian):
    """``X (x) I_k``: Jacobian of ``X @ W`` in W, ``D[a, j, i, j] = X[a, i]``.

    X (N, d), k outputs -> dense shape (N, k, d, k). Transpose: ``KronXI(X^T, k)``.
    """

    X: np.ndarray
    k: int

    def __post_init__(self) -> None:
        _set_array(self, "X", 2)
        object.__setattr__(self, "k", _check_count(self.k, "k"))

    @property
    def out_shape(self) -> Shape:
        return (self.X.shape[0], self.k)

    @property
    def in_shape(self) -> Shape:
        return (self.X.shape[1], self.k)

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    @property
    def T(self) -> Jacobian:
        return KronXI(self.X.T, self.k)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.X,)

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        out = np.empty((G.shape[0],) + self.in_shape, dtype=G.dtype)
        kernels.kron_xi_vjp(G, self._data(self.X, G.dtype), out)
        return out

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        d, k, R = F.shape
        X = self._data(self.X, F.dtype)
        return kernels.kron_xi_jvp(X, F.reshape(d, k * R)).reshape(self.out_shape + (R,))

    def _dense(self) -> np.ndarray:
        D = np.zeros(self.shape, dtype=self.dtype)
        cols = np.arange(self.k)
        D[:, cols, :, cols] = self.X
        return D

    def to_scipy(self) -> sp.csr_matrix:
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "N", _check_count(self.N, "N"))
        object.__setattr__(self, "k", _check_count(self.k, "k"))
        dtype = np.dtype(self.dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        object.__setattr__(self, "dtype", dtype)

    @property
    def out_shape(self) -> Shape:
        return (self.N, self.k)

    @property
    def in_shape(self) -> Shape:
        return (self.k,)

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        out = np.empty((G.shape[0], self.k), dtype=G.dtype)
        kernels.ones_kron_vjp(G, out)
        return out

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        return np.broadcast_to(F, self.out_shape + F.shape[-1:]).copy()

    def _dense(self) -> np.ndarray:
        D = np.zeros(self.shape, dtype=self.dtype)
        cols = np.arange(self.k)
        D[:, cols, cols] = 1
        return D

    def to_scipy(self) -> sp.csr_matrix:
        n = self.N * self.k
        return _csr(np.ones(n, self.dtype), np.tile(np.arange(self.k), self.N), np.arange(n + 1),
                    (n, self.k))


@dataclass(frozen=True, eq=False, repr=False)
class CrossEntropyGradient(Jacobian):
    """Gradient of ``cross_entropy(P, Q) = -sum(P log Q) / N`` in Q, kept as P and Q (N, m).

    Dense shape () + (N, m): ``-P / Q / N``, the lecture's ``DQcross_entropy``
    (inf/NaN where Q underflows to 0). ``chain_rule`` with the
    ``SoftmaxJacobian`` of the same Q gives ``(Q rowsum(P) - P) / N``, with no
    division; with anything else it is the dense ``-P / Q / N``.
    """

    P: np.ndarray
    Q: np.ndarray

    def __post_init__(self) -> None:
        _set_array(self, "P", 2)
        _set_array(self, "Q", 2)
        if self.P.shape != self.Q.shape:
            raise ValueError(f"P and Q must have the same shape (N, m), got P {self.P.shape} "
                             f"and Q {self.Q.shape}")

    @property
    def out_shape(self) -> Shape:
        return ()

    @property
    def in_shape(self) -> Shape:
        return self.Q.shape

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(self.P, self.Q)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.P, self.Q)

    def _dense(self) -> np.ndarray:
        P, Q = self.P, self.Q
        return -P * (1 / Q) / P.shape[0]

    def through_softmax(self) -> NDArray[np.floating]:
        """``(Q rowsum(P) - P) / N`` (N, m): this gradient through the softmax that gave Q."""
        P, Q = self.P, self.Q
        return (Q * P.sum(axis=1, keepdims=True) - P) / P.shape[0]

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        return G.reshape(-1, 1, 1) * self._dense().astype(G.dtype, copy=False)

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        return np.tensordot(self._dense().astype(F.dtype, copy=False), F, axes=2)

    def to_scipy(self) -> sp.csr_matrix:
        import scipy.sparse as sp

        return sp.csr_matrix(self._dense().reshape(1, -1))


@dataclass(frozen=True, eq=False, repr=False)
class Composed(Jacobian):
    """``outer o inner`` kept lazy where the product has no compact structure.

    Dense shape ``outer.out_shape + inner.in_shape``; contractions go through
    both factors, so nothing larger than either factor's result is allocated.
    """

    outer: Jacobian
    inner: Jacobian

    def __post_init__(self) -> None:
        if self.outer.in_shape != self.inner.out_shape:
            raise ValueError(f"cannot compose: outer Jacobian {self.outer.shape} takes input "
                             f"{self.outer.in_shape} but inner {self.inner.shape} gives {self.inner.out_shape}")

    @property
    def out_shape(self) -> Shape:
        return self.outer.out_shape

    @property
    def in_shape(self) -> Shape:
        return self.inner.in_shape

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(self.outer.dtype, self.inner.dtype)

    @property
    def T(self) -> Jacobian:
        return Composed(self.inner.T, self.outer.T)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.outer._arrays() + self.inner._arrays()

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        return self.inner.vjp(self.outer.vjp(G))

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        return self.outer.jvp(self.inner.jvp(F))

    def _dense(self) -> np.ndarray:
        return self.outer.jvp(self.inner.to_dense())

    def to_scipy(self) -> sp.csr_matrix:
        return (self.outer.to_scipy() @ self.inner.to_scipy()).tocsr()


@dataclass(frozen=True, eq=False, repr=False)
class Transposed(Jacobian):
    """``J^T`` for a Jacobian whose transpose has no structure of its own (e.g. ``KronOneI``).

    Maps ``J.out_shape`` to ``J.in_shape``: dense entry ``[i.., o..] = J[o.., i..]``;
    its products are J's products swapped.
    """

    J: Jacobian

    @property
    def out_shape(self) -> Shape:
        return self.J.in_shape

    @property
    def in_shape(self) -> Shape:
        return self.J.out_shape

    @property
    def dtype(self) -> np.dtype:
        return self.J.dtype

    @property
    def T(self) -> Jacobian:
        return self.J

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.J._arrays()

    def _vjp(self, G: np.ndarray) -> np.ndarray:
        # (G J^T)^T = J G^T: G (B, *J.in) -> J.jvp of (*J.in, B) -> (*J.out, B)
        out = self.J.jvp(np.moveaxis(G, 0, -1))
        return np.moveaxis(out, -1, 0)

    def _jvp(self, F: np.ndarray) -> np.ndarray:
        out = self.J.vjp(np.moveaxis(F, -1, 0))
        return np.moveaxis(out, 0, -1)

    def _dense(self) -> np.ndarray:
        nout = len(self.J.out_shape)
        D = self.J.to_dense()
        axes = tuple(range(nout, D.ndim)) + tuple(range(nout))
        return np.ascontiguousarray(D.transpose(axes))

    def to_scipy(self) -> sp.csr_matrix:
        return self.J.to_scipy().T.tocsr()
