"""Per-example and curvature quantities (issue 11): fastjac, JAX and BackPACK.

One benchmark per quantity, network, size and implementation, grouped by
(quantity, network, N) so that ``--benchmark-enable`` shows the
implementations side by side. Small sizes by default; N=100,000 (and the
N=2,000 NTK of the deep network) are marked ``large``. Every result is checked
against fastjac's after the convention mapping of ``report_curvature`` (max rel
diff ≤ 1e-8); the peers skip when JAX or BackPACK is not installed.
For the interleaved targets report: ``python benchmarks/report_curvature.py``.
"""

import functools

import numpy as np
import pytest

import report_curvature as rc

pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")]

LARGE = pytest.mark.large
# (quantity, network) -> sizes
SIZES = {
    ("per_example_gradients", "narrow"): [2_000, pytest.param(100_000, marks=LARGE)],
    ("per_example_gradient_norms", "narrow"): [2_000, pytest.param(100_000, marks=LARGE)],
    ("sum_grad_squared", "narrow"): [2_000, pytest.param(100_000, marks=LARGE)],
    ("diag_ggn", "narrow"): [2_000, pytest.param(100_000, marks=LARGE)],
    ("kfac", "narrow"): [2_000, pytest.param(100_000, marks=LARGE)],
    ("ggn_vector_product", "narrow"): [2_000, pytest.param(100_000, marks=LARGE)],
    ("ggn_vector_product", "deep"): [1_000, pytest.param(100_000, marks=LARGE)],
    ("hessian_vector_product", "narrow"): [2_000, pytest.param(100_000, marks=LARGE)],
    ("hessian_vector_product", "deep"): [1_000, pytest.param(100_000, marks=LARGE)],
    ("empirical_ntk", "lecture"): [400],
    ("empirical_ntk", "deep"): [400, pytest.param(2_000, marks=LARGE)],
}
PEERS = {"jax": ["jax"], "backpack": ["torch", "backpack"]}


def _params():
    out = []
    for (quantity, arch), sizes in SIZES.items():
        for impl in rc.QUANTITIES[quantity]:
            for size in sizes:
                marks, N = (size.marks, size.values[0]) if hasattr(size, "marks") else ((), size)
                out.append(pytest.param(quantity, arch, N, impl, marks=marks,
                                        id=f"{quantity}-{arch}-N={N}-{impl}"))
    return out


@functools.lru_cache(maxsize=2)
def problem(arch, N):
    return rc.Problem(arch, N)


@functools.lru_cache(maxsize=4)
def reference(quantity, arch, N):
    call, canon = rc.build(quantity, "fastjac", problem(arch, N))
    return canon(call())


@pytest.mark.parametrize("quantity,arch,N,impl", _params())
def test_curvature(benchmark, warmed, quantity, arch, N, impl):
    for module in PEERS.get(impl, []):
        pytest.importorskip(module)
    prob = problem(arch, N)
    call, canon = rc.build(quantity, impl, prob)
    benchmark.group = f"{quantity} {arch} N={N}"
    result = benchmark(warmed(call))
    if canon is None:  # fastjac's fused gradient, the yardstick: (loss, grads)
        loss, grads = result
        assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)
        return
    got = canon(result)
    assert np.isfinite(got).all()
    assert rc.rel_diff(got, reference(quantity, arch, N)) <= rc.TOL
