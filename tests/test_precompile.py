"""``fastjac.precompile``: the line search's kernels compiled by a helper process.

The helper compiles into a private directory; ``finish`` moves its files into
the shared cache, where a later process's line search loads them (Numba's
dispatcher counts a cache hit and no miss). Each test uses its own cache
directory, so it holds on a warm or a cold cache and in any order.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastjac import _jit, precompile
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


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """An empty shared cache for this process's ``_jit.CACHE_DIR`` (same leaf name)."""
    cache = tmp_path / "numba" / Path(_jit.CACHE_DIR).name
    monkeypatch.setattr(_jit, "CACHE_DIR", str(cache))
    return cache


def test_helper_fills_the_shared_cache_for_the_next_line_search(shared, rng):
    net = MLP([5, 4, 3], activation="tanh")
    pending = precompile.line_kernels(net, rng.standard_normal((50, 5)))
    assert pending is not None
    assert pending.finish()
    assert not os.path.exists(pending.private)
    assert precompile._cached(shared)
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
    assert not precompile.Pending(proc, str(private)).finish()
    assert not private.exists()
    assert not shared.exists()
