"""Compile the line search's kernels in a helper process while this one compiles the gradient's.

On a cold Numba cache, training compiles the gradient's kernel and then the
fused line search's (``fused.LineLoss``: ``line_products`` and ``line_rows``),
one after the other: Numba compiles under a process-wide lock. A second
process can compile the line search's meanwhile, on the other core.

``line_kernels`` starts one, if this process will use a ``LineLoss`` and the
cache has no line-search kernel yet. The helper runs a tiny line search of the
same dtype, activation and loss (kernels specialise on types, never on
shapes, so it compiles exactly the kernels this process will call) into a
private cache directory. ``Pending.finish`` waits for it and moves its
line-search cache files into ``_jit.CACHE_DIR`` where none exist, so the first
line search loads them instead of compiling. The two processes never write the
same cache file (Numba's cache index is not safe for concurrent writers).
Anything unusual (no helper, a failure, files already there) leaves the
ordinary path: this process compiles the kernels itself when it needs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastjac import _jit, fused

if TYPE_CHECKING:
    from fastjac.mlp import MLP

# the cache files of the line search's kernels (Numba names them after the function)
_PATTERNS = ("fused.line_products-*", "fused._line_rows.locals.line_rows-*")


def _cached(cache_dir: Path) -> bool:
    """Whether ``cache_dir`` holds an index for any of the line search's kernels."""
    return any(next(cache_dir.glob(f"*/{p}.nbi"), None) is not None for p in _PATTERNS)


class Pending:
    """A helper process compiling the line-search kernels into ``private``."""

    def __init__(self, proc: subprocess.Popen[bytes], private: str) -> None:
        self.proc, self.private = proc, private

    def finish(self) -> bool:
        """Wait for the helper and move its cache files into ``_jit.CACHE_DIR``; True if
        they were moved."""
        try:
            if self.proc.wait() != 0:
                return False
            source = Path(self.private, Path(_jit.CACHE_DIR).name)
            target = Path(_jit.CACHE_DIR)
            if _cached(target):  # written meanwhile (another process): keep those
                return False
            moved = False
            for sub in source.iterdir():
                into = target / sub.name
                into.mkdir(parents=True, exist_ok=True)
                for pattern in _PATTERNS:
                    # data files first, the index last: an index never points at nothing
                    for f in sorted(sub.glob(pattern), key=lambda f: f.suffix == ".nbi"):
                        shutil.copyfile(f, into / (f.name + ".part"))
                        os.replace(into / (f.name + ".part"), into / f.name)
                        moved = True
            return moved
        except OSError:
            return False
        finally:
            shutil.rmtree(self.private, ignore_errors=True)


def line_kernels(net: MLP, X: np.ndarray) -> Pending | None:
    """Start compiling ``net``'s line-search kernels in a helper process, if it pays:
    the line search on X will use ``fused.LineLoss``, float64, and no line-search
    kernel is cached yet. None otherwise (or if the process cannot start)."""
    X = np.asarray(X)
    if (X.dtype != np.float64 or not fused.precompute_line(X.shape[0], net.sizes)
            or _cached(Path(_jit.CACHE_DIR))):
        return None
    private = tempfile.mkdtemp(prefix="fastjac-precompile-")
    package_parent = str(Path(__file__).resolve().parent.parent)
    path = [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, NUMBA_CACHE_DIR=private, PYTHONPATH=os.pathsep.join(path))
    args = [sys.executable, "-c", "import sys; from fastjac.precompile import _helper; _helper(sys.argv[1:])",
            ",".join(map(str, net.sizes)), ",".join(net.activations), net.loss]
    try:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        shutil.rmtree(private, ignore_errors=True)
        return None
    return Pending(proc, private)


def _helper(argv: list[str]) -> None:
    """The helper process: one tiny fused line search (compiles, and caches, its kernels)."""
    from fastjac.linesearch import LineSearchError
    from fastjac.mlp import MLP

    sizes = [int(s) for s in argv[0].split(",")]
    net = MLP(sizes, activation=argv[1].split(",") if argv[1] else [], loss=argv[2])
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
