"""Hypothesis properties over shapes and awkward values (issue 5's fuzzing).

* every structured Jacobian equals the dense reference's tensor, for normal,
  huge, tiny, zero and tied values;
* the adjoint identity <J v, u> = <v, J^T u> holds for every structured type,
  with J v through ``jvp`` (chain_rule(J, dense)) and J^T u through ``vjp``
  (chain_rule(dense, J));
* the network gradient matches central finite differences.

Example counts come from the hypothesis profile (tests/conftest.py):
``FASTJAC_HYPOTHESIS_PROFILE=long`` for the long run.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastjac
from fastjac import dense, structured
from fastjac.chain import compose
from fastjac.jacobians import (
    BlockDiagonal,
    Composed,
    CrossEntropyGradient,
    Diagonal,
    KronIW,
    KronOneI,
    KronXI,
    SoftmaxJacobian,
    Transposed,
)

DTYPES = [np.float32, np.float64]
# float64: a handful of roundings per entry; float32: sums of at most ~50
# products, each rounded, so a few hundred eps covers any order of summation.
RTOL = {np.float32: 2e-5, np.float64: 1e-12}

dims = st.integers(1, 50)
small = st.integers(1, 30)  # dense tensors are (N, k, N, k): up to 6.5 MB here
KINDS = ["normal", "huge", "tiny", "zeros", "ties"]


def values(rng, kind, shape, dtype):
    """Arrays of one awkward kind: normal, huge (|z| ~ 1e3), tiny (~1e-30), zeros, ties."""
    if kind == "normal":
        a = rng.normal(size=shape)
    elif kind == "huge":
        a = rng.choice([-1, 1], size=shape) * rng.uniform(500, 1e3, size=shape)
    elif kind == "tiny":
        a = rng.normal(size=shape) * 1e-30
    elif kind == "zeros":
        a = np.zeros(shape)
    else:
        a = np.full(shape, 0.25)
    return a.astype(dtype)


def structured_jacobians(rng, N, d, k, kind, dtype):
    """One Jacobian of every structured type (and a Composed) on random data."""
    X = values(rng, kind, (N, d), dtype)
    W = rng.normal(size=(d, k)).astype(dtype)
    b = np.zeros((1, k), dtype)
    Z = values(rng, kind, (N, k), dtype)
    J_logit, _ = structured.Dlogit(Z)
    J_soft, _ = structured.Dmatrix_softmax(Z)
    P = np.eye(k, dtype=dtype)[rng.integers(0, k, N)]
    Q = np.clip(J_soft.q, np.finfo(dtype).tiny, None)  # -P / Q stays finite
    return {
        "Diagonal": J_logit,
        "SoftmaxJacobian": J_soft,
        "BlockDiagonal": BlockDiagonal(values(rng, kind, (N, k, d), dtype)),
        "KronIW": structured.DX_affine(X, W, b)[0],
        "KronXI": structured.DW_affine(X, W, b)[0],
        "KronOneI": structured.Db_affine(X, W, b)[0],
        "Composed": compose(J_logit, structured.DX_affine(X, W, b)[0]),
        "BlockDiagonal o BlockDiagonal": compose(J_soft, J_soft),
        "CrossEntropyGradient": structured.DQcross_entropy(P, Q)[0],
        "Transposed": structured.Db_affine(X, W, b)[0].T,
    }


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None)
@given(N=small, d=small, k=small, kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1))
def test_structured_equals_dense_on_awkward_values(dtype, N, d, k, kind, seed):
    rng = np.random.default_rng(seed)
    X = values(rng, kind, (N, d), dtype)
    W = rng.normal(size=(d, k)).astype(dtype)
    b = rng.normal(size=(1, k)).astype(dtype)
    Z = values(rng, kind, (N, k), dtype)
    pairs = [(structured.Dlogit(Z), dense.Dlogit(Z)),
             (structured.Dmatrix_softmax(Z), dense.Dmatrix_softmax(Z)),
             (structured.DX_affine(X, W, b), dense.DX_affine(X, W, b)),
             (structured.DW_affine(X, W, b), dense.DW_affine(X, W, b)),
             (structured.Db_affine(X, W, b), dense.Db_affine(X, W, b))]
    for (J, s_shape), (D, d_shape) in pairs:
        assert s_shape == d_shape and J.dtype == D.dtype and J.shape == D.shape
        # Relative: Dlogit's e/(1+e)^2 vs s(z)s(-z) differ by a few ulps. Absolute:
        # softmax blocks v_i - v_i^2 cancel when v_i ~ 1, so both sides carry an
        # error of a few eps (entries are at most 1), whatever their size.
        np.testing.assert_allclose(J.to_dense(), D, rtol=RTOL[dtype], atol=8 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None)
@given(N=dims, d=dims, k=dims, kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1))
def test_adjoint_identity(dtype, N, d, k, kind, seed):
    """<J v, u> = <v, J^T u> for every structured Jacobian."""
    rng = np.random.default_rng(seed)
    for name, J in structured_jacobians(rng, N, d, k, kind, dtype).items():
        v = rng.normal(size=J.in_shape).astype(dtype)
        u = rng.normal(size=J.out_shape).astype(dtype)
        Jv = fastjac.chain_rule(J, v, v.shape)
        JTu = fastjac.chain_rule(u, J, u.shape)
        assert Jv.shape == J.out_shape and JTu.shape == J.in_shape, name
        lhs, rhs = np.vdot(Jv, u), np.vdot(v, JTu)
        # both sides sum the same products in different orders: compare to the
        # size of the sum of |terms|, not to the (possibly cancelling) result.
        S = abs(J.to_scipy())
        if isinstance(J, SoftmaxJacobian):
            # q_i (v_i - q . v) cancels when q is nearly one-hot: its rounding is
            # ~eps q_i max|v| in row i, not eps |J| |v| (the entries q_i q_j are tiny)
            q = J.q.astype(np.float64)
            S = S + BlockDiagonal(np.repeat(q[:, :, None], q.shape[1], axis=2)).to_scipy()
        scale = S @ np.abs(v.ravel().astype(np.float64))
        scale = np.vdot(scale, np.abs(u.ravel())) + np.finfo(dtype).tiny
        assert abs(lhs - rhs) <= 50 * np.finfo(dtype).eps * scale * np.sqrt(J.in_shape[-1]), name


@settings(deadline=None)
@given(N=st.integers(1, 30), d=st.integers(1, 8), k=st.integers(1, 8), m=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
def test_gradient_matches_central_differences(N, d, k, m, seed):
    """Directional derivatives of the loss equal <gradient, direction> (float64)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, d))
    Y = np.eye(m)[rng.integers(0, m, N)]
    var = [rng.normal(size=(d, k)), rng.normal(size=(1, k)), rng.normal(size=(k, m)),
           rng.normal(size=(1, m))]
    f = fastjac.nn_loss_closure(X, Y)
    grads = getattr(fastjac, "nn_loss_and_gradient_closure", None)
    g = grads(X, Y)(var)[1] if grads else fastjac.nn_loss_gradient_closure(X, Y)(var)
    g = [gi.reshape(vi.shape) for gi, vi in zip(g, var)]
    v = [rng.normal(size=vi.shape) for vi in var]
    h = 1e-5
    fd = (f(fastjac.update_blocks(var, v, h)) - f(fastjac.update_blocks(var, v, -h))) / (2 * h)
    exact = sum(np.vdot(gi, vi) for gi, vi in zip(g, v))
    # central differences: O(h^2 f''') truncation plus O(eps f / h) rounding
    # (f ~ log m is O(1) here): 1e-6 absolute leaves a wide margin over both.
    assert abs(fd - exact) <= 1e-6 * (1 + abs(exact))


def test_all_types_are_covered():
    """The property tests above exercise every structured Jacobian class."""
    made = structured_jacobians(np.random.default_rng(0), 2, 2, 2, "normal", np.float64)
    types = {type(J) for J in made.values()}
    assert types == {Diagonal, BlockDiagonal, SoftmaxJacobian, KronIW, KronXI, KronOneI, Composed,
                     CrossEntropyGradient, Transposed}
