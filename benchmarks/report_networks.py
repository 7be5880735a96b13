"""Networks of any depth (issue 10): speed, memory, compile and start-up, and no regression.

    python benchmarks/report_networks.py [--quick] [--out DIR]

writes ``DIR/networks.md`` (targets table, details, environment) and
``DIR/networks.json`` (every sample), DIR defaulting to ``benchmarks/results``.
The full run takes about 6 minutes on 2 idle cores (up to about 12 when
other processes load them); ``--quick`` (a smoke run: tanh only, few rounds,
one cold start, one old/new pair of processes; not a verdict) about 2.

Method
------
* **Speed and memory** (``MLP([64, 128, 64, 10])``, softmax cross-entropy,
  N=100,000, float64, X standard normal, Y one-hot random labels,
  ``net.init(seed=0)``): fastjac's fused ``loss_and_gradient_closure``, the
  hand-written numpy of ``benchmarks/numpy_mlp.py`` and
  ``jax.jit(jax.value_and_grad(loss))`` with ``jax_enable_x64`` (parameters
  converted in, ``block_until_ready``, gradients converted out: what a user
  pays) run in this one process, interleaved as in ``report.py``: each round
  calls every implementation once in an order rotated each round, after a
  10 ms pause; the figure is the median over rounds, ratios are of medians.
  Every implementation's loss and gradient are first checked against
  fastjac's (largest difference over the loss and each block, relative to
  that block's largest entry, <= 1e-10), and only then timed. The target is
  on tanh; the other activations are shown for information. Peak extra
  memory of one call: ``tracemalloc`` (numpy's allocator and Numba's runtime
  report to it), and the peak RSS above the level before the call.
* **Compile and start-up**: whole fresh processes with an empty temporary
  ``NUMBA_CACHE_DIR`` (cold), then the same directory again (warm):
  ``python -m fastjac train`` end to end (wall time of the process), and a
  script that imports numpy and fastjac (the import time), then builds
  ``MLP(FIRST_SIZES, "tanh")`` on FIRST_N rows, its fused closure and calls it
  once (first gradient: from after the import to the gradient returned), then
  does the same for ``MLP(SECOND_SIZES, "tanh")`` (another depth and width,
  same activation and loss: it must compile nothing). Numba compilations are
  counted with Numba's ``numba:compile`` events.
* **No regression on the lecture's network**: a detached git worktree of
  commit ``OLD_COMMIT`` (before the generic rewrite) is imported from fresh
  processes through ``PYTHONPATH`` with its own ``NUMBA_CACHE_DIR``, the
  current tree likewise; processes alternate old, new, new, old, ... (after
  one unmeasured warm-up process each, which fills its cache). Each process
  measures the fused gradient at N=400 (breast cancer, the lecture's start:
  ``fastjac.nn_loss_and_gradient_closure(X, Y)(var)``; median of samples of
  back-to-back calls) and then the lecture's 100-step run
  (``fastjac.train.train(verbose=False)``, ``History.seconds``, median of
  runs after a 2-step warm-up). The figure is the median over processes of
  each process's median, with the range; the ratio is new / old of those.
  Loss, gradient and the run's final loss are checked to agree between old
  and new.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import numpy_mlp  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402  (timing, memory, environment and formatting helpers)
import workloads  # noqa: E402

MB = report.MB
SIZES = [64, 128, 64, 10]
N_SPEED = 100_000
ACTIVATIONS = ("tanh", "relu", "logistic", "identity")
IMPLS = ("fused", "numpy", "jax")
CHECK_RTOL = 1e-10
FIRST_SIZES, FIRST_N = [30, 64, 32, 16, 2], 1_000
SECOND_SIZES, SECOND_N = [10, 7, 5, 4, 3, 3], 500
OLD_COMMIT = "99686a4"
# Fresh processes of one version differ by a few per cent (thread placement on the shared
# cores); "no slower" is judged with this allowance.
NO_SLOWER_TOLERANCE = 1.05
GOALS = {"numpy": 0.5, "jax": 0.75, "memory_bytes": 16 * MB, "cli_cold_s": 6.0, "cli_warm_s": 2.0,
         "first_cold_s": 3.0, "second_s": 0.2}


# ---------------------------------------------------------------- implementations

def data(sizes, N, seed=0):
    """``(X (N, n_0) standard normal, Y (N, m) one-hot random labels)``, float64."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, sizes[0]))
    Y = np.zeros((N, sizes[-1]))
    Y[np.arange(N), rng.integers(0, sizes[-1], N)] = 1
    return X, Y


def jax_closure(sizes, activation, X, Y):
    """``fg(params) -> (loss, grads)`` by ``jax.jit(jax.value_and_grad(loss))`` in float64.

    Raises ``peers.MissingPeer`` when JAX is not installed. Gradients come back
    as numpy arrays in ``fastjac.MLP``'s layout (biases (n_l,)).
    """
    if not peers.available("jax"):
        raise peers.MissingPeer(f"jax is not installed ({peers.INSTALL_HINT})")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    f = {"identity": lambda z: z, "logistic": jax.nn.sigmoid, "tanh": jnp.tanh,
         "relu": jax.nn.relu}[activation]
    L = len(sizes) - 1

    def loss(params, X, Y):
        A = X
        for l in range(L - 1):
            A = f(A @ params[2 * l] + params[2 * l + 1])
        logQ = jax.nn.log_softmax(A @ params[-2] + params[-1], axis=1)
        return -jnp.sum(Y * logQ) / X.shape[0]

    step = jax.jit(jax.value_and_grad(loss))
    Xj, Yj = jnp.asarray(X, dtype=jnp.float64), jnp.asarray(Y, dtype=jnp.float64)

    def fg(params):
        value, grads = step(tuple(jnp.asarray(p, dtype=jnp.float64) for p in params), Xj, Yj)
        jax.block_until_ready((value, grads))
        return float(value), [np.asarray(g).reshape(-1) if i % 2 else np.asarray(g)
                              for i, g in enumerate(grads)]

    return fg


def build(impl, net, X, Y):
    """``fg`` of ``impl`` for ``net`` (one activation for every hidden layer)."""
    if impl == "fused":
        return net.loss_and_gradient_closure(X, Y)
    if impl == "numpy":
        return numpy_mlp.loss_and_gradient_closure(X, Y, net.activations[0])
    if impl == "jax":
        return jax_closure(list(net.sizes), net.activations[0], X, Y)
    raise ValueError(impl)


def max_rel_diff(result, reference):
    """Largest difference of loss and each gradient block from ``reference``, relative
    to the loss and to the block's largest entry."""
    (value, grads), (ref_value, ref_grads) = result, reference
    if len(grads) != len(ref_grads):
        return float("inf")
    worst = abs(value - ref_value) / max(abs(ref_value), 1e-300)
    for g, r in zip(grads, ref_grads):
        g = np.asarray(g)
        if g.shape != r.shape:
            return float("inf")
        worst = max(worst, float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-300)))
    return worst


# ---------------------------------------------------------------- speed and memory

def speed(activation, N, opts):
    """Interleaved medians, check against fastjac and peak memory of each implementation."""
    import fastjac

    print(f"  {'-'.join(map(str, SIZES))} {activation} N={N:,}", flush=True)
    X, Y = data(SIZES, N)
    net = fastjac.MLP(SIZES, activation=activation, loss="softmax_cross_entropy")
    params = net.init(seed=0)
    rows, calls, reference = {}, {}, None
    for impl in IMPLS:
        try:
            fg = build(impl, net, X, Y)
        except peers.MissingPeer as exc:
            rows[impl] = {"skipped": str(exc)}
            continue
        result = fg(params)  # compiles (Numba, XLA); also the check
        if impl == "fused":
            reference = result
        err = max_rel_diff(result, reference)
        rows[impl] = {"max_rel_diff": err}
        if not err <= CHECK_RTOL:
            rows[impl]["skipped"] = f"differs from fastjac (max rel diff {err:.2g} > {CHECK_RTOL:g})"
            continue
        calls[impl] = (lambda fg=fg: fg(params))
    others = report.OtherLoad()
    times = report.interleaved(calls, opts.min_sample, opts.budget, opts.min_rounds, opts.max_rounds)
    for impl, fn in calls.items():
        rows[impl].update(times[impl])
        if impl != "jax":  # XLA allocates outside tracemalloc
            rows[impl]["tracemalloc_bytes"] = report.tracemalloc_peak(fn)
        rows[impl]["rss_bytes"] = report.rss_peak(fn)
    fused = rows.get("fused", {}).get("median_s")
    for impl, row in rows.items():
        if fused and "median_s" in row:
            row["fused_ratio"] = fused / row["median_s"]  # fastjac's time / this one's
    return {"N": N, "sizes": SIZES, "rows": rows, "others_cpu_share": others.share()}


# ---------------------------------------------------------------- start-up in fresh processes

# Run as ``python -c``: the import, then each network's first gradient (from after the
# import to the gradient returned) with the Numba compilations it made; prints JSON.
FIRST_SCRIPT = """
import json, time
t0 = time.perf_counter()
import numpy as np
import fastjac
t1 = time.perf_counter()
from numba.core import event

def first(sizes, N):
    with event.install_recorder("numba:compile") as rec:
        t = time.perf_counter()
        rng = np.random.default_rng(0)
        X = rng.standard_normal((N, sizes[0]))
        Y = np.zeros((N, sizes[-1]))
        Y[np.arange(N), rng.integers(0, sizes[-1], N)] = 1
        net = fastjac.MLP(sizes, activation="tanh", loss="softmax_cross_entropy")
        params = net.init(seed=0)
        fg = net.loss_and_gradient_closure(X, Y)
        loss, grads = fg(params)
        first_s = time.perf_counter() - t
    t = time.perf_counter()
    fg(params)
    again_s = time.perf_counter() - t
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)
    return {{"first_s": first_s, "second_call_s": again_s,
             "compiles": sum(1 for _, e in rec.buffer if e.is_start)}}

out = {{"import_s": t1 - t0, "file": fastjac.__file__}}
out["first"] = first({first_sizes!r}, {first_n})
out["second"] = first({second_sizes!r}, {second_n})
print(json.dumps(out))
"""


def first_gradients(cache_dir):
    script = FIRST_SCRIPT.format(first_sizes=FIRST_SIZES, first_n=FIRST_N,
                                 second_sizes=SECOND_SIZES, second_n=SECOND_N)
    out, wall = workloads.run_python(["-c", script], cache_dir)
    return dict(json.loads(out.strip().splitlines()[-1]), wall_s=wall)


def startup(opts):
    """Cold (empty NUMBA_CACHE_DIR) then warm (same directory) fresh processes."""
    out = {"cli": {"cold_s": [], "warm_s": []}, "first": {"cold": [], "warm": []}}
    others = report.OtherLoad()
    for rep in range(opts.cold_repeats):
        print(f"  cold/warm start-up {rep + 1}/{opts.cold_repeats}", flush=True)
        with tempfile.TemporaryDirectory(prefix="fj_cli_") as cli, \
                tempfile.TemporaryDirectory(prefix="fj_first_") as first:
            cli_args = ["-m", "fastjac", "train"]
            out["cli"]["cold_s"].append(workloads.run_python(cli_args, cli)[1])
            out["cli"]["warm_s"] += [workloads.run_python(cli_args, cli)[1]
                                     for _ in range(opts.warm_repeats)]
            out["first"]["cold"].append(first_gradients(first))
            out["first"]["warm"] += [first_gradients(first) for _ in range(opts.warm_repeats)]
    med = statistics.median
    for kind in ("cold", "warm"):
        runs = out["first"][kind]
        out["first"][f"{kind}_summary"] = {
            "import_s": med(r["import_s"] for r in runs),
            "first_s": med(r["first"]["first_s"] for r in runs),
            "first_s_all": [r["first"]["first_s"] for r in runs],
            "first_compiles": max(r["first"]["compiles"] for r in runs),
            "second_s": med(r["second"]["first_s"] for r in runs),
            "second_s_max": max(r["second"]["first_s"] for r in runs),
            "second_compiles": max(r["second"]["compiles"] for r in runs),
            "wall_s": med(r["wall_s"] for r in runs)}
    out["cli"]["cold_median_s"] = med(out["cli"]["cold_s"])
    out["cli"]["warm_median_s"] = med(out["cli"]["warm_s"])
    out["others_cpu_share"] = others.share()
    return out


# ---------------------------------------------------------------- old commit vs current

# Run as ``python -c`` with PYTHONPATH at one version's tree: the fused gradient at N=400
# (breast cancer, the lecture's start) and the lecture's 100-step run; prints JSON.
LECTURE_SCRIPT = """
import gc, json, statistics, sys, time
import numpy as np
import fastjac
from fastjac.train import train
sys.path.insert(0, {here!r})
import workloads
X, Y, var = workloads.breast_cancer(400)
fg = fastjac.nn_loss_and_gradient_closure(X, Y)
loss, grads = fg(var)

def sample(number):
    gc.disable()
    t = time.perf_counter()
    for _ in range(number):
        fg(var)
    s = (time.perf_counter() - t) / number
    gc.enable()
    return s

number = 1
while number < 2**16 and sample(number) * number < {min_sample}:
    number *= 2
samples = []
for _ in range({samples}):
    time.sleep(0.01)
    samples.append(sample(number))
train(steps=2, verbose=False)  # compiles, or loads Numba's cache
runs = [train(verbose=False) for _ in range({runs})]
print(json.dumps({{"file": fastjac.__file__, "loss": float(loss),
                  "grads": [np.asarray(g).ravel().tolist() for g in grads],
                  "fg_samples_s": samples, "fg_number": number,
                  "train_seconds": [h.seconds for h in runs],
                  "train_final_loss": float(runs[0].losses[-1])}}))
"""


def run_version(tree, cache_dir, opts, scratch):
    """One fresh process importing fastjac from ``tree``: LECTURE_SCRIPT's JSON."""
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(cache_dir))
    script = LECTURE_SCRIPT.format(here=str(HERE), min_sample=opts.min_sample,
                                   samples=opts.lecture_samples, runs=opts.lecture_runs)
    # cwd outside both trees, so that sys.path[0] ('' for -c) finds neither
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=scratch,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: lecture script failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(out["file"]).resolve().is_relative_to(Path(tree).resolve()):
        raise RuntimeError(f"imported {out['file']}, not fastjac from {tree}")
    return out


def old_vs_new(opts):
    """Alternating fresh processes of commit OLD_COMMIT and of the current tree."""
    git = ["git", "-C", str(ROOT)]
    with tempfile.TemporaryDirectory(prefix="fastjac_old_") as tmp:
        tmp = Path(tmp)
        old_tree = tmp / "tree"
        try:
            commit = subprocess.run(git + ["rev-parse", "--short", OLD_COMMIT], capture_output=True,
                                    text=True, check=True).stdout.strip()
            subprocess.run(git + ["worktree", "add", "--detach", str(old_tree), OLD_COMMIT],
                           capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            reason = getattr(exc, "stderr", None) or str(exc)
            return {"skipped": f"no worktree of {OLD_COMMIT}: {reason.strip()[:200]}"}
        try:
            trees = {"old": old_tree, "new": ROOT}
            caches = {v: tmp / f"cache_{v}" for v in trees}
            scratch = tmp / "cwd"
            scratch.mkdir()
            for v, tree in trees.items():
                print(f"  warm-up process, {v}", flush=True)
                run_version(tree, caches[v], opts, scratch)
            runs = {"old": [], "new": []}
            others = report.OtherLoad()
            order = []
            for i in range(opts.lecture_processes):
                order += ["old", "new"] if i % 2 == 0 else ["new", "old"]
            for j, v in enumerate(order):
                print(f"  process {j + 1}/{len(order)}: {v}", flush=True)
                runs[v].append(run_version(trees[v], caches[v], opts, scratch))
            others_share = others.share()
        finally:
            subprocess.run(git + ["worktree", "remove", "--force", str(old_tree)],
                           capture_output=True, text=True)
            subprocess.run(git + ["worktree", "prune"], capture_output=True, text=True)

    med = statistics.median
    out = {"old_commit": commit, "order": order, "others_cpu_share": others_share}
    for v, rs in runs.items():
        fg = [med(r["fg_samples_s"]) for r in rs]
        tr = [med(r["train_seconds"]) for r in rs]
        out[v] = {"fg_process_medians_s": fg, "fg_s": med(fg),
                  "train_process_medians_s": tr, "train_s": med(tr),
                  "fg_samples_s": [r["fg_samples_s"] for r in rs],
                  "train_samples_s": [r["train_seconds"] for r in rs],
                  "fg_number": [r["fg_number"] for r in rs]}
    out["fg_ratio"] = out["new"]["fg_s"] / out["old"]["fg_s"]
    out["train_ratio"] = out["new"]["train_s"] / out["old"]["train_s"]
    a, b = runs["old"][0], runs["new"][0]
    same = max_rel_diff((b["loss"], [np.array(g) for g in b["grads"]]),
                        (a["loss"], [np.array(g) for g in a["grads"]]))
    out["fg_max_rel_diff"] = same
    out["train_final_loss"] = {"old": a["train_final_loss"], "new": b["train_final_loss"]}
    out["same_results"] = bool(same <= CHECK_RTOL and abs(a["train_final_loss"] - b["train_final_loss"])
                               <= CHECK_RTOL * abs(a["train_final_loss"]))
    return out


# ---------------------------------------------------------------- targets

def fmt_time(s):
    return report.fmt_time(s)


def fmt_range(xs):
    return f"{fmt_time(min(xs))}–{fmt_time(max(xs))}"


def target_rows(results, opts):
    rows = []
    verdict = report.verdict
    tanh = results["speed"].get("tanh", {}).get("rows", {})
    f, n, j = tanh.get("fused", {}), tanh.get("numpy", {}), tanh.get("jax", {})
    name = f"{'-'.join(map(str, SIZES))} tanh, N={N_SPEED:,}, loss and gradient"
    if "median_s" in f and "median_s" in n:
        rn = f["median_s"] / n["median_s"]
        parts = [f"{rn:.2f}× numpy ({fmt_time(f['median_s'])} vs {fmt_time(n['median_s'])})"]
        ok = rn <= GOALS["numpy"]
        if "median_s" in j:
            rj = f["median_s"] / j["median_s"]
            parts.append(f"{rj:.2f}× JAX ({fmt_time(j['median_s'])})")
            ok = ok and rj <= GOALS["jax"]
        else:
            parts.append(f"JAX not run: {j.get('skipped', 'not run')}")
            ok = False
        rows.append(dict(target=name, goal=f"≤ {GOALS['numpy']}× hand-written numpy and "
                                           f"≤ {GOALS['jax']}× JAX jit(value_and_grad)",
                         measured="; ".join(parts), verdict=verdict(ok)))
    else:
        rows.append(dict(target=name, goal="≤ 0.5× numpy, ≤ 0.75× JAX",
                         measured=f.get("skipped") or n.get("skipped") or "not run",
                         verdict="not evaluated"))
    if "tracemalloc_bytes" in f:
        b = f["tracemalloc_bytes"]
        rows.append(dict(target="peak extra memory per fastjac call, same network and N",
                         goal="≤ 16 MB (10^6 B), tracemalloc",
                         measured=f"{b / MB:.2f} MB (RSS delta {report.fmt_bytes(f.get('rss_bytes'))}; "
                                  f"numpy {report.fmt_bytes(n.get('tracemalloc_bytes'))})",
                         verdict=verdict(b <= GOALS["memory_bytes"])))

    st = results.get("startup", {})
    if "cli" in st:
        c = st["cli"]
        rows.append(dict(target="`python -m fastjac train`, whole fresh process",
                         goal=f"cold cache ≤ {GOALS['cli_cold_s']:g} s, warm ≤ {GOALS['cli_warm_s']:g} s",
                         measured=f"cold {c['cold_median_s']:.2f} s (of {len(c['cold_s'])}: "
                                  f"{fmt_range(c['cold_s'])}), warm {c['warm_median_s']:.2f} s "
                                  f"(of {len(c['warm_s'])}: {fmt_range(c['warm_s'])})",
                         verdict=verdict(c["cold_median_s"] <= GOALS["cli_cold_s"]
                                         and c["warm_median_s"] <= GOALS["cli_warm_s"])))
        cold, warm = st["first"]["cold_summary"], st["first"]["warm_summary"]
        sizes = "-".join(map(str, FIRST_SIZES))
        rows.append(dict(target=f"fresh process's first gradient, {sizes} tanh (depth 3), "
                                f"N={FIRST_N:,}, cold cache",
                         goal=f"≤ {GOALS['first_cold_s']:g} s after `import fastjac`",
                         measured=f"{cold['first_s']:.2f} s (of {len(cold['first_s_all'])}: "
                                  f"{fmt_range(cold['first_s_all'])}; {cold['first_compiles']} Numba "
                                  f"compilations; import {cold['import_s']:.2f} s); warm cache "
                                  f"{fmt_time(warm['first_s'])} (import {warm['import_s']:.2f} s, "
                                  f"{warm['first_compiles']} compilations)",
                         verdict=verdict(cold["first_s"] <= GOALS["first_cold_s"])))
        sizes2 = "-".join(map(str, SECOND_SIZES))
        worst = max(cold["second_s_max"], warm["second_s_max"])
        rows.append(dict(target=f"then, same process, first gradient of {sizes2} tanh "
                                f"(another depth and width), N={SECOND_N:,}",
                         goal=f"≤ {GOALS['second_s']:g} s: no new compilation",
                         measured=f"{fmt_time(cold['second_s'])} after a cold start, "
                                  f"{fmt_time(warm['second_s'])} warm (worst {fmt_time(worst)}); "
                                  f"{max(cold['second_compiles'], warm['second_compiles'])} "
                                  f"Numba compilations",
                         verdict=verdict(worst <= GOALS["second_s"]
                                         and cold["second_compiles"] == warm["second_compiles"] == 0)))
    else:
        rows.append(dict(target="compile and start-up", goal="see issue 10",
                         measured=st.get("skipped", "not run"), verdict="not evaluated"))

    ov = results.get("old_vs_new", {})
    if "fg_ratio" in ov:
        for key, what in (("fg", "the lecture's fused gradient, N=400 breast cancer"),
                          ("train", "the lecture's 100-step run (compute time)")):
            o, n_ = ov["old"], ov["new"]
            r = ov[f"{key}_ratio"]
            rows.append(dict(
                target=f"{what}: current vs {ov['old_commit']} (before the rewrite)",
                goal=f"no slower: new/old ≤ {NO_SLOWER_TOLERANCE:g} (noise allowance), same results",
                measured=f"{r:.3f}× (new {fmt_time(n_[f'{key}_s'])}, processes "
                         f"{fmt_range(n_[f'{key}_process_medians_s'])}; old {fmt_time(o[f'{key}_s'])}, "
                         f"{fmt_range(o[f'{key}_process_medians_s'])}; {len(o[f'{key}_process_medians_s'])} "
                         f"processes each); results {'same' if ov['same_results'] else 'DIFFER'}",
                verdict=verdict(r <= NO_SLOWER_TOLERANCE and ov["same_results"])))
    else:
        rows.append(dict(target=f"the lecture's network vs {OLD_COMMIT}", goal="no slower",
                         measured=ov.get("skipped", "not run"), verdict="not evaluated"))
    return rows


# ---------------------------------------------------------------- output

def write_markdown(path, results, opts):
    env = results["env"]
    lines = ["# fastjac: networks of any depth (issue 10)", "",
             f"Started {results['started']} by `{env['command']}` at commit {results['git_start']} "
             f"in {results['minutes']:.1f} min"
             + (" — **--quick: few rounds and processes, not a verdict**" if opts.quick else "") + ".",
             "", "## Targets (issue 10)", "",
             "| target | goal | measured | verdict |", "|---|---|---|---|"]
    for row in results["targets"]:
        lines.append(f"| {row['target']} | {row['goal']} | {row['measured']} | {row['verdict']} |")

    lines += ["", f"## Loss and gradient, {'-'.join(map(str, SIZES))}, N={N_SPEED:,}, float64", "",
              "Median per call (fastjac's time ÷ this one's); max rel diff from fastjac; peak "
              "extra memory per call, tracemalloc (RSS delta):", "",
              "| activation | " + " | ".join(IMPLS) + " | others' CPU |",
              "|---|" + "---|" * (len(IMPLS) + 1)]
    notes = []
    for act, res in results["speed"].items():
        cells = []
        for impl in IMPLS:
            r = res["rows"].get(impl, {})
            if "median_s" in r:
                mem = (f"{report.fmt_bytes(r['tracemalloc_bytes'])} ({report.fmt_bytes(r['rss_bytes'])})"
                       if "tracemalloc_bytes" in r else f"RSS {report.fmt_bytes(r['rss_bytes'])}")
                cells.append(f"{fmt_time(r['median_s'])} ({r['fused_ratio']:.2f}×); "
                             f"{r['max_rel_diff']:.1e}; {mem}")
            else:
                cells.append("—")
                notes.append(f"- {impl}, {act}: {r.get('skipped', 'not run')}")
        cells.append(report.fmt_share(res["others_cpu_share"]))
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    some = next(iter(results["speed"].values()), None)
    if some:
        r = some["rows"].get("fused", {})
        lines += ["", f"Rounds: {r.get('rounds')} (at least {opts.min_rounds}, at most "
                      f"{opts.max_rounds}, as many as fit {opts.budget:g} s); a sample lasts at "
                      f"least {opts.min_sample * 1e3:g} ms."]
    lines += [""] + notes + ([""] if notes else [])

    st = results.get("startup", {})
    if "cli" in st:
        c, fr = st["cli"], st["first"]
        lines += ["## Compile and start-up (fresh processes)", "",
                  f"Cold = empty `NUMBA_CACHE_DIR`; warm = the same directory again. "
                  f"{opts.cold_repeats} cold process(es) per measurement, {opts.warm_repeats} warm "
                  f"after each; medians. Other processes used "
                  f"{report.fmt_share(st['others_cpu_share'])} of the CPUs meanwhile.", "",
                  "| measurement | cold | warm |", "|---|---|---|",
                  f"| `python -m fastjac train`, wall | {c['cold_median_s']:.2f} s | {c['warm_median_s']:.2f} s |"]
        cs, ws = fr["cold_summary"], fr["warm_summary"]
        lines += [f"| `import numpy, fastjac` | {cs['import_s']:.2f} s | {ws['import_s']:.2f} s |",
                  f"| first gradient {'-'.join(map(str, FIRST_SIZES))} tanh, N={FIRST_N:,} "
                  f"(Numba compilations) | {cs['first_s']:.2f} s ({cs['first_compiles']}) | "
                  f"{fmt_time(ws['first_s'])} ({ws['first_compiles']}) |",
                  f"| then first gradient {'-'.join(map(str, SECOND_SIZES))} tanh, N={SECOND_N:,} "
                  f"(compilations) | {fmt_time(cs['second_s'])} ({cs['second_compiles']}) | "
                  f"{fmt_time(ws['second_s'])} ({ws['second_compiles']}) |",
                  f"| whole first-gradient process, wall | {cs['wall_s']:.2f} s | {ws['wall_s']:.2f} s |",
                  ""]

    ov = results.get("old_vs_new", {})
    if "fg_ratio" in ov:
        lines += [f"## The lecture's network: current tree vs {ov['old_commit']}", "",
                  f"Fresh processes in the order {', '.join(ov['order'])}; per process the median "
                  f"of {opts.lecture_samples} gradient samples and of {opts.lecture_runs} "
                  f"100-step runs. Other processes used {report.fmt_share(ov['others_cpu_share'])} "
                  "of the CPUs meanwhile.", "",
                  "| measurement | old (processes) | new (processes) | new / old |", "|---|---|---|---|"]
        for key, what in (("fg", "fused gradient, N=400"), ("train", "100-step run, compute")):
            o, n_ = ov["old"], ov["new"]
            lines.append(f"| {what} | {fmt_time(o[f'{key}_s'])} ({fmt_range(o[f'{key}_process_medians_s'])}) | "
                         f"{fmt_time(n_[f'{key}_s'])} ({fmt_range(n_[f'{key}_process_medians_s'])}) | "
                         f"{ov[f'{key}_ratio']:.3f} |")
        lines += ["", f"Gradient of new vs old: max rel diff {ov['fg_max_rel_diff']:.1e}; final loss "
                      f"of the run old {ov['train_final_loss']['old']!r}, new "
                      f"{ov['train_final_loss']['new']!r}.", "",
                  f"{ov['old_commit']}'s fused kernels run their row chunks in Numba `parallel=True` "
                  "(OpenMP) regions, whose barriers stall while other processes hold the cores; the "
                  "current kernels have no parallel regions (row chunks on Python threads). The more "
                  "the machine is shared, the more the ratio favours the current code: read it with "
                  "the others' CPU share above.", ""]

    lines += ["## Method", "", __doc__.split("Method\n------\n")[1].strip(), "",
              "The machine is shared and noisy: compare figures timed together (one row, one "
              "run), not runs.", "", "## Environment", ""]
    lines += report.environment_lines(env, results["loadavg_start"], results["others_cpu_share"])
    if not peers.available("jax"):
        lines.append(f"- Not installed here: jax ({peers.INSTALL_HINT})")
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: tanh only, few rounds, one cold start, one old/new pair")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output directory")
    opts = p.parse_args(argv)
    q = opts.quick
    opts.activations = ("tanh",) if q else ACTIVATIONS
    opts.min_sample = 0.005 if q else 0.02
    opts.budget = 1.0 if q else 12.0
    opts.min_rounds, opts.max_rounds = (3, 5) if q else (5, 31)
    # five cold runs: this machine's speed drifts within minutes (a median of two swung
    # 3.24-3.48 s between two runs of this report)
    opts.cold_repeats, opts.warm_repeats = (1, 1) if q else (5, 3)
    opts.lecture_processes = 1 if q else 5  # pairs: old+new, then new+old, ...
    opts.lecture_samples = 5 if q else 15
    opts.lecture_runs = 3 if q else 7
    return opts


def main(argv=None):
    opts = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    start, others = time.perf_counter(), report.OtherLoad()
    results = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
               "git_start": report._git_state(), "loadavg_start": report._loadavg(), "speed": {}}
    print("loss and gradient, interleaved", flush=True)
    for act in opts.activations:
        results["speed"][act] = speed(act, N_SPEED, opts)
    print("compile and start-up, fresh processes", flush=True)
    results["startup"] = startup(opts)
    print(f"lecture's network, current vs {OLD_COMMIT}, fresh processes", flush=True)
    results["old_vs_new"] = old_vs_new(opts)
    results["env"] = report.environment(list(IMPLS))
    results["minutes"] = (time.perf_counter() - start) / 60
    results["others_cpu_share"] = others.share()
    results["targets"] = target_rows(results, opts)
    write_markdown(opts.out / "networks.md", results, opts)
    (opts.out / "networks.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {opts.out / 'networks.md'} and networks.json")
    for row in results["targets"]:
        print(f"  {row['verdict']:>13}  {row['target']}: {row['measured']}")
    return results


if __name__ == "__main__":
    main()
