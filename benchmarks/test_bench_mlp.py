"""Networks of any depth (issue 10): fused loss and gradient against numpy and JAX.

``MLP([64, 128, 64, 10], "tanh")`` with softmax cross-entropy, float64, at
N=2,000 and (marked ``large``) N=100,000: fastjac's fused
``loss_and_gradient_closure``, the hand-written numpy of ``numpy_mlp`` and
``jax.jit(jax.value_and_grad)`` (skipped when JAX is not installed). Every
implementation is called once before timing (compiles) and its loss and
gradient are checked against fastjac's first. ``test_numpy_mlp_matches_fastjac``
checks the numpy baseline for every activation, mixed ones and other depths.

For interleaved ratios, memory, start-up and the comparison with the code
before the rewrite, run ``python benchmarks/report_networks.py``.
"""

import numpy as np
import pytest

import numpy_mlp
import report_networks as rn

SIZES = rn.SIZES
RTOL = rn.CHECK_RTOL


def case(n, large=False):
    return pytest.param(n, id=f"N={n}", marks=[pytest.mark.large] if large else [])


class Problem:
    """Data, parameters and fastjac's loss and gradient for one size."""

    def __init__(self, n, sizes=SIZES, activation="tanh"):
        import fastjac

        self.n = n
        self.net = fastjac.MLP(sizes, activation=activation, loss="softmax_cross_entropy")
        self.X, self.Y = rn.data(sizes, n)
        self.params = self.net.init(seed=0)
        self.reference = self.net.loss_and_gradient_closure(self.X, self.Y)(self.params)

    def check(self, result):
        err = rn.max_rel_diff(result, self.reference)
        assert err <= RTOL, f"max rel diff from fastjac {err:.3g} > {RTOL:g}"


@pytest.fixture(scope="module", params=[case(2_000), case(100_000, large=True)])
def problem(request):
    return Problem(request.param)


@pytest.mark.parametrize("impl", rn.IMPLS)
def test_mlp_loss_and_gradient(benchmark, problem, impl):
    if impl == "jax":
        pytest.importorskip("jax", reason="JAX is not installed (a peer, optional)")
    fg = rn.build(impl, problem.net, problem.X, problem.Y)
    problem.check(fg(problem.params))  # also compiles, outside the timing
    benchmark.group = f"MLP {'-'.join(map(str, SIZES))} tanh loss and gradient N={problem.n}"
    value, grads = benchmark(fg, problem.params)
    assert np.isfinite(value)
    assert [np.shape(g) for g in grads] == [np.shape(g) for g in problem.reference[1]]


@pytest.mark.parametrize("sizes, activation", [
    ([8, 16, 12, 4], "identity"), ([8, 16, 12, 4], "logistic"), ([8, 16, 12, 4], "tanh"),
    ([8, 16, 12, 4], "relu"), ([8, 4], "tanh"),
    ([9, 8, 7, 6, 5, 3], ["tanh", "relu", "logistic", "identity"]),
])
def test_numpy_mlp_matches_fastjac(sizes, activation):
    p = Problem(300, sizes, activation)
    p.check(numpy_mlp.loss_and_gradient(p.X, p.Y, p.params, activation))
    assert numpy_mlp.loss(p.X, p.Y, p.params, activation) == pytest.approx(p.reference[0], rel=RTOL)
