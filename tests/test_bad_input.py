"""Every bad input gets a clear ValueError/TypeError naming the argument; good odd inputs work."""

import numpy as np
import pytest

import fastjac
from fastjac import dense, structured

MODULES = [pytest.param(dense, id="dense"), pytest.param(structured, id="structured")]
AFFINE = ["DX_affine", "DW_affine", "Db_affine"]


def problem(rng, N=7, d=4, k=3, m=2, dtype=np.float64):
    X = rng.normal(size=(N, d)).astype(dtype)
    Y = np.eye(m, dtype=dtype)[rng.integers(0, m, N)]
    var = [rng.normal(size=(d, k)).astype(dtype), rng.normal(size=(1, k)).astype(dtype),
           rng.normal(size=(k, m)).astype(dtype), rng.normal(size=(1, m)).astype(dtype)]
    return X, Y, var


@pytest.fixture
def rng():
    return np.random.default_rng(20261126)


# --- wrong ndim --------------------------------------------------------------

@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("name", AFFINE)
def test_affine_wrong_ndim(mod, name, rng):
    X, _, (W, b, _, _) = problem(rng)
    with pytest.raises(ValueError, match=r"X must have 2 dimensions, got shape \(4,\)"):
        getattr(mod, name)(X[0], W, b)
    with pytest.raises(ValueError, match="W must have 2 dimensions"):
        getattr(mod, name)(X, W[:, 0], b)


@pytest.mark.parametrize("name", ["Dlogit", "Dmatrix_softmax", "matrix_softmax"])
def test_matrix_functions_wrong_ndim(name, rng):
    with pytest.raises(ValueError, match="Z must have 2 dimensions"):
        getattr(structured, name)(rng.normal(size=(2, 3, 4)))


def test_network_wrong_ndim(rng):
    X, Y, var = problem(rng)
    with pytest.raises(ValueError, match="Y must have 2 dimensions"):
        fastjac.nn_loss_closure(X, Y[:, 0])(var)


# --- mismatched sizes --------------------------------------------------------

def test_network_mismatched_rows(rng):
    X, Y, var = problem(rng)
    for closure in (fastjac.nn_loss_closure, fastjac.nn_loss_gradient_closure):
        with pytest.raises(ValueError, match=r"same number of rows, got X \(7, 4\) and Y \(6, 2\)"):
            closure(X, Y[:6])(var)


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("name", AFFINE)
def test_affine_mismatched_inner(mod, name, rng):
    X, _, (W, b, _, _) = problem(rng)
    with pytest.raises(ValueError, match=r"X has 4 columns \(shape \(7, 4\)\) but W has shape \(3, 3\)"):
        getattr(mod, name)(X, W[:3], b)
    with pytest.raises(ValueError, match=r"b must have shape \(1, 3\) or \(3,\).*got \(1, 2\)"):
        getattr(mod, name)(X, W, b[:, :2])


def test_network_mismatched_blocks(rng):
    X, Y, (W1, b1, W2, b2) = problem(rng)
    f = fastjac.nn_loss_closure(X, Y)
    with pytest.raises(ValueError, match=r"W2 has shape \(2, 2\) but W1 of shape \(4, 3\) gives 3 hidden units"):
        f([W1, b1, W2[:2], b2])
    with pytest.raises(ValueError, match=r"b1 must have shape \(1, 3\) or \(3,\)"):
        f([W1, b1[:, :2], W2, b2])
    with pytest.raises(ValueError, match="W1 must have 2 dimensions"):
        f([W1[0], b1, W2, b2])
    with pytest.raises(ValueError, match=r"W2 has shape \(3, 2\) but Y has 3 columns"):
        fastjac.nn_loss_closure(X, np.eye(3)[np.arange(7) % 3])([W1, b1, W2, b2])
    with pytest.raises(ValueError, match="4 blocks"):
        f([W1, b1, W2])


@pytest.mark.parametrize("name", ["cross_entropy", "DQcross_entropy"])
def test_cross_entropy_mismatched_shapes(name, rng):
    P, Q = np.eye(2)[[0, 1, 1]], np.full((3, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"same shape \(N, m\), got P \(3, 2\) and Q \(3, 3\)"):
        getattr(structured, name)(P, Q)
    with pytest.raises(ValueError, match="Q must have 2 dimensions"):
        getattr(structured, name)(P, Q[0])


# --- bias as (k,) or (1, k) --------------------------------------------------

@pytest.mark.parametrize("mod", MODULES)
def test_bias_both_shapes_accepted(mod, rng):
    """(1, k) is the lecture's; (k,) works too; both give (k,) bias gradients."""
    X, Y, var = problem(rng)
    flat = [var[0], var[1][0], var[2], var[3][0]]
    g_row = mod.nn_loss_gradient_closure(X, Y)(var)
    g_flat = mod.nn_loss_gradient_closure(X, Y)(flat)
    for a, b in zip(g_row, g_flat):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    assert g_flat[1].shape == (3,) and g_flat[3].shape == (2,)
    assert mod.Db_affine(X, var[0], var[1][0])[1] == (1, 3)


# --- chain_rule axes ---------------------------------------------------------

@pytest.mark.parametrize("mod", MODULES)
def test_chain_rule_axes_mismatch(mod, rng):
    Z = rng.normal(size=(5, 3))
    D, shape = mod.Dmatrix_softmax(Z)
    G = rng.normal(size=(5, 4))
    with pytest.raises(ValueError, match=r"Dg \(5, 4\).*Df \(5, 3, 5, 3\)"):
        mod.chain_rule(G, D, shape)
    with pytest.raises(ValueError, match="var_shape .* has 5 axes"):
        mod.chain_rule(G, D, (1, 1, 1, 1, 1))


def test_chain_rule_structured_partial_contraction(rng):
    """A structured Jacobian's output axes are contracted all at once or not at all."""
    D, _ = structured.Dlogit(rng.normal(size=(5, 5)))
    with pytest.raises(ValueError, match="all of its output axes must be contracted"):
        structured.chain_rule(rng.normal(size=(5,)), D, (5,))
    with pytest.raises(ValueError, match="all of its input axes must be contracted"):
        structured.chain_rule(D, rng.normal(size=(5, 3)), (5,))


def test_chain_rule_var_shape_not_a_shape(rng):
    D, _ = structured.Dlogit(rng.normal(size=(2, 2)))
    with pytest.raises(TypeError, match="var_shape must be a tuple"):
        structured.chain_rule(np.ones((2, 2)), D, 2)


# --- block lists in the line-search helpers ---------------------------------

def test_update_blocks_wrong_length_and_shape(rng):
    """Blocks must match, or broadcast to x's block (a (k,) bias gradient for a (1, k) bias)."""
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(3,))
    with pytest.raises(ValueError, match="x has 2 blocks but y has 1"):
        fastjac.update_blocks([a, b], [a], 0.5)
    with pytest.raises(ValueError, match=r"block 1: x\[1\] has shape \(3,\) but y\[1\] has shape \(2, 3\)"):
        fastjac.update_blocks([a, b], [a, a], 0.5)


def test_block_backtracking_wrong_blocks(rng):
    a = rng.normal(size=(2, 3))
    f = lambda x: float(np.sum(x[0] ** 2))  # noqa: E731
    with pytest.raises(ValueError, match="x0 has 1 blocks but dx has 2"):
        fastjac.block_backtracking([a], f, [-a, -a], [a])
    with pytest.raises(ValueError, match=r"x0\[0\] has shape \(2, 3\) but df0\[0\] has shape \(2,\)"):
        fastjac.block_backtracking([a], f, [-a], [a[:, 0]])
    with pytest.raises(ValueError, match="alpha and beta must lie in"):
        fastjac.block_backtracking([a], f, [-a], [a], beta=1.0)


# --- empty arrays ------------------------------------------------------------

def test_network_refuses_no_rows(rng):
    X, Y, var = problem(rng)
    for closure in (fastjac.nn_loss_closure, fastjac.nn_loss_gradient_closure):
        with pytest.raises(ValueError, match=r"no rows \(N=0\)"):
            closure(X[:0], Y[:0])(var)


def test_jacobians_of_no_rows_are_empty(rng):
    """A Jacobian with N=0 is a well-defined empty tensor."""
    J, shape = structured.Dlogit(np.empty((0, 3)))
    assert J.shape == (0, 3, 0, 3) and J.to_dense().shape == (0, 3, 0, 3) and shape == (0, 3)


# --- dtypes ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.complex128, np.bool_, np.float16, object])
@pytest.mark.parametrize("mod", MODULES)
def test_bad_dtypes(mod, dtype, rng):
    Z = rng.normal(size=(3, 2)).astype(dtype)
    with pytest.raises(TypeError, match=r"Z must be float32, float64 or integer, got dtype"):
        mod.Dlogit(Z)
    X, Y, var = problem(rng)
    with pytest.raises(TypeError, match=r"X must be float32, float64 or integer"):
        mod.DW_affine(X.astype(dtype), var[0], var[1])


def test_bad_dtype_in_network(rng):
    X, Y, var = problem(rng)
    var[2] = var[2].astype(np.complex64)
    with pytest.raises(TypeError, match="W2 must be float32, float64 or integer, got dtype complex64"):
        fastjac.nn_loss_closure(X, Y)(var)


def test_integers_become_float64(rng):
    J, _ = structured.Dlogit(np.arange(6).reshape(2, 3))
    assert J.dtype == np.float64


def test_mixed_precision_promotes_to_float64(rng):
    X, Y, var = problem(rng, dtype=np.float32)
    var[0] = var[0].astype(np.float64)
    grads = fastjac.nn_loss_gradient_closure(X, Y)(var)
    assert all(g.dtype == np.float64 for g in grads)
    J, _ = structured.DW_affine(X, var[0], var[1])
    assert J.dtype == np.float64


# --- read-only and non-contiguous arrays work -------------------------------

def test_read_only_and_non_contiguous_inputs(rng):
    X, Y, var = problem(rng, N=12)
    Xf = np.asfortranarray(X)
    Xs = np.repeat(X, 2, axis=0)[::2]
    for Xi in (Xf, Xs):
        Xi.flags.writeable = False
        for a in var:
            a.flags.writeable = False
        g = fastjac.nn_loss_gradient_closure(Xi, Y)(var)
        ref = dense.nn_loss_gradient_closure(X, Y)(var)
        for a, b in zip(g, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12)


# --- NaN and Inf propagate ---------------------------------------------------

def test_nan_inputs_propagate(rng):
    """fastjac never hides a NaN: a NaN in X reaches the loss and the gradient."""
    X, Y, var = problem(rng)
    X[2, 1] = np.nan
    assert np.isnan(fastjac.nn_loss_closure(X, Y)(var))
    assert np.isnan(fastjac.nn_loss_gradient_closure(X, Y)(var)[0]).any()
    Z = rng.normal(size=(3, 2))
    Z[1, 0] = np.nan
    J, _ = structured.Dmatrix_softmax(Z)
    assert np.isnan(J.blocks[1]).all() and np.isfinite(J.blocks[[0, 2]]).all()


def test_inf_inputs_follow_ieee_like_the_reference(rng):
    """An Inf is not masked: results are what IEEE arithmetic gives through the
    lecture's formulas (here the logistic saturates, so the loss stays finite
    while dW1 = X^T G1 gets inf * 0 = NaN), the same as the dense reference."""
    X, Y, var = problem(rng)
    X[2, 1] = np.inf
    with np.errstate(all="ignore"):
        ref_loss = dense.nn_loss_closure(X, Y)(var)
        ref_grad = dense.nn_loss_gradient_closure(X, Y)(var)
        grad = fastjac.nn_loss_gradient_closure(X, Y)(var)
    np.testing.assert_allclose(fastjac.nn_loss_closure(X, Y)(var), ref_loss, rtol=1e-12)
    for a, b in zip(grad, ref_grad):
        np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True)
    assert np.isnan(grad[0]).any()
