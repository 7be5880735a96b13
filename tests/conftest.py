"""Shared test setup: hypothesis profiles, seeded rngs, memory layouts, tolerances.

Hypothesis profiles (select with ``FASTJAC_HYPOTHESIS_PROFILE``):

* ``ci`` (default): 30 examples per property, no deadline (the first example
  of a dtype pays Numba's compile time), so the suite stays well under 90 s;
* ``long``: 500 examples per property, for a soak run before a release.

Helpers are fixtures (not ``from conftest import``): ``benchmarks/`` may grow a
``conftest.py`` of its own, and two rootless conftest modules would shadow each
other in ``sys.modules``.
"""

import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# tests/lecture.py (the lecture's code) must be importable whatever --import-mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

settings.register_profile("ci", max_examples=30, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=500, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("FASTJAC_HYPOTHESIS_PROFILE", "ci"))

EPS32 = float(np.finfo(np.float32).eps)

LAYOUTS = ("C", "F", "strided", "swapped", "reversed")


def tolerance(*dtypes, n=1):
    """Relative tolerance for comparing two float computations of the same quantity.

    ``dtypes``: the dtypes of every input that went into the computation; the
    lowest precision among them decides. ``n``: the longest contraction length
    (number of summed products) involved.

    * float64: 1e-12 (the issue's requirement). That is ~4500 float64 eps: the
      two sides differ by a few roundings per entry plus summation order, at
      most ``2 n eps`` relative to ``sum |terms|`` (Higham's gamma_n), which
      stays under 1e-12 for the n <= 2000 contractions used here.
    * float32: ``(256 + 8 n) * eps32``. Both sides compute in float32 but with
      different formulas and intermediates (numpy's float32 ufuncs/BLAS versus
      Numba kernels that keep some sums in float64, or ``e / (1 + e)**2``
      versus ``s(z) s(-z)``): building one entry costs each side fewer than ~10
      roundings, well inside 256 eps (3.1e-5), and a contraction adds at
      most ``n eps`` per side relative to ``sum |terms|``, covered by ``8 n``
      with a 4x margin. For n = 30 that is 5.9e-5.
    """
    if any(np.dtype(dt) == np.float32 for dt in dtypes):
        return EPS32 * (256 + 8 * max(int(n), 1))
    return 1e-12


def relayout(a, layout):
    """The values of ``a`` in a given memory layout (a copy or a view of a copy).

    ``C`` and ``F`` order, ``strided`` (every other element of a larger
    buffer), ``swapped`` (the first two axes swapped in memory: neither C nor F
    for ndim >= 3) and ``reversed`` (negative strides along axis 0).
    """
    a = np.asarray(a)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    if a.ndim == 0:
        return a.copy()  # a 0-d array has one layout (and ascontiguousarray would make it 1-d)
    if layout == "C":
        out = np.ascontiguousarray(a)
    elif layout == "F":
        out = np.asfortranarray(a)
    elif layout == "strided":
        big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
        out = big[tuple(slice(None, None, 2) for _ in a.shape)]
        out[...] = a
    elif layout == "swapped":
        out = np.ascontiguousarray(np.swapaxes(a, 0, 1)).swapaxes(0, 1) if a.ndim >= 2 else a.copy()
    else:  # reversed
        out = np.ascontiguousarray(a[::-1])[::-1]
    assert out.shape == a.shape and out.dtype == a.dtype and np.array_equal(out, a)
    return out


def assert_close(actual, expected, rtol, bound=None, what=""):
    """``|actual - expected| <= rtol * (|expected| + bound)`` entrywise, shapes equal.

    ``bound`` is what rounding errors are proportional to: for a contraction,
    ``sum_k |Dg[i, k]| |Df[k, j]|`` entrywise (pass ``tensordot(|Dg|, |Df|)``);
    by default the largest ``|expected|``. NaN must match NaN.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    if bound is None:
        bound = np.max(np.abs(e[np.isfinite(e)]), initial=0.0)
    err = np.abs(a - e)
    allowed = rtol * (np.abs(e) + bound)
    both_nan = np.isnan(a) & np.isnan(e)
    same_inf = np.isinf(e) & (a == e)
    bad = ~((err <= allowed) | both_nan | same_inf)
    if bad.any():
        idx = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(allowed, 1e-300), 0)), bad.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} entries differ beyond rtol={rtol:.3g}; "
            f"worst at {idx}: actual {a[idx]!r}, expected {e[idx]!r}, "
            f"|diff| {err[idx]:.3g} > allowed {np.broadcast_to(allowed, e.shape)[idx]:.3g}"
        )


@pytest.fixture(scope="session", name="tolerance")
def tolerance_fixture():
    return tolerance


@pytest.fixture(scope="session", name="relayout")
def relayout_fixture():
    return relayout


@pytest.fixture(scope="session", name="assert_close")
def assert_close_fixture():
    return assert_close


@pytest.fixture(autouse=True)
def default_dense_budget(monkeypatch):
    """Every test starts from the default 4 GiB dense budget (no ``$FASTJAC_DENSE_BUDGET``,
    no ``set_dense_budget``) and leaves it so: the budget is process-wide state."""
    import fastjac.budget

    monkeypatch.delenv("FASTJAC_DENSE_BUDGET", raising=False)
    monkeypatch.setattr(fastjac.budget, "_budget", None)
    yield


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's id: reproducible, different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def global_seed():
    """Seed numpy's legacy global generator (the lecture's ``rd.seed``) and restore it after."""
    state = np.random.get_state()
    yield np.random.seed
    np.random.set_state(state)
