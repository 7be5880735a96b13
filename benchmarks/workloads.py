"""What the benchmark suite and report.py measure: data, parameters and implementations.

Networks are ``(d, k, m)``: inputs, hidden units, classes. The lecture's is
the narrow one on the breast-cancer data; the wide one shows where the matrix
products dominate. Synthetic data are seeded: X standard normal, Y one-hot
random labels, parameters the lecture's initialisation (0.1 randn weights,
zero biases of shape (1, k) and (1, m)).

Implementations are looked up by name in ``LOSS_AND_GRADIENT``, ``LOSS``,
``GRADIENT`` and ``LINE_SEARCH``; each entry builds a closure from (X, Y) or
raises ``Unavailable`` with the reason (a peer not installed, a fastjac name
not present yet).

=============  ==============================================================
name           what runs
=============  ==============================================================
dense          ``fastjac.dense``: the lecture's dense Jacobian tensors
structured     the lecture's own closures over ``fastjac.structured``
               (``nn_loss_closure``, then ``nn_loss_gradient_closure``:
               structured Jacobians contracted by ``chain_rule``)
fused          ``fastjac.nn_loss_and_gradient_closure`` with default
               settings: fastjac's fastest path
numpy          ``numpy_backprop``: hand-written vectorised numpy backprop
jax, torch,    ``peers``: other autodiff libraries, float64
autograd
=============  ==============================================================
"""

import functools
import math

import numpy as np

import numpy_backprop
import peers

NETWORKS = {"narrow": (30, 20, 2), "wide": (256, 512, 10)}

# The dense reference runs only where the tensors of one call fit in this.
DENSE_BUDGET = 2**30


class Unavailable(Exception):
    """An implementation cannot run here; the message says why."""


# ---------------------------------------------------------------- data

def init_params(d, k, m, rng, dtype=np.float64):
    """The lecture's initialisation: ``0.1 randn`` weights, zero (1, k) and (1, m) biases."""
    return [(0.1 * rng.randn(d, k)).astype(dtype), np.zeros((1, k), dtype),
            (0.1 * rng.randn(k, m)).astype(dtype), np.zeros((1, m), dtype)]


@functools.lru_cache(maxsize=2)
def synthetic(network, N, dtype=np.float64, seed=0):
    """``(X (N, d), Y (N, m) one-hot, var)`` for ``NETWORKS[network]``; cached, do not modify."""
    d, k, m = NETWORKS[network]
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((N, d)).astype(dtype)
    Y = np.zeros((N, m), dtype)
    Y[np.arange(N), rng.randint(0, m, N)] = 1
    return X, Y, init_params(d, k, m, rng, dtype)


@functools.lru_cache(maxsize=1)
def breast_cancer(N=400):
    """The lecture's data and start: first N rows, one-hot labels, ``seed(1234)`` init."""
    from fastjac.data import load_breast_cancer_data

    X, labels, _ = load_breast_cancer_data()
    var = init_params(X.shape[1], 20, labels.shape[1], np.random.RandomState(1234))
    return np.ascontiguousarray(X[:N]), np.ascontiguousarray(labels[:N]), var


def forward(X, var):
    """The lecture's intermediates ``Z1, X2, Z2, Q`` (for building Jacobians)."""
    from fastjac import dense

    W1, b1, W2, b2 = var
    Z1 = X @ W1 + b1
    X2 = 1 / (1 + np.exp(-Z1))
    Z2 = X2 @ W2 + b2
    return Z1, X2, Z2, dense.matrix_softmax(Z2)


def dense_gradient_bytes(N, d, k, m):
    """Bytes of the dense tensors one lecture gradient holds at once (Dlogit dominates)."""
    shapes = [(N, k, N, k), (N, m, N, k), (N, k, d, k), (N, m, N, m), (N, k, k),
              (N, m, k, m), (N, m, m)]
    return 8 * sum(math.prod(s) for s in shapes)


def dense_fits(nbytes):
    """``None`` if ``nbytes`` of dense tensors fit ``DENSE_BUDGET``, else the reason to skip."""
    if nbytes <= DENSE_BUDGET:
        return None
    return (f"dense reference needs {nbytes / 2**30:.1f} GiB of tensors here "
            f"(budget {DENSE_BUDGET / 2**30:.0f} GiB)")


# ---------------------------------------------------------------- implementations

def _fastjac_name(module, name):
    fn = getattr(module, name, None)
    if fn is None:
        raise Unavailable(f"{module.__name__}.{name} is not present yet")
    return fn


def _two_closures(module):
    """The lecture's pair, loss then gradient, as one ``fg``."""

    def factory(X, Y):
        f, df = module.nn_loss_closure(X, Y), module.nn_loss_gradient_closure(X, Y)
        return lambda var: (f(var), df(var))

    return factory


def _dense_fg(X, Y):
    from fastjac import dense

    fn = getattr(dense, "nn_loss_and_gradient_closure", None)
    return fn(X, Y) if fn is not None else _two_closures(dense)(X, Y)


def _structured_fg(X, Y):
    from fastjac import structured

    return _two_closures(structured)(X, Y)


def _fused_fg(X, Y):
    import fastjac

    return _fastjac_name(fastjac, "nn_loss_and_gradient_closure")(X, Y)


def _peer(name):
    def factory(X, Y):
        if not peers.available(name):
            raise Unavailable(f"{name} is not installed ({peers.INSTALL_HINT})")
        return peers.CLOSURES[name](X, Y)

    return factory


LOSS_AND_GRADIENT = {
    "dense": _dense_fg,
    "structured": _structured_fg,
    "fused": _fused_fg,
    "numpy": numpy_backprop.loss_and_gradient_closure,
    "jax": _peer("jax"),
    "torch": _peer("torch"),
    "autograd": _peer("autograd"),
}


def _module_closure(module_name, closure):
    def factory(X, Y):
        import importlib

        return getattr(importlib.import_module(module_name), closure)(X, Y)

    return factory


LOSS = {
    "dense": _module_closure("fastjac.dense", "nn_loss_closure"),
    "structured": _module_closure("fastjac.structured", "nn_loss_closure"),
    "numpy": numpy_backprop.loss_closure,
}

# The lecture's gradient by the chain rule: dense tensors vs structured Jacobians.
GRADIENT = {
    "dense": _module_closure("fastjac.dense", "nn_loss_gradient_closure"),
    "structured": _module_closure("fastjac.structured", "nn_loss_gradient_closure"),
}


def _backtracking(loss_factory, module_name="fastjac.linesearch"):
    """``ls`` from the lecture's ``block_backtracking`` over a loss closure."""

    def factory(X, Y):
        import importlib

        block_backtracking = importlib.import_module(module_name).block_backtracking
        f = loss_factory(X, Y)
        return lambda x0, dx, df0: block_backtracking(x0, f, dx, df0, alpha=0.1)

    return factory


def _dense_ls(X, Y):
    from fastjac import dense

    fn = getattr(dense, "nn_line_search_closure", None)
    if fn is None:
        return _backtracking(LOSS["dense"], "fastjac.dense")(X, Y)
    ls = fn(X, Y)
    return lambda x0, dx, df0: ls(x0, dx, df0, alpha=0.1)


def _fused_ls(X, Y):
    import fastjac

    ls = _fastjac_name(fastjac, "nn_line_search_closure")(X, Y)
    return lambda x0, dx, df0: ls(x0, dx, df0, alpha=0.1)


# One Armijo line search from x0 along dx = -grad: ``ls(x0, dx, df0) -> (x, fx)``.
LINE_SEARCH = {
    "dense": _dense_ls,
    "structured": _backtracking(LOSS["structured"], "fastjac.structured"),
    "fused": _fused_ls,
    "numpy": _backtracking(LOSS["numpy"]),
}


def build(table, name, X, Y):
    """``table[name](X, Y)``, turning a missing peer or fastjac name into ``Unavailable``."""
    try:
        return table[name](X, Y)
    except peers.MissingPeer as exc:
        raise Unavailable(str(exc)) from None


# ---------------------------------------------------------------- start-up in a fresh process

# Run as ``python -c``: import fastjac, build the narrow network at N=400, call
# the closure once; prints JSON with the seconds each part took.
FIRST_GRADIENT = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import fastjac
t1 = time.perf_counter()
sys.path.insert(0, {here!r})
import workloads
X, Y, var = workloads.synthetic("narrow", 400)
fg = workloads.build(workloads.LOSS_AND_GRADIENT, {impl!r}, X, Y)
t2 = time.perf_counter()
loss, grads = fg(var)
t3 = time.perf_counter()
assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)
print(json.dumps({{"import_s": t1 - t0, "first_gradient_s": t3 - t2}}))
"""


def run_python(args, cache_dir=None, timeout=900):
    """``(stdout, wall seconds)`` of ``python *args``; Numba caches in ``cache_dir`` if given.

    Raises ``RuntimeError`` with the end of stderr when the process fails.
    """
    import os
    import subprocess
    import sys
    import time

    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)[:60]} failed:\n{done.stderr[-2000:]}")
    return done.stdout, wall


def first_gradient(impl, cache_dir=None):
    """Fresh process: ``{"import_s", "first_gradient_s", "wall_s"}`` for ``impl``."""
    import json
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    out, wall = run_python(["-c", FIRST_GRADIENT.format(here=here, impl=impl)], cache_dir)
    return dict(json.loads(out.strip().splitlines()[-1]), wall_s=wall)
