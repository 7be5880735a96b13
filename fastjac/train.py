"""The lecture's training run: 100 steps of block Armijo backtracking on the breast-cancer data.

``train()`` with its defaults reproduces the lecture's driver script step for
step and prints its lines, with one change that leaves the trajectory
identical: the lecture evaluates the gradient twice per step (``dx(x)`` and
``df(x)``), this loop once (loss and gradient together).

``impl="structured"`` uses ``fastjac.structured`` (fused kernels, O(N) memory);
``impl="dense"`` uses ``fastjac.dense``, the lecture's dense tensors, whose
memory grows as N^2 k^2 and is checked against a budget before the run.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from fastjac.budget import (  # noqa: F401  (re-exported: the train API's names too)
    BUDGET_ENV,
    DEFAULT_DENSE_BUDGET,
    DenseMemoryError,
    dense_gradient_bytes,
    dense_tensor_shapes,
    format_bytes,
    get_dense_budget,
    parse_size,
)
from fastjac import budget
from fastjac.data import NUM_EXAMPLES, NUM_FEATURES, NUM_LABELS, load_breast_cancer_data
from fastjac.data import standardize as standardize_columns
from fastjac.linesearch import _LineSearch

IMPLS = ("structured", "dense")

STEP_FORMAT = ("Step: %d, Avg Cross Entropy: %f, Gradient Norm: %f, "
               "Training Accuracy: %.1f percent")
FINAL_FORMAT = "Final test accuracy: %.1f percent"

# Below this the dense run is quick and quiet; above it, say what it will take.
DENSE_WARN_BYTES = 100 * 10**6


class DenseMemoryWarning(UserWarning):
    """The dense reference's tensors will take a lot of memory (but fit the budget)."""


# ---------------------------------------------------------------- memory of the dense run

def default_dense_budget() -> int:
    """The dense budget (``fastjac.budget.get_dense_budget``): ``fastjac.set_dense_budget``'s,
    else ``$FASTJAC_DENSE_BUDGET`` (e.g. ``8GiB``), else 4 GiB."""
    return get_dense_budget()


def check_dense_memory(train_rows: int, hidden: int, budget: int | None = None,
                       dims: int = NUM_FEATURES) -> tuple[int, str | None]:
    """Raise ``DenseMemoryError`` above ``budget``; return ``(bytes, message)`` otherwise.

    ``message`` is ``None`` below ``DENSE_WARN_BYTES`` and otherwise says how
    much memory the dense run will take.
    """
    budget = default_dense_budget() if budget is None else budget
    need = dense_gradient_bytes(train_rows, dims, hidden)
    shape = dense_tensor_shapes(train_rows, dims, hidden)["Dlogit(Z1)"]
    what = (f"the dense implementation needs about {format_bytes(need)} per gradient "
            f"(Dlogit alone is a {shape} float64 tensor)")
    if need > budget:
        raise DenseMemoryError(
            f"{what}, over the budget of {format_bytes(budget)}; use the structured "
            f"implementation, fewer training rows or hidden units, or raise the budget "
            f"(--dense-budget or ${BUDGET_ENV})")
    return need, (what if need > DENSE_WARN_BYTES else None)


# ---------------------------------------------------------------- history

@dataclass
class Step:
    """One printed line: loss after the step, norm of the gradient before it, accepted t."""

    step: int
    loss: float
    grad_norm: float
    train_accuracy: float
    t: float
    nfev: int


@dataclass
class History:
    """What ``train`` returns: the per-step records, the test accuracy and the final params."""

    config: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    test_accuracy: float = float("nan")
    params: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def losses(self) -> NDArray[np.float64]:
        return np.array([s.loss for s in self.steps])

    @property
    def train_accuracies(self) -> NDArray[np.float64]:
        return np.array([s.train_accuracy for s in self.steps])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: config, steps (dicts), test_accuracy, params (nested lists), seconds."""
        return {
            "config": dict(self.config),
            "steps": [asdict(s) for s in self.steps],
            "test_accuracy": self.test_accuracy,
            "params": {name: np.asarray(p).tolist()
                       for name, p in zip(("W1", "b1", "W2", "b2"), self.params)},
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------- the run

def check_config(impl: str, steps: int, hidden: int, train_rows: int, seed: int, alpha: float,
                 beta: float, max_iter: int | None = None) -> None:
    """Raise ``ValueError`` naming the first bad setting (shared with the command line)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    value: float  # the counts below, then alpha and beta
    for name, value, low in (("steps", steps, 1), ("hidden", hidden, 1)):
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not _is_int(train_rows) or not 1 <= train_rows <= NUM_EXAMPLES - 1:
        raise ValueError(f"train_rows must be an integer in 1..{NUM_EXAMPLES - 1} "
                         f"(the rest are the test rows), got {train_rows!r}")
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in 0..2**32-1, got {seed!r}")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, (int, float)) and 0 < value < 1):
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    if max_iter is not None and (not _is_int(max_iter) or max_iter < 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _module(impl: str) -> ModuleType:
    module: ModuleType
    if impl == "dense":
        from fastjac import dense as module
    else:
        from fastjac import structured as module
    return module


def closures(module: ModuleType, X: np.ndarray, Y: np.ndarray, classes: bool = False
             ) -> tuple[Callable[[Sequence[np.ndarray]], tuple[Any, ...]], _LineSearch]:
    """``(fg, ls)``: loss-and-gradient and line search on (X, Y) from ``module``.

    ``fg(var) -> (loss, grads)`` (plus the predicted classes with ``classes``);
    ``ls(x0, dx, df0, alpha, beta, max_iter, f0=None)`` accepts the same steps
    as ``block_backtracking`` with ``module``'s loss.
    """
    return (module.nn_loss_and_gradient_closure(X, Y, classes=classes),
            module.nn_line_search_closure(X, Y))


def percent_correct(predicted: np.ndarray, targets: np.ndarray) -> float:
    """The lecture's accuracy: percent of rows whose predicted class is the target."""
    # The lecture's formula, kept so the printed %.1f rounds the same way.
    return 100 * (1 - np.count_nonzero(predicted - targets) / len(targets))


def accuracy(module: ModuleType, X: np.ndarray, targets: np.ndarray,
             var: Sequence[np.ndarray]) -> float:
    """Percent of rows whose predicted class (``module.nn_predict``) is the target."""
    return percent_correct(module.nn_predict(X, var), targets)


def train(impl: str = "structured", steps: int = 100, hidden: int = 20, train_rows: int = 400,
          seed: int = 1234, alpha: float = 0.1, beta: float = 0.5, standardize: bool = False, *,
          max_iter: int | None = None, dense_budget: int | None = None, verbose: bool = True,
          file: TextIO | None = None, callback: Callable[[Step], object] | None = None) -> History:
    """Train the lecture's network by block Armijo backtracking; print the lecture's lines.

    With the defaults this is the lecture's run: ``numpy.random.seed(1234)``,
    W1 (30, 20), b1 = 0, W2 (20, 2), b2 = 0, 100 steps along ``-grad`` with
    alpha = 0.1, beta = 0.5 on the first 400 rows, tested on the other 169.

    Parameters
    ----------
    impl : {"structured", "dense"}
        ``fastjac.structured`` (fused kernels) or ``fastjac.dense`` (the
        lecture's dense tensors; refused above ``dense_budget``, warned about
        above 100 MB with a ``DenseMemoryWarning``).
    steps, hidden : positive int
    train_rows : int in 1..568
        Rows ``[:train_rows]`` train, the others test.
    seed : int
        Seeds numpy's global generator, as the lecture does.
    alpha, beta : float in (0, 1)
        Armijo sufficient-decrease and shrink factors.
    standardize : bool
        Scale features with the training rows' mean and std (not in the lecture).
    max_iter : int, optional
        Most trial steps per line search (default: ``block_backtracking``'s).
    dense_budget : int, optional
        Bytes allowed for the dense tensors (default: ``fastjac.set_dense_budget``'s,
        ``$FASTJAC_DENSE_BUDGET`` or 4 GiB); in force for the whole run.
    verbose : bool
        Print the lecture's lines to ``file`` (default ``sys.stdout``).
    callback : callable, optional
        Called with each ``Step`` after it is recorded.

    Returns
    -------
    History
        ``.steps`` (``Step``: step, loss, grad_norm, train_accuracy, t, nfev),
        ``.test_accuracy``, ``.params`` [W1, b1, W2, b2], ``.config``, ``.seconds``.

    Raises
    ------
    ValueError
        A bad setting.
    DenseMemoryError
        ``impl="dense"`` whose tensors would exceed ``dense_budget``.
    fastjac.linesearch.LineSearchError
        A line search that cannot make progress (e.g. a NaN loss).
    """
    check_config(impl, steps, hidden, train_rows, seed, alpha, beta, max_iter)
    if impl == "dense":
        _, message = check_dense_memory(train_rows, hidden, dense_budget)
        if message:
            warnings.warn(message, DenseMemoryWarning, stacklevel=2)
    module = _module(impl)
    out = file if file is not None else sys.stdout
    config = dict(impl=impl, steps=steps, hidden=hidden, train_rows=train_rows, seed=seed,
                  alpha=alpha, beta=beta, standardize=standardize, max_iter=max_iter)

    np.random.seed(seed)
    X, labels, targets = load_breast_cancer_data()
    if standardize:
        X = standardize_columns(X, train_rows)[0]
    X_train, Y_train, t_train = X[:train_rows], labels[:train_rows], targets[:train_rows]

    x = [module.random_matrix((NUM_FEATURES, hidden)), np.zeros((1, hidden)),
         module.random_matrix((hidden, NUM_LABELS)), np.zeros((1, NUM_LABELS))]
    fg, ls = closures(module, X_train, Y_train, classes=True)
    history = History(config)

    start = time.perf_counter()
    # exp(-z) overflows to inf for very negative z, and 1 / (1 + inf) = 0 is the
    # right logistic value: not worth a warning on every trial step.
    with np.errstate(over="ignore"), budget.dense_budget(dense_budget):
        loss, grad, _ = fg(x)
        for i in range(steps):
            # Bias gradients come back (k,) (the lecture's Db_affine); blocks must match x.
            grad = [g.reshape(xi.shape) for g, xi in zip(grad, x)]
            ngrad = module.negate_blocks(grad)
            result = ls(x, ngrad, grad, alpha=alpha, beta=beta, max_iter=max_iter, f0=loss)
            x, fval = result
            norm = module.block_norm(ngrad)
            # The next step's gradient pass also gives the accuracy printed for this one.
            if i + 1 < steps:
                loss, grad, predicted = fg(x)
            else:
                predicted = module.nn_predict(X_train, x)
            record = Step(i, float(fval), float(norm),
                          float(percent_correct(predicted, t_train)),
                          float(result.t), int(result.nfev))
            history.steps.append(record)
            if verbose:
                print(STEP_FORMAT % (i, fval, record.grad_norm, record.train_accuracy),
                      file=out, flush=True)
            if callback is not None:
                callback(record)
        history.test_accuracy = float(accuracy(module, X[train_rows:], targets[train_rows:], x))
    history.seconds = time.perf_counter() - start
    history.params = x
    if verbose:
        print(FINAL_FORMAT % history.test_accuracy, file=out, flush=True)
    return history
