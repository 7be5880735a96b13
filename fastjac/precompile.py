"""Compile kernels in a helper process while this one compiles others.

Numba compiles under a process-wide lock, one function after the other. On a
cold cache a second process can compile some of the kernels meanwhile, on the
other core, into a private cache directory; ``Pending.finish`` waits for it
and moves those kernels' cache files into ``_jit.CACHE_DIR`` (where none
exist), so this process then loads them instead of compiling. Kernels
specialise on types, never on shapes, so a tiny problem of the same dtype,
activation and loss compiles exactly the kernels this process will call. The
two processes never write the same cache file (Numba's cache index is not
safe for concurrent writers). Anything unusual (no helper, a failure, files
already there) leaves the ordinary path: this process compiles the kernels
itself when it needs them.

Two such splits:

* ``loop_addresses``: a first gradient compiles ``fused.rows_pass``, the
  activation's loop and the output layer's backward step here while the
  helper compiles the loss's loop and the output layer
  (``fused.helper_addresses``). Measured on 2026-12-03 (depth 3, fresh
  processes taking turns): 2.8-3.0 s against 3.0-3.4 s with the backward
  step in the helper too, and 3.4-3.6 s with no helper.
* ``line_kernels``: training compiles the gradient here while the helper
  compiles the fused line search's kernels (``fused.LineLoss``:
  ``line_products``, ``line_rows`` and the loops only they call).

One helper runs at a time: with two, three processes shared the two cores and
a cold ``train`` took 6.3 s against 5.4 s. ``FASTJAC_PRECOMPILE=0`` turns
helpers off (each process then compiles everything itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fastjac import _jit, fused

if TYPE_CHECKING:
    from fastjac.mlp import MLP

def _pattern(fn: Any) -> str:
    """The names of a kernel's cache files: ``<module>.<qualified name>-*``."""
    module = fn.py_func.__module__.rsplit(".", 1)[-1]
    return f"{module}.{fn.py_func.__qualname__.replace('<locals>', 'locals')}-*"


def _line_patterns(mode: int, loss: int) -> list[str]:
    """The line search's kernels and the loops they call but a gradient does not."""
    loops = [fn for i, (_, fn) in enumerate(fused.line_loops(mode, loss)) if i != fused.LINE_LOSS_FN]
    return [_pattern(fn) for fn in (fused.line_products, fused.kernels(mode, loss).line_rows,
                                    *loops)]


def _cached(cache_dir: Path, pattern: str) -> bool:
    """Whether ``cache_dir`` holds an index for the kernel of ``pattern``."""
    return next(cache_dir.glob(f"*/{pattern}.nbi"), None) is not None


# helper processes started and not yet finished (one at a time)
_RUNNING: set[Pending] = set()


class Pending:
    """A helper process compiling the kernels of ``patterns`` into ``private``."""

    def __init__(self, proc: subprocess.Popen[bytes], private: str, patterns: Sequence[str]) -> None:
        self.proc, self.private, self.patterns = proc, private, tuple(patterns)
        _RUNNING.add(self)

    def finish(self) -> bool:
        """Wait for the helper and move its cache files into ``_jit.CACHE_DIR``, each kernel's
        only if the cache has none of it yet; True if any were moved."""
        try:
            if self.proc.wait() != 0:
                return False
            source = Path(self.private, Path(_jit.CACHE_DIR).name)
            target = Path(_jit.CACHE_DIR)
            moved = False
            for pattern in self.patterns:
                if _cached(target, pattern):  # written meanwhile (another process): keep those
                    continue
                for sub in source.iterdir():
                    into = target / sub.name
                    into.mkdir(parents=True, exist_ok=True)
                    # data files first, the index last: an index never points at nothing
                    for f in sorted(sub.glob(pattern), key=lambda f: f.suffix == ".nbi"):
                        shutil.copyfile(f, into / (f.name + ".part"))
                        os.replace(into / (f.name + ".part"), into / f.name)
                        moved = True
            return moved
        except OSError:
            return False
        finally:
            _RUNNING.discard(self)
            shutil.rmtree(self.private, ignore_errors=True)


def _cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _allowed() -> bool:
    """Whether helpers may start: not turned off (``FASTJAC_PRECOMPILE=0``), and
    ``sys.executable`` is a Python interpreter (not an application embedding one)."""
    name = Path(sys.executable or "").name.lower()
    return (os.environ.get("FASTJAC_PRECOMPILE", "1") != "0"
            and name.startswith(("python", "pypy")))


def _spawn(task: Sequence[str], patterns: Sequence[str]) -> Pending | None:
    """Start ``_helper(task)`` in a fresh process compiling into a private cache. None if
    helpers are not allowed, every kernel of ``patterns`` is cached already, another
    helper is running, this process may use only one CPU, or the process cannot start."""
    if (_RUNNING or not _allowed() or _cpus() < 2
            or all(_cached(Path(_jit.CACHE_DIR), p) for p in patterns)):
        return None
    private = tempfile.mkdtemp(prefix="fastjac-precompile-")
    package_parent = str(Path(__file__).resolve().parent.parent)
    path = [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, NUMBA_CACHE_DIR=private, PYTHONPATH=os.pathsep.join(path))
    args = [sys.executable, "-c", "import sys; from fastjac.precompile import _helper; _helper(sys.argv[1:])",
            *task]
    try:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        shutil.rmtree(private, ignore_errors=True)
        return None
    return Pending(proc, private, patterns)


# Which of ``fused.gradient_loops`` the helper compiles for a first gradient (this process
# compiles the others while it compiles the kernel)
_IN_HELPER = (fused.LOSS_FN, fused.OUTPUT_FN)


def loop_addresses(mode: int, loss: int, dtype: np.dtype,
                   meanwhile: Callable[[], Any]) -> NDArray[np.int64]:
    """``fused.helper_addresses(mode, loss, dtype)``; on a cold cache, the loss's loop and
    the output layer compile in a helper process while this one runs ``meanwhile``
    (compiling the kernel that calls them) and compiles the other two loops."""
    loops = fused.gradient_loops(mode, loss)
    pending = None
    if np.dtype(dtype) in (np.float32, np.float64):
        pending = _spawn(["loops", str(int(mode)), str(int(loss)), np.dtype(dtype).name],
                         [_pattern(loops[i][1]) for i in _IN_HELPER])
    if pending is not None:
        try:
            meanwhile()
            for i, (native, fn) in enumerate(loops):
                if i not in _IN_HELPER:
                    native.address(fn, dtype)
        finally:  # the helper is waited for (and its directory removed) in any case
            pending.finish()
    return fused.helper_addresses(mode, loss, dtype)


def line_kernels(net: MLP, X: np.ndarray) -> Pending | None:
    """Start compiling ``net``'s line-search kernels in a helper process, if it pays:
    the line search on X will use ``fused.LineLoss``, float64, and no line-search
    kernel is cached yet. None otherwise (or if the process cannot start)."""
    X = np.asarray(X)
    patterns = _line_patterns(net._mode, net._loss)
    if (X.dtype != np.float64 or not fused.precompute_line(X.shape[0], net.sizes)
            or any(_cached(Path(_jit.CACHE_DIR), p) for p in patterns)):
        return None
    return _spawn(["line", ",".join(map(str, net.sizes)), ",".join(net.activations), net.loss],
                  patterns)


def _helper(argv: list[str]) -> None:
    """The helper process: compiles (and caches) the kernels of task ``argv[0]``."""
    if argv[0] == "loops":
        loops = fused.gradient_loops(int(argv[1]), int(argv[2]))
        for i in _IN_HELPER:
            native, fn = loops[i]
            native.address(fn, np.dtype(argv[3]))
        return
    from fastjac.linesearch import LineSearchError
    from fastjac.mlp import MLP

    sizes = [int(s) for s in argv[1].split(",")]
    net = MLP(sizes, activation=argv[2].split(",") if argv[2] else [], loss=argv[3])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, sizes[0]))
    Y = np.zeros((4, sizes[-1]))
    Y[:, 0] = 1.0
    params = net.init(seed=0)
    dx = [rng.standard_normal(p.shape) for p in params]
    # no gradient (the helper compiles no gradient kernel): a random direction, which
    # may fail to descend; the kernels are compiled (and cached) either way
    try:
        net.line_search_closure(X, Y)(params, dx, [-d for d in dx], max_iter=3)
    except LineSearchError:
        pass
