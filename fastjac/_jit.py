"""The one place that sets fastjac's Numba policy.

* ``cache=True``: compiled machine code is written next to the module (or to
  ``NUMBA_CACHE_DIR``) so a second process skips compilation.
* ``error_model="numpy"``: division by zero gives inf/nan like numpy instead of
  raising inside a kernel.
* ``fastmath`` only with flags that keep NaN/Inf semantics: contraction and
  reassociation are allowed, ``nnan``/``ninf`` never are. Code whose rounding
  is designed (``fused.exp_nonpos``) gets contraction only.
* Kernels are compiled lazily, once per dtype actually used (float32 or
  float64); wrappers convert everything else before calling.

The thresholds below pick serial or parallel paths; each was measured on the
development machine (2 cores, OpenBLAS 0.3.30 through scipy, Numba's OpenMP
threading layer) as described next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba

FASTMATH = frozenset({"contract", "reassoc", "nsz", "arcp"})
FASTMATH_CONTRACT = frozenset({"contract"})

# Multiply-adds per call, N * (d k + k m), below which the fused kernels run
# serially. Measured with d, k, m = 30, 20, 2, serial against 2 row chunks
# (median of 9 rounds, idle machine): loss and gradient 64k -> 1.05-1.16x
# (parallel slower), 128k -> 0.84-1.0x, 256k -> 0.68-0.73x, 512k+ -> ~0.7x;
# the loss alone 1.22x, 0.83-0.88x, 0.68-0.72x, ~0.6x. The crossover is ~100k.
PARALLEL_MIN_ELEMENTS = 100_000

# max(d k, k m) at and above which the fused kernels walk row blocks in one thread and
# let BLAS thread each block's GEMMs, instead of one row chunk per Numba
# thread. Measured at N = 20,000, 2 chunks against serial: d x k = 30x20,
# 30x32, 40x40, 48x48, 30x64, 64x20, 128x20, 8x128, 16x128, 30x128 (d k up to
# 3840): chunks 0.5-0.75x; 64x64: 1.2-1.5x; 128x128, 256x128, 256x256:
# 1.35-1.6x (BLAS threads inside Numba threads fight for the 2 cores).
WIDE_MIN_ELEMENTS = 4096

# Rows per block when serial (small N): scratch is O(BLOCK_ROWS * (k + m)).
# Wide (d, k, m = 256, 512, 10, N = 40,000): 256 rows -> 1.12-1.21x the time
# of its GEMMs alone, 512 -> 1.06-1.17x, 768 -> 1.10-1.13x, 1024 -> 1.06-1.16x;
# 512 keeps the scratch at 4 MB.
BLOCK_ROWS = 256
WIDE_BLOCK_ROWS = 512

# Row chunks: blocks as large as possible (30x20, N = 400,000: 256 rows ->
# 49-74 ms, 512 -> 48-58 ms, 1024 -> 35-50 ms) while every GEMM of a block has
# B d k <= BLAS_SMALL_MNK. OpenBLAS (scipy's build, SkylakeX kernels) runs
# such a GEMM through its single-threaded small-matrix kernel; one row more
# and two Numba threads calling it at once got 4-10x slower. Measured cliffs
# at N = 20,000, 2 chunks: d, k = 30, 20: 1600 rows 2.1 ms, 1700 rows 10.5 ms;
# 128, 20: 384 -> 4.0 ms, 400 -> 20 ms; 30, 128: 256 -> 9.5 ms, 264 -> 40 ms;
# 40, 40: 620 -> 3.6 ms, 640 -> 22 ms: exactly where B d k passes 1e6.
CHUNK_BLOCK_ROWS = 1024
BLAS_SMALL_MNK = 1_000_000

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


def kernel(fn: Callable[..., Any] | None = None, *, parallel: bool = False,
           fastmath: frozenset[str] = FASTMATH) -> Any:
    """Compile ``fn`` with fastjac's policy (``@kernel`` or ``@kernel(parallel=True)``)."""

    def wrap(f: Callable[..., Any]) -> Any:
        return numba.njit(
            cache=True,
            error_model="numpy",
            fastmath=set(fastmath),
            parallel=parallel,
            nogil=True,
        )(f)

    return wrap(fn) if fn is not None else wrap
