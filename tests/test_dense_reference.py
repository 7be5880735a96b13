"""``fastjac.dense`` is the lecture's code: same values (where the lecture's are finite).

``tests/lecture.py`` holds the lecture's functions verbatim. The dense
reference fills its tensors by vectorised indexing, shifts the softmax by the
row maximum and keeps float32 in float32; none of that may change a finite
value. Its Jacobians are also checked against central finite differences of
the functions they differentiate, so the reference is right, not only faithful.
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import lecture
from problems import standardized_problem
from fastjac import dense, structured

DTYPES = (np.float32, np.float64)
D_NAMES = ("DX_affine", "DW_affine", "Db_affine", "Dlogit", "Dmatrix_softmax")

dims_st = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
seed_st = st.integers(0, 2**32 - 1)


def inputs(name, dims, dtype, rng):
    N, d, k, m = dims
    if name in ("DX_affine", "DW_affine", "Db_affine"):
        return (rng.standard_normal((N, d)).astype(dtype), rng.standard_normal((d, k)).astype(dtype),
                rng.standard_normal((1, k)).astype(dtype))
    cols = m if name == "Dmatrix_softmax" else k
    return ((3 * rng.standard_normal((N, cols))).astype(dtype),)


@pytest.mark.parametrize("name", D_NAMES)
@given(dims=dims_st, dtype=st.sampled_from(DTYPES), seed=seed_st)
@example(dims=(1, 1, 1, 1), dtype=np.float64, seed=0)
@example(dims=(1, 1, 1, 1), dtype=np.float32, seed=0)
def test_D_equals_lecture(name, dims, dtype, seed, tolerance, assert_close):
    args = inputs(name, dims, dtype, np.random.default_rng(seed))
    D, var_shape = getattr(dense, name)(*args)
    L, lecture_var_shape = getattr(lecture, name)(*args)
    assert var_shape == lecture_var_shape
    assert D.shape == L.shape
    assert D.dtype == dtype  # the lecture always allocates float64; the reference keeps float32
    if name == "Dmatrix_softmax":
        # the reference shifts by the row max, so v differs by rounding; entries
        # v_i - v_i v_j are then off by ~eps * v_i <= eps (hence the bound 1)
        assert_close(D, L, tolerance(dtype), bound=1.0, what=name)
    else:
        # the same float operations in the same dtype (or none): bit for bit
        np.testing.assert_array_equal(D, L)


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_functions_equal_lecture(dtype, rng, tolerance, assert_close):
    Z = (3 * rng.standard_normal((6, 4))).astype(dtype)
    np.testing.assert_array_equal(dense.logit(Z), lecture.logit(Z))
    assert dense.logit(Z).dtype == dtype
    assert_close(dense.matrix_softmax(Z), lecture.matrix_softmax(Z), tolerance(dtype))
    assert dense.matrix_softmax(Z).dtype == dtype
    assert_close(dense.softmax(Z[1]), lecture.softmax(Z[1]), tolerance(dtype))
    P = np.eye(4, dtype=dtype)[rng.integers(0, 4, 6)]
    Q = lecture.matrix_softmax(Z)
    np.testing.assert_array_equal(dense.cross_entropy(P, Q), lecture.cross_entropy(P, Q))
    G, shape = dense.DQcross_entropy(P, Q)
    LG, lshape = lecture.DQcross_entropy(P, Q)
    assert shape == lshape == (6, 4)
    np.testing.assert_array_equal(G, LG)


@pytest.mark.parametrize("dtype", DTYPES)
def test_chain_rule_equals_lecture(dtype, rng):
    Dg = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    Df = rng.standard_normal((4, 5, 3)).astype(dtype)
    got = dense.chain_rule(Dg, Df, (4, 5))
    np.testing.assert_array_equal(got, lecture.chain_rule(Dg, Df, (4, 5)))
    assert got.dtype == dtype and got.shape == (2, 3, 3)


@pytest.mark.parametrize("dims", [(7, 4, 3, 3), (1, 1, 1, 1), (5, 2, 1, 2), (1, 3, 4, 1)])
def test_network_closures_equal_lecture(dims, rng, tolerance, assert_close):
    N, d, k, m = dims
    X, Y, var = standardized_problem(rng, N, d, k, m)
    assert_close(dense.nn_loss_closure(X, Y)(var), lecture.nn_loss_closure(X, Y)(var), 1e-12)
    got = dense.nn_loss_gradient_closure(X, Y)(var)
    want = lecture.nn_loss_gradient_closure(X, Y)(var)
    assert [g.shape for g in got] == [w.shape for w in want] == [(d, k), (k,), (k, m), (m,)]
    for g, w in zip(got, want):
        assert_close(g, w, tolerance(np.float64, n=N * max(k, m)))


def test_block_helpers_equal_lecture(rng, global_seed):
    x = [rng.standard_normal((3, 2)), rng.standard_normal((1, 2)), rng.standard_normal(4)]
    y = [rng.standard_normal((3, 2)), rng.standard_normal((1, 2)), rng.standard_normal(4)]
    for got, want in zip(dense.update_blocks(x, y, 0.3), lecture.update_blocks(x, y, 0.3)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(dense.negate_blocks(x), lecture.negate_blocks(x)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(dense.block_norm(x), lecture.block_norm(x), rtol=1e-15)
    global_seed(1234)
    got = dense.random_matrix((30, 20))
    global_seed(1234)
    want = lecture.random_matrix((30, 20))
    np.testing.assert_array_equal(got, want)
    global_seed(5)
    got = dense.random_matrix((2, 3), sigma=2.0)
    global_seed(5)
    want = lecture.random_matrix((2, 3), sigma=2.0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dims", [(7, 4, 3, 3), (1, 2, 1, 2)])
def test_block_backtracking_equals_lecture(dims, rng):
    """Same accepted point and value as the lecture's Armijo loop, called as the lecture calls it.

    The lecture passes the gradient blocks straight from ``nn_loss_gradient_closure``,
    whose bias blocks are (k,) and (m,) (the ``Db_affine`` quirk) while the
    variables are (1, k) and (1, m); ``x + t * dx`` broadcasts them back to (1, k).
    """
    X, Y, var = standardized_problem(rng, *dims)
    f = lecture.nn_loss_closure(X, Y)
    g = lecture.nn_loss_gradient_closure(X, Y)(var)
    x_want, f_want = lecture.block_backtracking(var, f, lecture.negate_blocks(g), g, alpha=0.1)
    assert dense.block_backtracking is structured.block_backtracking
    x_got, f_got = dense.block_backtracking(var, f, dense.negate_blocks(g), g, alpha=0.1)
    assert f_got == f_want
    for a, b in zip(x_got, x_want):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_update_blocks_broadcasts_the_bias_gradient_as_the_lecture(rng):
    x = [rng.standard_normal((3, 2)), np.zeros((1, 2))]
    g = [rng.standard_normal((3, 2)), rng.standard_normal(2)]  # as nn_loss_gradient_closure returns
    want = lecture.update_blocks(x, g, 0.5)
    got = dense.update_blocks(x, g, 0.5)
    assert [a.shape for a in got] == [a.shape for a in want] == [(3, 2), (1, 2)]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


# --- the lecture's quirks, kept on purpose ---------------------------------------------

@pytest.mark.parametrize("mod", [lecture, dense, structured], ids=["lecture", "dense", "structured"])
def test_bias_quirk(mod, rng):
    """Db_affine is (N, k, k) with var_shape (1, k), so a (1, k) bias gets a (k,) gradient."""
    N, d, k = 5, 3, 4
    X, W, b = rng.standard_normal((N, d)), rng.standard_normal((d, k)), np.zeros((1, k))
    J, var_shape = mod.Db_affine(X, W, b)
    assert var_shape == (1, k)
    assert J.shape == (N, k, k)
    G = rng.standard_normal((N, k))
    grad = mod.chain_rule(G, J, var_shape)
    assert grad.shape == (k,)
    np.testing.assert_allclose(grad, dense.chain_rule(G, dense.Db_affine(X, W, b)[0], (1, k)),
                               rtol=1e-14)


def test_network_bias_gradients_are_vectors(rng):
    X, Y, var = standardized_problem(rng)
    for mod in (lecture, dense, structured):
        shapes = [g.shape for g in mod.nn_loss_gradient_closure(X, Y)(var)]
        assert shapes == [(4, 3), (3,), (3, 3), (3,)], mod.__name__


def test_softmax_finite_where_the_lecture_overflows():
    Z = np.array([[1000.0, 0.0, -5.0], [0.0, 800.0, 799.0], [1.0, 2.0, 3.0]])
    with np.errstate(over="ignore", invalid="ignore"):
        lecture_V = lecture.matrix_softmax(Z)
        lecture_D, _ = lecture.Dmatrix_softmax(Z)
    # exp overflows to inf and inf / inf is NaN in the lecture's rows 0 and 1
    assert np.isnan(lecture_V[:2]).any(axis=1).all() and np.isnan(lecture_D[:2, :, :2, :]).any()
    V = dense.matrix_softmax(Z)
    D, _ = dense.Dmatrix_softmax(Z)
    assert np.isfinite(V).all() and np.isfinite(D).all()
    # softmax is shift-invariant, so each row equals the lecture's on a shifted row
    shifted = lecture.matrix_softmax(Z - Z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(V, shifted, rtol=1e-15, atol=0)
    np.testing.assert_allclose(D, lecture.Dmatrix_softmax(Z - Z.max(axis=1, keepdims=True))[0],
                               rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(V[2], lecture_V[2], rtol=1e-15)


# --- the reference is right: central finite differences ------------------------------

def central_differences(fun, x, h):
    """Jacobian of ``fun`` at ``x`` by central differences: shape fun(x).shape + x.shape."""
    x = np.array(x, dtype=np.float64)
    out = np.empty(np.shape(fun(x)) + x.shape)
    for j in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[j] = h
        out[(Ellipsis,) + j] = (fun(x + e) - fun(x - e)) / (2 * h)
    return out


# h = 1e-6: the truncation error h^2/6 |f'''| is ~1e-13 for these O(1)-derivative
# maps, the rounding error ~eps |f| / h ~ 2e-10 for |f| = O(1); atol 1e-8 leaves a
# 50x margin, rtol 1e-6 covers the entries of size ~10. A wrong entry (a sign, a
# transposition, a missing factor) is off by O(0.01..1), four orders above.
FD_H, FD_RTOL, FD_ATOL = 1e-6, 1e-6, 1e-8


@pytest.mark.parametrize("dims", [(4, 3, 2, 3), (1, 1, 1, 1), (3, 1, 4, 2)])
def test_D_matches_finite_differences(dims, rng):
    N, d, k, m = dims
    X, W, b = rng.standard_normal((N, d)), rng.standard_normal((d, k)), rng.standard_normal((1, k))
    affine = {
        "DX_affine": lambda X_: X_ @ W + b,
        "DW_affine": lambda W_: X @ W_ + b,
        "Db_affine": lambda b_: (X @ W + b_.reshape(1, k)),
    }
    for name, fun in affine.items():
        D, var_shape = getattr(dense, name)(X, W, b)
        x0 = {"DX_affine": X, "DW_affine": W, "Db_affine": b.ravel()}[name]
        np.testing.assert_allclose(D, central_differences(fun, x0, FD_H), rtol=FD_RTOL,
                                   atol=FD_ATOL, err_msg=name)
    Z = 2 * rng.standard_normal((N, k))
    np.testing.assert_allclose(dense.Dlogit(Z)[0], central_differences(dense.logit, Z, FD_H),
                               rtol=FD_RTOL, atol=FD_ATOL, err_msg="Dlogit")
    Z2 = 2 * rng.standard_normal((N, m))
    np.testing.assert_allclose(dense.Dmatrix_softmax(Z2)[0],
                               central_differences(dense.matrix_softmax, Z2, FD_H),
                               rtol=FD_RTOL, atol=FD_ATOL, err_msg="Dmatrix_softmax")
    # -log q has f''' = 2/q^3: keep q >= 0.2 so the truncation error stays below 1e-10
    P = np.eye(m)[rng.integers(0, m, N)]
    Q = rng.uniform(0.2, 1.0, (N, m))
    np.testing.assert_allclose(dense.DQcross_entropy(P, Q)[0],
                               central_differences(lambda Q_: dense.cross_entropy(P, Q_), Q, FD_H),
                               rtol=FD_RTOL, atol=FD_ATOL, err_msg="DQcross_entropy")
