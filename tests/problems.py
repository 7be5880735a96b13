"""Small random networks shared by the test modules (data only, no reference math)."""

import numpy as np


def standardized_problem(rng, N=7, d=4, k=3, m=3, dtype=np.float64):
    """A small random problem: X (N, d) standardized, one-hot Y (N, m), O(1) weights."""
    X = rng.standard_normal((N, d))
    if N > 1:
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    Y = np.eye(m)[rng.integers(0, m, N)]
    var = [rng.standard_normal((d, k)), 0.5 * rng.standard_normal((1, k)),
           rng.standard_normal((k, m)), 0.5 * rng.standard_normal((1, m))]
    return X.astype(dtype), Y.astype(dtype), [v.astype(dtype) for v in var]
