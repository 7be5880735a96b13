"""The one place that sets fastjac's Numba policy.

* ``cache=True``: compiled machine code is written next to the module (or to
  ``NUMBA_CACHE_DIR``) so a second process skips compilation.
* ``error_model="numpy"``: division by zero gives inf/nan like numpy instead of
  raising inside a kernel.
* ``fastmath`` only with flags that keep NaN/Inf semantics: contraction and
  reassociation are allowed, ``nnan``/``ninf`` never are.
* Kernels are compiled lazily, once per dtype actually used (float32 or
  float64); wrappers convert everything else before calling.
"""

import numba

FASTMATH = frozenset({"contract", "reassoc", "nsz", "arcp"})

# Rows per task below which a parallel (prange) kernel is slower than the
# serial one on this machine (2 cores): measured with benchmarks/, see README.
PARALLEL_MIN_ELEMENTS = 200_000


def kernel(fn=None, *, parallel=False):
    """Compile ``fn`` with fastjac's policy (``@kernel`` or ``@kernel(parallel=True)``)."""

    def wrap(f):
        return numba.njit(
            cache=True,
            error_model="numpy",
            fastmath=set(FASTMATH),
            parallel=parallel,
            nogil=True,
        )(f)

    return wrap(fn) if fn is not None else wrap
