"""``fastjac.precompile``: kernels compiled by a helper process.

The helper compiles into a private directory; ``finish`` moves its files into
the shared cache, where a later process's line search or gradient loads them
(Numba's dispatcher counts a cache hit and no miss). Each test uses its own cache
directory, so it holds on a warm or a cold cache and in any order.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpy.testing import assert_array_equal

from fastjac import _jit, fused, losses, precompile
from fastjac.mlp import MLP

# A fresh process: one fused line search, then the line kernel's cache hits and misses.
CHILD = """
import numpy as np
import fastjac
from fastjac import fused
from fastjac.mlp import MLP
net = MLP([5, 4, 3], activation="tanh")
rng = np.random.default_rng(1)
X = rng.standard_normal((50, 5))
Y = np.eye(3)[rng.integers(0, 3, 50)]
p = net.init(seed=1)
dx = [rng.standard_normal(pi.shape) for pi in p]
try:  # a random direction (no gradient kernel to compile): it may not descend
    net.line_search_closure(X, Y)(p, dx, [-d for d in dx], max_iter=3)
except fastjac.LineSearchError:
    pass
disp = fused.kernels(net._mode, net._loss).line_rows
print(sum(disp.stats.cache_hits.values()), sum(disp.stats.cache_misses.values()))
"""


# A fresh process: one fused gradient, then the loss loop's cache hits and misses.
GRADIENT_CHILD = """
import numpy as np
from fastjac import losses
from fastjac.mlp import MLP
net = MLP([5, 4, 3], activation="relu", loss="squared_error")
rng = np.random.default_rng(1)
X = rng.standard_normal((50, 5))
net.loss_and_gradient_closure(X, rng.standard_normal((50, 3)))(net.init(seed=1))
disp = losses.rows_loop(net._loss)
print(sum(disp.stats.cache_hits.values()), sum(disp.stats.cache_misses.values()))
"""


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """An empty shared cache for this process's ``_jit.CACHE_DIR`` (same leaf name), and
    helpers allowed whatever the environment and the CPUs."""
    cache = tmp_path / "numba" / Path(_jit.CACHE_DIR).name
    monkeypatch.setattr(_jit, "CACHE_DIR", str(cache))
    monkeypatch.delenv("FASTJAC_PRECOMPILE", raising=False)
    monkeypatch.setattr(precompile, "_cpus", lambda: 2)
    return cache


def test_helper_fills_the_shared_cache_for_the_next_line_search(shared, rng):
    net = MLP([5, 4, 3], activation="tanh")
    pending = precompile.line_kernels(net, rng.standard_normal((50, 5)))
    assert pending is not None
    assert pending.finish()
    assert not os.path.exists(pending.private)
    assert all(precompile._cached(shared, p) for p in precompile._line_patterns(net._mode, net._loss))
    # nothing left half-written
    assert not list(shared.rglob("*.part"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(shared.parent))
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    hits, misses = map(int, done.stdout.split())
    assert (hits, misses) == (1, 0)
    # and with the kernels cached, no second helper
    assert precompile.line_kernels(net, rng.standard_normal((50, 5))) is None


def test_no_helper_where_no_line_kernels_are_used(shared, rng):
    net = MLP([5, 4, 3], activation="tanh")
    assert precompile.line_kernels(net, rng.standard_normal((50, 5)).astype(np.float32)) is None
    # a large N with few inputs: each trial is a fused loss, no LineLoss
    assert precompile.line_kernels(MLP([2, 512, 2]), np.zeros((2000, 2))) is None


def test_a_failed_helper_changes_nothing(shared, tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert not precompile.Pending(proc, str(private), ["*"]).finish()
    assert not private.exists()
    assert not shared.exists()


def test_loop_helper_fills_the_shared_cache_for_the_next_gradient(shared):
    net = MLP([5, 4, 3], activation="relu", loss="squared_error")
    ran = []
    fns = precompile.loop_addresses(net._mode, net._loss, np.dtype(np.float64),
                                    lambda: ran.append(True))
    assert ran == [True]  # this process compiled meanwhile
    assert_array_equal(fns, fused.helper_addresses(net._mode, net._loss, np.dtype(np.float64)))
    for fn in (losses.rows_loop(net._loss), fused.output_layer):
        assert precompile._cached(shared, precompile._pattern(fn))
    assert not precompile._RUNNING
    env = dict(os.environ, NUMBA_CACHE_DIR=str(shared.parent))
    done = subprocess.run([sys.executable, "-c", GRADIENT_CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert tuple(map(int, done.stdout.split())) == (1, 0)
    # cached: no helper, and nothing to do meanwhile
    precompile.loop_addresses(net._mode, net._loss, np.dtype(np.float64), lambda: ran.append(2))
    assert ran == [True]


def test_a_failure_meanwhile_still_finishes_the_helper(shared):
    def fails():
        raise RuntimeError("meanwhile")

    with pytest.raises(RuntimeError, match="meanwhile"):
        precompile.loop_addresses(0, 0, np.dtype(np.float64), fails)
    assert not precompile._RUNNING
    assert precompile._cached(shared, precompile._pattern(losses.rows_loop(0)))


def test_one_helper_process_at_a_time(shared, tmp_path):
    """A second helper would share two cores three ways (a cold ``train`` was slower)."""
    private = tmp_path / "private"
    private.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    running = precompile.Pending(proc, str(private), [])
    try:
        assert precompile._spawn(["loops", "0", "0", "float64"], ["*"]) is None
    finally:
        proc.kill()
        running.finish()
    assert not precompile._RUNNING


def test_no_helper_when_turned_off_not_python_or_one_cpu(shared, monkeypatch):
    """No helper where helpers are off, the interpreter is embedded or one CPU is free (the
    loop helper test above shows one starting otherwise)."""
    def spawned():
        return precompile._spawn(["loops", "0", "0", "float64"], ["*"])

    with monkeypatch.context() as m:
        m.setenv("FASTJAC_PRECOMPILE", "0")
        assert spawned() is None
    with monkeypatch.context() as m:
        m.setattr(sys, "executable", "/usr/bin/some-app")
        assert spawned() is None
    with monkeypatch.context() as m:
        m.setattr(precompile, "_cpus", lambda: 1)  # a helper would share the one CPU
        assert spawned() is None
    assert not precompile._RUNNING
