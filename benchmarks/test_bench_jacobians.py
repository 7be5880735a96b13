"""Building each of the lecture's Jacobians: dense tensors vs structured objects.

One group per Jacobian and size; the inputs (the lecture's intermediates
Z1, X2, Z2 of the narrow network) are computed once per size, outside timing.
``DQcross_entropy`` is left out: both modules return the same dense (N, m) array.
"""

import math

import pytest

import workloads
from fastjac import dense, structured

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

SIZES = [400, 10_000, pytest.param(1_000_000, marks=pytest.mark.large)]
MODULES = {"dense": dense, "structured": structured}
D, K, M = workloads.NETWORKS["narrow"]

# Jacobian -> (its arguments from the forward pass, its dense shape at N rows,
#              which argument it differentiates in)
JACOBIANS = {
    "DX_affine(X2, W2, b2)": (lambda s: (s.X2, s.var[2], s.var[3]), lambda N: (N, M, N, K), 0),
    "DW_affine(X, W1, b1)": (lambda s: (s.X, s.var[0], s.var[1]), lambda N: (N, K, D, K), 1),
    "Db_affine(X, W1, b1)": (lambda s: (s.X, s.var[0], s.var[1]), lambda N: (N, K, K), 2),
    "Dlogit(Z1)": (lambda s: (s.Z1,), lambda N: (N, K, N, K), 0),
    "Dmatrix_softmax(Z2)": (lambda s: (s.Z2,), lambda N: (N, M, N, M), 0),
}


class Forward:
    """The narrow network's data and intermediates at N rows."""

    def __init__(self, n):
        self.n = n
        self.X, self.Y, self.var = workloads.synthetic("narrow", n)
        self.Z1, self.X2, self.Z2, self.Q = workloads.forward(self.X, self.var)


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"N={n}")
def fwd(request):
    return Forward(request.param)


@pytest.mark.parametrize("impl", list(MODULES))
@pytest.mark.parametrize("jacobian", list(JACOBIANS))
def test_build_jacobian(benchmark, warmed, fwd, jacobian, impl):
    args_of, shape_of, wrt = JACOBIANS[jacobian]
    shape = shape_of(fwd.n)
    if impl == "dense" and (reason := workloads.dense_fits(8 * math.prod(shape))):
        pytest.skip(reason)
    fn = getattr(MODULES[impl], jacobian.split("(")[0])
    args = args_of(fwd)
    benchmark.group = f"{jacobian} N={fwd.n}"
    if impl != "dense":  # numpy only: nothing to compile
        warmed(fn, *args)
    J, var_shape = benchmark(fn, *args)
    assert J.shape == shape
    assert var_shape == args[wrt].shape
