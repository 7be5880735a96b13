"""The lecture's data: the Wisconsin breast-cancer set (569 rows, 30 features, 2 classes).

The data ships with scikit-learn (no network). ``load_breast_cancer_data``
builds the arrays exactly as the lecture does; ``standardize`` is an optional
extra the lecture does not use, fitted on the training rows only so no
statistic leaks from the test rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

NUM_EXAMPLES, NUM_FEATURES, NUM_LABELS = 569, 30, 2


class BreastCancer(NamedTuple):
    """``(X, labels, targets)``: features (569, 30), one-hot labels (569, 2), 0/1 targets (569,)."""

    X: np.ndarray
    labels: np.ndarray
    targets: np.ndarray


def load_breast_cancer_data() -> BreastCancer:
    """The lecture's arrays: ``X = data['data']``, ``targets = data.target``, one-hot ``labels``.

    Returns
    -------
    BreastCancer
        ``X`` float64 (569, 30), rows in the bundled order; ``labels`` float64
        (569, 2) with ``labels[i, targets[i]] = 1``; ``targets`` int (569,).
    """
    # sklearn takes ~1 s to import; only pay for it when data is needed.
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = np.asarray(data["data"], dtype=np.float64)
    targets = np.asarray(data.target)
    labels = np.zeros((targets.shape[0], NUM_LABELS))
    labels[np.arange(targets.shape[0]), targets] = 1
    return BreastCancer(X, labels, targets)


def standardize(X: ArrayLike, train_rows: int
                ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Scale each column to zero mean and unit variance using rows ``[:train_rows]`` only.

    ``(X - mean) / std`` with mean and std of ``X[:train_rows]``; a column that
    is constant on those rows gets std 1 (it is only shifted).

    Parameters
    ----------
    X : ndarray (N, d)
    train_rows : int in [1, N]

    Returns
    -------
    Xs : ndarray (N, d), float64, a new array
    mean, std : ndarray (d,)
    """
    X = np.asarray(X, dtype=np.float64)
    if not 1 <= train_rows <= X.shape[0]:
        raise ValueError(f"train_rows must lie in [1, {X.shape[0]}], got {train_rows}")
    mean = X[:train_rows].mean(axis=0)
    std = X[:train_rows].std(axis=0)
    std[std == 0] = 1.0
    return (X - mean) / std, mean, std
