"""``fastjac.MLP``: networks of any depth, every activation and loss, three routes, one answer.

* The fused, structured and dense routes give the same loss and gradient,
  for depths 1 to 4, every activation and loss, with and without alpha and
  sample weights, in float64 and float32.
* The dense route passes central finite differences.
* scikit-learn's ``MLPClassifier``/``MLPRegressor._backprop`` (the outside
  oracle) gives the same loss and gradient with the same weights (the squared
  error's loss divided by the number of outputs: scikit-learn#8349).

Tolerances. float64: rtol 1e-12 entrywise plus 1e-12 times the block's
largest entry: a gradient entry sums N rows of terms that may cancel, and two
correct summation orders then differ by ~eps times the terms, not the result
(see ``conftest.tolerance``). float32 against the float64 routes on the same
float32 inputs: every kernel value is float32 arithmetic (a few roundings per
entry, sums of at most a few hundred terms), so rtol 1e-4 plus 1e-5 times the
block's largest entry, as for the lecture's network.
"""

import math

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier, MLPRegressor

import fastjac
from fastjac import MLP

ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "squared_error")
DTYPES = (np.float32, np.float64)
DEPTHS = {1: [4, 3], 2: [4, 5, 3], 3: [4, 5, 3, 3], 4: [4, 3, 5, 2, 3]}


def targets(rng, loss, N, m):
    if loss == "softmax_cross_entropy":
        return np.eye(m)[rng.integers(0, m, N)]
    if loss == "binary_cross_entropy":
        return (rng.random((N, m)) < 0.5).astype(float)
    return rng.normal(size=(N, m))


def random_problem(rng, sizes, loss, N=9, weighted=False):
    """X (N, n_0) standardised, Y for the loss, params of O(1) scale, weights or None."""
    X = rng.normal(size=(N, sizes[0]))
    Y = targets(rng, loss, N, sizes[-1])
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [rng.normal(size=(a, b)) / math.sqrt(a), 0.3 * rng.normal(size=(1, b))]
    w = rng.uniform(0.2, 2.0, N) if weighted else None
    return X, Y, params, w


def assert_grads_close(got, ref, rtol, floor, what=""):
    assert len(got) == len(ref), what
    for i, (g, r) in enumerate(zip(got, ref)):
        r = np.asarray(r, dtype=np.float64)
        g = np.asarray(g)
        assert g.shape == r.shape, (what, i, g.shape, r.shape)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=floor * np.abs(r).max(), err_msg=f"{what} block {i}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_three_routes_one_answer(activation, loss, dtype, rng):
    """Depths 1-4, alpha 0 and 0.3, with and without sample weights, in one dtype."""
    rtol, floor = (1e-12, 1e-12) if dtype == np.float64 else (1e-4, 1e-5)
    for depth, sizes in DEPTHS.items():
        for alpha in (0.0, 0.3):
            for weighted in (False, True):
                net = MLP(sizes, activation=activation, loss=loss, alpha=alpha)
                X, Y, params, w = random_problem(rng, sizes, loss, weighted=weighted)
                X, Y = X.astype(dtype), Y.astype(dtype)
                params = [p.astype(dtype) for p in params]
                what = f"depth {depth}, alpha {alpha}, weighted {weighted}"
                # the references, in float64 on the same (rounded) inputs
                X64, Y64, p64 = X.astype(float), Y.astype(float), [p.astype(float) for p in params]
                ref_grad = net.loss_gradient_closure(X64, Y64, "dense", sample_weight=w)(p64)
                ref_loss = net.loss_closure(X64, Y64, sample_weight=w, impl="dense")(p64)
                s_grad = net.loss_gradient_closure(X64, Y64, "structured", sample_weight=w)(p64)
                s_loss = net.loss_closure(X64, Y64, sample_weight=w, impl="structured")(p64)
                assert_grads_close(s_grad, ref_grad, 1e-12, 1e-12, "structured " + what)
                np.testing.assert_allclose(s_loss, ref_loss, rtol=1e-12, err_msg=what)
                loss_value, grads = net.loss_and_gradient_closure(X, Y, sample_weight=w)(params)
                assert all(g.dtype == dtype for g in grads)
                assert_grads_close(grads, ref_grad, rtol, floor, "fused " + what)
                np.testing.assert_allclose(loss_value, ref_loss, rtol=rtol, err_msg=what)
                np.testing.assert_allclose(net.loss_closure(X, Y, sample_weight=w)(params), loss_value,
                                           rtol=1e-12 if dtype == np.float64 else 1e-6)
                # the fused gradient through the other entry point is the same pass
                for a, b in zip(net.loss_gradient_closure(X, Y, "fused", sample_weight=w)(params), grads):
                    np.testing.assert_array_equal(a, b)


def test_mixed_activations_per_layer(rng):
    sizes = [4, 5, 3, 6, 3]
    acts = ["tanh", "relu", "logistic"]
    net = MLP(sizes, activation=acts, loss="softmax_cross_entropy", alpha=0.1)
    assert net.activations == tuple(acts)
    X, Y, params, w = random_problem(rng, sizes, net.loss, weighted=True)
    ref = net.loss_gradient_closure(X, Y, "dense", sample_weight=w)(params)
    loss, grads = net.loss_and_gradient_closure(X, Y, sample_weight=w)(params)
    assert_grads_close(grads, ref, 1e-12, 1e-12)
    assert_grads_close(net.loss_gradient_closure(X, Y, sample_weight=w)(params), ref, 1e-12, 1e-12)
    np.testing.assert_allclose(loss, net.loss_closure(X, Y, sample_weight=w, impl="dense")(params),
                               rtol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_route_passes_finite_differences(activation, loss, rng):
    """Directional derivatives of the dense loss equal <dense gradient, direction> (float64).

    Central differences with h = 1e-5 err by O(h^2 f''') + O(eps f / h) ~ 1e-10
    here (O(1) losses and curvatures); 1e-7 absolute leaves a margin of 1000.
    ReLU's kink is avoided by construction: no pre-activation lies within 1e-3
    of 0 (checked), and the step moves each by less than 1e-4.
    """
    sizes = DEPTHS[3]
    net = MLP(sizes, activation=activation, loss=loss, alpha=0.2)
    X, Y, params, w = random_problem(rng, sizes, loss, weighted=True)
    if activation == "relu":
        A = X
        for l in range(net.n_layers - 1):
            Z = A @ params[2 * l] + params[2 * l + 1]
            assert np.abs(Z).min() > 1e-3, "a pre-activation too close to ReLU's kink"
            A = np.maximum(Z, 0)
    f = net.loss_closure(X, Y, sample_weight=w, impl="dense")
    grads = net.loss_gradient_closure(X, Y, "dense", sample_weight=w)(params)
    h = 1e-5
    for _ in range(3):
        v = [rng.normal(size=p.shape) / math.sqrt(p.size) for p in params]
        fd = (f(fastjac.update_blocks(params, v, h)) - f(fastjac.update_blocks(params, v, -h))) / (2 * h)
        exact = sum(np.vdot(g, vi) for g, vi in zip(grads, v))
        assert abs(fd - exact) <= 1e-7 * (1 + abs(exact))


# ---------------------------------------------------------------- scikit-learn as the oracle

def sklearn_backprop(net, X, Y, params, sample_weight):
    """``(loss, [dW_1, db_1, ...])`` from scikit-learn's ``_backprop`` with these weights."""
    (activation,) = set(net.activations) or {"identity"}
    Estimator = MLPRegressor if net.loss == "squared_error" else MLPClassifier
    est = Estimator(hidden_layer_sizes=net.sizes[1:-1], activation=activation, alpha=net.alpha)
    est.coefs_ = [np.array(W, dtype=float) for W in params[0::2]]
    est.intercepts_ = [np.array(b, dtype=float).ravel() for b in params[1::2]]
    est.n_layers_ = len(net.sizes)
    est.n_outputs_ = net.sizes[-1]
    est.out_activation_ = {"softmax_cross_entropy": "softmax", "binary_cross_entropy": "logistic",
                           "squared_error": "identity"}[net.loss]
    L = net.n_layers
    activations = [X] + [None] * L
    deltas = [None] * L
    coef_grads = [np.empty_like(W) for W in est.coefs_]
    intercept_grads = [np.empty_like(b) for b in est.intercepts_]
    loss, cg, ig = est._backprop(X, Y, sample_weight, activations, deltas, coef_grads,
                                 intercept_grads)
    return loss, [g for pair in zip(cg, ig) for g in pair]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss, m", [("softmax_cross_entropy", 4), ("binary_cross_entropy", 1),
                                     ("binary_cross_entropy", 3), ("squared_error", 1),
                                     ("squared_error", 3)])
def test_scikit_learn_backprop_is_the_oracle(loss, m, activation, weighted, rng):
    """Multi-class softmax, binary and multilabel logistic, one or several regression outputs."""
    for hidden in ((), (6,), (5, 4), (3, 5, 4)):
        sizes = [7, *hidden, m]
        net = MLP(sizes, activation=activation, loss=loss, alpha=0.25)
        X, Y, params, w = random_problem(rng, sizes, loss, N=23, weighted=weighted)
        sk_loss, sk_grads = sklearn_backprop(net, X, Y, params, w)
        loss_value, grads = net.loss_and_gradient_closure(X, Y, sample_weight=w)(params)
        what = f"{loss}, m={m}, {activation}, hidden {hidden}"
        assert_grads_close(grads, sk_grads, 1e-12, 1e-12, what)
        # scikit-learn#8349: its squared error (not its penalty) is averaged over the outputs too
        scale = m if loss == "squared_error" else 1
        penalty = 0.5 * net.alpha * sum(np.sum(W ** 2) for W in params[0::2]) / (
            len(X) if w is None else w.sum())
        np.testing.assert_allclose(loss_value, scale * (sk_loss - penalty) + penalty, rtol=1e-12,
                                   err_msg=what)


def test_init_is_scikit_learns(rng):
    """``MLP.init(seed)`` draws scikit-learn's initial weights for ``random_state=seed``."""
    from sklearn.utils import check_random_state

    for activation in ("relu", "logistic"):
        net = MLP([6, 5, 4, 3], activation=activation)
        est = MLPClassifier(hidden_layer_sizes=(5, 4), activation=activation)
        est._random_state = check_random_state(7)
        est._label_binarizer = type("LB", (), {"y_type_": "multiclass"})()
        est._initialize(np.zeros((1, 3)), [6, 5, 4, 3], np.float64)
        params = net.init(seed=7)
        for W, coef in zip(params[0::2], est.coefs_):
            np.testing.assert_array_equal(W, coef)
        for b, intercept in zip(params[1::2], est.intercepts_):
            np.testing.assert_array_equal(b.ravel(), intercept)
        assert [p.shape for p in params] == net.shapes
    assert net.init(seed=1, dtype=np.float32)[0].dtype == np.float32


# ---------------------------------------------------------------- the rest of the API

def test_the_lecture_network_is_an_mlp(rng):
    """``nn_*`` are ``MLP([d, k, m], activation="logistic")``: the very same numbers."""
    from problems import standardized_problem

    X, Y, var = standardized_problem(rng, N=50, d=6, k=5, m=3)
    net = MLP([6, 5, 3], activation="logistic")
    loss, grads = net.loss_and_gradient_closure(X, Y)(var)
    loss2, grads2 = fastjac.nn_loss_and_gradient_closure(X, Y)(var)
    assert loss == loss2
    for a, b in zip(grads, grads2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(net.predict_classes(X, var), fastjac.nn_predict(X, var))


@pytest.mark.parametrize("loss", LOSSES)
def test_predict_gives_the_outputs(loss, rng):
    sizes = [4, 6, 5, 3]
    net = MLP(sizes, activation="tanh", loss=loss)
    X, Y, params, _ = random_problem(rng, sizes, loss, N=31)
    out = net.predict(X, params)
    A = X
    for l in range(net.n_layers):
        Z = A @ params[2 * l] + params[2 * l + 1]
        A = np.tanh(Z) if l < net.n_layers - 1 else Z
    expected = fastjac.losses.LOSSES[loss].output(A)
    assert out.shape == (31, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(net.predict_classes(X, params), np.argmax(A, axis=1))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sizes", [[4, 3], [4, 6, 3], [4, 6, 5, 2]])
def test_line_search_is_block_backtracking(sizes, weighted, rng):
    """Same accepted step and evaluations as ``block_backtracking`` on the fused loss, for
    several steps of steepest descent; x is ``update_blocks``' and fx the loss there."""
    net = MLP(sizes, activation="tanh", loss="softmax_cross_entropy", alpha=0.05)
    X, Y, x, w = random_problem(rng, sizes, net.loss, N=40, weighted=weighted)
    f = net.loss_closure(X, Y, sample_weight=w)
    fg = net.loss_and_gradient_closure(X, Y, sample_weight=w)
    ls = net.line_search_closure(X, Y, sample_weight=w)
    for _ in range(6):
        loss, g = fg(x)
        g = [gi.reshape(xi.shape) for gi, xi in zip(g, x)]
        dx = fastjac.negate_blocks(g)
        got = ls(x, dx, g, alpha=0.3, beta=0.5, f0=loss)
        ref = fastjac.block_backtracking(x, f, dx, g, 0.3, 0.5)
        assert (got.t, got.nfev) == (ref.t, ref.nfev)
        for a, b in zip(got.x, ref.x):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(got.fx, ref.fx, rtol=1e-13)
        x = got.x


@pytest.mark.parametrize("bad, message", [
    (dict(sizes=[4]), "at least two positive integers"),
    (dict(sizes=[4, 0, 2]), "at least two positive integers"),
    (dict(sizes=[4, 2.5, 2]), "at least two positive integers"),
    (dict(activation="softplus"), "unknown activation 'softplus'; known: identity, logistic, tanh, relu"),
    (dict(activation=["tanh"]), "one name per hidden layer: 2"),
    (dict(loss="hinge"), "unknown loss 'hinge'"),
    (dict(alpha=-1.0), "alpha must be a finite number >= 0"),
    (dict(alpha=math.inf), "alpha must be a finite number >= 0"),
])
def test_bad_networks_are_refused(bad, message):
    kw = dict(sizes=[4, 5, 3, 2], activation="tanh", loss="squared_error", alpha=0.0) | bad
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        MLP(kw.pop("sizes"), **kw)


def test_bad_data_and_params_name_what_is_wrong(rng):
    sizes = [4, 5, 3]
    net = MLP(sizes)
    X, Y, params, _ = random_problem(rng, sizes, net.loss)
    with pytest.raises(ValueError, match=r"X has 3 columns \(shape \(9, 3\)\) but the network takes 4"):
        net.loss_and_gradient_closure(X[:, :3], Y)
    with pytest.raises(ValueError, match=r"X has 3 columns"):
        net.predict(X[:, :3], params)
    with pytest.raises(ValueError, match=r"same number of rows"):
        net.loss_closure(X, Y[:5])
    with pytest.raises(ValueError, match=r"Y has 2 columns but the network has 3 outputs"):
        net.loss_closure(X, Y[:, :2])
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(9,\)"):
        net.loss_closure(X, Y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
        net.loss_closure(X, Y, sample_weight=-np.ones(9))
    with pytest.raises(ValueError, match="no rows"):
        net.loss_closure(X[:0], Y[:0])
    fg = net.loss_and_gradient_closure(X, Y)
    with pytest.raises(ValueError, match=r"params must be the 4 blocks \[W1, b1, ..., W2, b2\]"):
        fg(params[:2])
    with pytest.raises(ValueError, match=r"W2 must have shape \(5, 3\)"):
        fg([params[0], params[1], params[2][:4], params[3]])
    with pytest.raises(ValueError, match=r"b1 must have shape \(1, 5\) or \(5,\)"):
        fg([params[0], params[1][:, :2], params[2], params[3]])
    with pytest.raises(ValueError, match="impl must be one of fused, structured, dense"):
        net.loss_gradient_closure(X, Y, impl="jax")
    with pytest.raises(TypeError, match="X must be float32, float64 or integer"):
        net.predict(X.astype(complex), params)


def test_a_new_shape_needs_no_new_kernel(rng):
    """Kernels are made per activation and loss (and compiled per dtype), never per shape:
    after the first network, networks of other depths and widths compile nothing."""
    from fastjac import fused

    made = fused.kernels(fastjac.activations.TANH, fastjac.losses.SOFTMAX_CROSS_ENTROPY)
    compiled = None
    for sizes in ([4, 5, 3], [7, 9, 2, 3], [3, 8, 8, 8, 2], [5, 2]):
        net = MLP(sizes, activation="tanh") if len(sizes) > 2 else None
        if net is None:
            continue
        X, Y, params, _ = random_problem(rng, sizes, net.loss, N=11)
        net.loss_and_gradient_closure(X, Y)(params)
        if compiled is None:
            compiled = list(made.rows_pass.signatures)
        assert list(made.rows_pass.signatures) == compiled, sizes
