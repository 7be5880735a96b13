"""Per-example and curvature quantities (issue 11): fastjac against JAX and BackPACK.

    python benchmarks/report_curvature.py [--quick] [--out DIR] [--no-startup]

writes ``DIR/curvature.md`` (targets table, all timings, memory, first-call
times) and ``DIR/curvature.json`` (every sample), DIR defaulting to
``benchmarks/results``.

Method
------
* Each case (one quantity, one network, one N) builds every implementation,
  calls it once (compiles; the result is checked against fastjac's: max abs
  difference over max abs value ≤ 1e-8, after the convention mapping below,
  else the peer is not timed), then times all of them in this one process,
  interleaved: each round calls every implementation once, in an order rotated
  each round, after a 10 ms pause; a sample is ``number`` back-to-back calls
  (at least 20 ms, 2 ms with --quick) with the garbage collector off; the
  figure is the median over rounds. Ratios are of medians of one case.
* All float64 on the CPU. JAX: ``jax_enable_x64``, everything under
  ``jax.jit``, timed to ``block_until_ready`` (results stay JAX arrays; no copy
  to numpy is timed). BackPACK: ``torch.set_num_threads(2)``, ``extend``-ed
  ``nn.Sequential`` and ``CrossEntropyLoss(reduction="mean")``; a call is its
  forward and backward pass under ``with backpack(...)`` (that is how it
  computes the quantities), gradients reset to None first.
* Conventions mapped before checking: BackPACK's ``grad_batch`` with a mean
  loss is ``grad l_n / N`` (multiplied by N); torch's Linear weight is W^T;
  ``diag_ggn_exact`` is of the mean loss, as fastjac's; KFLR gives the weight
  ``[B, A]`` with ``A = (1/N) sum a a^T`` (no bias row) and
  ``B = (1/N) sum S S^T`` and the bias ``[B]``, compared with fastjac's
  ``A[:p, :p]`` (its A is over ``[a; 1]``) and B. JAX's per-example
  gradients are ``vmap(grad)`` of each row's own loss; its GGN-vector product
  is ``J^T (H_z (J v))`` by ``jvp``/``vjp`` of the mean loss, its Hessian-vector
  product ``jvp(grad)`` (forward over reverse); its NTK is
  ``vmap(jacrev)`` of the logits, contracted one parameter block at a time
  (``J_b J_b^T`` summed over blocks and logits).
* Peak extra memory: ``tracemalloc`` around one fastjac call (numpy's and
  Numba's allocations report to it), output included.
* First calls: a fresh ``python`` process with ``NUMBA_CACHE_DIR`` an empty
  temporary directory times ``import fastjac`` and the first call of each
  quantity in turn (narrow network, N=400), so each figure is the compilation
  that quantity adds to the ones before it; then the same in a second fresh
  process with the now warm cache.
"""

import argparse
import datetime
import gc
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import report  # noqa: E402  (timing helpers, environment)
import workloads  # noqa: E402

MB = 1e6
TOL = 1e-8
ARCHS = {"narrow": ([30, 20, 2], "logistic"), "deep": ([64, 128, 64, 10], "tanh")}
LABEL = {"narrow": "30-20-2 logistic", "deep": "64-128-64-10 tanh", "lecture": "30-20-2 logistic, breast cancer"}

# quantity -> implementations (fastjac first: the reference for checks)
QUANTITIES = {
    "per_example_gradients": ["fastjac", "jax", "backpack"],
    "per_example_gradient_norms": ["fastjac", "gradient", "jax"],
    "sum_grad_squared": ["fastjac"],
    "diag_ggn": ["fastjac", "gradient", "backpack"],
    "kfac": ["fastjac", "backpack"],
    "ggn_vector_product": ["fastjac", "jax"],
    "hessian_vector_product": ["fastjac", "jax"],
    "empirical_ntk": ["fastjac", "jax"],
}
PEER_MODULE = {"jax": "jax", "backpack": "backpack"}
IMPL_LABEL = {"fastjac": "fastjac", "gradient": "fastjac fused gradient", "jax": "JAX",
              "backpack": "BackPACK"}


class Unavailable(Exception):
    """An implementation cannot run here (peer not installed)."""


# ---------------------------------------------------------------- problems

class Problem:
    """A network, data (X, one-hot Y, integer labels), parameters and a direction v."""

    def __init__(self, arch, N, seed=0):
        import fastjac

        self.arch, self.N = arch, N
        if arch == "lecture":
            X, Y, params = workloads.breast_cancer(N)
            sizes, act = ARCHS["narrow"]
        else:
            sizes, act = ARCHS[arch]
            rng = np.random.RandomState(seed)
            X = rng.standard_normal((N, sizes[0]))
            Y = np.zeros((N, sizes[-1]))
            Y[np.arange(N), rng.randint(0, sizes[-1], N)] = 1
            params = None
        self.net = fastjac.MLP(sizes, activation=act, loss="softmax_cross_entropy")
        self.params = params if params is not None else self.net.init(seed=seed)
        self.X, self.Y = np.ascontiguousarray(X, np.float64), np.ascontiguousarray(Y, np.float64)
        self.labels = self.Y.argmax(1)
        rng = np.random.RandomState(seed + 1)
        self.v = [rng.standard_normal(np.shape(p)) for p in self.params]
        self.sizes, self.act = sizes, act


def flat(blocks, lead=0):
    """Blocks concatenated: (N, -1) rows with ``lead=N``, else one flat vector."""
    if lead:
        return np.concatenate([np.reshape(np.asarray(b), (lead, -1)) for b in blocks], axis=1)
    return np.concatenate([np.ravel(np.asarray(b)) for b in blocks])


def rel_diff(got, ref):
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-300))


# ---------------------------------------------------------------- implementations
# build(quantity, impl, prob) -> (call, canon): call() computes (blocked until done),
# canon(result) maps it to fastjac's convention as one numpy array (None: not comparable).

def _fastjac(q, prob):
    net, X, Y, p, N = prob.net, prob.X, prob.Y, prob.params, prob.N
    calls = {
        "per_example_gradients": (lambda: net.per_example_gradients(X, Y, p), lambda r: flat(r, N)),
        "per_example_gradient_norms": (lambda: net.per_example_gradient_norms(X, Y, p), np.asarray),
        "sum_grad_squared": (lambda: net.sum_grad_squared(X, Y, p), flat),
        "diag_ggn": (lambda: net.diag_ggn(X, Y, p), flat),
        "kfac": (lambda: net.kfac(X, Y, p, fisher="exact"),
                 lambda r: np.concatenate([np.concatenate([A[:-1, :-1].ravel(), B.ravel(), B.ravel()])
                                           for A, B in r])),
        "ggn_vector_product": (lambda: net.ggn_vector_product(X, Y, p, prob.v), flat),
        "hessian_vector_product": (lambda: net.hessian_vector_product(X, Y, p, prob.v), flat),
        "empirical_ntk": (lambda: net.empirical_ntk(X, p, trace=True), np.asarray),
    }
    return calls[q]


def _gradient(q, prob):
    fg = prob.net.loss_and_gradient_closure(prob.X, prob.Y)
    return (lambda: fg(prob.params)), None


def _require(module):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{module} is not installed") from exc


def _jax_setup():
    jax = _require("jax")
    jax.config.update("jax_enable_x64", True)
    return jax, _require("jax.numpy")


def _jax(q, prob):
    jax, jnp = _jax_setup()
    L = len(prob.sizes) - 1
    act = {"logistic": jax.nn.sigmoid, "tanh": jnp.tanh}[prob.act]
    P = [jnp.asarray(np.asarray(b, np.float64).reshape(b.shape if i % 2 == 0 else (-1,)))
         for i, b in enumerate(prob.params)]
    V = [jnp.asarray(np.asarray(b, np.float64).reshape(np.shape(b) if i % 2 == 0 else (-1,)))
         for i, b in enumerate(prob.v)]
    X, Y = jnp.asarray(prob.X), jnp.asarray(prob.Y)
    N = prob.N

    def logits(params, x):  # x: one row (d,) or rows (n, d)
        h = x
        for l in range(L):
            z = h @ params[2 * l] + params[2 * l + 1]
            h = act(z) if l < L - 1 else z
        return h

    def row_loss(params, x, y):
        return -jnp.sum(y * jax.nn.log_softmax(logits(params, x)))

    def mean_loss(params, X, Y):
        return -jnp.sum(Y * jax.nn.log_softmax(logits(params, X))) / X.shape[0]

    per_row = jax.vmap(jax.grad(row_loss), in_axes=(None, 0, 0))
    ready = jax.block_until_ready
    if q == "per_example_gradients":
        f = jax.jit(per_row)
        return (lambda: ready(f(P, X, Y))), (lambda r: flat(r, N))
    if q == "per_example_gradient_norms":
        f = jax.jit(lambda p, X, Y: jnp.sqrt(sum(jnp.sum(g.reshape(X.shape[0], -1) ** 2, axis=1)
                                                 for g in per_row(p, X, Y))))
        return (lambda: ready(f(P, X, Y))), np.asarray
    if q == "ggn_vector_product":
        def ggn_vp(p, v, X, Y):
            z, vjp_fn = jax.vjp(lambda p: logits(p, X), p)
            Jv = jax.jvp(lambda p: logits(p, X), (p,), (v,))[1]
            HJv = jax.jvp(jax.grad(lambda z: -jnp.sum(Y * jax.nn.log_softmax(z)) / X.shape[0]),
                          (z,), (Jv,))[1]
            return vjp_fn(HJv)[0]
        f = jax.jit(ggn_vp)
        return (lambda: ready(f(P, V, X, Y))), flat
    if q == "hessian_vector_product":
        f = jax.jit(lambda p, v, X, Y: jax.jvp(lambda p: jax.grad(mean_loss)(p, X, Y), (p,), (v,))[1])
        return (lambda: ready(f(P, V, X, Y))), flat
    if q == "empirical_ntk":
        def ntk(p, X):
            J = jax.vmap(jax.jacrev(logits), in_axes=(None, 0))(p, X)  # blocks (N, m, *shape)
            out = jnp.zeros((X.shape[0], X.shape[0]), X.dtype)
            for b in J:
                b = b.reshape(X.shape[0], -1)
                out = out + b @ b.T
            return out
        f = jax.jit(ntk)
        return (lambda: ready(f(P, X))), np.asarray
    raise KeyError(q)


def _backpack(q, prob):
    torch = _require("torch")
    bp = _require("backpack")
    ext_mod = _require("backpack.extensions")
    torch.set_num_threads(2)
    L = len(prob.sizes) - 1
    layers = []
    for l in range(L):
        lin = torch.nn.Linear(prob.sizes[l], prob.sizes[l + 1]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(prob.params[2 * l]).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.ravel(prob.params[2 * l + 1]).copy()))
        layers.append(lin)
        if l < L - 1:
            layers.append({"logistic": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[prob.act]())
    model = bp.extend(torch.nn.Sequential(*layers))
    lossfunc = bp.extend(torch.nn.CrossEntropyLoss(reduction="mean"))
    Xt = torch.from_numpy(prob.X)
    yt = torch.from_numpy(prob.labels.astype(np.int64))
    params = list(model.parameters())  # W1^T, b1, W2^T, b2, ...
    N = prob.N
    ext, attr = {"per_example_gradients": (ext_mod.BatchGrad, "grad_batch"),
                 "diag_ggn": (ext_mod.DiagGGNExact, "diag_ggn_exact"),
                 "kfac": (ext_mod.KFLR, "kflr")}[q]

    def call():
        for p in params:
            p.grad = None
        with bp.backpack(ext()):
            lossfunc(model(Xt), yt).backward()
        return [getattr(p, attr) for p in params]

    def canon(r):
        if q == "per_example_gradients":
            return flat([N * (b.detach().numpy().transpose(0, 2, 1) if i % 2 == 0 else b.detach().numpy())
                         for i, b in enumerate(r)], N)
        if q == "diag_ggn":
            return flat([b.detach().numpy().T if i % 2 == 0 else b.detach().numpy()
                         for i, b in enumerate(r)])
        out = []
        for l in range(L):
            (Bw, A), (Bb,) = r[2 * l], r[2 * l + 1]
            out += [A.numpy().ravel(), Bw.numpy().ravel(), Bb.numpy().ravel()]
        return np.concatenate(out)

    return call, canon


BUILDERS = {"fastjac": _fastjac, "gradient": _gradient, "jax": _jax, "backpack": _backpack}


def build(quantity, impl, prob):
    """``(call, canon)`` of ``impl`` computing ``quantity`` on ``prob``; raises ``Unavailable``."""
    return BUILDERS[impl](quantity, prob)


# ---------------------------------------------------------------- timing

def interleaved(calls, min_sample, budget, min_rounds, max_rounds, first=None):
    """Like ``report.interleaved``, but the calibration's last sample sets the rounds, and an
    implementation whose warm-up call (``first[name]`` seconds) took over 10 s is not
    calibrated (one call a sample; saves a call of the N=2,000 NTK in JAX, ~30 s)."""
    numbers, per_round = {}, 0.0
    for name, fn in calls.items():
        number, t = 1, (first or {}).get(name, 0.0)
        while t <= 10.0:
            t = report.sample(fn, number) * number
            if t >= min_sample or number >= 2**16:
                break
            number *= 2
        numbers[name] = number
        per_round += t + report.SETTLE_S
    rounds = int(min(max_rounds, max(min_rounds, budget / max(per_round, 1e-9))))
    names = list(calls)
    samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(report.SETTLE_S)
            samples[name].append(report.sample(calls[name], numbers[name]))
    return {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s),
                   "rounds": rounds, "number": numbers[name], "samples_s": s}
            for name, s in samples.items()}


def run_case(quantity, arch, N, opts, impls=None, min_rounds=None):
    """Build, check and time every implementation of ``quantity`` on (arch, N)."""
    print(f"  {quantity} {arch} N={N:,}", flush=True)
    prob = Problem(arch, N)
    rows, calls, ref = {}, {}, None
    for impl in impls or QUANTITIES[quantity]:
        try:
            call, canon = build(quantity, impl, prob)
            t0 = time.perf_counter()
            result = call()  # warm-up: compiles
            rows[impl] = {"first_call_s": time.perf_counter() - t0}
        except Unavailable as exc:
            rows[impl] = {"skipped": str(exc)}
            continue
        if impl == "fastjac":
            ref = canon(result)
        elif canon is not None:
            err = rel_diff(canon(result), ref)
            rows[impl]["max_rel_diff"] = err
            if not err <= TOL:
                rows[impl]["skipped"] = f"result differs from fastjac's (max rel diff {err:.2g})"
                continue
        del result
        calls[impl] = call
    others = report.OtherLoad()
    times = interleaved(calls, opts.min_sample, opts.budget, min_rounds or opts.min_rounds,
                        opts.max_rounds, {impl: rows[impl]["first_call_s"] for impl in calls})
    for impl, t in times.items():
        rows[impl].update(t)
    base = rows.get("fastjac", {}).get("median_s")
    for impl, row in rows.items():
        if base and "median_s" in row:
            row["fastjac_over_this"] = base / row["median_s"]
    return {"quantity": quantity, "arch": arch, "N": N, "rows": rows, "others_cpu": others.share()}


def memory_case(quantity, arch, N):
    prob = Problem(arch, N)
    call, _ = build(quantity, "fastjac", prob)
    call()
    out = {"quantity": quantity, "arch": arch, "N": N, "tracemalloc_bytes": report.tracemalloc_peak(call)}
    out["rss_bytes"] = report.rss_peak(call)
    return out


# ---------------------------------------------------------------- first calls in fresh processes

FIRST_CALLS = """
import json, time
t0 = time.perf_counter()
import numpy as np
import fastjac
out = {{"import_s": time.perf_counter() - t0}}
rng = np.random.RandomState(0)
N = 400
X = rng.standard_normal((N, 30)); Y = np.eye(2)[rng.randint(0, 2, N)]
net = fastjac.MLP([30, 20, 2], activation="logistic")
p = net.init(seed=0); v = [rng.standard_normal(np.shape(b)) for b in p]
calls = [
    ("gradient", lambda: net.loss_and_gradient_closure(X, Y)(p)),
    ("per_example_gradients", lambda: net.per_example_gradients(X, Y, p)),
    ("per_example_gradient_norms", lambda: net.per_example_gradient_norms(X, Y, p)),
    ("sum_grad_squared", lambda: net.sum_grad_squared(X, Y, p)),
    ("diag_ggn", lambda: net.diag_ggn(X, Y, p)),
    ("kfac", lambda: net.kfac(X, Y, p, fisher="exact")),
    ("ggn_vector_product", lambda: net.ggn_vector_product(X, Y, p, v)),
    ("hessian_vector_product", lambda: net.hessian_vector_product(X, Y, p, v)),
    ("diag_hessian", lambda: net.diag_hessian(X, Y, p)),
    ("jacobian_params", lambda: net.jacobian_params(X, p)),
    ("empirical_ntk", lambda: net.empirical_ntk(X, p)),
]
for name, fn in calls{only}:
    t = time.perf_counter(); fn(); first = time.perf_counter() - t
    t = time.perf_counter(); fn(); out[name] = {{"first_s": first, "second_s": time.perf_counter() - t}}
print(json.dumps(out))
"""


def first_calls(opts):
    only = "[:3]" if opts.quick else ""
    with tempfile.TemporaryDirectory() as cache:
        cold_out, cold_wall = workloads.run_python(["-c", FIRST_CALLS.format(only=only)], cache)
        warm_out, warm_wall = workloads.run_python(["-c", FIRST_CALLS.format(only=only)], cache)
    return {"cold": json.loads(cold_out.strip().splitlines()[-1]), "cold_wall_s": cold_wall,
            "warm": json.loads(warm_out.strip().splitlines()[-1]), "warm_wall_s": warm_wall,
            "subset": "first three quantities only (--quick)" if opts.quick else "all"}


# ---------------------------------------------------------------- targets

# (quantity, arch, N or quick N, [(other impl, goal ratio fastjac/other <=)])
def cases(opts):
    big = 2_000 if opts.quick else 100_000
    ntk_deep = 200 if opts.quick else 2_000
    return [
        ("per_example_gradients", "narrow", big, [("jax", 0.5), ("backpack", 0.5)]),
        ("per_example_gradient_norms", "narrow", big, [("gradient", 1.5), ("jax", 0.5)]),
        ("diag_ggn", "narrow", big, [("backpack", 0.25), ("gradient", 2.0)]),
        ("kfac", "narrow", big, [("backpack", 0.25)]),
        ("ggn_vector_product", "narrow", big, [("jax", 0.75)]),
        ("ggn_vector_product", "deep", big, [("jax", 0.75)]),
        ("hessian_vector_product", "narrow", big, [("jax", 0.75)]),
        ("hessian_vector_product", "deep", big, [("jax", 0.75)]),
        ("empirical_ntk", "lecture", 400, [("jax", 0.25)]),
        ("empirical_ntk", "deep", ntk_deep, [("jax", 0.25)]),
    ]


MEMORY = [("per_example_gradient_norms", "narrow"), ("sum_grad_squared", "narrow"),
          ("diag_ggn", "narrow"), ("kfac", "narrow"), ("ggn_vector_product", "narrow"),
          ("hessian_vector_product", "narrow"), ("ggn_vector_product", "deep"),
          ("hessian_vector_product", "deep")]


def verdict(ok):
    return "met" if ok else "**missed**"


def target_rows(results):
    rows = []
    for case in results["cases"]:
        r = case["rows"]
        f = r.get("fastjac", {})
        for other, goal in case["goals"]:
            o = r.get(other, {})
            target = f"{case['quantity']} vs {IMPL_LABEL[other]}"
            where = f"N={case['N']:,}, {LABEL[case['arch']]}"
            if "median_s" in f and "median_s" in o:
                ratio = f["median_s"] / o["median_s"]
                rows.append(dict(quantity=target, case=where, goal=f"≤ {goal:g}×",
                                 measured=f"{ratio:.3f}× ({report.fmt_time(f['median_s'])} vs "
                                          f"{report.fmt_time(o['median_s'])})",
                                 verdict=verdict(ratio <= goal), ratio=ratio))
            else:
                rows.append(dict(quantity=target, case=where, goal=f"≤ {goal:g}×",
                                 measured=o.get("skipped") or f.get("skipped") or "not run",
                                 verdict="not evaluated"))
    for m in results["memory"]:
        b = m["tracemalloc_bytes"]
        rows.append(dict(quantity=f"{m['quantity']} peak extra memory",
                         case=f"N={m['N']:,}, {LABEL[m['arch']]}", goal="≤ 16 MB",
                         measured=f"{b / MB:.3g} MB tracemalloc (RSS delta {report.fmt_bytes(m['rss_bytes'])})",
                         verdict=verdict(b <= 16e6)))
    return rows


# ---------------------------------------------------------------- output

def write_markdown(path, results, opts):
    env = results["env"]
    L = ["# fastjac curvature benchmarks (issue 11)", "",
         f"Started {results['started']} by `{env['command']}` at commit {results['git_start']}, "
         f"{results['minutes']:.1f} min"
         + (" — **--quick: reduced sizes and repeats, not a verdict**" if opts.quick else "") + ".", "",
         "Ratios are fastjac's median time over the other's, timed interleaved in one process "
         "(below 1: fastjac faster). float64, CPU.", "",
         "## Targets", "", "| quantity | case | goal | measured | verdict |", "|---|---|---|---|---|"]
    for row in results["targets"]:
        L.append(f"| {row['quantity']} | {row['case']} | {row['goal']} | {row['measured']} | {row['verdict']} |")
    L += ["", "## All timings", "",
          "| quantity | case | implementation | median | min–max | rounds × calls | fastjac ÷ this | check (max rel diff) | others' CPU |",
          "|---|---|---|---|---|---|---|---|---|"]
    for case in results["cases"]:
        for impl, r in case["rows"].items():
            where = f"N={case['N']:,}, {LABEL[case['arch']]}"
            if "median_s" in r:
                chk = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else (
                    "reference" if impl == "fastjac" else "—")
                L.append(f"| {case['quantity']} | {where} | {IMPL_LABEL[impl]} | {report.fmt_time(r['median_s'])} | "
                         f"{report.fmt_time(r['min_s'])}–{report.fmt_time(r['max_s'])} | "
                         f"{r['rounds']} × {r['number']} | {r['fastjac_over_this']:.3f} | {chk} | "
                         f"{report.fmt_share(case['others_cpu'])} |")
            else:
                L.append(f"| {case['quantity']} | {where} | {IMPL_LABEL[impl]} | not run: {r['skipped']} "
                         f"| | | | | |")
    L += ["", "## Peak extra memory of one fastjac call", "",
          "| quantity | case | tracemalloc peak | RSS delta |", "|---|---|---|---|"]
    for m in results["memory"]:
        L.append(f"| {m['quantity']} | N={m['N']:,}, {LABEL[m['arch']]} | "
                 f"{m['tracemalloc_bytes'] / MB:.3g} MB | {report.fmt_bytes(m['rss_bytes'])} |")
    fc = results.get("first_calls", {})
    L += ["", "## First calls in a fresh process (30-20-2 logistic, N=400)", ""]
    if "cold" in fc:
        L += [f"`import fastjac`: {fc['cold']['import_s']:.2f} s with an empty Numba cache, "
              f"{fc['warm']['import_s']:.2f} s with a warm one; whole process "
              f"{fc['cold_wall_s']:.1f} s cold, {fc['warm_wall_s']:.1f} s warm. Each quantity's first call "
              "after the ones above it (cold: what its compilation adds), then its second call:", "",
              "| quantity | first call, empty cache | first call, warm cache | second call |",
              "|---|---|---|---|"]
        for name, c in fc["cold"].items():
            if name == "import_s":
                continue
            w = fc["warm"].get(name, {})
            L.append(f"| {name} | {report.fmt_time(c['first_s'])} | "
                     f"{report.fmt_time(w['first_s']) if w else '—'} | "
                     f"{report.fmt_time(w.get('second_s', c['second_s']))} |")
    else:
        L.append(fc.get("skipped", "not run"))
    L += ["", "## Method", "", __doc__.split("Method\n------\n")[1].strip(), "",
          f"Rounds: at least {opts.min_rounds} (3 for the N=2,000 NTK), at most {opts.max_rounds}, as many "
          f"as fit {opts.budget:g} s per case; a sample lasts at least {opts.min_sample * 1e3:g} ms.",
          "", "## Environment", ""]
    L += report.environment_lines(env, results["loadavg_start"], results["others_cpu"])
    path.write_text("\n".join(L) + "\n")


def environment():
    env = report.environment(["jax", "torch"])
    for dist in ("backpack-for-pytorch", "jaxlib"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            env["versions"][dist] = version(dist)
        except PackageNotFoundError:
            env["versions"][dist] = "not installed"
    return env


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small N, few rounds (a smoke run)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output directory")
    p.add_argument("--no-startup", action="store_true", help="skip the fresh-process first calls")
    opts = p.parse_args(argv)
    opts.min_sample = 0.002 if opts.quick else 0.02
    opts.budget = 0.3 if opts.quick else 6.0
    opts.min_rounds, opts.max_rounds = (3, 5) if opts.quick else (5, 21)
    return opts


def main(argv=None):
    opts = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    start, others = time.perf_counter(), report.OtherLoad()
    results = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
               "loadavg_start": report._loadavg(), "git_start": report._git_state(),
               "cases": [], "memory": []}
    warnings.filterwarnings("ignore", "Full backward hook is firing")  # BackPACK's, harmless
    with np.errstate(over="ignore"):  # the unscaled breast-cancer data overflow numpy's exp
        print("timings", flush=True)
        for quantity, arch, N, goals in cases(opts):
            slow = quantity == "empirical_ntk" and arch == "deep"
            case = run_case(quantity, arch, N, opts, min_rounds=3 if slow else None)
            case["goals"] = goals
            results["cases"].append(case)
            gc.collect()
        print("memory", flush=True)
        mem_N = 2_000 if opts.quick else 100_000
        for quantity, arch in MEMORY:
            results["memory"].append(memory_case(quantity, arch, mem_N))
    if opts.no_startup:
        results["first_calls"] = {"skipped": "not run (--no-startup)"}
    else:
        print("first calls in fresh processes", flush=True)
        results["first_calls"] = first_calls(opts)
    results["env"] = environment()
    results["env"]["command"] = "python benchmarks/report_curvature.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results["targets"] = target_rows(results)
    results["minutes"] = (time.perf_counter() - start) / 60
    results["others_cpu"] = others.share()
    write_markdown(opts.out / "curvature.md", results, opts)
    (opts.out / "curvature.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {opts.out / 'curvature.md'} and curvature.json")
    for row in results["targets"]:
        print(f"  {row['verdict']:>13}  {row['quantity']} ({row['case']}): {row['measured']}")
    return results


if __name__ == "__main__":
    main()
