"""Structured Jacobians are the linear operators of their matrices, and densify under a budget.

For every structured type, on hypothesis-drawn shapes and values: ``J @ v``,
``v @ J``, ``J.matvec``/``rmatvec``/``matmat``, ``J.T`` and
``J.aslinearoperator()`` equal the products with ``M = J.to_dense()``
reshaped to ``J.to_scipy()``'s (prod(out), prod(in)); ``np.asarray(J)`` is
``to_dense()``. Densifying (``to_dense``, ``__array__``, the dense
reference's builders and ``chain_rule``) above the budget raises
``DenseMemoryError`` without allocating.

Tolerances: a product entry sums at most ``n`` = prod(in) (or prod(out))
rounded products, so both sides differ by at most ``tolerance(dtype, n)``
relative to ``|M| @ |v|`` (``conftest.tolerance``).
"""

import tracemalloc
from math import prod

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from hypothesis import example, given
from hypothesis import strategies as st

import fastjac
from fastjac import dense, structured
from fastjac.jacobians import (
    BlockDiagonal,
    Composed,
    CrossEntropyGradient,
    Diagonal,
    Jacobian,
    KronIW,
    KronOneI,
    KronXI,
    SoftmaxJacobian,
    Transposed,
)

DTYPES = (np.float32, np.float64)
KINDS = ("Diagonal", "BlockDiagonal", "SoftmaxJacobian", "KronIW", "KronXI", "KronOneI",
         "CrossEntropyGradient", "Composed", "Transposed")

dims_st = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))


def make(kind, dims, dtype, rng):
    """A Jacobian of ``kind`` on random data of dims (N, d, k, m), built as users build them."""
    N, d, k, m = dims
    arr = lambda *shape: (2 * rng.standard_normal(shape)).astype(dtype)  # noqa: E731
    X, W, b, Z = arr(N, d), arr(d, k), arr(1, k), arr(N, m)
    if kind == "Diagonal":
        return structured.Dlogit(arr(N, k))[0]
    if kind == "BlockDiagonal":
        return BlockDiagonal(arr(N, m, k))  # rectangular
    if kind == "SoftmaxJacobian":
        return structured.Dmatrix_softmax(Z)[0]
    if kind == "KronIW":
        return structured.DX_affine(X, W, b)[0]
    if kind == "KronXI":
        return structured.DW_affine(X, W, b)[0]
    if kind == "KronOneI":
        return structured.Db_affine(X, W, b)[0]
    if kind == "CrossEntropyGradient":
        P = np.eye(m, dtype=dtype)[rng.integers(0, m, N)]
        return structured.DQcross_entropy(P, structured.matrix_softmax(Z))[0]
    if kind == "Composed":  # logit(X W + b) in X: no closed form
        return structured.chain_rule(structured.Dlogit(arr(N, k))[0],
                                     structured.DX_affine(X, W, b)[0], (N, k))
    if kind == "Transposed":
        return Transposed(structured.DW_affine(X, W, b)[0])
    raise ValueError(kind)


def matrix(J):
    """``to_dense()`` as the (prod(out), prod(in)) matrix, float64."""
    return J.to_dense().reshape(J.matrix_shape).astype(np.float64)


def error_scale(J):
    """What the rounding of ``J``'s entries and products is proportional to, entrywise.

    ``|M|``; for the softmax also ``q_i`` across row i of each block: ``q_i - q_i^2``
    and ``q_i (v_i - q . v)`` cancel when q is nearly one-hot, leaving ~eps q_i
    max|v|, not eps times the (tiny) entries.
    """
    S = np.abs(matrix(J))
    if isinstance(J, SoftmaxJacobian):
        q = J.q.astype(np.float64)
        S += BlockDiagonal(np.repeat(q[:, :, None], q.shape[1], axis=2)).to_dense().reshape(S.shape)
    return S


def check_product(got, M, v, dtype, tolerance, assert_close, what, S=None):
    """``got == M @ v`` to the rounding of sums of ``M.shape[1]`` products (scale ``S``)."""
    v64 = np.asarray(v, dtype=np.float64)
    S = np.abs(M) if S is None else S
    assert got.shape == (M @ v64).shape, what
    assert got.dtype == np.result_type(dtype, v.dtype), what
    assert_close(got, M @ v64, tolerance(dtype, v.dtype, n=M.shape[1]), S @ np.abs(v64), what=what)


@pytest.mark.parametrize("kind", KINDS)
@given(dims=dims_st, dtype=st.sampled_from(DTYPES), vdtype=st.sampled_from(DTYPES),
       R=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
@example(dims=(1, 1, 1, 1), dtype=np.float64, vdtype=np.float64, R=1, seed=0)
def test_products_equal_the_dense_matrix(kind, dims, dtype, vdtype, R, seed, tolerance,
                                         assert_close):
    rng = np.random.default_rng(seed)
    J = make(kind, dims, dtype, rng)
    assert isinstance(J, Jacobian) and J.dtype == dtype
    M = matrix(J)
    Mrows, n = J.matrix_shape
    assert (Mrows, n) == J.to_scipy().shape == (prod(J.out_shape), prod(J.in_shape))
    v, V = rng.standard_normal(n).astype(vdtype), rng.standard_normal((n, R)).astype(vdtype)
    u, U = rng.standard_normal(Mrows).astype(vdtype), rng.standard_normal((R, Mrows)).astype(vdtype)
    args = (dtype, tolerance, assert_close)
    S = error_scale(J)

    check_product(J @ v, M, v, *args, what="J @ v", S=S)
    check_product(J.matvec(v), M, v, *args, what="J.matvec(v)", S=S)
    check_product(J @ V, M, V, *args, what="J @ V", S=S)
    check_product(J.matmat(V), M, V, *args, what="J.matmat(V)", S=S)
    check_product(u @ J, M.T, u, *args, what="u @ J", S=S.T)
    check_product(J.rmatvec(u), M.T, u, *args, what="J.rmatvec(u)", S=S.T)
    check_product((U @ J).T, M.T, U.T, *args, what="U @ J", S=S.T)
    check_product(J.rmatmat(U.T), M.T, U.T, *args, what="J.rmatmat(U^T)", S=S.T)
    # the CSR matrix gives the same shapes
    assert (J @ v).shape == (J.to_scipy() @ v).shape and (u @ J).shape == (u @ J.to_scipy()).shape


@pytest.mark.parametrize("kind", KINDS)
@given(dims=dims_st, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_transpose_is_structured_and_exact(kind, dims, dtype, seed, tolerance, assert_close):
    rng = np.random.default_rng(seed)
    J = make(kind, dims, dtype, rng)
    JT = J.T
    assert isinstance(JT, Jacobian)
    assert JT.out_shape == J.in_shape and JT.in_shape == J.out_shape and JT.dtype == J.dtype
    assert JT.nbytes <= J.nbytes  # the transpose holds the same data (or a view of it)
    D, DT = J.to_dense(), JT.to_dense()
    nout = len(J.out_shape)
    np.testing.assert_array_equal(DT, np.transpose(D, tuple(range(nout, D.ndim)) + tuple(range(nout))))
    np.testing.assert_array_equal(JT.to_scipy().toarray(), J.to_scipy().toarray().T)
    assert JT.T.shape == J.shape
    np.testing.assert_array_equal(JT.T.to_dense(), D)
    M = matrix(J)
    u = rng.standard_normal(J.matrix_shape[0])
    check_product(JT @ u, M.T, u, dtype, tolerance, assert_close, what="J.T @ u",
                  S=error_scale(J).T)


def test_transposes_keep_their_structure(rng):
    X, W, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), np.zeros((1, 2))
    Z = rng.standard_normal((4, 2))
    closed = {
        "Dlogit": (structured.Dlogit(Z)[0], Diagonal),
        "Dmatrix_softmax": (structured.Dmatrix_softmax(Z)[0], SoftmaxJacobian),
        "BlockDiagonal": (BlockDiagonal(rng.standard_normal((4, 2, 3))), BlockDiagonal),
        "DX_affine": (structured.DX_affine(X, W, b)[0], KronIW),
        "DW_affine": (structured.DW_affine(X, W, b)[0], KronXI),
        "Db_affine": (structured.Db_affine(X, W, b)[0], Transposed),
        "Composed": (structured.chain_rule(structured.Dlogit(Z)[0],
                                           structured.DX_affine(X, W, b)[0], Z.shape), Composed),
    }
    for name, (J, cls) in closed.items():
        assert type(J.T) is cls, name
    assert type(structured.Db_affine(X, W, b)[0].T.T) is KronOneI


@pytest.mark.parametrize("kind", KINDS)
@given(dims=dims_st, dtype=st.sampled_from(DTYPES), R=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_aslinearoperator(kind, dims, dtype, R, seed, tolerance, assert_close):
    rng = np.random.default_rng(seed)
    J = make(kind, dims, dtype, rng)
    L = J.aslinearoperator()
    assert isinstance(L, spla.LinearOperator)
    assert L.shape == J.matrix_shape and L.dtype == J.dtype
    M, S = matrix(J), error_scale(J)
    v, V = rng.standard_normal(L.shape[1]), rng.standard_normal((L.shape[1], R))
    u = rng.standard_normal(L.shape[0])
    args = (dtype, tolerance, assert_close)
    check_product(L @ v, M, v, *args, what="L @ v", S=S)
    check_product(L.matvec(v.reshape(-1, 1)).ravel(), M, v, *args, what="L.matvec((n, 1))", S=S)
    check_product(L.matmat(V), M, V, *args, what="L.matmat(V)", S=S)
    check_product(L.rmatvec(u), M.T, u, *args, what="L.rmatvec(u)", S=S.T)
    check_product(L.T @ u, M.T, u, *args, what="L.T @ u", S=S.T)
    check_product(L.H @ u, M.T, u, *args, what="L.H @ u", S=S.T)


@pytest.mark.parametrize("kind", KINDS)
def test_asarray_densifies(kind, rng):
    J = make(kind, (3, 2, 2, 3), np.float32, rng)
    A = np.asarray(J)
    assert isinstance(A, np.ndarray) and A.shape == J.shape and A.dtype == np.float32
    np.testing.assert_array_equal(A, J.to_dense())
    assert np.asarray(J, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(np.array(J), J.to_dense())


def test_operands_of_the_wrong_size_are_refused(rng):
    J, _ = structured.DX_affine(rng.standard_normal((3, 2)), np.ones((2, 4)), np.ones((1, 4)))
    assert J.matrix_shape == (12, 6)
    with pytest.raises(ValueError, match=r"matrix shape \(12, 6\) takes \(6,\) or \(6, R\).*\(12,\)"):
        J @ np.ones(12)
    with pytest.raises(ValueError, match=r"takes \(12,\) or \(12, R\).*\(6,\)"):
        np.ones(6) @ J
    with pytest.raises(ValueError, match="got shape"):
        J @ np.ones((6, 2, 2))
    with pytest.raises(TypeError, match="dtype"):
        J @ np.ones(6, dtype=complex)


def test_jacobian_at_jacobian_is_the_chain_rule(rng):
    X, W, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), np.zeros((1, 2))
    outer, inner = structured.Dlogit(X @ W + b)[0], structured.DX_affine(X, W, b)[0]
    JK = outer @ inner
    assert isinstance(JK, Composed)
    np.testing.assert_allclose(matrix(JK), matrix(outer) @ matrix(inner), rtol=1e-13, atol=1e-15)


# --- the memory guard --------------------------------------------------------------------

def traced_peak(fn):
    """Run ``fn`` (which must raise ``DenseMemoryError``); the bytes its call allocated at peak."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        with pytest.raises(fastjac.DenseMemoryError) as info:
            fn()
        return tracemalloc.get_traced_memory()[1] - baseline, str(info.value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_densifying_over_the_budget_raises_without_allocating(kind, rng):
    J = make(kind, (3, 2, 2, 3), np.float64, rng)
    need = prod(J.shape) * 8
    with fastjac.dense_budget(need - 1):
        for densify in (J.to_dense, lambda: np.asarray(J)):
            peak, message = traced_peak(densify)
            assert peak < 64 * 1024, peak  # the message, not the tensor
            assert str(J.shape) in message and f"{need:,} bytes" in message
            assert "set_dense_budget" in message and "FASTJAC_DENSE_BUDGET" in message
    with fastjac.dense_budget(need):
        assert J.to_dense().nbytes == need


def test_dense_memory_error_is_a_memory_error():
    assert issubclass(fastjac.DenseMemoryError, MemoryError)
    from fastjac.train import DenseMemoryError

    assert DenseMemoryError is fastjac.DenseMemoryError


def test_budget_from_set_dense_budget_environment_and_default(monkeypatch):
    assert fastjac.get_dense_budget() == 4 * 2**30
    monkeypatch.setenv("FASTJAC_DENSE_BUDGET", "2KiB")
    assert fastjac.get_dense_budget() == 2048
    fastjac.set_dense_budget("1MB")  # the call wins over the environment
    assert fastjac.get_dense_budget() == 10**6
    with fastjac.dense_budget(512) as inside:
        assert inside == fastjac.get_dense_budget() == 512
    assert fastjac.get_dense_budget() == 10**6
    fastjac.set_dense_budget(None)
    assert fastjac.get_dense_budget() == 2048
    monkeypatch.setenv("FASTJAC_DENSE_BUDGET", "lots")
    with pytest.raises(ValueError, match="FASTJAC_DENSE_BUDGET"):
        fastjac.get_dense_budget()
    for bad in ("lots", "-1", True):
        with pytest.raises((ValueError, TypeError)):
            fastjac.set_dense_budget(bad)


@pytest.mark.parametrize("name, args", [
    ("DX_affine", lambda X, W, b, Z: (X, W, b)),
    ("DW_affine", lambda X, W, b, Z: (X, W, b)),
    ("Db_affine", lambda X, W, b, Z: (X, W, b)),
    ("Dlogit", lambda X, W, b, Z: (Z,)),
    ("Dmatrix_softmax", lambda X, W, b, Z: (Z,)),
])
def test_dense_reference_builders_are_guarded(name, args, rng):
    X, W, b, Z = rng.standard_normal((50, 4)), rng.standard_normal((4, 3)), np.zeros((1, 3)), \
        rng.standard_normal((50, 3))
    D, _ = getattr(dense, name)(*args(X, W, b, Z))
    with fastjac.dense_budget(D.nbytes - 1):
        peak, message = traced_peak(lambda: getattr(dense, name)(*args(X, W, b, Z)))
        assert peak < D.nbytes and f"fastjac.dense.{name}" in message and str(D.shape) in message
    with fastjac.dense_budget(D.nbytes):
        getattr(dense, name)(*args(X, W, b, Z))


def test_chain_rule_of_dense_tensors_is_guarded(rng):
    Dg, Df = rng.standard_normal((30, 2)), rng.standard_normal((2, 30, 30))
    with fastjac.dense_budget(30 * 30 * 30 * 8 - 1):
        for mod in (dense, structured):
            with pytest.raises(fastjac.DenseMemoryError, match=r"\(30, 30, 30\)"):
                mod.chain_rule(Dg, Df, (2,))


def test_the_lectures_dense_gradient_at_N_4000_is_refused_at_once(rng):
    """About 51 GB of tensors (53.3 GiB): refused before any is built, saying how much."""
    N, d, k, m = 4000, 30, 20, 2
    X, Y = rng.standard_normal((N, d)), np.eye(m)[rng.integers(0, m, N)]
    var = [0.1 * rng.standard_normal((d, k)), np.zeros((1, k)), 0.1 * rng.standard_normal((k, m)),
           np.zeros((1, m))]
    for closure in (dense.nn_loss_gradient_closure, dense.nn_loss_and_gradient_closure):
        fn = closure(X, Y)
        peak, message = traced_peak(lambda: fn(var))
        # nothing of the tensors' size: at most the forward pass of the loss (N (k + m) values)
        assert peak < 10 * 8 * N * (k + m) + 64 * 1024, peak
        assert "53.3 GiB" in message and "57,231,488,000 bytes" in message
        assert "(4000, 20, 4000, 20)" in message and "set_dense_budget" in message


def test_train_uses_the_same_budget(monkeypatch):
    from fastjac.train import check_dense_memory

    fastjac.set_dense_budget("100MiB")
    with pytest.raises(fastjac.DenseMemoryError, match="100.0 MiB"):
        check_dense_memory(400, 20)
