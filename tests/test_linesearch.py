"""Block Armijo backtracking: termination on NaN/inf, max_iter, results, and the fused twin.

Where the lecture's loop would spin for ever (NaN at x0, inf everywhere along
the line), fastjac's must raise ``LineSearchError`` quickly.
"""

import copy
import time

import numpy as np
import pytest

from fastjac import dense, structured
from fastjac.data import load_breast_cancer_data
from fastjac.linesearch import (
    LineSearchError,
    LineSearchResult,
    block_backtracking,
    default_max_iter,
    update_blocks,
)


class Counted:
    """``f`` that counts its calls and records the trial points it was given."""

    def __init__(self, f):
        self.f, self.calls = f, []

    def __call__(self, x):
        self.calls.append([np.array(xi, copy=True) for xi in x])
        return self.f(x)


def quadratic(x):
    return 0.5 * sum(float(np.sum(xi ** 2)) for xi in x)


def inf_after_first_call():
    """Finite at x0 (the first call), +inf at every trial point."""
    calls = []

    def f(x):
        calls.append(x)
        return quadratic(x) if len(calls) == 1 else np.inf

    return Counted(f)


@pytest.fixture
def start(rng):
    """Two blocks, a (3, 4) and a (1, 4) 'bias', and the quadratic's gradient there."""
    x0 = [rng.normal(size=(3, 4)), rng.normal(size=(1, 4))]
    return x0, [xi.copy() for xi in x0]


def neg(blocks, scale=1.0):
    return [-scale * b for b in blocks]


def returns_within(seconds, fn):
    begin = time.perf_counter()
    try:
        fn()
    finally:
        elapsed = time.perf_counter() - begin
        assert elapsed < seconds, f"took {elapsed:.2f} s"


def test_nan_at_x0_raises_promptly(start):
    x0, g = start
    f = Counted(lambda x: np.nan)
    with pytest.raises(LineSearchError, match="not finite"):
        returns_within(1.0, lambda: block_backtracking(x0, f, neg(g), g))
    assert len(f.calls) == 1


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_f_at_x0_raises_promptly(start, bad):
    x0, g = start
    with pytest.raises(LineSearchError):
        returns_within(1.0, lambda: block_backtracking(x0, lambda x: bad, neg(g), g))


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.1])
def test_inf_all_along_the_line_backtracks_then_raises(start, beta):
    x0, g = start
    f = inf_after_first_call()
    with pytest.raises(LineSearchError, match="no step accepted"):
        returns_within(1.0, lambda: block_backtracking(x0, f, neg(g), g, beta=beta))
    # f(x0) and then every trial of the default budget, each t smaller by beta
    assert len(f.calls) == 1 + default_max_iter(beta)
    steps = [(x[0] - x0[0])[0, 0] / -g[0][0, 0] for x in f.calls[1:11]]
    np.testing.assert_allclose(steps, beta ** np.arange(len(steps)), rtol=1e-6)


def test_inf_trials_are_backtracked_then_a_finite_step_accepted(start):
    x0, g = start
    # finite only within a small ball: t = 1, 1/2, ... give inf until t is small enough
    radius = 0.01 * np.sqrt(2 * quadratic(x0))

    def f(x):
        d = np.sqrt(sum(np.sum((xi - x0i) ** 2) for xi, x0i in zip(x, x0)))
        return quadratic(x) if d < radius else np.inf

    counted = Counted(f)
    x, fx = block_backtracking(x0, counted, neg(g), g)
    assert np.isfinite(fx) and fx < quadratic(x0)
    res = block_backtracking(x0, f, neg(g), g)
    assert res.t == 2.0 ** -7  # first power of 1/2 below 0.01
    assert res.nfev == len(counted.calls) == 1 + 8


def test_ascent_direction_raises(start):
    x0, g = start
    f = Counted(quadratic)
    with pytest.raises(LineSearchError, match="not a descent direction"):
        block_backtracking(x0, f, g, g)
    with pytest.raises(LineSearchError, match="not a descent direction"):
        block_backtracking(x0, f, [np.zeros_like(b) for b in g], g)
    assert f.calls == []  # refused before evaluating anything


def test_nan_direction_raises(start):
    x0, g = start
    dx = neg(g)
    dx[1][0, 0] = np.nan
    with pytest.raises(LineSearchError):
        returns_within(1.0, lambda: block_backtracking(x0, quadratic, dx, g))


@pytest.mark.parametrize("max_iter", [1, 3, 10])
def test_max_iter_is_honoured(start, max_iter):
    x0, g = start
    f = inf_after_first_call()
    with pytest.raises(LineSearchError, match=f"max_iter={max_iter}"):
        block_backtracking(x0, f, neg(g), g, max_iter=max_iter)
    assert len(f.calls) == 1 + max_iter


def test_max_iter_allows_a_step_found_on_the_last_trial(start):
    x0, g = start
    # along -8 x0 the quadratic is (1 - 8t)^2 f(x0): t = 1, 1/2, 1/4 fail Armijo, 1/8 passes
    f = Counted(quadratic)
    res = block_backtracking(x0, f, neg(g, 8.0), g, max_iter=4)
    assert res.t == 0.125 and res.nfev == len(f.calls) == 5
    with pytest.raises(LineSearchError):
        block_backtracking(x0, quadratic, neg(g, 8.0), g, max_iter=3)


@pytest.mark.parametrize("max_iter", [0, -1, 2.5])
def test_bad_max_iter_raises_value_error(start, max_iter):
    x0, g = start
    with pytest.raises(ValueError, match="max_iter"):
        block_backtracking(x0, quadratic, neg(g), g, max_iter=max_iter)


def test_result_unpacks_and_has_t_and_nfev(start):
    x0, g = start
    f = Counted(quadratic)
    res = block_backtracking(x0, f, neg(g, 2.0), g)
    x, fx = res
    assert isinstance(res, LineSearchResult) and len(res) == 2
    assert res.x is x and res.fx == fx == res[1]
    assert res.t == 0.5 and res.nfev == len(f.calls) == 3  # f(x0), t=1 (-x0: no decrease), t=1/2
    for xi, expected in zip(x, update_blocks(x0, neg(g, 2.0), 0.5)):
        np.testing.assert_array_equal(xi, expected)
    assert fx == quadratic(x)
    assert "t=0.5" in repr(res) and "nfev=3" in repr(res)


def test_x0_dx_df0_are_left_intact(start):
    x0, g = start
    dx = neg(g, 3.0)
    before = copy.deepcopy((x0, dx, g))
    x, _ = block_backtracking(x0, quadratic, dx, g)
    for a, b in zip((x0, dx, g), before):
        for ai, bi in zip(a, b):
            np.testing.assert_array_equal(ai, bi)
    assert all(xi is not x0i for xi, x0i in zip(x, x0))


def test_verbose_saves_the_plot_to_the_named_file(start, tmp_path, capsys, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    matplotlib.use("Agg")
    x0, g = start
    path = tmp_path / "line.png"
    res = block_backtracking(x0, quadratic, neg(g), g, verbose=True, plot_file=str(path))
    out = capsys.readouterr().out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(path) in out and f"({res.t}," in out  # prints (t, delta) as the lecture
    # without a file name and no display, it goes to block_backtracking.png in the cwd
    monkeypatch.chdir(tmp_path)
    block_backtracking(x0, quadratic, neg(g), g, verbose=True)
    assert (tmp_path / "block_backtracking.png").exists()


# ---------------------------------------------------------------- fused line search

MODULES = [pytest.param(m, id=m.__name__.rsplit(".", 1)[1]) for m in (dense, structured)]

# numpy's own warnings from the dense reference on huge steps and NaN weights
# (exp overflow, log(0)); the values are right and the line search copes.
numpy_float_warnings = [
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def quiet_numpy(test):
    for mark in numpy_float_warnings:
        test = mark(test)
    return test


def fused_line_search(module, X, Y):
    if not hasattr(module, "nn_line_search_closure"):
        pytest.skip(f"{module.__name__}.nn_line_search_closure is not defined yet")
    return module.nn_line_search_closure(X, Y)


def network_problem(rng, N=40, d=6, k=5, scale=0.1):
    X, Y = rng.normal(size=(N, d)), np.eye(2)[rng.integers(0, 2, N)]
    var = [scale * rng.normal(size=(d, k)), scale * rng.normal(size=(1, k)),
           scale * rng.normal(size=(k, 2)), scale * rng.normal(size=(1, 2))]
    return X, Y, var


def gradient(module, X, Y, var):
    return [np.reshape(g, v.shape) for g, v in
            zip(module.nn_loss_gradient_closure(X, Y)(var), var)]


def lecture_start():
    """The lecture's data and initial weights (seed 1234)."""
    X, labels, _ = load_breast_cancer_data()
    state = np.random.get_state()
    np.random.seed(1234)
    var = [dense.random_matrix((30, 20)), np.zeros((1, 20)), dense.random_matrix((20, 2)),
           np.zeros((1, 2))]
    np.random.set_state(state)
    return X[:400], labels[:400], var


@quiet_numpy
@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", ["lecture", "small", "long step", "noisy direction", "float32"])
def test_fused_and_plain_line_searches_accept_identical_steps(module, case, rng):
    if case == "lecture":
        X, Y, var = lecture_start()
    else:
        X, Y, var = network_problem(rng)
    if case == "float32":
        X, Y, var = X.astype(np.float32), Y.astype(np.float32), [v.astype(np.float32) for v in var]
    ls = fused_line_search(module, X, Y)
    f = module.nn_loss_closure(X, Y)
    g = gradient(module, X, Y, var)
    dx = neg(g, 1e3 if case == "long step" else 1.0)
    if case == "noisy direction":
        dx = [d + 0.3 * np.abs(d).max() * rng.normal(size=d.shape) for d in dx]
        assert sum(np.sum(a * b) for a, b in zip(dx, g)) < 0
    for alpha, beta in [(0.1, 0.5), (0.3, 0.8), (1e-4, 0.1)]:
        plain = block_backtracking(var, f, dx, g, alpha=alpha, beta=beta)
        fused = ls(var, dx, g, alpha=alpha, beta=beta)
        assert fused.t == plain.t, (alpha, beta)
        rtol = 1e-5 if case == "float32" else 1e-12
        np.testing.assert_allclose(fused.fx, plain.fx, rtol=rtol)
        for a, b in zip(fused.x, plain.x):
            np.testing.assert_allclose(np.reshape(a, b.shape), b, rtol=rtol, atol=0)


@quiet_numpy
@pytest.mark.parametrize("module", MODULES)
def test_fused_line_search_along_the_lectures_first_steps(module):
    X, Y, var = lecture_start()
    ls = fused_line_search(module, X, Y)
    f = module.nn_loss_closure(X, Y)
    for _ in range(5):
        g = gradient(module, X, Y, var)
        plain = block_backtracking(var, f, neg(g), g)
        fused = ls(var, neg(g), g)
        assert fused.t == plain.t
        var = plain.x


@quiet_numpy
@pytest.mark.parametrize("module", MODULES)
def test_fused_line_search_fails_like_the_plain_one(module, rng):
    X, Y, var = network_problem(rng)
    ls = fused_line_search(module, X, Y)
    g = gradient(module, X, Y, var)
    nan_var = [v.copy() for v in var]
    nan_var[0][0, 0] = np.nan
    # refused at the start, before any trial (timing it would time a cold cache's compile)
    with pytest.raises(LineSearchError, match=r"f\(x0\) is not finite"):
        ls(nan_var, neg(g), g)
    with pytest.raises(LineSearchError, match="not a descent direction"):
        ls(var, g, g)
    # a huge step is rejected at t = 1, so one trial cannot succeed
    with pytest.raises(LineSearchError):
        ls(var, neg(g, 1e6), g, max_iter=1)
    res = ls(var, neg(g, 1e6), g)
    assert res.t < 1 and res.nfev >= 2
    x, fx = res
    assert np.isfinite(fx)
