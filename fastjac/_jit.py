"""The one place that sets fastjac's Numba policy.

* ``cache=True``, in a directory of its own keyed by a hash of fastjac's
  kernel sources (``CACHE_DIR``): Numba's cache checks only the file that
  defines a kernel, so an edited callee in another file would keep a stale
  kernel alive; with the key, an edit to any module with kernels gives a
  fresh cache.
  It lives under ``$NUMBA_CACHE_DIR`` when that is set (an empty directory
  there is a cold start), else next to the package, else in ``~/.cache``.
* Kernels (``@kernel``) are the functions Python calls: they get Numba's
  CPython wrapper but not its C wrapper (``no_cfunc_wrapper``: nothing calls
  a kernel from C, so its code would only cost compile time). Functions only
  kernels call are either ``@kernel(helper=True)``: compiled once per
  process and type, without the CPython and C wrappers a Python entry
  point needs (about 50 ms of compile time each, saved), and either called
  through their addresses (``fastjac.native``: the large loops, which a
  kernel would otherwise link and LLVM optimise again inside it) or linked
  into each caller and inlined there by LLVM (``forceinline=True`` where a
  loop must vectorise through it); or ``@inline``: Numba IR inlined at each
  call site, for small code and for dispatch on a kernel's constant codes,
  whose dead branches Numba then prunes.
  Kernels take run-time codes (activation, loss, flags) and helper
  addresses, never one specialisation per network: a new depth or width
  compiles nothing, and the gradient's and line search's kernels serve
  every activation and loss.
  They view their flat buffers through ``fastjac.views`` (``view2`` in place
  of ``buf[a:b].reshape(...)``, whose code was a third of ``rows_pass``'s
  LLVM IR and about 0.9 s of a cold first gradient).
* ``error_model="numpy"``: division by zero gives inf/nan like numpy instead of
  raising inside a kernel.
* ``fastmath`` only with flags that keep NaN/Inf semantics: contraction and
  reassociation are allowed, ``nnan``/``ninf`` never are. Code whose rounding
  is designed (``fused.exp_nonpos``) gets contraction only.
* Kernels are compiled lazily, once per dtype actually used (float32 or
  float64); wrappers convert everything else before calling.

The thresholds below pick serial or parallel paths; each was measured on the
development machine (2 cores, OpenBLAS 0.3.30 through scipy) as described next
to it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numba.core.config
from numba.core.registry import CPUDispatcher

FASTMATH = frozenset({"contract", "reassoc", "nsz", "arcp"})
FASTMATH_CONTRACT = frozenset({"contract"})

# Multiply-adds per call, N * (d k + k m), below which the fused kernels run
# serially. Measured with d, k, m = 30, 20, 2, serial against 2 row chunks
# (median of 9 rounds, idle machine): loss and gradient 64k -> 1.05-1.16x
# (parallel slower), 128k -> 0.84-1.0x, 256k -> 0.68-0.73x, 512k+ -> ~0.7x;
# the loss alone 1.22x, 0.83-0.88x, 0.68-0.72x, ~0.6x. The crossover is ~100k.
PARALLEL_MIN_ELEMENTS = 100_000

# Multiply-adds per call from which those chunks run on threads; below it they run
# one after the other on the calling thread (the same chunks, so the same bits), as a
# handoff to a Python worker thread costs more than it saves there.
THREAD_MIN_ELEMENTS = 1_000_000

# Rows per block when serial (small N): scratch is O(BLOCK_ROWS * (k + m)).
BLOCK_ROWS = 256

# Row chunks: blocks of at most CHUNK_BLOCK_ROWS rows whose scratch (2 sum(hidden) +
# m + 4 values a row) stays below CHUNK_SCRATCH_BYTES, while the kernels' BLAS runs
# at one thread (``blas.single_threaded``). Measured on the 2-core AMD EPYC (Zen 3),
# loss and gradient, 2 chunks with BLAS held at one thread, by rows a block (median
# of 9, one process): 64-128-64-10 tanh N = 100,000: 64 rows 293 ms, 128 -> 237,
# 256 -> 228, 512 -> 241; 256-512-10 relu N = 40,000: 64 -> 494, 128 -> 435, 256 ->
# 415, 512 -> 444; 784-128-10 relu N = 20,000: 128 -> 155, 256 -> 157, 512 -> 156;
# 30-64-10 relu N = 100,000: 128 -> 67, 256 -> 54, 512 -> 60. Against the plan
# before (one thread, BLAS threading blocks of 512 where the cap below left fewer
# than 64 rows), fresh processes taking turns, 2 each: 64-128-64-10 N = 100,000
# 244-268 ms against 327-358, N = 4,000 10.8-11.3 against 14.2-19.1; 64-100-10
# N = 1,797 1.9-2.4 against 2.5-3.9; 256-512-10 420-454 against 659-687;
# 784-128-10 164-175 against 193-203.
CHUNK_SCRATCH_BYTES = 2 << 20
CHUNK_BLOCK_ROWS = 256

# Where BLAS's threads cannot be held (not OpenBLAS with its own thread pool), blocks
# keep every GEMM (block x n_{l-1} x n_l multiply-adds) below BLAS_THREAD_MIN_MNK:
# OpenBLAS threads a GEMM from 4 x 65536 multiply-adds on (its
# GEMM_MULTITHREAD_THRESHOLD), and BLAS threads inside the chunks' threads fight for
# the cores. Measured (2 chunks): 30-20-2 at N = 400,000: 128 rows 91 ms, 218 -> 88,
# 256 -> 87, 436 (the cap) -> 86; 64-128-64-10 (tanh) at N = 100,000: 15 rows 355 ms,
# 31 (the cap) -> 291; against 470 ms for one thread with BLAS threading blocks of 512.
BLAS_THREAD_MIN_MNK = 4 * 65536

# ... and layers so wide that the cap leaves fewer rows than this a block walk the rows
# in one thread, blocks of WIDE_BLOCK_ROWS, and let BLAS thread each GEMM. Measured:
# 256-512-10 (N = 40,000) 1 row a chunk block 5962 ms, 256 rows (BLAS threading inside
# the chunks) 1194 ms, one thread with BLAS threads 709 ms; 784-128-10 (N = 20,000)
# 2 rows 747 ms, one thread 168 ms.
MIN_CHUNK_BLOCK_ROWS = 64
WIDE_BLOCK_ROWS = 512

# Inputs d from which the fused line search computes the first layer along the
# line once (``[X W1 + b1 | X dW1 + db1]``, 1.5-1.9 loss evaluations) so that
# each trial skips the X W1 product. Measured, one trial against one loss
# evaluation (2 threads): d, k = 30, 20 (N = 400,000): 0.86-0.93x; 30, 128:
# 1.0x; 64, 64: 1.05-1.12x; 96, 96: 0.8-0.96x; 128, 64: 0.7x; 128, 128:
# 0.88x (break-even after 6-40 trials); 256, 128: 0.59x; 256, 512: 0.37-0.54x;
# 784, 128: 0.27x (break-even after 2.3-3.5 trials, a typical search makes
# 2-12).
LINESEARCH_MIN_INPUTS = 200

# Values of ``[X W1 + b1 | X dW1 + db1]`` (2 N k) up to which the fused line
# search holds them for any d and runs its whole Armijo loop in one kernel
# call (no Python between trials): 2^20 values, 8 MB in float64.
LINESEARCH_MAX_HELD = 1 << 20

# N (k + 4 m) from which a line-search trial (elementwise work, no BLAS) runs
# in row chunks. One trial, 2 chunks against serial (N, k, m): (100, 20, 2)
# 1.32x (slower), (200, 20, 2) 1.03x, (400, 5, 2) 0.85x, (400, 20, 2) 0.73x,
# (1000, 5, 2) 0.66x, (400, 64, 2) 0.57x.
LINE_PARALLEL_MIN_ELEMENTS = 5000
# ... and from which the chunks of a trial run on threads (else one after the other).
LINE_THREAD_MIN_ELEMENTS = 5000


def _source_key() -> str:
    """A hash of the package's kernel sources: every module that defines kernels or the
    helpers they inline (``@kernel``, ``@inline``, ``@intrinsic``), and this policy."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        text = path.read_bytes()
        if path.name == "_jit.py" or any(tag in text for tag in (b"@kernel", b"@inline",
                                                                   b"@intrinsic")):
            digest.update(path.name.encode())
            digest.update(text)
    return digest.hexdigest()[:16]


def _cache_dir() -> str:
    """Where compiled kernels are cached: ``<base>/fastjac-<source hash>``."""
    name = f"fastjac-{_source_key()}"
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:
        return os.path.join(user, name)
    package_cache = Path(__file__).resolve().parent / "__pycache__"
    try:
        package_cache.mkdir(exist_ok=True)
        if os.access(package_cache, os.W_OK):
            return str(package_cache / name)
    except OSError:
        pass
    return os.path.join(os.path.expanduser("~"), ".cache", "fastjac", name)


CACHE_DIR = _cache_dir()
_CONFIG: Any = numba.core.config  # its settings are set at run time (no stubs for them)


class _HelperDispatcher(CPUDispatcher):
    """A dispatcher for code called only from kernels: no Python entry point."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.py_func.__qualname__} is a fastjac kernel helper, compiled "
                        "without a Python entry point: call it from a kernel")


def kernel(fn: Callable[..., Any] | None = None, *, parallel: bool = False,
           fastmath: frozenset[str] = FASTMATH, helper: bool = False,
           forceinline: bool = False) -> Any:
    """Compile ``fn`` with fastjac's policy and cache it in ``CACHE_DIR``
    (``@kernel`` or ``@kernel(fastmath=..., helper=...)``).

    ``helper=True``: a function only kernels call. It gets no CPython or C
    wrapper (about 50 ms of compile time each for a few array arguments), so
    calling it from Python raises ``TypeError``; ``forceinline=True`` makes
    LLVM inline it into every caller (its loops then vectorise).
    """

    def wrap(f: Callable[..., Any]) -> Any:
        # Numba's cache locator reads CACHE_DIR when the dispatcher is made; set it
        # for fastjac's own kernels only, not for other code in the process.
        saved = _CONFIG.CACHE_DIR
        _CONFIG.CACHE_DIR = CACHE_DIR
        try:
            options: dict[str, Any] = dict(error_model="numpy", fastmath=set(fastmath), nogil=True)
            if not helper:
                # no C wrapper: nothing calls a kernel from C
                return numba.njit(cache=True, parallel=parallel,
                                  **dict(options, no_cfunc_wrapper=True))(f)
            disp = _HelperDispatcher(py_func=f, locals={}, targetoptions=dict(
                nopython=True, no_cpython_wrapper=True, no_cfunc_wrapper=True,
                forceinline=forceinline, **options))
            disp.enable_caching()
            return disp
        finally:
            _CONFIG.CACHE_DIR = saved

    return wrap(fn) if fn is not None else wrap


def inline(fn: Callable[..., Any]) -> Any:
    """A helper inlined (Numba IR) into the kernels that call it: no compilation of its own.

    Inlined code takes the calling kernel's fastmath flags; code whose
    rounding is designed stays a ``@kernel`` with its own flags.
    """
    return numba.njit(inline="always", error_model="numpy", fastmath=set(FASTMATH),
                      nogil=True)(fn)
