"""Structured Jacobians (``fastjac.structured.D*``) against the dense reference.

For every ``D*`` the structured object must densify to exactly the tensor
``fastjac.dense`` builds, report the same shapes and dtype, give the same
matrix through ``to_scipy()`` (CSR), and store O(structure) bytes.
"""

import dataclasses
from math import prod

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import example, given
from hypothesis import strategies as st

import fastjac
from fastjac import dense, structured
from fastjac.jacobians import (
    BlockDiagonal,
    Composed,
    CrossEntropyGradient,
    Diagonal,
    KronIW,
    KronOneI,
    KronXI,
    SoftmaxJacobian,
)

LAYOUTS = ("C", "F", "strided", "swapped", "reversed")
DTYPES = (np.float32, np.float64)

dims_st = st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4))
dtype_st = st.sampled_from(DTYPES)
seed_st = st.integers(0, 2**32 - 1)
layouts_st = st.tuples(*(st.sampled_from(LAYOUTS),) * 3)

AFFINE = ("DX_affine", "DW_affine", "Db_affine")
D_NAMES = AFFINE + ("Dlogit", "Dmatrix_softmax")

# name -> (structured class, out_shape, in_shape, bytes stored / itemsize) for dims (N, d, k, m)
EXPECTED = {
    "DX_affine": (KronIW, lambda N, d, k, m: ((N, k), (N, d), d * k)),
    "DW_affine": (KronXI, lambda N, d, k, m: ((N, k), (d, k), N * d)),
    "Db_affine": (KronOneI, lambda N, d, k, m: ((N, k), (k,), 0)),
    "Dlogit": (Diagonal, lambda N, d, k, m: ((N, k), (N, k), N * k)),
    "Dmatrix_softmax": (SoftmaxJacobian, lambda N, d, k, m: ((N, m), (N, m), N * m)),
}


def d_inputs(name, dims, dtype, seed, layouts, relayout):
    """Random arguments of ``name`` in ``dtype`` and the given memory layouts."""
    N, d, k, m = dims
    rng = np.random.default_rng(seed)
    if name in AFFINE:
        shapes = [(N, d), (d, k), (1, k)]
    elif name == "Dlogit":
        shapes = [(N, k)]
    else:
        shapes = [(N, m)]
    # scale 3: logits well into both tails of logistic/softmax, no float32 underflow
    return tuple(relayout((3 * rng.standard_normal(s)).astype(dtype), lay)
                 for s, lay in zip(shapes, layouts))


def check_scipy(J, rtol=None, assert_close=None):
    """``to_scipy()`` is CSR of shape (prod(out), prod(in)) holding ``to_dense()``."""
    S = J.to_scipy()
    assert sp.issparse(S) and S.format == "csr", type(S)
    assert S.shape == (prod(J.out_shape), prod(J.in_shape))
    assert S.dtype == J.dtype
    flat = J.to_dense().reshape(S.shape)
    if rtol is None:
        np.testing.assert_array_equal(S.toarray(), flat)
    else:
        assert_close(S.toarray(), flat, rtol, what="to_scipy")


@pytest.mark.parametrize("name", D_NAMES)
@given(dims=dims_st, dtype=dtype_st, seed=seed_st, layouts=layouts_st)
@example(dims=(1, 1, 1, 1), dtype=np.float64, seed=0, layouts=("C",) * 3)
@example(dims=(1, 1, 1, 1), dtype=np.float32, seed=1, layouts=("F",) * 3)
@example(dims=(5, 3, 1, 1), dtype=np.float32, seed=2, layouts=("strided",) * 3)
@example(dims=(1, 4, 3, 2), dtype=np.float64, seed=3, layouts=("reversed", "swapped", "F"))
def test_structured_equals_dense(name, dims, dtype, seed, layouts, relayout, tolerance, assert_close):
    args = d_inputs(name, dims, dtype, seed, layouts, relayout)
    J, var_shape = getattr(structured, name)(*args)
    D, dense_var_shape = getattr(dense, name)(*args)
    cls, expect = EXPECTED[name]
    out_shape, in_shape, stored = expect(*dims)

    assert isinstance(J, cls)
    assert var_shape == dense_var_shape
    assert J.out_shape == out_shape and J.in_shape == in_shape
    Jd = J.to_dense()
    assert J.shape == Jd.shape == D.shape == out_shape + in_shape
    assert J.dtype == Jd.dtype == D.dtype == dtype
    assert J.nbytes == stored * np.dtype(dtype).itemsize
    if name in AFFINE:
        # entries are copies of X, W^T or ones: no arithmetic, so bit for bit
        np.testing.assert_array_equal(Jd, D)
    elif name == "Dmatrix_softmax":
        # v_i - v_i^2 cancels when v_i is near 1: each side rounds it to ~eps * v_i
        # absolutely, so the scale is max v_i <= 1, not the entry itself
        assert_close(Jd, D, tolerance(dtype), bound=1.0, what=name)
    else:
        assert_close(Jd, D, tolerance(dtype), what=name)
    check_scipy(J)


@given(dims=dims_st, dtype=dtype_st, seed=seed_st, layouts=layouts_st)
@example(dims=(1, 1, 1, 1), dtype=np.float32, seed=0, layouts=("C",) * 3)
def test_DQcross_entropy_equals_dense(dims, dtype, seed, layouts, relayout, tolerance, assert_close):
    N, _, _, m = dims
    rng = np.random.default_rng(seed)
    P = relayout(np.eye(m, dtype=dtype)[rng.integers(0, m, N)], layouts[0])
    Q = relayout(dense.matrix_softmax(rng.standard_normal((N, m)).astype(dtype)), layouts[1])
    G, shape = structured.DQcross_entropy(P, Q)
    R, dense_shape = dense.DQcross_entropy(P, Q)
    assert shape == dense_shape == (N, m)
    assert isinstance(G, CrossEntropyGradient) and G.shape == R.shape == (N, m)
    assert G.out_shape == () and G.in_shape == (N, m)
    assert G.dtype == R.dtype == dtype and G.nbytes == P.nbytes + Q.nbytes
    np.testing.assert_array_equal(G.to_dense(), R)  # the lecture's formula, the same operations
    np.testing.assert_array_equal(np.asarray(G), R)


@pytest.mark.parametrize("name", D_NAMES)
def test_integer_inputs_become_float64(name, rng, relayout):
    args = tuple(np.rint(a).astype(np.int64)
                 for a in d_inputs(name, (3, 2, 4, 3), np.float64, 7, ("C",) * 3, relayout))
    J, _ = getattr(structured, name)(*args)
    D, _ = getattr(dense, name)(*args)
    assert J.dtype == J.to_dense().dtype == D.dtype == np.float64
    np.testing.assert_allclose(J.to_dense(), D, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", AFFINE)
def test_mixed_float_inputs_promote_like_dense(name, relayout):
    X, W, b = d_inputs(name, (3, 2, 4, 3), np.float64, 11, ("C",) * 3, relayout)
    args = (X.astype(np.float32), W, b.astype(np.float32))
    J, _ = getattr(structured, name)(*args)
    D, _ = getattr(dense, name)(*args)
    assert J.dtype == J.to_dense().dtype == D.dtype == np.float64
    np.testing.assert_array_equal(J.to_dense(), D)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_inputs_stay_float32_in_every_D(dtype, relayout):
    for name in D_NAMES:
        J, _ = getattr(structured, name)(*d_inputs(name, (2, 3, 2, 2), dtype, 5, ("C",) * 3, relayout))
        assert J.dtype == J.to_dense().dtype == J.to_scipy().dtype == dtype, name


# --- the directly constructed classes (not only what the D* functions build) ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (5,), (1, 1), (3, 4), (2, 1, 3)])
def test_diagonal_any_shape(shape, dtype, rng):
    values = rng.standard_normal(shape).astype(dtype)
    J = Diagonal(values)
    D = J.to_dense()
    assert J.out_shape == J.in_shape == shape and J.shape == D.shape == shape + shape
    assert J.dtype == D.dtype == dtype and J.nbytes == values.nbytes
    n = values.size
    np.testing.assert_array_equal(D.reshape(n, n), np.diag(values.ravel()))
    check_scipy(J)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,p,q", [(1, 1, 1), (3, 2, 5), (4, 3, 1), (2, 1, 4)])
def test_block_diagonal_rectangular(N, p, q, dtype, rng):
    blocks = rng.standard_normal((N, p, q)).astype(dtype)
    J = BlockDiagonal(blocks[:, ::-1, :])  # a non-contiguous view is accepted as data
    D = J.to_dense()
    assert J.out_shape == (N, p) and J.in_shape == (N, q) and D.shape == (N, p, N, q)
    assert J.dtype == D.dtype == dtype and J.nbytes == blocks.nbytes
    for a in range(N):
        for c in range(N):
            expected = blocks[a, ::-1, :] if a == c else np.zeros((p, q), dtype)
            np.testing.assert_array_equal(D[a, :, c, :], expected)
    check_scipy(J)


@pytest.mark.parametrize("dtype", DTYPES)
def test_composed_shapes_scipy_and_nbytes(dtype, rng, tolerance, assert_close):
    """A lazy Composed (logit after an affine map in W) still densifies and sparsifies."""
    N, d, k = 4, 3, 2
    X = rng.standard_normal((N, d)).astype(dtype)
    W = rng.standard_normal((d, k)).astype(dtype)
    b = np.zeros((1, k), dtype)
    Z = X @ W + b
    outer, _ = structured.Dlogit(Z)
    inner, _ = structured.DW_affine(X, W, b)
    J = structured.chain_rule(outer, inner, Z.shape)
    assert isinstance(J, Composed)
    assert J.out_shape == (N, k) and J.in_shape == (d, k) and J.shape == J.to_dense().shape
    assert J.dtype == J.to_dense().dtype == dtype
    assert J.nbytes == outer.nbytes + inner.nbytes
    expected = dense.chain_rule(dense.Dlogit(Z)[0], dense.DW_affine(X, W, b)[0], Z.shape)
    assert_close(J.to_dense(), expected, tolerance(dtype, n=N * k))
    check_scipy(J, tolerance(dtype, n=N * k), assert_close)


# --- memory: O(structure), never the dense tensor --------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_nbytes_is_structure_not_dense(dtype, rng):
    N, d, k, m = 2000, 30, 20, 2
    isz = np.dtype(dtype).itemsize
    X = rng.standard_normal((N, d)).astype(dtype)
    W = rng.standard_normal((d, k)).astype(dtype)
    b = np.zeros((1, k), dtype)
    Z = rng.standard_normal((N, k)).astype(dtype)
    Z2 = rng.standard_normal((N, m)).astype(dtype)
    J, _ = structured.Dlogit(Z)
    # the example: N*k*8 bytes in float64, against 12.8 GB dense
    assert J.nbytes == N * k * isz
    assert J.nbytes * 10_000 <= prod(J.shape) * isz
    expected = {
        "DX_affine": (structured.DX_affine(X, W, b)[0], d * k),
        "DW_affine": (structured.DW_affine(X, W, b)[0], N * d),
        "Db_affine": (structured.Db_affine(X, W, b)[0], 0),
        "Dmatrix_softmax": (structured.Dmatrix_softmax(Z2)[0], N * m),
    }
    for name, (J, items) in expected.items():
        assert J.nbytes == items * isz, name
        assert J.nbytes * 100 <= prod(J.shape) * isz, name


def test_softmax_jacobian_stores_q_not_blocks():
    """The issue's size: at N = 400,000, m = 10 the blocks would be 320 MB; q is 32 MB."""
    N, m = 400_000, 10
    Z = np.random.default_rng(0).standard_normal((N, m))
    J, _ = structured.Dmatrix_softmax(Z)
    assert isinstance(J, SoftmaxJacobian) and isinstance(J, BlockDiagonal)
    assert J.nbytes == N * m * 8 < 40 * 10**6 < N * m * m * 8
    assert J.T is J  # diag(q) - q q^T is symmetric


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_blocks_are_built_on_demand(dtype, rng):
    Z = (3 * rng.standard_normal((5, 4))).astype(dtype)
    J, _ = structured.Dmatrix_softmax(Z)
    q = dense.matrix_softmax(Z)
    B = J.blocks
    assert B.shape == (5, 4, 4) and B.dtype == dtype and J.nbytes == q.nbytes
    expected = np.stack([np.diag(v) - np.outer(v, v) for v in J.q])
    np.testing.assert_array_equal(B, expected.astype(dtype))
    with pytest.raises(dataclasses.FrozenInstanceError):
        J.q = q


# --- the forward functions the Jacobians are built from ---------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 4), (2, 3, 2)])
def test_logit_equals_dense_and_keeps_shape(shape, dtype, rng, tolerance, assert_close):
    z = (4 * rng.standard_normal(shape)).astype(dtype)
    got, ref = structured.logit(z), dense.logit(z)
    assert np.shape(got) == np.shape(ref) == shape
    assert got.dtype == ref.dtype == dtype
    assert_close(got, ref, tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_logit_tails_are_finite(dtype):
    z = np.array([-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4], dtype=dtype)
    s = structured.logit(z)
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    assert s[0] == 0 and s[-1] == 1 and s[3] == 0.5
    J, _ = structured.Dlogit(z[None, :])
    assert np.all(np.isfinite(J.to_dense())) and J.to_dense().max() == 0.25


@given(dims=dims_st, dtype=dtype_st, seed=seed_st, layout=st.sampled_from(LAYOUTS))
def test_softmax_and_cross_entropy_equal_dense(dims, dtype, seed, layout, relayout, tolerance,
                                               assert_close):
    N, _, _, m = dims
    rng = np.random.default_rng(seed)
    Z = relayout((3 * rng.standard_normal((N, m))).astype(dtype), layout)
    V = structured.matrix_softmax(Z)
    assert V.shape == (N, m) and V.dtype == dtype
    assert_close(V, dense.matrix_softmax(Z), tolerance(dtype))
    assert_close(structured.softmax(Z[0]), dense.softmax(Z[0]), tolerance(dtype))
    P = np.eye(m, dtype=dtype)[rng.integers(0, m, N)]
    # log q near q = 1 cancels: a rounding of q (~eps) moves -log q by ~eps absolutely,
    # so the loss is compared to the absolute scale 1, not to its own (tiny) size
    assert_close(structured.cross_entropy(P, V), dense.cross_entropy(P, dense.matrix_softmax(Z)),
                 tolerance(dtype, n=N * m), bound=1.0)


# --- bad input gets a clear error --------------------------------------------------

@pytest.mark.parametrize("name", D_NAMES)
@pytest.mark.parametrize("bad", [np.complex128, np.bool_, object])
def test_non_float_dtype_is_a_type_error(name, bad, relayout):
    args = d_inputs(name, (2, 2, 2, 2), np.float64, 0, ("C",) * 3, relayout)
    args = (args[0].astype(bad),) + args[1:]
    with pytest.raises(TypeError, match="dtype"):
        getattr(structured, name)(*args)


@pytest.mark.parametrize("name", AFFINE)
def test_affine_shape_mismatch_is_a_value_error(name):
    X, W, b = np.ones((3, 2)), np.ones((4, 5)), np.ones((1, 5))
    with pytest.raises(ValueError, match="W"):
        getattr(structured, name)(X, W, b)
    with pytest.raises(ValueError, match="b"):
        getattr(structured, name)(X, np.ones((2, 5)), np.ones((1, 4)))


def test_jacobians_are_frozen(rng):
    J, _ = structured.Dlogit(rng.standard_normal((2, 3)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        J.values = np.zeros((2, 3))


def test_top_level_exports_the_classes():
    for cls in (Diagonal, BlockDiagonal, KronIW, KronXI, KronOneI, Composed):
        assert getattr(fastjac, cls.__name__) is cls


# --- the cross-entropy gradient through the softmax ---------------------------------

@given(dims=dims_st, dtype=dtype_st, seed=seed_st, one_hot=st.booleans())
@example(dims=(1, 1, 1, 1), dtype=np.float64, seed=0, one_hot=True)
def test_cross_entropy_through_softmax_is_the_lectures_product(dims, dtype, seed, one_hot, tolerance,
                                                               assert_close):
    """chain_rule(DQcross_entropy(P, Q), Dmatrix_softmax(Z)) with Q = softmax(Z) is
    ``(Q rowsum(P) - P) / N``: the lecture's ``-P / Q / N`` contracted with the blocks."""
    N, _, _, m = dims
    rng = np.random.default_rng(seed)
    Z = (3 * rng.standard_normal((N, m))).astype(dtype)
    P = (np.eye(m)[rng.integers(0, m, N)] if one_hot else rng.uniform(0, 1, (N, m))).astype(dtype)
    Q = structured.matrix_softmax(Z)
    D_Q, Qshape = structured.DQcross_entropy(P, Q)
    D_Z, _ = structured.Dmatrix_softmax(Z)
    got = structured.chain_rule(D_Q, D_Z, Qshape)
    assert isinstance(got, np.ndarray) and got.shape == (N, m) and got.dtype == dtype
    np.testing.assert_array_equal(got, (Q * P.sum(axis=1, keepdims=True) - P) / N)
    # the dense route: -P / Q / N against diag(q) - q q^T, rounded in its own way; its
    # error is ~eps (|P| / Q) q per term, so relative to the row sums of P / N
    ref = dense.chain_rule(*dense.DQcross_entropy(P, Q)[:1], dense.Dmatrix_softmax(Z)[0], Qshape)
    bound = np.repeat(P.astype(np.float64).sum(axis=1, keepdims=True), m, axis=1) / N
    assert_close(got, ref, tolerance(dtype, n=m), bound)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_gradient_with_anything_else_is_the_lectures(dtype, rng):
    """Another softmax's Jacobian, or another structure: the dense ``-P / Q / N``, contracted."""
    N, m = 4, 3
    P = np.eye(m, dtype=dtype)[rng.integers(0, m, N)]
    Z, Z_other = (rng.standard_normal((2, N, m))).astype(dtype)
    D_Q, Qshape = structured.DQcross_entropy(P, structured.matrix_softmax(Z))
    dense_DQ = D_Q.to_dense()
    for Df in (structured.Dmatrix_softmax(Z_other)[0], structured.Dlogit(Z)[0],
               BlockDiagonal(rng.standard_normal((N, m, 2)).astype(dtype))):
        got = structured.chain_rule(D_Q, Df, Qshape)
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, Df.vjp(dense_DQ), rtol=0, atol=0)
    # with a dense Df, the lecture's tensordot of -P / Q / N
    Df = dense.Dmatrix_softmax(Z)[0]
    np.testing.assert_array_equal(structured.chain_rule(D_Q, Df, Qshape),
                                  dense.chain_rule(dense_DQ, Df, Qshape))


@pytest.mark.parametrize("gap", [720.0, 800.0])
def test_cross_entropy_through_softmax_is_finite_where_q_underflows(gap):
    """Logits (0, 720): q = (e^-720, 1), e^-720 subnormal, so -P / q overflows; at (0, 800)
    q underflows to 0. The product through the softmax is exact in both."""
    Z, P = np.array([[0.0, gap]]), np.array([[1.0, 0.0]])
    Q = structured.matrix_softmax(Z)
    assert Q[0, 0] < np.finfo(float).tiny and (Q[0, 0] > 0) == (gap < 745)
    D_Q, Qshape = structured.DQcross_entropy(P, Q)
    with np.errstate(over="ignore", divide="ignore"):
        assert not np.isfinite(D_Q.to_dense()).all()  # the lecture's -P / Q / N
    np.testing.assert_array_equal(structured.chain_rule(D_Q, structured.Dmatrix_softmax(Z)[0], Qshape),
                                  [[Q[0, 0] - 1.0, 1.0]])
