"""Training by block Armijo backtracking: the lecture's run, and networks on the user's data.

``train()`` with its defaults reproduces the lecture's driver script step for
step and prints its lines, with one change that leaves the trajectory
identical: the lecture evaluates the gradient twice per step (``dx(x)`` and
``df(x)``), this loop once (loss and gradient together).

The same loop trains any ``fastjac.MLP`` (hidden layers, activations, loss,
L2 penalty) on scikit-learn's bundled sets (``dataset="digits"``, ...) or on
a ``fastjac.data.Dataset`` (``fastjac.data.load_csv`` reads the user's CSV
file): classification targets become one-hot classes, regression targets are
fitted by squared error and reported by R^2.

``impl="structured"`` uses the fused kernels (``fastjac.MLP``, O(N) memory);
``impl="dense"`` uses ``fastjac.dense``, the lecture's dense tensors, whose
memory grows as N^2 k^2 and is checked against a budget before the run; it
runs the lecture's network only (one logistic hidden layer, softmax
cross-entropy, no penalty) on any classification data.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, TextIO

import numpy as np
from numpy.typing import ArrayLike, NDArray

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
from fastjac import activations, budget, losses, precompile
from fastjac.data import (  # noqa: F401  (re-exported)
    BREAST_CANCER_CLASSES,
    CLASSIFICATION,
    DATASETS,
    DEFAULT_DATASET,
    NUM_EXAMPLES,
    NUM_FEATURES,
    NUM_LABELS,
    REGRESSION,
    TASKS,
    DataError,
    Dataset,
    Split,
    from_arrays,
    load_breast_cancer_data,
    load_dataset,
    split_rows,
)
from fastjac.data import standardize as standardize_columns
from fastjac.linesearch import _LineSearch, block_norm, negate_blocks, random_matrix
from fastjac.mlp import MLP

IMPLS = ("structured", "dense")
ACTIVATIONS = tuple(activations.ACTIVATIONS)  # identity, logistic, tanh, relu
LOSSES = tuple(losses.LOSSES)  # softmax_cross_entropy, binary_cross_entropy, squared_error
CROSS_ENTROPIES = ("softmax_cross_entropy", "binary_cross_entropy")

DEFAULT_HIDDEN = 20
DEFAULT_ACTIVATION = "logistic"  # the lecture's
DEFAULT_TEST_FRACTION = 0.25
LECTURE_TRAIN_ROWS = 400  # breast_cancer with no split option: the lecture's 400 / 169

STEP_FORMAT = ("Step: %d, Avg Cross Entropy: %f, Gradient Norm: %f, "
               "Training Accuracy: %.1f percent")
FINAL_FORMAT = "Final test accuracy: %.1f percent"
FINAL_R2_FORMAT = "Final test R^2: %.4f"
# What the printed loss is called; " + L2 Penalty" is appended when l2 > 0.
LOSS_LABELS = {"softmax_cross_entropy": "Avg Cross Entropy",
               "binary_cross_entropy": "Avg Binary Cross Entropy",
               "squared_error": "Avg Half Squared Error"}

# Below this the dense run is quick and quiet; above it, say what it will take.
DENSE_WARN_BYTES = 100 * 10**6


class DenseMemoryWarning(UserWarning):
    """The dense reference's tensors will take a lot of memory (but fit the budget)."""


def line_formats(task: str = CLASSIFICATION, loss: str = "softmax_cross_entropy",
                 l2: float = 0.0) -> tuple[str, str]:
    """``(step_format, final_format)``: the printed lines' %-formats.

    A step line takes ``(step, loss, gradient norm, training score)``, the
    final line the test score. Classification by softmax cross-entropy
    without penalty prints the lecture's lines (``STEP_FORMAT``,
    ``FINAL_FORMAT``); other losses name themselves, ``l2 > 0`` adds
    "+ L2 Penalty" (the printed value is the objective), and a regression
    target reports R^2 instead of an accuracy.
    """
    label = LOSS_LABELS[loss] + (" + L2 Penalty" if l2 else "")
    if task == CLASSIFICATION:
        return (f"Step: %d, {label}: %f, Gradient Norm: %f, Training Accuracy: %.1f percent",
                FINAL_FORMAT)
    return f"Step: %d, {label}: %f, Gradient Norm: %f, Training R^2: %.4f", FINAL_R2_FORMAT


# ---------------------------------------------------------------- memory of the dense run

def default_dense_budget() -> int:
    """The dense budget (``fastjac.budget.get_dense_budget``): ``fastjac.set_dense_budget``'s,
    else ``$FASTJAC_DENSE_BUDGET`` (e.g. ``8GiB``), else 4 GiB."""
    return get_dense_budget()


def check_dense_memory(train_rows: int, hidden: int, budget: int | None = None,
                       dims: int = NUM_FEATURES, outputs: int = NUM_LABELS
                       ) -> tuple[int, str | None]:
    """Raise ``DenseMemoryError`` above ``budget``; return ``(bytes, message)`` otherwise.

    ``message`` is ``None`` below ``DENSE_WARN_BYTES`` and otherwise says how
    much memory the dense run will take.
    """
    budget = default_dense_budget() if budget is None else budget
    need = dense_gradient_bytes(train_rows, dims, hidden, outputs)
    shape = dense_tensor_shapes(train_rows, dims, hidden, outputs)["Dlogit(Z1)"]
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
    """One printed line: loss after the step, norm of the gradient before it, accepted t.

    ``train_accuracy`` (percent) for a classification target, ``train_r2``
    for a regression target; the other is NaN.
    """

    step: int
    loss: float
    grad_norm: float
    train_accuracy: float
    t: float
    nfev: int
    train_r2: float = math.nan


@dataclass
class History:
    """What ``train`` returns: the per-step records, the test score and the final params.

    ``test_accuracy`` (percent) for a classification target, ``test_r2`` for
    a regression target (the other is NaN); ``config["task"]`` says which.
    """

    config: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    test_accuracy: float = float("nan")
    params: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0
    test_r2: float = float("nan")

    @property
    def task(self) -> str:
        return str(self.config.get("task", CLASSIFICATION))

    @property
    def losses(self) -> NDArray[np.float64]:
        return np.array([s.loss for s in self.steps])

    @property
    def train_accuracies(self) -> NDArray[np.float64]:
        return np.array([s.train_accuracy for s in self.steps])

    @property
    def train_r2s(self) -> NDArray[np.float64]:
        return np.array([s.train_r2 for s in self.steps])

    def _formats(self) -> tuple[str, str]:
        c = self.config
        return line_formats(self.task, c.get("loss", "softmax_cross_entropy"), c.get("l2", 0.0))

    def step_line(self, step: Step) -> str:
        """The line printed for ``step``."""
        score = step.train_accuracy if self.task == CLASSIFICATION else step.train_r2
        return self._formats()[0] % (step.step, step.loss, step.grad_norm, score)

    def final_line(self) -> str:
        """The last line printed: the test accuracy, or the test R^2."""
        score = self.test_accuracy if self.task == CLASSIFICATION else self.test_r2
        return self._formats()[1] % score

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: config, steps (dicts), test_accuracy or test_r2, params (nested lists
        named W1, b1, ..., WL, bL), seconds."""
        classify = self.task == CLASSIFICATION
        drop = "train_r2" if classify else "train_accuracy"
        steps = [{k: v for k, v in asdict(s).items() if k != drop} for s in self.steps]
        out: dict[str, Any] = {"config": dict(self.config), "steps": steps}
        if classify:
            out["test_accuracy"] = self.test_accuracy
        else:
            out["test_r2"] = self.test_r2
        out["params"] = {f"{'Wb'[i % 2]}{i // 2 + 1}": np.asarray(p).tolist()
                         for i, p in enumerate(self.params)}
        out["seconds"] = self.seconds
        return out


# ---------------------------------------------------------------- settings

def check_config(impl: str, steps: int, hidden: int | None, train_rows: int | None, seed: int,
                 alpha: float, beta: float, max_iter: int | None = None, *,
                 names: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` naming the first bad setting (shared with the command line).

    ``train_rows``' range depends on the data: ``prepare`` checks it.
    ``names`` renames the settings in the messages (the command line's options).
    """
    n = _namer(names)
    if impl not in IMPLS:
        raise ValueError(f"{n('impl')} must be one of {', '.join(IMPLS)}, got {impl!r}")
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"{n('steps')} must be a positive integer, got {steps!r}")
    if hidden is not None and (not _is_int(hidden) or hidden < 1):
        raise ValueError(f"{n('hidden')} must be a positive integer, got {hidden!r}")
    if train_rows is not None and not _is_int(train_rows):
        raise ValueError(f"{n('train_rows')} must be an integer, got {train_rows!r}")
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"{n('seed')} must be an integer in 0..2**32-1, got {seed!r}")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and 0 < value < 1):
            raise ValueError(f"{n(name)} must lie strictly between 0 and 1, got {value!r}")
    if max_iter is not None and (not _is_int(max_iter) or max_iter < 1):
        raise ValueError(f"{n('max_iter')} must be a positive integer, got {max_iter!r}")


def _namer(names: Mapping[str, str] | None) -> Callable[[str], str]:
    return lambda key: (names or {}).get(key, key)


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass
class Plan:
    """A checked run: the data (features scaled if asked), the split, the network, the settings.

    ``prepare`` makes it (every check, the data loaded); ``run`` trains it.
    ``dense_message`` says how much memory ``impl="dense"`` will take when
    that is over 100 MB.
    """

    data: Dataset
    X: NDArray[np.float64]
    split: Split
    net: MLP
    config: dict[str, Any]
    dense_message: str | None = None
    dense_budget: int | None = None  # bytes, in force for the run (None: the global budget)


def prepare(impl: str = "structured", steps: int = 100, hidden: int | None = None,
            train_rows: int | None = None, seed: int = 1234, alpha: float = 0.1,
            beta: float = 0.5, standardize: bool = False, *,
            dataset: str | Dataset = DEFAULT_DATASET, layers: Sequence[int] | None = None,
            activation: str | Sequence[str] = DEFAULT_ACTIVATION, loss: str | None = None,
            l2: float = 0.0, task: str | None = None, test_fraction: float | None = None,
            max_iter: int | None = None, dense_budget: int | None = None,
            names: Mapping[str, str] | None = None) -> Plan:
    """Check ``train``'s settings, load the data and build the network, without training.

    Takes ``train``'s parameters (see there) and ``names``, which renames
    the settings in error messages (the command line passes its options).
    Everything that can be checked without the data is checked before it is
    loaded; for ``impl="dense"`` that includes the memory budget.

    Raises
    ------
    ValueError
        A bad setting, or data that cannot be trained on (``DataError``).
    DenseMemoryError
        ``impl="dense"`` whose tensors would exceed ``dense_budget``.
    """
    n = _namer(names)
    check_config(impl, steps, hidden, train_rows, seed, alpha, beta, max_iter, names=names)
    if hidden is not None and layers is not None:
        raise ValueError(f"give {n('hidden')} or {n('layers')}, not both")
    if layers is None:
        widths = [DEFAULT_HIDDEN if hidden is None else int(hidden)]
    else:
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers \
                or not all(_is_int(k) and k >= 1 for k in layers):
            raise ValueError(f"{n('layers')} must be one or more positive integers (hidden "
                             f"widths), got {layers!r}")
        widths = [int(k) for k in layers]
    acts: str | list[str]
    if isinstance(activation, str):
        acts, act_list = activation, [activation]
    elif isinstance(activation, Sequence) and activation:
        acts = act_list = [str(a) for a in activation]
    else:
        raise ValueError(f"{n('activation')} must be a name or a list of names, "
                         f"got {activation!r}")
    for a in act_list:
        if a not in ACTIVATIONS:
            raise ValueError(f"{n('activation')} must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {a!r}")
    if not isinstance(activation, str) and len(act_list) != len(widths):
        raise ValueError(f"{n('activation')} lists one name per hidden layer: {len(widths)} "
                         f"for hidden widths {widths}, got {len(act_list)} ({acts})")
    if loss is not None and loss not in LOSSES:
        raise ValueError(f"{n('loss')} must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not (_is_number(l2) and 0 <= l2 < math.inf):
        raise ValueError(f"{n('l2')} (the L2 penalty) must be a finite number >= 0, got {l2!r}")
    if task is not None and task not in TASKS:
        raise ValueError(f"{n('task')} must be one of {', '.join(TASKS)}, got {task!r}")
    if test_fraction is not None and not (_is_number(test_fraction) and 0 < test_fraction < 1):
        raise ValueError(f"{n('test_fraction')} must lie strictly between 0 and 1, "
                         f"got {test_fraction!r}")
    if train_rows is not None and test_fraction is not None:
        raise ValueError(f"give {n('train_rows')} or {n('test_fraction')}, not both")

    # What is known before loading: rows, features, outputs (None: count the classes), task.
    data: Dataset | None
    m: int | None
    if isinstance(dataset, Dataset):
        data = dataset.with_task(task)
        name, N, d, m = data.name, data.n_rows, data.n_features, data.n_outputs
        data_task = data.task
    elif isinstance(dataset, str) and dataset in DATASETS:
        info = DATASETS[dataset]
        data, name, N, d = None, dataset, info.rows, info.features
        data_task = info.task if task is None else task
        m = info.outputs if data_task == info.task else (1 if data_task == REGRESSION else None)
    else:
        raise ValueError(f"{n('dataset')} must be one of {', '.join(DATASETS)} or a "
                         f"fastjac.data.Dataset, got {dataset!r}")
    if loss is None:
        loss = "softmax_cross_entropy" if data_task == CLASSIFICATION else "squared_error"
    elif loss in CROSS_ENTROPIES and data_task == REGRESSION:
        raise ValueError(f"{n('loss')} {loss} needs classes, but {name}'s target is a regression "
                         f"target (use {n('loss')} squared_error, or {n('task')} classification)")
    if train_rows is None and test_fraction is None and name == "breast_cancer" and data is None:
        train_rows = LECTURE_TRAIN_ROWS
    fraction: float | None = None  # the test fraction, when rows are drawn at random
    if train_rows is not None:
        if not 1 <= train_rows <= N - 1:
            raise ValueError(f"{n('train_rows')} must be an integer in 1..{N - 1} ({name} has "
                             f"{N} rows; the others are the test rows), got {train_rows!r}")
        n_train = int(train_rows)
    else:
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction)
        n_test = math.ceil(fraction * N)
        if not 1 <= n_test <= N - 1:
            raise ValueError(f"{n('test_fraction')} {fraction} of {name}'s {N} rows leaves no "
                             f"training or no test rows")
        n_train = N - n_test
    lecture_net = (len(widths) == 1 and act_list == ["logistic"] and l2 == 0
                   and loss == "softmax_cross_entropy" and data_task == CLASSIFICATION)
    dense_message = None
    if impl == "dense":
        if not lecture_net:
            raise ValueError("the dense implementation runs only the lecture's network (one "
                             "hidden layer, logistic activation, softmax cross-entropy, no L2 "
                             "penalty, a classification target); use the structured one")
        if m is not None:  # else once the classes are counted
            dense_message = check_dense_memory(n_train, widths[0], dense_budget, d, m)[1]

    if data is None:
        if name == "breast_cancer":  # through this module's name: benchmarks serve it cached
            bc = load_breast_cancer_data()
            data = from_arrays(name, bc.X, bc.targets, BREAST_CANCER_CLASSES, task)
        else:
            data = load_dataset(name, task)
    if impl == "dense" and m is None:
        dense_message = check_dense_memory(n_train, widths[0], dense_budget, d,
                                           data.n_outputs)[1]
    m = data.n_outputs
    split = split_rows(N, train_rows, fraction, seed)
    X = data.X
    if standardize:
        X = standardize_columns(X, split.train)[0]
    net = MLP([d, *widths, m], activation=acts, loss=loss, alpha=l2)
    config: dict[str, Any] = dict(
        impl=impl, steps=steps, hidden=widths[0] if len(widths) == 1 else None,
        train_rows=len(split.train), seed=seed, alpha=alpha, beta=beta, standardize=standardize,
        max_iter=max_iter, dataset=name, target=data.target_name, task=data.task,
        classes=data.classes if data.task == CLASSIFICATION else None, layers=widths,
        activation=acts, loss=loss, l2=float(l2), test_fraction=fraction, test_rows=len(split.test),
        sizes=list(net.sizes))
    return Plan(data, X, split, net, config, dense_message, dense_budget)


# ---------------------------------------------------------------- the run

def _module(impl: str) -> ModuleType:
    module: ModuleType
    if impl == "dense":
        from fastjac import dense as module
    else:
        from fastjac import structured as module
    return module


def closures(module: ModuleType, X: np.ndarray, Y: np.ndarray, classes: bool = False
             ) -> tuple[Callable[[Sequence[np.ndarray]], tuple[Any, ...]], _LineSearch]:
    """``(fg, ls)``: the lecture's network's loss-and-gradient and line search on (X, Y).

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


def r2_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``, averaged over output columns.

    scikit-learn's ``r2_score`` (uniform average, ``force_finite``): a
    column with ``SS_tot = 0`` scores 1 if predicted exactly, else 0.
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yt = yt.reshape(yt.shape[0], -1)
    yp = np.asarray(y_pred, dtype=np.float64).reshape(yt.shape)
    ss_res = ((yt - yp) ** 2).sum(axis=0)
    ss_tot = ((yt - yt.mean(axis=0)) ** 2).sum(axis=0)
    ok = ss_tot != 0
    scores = np.where(ok, 1 - ss_res / np.where(ok, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))
    return float(scores.mean())


def init_params(sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """The lecture's initialisation for any depth: ``numpy.random.seed(seed)``, then per layer
    ``random_matrix((n_{l-1}, n_l))`` (0.1 randn) and a zero (1, n_l) bias."""
    np.random.seed(seed)
    params: list[np.ndarray] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [random_matrix((fan_in, fan_out)), np.zeros((1, fan_out))]
    return params


def run(plan: Plan, *, verbose: bool = True, file: TextIO | None = None,
        callback: Callable[[Step], object] | None = None) -> History:
    """Train a ``prepare``d plan: steepest descent with block Armijo backtracking."""
    c = plan.config
    impl, steps, alpha, beta, max_iter = c["impl"], c["steps"], c["alpha"], c["beta"], c["max_iter"]
    classify = c["task"] == CLASSIFICATION
    net, split = plan.net, plan.split
    out = file if file is not None else sys.stdout
    X_train, Y_train = plan.X[split.train], plan.data.Y[split.train]
    X_test, Y_test = plan.X[split.test], plan.data.Y[split.test]
    t_train = plan.data.class_index[split.train] if classify else None
    t_test = plan.data.class_index[split.test] if classify else None
    history = History(c)
    x = init_params(net.sizes, c["seed"])

    fg: Callable[..., Any]
    ls: Callable[..., Any]
    predict_classes: Callable[[np.ndarray, Sequence[np.ndarray]], NDArray[np.int64]]
    pending: precompile.Pending | None = None
    if impl == "dense":
        module = _module(impl)
        fg, ls = closures(module, X_train, Y_train, classes=True)
        predict_classes = module.nn_predict
    else:
        # on a cold cache, the line search's kernels compile in a helper process meanwhile
        pending = precompile.line_kernels(net, X_train)
        fg = net.loss_and_gradient_closure(X_train, Y_train, classes=classify)
        ls = net.line_search_closure(X_train, Y_train)
        predict_classes = net.predict_classes

    def score(x: Sequence[np.ndarray], predicted: NDArray[np.int64] | None) -> tuple[float, float]:
        """(training accuracy, training R^2) at x; ``predicted``: the classes if known."""
        if not classify:
            return math.nan, r2_score(Y_train, net.predict(X_train, x))
        assert t_train is not None
        if predicted is None:
            predicted = predict_classes(X_train, x)
        return float(percent_correct(predicted, t_train)), math.nan

    step_format, _ = history._formats()
    start = time.perf_counter()
    # exp(-z) overflows to inf for very negative z, and 1 / (1 + inf) = 0 is the
    # right logistic value: not worth a warning on every trial step.
    with np.errstate(over="ignore"), budget.dense_budget(plan.dense_budget):
        try:
            loss, grad, *_ = fg(x)
        finally:  # the helper is waited for (and its directory removed) in any case
            if pending is not None:
                pending.finish()
        for i in range(steps):
            # Bias gradients come back (k,) (the lecture's Db_affine); blocks must match x.
            grad = [g.reshape(xi.shape) for g, xi in zip(grad, x)]
            ngrad = negate_blocks(grad)
            result = ls(x, ngrad, grad, alpha=alpha, beta=beta, max_iter=max_iter, f0=loss)
            x, fval = result
            norm = block_norm(ngrad)
            # The next step's gradient pass also gives the accuracy printed for this one.
            predicted = None
            if i + 1 < steps:
                loss, grad, *rest = fg(x)
                predicted = rest[0] if rest else None
            acc, r2 = score(x, predicted)
            record = Step(i, float(fval), float(norm), acc, float(result.t), int(result.nfev), r2)
            history.steps.append(record)
            if verbose:
                print(history.step_line(record), file=out, flush=True)
            if callback is not None:
                callback(record)
        if classify:
            assert t_test is not None
            history.test_accuracy = float(percent_correct(predict_classes(X_test, x), t_test))
        else:
            history.test_r2 = r2_score(Y_test, net.predict(X_test, x))
    history.seconds = time.perf_counter() - start
    history.params = x
    if verbose:
        print(history.final_line(), file=out, flush=True)
    return history


def train(impl: str = "structured", steps: int = 100, hidden: int | None = None,
          train_rows: int | None = None, seed: int = 1234, alpha: float = 0.1, beta: float = 0.5,
          standardize: bool = False, *, dataset: str | Dataset = DEFAULT_DATASET,
          layers: Sequence[int] | None = None, activation: str | Sequence[str] = DEFAULT_ACTIVATION,
          loss: str | None = None, l2: float = 0.0, task: str | None = None,
          test_fraction: float | None = None, max_iter: int | None = None,
          dense_budget: int | None = None, verbose: bool = True, file: TextIO | None = None,
          callback: Callable[[Step], object] | None = None) -> History:
    """Train a network by steepest descent with block Armijo backtracking; print its lines.

    With the defaults this is the lecture's run: ``numpy.random.seed(1234)``,
    W1 (30, 20), b1 = 0, W2 (20, 2), b2 = 0, 100 steps along ``-grad`` with
    alpha = 0.1, beta = 0.5 on the first 400 breast-cancer rows, tested on the
    other 169, printing the lecture's lines.

    Note the names: ``alpha`` is the **Armijo** sufficient-decrease factor
    (positional, as before), and ``l2`` the L2 penalty that scikit-learn and
    the command line call ``alpha`` (``--alpha``; the Armijo factor is
    ``--armijo-alpha`` there).

    Parameters
    ----------
    impl : {"structured", "dense"}
        ``fastjac.MLP``'s fused kernels, or ``fastjac.dense`` (the lecture's
        dense tensors; the lecture's network only; refused above
        ``dense_budget``, warned about above 100 MB with a ``DenseMemoryWarning``).
    steps : positive int
    hidden : positive int, optional
        One hidden layer of this width (default 20); or give ``layers``.
    train_rows : int, optional
        Rows ``[:train_rows]`` train, the others test (1..N-1). Default: 400
        for breast_cancer (the lecture's split), else ``test_fraction``.
    seed : int
        Seeds numpy's global generator before the weights are drawn, as the
        lecture does, and the ``test_fraction`` permutation.
    alpha, beta : float in (0, 1)
        Armijo sufficient-decrease and shrink factors.
    standardize : bool
        Scale features with the training rows' mean and std (not in the lecture).
    dataset : str or fastjac.data.Dataset
        One of ``fastjac.data.DATASETS`` (breast_cancer, digits, iris, wine,
        diabetes) or a ``Dataset`` (``fastjac.data.load_csv``, ``make_dataset``).
    layers : sequence of positive int, optional
        Hidden widths, e.g. ``[64, 32]``.
    activation : str or sequence of str
        identity, logistic (default, the lecture's), tanh or relu, for every
        hidden layer or one per hidden layer.
    loss : str, optional
        softmax_cross_entropy (default for classification),
        binary_cross_entropy, or squared_error (default for regression; a
        cross-entropy with a regression target is an error).
    l2 : float >= 0
        L2 penalty ``l2 / (2 N) sum ||W_l||^2`` (scikit-learn's ``alpha``).
    task : {"classification", "regression"}, optional
        Override the task the target's type gives.
    test_fraction : float in (0, 1), optional
        ``ceil(F N)`` test rows from ``RandomState(seed).permutation(N)``
        (default 0.25 for every data but breast_cancer); not with ``train_rows``.
    max_iter : int, optional
        Most trial steps per line search (default: ``block_backtracking``'s).
    dense_budget : int, optional
        Bytes allowed for the dense tensors (default: ``fastjac.set_dense_budget``'s,
        ``$FASTJAC_DENSE_BUDGET`` or 4 GiB); in force for the whole run.
    verbose : bool
        Print the lines to ``file`` (default ``sys.stdout``): per step the loss,
        the gradient norm and the training accuracy (or R^2), then the test's.
    callback : callable, optional
        Called with each ``Step`` after it is recorded.

    Returns
    -------
    History
        ``.steps`` (``Step``: step, loss, grad_norm, train_accuracy or train_r2,
        t, nfev), ``.test_accuracy`` or ``.test_r2``, ``.params``
        [W1, b1, ..., WL, bL], ``.config`` (every setting, the task, the class
        labels, the sizes), ``.seconds``.

    Raises
    ------
    ValueError
        A bad setting, or data that cannot be trained on (``DataError``).
    DenseMemoryError
        ``impl="dense"`` whose tensors would exceed ``dense_budget``.
    fastjac.linesearch.LineSearchError
        A line search that cannot make progress (e.g. a NaN loss).
    """
    plan = prepare(impl, steps, hidden, train_rows, seed, alpha, beta, standardize,
                   dataset=dataset, layers=layers, activation=activation, loss=loss, l2=l2,
                   task=task, test_fraction=test_fraction, max_iter=max_iter,
                   dense_budget=dense_budget)
    if plan.dense_message:
        warnings.warn(plan.dense_message, DenseMemoryWarning, stacklevel=2)
    return run(plan, verbose=verbose, file=file, callback=callback)
