"""Input checks shared by the public functions: clear errors, never a Numba typing error."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

FLOATS = (np.float32, np.float64)


def as_float(a: ArrayLike, name: str, ndim: int | None = None) -> NDArray[np.floating]:
    """Return ``a`` as a float32/float64 ndarray (integers become float64).

    Raises ``TypeError`` for bool, complex, object, float16 and other dtypes and
    ``ValueError`` when ``ndim`` is given and does not match.
    """
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        a = a.astype(np.float64)
    elif a.dtype not in FLOATS:
        raise TypeError(
            f"{name} must be float32, float64 or integer, got dtype {a.dtype}"
        )
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def check_chain_axes(g_shape: Iterable[int], f_shape: Iterable[int],
                     var_shape: Sequence[int]) -> int:
    """Number of contracted axes, checking that Dg's last ones match Df's first ones."""
    try:
        dim = len(var_shape)
    except TypeError:
        raise TypeError(f"var_shape must be a tuple of ints, got {var_shape!r}") from None
    g_shape, f_shape = tuple(g_shape), tuple(f_shape)
    if dim > len(g_shape) or dim > len(f_shape):
        raise ValueError(
            f"chain_rule: var_shape {tuple(var_shape)} has {dim} axes but Dg has shape "
            f"{g_shape} and Df has shape {f_shape}"
        )
    g_axes, f_axes = g_shape[len(g_shape) - dim:], f_shape[:dim]
    if g_axes != f_axes:
        raise ValueError(
            f"chain_rule: the last {dim} axes of Dg {g_shape} are {g_axes} but the "
            f"first {dim} axes of Df {f_shape} are {f_axes}; they must match"
        )
    return dim


def check_affine(
    X: ArrayLike, W: ArrayLike, b: ArrayLike, names: tuple[str, str, str] = ("X", "W", "b")
) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating]]:
    """Validate ``X @ W + b``: X (N, d), W (d, k), b (1, k) or (k,); return them as floats."""
    nX, nW, nb = names
    X, W = as_float(X, nX, 2), as_float(W, nW, 2)
    if W.shape[0] != X.shape[1]:
        raise ValueError(f"{nX} has {X.shape[1]} columns (shape {X.shape}) but {nW} has shape "
                         f"{W.shape}: {nX} @ {nW} needs {nX} with {W.shape[0]} columns")
    return X, W, check_bias(b, W, nb, nW)


def check_bias(b: ArrayLike, W: np.ndarray, nb: str = "b", nW: str = "W") -> NDArray[np.floating]:
    """A bias of shape (1, k) (the lecture's) or (k,) for W (d, k)."""
    b = as_float(b, nb)
    if b.shape not in ((1, W.shape[1]), (W.shape[1],)):
        raise ValueError(f"{nb} must have shape (1, {W.shape[1]}) or ({W.shape[1]},) to match "
                         f"{nW} of shape {W.shape}, got {b.shape}")
    return b


def check_distributions(P: ArrayLike,
                        Q: ArrayLike) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """P (targets) and Q (predictions) as float arrays of one (N, m) shape."""
    P, Q = as_float(P, "P", 2), as_float(Q, "Q", 2)
    if P.shape != Q.shape:
        raise ValueError(f"P and Q must have the same shape (N, m), got P {P.shape} and Q {Q.shape}")
    return P, Q
