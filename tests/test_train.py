"""fastjac.train reproduces the lecture's run; dense and structured give one trajectory.

The lecture's printed output is test data in ``tests/lecture_output.txt``.
"""

import io
import math
import re
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastjac import dense, structured
from fastjac.data import load_breast_cancer_data, standardize
from fastjac.train import (
    DEFAULT_DENSE_BUDGET,
    DENSE_WARN_BYTES,
    DenseMemoryError,
    DenseMemoryWarning,
    check_dense_memory,
    closures,
    dense_gradient_bytes,
    dense_tensor_shapes,
    parse_size,
    train,
)

LECTURE_OUTPUT = Path(__file__).with_name("lecture_output.txt")
STEP_RE = re.compile(r"Step: (\d+), Avg Cross Entropy: ([0-9.]+), Gradient Norm: ([0-9.]+), "
                     r"Training Accuracy: ([0-9.]+) percent")


def lecture_lines():
    """The lecture's lines: steps 0-9 complete, then step 10 cut short after its loss."""
    lines = [ln for ln in LECTURE_OUTPUT.read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 11 and lines[10].startswith("Step: 10, Avg Cross Entropy: 0.640509")
    return lines


@pytest.fixture(autouse=True)
def keep_global_rng():
    """train() seeds numpy's global generator, as the lecture does; restore it afterwards."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def test_lecture_output_file_holds_the_values_of_the_issue():
    lines = lecture_lines()
    step0 = STEP_RE.fullmatch(lines[0]).groups()
    assert step0 == ("0", "0.655622", "6.340024", "77.0")
    assert all(STEP_RE.fullmatch(ln) for ln in lines[:10])


def test_default_run_prints_the_lectures_lines(capsys):
    history = train(steps=11)
    out = capsys.readouterr().out.splitlines()
    expected = lecture_lines()
    assert out[:10] == expected[:10]
    assert out[10].startswith(expected[10])  # the lecture's step 10 line is cut short
    assert re.fullmatch(r"Final test accuracy: \d+\.\d percent", out[11])
    assert len(out) == 12
    # the history holds the printed numbers at full precision
    for line, step in zip(out, history.steps):
        i, loss, gnorm, acc = STEP_RE.fullmatch(line).groups()
        assert (int(i), loss, gnorm, acc) == (
            step.step, "%f" % step.loss, "%f" % step.grad_norm, "%.1f" % step.train_accuracy)


def test_full_default_run_and_history():
    seen = []
    history = train(verbose=False, callback=seen.append)
    assert [s.step for s in history.steps] == list(range(100)) and seen == history.steps
    assert history.losses.shape == (100,) and np.all(np.isfinite(history.losses))
    # Armijo steps only ever decrease the loss
    assert np.all(np.diff(history.losses) < 0)
    for s in history.steps:
        assert s.t == 0.5 ** round(-math.log2(s.t)) and 0 < s.t <= 1
        assert s.nfev >= 2 and s.grad_norm > 0 and 0 <= s.train_accuracy <= 100
    W1, b1, W2, b2 = history.params
    assert (W1.shape, b1.shape, W2.shape, b2.shape) == ((30, 20), (1, 20), (20, 2), (1, 2))
    assert 0 <= history.test_accuracy <= 100 and history.seconds > 0
    assert history.config == dict(impl="structured", steps=100, hidden=20, train_rows=400,
                                  seed=1234, alpha=0.1, beta=0.5, standardize=False,
                                  max_iter=None, dataset="breast_cancer", target="target",
                                  task="classification", classes=["malignant", "benign"],
                                  layers=[20], activation="logistic",
                                  loss="softmax_cross_entropy", l2=0.0, test_fraction=None,
                                  test_rows=169, sizes=[30, 20, 2])


def test_quiet_prints_nothing(capsys):
    train(steps=2, verbose=False)
    assert capsys.readouterr().out == ""


def test_output_goes_to_file(capsys, tmp_path):
    with open(tmp_path / "log.txt", "w") as fh:
        train(steps=2, file=fh)
    assert capsys.readouterr().out == ""
    assert (tmp_path / "log.txt").read_text().splitlines()[:2] == lecture_lines()[:2]


def test_same_seed_same_run_other_seed_other_run():
    a, b = train(steps=5, verbose=False), train(steps=5, verbose=False)
    c = train(steps=5, seed=7, verbose=False)
    assert np.array_equal(a.losses, b.losses)
    assert all(np.array_equal(p, q) for p, q in zip(a.params, b.params))
    assert not np.array_equal(a.losses, c.losses)


def assert_same_trajectory(d, s):
    np.testing.assert_allclose(d.losses, s.losses, rtol=1e-12, atol=0)
    np.testing.assert_allclose([x.grad_norm for x in d.steps],
                               [x.grad_norm for x in s.steps], rtol=1e-10, atol=0)
    assert [x.t for x in d.steps] == [x.t for x in s.steps]
    assert np.array_equal(d.train_accuracies, s.train_accuracies)
    assert d.test_accuracy == s.test_accuracy
    for p, q in zip(d.params, s.params):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)


def run_printed(**kwargs):
    """``train(**kwargs)`` and the lines it printed."""
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DenseMemoryWarning)
        history = train(file=out, **kwargs)
    return history, out.getvalue().splitlines()


@pytest.mark.parametrize("train_rows, hidden, standardized",
                         [(100, 20, False), (100, 20, True), (60, 7, True)])
def test_dense_and_structured_give_the_same_100_steps(train_rows, hidden, standardized):
    kw = dict(steps=100, hidden=hidden, train_rows=train_rows, standardize=standardized)
    (d, d_out), (s, s_out) = run_printed(impl="dense", **kw), run_printed(impl="structured", **kw)
    assert_same_trajectory(d, s)
    assert d_out == s_out


def test_dense_and_structured_give_the_same_100_steps_at_the_lectures_size():
    # The dense reference takes 0.15-0.4 s a step here (it fills and reads a
    # 512 MB Dlogit tensor), so this one test costs 15-40 s of CI.
    (d, d_out), (s, s_out) = run_printed(impl="dense"), run_printed(impl="structured")
    assert_same_trajectory(d, s)
    expected = lecture_lines()
    assert d_out == s_out and d_out[:10] == expected[:10] and d_out[10].startswith(expected[10])


def test_standardize_improves_on_the_raw_features():
    raw = train(steps=20, verbose=False)
    scaled = train(steps=20, standardize=True, verbose=False)
    assert scaled.losses[-1] < 0.5 * raw.losses[-1]
    assert scaled.train_accuracies[-1] > raw.train_accuracies[-1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(impl="sparse"), "impl must be one of"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=2.5), "steps must be a positive integer"),
    (dict(hidden=0), "hidden must be a positive integer"),
    (dict(train_rows=0), r"train_rows must be an integer in 1\.\.568"),
    (dict(train_rows=569), r"train_rows must be an integer in 1\.\.568"),
    (dict(seed=-1), "seed must be an integer"),
    (dict(alpha=0), "alpha must lie strictly between 0 and 1"),
    (dict(alpha=1.0), "alpha must lie strictly between 0 and 1"),
    (dict(beta=float("nan")), "beta must lie strictly between 0 and 1"),
    (dict(max_iter=0), "max_iter must be a positive integer"),
])
def test_bad_settings_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(verbose=False, **kwargs)


def test_extreme_but_valid_splits_run():
    for rows in (1, 568):
        history = train(steps=2, train_rows=rows, hidden=1, verbose=False)
        assert np.all(np.isfinite(history.losses))


# ---------------------------------------------------------------- dense memory

def test_dense_over_budget_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr("fastjac.train.load_breast_cancer_data",
                        lambda: pytest.fail("data loaded before the budget check"))
    with pytest.raises(DenseMemoryError, match=r"Dlogit alone is a \(400, 20, 400, 20\)"):
        train(impl="dense", dense_budget=100 * 2**20)
    with pytest.raises(DenseMemoryError, match="over the budget of 4.0 GiB"):
        train(impl="dense", train_rows=568, hidden=40)


def test_dense_budget_from_environment(monkeypatch):
    monkeypatch.setenv("FASTJAC_DENSE_BUDGET", "200MiB")
    with pytest.raises(DenseMemoryError, match="200.0 MiB"):
        check_dense_memory(400, 20)
    monkeypatch.setenv("FASTJAC_DENSE_BUDGET", "lots")
    with pytest.raises(ValueError, match="FASTJAC_DENSE_BUDGET"):
        check_dense_memory(400, 20)


def test_dense_warns_above_100_mb_and_is_quiet_below():
    need, message = check_dense_memory(400, 20)
    assert DENSE_WARN_BYTES < need < DEFAULT_DENSE_BUDGET and "580.1 MiB" in message
    assert check_dense_memory(100, 20)[1] is None
    with pytest.warns(DenseMemoryWarning, match="580.1 MiB"):
        train(impl="dense", steps=1, verbose=False)


@pytest.mark.parametrize("N, d, k", [(1, 30, 20), (37, 30, 20), (120, 30, 20), (150, 10, 5)])
def test_dense_memory_estimate_is_what_one_dense_gradient_allocates(N, d, k, rng, monkeypatch):
    """The estimate is exactly the tensors one dense gradient builds, all alive at once.

    1. Every tensor ``fastjac.dense``'s D* builders return during one gradient
       is recorded: their shapes are the estimate's, their bytes its total.
    2. tracemalloc, after a warm-up call (first-call caches) and with the
       baseline read inside the traced region: the peak over the baseline is
       at least the estimate, by construction (the tensors are locals of
       ``df`` until it returns), and at most the estimate plus what the rest
       of the gradient can hold: its other arrays, each at most
       ``N (d + k + m^2) + d k + k m`` values and fewer than 16 alive at once,
       and one call's interpreter objects (frames, tuples: under 64 KiB; about
       7 KiB measured). A dense copy of any tensor would exceed that bound.
    """
    m = 2
    X, Y = rng.normal(size=(N, d)), np.eye(m)[rng.integers(0, m, N)]
    var = [0.1 * rng.normal(size=(d, k)), np.zeros((1, k)), 0.1 * rng.normal(size=(k, m)),
           np.zeros((1, m))]
    built = []
    for name in ("DX_affine", "DW_affine", "Db_affine", "Dlogit", "Dmatrix_softmax"):
        def recorded(*args, _build=getattr(dense, name)):
            D, shape = _build(*args)
            built.append((D.shape, D.nbytes))  # no reference kept: the peak stays df's own
            return D, shape
        monkeypatch.setattr(dense, name, recorded)
    df = dense.nn_loss_gradient_closure(X, Y)
    df(var)  # warm-up, untraced
    built.clear()
    estimate = dense_gradient_bytes(N, d, k, m)

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        df(var)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert sorted(shape for shape, _ in built) == sorted(dense_tensor_shapes(N, d, k, m).values())
    assert sum(nbytes for _, nbytes in built) == estimate
    others = 16 * 8 * (N * (d + k + m * m) + d * k + k * m) + 64 * 1024
    assert estimate <= peak <= estimate + others, (estimate, peak, others)


@pytest.mark.parametrize("text, expected", [
    ("4GiB", 4 * 2**30), ("4g", 4 * 2**30), ("500MB", 500 * 10**6), ("1.5 GiB", 3 * 2**29),
    ("123456", 123456), ("64KiB", 65536), ("2TB", 2 * 10**12),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "4XB", "-1G", "0", "1e400"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


# ---------------------------------------------------------------- data

def test_data_is_built_as_in_the_lecture():
    from sklearn.datasets import load_breast_cancer

    X, labels, targets = load_breast_cancer_data()
    raw = load_breast_cancer()
    assert X.shape == (569, 30) and labels.shape == (569, 2) and targets.shape == (569,)
    assert np.array_equal(X, raw["data"]) and np.array_equal(targets, raw.target)
    assert np.array_equal(labels.sum(axis=1), np.ones(569))
    assert np.array_equal(labels[np.arange(569), targets], np.ones(569))


def test_standardize_fits_on_training_rows_only():
    X = load_breast_cancer_data().X
    Xs, mean, std = standardize(X, 400)
    np.testing.assert_allclose(Xs[:400].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Xs[:400].std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(Xs[400:], (X[400:] - X[:400].mean(0)) / X[:400].std(0), rtol=1e-12)
    # one training row: every column is constant there, so only shifted
    Xs1, _, std1 = standardize(X, 1)
    assert np.all(std1 == 1) and np.all(Xs1[0] == 0) and np.all(np.isfinite(Xs1))
    with pytest.raises(ValueError):
        standardize(X, 0)


def test_closures_agree_with_the_lectures_functions():
    X, labels, _ = load_breast_cancer_data()
    rng = np.random.default_rng(0)
    var = [0.1 * rng.normal(size=(30, 6)), np.zeros((1, 6)), 0.1 * rng.normal(size=(6, 2)),
           np.zeros((1, 2))]
    for module in (dense, structured):
        fg, _ = closures(module, X[:50], labels[:50])
        loss, grad = fg(var)
        np.testing.assert_allclose(loss, module.nn_loss_closure(X[:50], labels[:50])(var),
                                   rtol=1e-12)
        for g, h in zip(grad, module.nn_loss_gradient_closure(X[:50], labels[:50])(var)):
            np.testing.assert_allclose(np.ravel(g), np.ravel(h), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- other networks and data

def _id(settings):
    """A plain test id for a dict of settings (no brackets, spaces or regex escapes)."""
    return "-".join(re.sub(r"\W+", "_", f"{k}={v}").strip("_") for k, v in settings.items())

def test_the_lectures_lines_are_the_default_formats():
    from fastjac.train import FINAL_FORMAT, STEP_FORMAT, line_formats

    assert line_formats() == (STEP_FORMAT, FINAL_FORMAT)
    assert line_formats("classification", "softmax_cross_entropy", 0.0) == (STEP_FORMAT,
                                                                           FINAL_FORMAT)
    step, final = line_formats("regression", "squared_error", 0.0)
    assert step % (3, 1.5, 2.0, 0.25) == ("Step: 3, Avg Half Squared Error: 1.500000, "
                                          "Gradient Norm: 2.000000, Training R^2: 0.2500")
    assert final % 0.5 == "Final test R^2: 0.5000"
    step, _ = line_formats("classification", "binary_cross_entropy", 1e-3)
    assert step.startswith("Step: %d, Avg Binary Cross Entropy + L2 Penalty: %f,")


def test_init_is_the_lectures_for_every_depth():
    from fastjac.linesearch import random_matrix
    from fastjac.train import init_params

    params = init_params([4, 8, 6, 3], seed=9)
    np.random.seed(9)
    expected = [random_matrix((4, 8)), np.zeros((1, 8)), random_matrix((8, 6)), np.zeros((1, 6)),
                random_matrix((6, 3)), np.zeros((1, 3))]
    assert all(np.array_equal(p, q) and p.shape == q.shape for p, q in zip(params, expected))


def test_two_tanh_layers_train_and_decrease_the_loss(capsys):
    history = train(dataset="iris", layers=[8, 6], activation="tanh", standardize=True,
                    steps=15)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 16 and all(STEP_RE.fullmatch(line) for line in out[:15])
    assert re.fullmatch(r"Final test accuracy: \d+\.\d percent", out[15])
    assert np.all(np.diff(history.losses) < 0) and history.losses[-1] < 0.8 * history.losses[0]
    assert [p.shape for p in history.params] == [(4, 8), (1, 8), (8, 6), (1, 6), (6, 3), (1, 3)]
    c = history.config
    assert c["sizes"] == [4, 8, 6, 3] and c["layers"] == [8, 6] and c["hidden"] is None
    assert c["classes"] == ["setosa", "versicolor", "virginica"] and c["activation"] == "tanh"
    assert (c["train_rows"], c["test_rows"], c["test_fraction"]) == (112, 38, 0.25)
    assert set(history.to_dict()["params"]) == {"W1", "b1", "W2", "b2", "W3", "b3"}


def test_the_loop_is_the_mlps_closures():
    """Same steps as a hand-written loop over MLP's closures (bitwise)."""
    from fastjac import MLP
    from fastjac.data import load_dataset, split_rows
    from fastjac.linesearch import block_norm, negate_blocks
    from fastjac.train import init_params

    history = train(dataset="wine", layers=[5, 4], activation=["tanh", "logistic"], l2=0.01,
                    standardize=True, steps=4, seed=3, verbose=False)
    ds = load_dataset("wine")
    split = split_rows(ds.n_rows, test_fraction=0.25, seed=3)
    X = standardize(ds.X, split.train)[0][split.train]
    net = MLP([13, 5, 4, 3], activation=["tanh", "logistic"], alpha=0.01)
    fg = net.loss_and_gradient_closure(X, ds.Y[split.train])
    ls = net.line_search_closure(X, ds.Y[split.train])
    x = init_params(net.sizes, 3)
    losses, norms = [], []
    for _ in range(4):
        loss, grad = fg(x)
        grad = [g.reshape(xi.shape) for g, xi in zip(grad, x)]
        x, fx = ls(x, negate_blocks(grad), grad, f0=loss)
        losses.append(fx)
        norms.append(block_norm(grad))
    assert list(history.losses) == losses
    assert [s.grad_norm for s in history.steps] == norms
    assert all(np.array_equal(p, q) for p, q in zip(history.params, x))


def test_diabetes_regression_prints_r2(capsys):
    history = train(dataset="diabetes", steps=6)
    out = capsys.readouterr().out.splitlines()
    reg = re.compile(r"Step: (\d+), Avg Half Squared Error: ([0-9.]+), Gradient Norm: "
                     r"([0-9.]+), Training R\^2: (-?[0-9.]+)")
    assert len(out) == 7 and all(reg.fullmatch(line) for line in out[:6])
    assert re.fullmatch(r"Final test R\^2: -?\d+\.\d{4}", out[6])
    assert history.config["task"] == "regression" and history.config["loss"] == "squared_error"
    assert history.config["classes"] is None and history.config["sizes"] == [10, 20, 1]
    assert np.all(np.isnan(history.train_accuracies)) and np.isnan(history.test_accuracy)
    assert np.all(np.diff(history.losses) < 0)
    assert history.train_r2s[-1] > history.train_r2s[0] and math.isfinite(history.test_r2)
    for line, step in zip(out, history.steps):
        assert reg.fullmatch(line).group(4) == "%.4f" % step.train_r2
    d = history.to_dict()
    assert set(d) == {"config", "steps", "test_r2", "params", "seconds"}
    assert set(d["steps"][0]) == {"step", "loss", "grad_norm", "train_r2", "t", "nfev"}


def test_r2_score_is_sklearns():
    from sklearn.metrics import r2_score as sk_r2

    from fastjac.train import r2_score

    rng = np.random.default_rng(0)
    y, p = rng.normal(size=20), rng.normal(size=20)
    assert r2_score(y, p) == pytest.approx(sk_r2(y, p), rel=1e-12)
    Y, P = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    assert r2_score(Y, P) == pytest.approx(sk_r2(Y, P), rel=1e-12)
    assert r2_score([1.0, 1.0], [1.0, 1.0]) == 1.0 and r2_score([1.0, 1.0], [1.0, 2.0]) == 0.0


def test_user_data_as_a_dataset():
    from fastjac.data import make_dataset

    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    labels = np.where(X[:, 0] > 0, "up", "down")
    history = train(dataset=make_dataset(X, labels, name="mine"), steps=20, hidden=4,
                    verbose=False)
    assert history.config["dataset"] == "mine" and history.config["classes"] == ["down", "up"]
    assert history.config["test_rows"] == 20 and history.losses[-1] < history.losses[0]
    # the same data as a regression target on a column
    reg = train(dataset=make_dataset(X, X[:, 0] - X[:, 1]), steps=3, hidden=4, verbose=False)
    assert reg.config["task"] == "regression" and np.isfinite(reg.test_r2)


def test_split_options():
    default = train(steps=1, verbose=False)
    assert (default.config["train_rows"], default.config["test_rows"]) == (400, 169)
    first = train(dataset="iris", train_rows=100, steps=1, hidden=3, verbose=False)
    assert (first.config["train_rows"], first.config["test_rows"]) == (100, 50)
    assert first.config["test_fraction"] is None
    drawn = [train(test_fraction=f, steps=1, hidden=3, seed=seed, verbose=False)
             for f, seed in ((0.3, 1), (0.3, 1), (0.3, 2))]
    assert [h.config["test_rows"] for h in drawn] == [171, 171, 171]  # ceil(0.3 * 569)
    assert drawn[0].config["test_fraction"] == 0.3
    # the seed draws the rows (and the weights): same seed, same run
    assert drawn[0].losses[0] == drawn[1].losses[0] != drawn[2].losses[0]


def test_armijo_alpha_stays_positional_and_l2_is_the_penalty(capsys):
    # impl, steps, hidden, train_rows, seed, alpha (Armijo), beta: the positions of old
    a = train("structured", 3, 4, 100, 1234, 0.3, 0.6, verbose=False)
    assert (a.config["steps"], a.config["hidden"], a.config["train_rows"]) == (3, 4, 100)
    assert (a.config["alpha"], a.config["beta"], a.config["l2"]) == (0.3, 0.6, 0.0)
    penalised = train(steps=3, l2=0.5)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Step: 0, Avg Cross Entropy + L2 Penalty: ")
    assert penalised.config["l2"] == 0.5 and penalised.config["alpha"] == 0.1


@pytest.mark.parametrize("kwargs", [dict(dataset="iris"), dict(dataset="wine", hidden=5,
                                                                 train_rows=60)])
def test_dense_and_structured_agree_on_other_data(kwargs):
    kw = dict(steps=10, standardize=True, **kwargs)
    (d, d_out), (s, s_out) = run_printed(impl="dense", **kw), run_printed(impl="structured", **kw)
    assert_same_trajectory(d, s)
    assert d_out == s_out


DENSE_REFUSED = [
    (dict(layers=[8, 6]), "dense implementation runs only the lecture's network"),
    (dict(activation="tanh"), "dense implementation runs only"),
    (dict(l2=0.1), "dense implementation runs only"),
    (dict(dataset="diabetes"), "dense implementation runs only"),
    (dict(loss="squared_error"), "dense implementation runs only"),
]


@pytest.mark.parametrize("kwargs, match", DENSE_REFUSED, ids=[_id(kw) for kw, _ in DENSE_REFUSED])
def test_dense_refuses_other_networks(kwargs, match, monkeypatch):
    monkeypatch.setattr("fastjac.train.load_breast_cancer_data",
                        lambda: pytest.fail("data loaded before the settings were checked"))
    with pytest.raises(ValueError, match=match):
        train(impl="dense", verbose=False, **kwargs)


BAD_NEW_SETTINGS = [
    (dict(hidden=4, layers=[4]), "give hidden or layers, not both"),
    (dict(layers=[]), "layers must be one or more positive integers"),
    (dict(layers=[4, 0]), "layers must be one or more positive integers"),
    (dict(layers="8"), "layers must be one or more positive integers"),
    (dict(activation="sigmoid"), "activation must be one of identity, logistic, tanh, relu"),
    (dict(activation=["tanh", "relu"]), "activation lists one name per hidden layer: 1"),
    (dict(loss="hinge"), "loss must be one of softmax_cross_entropy"),
    (dict(l2=-1.0), r"l2 \(the L2 penalty\) must be a finite number >= 0"),
    (dict(l2=float("nan")), "l2"),
    (dict(l2=True), "l2"),
    (dict(task="clustering"), "task must be one of classification, regression"),
    (dict(test_fraction=0.0), "test_fraction must lie strictly between 0 and 1"),
    (dict(test_fraction=1), "test_fraction must lie strictly between 0 and 1"),
    (dict(train_rows=100, test_fraction=0.2), "give train_rows or test_fraction, not both"),
    (dict(dataset="mnist"), "dataset must be one of breast_cancer, digits, iris, wine, diabetes"),
    (dict(dataset="diabetes", loss="softmax_cross_entropy"),
     "loss softmax_cross_entropy needs classes, but diabetes's target is a regression target"),
    (dict(task="regression", loss="binary_cross_entropy"), "needs classes"),
    (dict(dataset="iris", train_rows=150), r"train_rows must be an integer in 1\.\.149 \(iris"),
    (dict(dataset="iris", test_fraction=0.999), "leaves no training or no test rows"),
    (dict(train_rows=2.5), "train_rows must be an integer"),
]


@pytest.mark.parametrize("kwargs, match", BAD_NEW_SETTINGS,
                         ids=[_id(kw) for kw, _ in BAD_NEW_SETTINGS])
def test_bad_new_settings_raise_value_error(kwargs, match, monkeypatch):
    def no_load(*args, **kw):
        pytest.fail("data loaded before the settings were checked")

    monkeypatch.setattr("fastjac.train.load_breast_cancer_data", no_load)
    monkeypatch.setattr("fastjac.train.load_dataset", no_load)
    with pytest.raises(ValueError, match=match):
        train(verbose=False, **kwargs)
