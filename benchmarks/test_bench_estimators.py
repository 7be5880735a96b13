"""Whole ``fit`` of fastjac's scikit-learn estimators against scikit-learn's own.

``fastjac.MLPClassifier`` / ``MLPRegressor`` and ``sklearn.neural_network``'s
with the same ``solver="lbfgs"``, hidden layers, relu, alpha, ``tol``,
``max_iter`` and ``random_state=0`` (same start, same L-BFGS-B path), each on
a fresh estimator per round, with default threads and with one thread
(BLAS limited by threadpoolctl, ``numba.set_num_threads(1)``; on 2 shared
cores OpenBLAS's threads can slow scikit-learn's small products many times).
Each estimator is fitted once before timing on the first 200 rows with
``max_iter=2`` (Numba's compile or cache load).

* ``digits-500``: the first 500 digits (X/16), hidden (32,), max_iter=20, tol=0;
* ``diabetes``: regressor, StandardScaler on X, hidden (32,), max_iter=20, tol=0;
* ``synthetic-N=100000`` (large): ``make_classification(100_000, 30 features,
  20 informative, 10 classes)``, hidden (64,), max_iter=30, tol=0 — the
  report's target case (``benchmarks/report_estimators.py`` times it
  interleaved and gives the ratios).

Every fit runs ``max_iter`` iterations (tol=0); fastjac's ``n_iter_`` and
``loss_`` must match scikit-learn's (1e-8 relative). ``ConvergenceWarning``
(max_iter reached) is expected and silenced.
"""

import numpy as np
import pytest

import report_estimators as rep

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CASES = {
    "digits-500": dict(data="digits", rows=500, hidden=(32,), max_iter=20, rounds=5),
    "diabetes": dict(data="diabetes", rows=None, hidden=(32,), max_iter=20, rounds=5),
    "synthetic-N=100000": dict(data="synthetic", rows=None, n_samples=100_000, hidden=(64,),
                               max_iter=30, rounds=3),
}
LARGE = {"synthetic-N=100000"}
IMPLS = ["sklearn", "fastjac"]
THREADS = ["default", "1-thread"]
REL_TOL = 1e-8

_reference = {}  # case -> (n_iter_, loss_) of scikit-learn's fit (default threads)


def estimator(impl, case):
    import sklearn.neural_network as sknn

    from fastjac import sklearn as fj

    kind = "MLPRegressor" if case["data"] == "diabetes" else "MLPClassifier"
    cls = getattr(sknn if impl == "sklearn" else fj, kind)
    return lambda **kw: cls(**{**dict(hidden_layer_sizes=case["hidden"], solver="lbfgs",
                                      activation="relu", alpha=1e-4, tol=0.0,
                                      max_iter=case["max_iter"], random_state=0), **kw})


@pytest.fixture(scope="module", params=[pytest.param(c, id=c, marks=[pytest.mark.large]
                                                     if c in LARGE else []) for c in CASES])
def case(request):
    c = dict(CASES[request.param], name=request.param)
    X, y, _ = rep.load(c["data"], c)
    if c["rows"] is not None:
        X, y = X[:c["rows"]], y[:c["rows"]]
    c["X"], c["y"] = np.ascontiguousarray(X), y
    return c


def reference(case):
    if case["name"] not in _reference:
        if case["name"] in LARGE:
            return None  # a whole extra scikit-learn fit: only when its own test ran
        est = estimator("sklearn", case)().fit(case["X"], case["y"])
        _reference[case["name"]] = (est.n_iter_, float(est.loss_))
    return _reference[case["name"]]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", IMPLS)
def test_fit(benchmark, case, impl, threads):
    make = estimator(impl, case)
    X, y = case["X"], case["y"]
    with rep.one_thread(threads == "1-thread"):
        make(max_iter=2).fit(X[:200], y[:200])  # compile / load Numba's cache, untimed
        benchmark.group = f"estimator fit (lbfgs), {case['name']}"
        est = benchmark.pedantic(lambda e: e.fit(X, y), setup=lambda: ((make(),), {}),
                                 rounds=case["rounds"], iterations=1)
    benchmark.extra_info.update(n_iter=int(est.n_iter_), loss=float(est.loss_), threads=threads)
    assert est.n_iter_ == case["max_iter"] and np.isfinite(est.loss_)
    assert est.predict(X[:5]).shape == (5,)
    if impl == "sklearn" and threads == "default":
        _reference[case["name"]] = (est.n_iter_, float(est.loss_))
    ref = reference(case)
    if ref is not None:
        assert est.n_iter_ == ref[0]
        assert est.loss_ == pytest.approx(ref[1], rel=REL_TOL)
