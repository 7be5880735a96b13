"""Whole runs: the lecture's 100-step training, and start-up (compile) time in fresh processes.

* ``lecture 100-step run N=400``: ``fastjac.train.train(impl, verbose=False)``
  with the breast-cancer arrays already loaded (the loader is replaced by a
  cached copy during the benchmark, so reading the CSV is not timed). ``dense``
  takes minutes, so it is ``large``.
* ``fresh process to first gradient``: a new interpreter imports fastjac,
  builds the narrow network at N=400 and calls the loss-and-gradient closure
  once. The whole subprocess is timed; ``extra_info`` splits it into
  ``import_s`` and ``first_gradient_s``. *Cold* uses an empty
  ``NUMBA_CACHE_DIR``, so every kernel compiles; *warm* runs again on the
  cache a cold run filled (running that cold run untimed first if it did not
  run). Smoke mode runs the cold+warm pair for ``fused`` (fastjac's default
  path) once; ``structured``'s cold run costs another full compile, so it is
  ``large``.
* ``python -m fastjac train, warm cache``: the command line, whole process,
  on Numba's default cache (where a user's runs cache), after one untimed run
  filled it; a cold cache here would add a full compile (~30 s) to smoke runs.
"""

import warnings

import numpy as np
import pytest

import workloads

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


@pytest.fixture
def cached_data(monkeypatch):
    """Serve the breast-cancer arrays from memory while the benchmark runs."""
    train = pytest.importorskip("fastjac.train", reason="fastjac.train is not present yet")
    data = train.load_breast_cancer_data()
    monkeypatch.setattr(train, "load_breast_cancer_data", lambda: data)
    return train


@pytest.mark.parametrize("impl", [pytest.param("dense", marks=pytest.mark.large), "structured"])
def test_lecture_run(benchmark, cached_data, impl):
    train = cached_data
    if impl == "structured":
        train.train(impl=impl, steps=2, verbose=False)  # compile outside timing
    benchmark.group = "lecture 100-step run N=400"
    with warnings.catch_warnings():  # dense warns that it needs ~600 MB
        warnings.simplefilter("ignore", getattr(train, "DenseMemoryWarning", UserWarning))
        history = benchmark.pedantic(train.train, kwargs=dict(impl=impl, verbose=False),
                                     rounds=1 if impl == "dense" else 5, iterations=1)
    benchmark.extra_info["loop_seconds"] = history.seconds
    losses = history.losses
    assert len(losses) == 100 and np.isfinite(losses).all() and losses[-1] < losses[0]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """One Numba cache directory per implementation, and whether a cold run filled it."""
    root = tmp_path_factory.mktemp("numba-cache")
    return {impl: {"dir": root / impl, "filled": False} for impl in ("fused", "structured")}


def require_impl(impl):
    import fastjac

    if impl == "fused" and not hasattr(fastjac, "nn_loss_and_gradient_closure"):
        pytest.skip("fastjac.nn_loss_and_gradient_closure is not present yet")


def first_gradient(benchmark, impl, cache):
    times = benchmark.pedantic(workloads.first_gradient, args=(impl, cache["dir"]), rounds=1,
                               iterations=1)
    cache["filled"] = True
    benchmark.extra_info.update(times)
    assert all(t > 0 for t in times.values())


@pytest.mark.parametrize("impl", ["fused", pytest.param("structured", marks=pytest.mark.large)])
def test_first_gradient_cold(benchmark, caches, impl):
    require_impl(impl)
    benchmark.group = "fresh process to first gradient, cold cache N=400"
    first_gradient(benchmark, impl, caches[impl])
    assert any(caches[impl]["dir"].rglob("*.nbi")), "the cold run cached nothing"


@pytest.mark.parametrize("impl", ["fused", pytest.param("structured", marks=pytest.mark.large)])
def test_first_gradient_warm(benchmark, caches, impl):
    require_impl(impl)
    cache = caches[impl]
    if not cache["filled"]:  # the cold run was deselected: fill the cache untimed
        workloads.first_gradient(impl, cache["dir"])
    benchmark.group = "fresh process to first gradient, warm cache N=400"
    first_gradient(benchmark, impl, cache)


def test_cli_train_warm(benchmark):
    pytest.importorskip("fastjac.cli", reason="fastjac.cli (python -m fastjac) is not present yet")
    workloads.run_python(["-m", "fastjac", "train"])  # fills Numba's default cache if needed
    benchmark.group = "python -m fastjac train, warm cache"
    out, _ = benchmark.pedantic(workloads.run_python, args=(["-m", "fastjac", "train"],),
                                rounds=1, iterations=1)
    assert out.count("Step: ") == 100 and "Final test accuracy" in out
