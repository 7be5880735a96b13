"""Memory: the structured gradient stays O(N (d + k + m)) where the dense one is O(N^2 k^2).

Measured with ``tracemalloc``. The inputs are created and every kernel is
compiled (on a small problem) before tracing starts, so the peak is what one
call allocates. The first test checks the premise that arrays Numba allocates
inside a kernel are traced at all; without it the bounds below would miss them.
"""

import gc
import tracemalloc

import numba
import numpy as np
import pytest

from fastjac import kernels, structured

N, D, K, M = 100_000, 30, 20, 2
MB = 1e6


def traced_peak(fun, *args):
    """(result, peak bytes traced while ``fun(*args)`` ran)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.clear_traces()
        result = fun(*args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def problem(rng, n, dtype):
    X = rng.standard_normal((n, D)).astype(dtype)
    Y = np.eye(M, dtype=dtype)[rng.integers(0, M, n)]
    var = [(0.1 * rng.standard_normal((D, K))).astype(dtype), np.zeros((1, K), dtype),
           (0.1 * rng.standard_normal((K, M))).astype(dtype), np.zeros((1, M), dtype)]
    return X, Y, var


@numba.njit
def _allocate_inside(n):
    a = np.ones(n)
    return a.sum()


def test_tracemalloc_sees_numba_allocations(rng):
    n = 1_000_000
    _allocate_inside(10)  # compile outside the traced region
    total, peak = traced_peak(_allocate_inside, n)
    assert total == n
    assert peak >= 8 * n, (f"an 8 MB array allocated inside an njit function was not traced "
                           f"(peak {peak} B)")
    # and fastjac's own kernels (compiled with its policy) returning a Numba-allocated array
    G, W = rng.standard_normal((n // 10, K)), rng.standard_normal((D, K))
    kernels.kron_iw_vjp(G[:2], W)
    out, peak = traced_peak(kernels.kron_iw_vjp, G, W)
    assert peak >= out.nbytes, f"kron_iw_vjp's {out.nbytes} B result was not traced (peak {peak} B)"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_structured_gradient_peak_memory(dtype, rng):
    """N = 100,000, d = 30, k = 20, m = 2: under 150 MB in float64 (75 MB in float32).

    The inputs alone are 25.6 MB (float64); the dense Jacobians would be
    N^2 k^2 * 8 B = 32 TB for Dlogit alone.
    """
    X, Y, var = problem(rng, 50, dtype)
    structured.nn_loss_gradient_closure(X, Y)(var)  # compile for this dtype
    X, Y, var = problem(rng, N, dtype)
    df = structured.nn_loss_gradient_closure(X, Y)
    grad, peak = traced_peak(df, var)
    limit = 150 * MB * np.dtype(dtype).itemsize / 8
    print(f"structured gradient, N={N} {np.dtype(dtype).name}: peak traced memory {peak / MB:.1f} MB")
    assert peak < limit, f"peak traced memory {peak / MB:.1f} MB exceeds {limit / MB:.0f} MB"
    assert [g.shape for g in grad] == [(D, K), (K,), (K, M), (M,)]
    assert all(g.dtype == dtype and np.isfinite(g).all() for g in grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_structured_loss_allocates_no_per_row_array(dtype, rng):
    """The fused loss never holds Z1 (N, k) or even one value per row: peak < N * itemsize."""
    X, Y, var = problem(rng, 50, dtype)
    structured.nn_loss_closure(X, Y)(var)
    X, Y, var = problem(rng, N, dtype)
    f = structured.nn_loss_closure(X, Y)
    f(var)  # the first large call may start Numba's thread pool
    loss, peak = traced_peak(f, var)
    limit = N * np.dtype(dtype).itemsize
    assert peak < limit, f"peak traced memory {peak / MB:.2f} MB, limit {limit / MB:.2f} MB"
    assert np.isfinite(loss)


@pytest.mark.parametrize("name", ["DX_affine", "DW_affine", "Db_affine", "Dlogit", "Dmatrix_softmax"])
def test_building_a_jacobian_allocates_only_its_structure(name, rng):
    """Constructing a D* at N = 100,000 allocates at most twice what it stores (+ 64 kB)."""
    def arguments(n):
        X, _, var = problem(rng, n, np.float64)
        Z = X @ var[0]
        return {"Dlogit": (Z,), "Dmatrix_softmax": (np.ascontiguousarray(Z[:, :M]),)}.get(
            name, (X, var[0], var[1]))

    getattr(structured, name)(*arguments(3))  # compile
    args = arguments(N)
    (J, _), peak = traced_peak(getattr(structured, name), *args)
    dense_bytes = np.prod(J.shape, dtype=float) * 8
    assert peak <= 2 * J.nbytes + 64_000, (f"{name}: peak {peak / MB:.2f} MB for "
                                           f"{J.nbytes / MB:.2f} MB stored")
    assert J.nbytes < dense_bytes / 100  # KronXI stores X: k^2 = 400 times less than dense
