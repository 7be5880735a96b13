"""Training data: scikit-learn's bundled sets and the user's own CSV files.

``load_breast_cancer_data`` builds the lecture's arrays (the Wisconsin
breast-cancer set: 569 rows, 30 features, 2 classes) exactly as the lecture
does. It reads the CSV file that ships inside scikit-learn directly, without
importing scikit-learn (``import sklearn.datasets`` alone takes seconds), and
falls back to ``sklearn.datasets.load_breast_cancer`` when the file is not
there; either way the arrays are bitwise scikit-learn's.

``load_dataset(name)`` gives one of ``DATASETS`` (breast_cancer, digits,
iris, wine: classification; diabetes: regression) as a ``Dataset``;
``load_csv(path, target)`` reads a CSV file with a header row, the target
column named by ``target`` and every other column numeric;
``make_dataset(X, y)`` wraps arrays. A target of strings or integers is a
classification target (one-hot classes, sorted labels), a target of other
numbers a regression target, unless ``task`` says otherwise.

``split_rows`` picks the training and test rows; ``standardize`` is an
optional extra the lecture does not use, fitted on the training rows only so
no statistic leaks from the test rows.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import importlib.util
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

NUM_EXAMPLES, NUM_FEATURES, NUM_LABELS = 569, 30, 2
BREAST_CANCER_CLASSES = ("malignant", "benign")  # load_breast_cancer().target_names

TASKS = ("classification", "regression")
CLASSIFICATION, REGRESSION = TASKS


class DatasetInfo(NamedTuple):
    """What a bundled set holds, known without loading it: rows, features, outputs, task."""

    rows: int
    features: int
    outputs: int  # classes, or 1 for a regression target
    task: str


# scikit-learn's bundled sets (``sklearn.datasets.load_<name>``); the first is the default.
DATASETS: dict[str, DatasetInfo] = {
    "breast_cancer": DatasetInfo(569, 30, 2, CLASSIFICATION),
    "digits": DatasetInfo(1797, 64, 10, CLASSIFICATION),
    "iris": DatasetInfo(150, 4, 3, CLASSIFICATION),
    "wine": DatasetInfo(178, 13, 3, CLASSIFICATION),
    "diabetes": DatasetInfo(442, 10, 1, REGRESSION),
}
DEFAULT_DATASET = "breast_cancer"


class DataError(ValueError):
    """Data that cannot be trained on: a missing file or column, a non-numeric feature, ...

    The message is one line naming the file, column and line where it can.
    """


# ---------------------------------------------------------------- the lecture's arrays

class BreastCancer(NamedTuple):
    """``(X, labels, targets)``: features (569, 30), one-hot labels (569, 2), 0/1 targets (569,)."""

    X: np.ndarray
    labels: np.ndarray
    targets: np.ndarray


def load_breast_cancer_data() -> BreastCancer:
    """The lecture's arrays: ``X = data['data']``, ``targets = data.target``, one-hot ``labels``.

    Read from scikit-learn's bundled ``breast_cancer.csv`` without importing
    scikit-learn (or by ``sklearn.datasets.load_breast_cancer`` when the file
    is missing): bitwise the arrays ``load_breast_cancer()`` gives.

    Returns
    -------
    BreastCancer
        ``X`` float64 (569, 30), rows in the bundled order; ``labels`` float64
        (569, 2) with ``labels[i, targets[i]] = 1``; ``targets`` int (569,).
    """
    X, targets, _ = _bundled_csv("breast_cancer")
    return BreastCancer(X, one_hot(targets, NUM_LABELS), targets)


def one_hot(index: NDArray[np.integer], n_classes: int) -> NDArray[np.float64]:
    """``(N, n_classes)`` float64 with ``out[i, index[i]] = 1``, zeros elsewhere."""
    out = np.zeros((index.shape[0], n_classes))
    out[np.arange(index.shape[0]), index] = 1
    return out


def _sklearn_data_file(filename: str) -> Path | None:
    """``sklearn/datasets/data/<filename>`` if it exists, found without importing sklearn."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root, "datasets", "data", filename)
        if path.is_file():
            return path
    return None


_BUNDLED_CSV = {"breast_cancer": "breast_cancer.csv", "iris": "iris.csv",
                "wine": "wine_data.csv"}


def _bundled_csv(name: str) -> tuple[NDArray[np.float64], NDArray[np.int_], tuple[str, ...]]:
    """``(X, target, target_names)`` of a set scikit-learn keeps as ``n,d,names...`` CSV.

    Parsed as ``sklearn.datasets._base.load_csv_data`` does (so the floats are
    bitwise its), falling back to scikit-learn's loader if the file is missing.
    """
    path = _sklearn_data_file(_BUNDLED_CSV[name])
    if path is None:
        return _sklearn_loader(name)
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        head = next(reader)
        n_samples, n_features = int(head[0]), int(head[1])
        X = np.empty((n_samples, n_features))
        target = np.empty((n_samples,), dtype=int)
        for i, row in enumerate(reader):
            X[i] = np.asarray(row[:-1], dtype=np.float64)
            target[i] = int(row[-1])
    return X, target, tuple(head[2:])


def _digits() -> tuple[NDArray[np.float64], NDArray[np.int_], tuple[str, ...]]:
    """``load_digits()``'s data and target, read as it reads them."""
    path = _sklearn_data_file("digits.csv.gz")
    if path is None:
        return _sklearn_loader("digits")
    with gzip.open(path, mode="rt", encoding="utf-8") as fh:
        data = np.loadtxt(fh, delimiter=",")
    return (np.ascontiguousarray(data[:, :-1]), data[:, -1].astype(int),
            tuple(str(c) for c in range(10)))


def _sklearn_loader(name: str) -> tuple[NDArray[np.float64], np.ndarray, tuple[str, ...]]:
    """``sklearn.datasets.load_<name>()``: ``(X, target, target_names)`` (names () if none)."""
    import sklearn.datasets  # ~2 s: only for the sets not read directly

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    names = tuple(str(n) for n in bunch.get("target_names", ()))
    return (np.ascontiguousarray(bunch["data"], dtype=np.float64), np.asarray(bunch.target),
            names)


# ---------------------------------------------------------------- datasets

@dataclass(frozen=True, eq=False)
class Dataset:
    """Features, a target and what to learn: ``task`` is "classification" or "regression".

    ``target`` holds the target's values as read (strings, integers or
    floats), one per row of ``X``. For a classification target ``classes``
    are its distinct values, sorted, and ``Y`` their one-hot matrix (N, K);
    for a regression target ``Y`` is the values as a column (N, 1).
    ``target_names`` name the integer classes 0..K-1 of scikit-learn's sets.
    Build one with ``load_dataset``, ``load_csv`` or ``make_dataset``.
    """

    name: str
    X: NDArray[np.float64]
    target: np.ndarray
    task: str
    target_name: str = "target"
    target_names: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @cached_property
    def _encoded(self) -> tuple[np.ndarray, NDArray[np.intp]]:
        values, index = np.unique(self.target, return_inverse=True)
        return values, index.reshape(-1)

    @property
    def class_index(self) -> NDArray[np.intp]:
        """Each row's class, an index into ``classes`` (N,) (classification only)."""
        self._need_classes("class_index")
        return self._encoded[1]

    @property
    def classes(self) -> list[Any]:
        """The class labels in the order of ``Y``'s columns: the sorted distinct target values
        (their ``target_names`` for scikit-learn's sets), as JSON-ready Python values."""
        self._need_classes("classes")
        values = self._encoded[0]
        if self.target_names and values.dtype.kind in "iu":
            return [self.target_names[int(v)] for v in values]
        return [v.item() if isinstance(v, np.generic) else v for v in values]

    @property
    def n_outputs(self) -> int:
        """Columns of ``Y``: the number of classes, or 1 for a regression target."""
        return len(self._encoded[0]) if self.task == CLASSIFICATION else 1

    @cached_property
    def Y(self) -> NDArray[np.float64]:
        """The targets the network learns: one-hot (N, K) classes or values (N, 1)."""
        if self.task == CLASSIFICATION:
            return one_hot(self._encoded[1], len(self._encoded[0]))
        return self.target.astype(np.float64).reshape(-1, 1)

    def with_task(self, task: str | None) -> Dataset:
        """This data with ``task`` (checked as ``make_dataset`` checks it); ``None``: unchanged."""
        if task is None or task == self.task:
            return self
        return dataclasses.replace(self, task=_check_task(self.target, task, self.target_name,
                                                          self.name))

    def _need_classes(self, what: str) -> None:
        if self.task != CLASSIFICATION:
            raise ValueError(f"{what}: {self.name}'s target {self.target_name!r} is a "
                             f"regression target, not classes")


def infer_task(target: ArrayLike) -> str:
    """The task a target's type gives: classification for strings, integers and booleans,
    regression for other numbers."""
    kind = np.asarray(target).dtype.kind
    return CLASSIFICATION if kind in "OSUbiu" else REGRESSION


def _check_task(target: np.ndarray, task: str | None, target_name: str, where: str) -> str:
    """``task`` (inferred if ``None``) after checking the target can be learnt that way."""
    if task is None:
        task = infer_task(target)
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    kind = target.dtype.kind
    if kind == "f" and not np.all(np.isfinite(target)):
        raise DataError(f"{where}: target {target_name!r} has a non-finite value "
                        f"({target[~np.isfinite(target)][0]!r})")
    if task == REGRESSION and kind not in "biuf":
        example = next(iter(target.tolist()), "")
        raise DataError(f"{where}: target {target_name!r} holds strings (e.g. {example!r}): "
                        f"a regression target must be numeric")
    if task == CLASSIFICATION and len(np.unique(target)) < 2:
        raise DataError(f"{where}: target {target_name!r} has a single class "
                        f"({next(iter(target.tolist()), None)!r}); classification needs two")
    return task


def make_dataset(X: ArrayLike, y: ArrayLike, *, task: str | None = None, name: str = "arrays",
                 target_name: str = "target", target_names: tuple[str, ...] = ()) -> Dataset:
    """A ``Dataset`` from features X (N, d) and a target y (N,).

    ``task=None`` infers it (``infer_task``: strings or integers classify,
    other numbers regress). Raises ``DataError`` for non-finite or
    non-numeric features, a non-finite numeric target, a string target to
    regress, a single class, or no rows.
    """
    Xa = np.asarray(X)
    if Xa.dtype.kind not in "biuf":
        raise DataError(f"{name}: X must be numeric, got dtype {Xa.dtype}")
    Xf = np.ascontiguousarray(Xa, dtype=np.float64)
    target = np.asarray(y)
    if Xf.ndim != 2 or target.ndim != 1 or Xf.shape[0] != target.shape[0]:
        raise DataError(f"{name}: X must be (N, d) and y (N,), got {Xf.shape} and {target.shape}")
    if Xf.shape[0] == 0 or Xf.shape[1] == 0:
        raise DataError(f"{name}: no data (X has shape {Xf.shape})")
    if not np.all(np.isfinite(Xf)):
        col = int(np.nonzero(~np.all(np.isfinite(Xf), axis=0))[0][0])
        raise DataError(f"{name}: X has a non-finite value in column {col}")
    if target.dtype.kind == "O":  # e.g. from pandas: numbers stay numbers, the rest strings
        target = np.array(target.tolist())
        if target.dtype.kind not in "biufU":
            target = target.astype(str)
    task = _check_task(target, task, target_name, name)
    return Dataset(name, Xf, target, task, target_name, tuple(target_names))


def load_dataset(name: str, task: str | None = None) -> Dataset:
    """One of scikit-learn's bundled sets (``DATASETS``), as a ``Dataset``.

    breast_cancer, iris and wine are read from scikit-learn's CSV files and
    digits from its gzipped one, without importing scikit-learn (its loaders
    when a file is missing); diabetes (scaled, as ``load_diabetes()`` gives
    it) by ``sklearn.datasets.load_diabetes``. ``task`` overrides the set's
    own (``DATASETS[name].task``).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    if name in _BUNDLED_CSV:
        X, target, names = _bundled_csv(name)
    elif name == "digits":
        X, target, names = _digits()
    else:
        X, target, names = _sklearn_loader(name)
    return from_arrays(name, X, target, names, task)


def from_arrays(name: str, X: NDArray[np.float64], target: np.ndarray,
                target_names: tuple[str, ...], task: str | None = None) -> Dataset:
    """A bundled set's ``Dataset`` from its arrays (its own task unless ``task``)."""
    data = Dataset(name, X, target, DATASETS[name].task, "target", target_names)
    return data.with_task(task)


# ---------------------------------------------------------------- CSV files

def load_csv(path: str | os.PathLike[str], target: str, task: str | None = None) -> Dataset:
    """A CSV file with a header row: the column named ``target`` is the target, the rest X.

    Comma-separated, UTF-8 (a byte-order mark is skipped), blank lines
    ignored, names and values stripped of surrounding spaces. Every column
    but the target must hold finite numbers. The target's type decides the
    task unless ``task`` is given: strings or integers (every value parses as
    an ``int``) are classes, other numbers (``1.5``, ``2.0``, ``1e3``) a
    regression target.

    Raises
    ------
    DataError
        One line naming the file and the column or line: a missing file, no
        header, no column ``target``, a row of the wrong length, a missing or
        non-numeric feature value, ...
    """
    where = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [name.strip() for name in next(reader, [])]
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or all(not v.strip() for v in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{where}, line {reader.line_num}: {len(row)} fields, but the "
                                    f"header has {len(header)}")
                rows.append(row)
                lines.append(reader.line_num)
    except OSError as exc:
        raise DataError(f"{where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise DataError(f"{where}: not a CSV file ({exc})") from None
    if not header:
        raise DataError(f"{where}: empty file (a header row naming the columns is needed)")
    if header.count(target) != 1:
        shown = ", ".join(repr(h) for h in header[:20]) + (", ..." if len(header) > 20 else "")
        what = "two columns are" if header.count(target) else "no column is"
        raise DataError(f"{where}: {what} named {target!r}; the columns are {shown}")
    if len(header) < 2:
        raise DataError(f"{where}: no feature columns besides the target {target!r}")
    if not rows:
        raise DataError(f"{where}: no data rows after the header")
    t = header.index(target)
    features = [j for j in range(len(header)) if j != t]
    X = np.empty((len(rows), len(features)))
    for c, j in enumerate(features):
        X[:, c] = _numeric_column([row[j] for row in rows], header[j], lines, where)
    y = _target_column([row[t].strip() for row in rows], target, lines, where)
    return make_dataset(X, y, task=task, name=where, target_name=target)


def _numeric_column(values: list[str], name: str, lines: list[int], where: str
                    ) -> NDArray[np.float64]:
    try:
        out = np.array([float(v) for v in values])
    except ValueError:
        out = None
    if out is not None and np.all(np.isfinite(out)):
        return out
    for value, line in zip(values, lines):
        try:
            ok = math.isfinite(float(value))
        except ValueError:
            ok = False
        if not ok:
            what = "a missing value" if not value.strip() else (
                f"a non-numeric value {value.strip()!r}" if _not_float(value)
                else f"a non-finite value {value.strip()!r}")
            raise DataError(f"{where}: column {name!r} has {what} on line {line}; every column "
                            f"but the target must hold finite numbers")
    raise AssertionError("unreachable")  # pragma: no cover


def _not_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return True
    return False


def _target_column(values: list[str], name: str, lines: list[int], where: str) -> np.ndarray:
    """Integers if every value is one, else floats if every value is one, else strings."""
    for i, value in enumerate(values):
        if not value:
            raise DataError(f"{where}: target column {name!r} has a missing value on line "
                            f"{lines[i]}")
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return np.array(values, dtype=str)


# ---------------------------------------------------------------- splits and scaling

class Split(NamedTuple):
    """Training and test rows, as index arrays into the data."""

    train: NDArray[np.intp]
    test: NDArray[np.intp]


def split_rows(n_rows: int, train_rows: int | None = None, test_fraction: float | None = None,
               seed: int = 0) -> Split:
    """The training and test rows of ``n_rows``.

    ``train_rows=R``: rows ``[:R]`` train, the others test (the lecture's split).
    ``test_fraction=F``: ``ceil(F N)`` test rows drawn by
    ``numpy.random.RandomState(seed).permutation(N)`` (as scikit-learn's
    ``train_test_split`` draws them, not stratified), the others train; both
    sets in row order. The global generator is not touched. Give one or the other.
    """
    if (train_rows is None) == (test_fraction is None):
        raise ValueError("give exactly one of train_rows and test_fraction")
    if train_rows is not None:
        if not 1 <= train_rows <= n_rows - 1:
            raise ValueError(f"train_rows must be an integer in 1..{n_rows - 1}, got {train_rows}")
        return Split(np.arange(train_rows), np.arange(train_rows, n_rows))
    assert test_fraction is not None
    n_test = math.ceil(test_fraction * n_rows)
    if not (0 < test_fraction < 1 and 1 <= n_test <= n_rows - 1):
        raise ValueError(f"test_fraction {test_fraction!r} of {n_rows} rows leaves no training or "
                         f"no test rows")
    perm = np.random.RandomState(seed).permutation(n_rows)
    return Split(np.sort(perm[n_test:]), np.sort(perm[:n_test]))


def standardize(X: ArrayLike, train_rows: int | ArrayLike
                ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Scale each column to zero mean and unit variance using the training rows only.

    ``(X - mean) / std`` with mean and std of ``X[:train_rows]`` (an int) or of
    ``X[train_rows]`` (an index array); a column that is constant on those rows
    gets std 1 (it is only shifted).

    Parameters
    ----------
    X : ndarray (N, d)
    train_rows : int in [1, N], or an array of row indices (at least one)

    Returns
    -------
    Xs : ndarray (N, d), float64, a new array
    mean, std : ndarray (d,)
    """
    X = np.asarray(X, dtype=np.float64)
    if isinstance(train_rows, (int, np.integer)):
        if not 1 <= train_rows <= X.shape[0]:
            raise ValueError(f"train_rows must lie in [1, {X.shape[0]}], got {train_rows}")
        fit = X[:train_rows]
    else:
        rows = np.asarray(train_rows)
        if rows.ndim != 1 or rows.size == 0 or rows.dtype.kind not in "iu":
            raise ValueError("train_rows must be a count or a non-empty 1-d array of row indices")
        fit = X[rows]
    mean = fit.mean(axis=0)
    std = fit.std(axis=0)
    std[std == 0] = 1.0
    return (X - mean) / std, mean, std
