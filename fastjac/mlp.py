"""``MLP``: a multilayer perceptron of any depth, with scikit-learn's activations and losses.

``MLP(sizes, activation, loss, alpha)`` describes the network
``Z_l = A_{l-1} W_l + b_l``, ``A_l = f_l(Z_l)`` from ``A_0 = X`` (N, n_0) to
the logits ``Z_L`` (N, m), whose loss (``fastjac.losses``) is averaged over
the rows with weights w (default all ones), ``W = sum(w)``, plus
``alpha / (2 W) sum_l ||W_l||^2`` (weights only): scikit-learn's
``MLPClassifier``/``MLPRegressor`` objective exactly. Parameters are the list
``[W_1, b_1, ..., W_L, b_L]``, W_l (n_{l-1}, n_l), b_l (1, n_l) or (n_l,);
gradients come back as W_l (n_{l-1}, n_l), b_l (n_l,).

Three routes give one answer: the fused kernels (``fastjac.fused``, the
default), the chain rule over structured Jacobians and over the lecture's
dense tensors (``fastjac.backprop``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastjac import activations, fused, losses
from fastjac._validate import as_float
from fastjac.linesearch import (
    LineSearchResult,
    armijo_backtrack,
    armijo_setup,
    check_start,
    no_step_error,
    update_blocks,
)

Params = Sequence[Any]  # [W1, b1, ..., WL, bL]: arrays or array-likes


class _Args(NamedTuple):
    """What a closure's call works on (``MLP._prepared``)."""

    X: np.ndarray
    Y: np.ndarray | None
    w: np.ndarray | None
    theta: np.ndarray
    denom: float
    run: fused.NetworkPass
Grads = list[NDArray[np.floating]]
IMPLS = ("fused", "structured", "dense")


class MLP:
    """A multilayer perceptron: widths, hidden activations, loss and L2 penalty.

    Parameters
    ----------
    sizes : sequence of int, ``[n_0, n_1, ..., n_L]``
        Input width, hidden widths, number of outputs m (at least 2 entries).
    activation : str or sequence of str
        scikit-learn's ``"identity"``, ``"logistic"``, ``"tanh"`` or ``"relu"``,
        for every hidden layer or one per hidden layer.
    loss : str
        ``"softmax_cross_entropy"``, ``"binary_cross_entropy"`` or
        ``"squared_error"`` (``fastjac.losses``).
    alpha : float >= 0
        L2 penalty ``alpha / (2 W) sum_l ||W_l||^2`` on the weights.

    Examples
    --------
    >>> net = MLP([30, 20, 2], activation="logistic")   # the lecture's network
    >>> params = net.init(seed=0)
    >>> fg = net.loss_and_gradient_closure(X, Y)
    >>> loss, grads = fg(params)
    """

    def __init__(self, sizes: Sequence[int], activation: str | Sequence[str] = "relu",
                 loss: str = "softmax_cross_entropy", alpha: float = 0.0) -> None:
        try:
            widths = tuple(int(n) for n in sizes)
            ok = len(widths) >= 2 and all(n == s and n >= 1 for n, s in zip(widths, sizes))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"sizes must be at least two positive integers [n_0, ..., n_L], "
                             f"got {sizes!r}")
        hidden = len(widths) - 2
        if isinstance(activation, str) or not isinstance(activation, Sequence):
            names = (activation,) * hidden
        else:
            names = tuple(activation)
            if len(names) != hidden:
                raise ValueError(f"activation lists one name per hidden layer: {hidden} for "
                                 f"sizes {list(widths)}, got {len(names)}")
        self.activations = tuple(activations.get(a).name for a in names)
        self.loss = losses.get(loss).name
        if not (isinstance(alpha, (int, float, np.integer, np.floating))
                and not isinstance(alpha, bool) and 0 <= alpha < math.inf):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.sizes = widths
        self._sizes = np.array(widths, dtype=np.int64)
        codes = [activations.ACTIVATIONS[a].code for a in self.activations]
        self._acts = np.array(codes or [activations.IDENTITY], dtype=np.int64)
        self._mode = codes[0] if len(set(codes)) == 1 else (
            activations.IDENTITY if not codes else activations.MIXED)
        self._loss = losses.LOSSES[self.loss].code
        self._offs = fused.layout_offsets(widths)
        self._views = [(int(self._offs[i]), int(self._offs[i + 1]),
                        (widths[i // 2], widths[i // 2 + 1]) if i % 2 == 0 else (widths[i // 2 + 1],))
                       for i in range(2 * (len(widths) - 1))]
        self._weights = [slice(a, b) for a, b, _ in self._views[0::2]]  # W_l in the flat layout

    # ---------------------------------------------------------------- description

    @property
    def n_layers(self) -> int:
        """L, the number of affine layers (hidden layers + 1)."""
        return len(self.sizes) - 1

    @property
    def n_params(self) -> int:
        """Number of parameters, ``sum_l (n_{l-1} + 1) n_l``."""
        return int(self._offs[-1])

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Shapes of ``[W_1, b_1, ..., W_L, b_L]`` as ``init`` makes them (b_l (1, n_l))."""
        out: list[tuple[int, ...]] = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            out += [(a, b), (1, b)]
        return out

    def __repr__(self) -> str:
        act = self.activations[0] if len(set(self.activations)) == 1 else list(self.activations)
        return (f"MLP({list(self.sizes)}, activation={act!r}, loss={self.loss!r}, "
                f"alpha={self.alpha!r})")

    def init(self, seed: int | np.random.RandomState | None = None,
             dtype: DTypeLike = np.float64) -> list[NDArray[np.floating]]:
        """Glorot-uniform parameters, as scikit-learn's MLP draws them.

        For each layer in order ``W_l`` then ``b_l`` from ``U(-r, r)``,
        ``r = sqrt(6 / (n_{l-1} + n_l))`` (``sqrt(2 / ...)`` when every hidden
        layer is logistic), drawn with ``numpy.random.RandomState(seed)``: the
        numbers scikit-learn's estimators start from with ``random_state=seed``.
        b_l has shape (1, n_l).
        """
        rng = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)
        logistic = bool(self.activations) and set(self.activations) == {"logistic"}
        factor = 2.0 if logistic else 6.0  # scikit-learn's, for every layer
        params: list[NDArray[np.floating]] = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            bound = math.sqrt(factor / (fan_in + fan_out))
            params.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
            params.append(rng.uniform(-bound, bound, (1, fan_out)).astype(dtype))
        return params

    # ---------------------------------------------------------------- arguments

    def _data(self, X: ArrayLike, Y: ArrayLike | None, sample_weight: ArrayLike | None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """X (N, n_0), Y (N, m) and sample_weight (N,) checked, as float arrays."""
        X = as_float(X, "X", 2)
        if X.shape[1] != self.sizes[0]:
            raise ValueError(f"X has {X.shape[1]} columns (shape {X.shape}) but the network "
                             f"takes {self.sizes[0]} inputs (sizes {list(self.sizes)})")
        Yf = None
        if Y is not None:
            Yf = as_float(Y, "Y", 2)
            if Yf.shape[0] != X.shape[0]:
                raise ValueError(f"X and Y must have the same number of rows, got X {X.shape} "
                                 f"and Y {Yf.shape}")
            if Yf.shape[1] != self.sizes[-1]:
                raise ValueError(f"Y has {Yf.shape[1]} columns but the network has "
                                 f"{self.sizes[-1]} outputs (sizes {list(self.sizes)})")
            if X.shape[0] == 0:
                raise ValueError("X and Y have no rows (N=0): the mean loss is undefined")
        w = None
        if sample_weight is not None:
            w = as_float(sample_weight, "sample_weight", 1)
            if w.shape != (X.shape[0],):
                raise ValueError(f"sample_weight must have shape ({X.shape[0]},) to match X "
                                 f"{X.shape}, got {w.shape}")
            if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
                raise ValueError("sample_weight must be finite and >= 0, with a positive sum")
        return X, Yf, w

    def _blocks(self, params: Params) -> list[np.ndarray]:
        """The parameter blocks checked against the network: W_l (n_{l-1}, n_l), b_l (1, n_l)
        or (n_l,), as float arrays."""
        L = self.n_layers
        if len(params) != 2 * L:
            raise ValueError(f"params must be the {2 * L} blocks [W1, b1, ..., W{L}, b{L}] "
                             f"of {self!r}, got {len(params)} blocks")
        blocks = []
        for l in range(1, L + 1):
            W = as_float(params[2 * l - 2], f"W{l}", 2)
            b = as_float(params[2 * l - 1], f"b{l}")
            n_in, n_out = self.sizes[l - 1], self.sizes[l]
            if W.shape != (n_in, n_out):
                raise ValueError(f"W{l} must have shape ({n_in}, {n_out}) for sizes "
                                 f"{list(self.sizes)}, got {W.shape}")
            if b.shape not in ((1, n_out), (n_out,)):
                raise ValueError(f"b{l} must have shape (1, {n_out}) or ({n_out},), got {b.shape}")
            blocks += [W, b]
        return blocks

    def pack(self, params: Params, dtype: DTypeLike | None = None) -> NDArray[np.floating]:
        """The blocks checked and laid out back to back in one flat array (``fastjac.fused``)."""
        blocks = self._blocks(params)
        dtype = np.result_type(*blocks) if dtype is None else dtype
        theta = np.empty(self.n_params, dtype=dtype)
        for i, blk in enumerate(blocks):
            theta[self._offs[i]:self._offs[i + 1]] = blk.ravel()
        return theta

    def unpack(self, theta: np.ndarray) -> Grads:
        """Views ``[W_1 (n_0, n_1), b_1 (n_1,), ...]`` of a flat array laid out as ``pack``'s."""
        return [theta[a:b].reshape(shape) for a, b, shape in self._views]

    def _prepared(self, X: ArrayLike, Y: ArrayLike | None, sample_weight: ArrayLike | None
                  ) -> Callable[[Params], _Args]:
        """``args(params) -> _Args``: the data contiguous in the blocks' and data's result
        dtype (converted once per dtype), the blocks packed into one flat array, the
        weight sum W (N without weights) and the ``fused.NetworkPass`` for these rows.

        Blocks are checked on the first call; a later call whose blocks have the
        same types, shapes and dtypes would pass the same checks, so they are
        skipped (a few microseconds a call at the lecture's size).
        """
        X0, Y0, w0 = self._data(X, Y, sample_weight)
        denom = float(X0.shape[0] if w0 is None else w0.sum())
        data: dict[np.dtype, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = {}
        passes: list[fused.NetworkPass] = []
        checked: dict[tuple[Any, ...], np.dtype] = {}
        base = np.result_type(X0, *(() if Y0 is None else (Y0,)))

        views = self._views

        def args(params: Params) -> _Args:
            key = tuple([(p.shape, p.dtype) if type(p) is np.ndarray else None for p in params])
            dtype = checked.get(key)
            if dtype is None:
                dtype = np.result_type(base, *self._blocks(params))
                if None not in key:
                    checked[key] = dtype
                params = self._blocks(params)
            if dtype not in data:
                data[dtype] = (np.ascontiguousarray(X0, dtype=dtype),
                               None if Y0 is None else np.ascontiguousarray(Y0, dtype=dtype),
                               None if w0 is None else np.ascontiguousarray(w0, dtype=dtype))
            Xc, Yc, wc = data[dtype]
            theta = np.empty(views[-1][1], dtype=dtype)
            for (a, b, _), blk in zip(views, params):
                theta[a:b] = blk.ravel()
            if not passes:
                passes.append(fused.NetworkPass(X0.shape[0], self._sizes, self._mode, self._acts,
                                                self._loss))
            return _Args(Xc, Yc, wc, theta, denom, passes[0])

        return args

    def penalty(self, theta: np.ndarray, denom: float) -> float:
        """``alpha / (2 W) sum_l ||W_l||^2`` of flat parameters."""
        if self.alpha == 0:
            return 0.0
        total = 0.0
        for s in self._weights:
            Wl = theta[s]
            total += float(np.dot(Wl, Wl))
        return 0.5 * self.alpha * total / denom

    def _add_penalty_gradient(self, theta: np.ndarray, g: np.ndarray, denom: float) -> None:
        if self.alpha == 0:
            return
        c = self.alpha / denom
        for s in self._weights:
            g[s] += c * theta[s]

    # ---------------------------------------------------------------- the fused route

    def _fused_loss_and_gradient(self, a: _Args, theta: np.ndarray,
                                 classes: NDArray[np.int64] | None = None
                                 ) -> tuple[float, np.ndarray]:
        """``(loss, g)`` at flat parameters ``theta`` (``pack``'s layout, ``a.X``'s dtype,
        contiguous; not checked): one fused pass over ``a``'s rows plus the L2 penalty;
        g flat as theta."""
        total, g, _ = a.run(a.X, a.Y, a.w, theta, with_grad=True, denom=a.denom, classes=classes)
        assert g is not None
        self._add_penalty_gradient(theta, g, a.denom)
        return float(total / a.denom) + self.penalty(theta, a.denom), g

    def loss_and_gradient_closure(self, X: ArrayLike, Y: ArrayLike, *,
                                  sample_weight: ArrayLike | None = None,
                                  classes: bool = False) -> Callable[..., Any]:
        """``fg(params) -> (loss, grads)`` by the fused kernels, in one pass over the rows.

        With ``classes=True``, ``fg`` also returns each row's argmax of the
        logits (N,) int64 from the same pass.
        """
        args = self._prepared(X, Y, sample_weight)

        def fg(params: Params) -> Any:
            a = args(params)
            predicted = np.empty(a.X.shape[0], dtype=np.int64) if classes else None
            loss, g = self._fused_loss_and_gradient(a, a.theta, predicted)
            return (loss, self.unpack(g), predicted) if classes else (loss, self.unpack(g))

        return fg

    def loss_closure(self, X: ArrayLike, Y: ArrayLike, *, sample_weight: ArrayLike | None = None,
                     impl: str = "fused") -> Callable[[Params], float]:
        """``f(params) -> loss``: by the fused kernels (``impl="fused"``), or the textbook
        formulas over the dense or structured forward pass (``"dense"``, ``"structured"``)."""
        _check_impl(impl)
        if impl != "fused":
            from fastjac import backprop

            return backprop.loss_closure(self, X, Y, sample_weight, impl)
        args = self._prepared(X, Y, sample_weight)

        def f(params: Params) -> float:
            Xc, Yc, wc, theta, denom, run = args(params)
            total = run(Xc, Yc, wc, theta, with_grad=False)[0]
            return float(total / denom) + self.penalty(theta, denom)

        return f

    def loss_gradient_closure(self, X: ArrayLike, Y: ArrayLike, impl: str = "structured", *,
                              sample_weight: ArrayLike | None = None) -> Callable[[Params], Grads]:
        """``df(params) -> grads`` by the chain rule: over structured Jacobians
        (``impl="structured"``) or the lecture's dense tensors (``"dense"``, small N:
        checked against ``fastjac.set_dense_budget``); ``"fused"``: the fused pass."""
        _check_impl(impl)
        if impl == "fused":
            fg = self.loss_and_gradient_closure(X, Y, sample_weight=sample_weight)
            return lambda params: fg(params)[1]
        from fastjac import backprop

        return backprop.gradient_closure(self, X, Y, sample_weight, impl)

    def line_search_closure(self, X: ArrayLike, Y: ArrayLike, *,
                            sample_weight: ArrayLike | None = None) -> Callable[..., LineSearchResult]:
        """``ls(x0, dx, df0, alpha=0.1, beta=0.5, max_iter=None, *, f0=None)``: block Armijo
        backtracking on the loss, as ``block_backtracking(x0, loss_closure(X, Y), dx, df0, ...)``.

        It accepts the same step (same ``t`` and ``nfev``; ``x`` built by
        ``update_blocks``). When it pays (``fastjac.fused.precompute_line``)
        and every block has the data's dtype, the first layer along the line,
        ``X W_1 + b_1 + t (X dW_1 + db_1)``, is computed once, and trials are
        evaluated in batches (each block of rows at several steps while in
        cache): ``fx`` then equals the loss at the accepted point to rounding.
        Otherwise each trial is one fused loss at ``update_blocks``' point.
        """
        f = self.loss_closure(X, Y, sample_weight=sample_weight)
        args = self._prepared(X, Y, sample_weight)
        state: dict[str, Any] = {"batch": 1, "line": None}

        def ls(x0: Params, dx: Params, df0: Params, alpha: float = 0.1, beta: float = 0.5,
               max_iter: int | None = None, *, f0: float | None = None) -> LineSearchResult:
            delta, max_iter = armijo_setup(x0, dx, df0, alpha, beta, max_iter)
            Xc, Yc, wc, theta, denom, _ = args(x0)
            # one dtype throughout, so that theta + t dtheta rounds as update_blocks' x
            one_dtype = all(np.asarray(b).dtype == theta.dtype for b in (*x0, *dx))
            if not (one_dtype and fused.precompute_line(Xc.shape[0], self.sizes)):
                def trial(t: float) -> tuple[list[Any], float]:
                    x = update_blocks(x0, dx, t)
                    return x, f(x)

                return armijo_backtrack(f(x0) if f0 is None else f0, delta, beta, max_iter, trial)
            dtheta = self.pack(dx, dtype=theta.dtype)
            assert Yc is not None
            line = state["line"]
            if line is None or line.X is not Xc:
                line = state["line"] = fused.LineLoss(Xc, Yc, wc, self._sizes, self._mode,
                                                      self._acts, self._loss, theta, dtheta)
            else:
                line.move_to(theta, dtheta)

            def losses_at(ts: list[float]) -> list[float]:
                sums = line.sums(ts)
                return [s / denom + self.penalty(line.thetas[q], denom) for q, s in enumerate(sums)]

            if f0 is None:
                f0 = losses_at([0.0])[0]
            check_start(f0)
            i, t, K = 1, 1.0, min(state["batch"], max_iter, fused.LineLoss.MAX_BATCH)
            fx = math.nan
            while True:
                ts = [t]
                for _ in range(K - 1):
                    ts.append(beta * ts[-1])
                for q, fx in enumerate(losses_at(ts)):
                    if math.isfinite(fx) and fx <= f0 + ts[q] * delta:
                        state["batch"] = i + q
                        x = update_blocks(x0, dx, ts[q])
                        return LineSearchResult(x, fx, ts[q], i + q + 1)
                i += K
                t = beta * ts[-1]
                if i > max_iter:
                    raise no_step_error(max_iter, ts[-1], f0, fx)
                K = min(2, max_iter - i + 1)

        return ls

    # ---------------------------------------------------------------- outputs

    def predict(self, X: ArrayLike, params: Params) -> NDArray[np.floating]:
        """The network's outputs F (N, m): softmax probabilities, logistic probabilities or
        values (squared error), by a fused forward pass."""
        Xc, _, _, theta, _, run = self._prepared(X, None, None)(params)
        return run(Xc, None, None, theta, with_grad=False, outputs=True)[2]  # type: ignore[return-value]

    def predict_classes(self, X: ArrayLike, params: Params) -> NDArray[np.int64]:
        """Each row's argmax of the logits (= of the outputs), (N,) int64, first on ties."""
        Xc, _, _, theta, _, run = self._prepared(X, None, None)(params)
        classes = np.empty(Xc.shape[0], dtype=np.int64)
        run(Xc, None, None, theta, with_grad=False, classes=classes)
        return classes


    # ---------------------------------------------------------------- per-example and curvature

    def per_example_gradients(self, X: ArrayLike, Y: ArrayLike, params: Params) -> Grads:
        """``grad l_n`` of every row's own loss: blocks ``(N, *block)`` (``fastjac.curvature``)."""
        from fastjac import curvature

        return curvature.per_example_gradients(self, X, Y, params)

    def per_example_gradient_norms(self, X: ArrayLike, Y: ArrayLike, params: Params
                                   ) -> NDArray[np.floating]:
        """``|grad l_n|`` (N,), never forming the per-example gradients."""
        from fastjac import curvature

        return curvature.per_example_gradient_norms(self, X, Y, params)

    def sum_grad_squared(self, X: ArrayLike, Y: ArrayLike, params: Params) -> Grads:
        """``sum_n (grad l_n)^2`` per block."""
        from fastjac import curvature

        return curvature.sum_grad_squared(self, X, Y, params)

    def diag_ggn(self, X: ArrayLike, Y: ArrayLike, params: Params, mc_samples: int | None = None,
                 seed: Any = None) -> Grads:
        """The diagonal of the mean loss's Gauss-Newton matrix per block; exact, or Monte Carlo."""
        from fastjac import curvature

        return curvature.diag_ggn(self, X, Y, params, mc_samples=mc_samples, seed=seed)

    def kfac(self, X: ArrayLike, Y: ArrayLike, params: Params, fisher: str = "exact",
             mc_samples: int = 1, seed: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """K-FAC factors per layer ``(A, B)`` (``fastjac.curvature.kfac`` for the conventions)."""
        from fastjac import curvature

        return curvature.kfac(self, X, Y, params, fisher=fisher, mc_samples=mc_samples, seed=seed)

    def ggn_vector_product(self, X: ArrayLike, Y: ArrayLike, params: Params, v: Params) -> Grads:
        """``G v`` for v a list of blocks."""
        from fastjac import curvature

        return curvature.ggn_vector_product(self, X, Y, params, v)

    def hessian_vector_product(self, X: ArrayLike, Y: ArrayLike, params: Params,
                               v: Params) -> Grads:
        """``H v`` for v a list of blocks (exact)."""
        from fastjac import curvature

        return curvature.hessian_vector_product(self, X, Y, params, v)

    def diag_hessian(self, X: ArrayLike, Y: ArrayLike, params: Params) -> Grads:
        """The exact diagonal of the mean loss's Hessian, per block."""
        from fastjac import curvature

        return curvature.diag_hessian(self, X, Y, params)

    def jacobian_params(self, X: ArrayLike, params: Params, factored: bool = False) -> Any:
        """Per-example Jacobians of the logits: blocks ``(N, m, *block)``, or factored."""
        from fastjac import curvature

        return curvature.jacobian_params(self, X, params, factored=factored)

    def empirical_ntk(self, X1: ArrayLike, params: Params, X2: ArrayLike | None = None,
                      trace: bool = True) -> NDArray[np.floating]:
        """The empirical NTK of the logits: (N1, N2), or (N1, N2, m, m) with ``trace=False``."""
        from fastjac import curvature

        return curvature.empirical_ntk(self, X1, params, X2=X2, trace=trace)


def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
