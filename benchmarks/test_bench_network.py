"""The network's loss, gradient, loss-and-gradient and one line-search step, per implementation.

Implementations are described in ``workloads``. Data, parameters and the
line search's start (x0, the gradient there, dx = -gradient) are made once
per size, outside timing; each implementation is built and called once
before timing, so compilation (Numba, JAX) is not measured here.
"""

import numpy as np
import pytest

import numpy_backprop
import workloads

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def case(network, n, large=False):
    return pytest.param((network, n), id=f"{network}-N={n}",
                        marks=[pytest.mark.large] if large else [])


CASES = [case("narrow", 400), case("narrow", 10_000), case("narrow", 1_000_000, large=True),
         case("wide", 1_000), case("wide", 40_000, large=True)]


class Problem:
    """Data, parameters and a line-search start for one network and size."""

    def __init__(self, network, n):
        self.network, self.n = network, n
        self.d, self.k, self.m = workloads.NETWORKS[network]
        self.X, self.Y, self.var = workloads.synthetic(network, n)
        _, grad = numpy_backprop.loss_and_gradient(self.X, self.Y, self.var)
        self.df0 = [np.reshape(g, v.shape) for g, v in zip(grad, self.var)]
        self.dx = [-g for g in self.df0]

    def group(self, operation):
        wide = ", wide" if self.network == "wide" else ""
        return f"{operation}{wide} N={self.n}"

    def skip_dense_gradient(self):
        reason = workloads.dense_fits(workloads.dense_gradient_bytes(self.n, self.d, self.k, self.m))
        if reason:
            pytest.skip(reason)

    def check_gradient(self, grads):
        shapes = [(self.d, self.k), (self.k,), (self.k, self.m), (self.m,)]
        assert [np.shape(g) for g in grads] == shapes
        assert all(np.isfinite(g).all() for g in grads)


@pytest.fixture(scope="module", params=CASES)
def problem(request):
    return Problem(*request.param)


def built(table, impl, problem):
    try:
        return workloads.build(table, impl, problem.X, problem.Y)
    except workloads.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("impl", list(workloads.LOSS))
def test_loss(benchmark, warmed, problem, impl):
    f = warmed(built(workloads.LOSS, impl, problem), problem.var)
    benchmark.group = problem.group("loss")
    value = benchmark(f, problem.var)
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize("impl", list(workloads.GRADIENT))
def test_gradient_chain_rule(benchmark, warmed, problem, impl):
    if impl == "dense":
        problem.skip_dense_gradient()
    df = built(workloads.GRADIENT, impl, problem)
    if impl != "dense":
        warmed(df, problem.var)
    benchmark.group = problem.group("gradient by chain rule")
    problem.check_gradient(benchmark(df, problem.var))


@pytest.mark.parametrize("impl", list(workloads.LOSS_AND_GRADIENT))
def test_loss_and_gradient(benchmark, warmed, problem, impl):
    if impl == "dense":
        problem.skip_dense_gradient()
    fg = built(workloads.LOSS_AND_GRADIENT, impl, problem)
    if impl != "dense":
        warmed(fg, problem.var)
    benchmark.group = problem.group("loss and gradient")
    value, grads = benchmark(fg, problem.var)
    assert np.isfinite(value)
    problem.check_gradient(grads)


@pytest.mark.parametrize("impl", list(workloads.LINE_SEARCH))
def test_line_search_step(benchmark, warmed, problem, impl):
    ls = built(workloads.LINE_SEARCH, impl, problem)
    args = (problem.var, problem.dx, problem.df0)
    warmed(ls, *args)
    benchmark.group = problem.group("line search step")
    x, fx = benchmark(ls, *args)
    assert [np.shape(a) for a in x] == [np.shape(v) for v in problem.var]
    assert np.isfinite(fx) and fx < numpy_backprop.loss(problem.X, problem.Y, problem.var)
