"""Each contraction of the lecture's gradient: dense ``np.tensordot`` vs fused ``chain_rule``.

``dense`` contracts the reference's dense tensors (``fastjac.dense.chain_rule``);
``structured`` contracts a dense cotangent with a structured Jacobian
(``fastjac.chain_rule``, a fused Numba kernel). Both operands are built once
per size, outside timing.
"""

import math

import numpy as np
import pytest

import workloads
from fastjac import dense, structured

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

SIZES = [400, 10_000, pytest.param(1_000_000, marks=pytest.mark.large)]
D, K, M = workloads.NETWORKS["narrow"]


class Backprop:
    """The cotangents of the lecture's backward pass at N rows (structured, so any N)."""

    def __init__(self, n):
        self.n = n
        self.X, self.Y, self.var = workloads.synthetic("narrow", n)
        self.Z1, self.X2, self.Z2, Q = workloads.forward(self.X, self.var)
        self.D_Q = structured.DQcross_entropy(self.Y, Q)[0]
        self.back_prop2 = structured.chain_rule(
            self.D_Q, structured.Dmatrix_softmax(self.Z2)[0], Q.shape)
        self.back_prop2_X2 = structured.chain_rule(
            self.back_prop2, structured.DX_affine(self.X2, *self.var[2:])[0], self.X2.shape)
        self.back_prop1 = structured.chain_rule(
            self.back_prop2_X2, structured.Dlogit(self.Z1)[0], self.Z1.shape)


# contraction -> (Dg, the Jacobian's name and arguments, its dense shape, result shape)
CONTRACTIONS = {
    "chain_rule(D_Q, D_Z2)": lambda s: (
        s.D_Q, "Dmatrix_softmax", (s.Z2,), (s.n, M, s.n, M), (s.n, M)),
    "chain_rule(back_prop2, D_X2)": lambda s: (
        s.back_prop2, "DX_affine", (s.X2, *s.var[2:]), (s.n, M, s.n, K), (s.n, K)),
    "chain_rule(back_prop2 D_X2, D_Z1)": lambda s: (
        s.back_prop2_X2, "Dlogit", (s.Z1,), (s.n, K, s.n, K), (s.n, K)),
    "chain_rule(back_prop1, D_W1)": lambda s: (
        s.back_prop1, "DW_affine", (s.X, *s.var[:2]), (s.n, K, D, K), (D, K)),
    "chain_rule(back_prop1, D_b1)": lambda s: (
        s.back_prop1, "Db_affine", (s.X, *s.var[:2]), (s.n, K, K), (K,)),
    "chain_rule(back_prop2, D_W2)": lambda s: (
        s.back_prop2, "DW_affine", (s.X2, *s.var[2:]), (s.n, M, K, M), (K, M)),
    "chain_rule(back_prop2, D_b2)": lambda s: (
        s.back_prop2, "Db_affine", (s.X2, *s.var[2:]), (s.n, M, M), (M,)),
}


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"N={n}")
def bp(request):
    return Backprop(request.param)


@pytest.mark.parametrize("impl", ["dense", "structured"])
@pytest.mark.parametrize("contraction", list(CONTRACTIONS))
def test_chain_rule(benchmark, warmed, bp, contraction, impl):
    Dg, jacobian, args, dense_shape, out_shape = CONTRACTIONS[contraction](bp)
    if impl == "dense" and (reason := workloads.dense_fits(8 * math.prod(dense_shape))):
        pytest.skip(reason)
    module = dense if impl == "dense" else structured
    Df, var_shape = getattr(module, jacobian)(*args)
    benchmark.group = f"{contraction} N={bp.n}"
    if impl != "dense":
        warmed(module.chain_rule, Dg, Df, var_shape)
    out = benchmark(module.chain_rule, Dg, Df, var_shape)
    assert out.shape == out_shape
    assert np.isfinite(out).all()
