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


def lecture_net(var):
    """``MLP([d, k, m], activation="logistic")`` for the lecture's blocks var."""
    import fastjac

    d, k = np.shape(var[0])
    return fastjac.MLP([d, k, np.shape(var[2])[1]], activation="logistic")


def fused_args(X, Y, var):
    """What the lecture's closures pass to the kernels: X, Y contiguous in the dtype of all
    inputs, theta = ``MLP.pack(var)`` in it, and the widths ``sizes``."""
    dtype = np.result_type(X, Y, *var)
    c = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    net = lecture_net(var)
    return c(X), c(Y), net.pack(var, dtype=dtype), np.array(net.sizes, dtype=np.int64)
