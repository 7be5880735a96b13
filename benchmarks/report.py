"""Scaling report: fastjac against hand-written numpy and its peers, and issue 4's targets.

    python benchmarks/report.py [--quick] [--out DIR]

writes ``DIR/report.md`` (tables), ``DIR/scaling.png`` (time, ratio to numpy
and peak extra memory against N, log-log) and ``DIR/report.json`` (every
sample), DIR defaulting to ``benchmarks/results``.

Method
------
* All implementations of one network and size run in this one process,
  interleaved: each round calls every implementation once, in an order
  rotated each round, after a 10 ms pause that lets the previous one's
  worker threads go idle; the figure is the median over rounds. A sample is
  ``number`` back-to-back calls (calibrated so that one sample lasts at
  least 20 ms, 2 ms with --quick) with the garbage collector off, divided
  by ``number``. Each implementation is called once before timing (compiles).
* Peak extra memory of one call: ``tracemalloc`` for numpy, autograd and
  fastjac (numpy's allocator and Numba's runtime both report to it);
  JAX and PyTorch allocate outside it, so for them (and, as a cross-check,
  for all) the peak resident set size above the level before the call, read
  from /proc/self/status after resetting the peak through
  /proc/self/clear_refs and returning free heap pages with ``malloc_trim``.
* Every result is checked against the numpy baseline before it is timed.
* The lecture's 100-step run (``fastjac.train.train``: the median over 7
  fresh processes of each one's median loop time ``History.seconds`` over 7
  runs, with the range of the process medians, which differ more than runs
  in one process do) and the start-up figures run in fresh processes, as a
  user runs them; the dense reference's 100-step run gives the trajectory
  to compare with.
* "others' CPU": the share of the CPUs that other processes took while a
  row was timed (/proc/stat's busy time less this process's CPU time).
"""

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import numpy_backprop  # noqa: E402
import peers  # noqa: E402
import workloads  # noqa: E402

MB = 1e6  # memory is reported in MB = 10^6 bytes (the stricter reading of "16 MB")
IMPLS = ["numpy", "fused", "structured", "dense", "jax", "torch", "autograd"]
LABELS = {"fused": "fastjac (fused)", "gemms": "GEMMs alone"}
RSS_ONLY = {"jax", "torch"}  # allocate outside tracemalloc
FULL_SIZES = {"narrow": [400, 4_000, 40_000, 400_000, 1_000_000],
              "wide": [1_000, 4_000, 10_000, 40_000]}
QUICK_SIZES = {"narrow": [400, 4_000], "wide": [500]}
# Pause before each sample so the previous implementation's idle worker threads (OpenMP,
# Eigen, OpenBLAS spin a while after a parallel region) stop competing for the 2 cores.
SETTLE_S = 0.01
ENV_VARS = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "NUMBA_CACHE_DIR",
            "XLA_FLAGS", "CI"]


# ---------------------------------------------------------------- timing and memory

def sample(fn, number):
    """Seconds per call over ``number`` back-to-back calls, garbage collector off."""
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number
    finally:
        if gc_was_on:
            gc.enable()


def calibrate(fn, min_sample):
    """Smallest power-of-two ``number`` of calls that takes at least ``min_sample`` seconds."""
    number = 1
    while number < 2**16:
        if sample(fn, number) * number >= min_sample:
            break
        number *= 2
    return number


def interleaved(calls, min_sample, budget, min_rounds, max_rounds):
    """Median seconds per call of each of ``calls`` (name -> fn()), timed round-robin."""
    numbers = {name: calibrate(fn, min_sample) for name, fn in calls.items()}
    per_round = sum(sample(fn, numbers[name]) * numbers[name] for name, fn in calls.items())
    rounds = int(min(max_rounds, max(min_rounds, budget / max(per_round, 1e-9))))
    names = list(calls)
    samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(SETTLE_S)
            samples[name].append(sample(calls[name], numbers[name]))
    return {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s),
                   "rounds": rounds, "number": numbers[name], "samples_s": s}
            for name, s in samples.items()}


def tracemalloc_peak(fn):
    """Peak bytes allocated (through tracemalloc) while ``fn()`` runs, above the start."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:
        tracemalloc.reset_peak()
    else:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    del result
    return peak


def _proc_status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss_peak(fn):
    """Peak resident bytes while ``fn()`` runs, above the resident size before; None if unreadable."""
    try:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current VmRSS
        base = _proc_status("VmRSS")
    except OSError:
        return None
    result = fn()
    peak = _proc_status("VmHWM") - base
    del result
    return max(peak, 0)


def check(result, reference):
    """Largest relative difference of loss and gradient blocks from the numpy baseline."""
    (value, grads), (ref_value, ref_grads) = result, reference
    worst = abs(value - ref_value) / max(abs(ref_value), 1e-300)
    for g, r in zip(grads, ref_grads):
        scale = max(np.abs(r).max(), 1e-300)
        worst = max(worst, float(np.abs(np.reshape(g, np.shape(r)) - r).max() / scale))
    return worst


# ---------------------------------------------------------------- one network at one size

def implementations(X, Y, network, N, names):
    """name -> (fg, None) or (None, reason it cannot run)."""
    d, k, m = workloads.NETWORKS[network]
    out = {}
    for name in names:
        if name == "dense" and (reason := workloads.dense_fits(workloads.dense_gradient_bytes(N, d, k, m))):
            out[name] = (None, reason)
            continue
        try:
            out[name] = (workloads.build(workloads.LOSS_AND_GRADIENT, name, X, Y), None)
        except workloads.Unavailable as exc:
            out[name] = (None, str(exc))
    return out


def measure(X, Y, var, network, N, names, opts, gemms=False):
    """Time and memory of each implementation's loss-and-gradient on (X, Y) at ``var``."""
    print(f"  {network} N={N}", flush=True)
    built = implementations(X, Y, network, N, names)
    reference = numpy_backprop.loss_and_gradient(X, Y, var)
    rows, calls = {}, {}
    for name, (fg, reason) in built.items():
        if fg is None:
            rows[name] = {"skipped": reason}
            continue
        err = check(fg(var), reference)  # also the warm-up call
        rows[name] = {"max_rel_diff": err}
        if err > 1e-6:
            rows[name]["skipped"] = f"result differs from numpy (max rel diff {err:.2g})"
            continue
        calls[name] = (lambda fg=fg: fg(var))
    if gemms:
        calls["gemms"] = numpy_backprop.gemms(X, Y, var)
        rows["gemms"] = {}
    heavy = "dense" in calls
    times = interleaved(calls, opts.min_sample, opts.budget * (3 if heavy else 1),
                        opts.min_rounds, opts.max_rounds)
    for name, fn in calls.items():
        rows[name].update(times[name])
        if name not in RSS_ONLY:
            rows[name]["tracemalloc_bytes"] = tracemalloc_peak(fn)
        rows[name]["rss_bytes"] = rss_peak(fn)
    base = rows.get("numpy", {}).get("median_s")
    for name, row in rows.items():
        if base and "median_s" in row:
            row["ratio_to_numpy"] = row["median_s"] / base
    return rows


# ---------------------------------------------------------------- environment

def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return ""


def _git_state():
    """Short commit of HEAD, noting uncommitted changes to the package."""
    head = _git("rev-parse", "--short", "HEAD")
    return head + (" (uncommitted changes in fastjac/)" if _git("status", "--porcelain", "--", "../fastjac") else "")


def _cpu_model():
    info = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model", "stepping") and key not in info:
                    info[key] = value.strip()
                if key == "flags" and "avx512" not in info:
                    info["avx512"] = "avx512f" in value.split()
    except OSError:
        pass
    return info


def _owner(filepath):
    """The package a shared library ships with (``numpy`` for site-packages/numpy.libs/...)."""
    parts = Path(filepath).parts
    if "site-packages" in parts[:-2]:
        return parts[parts.index("site-packages") + 1].removesuffix(".libs")
    return str(Path(filepath).parent)


def _loadavg():
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "unknown"


def environment(names):
    import numba
    import scipy
    import sklearn
    import threadpoolctl

    import fastjac

    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "numba": numba.__version__, "scipy": scipy.__version__,
                "scikit-learn": sklearn.__version__, "threadpoolctl": threadpoolctl.__version__,
                "fastjac": fastjac.__version__}
    import llvmlite

    versions["llvmlite"] = llvmlite.__version__
    extra = {}
    for peer in ("jax", "torch", "autograd"):
        if peer in names and peers.available(peer):
            versions[peer] = peers.version(peer)
    if "jax" in versions:
        import jax
        import jaxlib

        versions["jaxlib"] = jaxlib.__version__
        extra["jax_backend"] = f"{jax.default_backend()} {[str(d) for d in jax.devices()]}"
    if "torch" in versions:
        import torch

        extra["torch_threads"] = torch.get_num_threads()
        extra["torch_blas"] = ", ".join(re.findall(r"(?:BLAS|LAPACK)_INFO=\w+", torch.__config__.show()))
        mkl = [line.strip() for line in torch.__config__.parallel_info().splitlines()
               if "Math Kernel Library" in line]
        extra["torch_mkl"] = mkl[0] if mkl else "none"
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not yet initialised"
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python_executable": sys.executable,
        "git": _git_state(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "loadavg": _loadavg(),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "blas": [dict({k: i.get(k) for k in ("internal_api", "version", "architecture",
                                              "num_threads", "threading_layer")},
                      library=Path(i["filepath"]).name,
                      used_by=_owner(i["filepath"]))
                 for i in threadpoolctl.threadpool_info()],
        "env": {v: os.environ.get(v, "unset") for v in ENV_VARS},
        "versions": versions,
        **extra,
    }


# ---------------------------------------------------------------- targets

def verdict(ok):
    return "met" if ok else "**missed**"


def target_rows(results, opts):
    """Issue 4's targets, each ``{target, goal, measured, verdict}``."""
    rows = []
    bc = results.get("breast_cancer", {})
    fused, numpy_ = bc.get("fused", {}), bc.get("numpy", {})
    if "ratio_to_numpy" in fused:
        r = fused["ratio_to_numpy"]
        rows.append(dict(target="N=400 breast cancer, loss and gradient",
                         goal="≤ 0.5× hand-written numpy",
                         measured=f"{r:.2f}× ({fused['median_s'] * 1e6:.0f} µs vs "
                                  f"{numpy_['median_s'] * 1e6:.0f} µs)", verdict=verdict(r <= 0.5)))
    else:
        rows.append(dict(target="N=400 breast cancer, loss and gradient", goal="≤ 0.5× numpy",
                         measured=fused.get("skipped", "not run"), verdict="not evaluated"))

    def scaled(network, N):
        return results["scaling"].get(network, {}).get(str(N), {})

    narrow = scaled("narrow", 400_000)
    f = narrow.get("fused", {})
    if "ratio_to_numpy" in f:
        r = f["ratio_to_numpy"]
        jax = narrow.get("jax", {})
        parts = [f"{r:.2f}× numpy"]
        ok = r <= 0.45
        if "median_s" in jax:
            rj = f["median_s"] / jax["median_s"]
            parts.append(f"{rj:.2f}× JAX")
            ok = ok and rj <= 0.75
        else:
            parts.append(f"JAX: {jax.get('skipped', 'not run')}")
        rows.append(dict(target="N=400,000 narrow, loss and gradient",
                         goal="≤ 0.45× numpy and ≤ 0.75× JAX when installed",
                         measured=f"{'; '.join(parts)} ({f['median_s'] * 1e3:.1f} ms)",
                         verdict=verdict(ok)))
    else:
        rows.append(dict(target="N=400,000 narrow, loss and gradient", goal="≤ 0.45× numpy, ≤ 0.75× JAX",
                         measured=f.get("skipped", "not run (--quick)" if opts.quick else "not run"),
                         verdict="not evaluated"))

    wide = scaled("wide", 40_000)
    f = wide.get("fused", {})
    if "ratio_to_numpy" in f and "median_s" in wide.get("gemms", {}):
        r = f["ratio_to_numpy"]
        rg = f["median_s"] / wide["gemms"]["median_s"]
        rows.append(dict(target="N=40,000 wide, loss and gradient",
                         goal="≤ 0.8× numpy and ≤ 1.15× its GEMMs alone (same BLAS)",
                         measured=f"{r:.2f}× numpy; {rg:.2f}× GEMMs alone "
                                  f"({f['median_s'] * 1e3:.1f} ms vs {wide['gemms']['median_s'] * 1e3:.1f} ms)",
                         verdict=verdict(r <= 0.8 and rg <= 1.15)))
    else:
        rows.append(dict(target="N=40,000 wide, loss and gradient", goal="≤ 0.8× numpy, ≤ 1.15× GEMMs",
                         measured=f.get("skipped", "not run (--quick)" if opts.quick else "not run"),
                         verdict="not evaluated"))

    mems = [(label, s.get("fused", {}).get("tracemalloc_bytes"))
            for label, s in (("N=400,000 narrow", narrow), ("N=40,000 wide", wide))]
    if all(m is not None for _, m in mems):
        rows.append(dict(target="peak extra memory per loss-and-gradient call",
                         goal="≤ 16 MB (10^6 B) at N=400,000 narrow and N=40,000 wide",
                         measured="; ".join(f"{label}: {m / MB:.2f} MB" for label, m in mems),
                         verdict=verdict(all(m <= 16 * MB for _, m in mems))))
    else:
        rows.append(dict(target="peak extra memory per loss-and-gradient call", goal="≤ 16 MB",
                         measured="not run (--quick)" if opts.quick else "fused path not measured",
                         verdict="not evaluated"))

    lec = results.get("lecture_run", {})
    if "compute_s" in lec:
        same = lec.get("same_trajectory")
        ok = lec["compute_s"] <= 0.025 and same is True
        rows.append(dict(target="the lecture's 100-step run, same trajectory",
                         goal="≤ 25 ms compute",
                         measured=f"{lec['compute_s'] * 1e3:.1f} ms (median of "
                                  f"{len(lec['process_medians_s'])} processes, each the median of "
                                  f"{len(lec['compute_samples_s'][0])} runs; processes "
                                  f"{min(lec['process_medians_s']) * 1e3:.1f}–"
                                  f"{max(lec['process_medians_s']) * 1e3:.1f} ms); "
                                  f"trajectory: {lec['trajectory']}",
                         verdict=verdict(ok)))
    else:
        rows.append(dict(target="the lecture's 100-step run", goal="≤ 25 ms compute",
                         measured=lec.get("skipped", "not run"), verdict="not evaluated"))

    cr = results.get("chain_rule_400", {})
    if "speedup" in cr:
        rows.append(dict(target="structured chain-rule path vs dense reference, N=400",
                         goal="≥ 300× faster, ≥ 1,000× less peak memory",
                         measured=f"{cr['speedup']:.0f}× faster ({cr['dense_s'] * 1e3:.0f} ms vs "
                                  f"{cr['structured_s'] * 1e3:.2f} ms); {cr['memory_ratio']:.0f}× less "
                                  f"memory ({cr['dense_bytes'] / MB:.0f} MB vs "
                                  f"{cr['structured_bytes'] / MB:.3f} MB)",
                         verdict=verdict(cr["speedup"] >= 300 and cr["memory_ratio"] >= 1000)))

    st = results.get("startup", {})
    if "cli_warm_s" in st and "first_gradient_warm_s" in st:
        rows.append(dict(target="`python -m fastjac train`, warm compile cache",
                         goal="whole process ≤ 2 s; fresh process's first gradient after import ≤ 0.3 s",
                         measured=f"whole process {st['cli_warm_s']:.2f} s (cold cache "
                                  f"{st['cli_cold_s']:.1f} s); first gradient "
                                  f"{st['first_gradient_warm_s']:.3f} s (cold {st['first_gradient_cold_s']:.1f} s; "
                                  f"import {st['import_warm_s']:.2f} s)",
                         verdict=verdict(st["cli_warm_s"] <= 2 and st["first_gradient_warm_s"] <= 0.3)))
    else:
        rows.append(dict(target="`python -m fastjac train`, warm compile cache",
                         goal="≤ 2 s; first gradient ≤ 0.3 s",
                         measured=st.get("skipped", "not run"), verdict="not evaluated"))
    return rows


# ---------------------------------------------------------------- the parts of the run

# The lecture's run in a fresh process, as a user runs it: no peer library's
# thread pools next to it. Prints the loop times and one run's trajectory.
LECTURE_SCRIPT = """
import json
from fastjac.train import train
train(steps=2, verbose=False)  # compiles, or loads Numba's cache
runs = [train(verbose=False) for _ in range({repeats})]
print(json.dumps({{"seconds": [h.seconds for h in runs], "losses": runs[0].losses.tolist(),
                  "t": [s.t for s in runs[0].steps],
                  "accuracy": [s.train_accuracy for s in runs[0].steps]}}))
"""


def lecture_run(opts):
    """Compute time of ``fastjac.train.train()`` (fresh process) and its trajectory vs dense."""
    try:
        from fastjac import train as train_mod
    except ImportError:
        return {"skipped": "fastjac.train is not present yet"}
    # Fresh processes differ more than runs within one (thread placement on the
    # shared cores): the figure is the median of per-process medians, with their range.
    per_process, samples = [], []
    for _ in range(opts.lecture_processes):
        stdout, _ = workloads.run_python(["-c", LECTURE_SCRIPT.format(repeats=opts.lecture_repeats)])
        fast = json.loads(stdout.strip().splitlines()[-1])
        per_process.append(statistics.median(fast["seconds"]))
        samples.append(fast["seconds"])
    out = {"compute_s": statistics.median(per_process), "process_medians_s": per_process,
           "compute_samples_s": samples}
    steps = 100 if not opts.quick else 2
    print(f"  dense reference run, {steps} steps", flush=True)
    start = time.perf_counter()
    with warnings.catch_warnings():  # the dense run warns that it takes ~600 MB
        warnings.simplefilter("ignore", getattr(train_mod, "DenseMemoryWarning", UserWarning))
        ref = train_mod.train(impl="dense", steps=steps, verbose=False)
    out["dense_wall_s"] = time.perf_counter() - start
    a, b = np.array(fast["losses"][:steps]), ref.losses
    rel = float(np.max(np.abs(a - b) / np.abs(b)))
    same_t = fast["t"][:steps] == [s.t for s in ref.steps]
    same_acc = fast["accuracy"][:steps] == [s.train_accuracy for s in ref.steps]
    out["same_trajectory"] = bool(rel <= 1e-9 and same_t and same_acc)
    out["trajectory"] = (f"{'same' if out['same_trajectory'] else 'DIFFERENT'} as the dense reference "
                         f"over {steps} steps (loss max rel diff {rel:.1e}, accepted steps "
                         f"{'equal' if same_t else 'differ'}, accuracies "
                         f"{'equal' if same_acc else 'differ'})")
    return out


def chain_rule_400(opts):
    """The lecture's gradient by chain rule at N=400: dense tensors vs structured Jacobians."""
    X, Y, var = workloads.breast_cancer(400)
    df = {name: workloads.build(workloads.GRADIENT, name, X, Y) for name in ("dense", "structured")}
    for fn in df.values():
        fn(var)
    calls = {name: (lambda fn=fn: fn(var)) for name, fn in df.items()}
    times = interleaved(calls, opts.min_sample, opts.budget * 2, 3, opts.max_rounds)
    mem = {name: tracemalloc_peak(fn) for name, fn in calls.items()}
    return {"dense_s": times["dense"]["median_s"], "structured_s": times["structured"]["median_s"],
            "speedup": times["dense"]["median_s"] / times["structured"]["median_s"],
            "dense_bytes": mem["dense"], "structured_bytes": mem["structured"],
            "memory_ratio": mem["dense"] / max(mem["structured"], 1), "times": times}


def startup(opts):
    """Fresh processes: first gradient after import, and ``python -m fastjac train``, cold and warm."""
    import fastjac

    if not hasattr(fastjac, "nn_loss_and_gradient_closure"):
        return {"skipped": "fastjac.nn_loss_and_gradient_closure is not present yet"}
    out = {}
    with tempfile.TemporaryDirectory() as fg_cache, tempfile.TemporaryDirectory() as cli_cache:
        cold = workloads.first_gradient("fused", fg_cache)
        warm = [workloads.first_gradient("fused", fg_cache) for _ in range(opts.startup_repeats)]
        out.update(first_gradient_cold_s=cold["first_gradient_s"], import_cold_s=cold["import_s"],
                   first_gradient_warm_s=statistics.median(w["first_gradient_s"] for w in warm),
                   import_warm_s=statistics.median(w["import_s"] for w in warm),
                   first_gradient_warm_samples=warm)
        cli = ["-m", "fastjac", "train"]
        out["cli_cold_s"] = workloads.run_python(cli, cli_cache)[1]
        walls = [workloads.run_python(cli, cli_cache)[1] for _ in range(opts.startup_repeats)]
        out.update(cli_warm_s=statistics.median(walls), cli_warm_samples_s=walls)
    return out


# ---------------------------------------------------------------- output

def fmt_time(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_share(x):
    return "unknown" if x is None else f"{100 * x:.0f}%"


def fmt_bytes(b):
    return "—" if b is None else f"{b / MB:.3g} MB"


def scaling_tables(network, by_size, names, noise):
    d, k, m = workloads.NETWORKS[network]
    cols = [n for n in names + ["gemms"] if any(n in row for row in by_size.values())]
    head = "| N | " + " | ".join(LABELS.get(c, c) for c in cols) + " |\n|---|" + "---|" * len(cols)
    lines = [f"### {network} network (d={d}, k={k}, m={m})", "",
             "Median time per loss-and-gradient call (× hand-written numpy); last column: share "
             "of the CPUs other processes used while the row was timed:", "",
             head.replace(" |\n", " | others' CPU |\n", 1) + "---|"]
    for N, row in by_size.items():
        cells = []
        for c in cols:
            r = row.get(c, {})
            if "median_s" in r:
                cells.append(f"{fmt_time(r['median_s'])} ({r['ratio_to_numpy']:.2f}×)")
            else:
                cells.append("—")
        cells.append(fmt_share(noise.get(N)))
        lines.append(f"| {int(N):,} | " + " | ".join(cells) + " |")
    lines += ["", "Peak extra memory per call, tracemalloc (RSS delta, /proc):", "", head]
    for N, row in by_size.items():
        cells = []
        for c in cols:
            r = row.get(c, {})
            if "median_s" not in r:
                cells.append("—")
            elif "tracemalloc_bytes" in r:
                cells.append(f"{fmt_bytes(r['tracemalloc_bytes'])} ({fmt_bytes(r['rss_bytes'])})")
            else:
                cells.append(f"n/a ({fmt_bytes(r['rss_bytes'])} RSS)")
        lines.append(f"| {int(N):,} | " + " | ".join(cells) + " |")
    skipped = {}  # implementation -> [(N, reason)]
    for N, row in by_size.items():
        for c, r in row.items():
            if "skipped" in r:
                skipped.setdefault(c, []).append((int(N), r["skipped"]))
    if skipped:
        lines += ["", "Not run:"]
        for c, where in skipped.items():
            sizes = ", ".join(f"{N:,}" for N, _ in where)
            lines.append(f"- {c} at N={sizes}: {where[0][1]}"
                         + (f" (at N={where[0][0]:,})" if len(where) > 1 else ""))
    return lines


class OtherLoad:
    """CPU time other processes (and the hypervisor's steal) took while this run went on.

    The system's busy time from /proc/stat minus this process's and its
    children's CPU time, as a share of all CPUs over the wall time.
    """

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read():
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as fh:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, fh.readline().split()[1:9])
        t = os.times()
        return (time.perf_counter(), (user + nice + system + irq + softirq + steal) / ticks,
                t.user + t.system + t.children_user + t.children_system)

    def share(self):
        """Fraction of all usable CPUs used by others since construction (None if unreadable)."""
        try:
            (w0, busy0, own0), (w1, busy1, own1) = self.start, self._read()
        except (OSError, ValueError):
            return None
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / ((w1 - w0) * len(os.sched_getaffinity(0)))


def environment_lines(env, loadavg_start, others_share):
    """The "## Environment" section's bullet lines, from ``environment()``'s ``env``."""
    cpu = env["cpu"]
    lines = [f"- CPU: {cpu.get('model name')} (family {cpu.get('cpu family')}, model "
             f"{cpu.get('model')}, AVX-512: {cpu.get('avx512')}), {env['cpus_usable']} usable CPUs; "
             f"load average (1, 5, 15 min) {loadavg_start} at start, {env['loadavg']} at end",
             f"- Other processes used {fmt_share(others_share)} of the CPUs during the run"
             + (" — **the machine was shared**: absolute times are inflated and parallel code "
                "(which waits for its slowest thread) suffers most; ratios within a row were timed "
                "together" if (others_share or 0) > 0.05 else ""),
             f"- Platform: {env['platform']}; Python {env['versions']['python']} ({env['python_executable']})",
             f"- Numba threads: {env['numba_threads']}, threading layer: {env['numba_threading_layer']}"]
    for b in env["blas"]:
        lines.append(f"- {b['internal_api']} {b['version'] or ''} ({b['library']}, loaded by "
                     f"{b['used_by']}): kernel "
                     f"**{b.get('architecture') or '-'}**, {b['num_threads']} threads, "
                     f"threading layer {b.get('threading_layer') or '-'}")
    for key in ("torch_threads", "torch_blas", "torch_mkl", "jax_backend"):
        if key in env:
            lines.append(f"- {key.replace('_', ' ')}: {env[key]}")
    lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    lines.append("- Environment variables: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    return lines


def write_markdown(path, results, names, opts):
    env = results["env"]
    lines = ["# fastjac benchmark report", "",
             f"Started {results['started']} by `{env['command']}` at commit {results['git_start']}"
             + (f" (HEAD was {env['git']} at the end)" if env["git"] != results["git_start"] else "")
             + " "
             f"in {env['report_minutes']:.1f} min"
             + (" — **--quick: reduced sizes and repeats, not a verdict**" if opts.quick else "")
             + ".", "",
             "fastjac = `fastjac.nn_loss_and_gradient_closure(X, Y)` with default settings "
             "(its fastest path); structured = the lecture's closures over `fastjac.structured` "
             "(structured Jacobians and `chain_rule`); dense = the lecture's dense tensors; "
             "numpy = `benchmarks/numpy_backprop.py`, hand-written vectorised backprop; "
             "jax = `jax.jit(jax.value_and_grad)`, torch = eager autograd, autograd = HIPS "
             "autograd, all float64. GEMMs alone = the five matrix products of the numpy "
             "backward pass (X·W1, H·W2, G2·W2ᵀ, Hᵀ·G2, Xᵀ·G1) with preallocated outputs.", "",
             "## Targets (issue 4)", "", "| target | goal | measured | verdict |", "|---|---|---|---|"]
    for row in results["targets"]:
        lines.append(f"| {row['target']} | {row['goal']} | {row['measured']} | {row['verdict']} |")
    lines += ["", "## Scaling", "", "![scaling](scaling.png)", ""]
    for network, by_size in results["scaling"].items():
        lines += scaling_tables(network, by_size, names, results["noise"].get(network, {})) + [""]
    bc = results.get("breast_cancer", {})
    if bc:
        lines += ["### breast cancer, N=400 (the lecture's data and start)", "",
                  "| implementation | median | × numpy | tracemalloc peak |", "|---|---|---|---|"]
        for name, r in bc.items():
            if "median_s" in r:
                lines.append(f"| {LABELS.get(name, name)} | {fmt_time(r['median_s'])} | {r['ratio_to_numpy']:.2f}× | "
                             f"{fmt_bytes(r.get('tracemalloc_bytes'))} |")
        lines.append("")
    lines += ["## Method", "", __doc__.split("Method\n------\n")[1].strip(), "",
              f"Rounds: at least {opts.min_rounds}, at most {opts.max_rounds}, as many as fit "
              f"{opts.budget:g} s per size; a sample lasts at least {opts.min_sample * 1e3:g} ms. "
              "The machine is shared and noisy: compare columns of one row (timed together), "
              "not runs.", "", "## Environment", ""]
    lines += environment_lines(env, results["loadavg_start"], env["others_cpu_share"])
    missing = [f"{p}" for p in ("jax", "torch", "autograd") if not peers.available(p)]
    if missing:
        lines.append(f"- Not installed here: {', '.join(missing)} ({peers.INSTALL_HINT})")
    path.write_text("\n".join(lines) + "\n")


def write_plot(path, results, names):
    # Figure + Agg canvas directly: no pyplot, no GUI backend, nothing global.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    networks = list(results["scaling"])
    fig = Figure(figsize=(6 * len(networks), 12))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, len(networks), squeeze=False)
    for j, network in enumerate(networks):
        by_size = results["scaling"][network]
        d, k, m = workloads.NETWORKS[network]
        for i, name in enumerate(names + ["gemms"]):
            pts = [(int(N), row[name]) for N, row in by_size.items() if "median_s" in row.get(name, {})]
            if not pts:
                continue
            Ns = [N for N, _ in pts]
            style = dict(marker="o", color=f"C{i}", label=LABELS.get(name, name))
            axes[0, j].loglog(Ns, [r["median_s"] for _, r in pts], **style)
            axes[1, j].loglog(Ns, [r["ratio_to_numpy"] for _, r in pts], **style)
            mem = [(N, r.get("tracemalloc_bytes", r.get("rss_bytes"))) for N, r in pts]
            mem = [(N, b) for N, b in mem if b]
            if mem and name != "gemms":  # its outputs are preallocated: nothing to show
                rss = name in RSS_ONLY
                axes[2, j].loglog([N for N, _ in mem], [b / MB for _, b in mem],
                                  linestyle="--" if rss else "-",
                                  **dict(style, label=style["label"] + (" (RSS)" if rss else "")))
        axes[0, j].set_title(f"{network} network (d={d}, k={k}, m={m})")
        axes[0, j].set_ylabel("seconds per loss-and-gradient")
        axes[1, j].set_ylabel("time / hand-written numpy")
        axes[1, j].axhline(1, color="gray", linewidth=0.8)
        axes[2, j].set_ylabel("peak extra memory per call (MB)")
        axes[2, j].axhline(16, color="gray", linewidth=0.8, linestyle=":", label="16 MB target")
        axes[2, j].set_xlabel("N (rows)")
        for ax in axes[:, j]:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes, few repeats, no start-up subprocesses (a smoke run)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output directory")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated implementations")
    opts = p.parse_args(argv)
    opts.impls = [s for s in opts.impls.split(",") if s]
    unknown = set(opts.impls) - set(IMPLS)
    if unknown:
        p.error(f"unknown implementations {sorted(unknown)}; choose from {IMPLS}")
    quick = opts.quick
    opts.sizes = QUICK_SIZES if quick else FULL_SIZES
    opts.min_sample = 0.002 if quick else 0.02
    opts.budget = 0.3 if quick else 8.0
    opts.min_rounds, opts.max_rounds = (3, 5) if quick else (5, 21)
    opts.lecture_repeats = 3 if quick else 7
    opts.lecture_processes = 1 if quick else 7
    opts.startup_repeats = 3
    return opts


def main(argv=None):
    opts = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    # exp overflows in the logistic of the unscaled breast-cancer data; 1 / (1 + inf) = 0 is right
    start, others = time.perf_counter(), OtherLoad()
    with np.errstate(over="ignore"):
        results = run(opts)
    results["env"]["report_minutes"] = (time.perf_counter() - start) / 60
    results["env"]["others_cpu_share"] = others.share()
    write_markdown(opts.out / "report.md", results, opts.impls, opts)
    write_plot(opts.out / "scaling.png", results, opts.impls)
    (opts.out / "report.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {opts.out / 'report.md'}, scaling.png, report.json")
    for row in results["targets"]:
        print(f"  {row['verdict']:>13}  {row['target']}: {row['measured']}")
    return results


def run(opts):
    names = opts.impls
    # --quick leaves the dense reference to the chain-rule comparison (it takes ~0.5 s a call)
    scaled_names = [n for n in names if not (opts.quick and n == "dense")]
    results = {"scaling": {}, "noise": {}, "loadavg_start": _loadavg(), "git_start": _git_state(),
               "started": datetime.datetime.now().isoformat(timespec="seconds")}
    print("breast cancer N=400", flush=True)
    X, Y, var = workloads.breast_cancer(400)
    results["breast_cancer"] = measure(X, Y, var, "narrow", 400, scaled_names, opts)
    for network, sizes in opts.sizes.items():
        print(f"scaling, {network} network", flush=True)
        results["scaling"][network] = {}
        for N in sizes:
            X, Y, var = workloads.synthetic(network, N)
            others = OtherLoad()
            results["scaling"][network][str(N)] = measure(X, Y, var, network, N, scaled_names,
                                                          opts, gemms=network == "wide")
            results["noise"].setdefault(network, {})[str(N)] = others.share()
        workloads.synthetic.cache_clear()
    print("chain rule at N=400: dense vs structured", flush=True)
    results["chain_rule_400"] = chain_rule_400(opts)
    print("lecture run", flush=True)
    results["lecture_run"] = lecture_run(opts)
    if opts.quick:
        results["startup"] = {"skipped": "not run (--quick)"}
    else:
        print("start-up in fresh processes", flush=True)
        results["startup"] = startup(opts)
    results["env"] = environment(names)  # after the peers and Numba's threads have loaded
    results["targets"] = target_rows(results, opts)
    return results


if __name__ == "__main__":
    main()
