"""Fit time of fastjac's scikit-learn estimators against scikit-learn's own.

    python benchmarks/report_estimators.py [--quick] [--out DIR]

writes ``DIR/estimators.md`` (tables; the first one is meant for the README)
and ``DIR/estimators.json`` (every sample), DIR defaulting to
``benchmarks/results``. The full run takes about 4-6 minutes on 2 cores
(most of it scikit-learn's fits at N=100,000 and the armijo and
gauss_newton fits); ``--quick`` (small sizes, a smoke run, not a verdict)
about half a minute.

Method
------
* The whole ``fit`` is timed: ``fastjac.MLPClassifier`` / ``MLPRegressor``
  against ``sklearn.neural_network``'s estimator with the same
  ``solver="lbfgs"``, ``hidden_layer_sizes``, ``activation`` (relu), ``alpha``,
  ``tol``, ``max_iter`` and ``random_state=0``, so both start from the same
  weights and run L-BFGS-B (scipy) for the same number of iterations.
* Each estimator runs twice per round: with its default threads, and with
  one thread (``threadpoolctl.threadpool_limits(1, "blas")`` and
  ``numba.set_num_threads(1)``, which fastjac's kernels read to choose their
  row chunks; set before the clock starts). On 2 shared cores OpenBLAS's
  threads can make scikit-learn's small products many times slower. The
  ratio and verdict compare each estimator's faster configuration; the
  defaults' ratio is reported next to it.
* Every fit is on a fresh estimator object, with the garbage collector
  collected before and off during the fit. All estimators of one dataset
  run in this one process, interleaved: each round fits each once, in an
  order rotated each round, after a 50 ms pause; the figure is the median
  over rounds, with the range. The first fit of each estimator (Numba's
  compile or cache load for fastjac, first-touch costs for both; default
  threads) runs before the rounds and is reported separately, not in the
  median; the 1-thread configurations run after it, warm.
* Agreement: every fit's ``n_iter_`` and ``loss_`` are recorded; every fit,
  of either estimator in either configuration, must have scikit-learn's
  ``n_iter_`` and its ``loss_`` within 1e-8 relative, else the verdict is
  **missed** whatever the time. Where they differ, a control shows how far
  rounding alone moves the path: scikit-learn's own fit (one thread) with
  one input value moved by one ulp (``X[0, 0]`` to the next float64 up),
  its ``loss_`` against the unperturbed one.
* Loss evaluations: ``res.nfev`` of each fit's ``scipy.optimize.minimize``
  call (both estimators call it through the module attribute, which this
  script wraps with a pass-through that records ``nfev``; cost: one Python
  call per fit). Not available for fastjac's armijo and gauss_newton solvers.
* Where the time goes: the same wrapper times each call of the objective
  (the loss and gradient function handed to L-BFGS-B; cost: a Python call
  and two clock reads per evaluation, about 0.5 us of each fit's 50-60
  evaluations). "In the objective" is its total per fit; "outside" is the
  rest of the fit: L-BFGS-B's own work (``setulb``), scipy's Python around
  it, validation and initialisation, the same for both estimators but for
  their own Python.
* "others' CPU": the share of the CPUs other processes took while a dataset
  was timed (/proc/stat's busy time less this process's CPU time).
* ``ConvergenceWarning`` (max_iter reached) is expected and silenced.
"""

import argparse
import contextlib
import datetime
import gc
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import scipy.optimize  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import report  # noqa: E402  (environment, OtherLoad, formatting: the scaling report's)

SETTLE_S = 0.05
REL_TOL = 1e-8
SOLVERS_INFO = ("armijo", "gauss_newton")

# name -> what to fit. "goal": the target ratio (fastjac / scikit-learn median fit time).
FULL = {
    "synthetic": dict(n_samples=100_000, max_iter=30, tol=0.0, goal=0.33, budget=120.0,
                      min_rounds=3, max_rounds=5),
    "digits": dict(max_iter=200, tol=1e-4, goal=0.5, budget=30.0, min_rounds=5, max_rounds=21),
    "diabetes": dict(max_iter=200, tol=1e-4, goal=None, budget=12.0, min_rounds=5, max_rounds=15),
    "solvers": dict(max_iter=200, tol=1e-4, budget=25.0, min_rounds=3, max_rounds=7),
}
QUICK = {
    "synthetic": dict(n_samples=2_000, max_iter=5, tol=0.0, goal=0.33, budget=0.5,
                      min_rounds=3, max_rounds=3),
    "digits": dict(max_iter=10, tol=1e-4, goal=0.5, budget=0.5, min_rounds=3, max_rounds=3),
    "diabetes": dict(max_iter=10, tol=1e-4, goal=None, budget=0.5, min_rounds=3, max_rounds=3),
    "solvers": dict(max_iter=5, tol=1e-4, budget=0.5, min_rounds=3, max_rounds=3),
}


# ---------------------------------------------------------------- data

def load(name, case):
    """``(X, y, description)`` of one dataset."""
    from sklearn.datasets import load_diabetes, load_digits, make_classification
    from sklearn.preprocessing import StandardScaler

    if name == "synthetic":
        n = case["n_samples"]
        X, y = make_classification(n_samples=n, n_features=30, n_informative=20, n_classes=10,
                                   random_state=0)
        return X, y, f"synthetic N={n:,}, d=30, 10 classes"
    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
        return StandardScaler().fit_transform(X), y, f"diabetes N={len(X)}, d=10 (standardised)"
    X, y = load_digits(return_X_y=True)
    return X / 16, y, f"digits N={len(X)}, d=64, 10 classes (X/16)"


HIDDEN = {"synthetic": (64,), "digits": (100,), "diabetes": (100,), "solvers": (100,)}


SK, SK1, FJ, FJ1 = "scikit-learn", "scikit-learn, 1 thread", "fastjac", "fastjac, 1 thread"
DEFAULT_OF = {SK1: SK, FJ1: FJ}  # a 1-thread configuration -> its default one


def estimator_classes(name):
    """implementation -> (estimator class, single-threaded?)."""
    import sklearn.neural_network as sknn

    from fastjac import sklearn as fj

    kind = "MLPRegressor" if name == "diabetes" else "MLPClassifier"
    return {SK: (getattr(sknn, kind), False), SK1: (getattr(sknn, kind), True),
            FJ: (getattr(fj, kind), False), FJ1: (getattr(fj, kind), True)}


# ---------------------------------------------------------------- timing

class NfevRecorder:
    """Wraps ``scipy.optimize.minimize`` (both estimators call it as a module attribute, the
    objective first) to record the ``nfev`` of each call and the seconds spent in its
    objective; ``with`` installs it, ``pop()`` takes the last ``(nfev, seconds)``."""

    def __init__(self):
        self.original = scipy.optimize.minimize
        self.last = (None, None)

    def __enter__(self):
        original = self.original

        def minimize(fun, *args, **kwargs):
            spent = [0.0]

            def objective(*a):
                start = time.perf_counter()
                try:
                    return fun(*a)
                finally:
                    spent[0] += time.perf_counter() - start

            res = original(objective, *args, **kwargs)
            self.last = (int(getattr(res, "nfev", -1)), spent[0])
            return res

        scipy.optimize.minimize = minimize
        return self

    def __exit__(self, *exc):
        scipy.optimize.minimize = self.original

    def pop(self):
        out, self.last = self.last, (None, None)
        return out


@contextlib.contextmanager
def one_thread(on):
    """If ``on``: BLAS limited to one thread (threadpoolctl) and Numba's thread count (which
    fastjac's kernels read to choose their row chunks) set to 1, restored afterwards."""
    if not on:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(before)


def fit_once(make, X, y, nfev):
    """One fit of a fresh estimator: ``{seconds, n_iter, loss, nfev, objective_s}`` (the last
    two None without ``scipy.optimize.minimize``). ``make`` is
    ``(factory, single_thread)``: with ``single_thread`` the fit runs in ``one_thread``
    (set before the clock starts)."""
    factory, single = make
    est = factory()
    gc.collect()
    gc_was_on = gc.isenabled()
    with one_thread(single):
        gc.disable()
        try:
            start = time.perf_counter()
            est.fit(X, y)
            seconds = time.perf_counter() - start
        finally:
            if gc_was_on:
                gc.enable()
    evaluations, objective = nfev.pop()
    return {"seconds": seconds, "n_iter": int(est.n_iter_), "loss": float(est.loss_),
            "nfev": evaluations, "objective_s": objective}


def interleaved(makers, X, y, case, nfev):
    """First fit of each, then rounds of one fit each in rotated order; per-name summary."""
    names = list(makers)
    first = {}
    for name in names:
        if name in DEFAULT_OF and DEFAULT_OF[name] in makers:
            continue  # the same estimator's default configuration has warmed it up
        time.sleep(SETTLE_S)
        first[name] = fit_once(makers[name], X, y, nfev)
    fits = {name: [] for name in names}
    start = time.perf_counter()
    r = 0
    while True:
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(SETTLE_S)
            fits[name].append(fit_once(makers[name], X, y, nfev))
        r += 1
        if r >= case["max_rounds"]:
            break
        per_round = (time.perf_counter() - start) / r
        if r >= case["min_rounds"] and (time.perf_counter() - start) + per_round > case["budget"]:
            break
    out = {}
    for name in names:
        s = [f["seconds"] for f in fits[name]]
        out[name] = {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s),
                     "rounds": len(s), "first_fit": first.get(name), "fits": fits[name],
                     "n_iter": sorted({f["n_iter"] for f in fits[name]}),
                     "nfev": sorted({f["nfev"] for f in fits[name] if f["nfev"] is not None}),
                     "loss": sorted({f["loss"] for f in fits[name]})}
        inside = [f["objective_s"] for f in fits[name] if f["objective_s"] is not None]
        if len(inside) == len(s):
            out[name]["objective_median_s"] = statistics.median(inside)
            out[name]["outside_median_s"] = statistics.median(
                f["seconds"] - f["objective_s"] for f in fits[name])
    return out


def compare(name, case, nfev):
    X, y, desc = load(name, case)
    hidden = HIDDEN[name]
    params = dict(hidden_layer_sizes=hidden, solver="lbfgs", activation="relu", alpha=1e-4,
                  tol=case["tol"], max_iter=case["max_iter"], random_state=0)
    makers = {impl: ((lambda cls=cls: cls(**params)), threads)
              for impl, (cls, threads) in estimator_classes(name).items()}
    print(f"{name}: {desc}, hidden {hidden}, max_iter={case['max_iter']}, tol={case['tol']:g}",
          flush=True)
    others = report.OtherLoad()
    times = interleaved(makers, X, y, case, nfev)
    # each estimator in its faster configuration (default threads or one thread)
    best_sk = min((SK, SK1), key=lambda k: times[k]["median_s"])
    best_fj = min((FJ, FJ1), key=lambda k: times[k]["median_s"])
    sk_loss = times[SK]["fits"][0]["loss"]
    losses = [f["loss"] for t in times.values() for f in t["fits"]]
    rel = max(abs(x - sk_loss) for x in losses) / max(abs(sk_loss), 1e-300)
    # every fit of one configuration must be the same run; and all must agree
    deterministic = all(len(t["n_iter"]) == 1 and len(t["loss"]) == 1 for t in times.values())
    same_iter = len({f["n_iter"] for t in times.values() for f in t["fits"]}) == 1
    ulp_rel = None
    if not (same_iter and rel <= REL_TOL):
        ulp_rel = one_ulp_control(makers[SK1], X, y, sk_loss, nfev)
    return {"description": desc, "hidden_layer_sizes": list(hidden), "max_iter": case["max_iter"],
            "tol": case["tol"], "alpha": 1e-4, "goal": case["goal"], "times": times,
            "sklearn_best": best_sk, "fastjac_best": best_fj,
            "ratio": times[best_fj]["median_s"] / times[best_sk]["median_s"],
            "ratio_defaults": times[FJ]["median_s"] / times[SK]["median_s"],
            "ratio_1thread": times[FJ1]["median_s"] / times[SK1]["median_s"],
            "loss_rel_diff": rel,
            "same_n_iter": same_iter, "deterministic": deterministic,
            "agree": bool(same_iter and rel <= REL_TOL and deterministic),
            "sklearn_one_ulp_rel_diff": ulp_rel,
            "others_cpu_share": others.share()}


def one_ulp_control(make, X, y, loss, nfev):
    """Relative change of scikit-learn's ``loss_`` when ``X[0, 0]`` moves one ulp up: how far
    rounding alone moves its own path (the agreement check's control)."""
    import numpy as np

    X = np.array(X, dtype=np.float64)
    X[0, 0] = np.nextafter(X[0, 0], np.inf)
    moved = fit_once(make, X, y, nfev)["loss"]
    return abs(moved - loss) / max(abs(loss), 1e-300)


def other_solvers(case, nfev, lbfgs):
    """fastjac's armijo and gauss_newton on digits (information, no target)."""
    from fastjac.sklearn import MLPClassifier

    X, y, desc = load("digits", case)
    params = dict(hidden_layer_sizes=HIDDEN["solvers"], activation="relu", alpha=1e-4,
                  tol=case["tol"], max_iter=case["max_iter"], random_state=0)
    makers = {s: ((lambda s=s: MLPClassifier(solver=s, **params)), False) for s in SOLVERS_INFO}
    print(f"other solvers: {desc}, max_iter={case['max_iter']}", flush=True)
    others = report.OtherLoad()
    times = interleaved(makers, X, y, case, nfev)
    return {"description": desc, "hidden_layer_sizes": list(HIDDEN["solvers"]),
            "max_iter": case["max_iter"], "tol": case["tol"], "times": times,
            "lbfgs": lbfgs, "others_cpu_share": others.share()}


# ---------------------------------------------------------------- output

fmt_time = report.fmt_time
fmt_share = report.fmt_share


def first_cell(t):
    return fmt_time(t["first_fit"]["seconds"]) if t.get("first_fit") else "— (warmed)"


def fmt_loss(x):
    return f"{x:.10g}"


def row_label(name, r):
    it = (f"max_iter={r['max_iter']}" + (", tol=0" if r["tol"] == 0 else f", tol={r['tol']:g}"))
    return f"{r['description']}; hidden {tuple(r['hidden_layer_sizes'])}; {it}"


def verdict_of(r, quick):
    if r["goal"] is None:
        return "— (information)"
    if quick:
        return "not evaluated (--quick sizes)"
    if not r["agree"]:
        return "**missed** (runs differ)"
    return report.verdict(r["ratio"] <= r["goal"])


def objective_ratio(r):
    """``" (in the objective alone ...)"``: the ratio of the times in the objective alone, and
    the times outside it, of the two configurations the verdict compares ("" without them)."""
    fj, sk = r["times"][r["fastjac_best"]], r["times"][r["sklearn_best"]]
    if "objective_median_s" not in fj or "objective_median_s" not in sk:
        return ""
    return (f" (in the objective alone {fj['objective_median_s'] / sk['objective_median_s']:.2f}×: "
            f"{fmt_time(fj['objective_median_s'])} against {fmt_time(sk['objective_median_s'])}; "
            f"outside it {fmt_time(fj['outside_median_s'])} against "
            f"{fmt_time(sk['outside_median_s'])})")


def write_markdown(path, results, opts):
    env = results["env"]
    cmp_ = results["compare"]
    lines = ["# fastjac estimators: fit time against scikit-learn", "",
             f"Started {results['started']} by `{env['command']}` at commit {results['git_start']} "
             f"in {results['minutes']:.1f} min"
             + (" — **--quick: reduced sizes and iterations, not a verdict**" if opts.quick else "")
             + ".", "",
             "`fastjac.MLPClassifier` / `fastjac.MLPRegressor` against "
             "`sklearn.neural_network`'s, both `solver=\"lbfgs\"` (scipy's L-BFGS-B), relu, "
             "alpha=1e-4, random_state=0, the same tol and max_iter. Median whole-`fit` wall "
             "time over interleaved rounds in one process, first fit excluded:", "",
             "| dataset | scikit-learn fit | fastjac fit | ratio | goal | verdict |",
             "|---|---|---|---|---|---|"]
    def cell(t, default, single, best):
        b, other = (t[default], t[single]) if best == default else (t[single], t[default])
        tag = "default threads" if best == default else "1 thread"
        alt = "1 thread" if best == default else "default threads"
        return f"{fmt_time(b['median_s'])} ({tag}; {alt}: {fmt_time(other['median_s'])})"

    for name, r in cmp_.items():
        t = r["times"]
        goal = f"≤ {r['goal']:g}×" if r["goal"] is not None else "—"
        lines.append(f"| {row_label(name, r)} | {cell(t, SK, SK1, r['sklearn_best'])} | "
                     f"{cell(t, FJ, FJ1, r['fastjac_best'])} | {r['ratio']:.2f}× (defaults: "
                     f"{r['ratio_defaults']:.2f}×) | {goal} | {verdict_of(r, opts.quick)} |")
    lines += ["", "Each estimator is timed with its default threads and with one thread (BLAS "
              "limited to 1 thread by threadpoolctl, and Numba's thread count, which fastjac's "
              "kernels read, set to 1); the ratio and verdict compare each one's faster "
              "configuration, the ratio in brackets the two defaults. On 2 shared cores "
              "OpenBLAS's threads can make scikit-learn's small matrix products many times "
              "slower, which the defaults' ratio would credit to fastjac."]
    lines += ["", "## Details", "",
              "Range over rounds; first fit (before the rounds: Numba's compile or cache load "
              "for fastjac); iterations `n_iter_`; loss evaluations (L-BFGS-B's `nfev`); final "
              "`loss_`; others' CPU share while the dataset was timed. In the objective / "
              "outside: medians of each fit's time in the loss-and-gradient function L-BFGS-B "
              "calls and of the rest of the fit (L-BFGS-B itself, scipy, validation; see "
              "Method).", "",
              "| dataset | estimator | rounds | median (range) | in the objective / outside "
              "| first fit | n_iter_ | loss evals | loss_ | others' CPU |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in cmp_.items():
        for impl, t in r["times"].items():
            split = (f"{fmt_time(t['objective_median_s'])} / {fmt_time(t['outside_median_s'])}"
                     if "objective_median_s" in t else "—")
            lines.append(f"| {name} | {impl} | {t['rounds']} | {fmt_time(t['median_s'])} "
                         f"({fmt_time(t['min_s'])}–{fmt_time(t['max_s'])}) | {split} | "
                         f"{first_cell(t)} | "
                         f"{', '.join(map(str, t['n_iter']))} | "
                         f"{', '.join(map(str, t['nfev'])) or '—'} | "
                         f"{', '.join(fmt_loss(x) for x in t['loss'])} | "
                         f"{fmt_share(r['others_cpu_share'])} |")
    lines += ["", "Ratios and agreement of the fits (fastjac's and scikit-learn's in both "
              "configurations):", ""]
    for name, r in cmp_.items():
        lines.append(f"- {name}: fastjac / scikit-learn with default threads "
                     f"{r['ratio_defaults']:.2f}×, both with 1 thread {r['ratio_1thread']:.2f}×, "
                     f"each in its faster configuration {r['ratio']:.2f}×"
                     + objective_ratio(r) + "; "
                     f"n_iter_ {'equal' if r['same_n_iter'] else '**differs**'}, "
                     f"loss_ largest relative difference {r['loss_rel_diff']:.1e} "
                     f"({'≤' if r['loss_rel_diff'] <= REL_TOL else '**>**'} {REL_TOL:g}); "
                     f"every round's fit {'identical' if r['deterministic'] else '**not identical**'}"
                     + ("" if r.get("sklearn_one_ulp_rel_diff") is None else
                        f"; control: scikit-learn's own loss_ moves by "
                        f"{r['sklearn_one_ulp_rel_diff']:.1e} when X[0, 0] moves one ulp"))
    so = results.get("solvers")
    if so:
        lines += ["", f"## fastjac's other solvers ({so['description']}, information)", "",
                  f"hidden {tuple(so['hidden_layer_sizes'])}, max_iter={so['max_iter']}, "
                  f"tol={so['tol']:g}, random_state=0; fit time and final training loss, with "
                  f"lbfgs from the table above for comparison. Others' CPU: "
                  f"{fmt_share(so['others_cpu_share'])}.", "",
                  "| solver | rounds | fit median (range) | first fit | n_iter_ | final loss_ |",
                  "|---|---|---|---|---|---|"]
        for s, t in so["times"].items():
            lines.append(f"| fastjac {s} | {t['rounds']} | {fmt_time(t['median_s'])} "
                         f"({fmt_time(t['min_s'])}–{fmt_time(t['max_s'])}) | "
                         f"{first_cell(t)} | "
                         f"{', '.join(map(str, t['n_iter']))} | "
                         f"{', '.join(fmt_loss(x) for x in t['loss'])} |")
        lb = so.get("lbfgs")
        if lb:
            for impl, t in lb["times"].items():
                lines.append(f"| {impl.replace(',', ' lbfgs,', 1) if ',' in impl else impl + ' lbfgs'}"
                             f" (max_iter={lb['max_iter']}) | {t['rounds']} | "
                             f"{fmt_time(t['median_s'])} ({fmt_time(t['min_s'])}–"
                             f"{fmt_time(t['max_s'])}) | {first_cell(t)} | "
                             f"{', '.join(map(str, t['n_iter']))} | "
                             f"{', '.join(fmt_loss(x) for x in t['loss'])} |")
    lines += ["", "## Method", "", __doc__.split("Method\n------\n")[1].strip(), "",
              "Rounds per dataset: " + "; ".join(
                  f"{n} at least {c['min_rounds']}, at most {c['max_rounds']}, as many as fit "
                  f"{c['budget']:g} s" for n, c in opts.cases.items()) + ". "
              "The machine is shared and noisy: compare the columns of one row (timed "
              "together), not runs.", "", "## Environment", ""]
    lines += report.environment_lines(env, results["loadavg_start"], results["others_cpu_share"])
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes and few iterations and rounds (a smoke run, not a verdict)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output directory")
    opts = p.parse_args(argv)
    opts.cases = QUICK if opts.quick else FULL
    return opts


def run(opts):
    from sklearn.exceptions import ConvergenceWarning

    results = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
               "git_start": report._git_state(), "loadavg_start": report._loadavg(),
               "quick": opts.quick, "compare": {}}
    start, others = time.perf_counter(), report.OtherLoad()
    with warnings.catch_warnings(), NfevRecorder() as nfev:
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name in ("synthetic", "digits", "diabetes"):
            results["compare"][name] = compare(name, opts.cases[name], nfev)
        results["solvers"] = other_solvers(opts.cases["solvers"], nfev,
                                           results["compare"]["digits"])
    results["minutes"] = (time.perf_counter() - start) / 60
    results["others_cpu_share"] = others.share()
    results["env"] = report.environment([])
    return results


def main(argv=None):
    opts = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    results = run(opts)
    write_markdown(opts.out / "estimators.md", results, opts)
    solvers = dict(results["solvers"])
    solvers["lbfgs"] = "see compare.digits"  # no duplicate in the JSON
    saved = dict(results, solvers=solvers)
    (opts.out / "estimators.json").write_text(json.dumps(saved, indent=1, default=str) + "\n")
    print(f"wrote {opts.out / 'estimators.md'}, estimators.json")
    for name, r in results["compare"].items():
        t = r["times"]
        print(f"  {verdict_of(r, opts.quick):>30}  {name}: {r['ratio']:.2f}× ({r['fastjac_best']} "
              f"{fmt_time(t[r['fastjac_best']]['median_s'])} vs {r['sklearn_best']} "
              f"{fmt_time(t[r['sklearn_best']]['median_s'])}); defaults {r['ratio_defaults']:.2f}× "
              f"({fmt_time(t[FJ]['median_s'])} vs {fmt_time(t[SK]['median_s'])}); "
              f"runs {'agree' if r['agree'] else 'DIFFER'}")
    return results


if __name__ == "__main__":
    main()
