"""scikit-learn estimators on ``fastjac.MLP``: ``MLPClassifier`` and ``MLPRegressor``.

Parameters, attributes, output layers and objective are scikit-learn's
``sklearn.neural_network`` ones wherever the concept is shared; the network,
its loss and gradient are ``fastjac.MLP``'s fused kernels. The objective is

    J(theta) = sum_n w_n l_n / W + alpha / (2 W) sum_l ||W_l||^2,    W = sum_n w_n (or N),

with ``l_n`` the cross-entropy of a softmax output (multi-class), the summed
binary cross-entropy of logistic outputs (binary: one output; multilabel: one
per label) or half the squared error summed over the outputs (regression).

Solvers:

* ``"lbfgs"`` (default): ``scipy.optimize.minimize(method="L-BFGS-B")`` on the
  fused loss and gradient with scikit-learn's options (``maxiter=max_iter``,
  ``maxfun=max_fun``, ``gtol=tol``, ``iprint``) and scikit-learn's parameter
  layout, so that from the same initial weights it follows scikit-learn's path
  to rounding.
* ``"armijo"``: steepest descent ``d = -g``, each step by block Armijo
  backtracking (``MLP.line_search_closure``: ``t = 1, 1/2, 1/4, ...`` until
  ``J(theta + t d) <= J(theta) + 0.1 t <d, g>``).
* ``"gauss_newton"``: ``d = -g / (diag(G) + damping)`` with ``G`` the
  Gauss-Newton matrix of J (``MLP.diag_ggn``: ``(1/W) sum_n w_n J_n^T H_n J_n``
  plus ``alpha / W`` on the weights), with the same Armijo backtracking.

scikit-learn's private helpers are used where its own MLP uses them
(parameter validation through ``_fit_context``, ``_check_sample_weight``,
``_check_optimize_result``, ``_check_partial_fit_first_call``), so errors and
warnings read as scikit-learn's. Needs scikit-learn >= 1.6
(``validate_data``, ``__sklearn_tags__``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Any, TypeVar

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from fastjac import blas
from fastjac.linesearch import LineSearchError
from fastjac.mlp import MLP

__all__ = ["MLPClassifier", "MLPRegressor", "EXPECTED_FAILED_CHECKS", "expected_failed_checks"]

Array = NDArray[np.floating]
Blocks = list[Array]  # [W1, b1 (n_1,), ..., WL, bL (n_L,)]: fastjac.MLP's order
_E = TypeVar("_E", bound="_BaseMLP")

SOLVERS = ("lbfgs", "armijo", "gauss_newton")
ITERATIVE = ("armijo", "gauss_newton")  # one Armijo step per iteration: partial_fit, early stopping
ARMIJO_ALPHA, ARMIJO_BETA = 0.1, 0.5  # the lecture's sufficient decrease and backtracking factors

try:  # scikit-learn passes iprint to L-BFGS-B only where scipy still takes it (< 1.15)
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # pragma: no cover - older scikit-learn
    def _get_additional_lbfgs_options_dict(key: str, value: Any) -> dict[str, Any]:
        return {key: value}


# scikit-learn's estimator checks these estimators fail with solver="lbfgs", and why: passed
# to ``parametrize_with_checks``/``check_estimator`` as ``expected_failed_checks``, listed in
# the README.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "MLPClassifier": {
        "check_classifiers_multilabel_output_format_predict_proba": (
            "the check wants every multilabel probability strictly inside (0, 1), but on its "
            "75 training rows L-BFGS drives some logits past 36.7, where the logistic rounds to "
            "exactly 1.0 in float64; scikit-learn's own MLPClassifier(solver='lbfgs') fails "
            "the check in the same way, and clipping the probabilities would misreport them"),
    },
    "MLPRegressor": {},
}


def expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    """``{check name: reason}`` for ``parametrize_with_checks(..., expected_failed_checks=)``:
    the reasons above, for ``solver="lbfgs"`` (the Armijo solvers pass every check)."""
    if getattr(estimator, "solver", None) != "lbfgs":
        return {}
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


class _Layout:
    """scikit-learn's flat parameter vector: ``[vec W_1, ..., vec W_L, b_1, ..., b_L]``."""

    def __init__(self, sizes: Sequence[int]) -> None:
        coefs = [(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        self.shapes: list[tuple[int, ...]] = [*coefs, *((b,) for _, b in coefs)]
        ends = np.cumsum([math.prod(s) for s in self.shapes])
        self.slices = [slice(int(e - math.prod(s)), int(e)) for s, e in zip(self.shapes, ends)]
        self.n_coefs = int(ends[len(coefs) - 1])
        self.size = int(ends[-1])
        L = len(coefs)
        self.order = [i for l in range(L) for i in (l, L + l)]  # fastjac's block i is ours order[i]

    def pack(self, blocks: Sequence[np.ndarray]) -> NDArray[np.float64]:
        """fastjac-ordered blocks to one float64 vector in scikit-learn's order."""
        x = np.empty(self.size, dtype=np.float64)
        for i, blk in zip(self.order, blocks):
            x[self.slices[i]] = np.ravel(blk)
        return x

    def unpack(self, x: np.ndarray, dtype: Any) -> Blocks:
        """A scikit-learn-ordered vector to fastjac-ordered blocks of ``dtype`` (views of x
        when it has that dtype already)."""
        x = np.asarray(x, dtype=dtype)
        return [x[self.slices[i]].reshape(self.shapes[i]) for i in self.order]


class _BaseMLP(BaseEstimator):
    """What ``MLPClassifier`` and ``MLPRegressor`` share: data, network, solvers."""

    _parameter_constraints: dict[str, list[Any]] = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions(set(SOLVERS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "damping": [Interval(Real, 0, None, closed="neither")],
        "verbose": ["verbose"],
    }
    # fitted attributes (annotations only: nothing is set before fit)
    coefs_: list[np.ndarray]
    intercepts_: list[np.ndarray]
    loss_: float
    loss_curve_: list[float]
    best_loss_: float | None
    validation_scores_: list[float] | None
    best_validation_score_: float | None
    n_iter_: int
    t_: int
    n_outputs_: int
    n_layers_: int
    out_activation_: str
    _no_improvement_count: int
    _net: MLP

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 solver: str = "lbfgs", alpha: float = 0.0001, max_iter: int = 200,
                 tol: float = 1e-4, random_state: Any = None, warm_start: bool = False,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 n_iter_no_change: int | float = 10, max_fun: int = 15000,
                 damping: float = 1e-4, verbose: bool | int = False) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.damping = damping
        self.verbose = verbose

    # ---------------------------------------------------------------- subclass hooks

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _output_layer(self) -> tuple[str, str]:
        """``(out_activation_, fastjac loss)`` of the target seen by ``fit``."""
        return "identity", "squared_error"

    # ---------------------------------------------------------------- the network

    def _hidden_sizes(self) -> list[int]:
        hidden = self.hidden_layer_sizes
        if not hasattr(hidden, "__iter__"):
            hidden = [hidden]
        hidden = list(hidden)
        if np.any(np.array(hidden) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        return [int(h) for h in hidden]

    def _blocks(self, dtype: Any = None) -> Blocks:
        """``[W_1, b_1, ..., W_L, b_L]`` from ``coefs_`` and ``intercepts_`` (b_l (n_l,))."""
        out: Blocks = []
        for W, b in zip(self.coefs_, self.intercepts_):
            out += [np.asarray(W, dtype=dtype), np.asarray(b, dtype=dtype)]
        return out

    def _set_blocks(self, blocks: Sequence[np.ndarray]) -> None:
        self.coefs_ = [np.asarray(W) for W in blocks[0::2]]
        self.intercepts_ = [np.asarray(b).reshape(-1) for b in blocks[1::2]]

    def _initial_blocks(self, net: MLP, rng: np.random.RandomState, dtype: Any) -> Blocks:
        """scikit-learn's Glorot-uniform start: ``MLP.init`` with the estimator's RandomState
        (``U(-r, r)``, ``r = sqrt(6 / (fan_in + fan_out))``, ``sqrt(2 / ...)`` for logistic)."""
        if net.n_layers == 1 and self.activation == "logistic":
            # no hidden layer: MLP.init has no activation to look at, scikit-learn still uses 2
            blocks: Blocks = []
            for a, b in zip(net.sizes[:-1], net.sizes[1:]):
                r = math.sqrt(2.0 / (a + b))
                blocks += [rng.uniform(-r, r, (a, b)), rng.uniform(-r, r, b)]
            return [blk.astype(dtype, copy=False) for blk in blocks]
        blocks = net.init(rng, dtype=dtype)
        return [blk.reshape(-1) if i % 2 else blk for i, blk in enumerate(blocks)]

    def _predict_checked(self, X: Any) -> Array:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        return self._net.predict(X, self._blocks())

    def _reported(self, net: MLP, denom: float) -> Callable[[float, float], float]:
        """``report(J, sum_l ||W_l||^2)``: the loss as scikit-learn reports it. The
        regressor's squared-error part is divided by the number of outputs m, as
        scikit-learn's ``squared_loss`` does (its gradient does not: scikit-learn#8349)."""
        m = net.sizes[-1]
        if is_classifier(self) or m == 1:
            return lambda J, sq: J
        half_alpha = 0.5 * net.alpha / denom

        def report(J: float, sq: float) -> float:
            pen = half_alpha * sq
            return (J - pen) / m + pen

        return report

    # ---------------------------------------------------------------- fit

    def _fit(self: _E, X: Any, y: Any, sample_weight: Any = None,
             incremental: bool = False) -> _E:
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        dtype = X.dtype
        w = None
        if sample_weight is not None:
            w = _check_sample_weight(sample_weight, X, dtype=dtype, ensure_non_negative=True)
        if Y.ndim == 1:
            Y = Y.reshape((-1, 1))
        Y = np.ascontiguousarray(Y, dtype=dtype)
        layer_units = [X.shape[1], *hidden, Y.shape[1]]
        out_activation, loss = self._output_layer()
        net = MLP(layer_units, activation=self.activation, loss=loss, alpha=self.alpha)
        rng = check_random_state(self.random_state)
        if first_pass:
            self.n_iter_ = 0
            self.t_ = 0
            self.n_outputs_ = Y.shape[1]
            self.n_layers_ = len(layer_units)
            self.out_activation_ = out_activation
            self._set_blocks(self._initial_blocks(net, rng, dtype))
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping and self.solver in ITERATIVE:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None
        else:
            shapes = [s for a, b in zip(layer_units[:-1], layer_units[1:]) for s in ((a, b), (b,))]
            if [np.shape(blk) for blk in self._blocks()] != shapes:
                raise ValueError(
                    f"warm_start and partial_fit continue from the fitted weights, whose layers "
                    f"{[self.coefs_[0].shape[0], *(W.shape[1] for W in self.coefs_)]} do not "
                    f"match hidden_layer_sizes={hidden} and this data ({layer_units})")
        self._net = net
        blocks = self._blocks(dtype)
        # The kernels' BLAS stays at one thread for the whole solve, not only during each
        # pass: the solver's own BLAS calls between passes (L-BFGS-B's, in the same
        # library) would otherwise wake BLAS's thread pool, whose spinning threads then
        # take a core from the next pass's chunk threads (whole fit on 100,000 rows
        # 2.3-2.4 s against 1.6 s, measured).
        with blas.single_threaded():
            if self.solver == "lbfgs":
                blocks = self._fit_lbfgs(net, X, Y, w, blocks)
            else:
                blocks = self._fit_iterative(net, X, Y, w, blocks, rng, incremental)
        if not all(np.isfinite(blk).all() for blk in blocks):
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")
        self._set_blocks(blocks)
        return self

    def _fit_lbfgs(self, net: MLP, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None,
                   blocks: Blocks) -> Blocks:
        """L-BFGS-B as scikit-learn runs it, on the fused loss and gradient. Its vector is in
        scikit-learn's order (``_Layout``), so that its rounding is scikit-learn's; each
        evaluation copies it block by block into fastjac's flat layout and the gradient
        back (no blocks reshaped and checked per call)."""
        # the data in X's dtype and a flat parameter buffer, checked and made once
        prepared = net._prepared(X, Y, w)(blocks)
        layout = _Layout(net.sizes)
        dtype = X.dtype
        nc = layout.n_coefs
        report = self._reported(net, float(X.shape[0] if w is None else w.sum()))
        n_rows = X.shape[0]
        # each block's (fastjac's slice, scikit-learn's slice)
        pairs = [(slice(a, b), layout.slices[i]) for (a, b, _), i in zip(net._views, layout.order)]
        theta = prepared.theta

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            for fj, sk in pairs:
                theta[fj] = x[sk]
            loss, g = net._fused_loss_and_gradient(prepared, theta)
            out = np.empty(layout.size)
            for fj, sk in pairs:
                out[sk] = g[fj]
            return loss, out

        def callback(intermediate_result: scipy.optimize.OptimizeResult) -> None:
            x = intermediate_result.x
            self.loss_curve_.append(report(float(intermediate_result.fun),
                                           float(np.dot(x[:nc], x[:nc]))))
            self.t_ += n_rows
            if self.verbose:
                print(f"Iteration {len(self.loss_curve_)}, loss = {self.loss_curve_[-1]:.8f}")

        iprint = 1 if self.verbose is True or self.verbose >= 1 else -1
        res = scipy.optimize.minimize(
            fun, layout.pack(blocks), method="L-BFGS-B", jac=True, callback=callback,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                     **_get_additional_lbfgs_options_dict("iprint", iprint)})
        self.n_iter_ = _check_optimize_result("lbfgs", res, self.max_iter)
        self.loss_ = report(float(res.fun), float(np.dot(res.x[:nc], res.x[:nc])))
        self.best_loss_ = min(self.loss_curve_, default=self.loss_)
        return layout.unpack(res.x.copy(), dtype)

    def _direction(self, net: MLP, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None,
                   blocks: Blocks, grads: Blocks) -> Blocks:
        """``-g`` (armijo) or ``-g / (diag(G) + damping)`` (gauss_newton)."""
        if self.solver == "armijo":
            return [-g for g in grads]
        D = net.diag_ggn(X, Y, blocks) if w is None else _weighted_diag_ggn(net, X, Y, w, blocks)
        return [-g / (d + self.damping) for g, d in zip(grads, D)]

    def _fit_iterative(self, net: MLP, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None,
                       blocks: Blocks, rng: np.random.RandomState, incremental: bool) -> Blocks:
        """Armijo steps until max_iter, tol / n_iter_no_change, or no step is accepted."""
        early_stopping = self.early_stopping
        X_val = y_val = w_val = None
        if early_stopping:
            stratify = Y if is_classifier(self) and self.n_outputs_ == 1 else None
            arrays = (X, Y) if w is None else (X, Y, w)
            split = train_test_split(*arrays, random_state=rng, test_size=self.validation_fraction,
                                     stratify=stratify)
            X, X_val, Y, Y_val = split[:4]
            if w is not None:
                w, w_val = split[4:]
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                                 "or the size of your dataset.")
            y_val = self._targets(Y_val)
        fg = net.loss_and_gradient_closure(X, Y, sample_weight=w)
        ls = net.line_search_closure(X, Y, sample_weight=w)
        report = self._reported(net, float(X.shape[0] if w is None else w.sum()))
        best = [blk.copy() for blk in blocks] if early_stopping else None
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            loss, grads = fg(blocks)
            if not math.isfinite(loss):
                raise ValueError(f"The loss at the current weights is not finite ({loss}). The "
                                 f"input data may contain large values and need to be "
                                 f"preprocessed.")
            if not any(np.any(g) for g in grads):
                break  # a stationary point: nothing left to do
            step = self._direction(net, X, Y, w, blocks, grads)
            try:
                res = ls(blocks, step, grads, ARMIJO_ALPHA, ARMIJO_BETA, f0=loss)
            except LineSearchError as exc:
                warnings.warn(f"{self.solver}: the Armijo line search accepted no step after "
                              f"{self.n_iter_} iteration(s) ({exc}); stopping. The loss no "
                              f"longer decreases measurably along the search direction.",
                              ConvergenceWarning, stacklevel=3)
                break
            blocks = res.x
            self.n_iter_ += 1
            self.t_ += X.shape[0]
            self.loss_ = report(float(res.fx), sum(float(np.vdot(W, W)) for W in blocks[0::2]))
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if self._update_no_improvement_count(net, blocks, X_val, y_val, w_val):
                assert best is not None
                best = [blk.copy() for blk in blocks]
            if self._no_improvement_count > self.n_iter_no_change:
                if self.verbose:
                    what = "Validation score" if early_stopping else "Training loss"
                    print(f"{what} did not improve more than tol={self.tol:f} for "
                          f"{self.n_iter_no_change} consecutive iterations. Stopping.")
                break
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(f"{self.solver}: Maximum iterations ({self.max_iter}) reached and "
                              f"the optimization hasn't converged yet.", ConvergenceWarning,
                              stacklevel=3)
        if early_stopping:
            assert best is not None
            blocks = best
        return blocks

    def _update_no_improvement_count(self, net: MLP, blocks: Blocks, X_val: np.ndarray | None,
                                     y_val: np.ndarray | None, w_val: np.ndarray | None) -> bool:
        """scikit-learn's bookkeeping for ``tol`` and ``n_iter_no_change``; True when the
        validation score is a new best (early stopping)."""
        if X_val is None:
            last = self.loss_curve_[-1]
            if self.best_loss_ is None:  # fitted with early stopping, now continued without
                self.best_loss_ = math.inf
            if last > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last < self.best_loss_:
                self.best_loss_ = last
            return False
        assert y_val is not None
        if self.validation_scores_ is None or self.best_validation_score_ is None:
            self.validation_scores_, self.best_validation_score_ = [], -math.inf
        F = net.predict(X_val, blocks)
        score = (float("nan") if not np.all(np.isfinite(F))
                 else self._score_outputs(F, y_val, w_val))
        self.validation_scores_.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            return True
        return False

    def _targets(self, Y: np.ndarray) -> np.ndarray:
        """Validation targets in the form ``_score_outputs`` compares to."""
        return Y

    def _score_outputs(self, F: Array, y: np.ndarray, w: np.ndarray | None) -> float:
        raise NotImplementedError

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self: _E, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> _E:
        """Fit the network to X (N, d) and y (N,) or (N, m), rows weighted by sample_weight (N,).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self) -> bool:
        if self.solver not in ITERATIVE:
            raise AttributeError(f"partial_fit is only available for the solvers "
                                 f"{', '.join(map(repr, ITERATIVE))}; {self.solver!r} is not one.")
        return True

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


def _weighted_diag_ggn(net: MLP, X: np.ndarray, Y: np.ndarray, w: np.ndarray,
                       blocks: Blocks, rows: int = 2048) -> Blocks:
    """diag ``G = (1/W) sum_n w_n J_n^T H_n J_n`` (+ ``alpha / W`` on the weights) per block.

    From the factored per-example Jacobians of the logits (``MLP.jacobian_params``:
    ``dz / dW_l = a_{l-1} (x) B_l``, B_l (m, n_l)), ``rows`` rows at a time:
    ``diag = (1/W) (A o A)^T (w o q)`` for W_l and ``(1/W) w^T q`` for b_l, with
    ``q_j = B_j^T H B_j``: ``sum_k B_kj^2`` (squared error), ``sum_k p_k (1 - p_k) B_kj^2``
    (binary cross-entropy), ``sum_k p_k B_kj^2 - (sum_k p_k B_kj)^2`` (softmax).
    ``MLP.diag_ggn`` is this with all ``w_n = 1``.
    """
    out = [np.zeros(np.shape(blk), dtype=np.float64) for blk in blocks]
    for start in range(0, X.shape[0], rows):
        Xc, wc = X[start:start + rows], w[start:start + rows]
        Fj = net.jacobian_params(Xc, blocks, factored=True)
        P = net.predict(Xc, blocks)[:, :, None]  # (n, m, 1)
        for l, (a, B) in enumerate(zip(Fj.a, Fj.B)):
            if net.loss == "squared_error":
                q = np.einsum("nkj,nkj->nj", B, B)
            elif net.loss == "binary_cross_entropy":
                q = np.einsum("nkj,nkj->nj", P * (1 - P) * B, B)
            else:
                q = np.einsum("nkj,nkj->nj", P * B, B) - np.einsum("nkj->nj", P * B) ** 2
            wq = wc[:, None] * q
            out[2 * l] += (a * a).T @ wq
            out[2 * l + 1] += wq.sum(axis=0)
    W = float(w.sum())
    dtype = np.result_type(X, *blocks)
    result = [(o / W).astype(dtype) for o in out]
    for l in range(net.n_layers):
        result[2 * l] += net.alpha / W
    return result


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier on ``fastjac.MLP`` (scikit-learn's estimator API).

    Output layers as scikit-learn's: multi-class targets a softmax with the
    cross-entropy; binary targets one logistic output, multilabel targets one
    logistic output per label, each with the binary cross-entropy. The objective
    ``sum_n w_n l_n / W + alpha / (2 W) sum_l ||W_l||^2`` is scikit-learn's.

    Parameters
    ----------
    hidden_layer_sizes : int or array-like of int, default=(100,)
        Widths of the hidden layers.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        Activation of every hidden layer.
    solver : {"lbfgs", "armijo", "gauss_newton"}, default="lbfgs"
        ``"lbfgs"``: scipy's L-BFGS-B with scikit-learn's options; ``"armijo"``:
        steepest descent ``-g`` with block Armijo backtracking (``t = 1, 1/2, ...``,
        sufficient decrease 0.1); ``"gauss_newton"``: steps ``-g / (diag(G) + damping)``
        with the same backtracking (module docstring).
    alpha : float >= 0, default=1e-4
        L2 penalty ``alpha / (2 W) sum_l ||W_l||^2``.
    max_iter : int, default=200
        Iterations: L-BFGS-B's ``maxiter``, or Armijo steps.
    tol : float, default=1e-4
        lbfgs: ``gtol`` (stop when the projected gradient's max-norm is <= tol).
        armijo, gauss_newton: stop when the loss (or, with early_stopping, the
        validation score) has not improved by at least tol for
        ``n_iter_no_change`` consecutive iterations.
    random_state : int, RandomState instance or None, default=None
        Initial weights (scikit-learn's Glorot-uniform draws) and the
        early-stopping split.
    warm_start : bool, default=False
        Continue from the fitted weights (same classes).
    early_stopping : bool, default=False
        armijo, gauss_newton: hold out ``validation_fraction`` of the rows
        (stratified for binary targets), stop on its accuracy, keep the best
        weights. Ignored by lbfgs, as in scikit-learn.
    validation_fraction : float in [0, 1), default=0.1
    n_iter_no_change : int or inf, default=10
    max_fun : int, default=15000
        lbfgs: maximum number of loss evaluations (``maxfun``).
    damping : float > 0, default=1e-4
        gauss_newton: added to the Gauss-Newton diagonal before dividing, so
        that directions of no curvature get a finite step.
    verbose : bool or int, default=False
        Print each iteration's loss.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    coefs_ : list of ndarray (n_{l-1}, n_l)
    intercepts_ : list of ndarray (n_l,)
    loss_ : float
        The loss at the final weights.
    loss_curve_ : list of float
        The loss after each iteration (every solver, lbfgs included).
    best_loss_ : float or None
        The smallest loss seen (None with early stopping).
    validation_scores_ : list of float or None
        Early stopping: the held-out accuracy after each iteration.
    best_validation_score_ : float or None
    n_iter_ : int
        Iterations run by the last ``fit`` (1 after ``partial_fit``).
    t_ : int
        Training rows seen by the solver: N per iteration, over every fit.
    n_layers_ : int
        Layers including input and output (hidden + 2).
    n_outputs_ : int
        Output units: 1 (binary), n_classes (multi-class) or n_labels.
    out_activation_ : {"softmax", "logistic"}
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier((64,), random_state=0, max_iter=100).fit(X / 16, y)
    >>> clf.predict_proba(X[:2] / 16).shape
    (2, 10)
    """

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, multi_output=True, dtype=(np.float64, np.float32),
                             reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # scikit-learn's MLPClassifier: new classes unless warm_start or partial_fit continue
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(X.dtype)

    def _output_layer(self) -> tuple[str, str]:
        if self._label_binarizer.y_type_ == "multiclass":
            return "softmax", "softmax_cross_entropy"
        return "logistic", "binary_cross_entropy"

    def _targets(self, Y: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(Y)

    def _labels(self, F: Array) -> np.ndarray:
        return self._label_binarizer.inverse_transform(F.ravel() if self.n_outputs_ == 1 else F)

    def _score_outputs(self, F: Array, y: np.ndarray, w: np.ndarray | None) -> float:
        return float(accuracy_score(y, self._labels(F), sample_weight=w))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Class labels (N,), or the label indicator matrix (N, n_labels) for multilabel."""
        return self._labels(self._predict_checked(X))

    def predict_proba(self, X: ArrayLike) -> Array:
        """Probabilities (N, n_classes) in the order of ``classes_``: softmax rows
        (multi-class), ``[1 - p, p]`` (binary) or per-label p (multilabel)."""
        F = self._predict_checked(X)
        if self.n_outputs_ == 1:
            return np.hstack([1 - F, F])
        return F

    def predict_log_proba(self, X: ArrayLike) -> Array:
        """``log(predict_proba(X))`` (N, n_classes); -inf where a probability underflows to 0."""
        P = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(P, out=P)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                    classes: ArrayLike | None = None) -> MLPClassifier:
        """One Armijo step (armijo or gauss_newton direction) on the batch (X, y).

        ``classes`` (all labels) is required on the first call, as in scikit-learn.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor on ``fastjac.MLP`` (scikit-learn's estimator API).

    Identity outputs, one per target column, and the objective
    ``(1/W) sum_n w_n 0.5 ||y_n - F_n||^2 + alpha / (2 W) sum_l ||W_l||^2``, whose
    gradient is scikit-learn's. ``loss_``, ``loss_curve_`` and ``best_loss_``
    report the loss as scikit-learn does: with m > 1 outputs the squared-error
    part divided by m (scikit-learn#8349: its gradient is not divided by m). With
    one output the two agree.

    Parameters and attributes are ``MLPClassifier``'s (``n_outputs_``: the number
    of target columns; ``out_activation_ = "identity"``; early stopping scores
    R^2), without ``classes_`` and probabilities, plus ``loss="squared_error"``
    (keyword only; scikit-learn's other choice, ``"poisson"``, is not offered).

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = MLPRegressor((32,), random_state=0, max_iter=500).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    """

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 solver: str = "lbfgs", alpha: float = 0.0001, max_iter: int = 200,
                 tol: float = 1e-4, random_state: Any = None, warm_start: bool = False,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 n_iter_no_change: int | float = 10, max_fun: int = 15000,
                 damping: float = 1e-4, verbose: bool | int = False,
                 loss: str = "squared_error") -> None:
        self.loss = loss
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, activation=activation,
                         solver=solver, alpha=alpha, max_iter=max_iter, tol=tol,
                         random_state=random_state, warm_start=warm_start,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, max_fun=max_fun, damping=damping,
                         verbose=verbose)

    _parameter_constraints: dict[str, list[Any]] = {
        **_BaseMLP._parameter_constraints, "loss": [StrOptions({"squared_error"})]}

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _score_outputs(self, F: Array, y: np.ndarray, w: np.ndarray | None) -> float:
        return float(r2_score(y, F, sample_weight=w))

    def predict(self, X: ArrayLike) -> Array:
        """Predicted values (N,) for one output, (N, m) for m > 1."""
        F = self._predict_checked(X)
        return F.ravel() if F.shape[1] == 1 else F

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: ArrayLike, y: ArrayLike,
                    sample_weight: ArrayLike | None = None) -> MLPRegressor:
        """One Armijo step (armijo or gauss_newton direction) on the batch (X, y)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
