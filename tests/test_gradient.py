"""The network's loss and gradient: structured equals dense, dense equals the truth.

* On the lecture's data (breast cancer, first 400 rows, one-hot labels, 20
  hidden nodes) and initialisation (``np.random.seed(1234)``), the structured
  gradient and loss equal the dense reference's, at the start and after a few
  training steps; the lecture's printed training log is reproduced.
* The dense reference's gradient matches central finite differences of its
  loss, entry by entry.

Tolerance (float64): rtol 1e-12 entrywise, plus 1e-12 times the block's largest
entry. Summation-order rounding in a gradient entry (a sum over the N rows) is
proportional to the sum of |terms|, not to |entry|: an entry that cancels to
nearly zero may carry an error of eps * (the block's scale), which is why the
absolute part is scaled by the block (see ``conftest.tolerance``).
"""

import numpy as np
import numpy.random as rd
import pytest
from sklearn.datasets import load_breast_cancer

import lecture
from problems import standardized_problem
from fastjac import dense, structured

NUM_TRAIN, HIDDEN = 400, 20

# The lecture's printed log (step, avg cross entropy, gradient norm, training accuracy).
PRINTED = """\
Step: 0, Avg Cross Entropy: 0.655622, Gradient Norm: 6.340024, Training Accuracy: 77.0 percent
Step: 1, Avg Cross Entropy: 0.645090, Gradient Norm: 3.860301, Training Accuracy: 92.2 percent
Step: 2, Avg Cross Entropy: 0.642563, Gradient Norm: 3.222856, Training Accuracy: 88.8 percent
Step: 3, Avg Cross Entropy: 0.641745, Gradient Norm: 1.341964, Training Accuracy: 90.8 percent
Step: 4, Avg Cross Entropy: 0.641555, Gradient Norm: 0.446901, Training Accuracy: 89.8 percent
Step: 5, Avg Cross Entropy: 0.641458, Gradient Norm: 0.559665, Training Accuracy: 91.2 percent
Step: 6, Avg Cross Entropy: 0.641177, Gradient Norm: 0.804886, Training Accuracy: 90.0 percent
Step: 7, Avg Cross Entropy: 0.641008, Gradient Norm: 0.406676, Training Accuracy: 91.0 percent
Step: 8, Avg Cross Entropy: 0.640909, Gradient Norm: 0.515593, Training Accuracy: 89.5 percent
Step: 9, Avg Cross Entropy: 0.640662, Gradient Norm: 0.723036, Training Accuracy: 90.8 percent
""".splitlines()
LINE = "Step: %d, Avg Cross Entropy: %f, Gradient Norm: %f, Training Accuracy: %.1f percent"


@pytest.fixture(scope="module")
def cancer():
    """The lecture's data: X (400, 30), one-hot Y (400, 2), 0-1 targets (400,)."""
    data = load_breast_cancer()
    X, targets = data["data"][:NUM_TRAIN], data.target[:NUM_TRAIN]
    Y = np.zeros((NUM_TRAIN, 2))
    Y[np.arange(NUM_TRAIN), targets] = 1
    return X, Y, targets


def lecture_init(random_matrix=lecture.random_matrix):
    """``rd.seed(1234)`` then W1, b1, W2, b2 as the lecture draws them (global state restored)."""
    state = rd.get_state()
    try:
        rd.seed(1234)
        W1 = random_matrix((30, HIDDEN))
        b1 = np.zeros((1, HIDDEN))
        W2 = random_matrix((HIDDEN, 2))
        b2 = np.zeros((1, 2))
    finally:
        rd.set_state(state)
    return [W1, b1, W2, b2]


def train(var, f, df, steps):
    """``steps`` of the lecture's gradient descent, with the lecture's own line search."""
    for _ in range(steps):
        g = df(var)
        var, _ = lecture.block_backtracking(var, f, lecture.negate_blocks(g), g, alpha=0.1)
    return var


def assert_gradients_close(got, want, rtol, assert_close, shapes=None):
    assert len(got) == len(want) == 4
    for name, g, w in zip(("W1", "b1", "W2", "b2"), got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        assert_close(g, w, rtol, what=f"gradient block {name}")
    if shapes is not None:
        assert [g.shape for g in got] == shapes


@pytest.fixture(scope="module")
def cancer_points(cancer):
    """The lecture's initial point and the point after 3 structured training steps."""
    X, Y, _ = cancer
    x0 = lecture_init()
    x3 = train(x0, structured.nn_loss_closure(X, Y), structured.nn_loss_gradient_closure(X, Y), 3)
    return {"init": x0, "after 3 steps": x3}


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("point", ["init", "after 3 steps"])
def test_structured_gradient_equals_dense_on_lecture_data(point, cancer, cancer_points,
                                                          assert_close):
    X, Y, _ = cancer
    var = cancer_points[point]
    if point != "init":  # training moved the point: it is not the special initial one
        assert dense.block_norm([a - b for a, b in zip(var, cancer_points["init"])]) > 1e-3
    got = structured.nn_loss_gradient_closure(X, Y)(var)
    want = dense.nn_loss_gradient_closure(X, Y)(var)
    assert_gradients_close(got, want, 1e-12, assert_close,
                           shapes=[(30, HIDDEN), (HIDDEN,), (HIDDEN, 2), (2,)])
    assert all(g.dtype == np.float64 for g in got)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("point", ["init", "after 3 steps"])
def test_structured_loss_equals_dense_on_lecture_data(point, cancer, cancer_points, assert_close):
    X, Y, _ = cancer
    var = cancer_points[point]
    got = structured.nn_loss_closure(X, Y)(var)
    want = dense.nn_loss_closure(X, Y)(var)
    assert np.ndim(got) == 0
    assert_close(got, want, 1e-12)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_float32_gradient_and_loss_on_lecture_data(cancer, tolerance, assert_close):
    """float32 stays float32 and agrees with the float32 dense reference.

    Contraction length N = 400 rows, so the float32 tolerance is (256 + 8 * 400) eps32 = 4e-4.
    """
    X, Y, _ = cancer
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    var = [v.astype(np.float32) for v in lecture_init()]
    got = structured.nn_loss_gradient_closure(X32, Y32)(var)
    want = dense.nn_loss_gradient_closure(X32, Y32)(var)
    assert all(w.dtype == np.float32 for w in want)
    assert_gradients_close(got, want, tolerance(np.float32, n=NUM_TRAIN), assert_close)
    loss = structured.nn_loss_closure(X32, Y32)(var)
    assert_close(loss, dense.nn_loss_closure(X32, Y32)(var), tolerance(np.float32, n=NUM_TRAIN),
                 bound=1.0)  # -log q is rounded to ~eps absolutely (q <= 1), see below


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims", [(1, 1, 1, 1), (1, 3, 2, 1), (6, 4, 1, 3), (9, 5, 4, 2), (30, 8, 6, 4)])
def test_structured_equals_dense_on_random_problems(dims, dtype, rng, tolerance, assert_close):
    """Degenerate shapes (N = 1, k = 1, m = 1) and both dtypes."""
    N, d, k, m = dims
    X, Y, var = standardized_problem(rng, N, d, k, m, dtype)
    got = structured.nn_loss_gradient_closure(X, Y)(var)
    want = dense.nn_loss_gradient_closure(X, Y)(var)
    assert all(w.dtype == dtype for w in want)
    assert_gradients_close(got, want, tolerance(dtype, n=N * max(k, m)), assert_close,
                           shapes=[(d, k), (k,), (k, m), (m,)])
    # the dense loss takes log(softmax): near q = 1 its log cancels and is off by ~eps
    # absolutely (the fused kernel's log-softmax is not), so the scale is 1, not |loss|
    assert_close(structured.nn_loss_closure(X, Y)(var), dense.nn_loss_closure(X, Y)(var),
                 tolerance(dtype, n=N * m), bound=1.0)


@pytest.mark.parametrize("layout", ["F", "strided", "swapped", "reversed"])
def test_non_contiguous_inputs(layout, rng, relayout, assert_close):
    X, Y, var = standardized_problem(rng, 9, 5, 4, 3)
    want = dense.nn_loss_gradient_closure(X, Y)(var)
    X_, Y_ = relayout(X, layout), relayout(Y, layout)
    var_ = [relayout(v, layout) for v in var]
    got = structured.nn_loss_gradient_closure(X_, Y_)(var_)
    assert_gradients_close(got, want, 1e-12, assert_close)
    assert_close(structured.nn_loss_closure(X_, Y_)(var_), dense.nn_loss_closure(X, Y)(var), 1e-12,
                 bound=1.0)


def test_integer_data_gives_float64_gradients(rng, assert_close):
    X, Y, var = standardized_problem(rng, 9, 5, 4, 3)
    Xi, Yi = np.rint(3 * X).astype(np.int64), Y.astype(np.int64)
    want = dense.nn_loss_gradient_closure(Xi, Yi)(var)
    got = structured.nn_loss_gradient_closure(Xi, Yi)(var)
    assert all(g.dtype == np.float64 for g in want)
    assert_gradients_close(got, want, 1e-12, assert_close)


def test_structured_loss_equals_dense_in_parallel(rng):
    """N = 100,000 takes the fused loss's parallel (chunked) path; rtol 1e-12 still holds.

    Every row's term -y log q is >= 0, so the sum has no cancellation and the
    reassociation across chunks moves it by at most ~N eps relative (2e-11
    worst case; sqrt(N) eps ~ 7e-14 typically).
    """
    N, d, k, m = 100_000, 30, 20, 2
    X, Y, var = standardized_problem(rng, N, d, k, m)
    got = structured.nn_loss_closure(X, Y)(var)
    want = dense.nn_loss_closure(X, Y)(var)
    np.testing.assert_allclose(got, want, rtol=1e-12)


# --- the dense reference against central finite differences ---------------------------

# h = 1e-6. The loss is a mean cross-entropy of O(1) size with O(1) derivatives
# on this standardized problem: the truncation error h^2/6 |f'''| is ~1e-13 and
# the rounding error ~ eps |f| / h ~ 2e-10. atol 1e-8 leaves a 50x margin;
# rtol 1e-6 covers the largest entries. A wrong gradient entry (sign,
# transposition, a missing 1/N) is off by >= 1e-3 here, five orders above.
FD_H, FD_RTOL, FD_ATOL = 1e-6, 1e-6, 1e-8


@pytest.mark.parametrize("dims", [(8, 4, 3, 3), (1, 2, 1, 2), (5, 3, 1, 2)])
def test_dense_gradient_matches_finite_differences(dims, rng):
    N, d, k, m = dims
    X, Y, var = standardized_problem(rng, N, d, k, m)
    f = dense.nn_loss_closure(X, Y)
    grad = dense.nn_loss_gradient_closure(X, Y)(var)
    for i, (block, g) in enumerate(zip(var, grad)):
        fd = np.empty(block.shape)
        for j in np.ndindex(block.shape):
            plus = [v.copy() for v in var]
            minus = [v.copy() for v in var]
            plus[i][j] += FD_H
            minus[i][j] -= FD_H
            fd[j] = (f(plus) - f(minus)) / (2 * FD_H)
        # bias gradients are (k,) for (1, k) biases: the lecture's quirk
        np.testing.assert_allclose(g, fd.reshape(g.shape), rtol=FD_RTOL, atol=FD_ATOL,
                                   err_msg=f"block {i}")
    assert max(np.max(np.abs(g)) for g in grad) > 1e-3  # the check is not vacuous


# --- the lecture's training log -----------------------------------------------------------

def lecture_log(mod, cancer, steps, line_search=None):
    """The lecture's gradient-descent script with ``mod``'s functions; returns its printed lines."""
    X, Y, targets = cancer
    x = lecture_init(mod.random_matrix)
    f = mod.nn_loss_closure(X, Y)
    df = mod.nn_loss_gradient_closure(X, Y)
    block_backtracking = line_search or mod.block_backtracking
    lines = []
    for i in range(steps):
        grad = df(x)  # the lecture evaluates df twice here (dx(x) and df(x)): same value
        ngrad = mod.negate_blocks(grad)
        x, fval = block_backtracking(x, f, ngrad, grad, alpha=0.1, verbose=False)
        train_data = mod.matrix_softmax(mod.logit(X @ x[0] + x[1]) @ x[2] + x[3])
        train_labels = np.argmax(train_data, axis=1)
        per_correct = 100 * (1 - np.count_nonzero(train_labels - targets) / NUM_TRAIN)
        lines.append((i, fval, mod.block_norm(ngrad), per_correct))
    return lines


def assert_log_matches_printed(lines):
    for (i, fval, gnorm, acc), printed in zip(lines, PRINTED):
        # printed with %f: the true value lies within half a unit of the 6th decimal
        want = printed.replace(",", "").split()
        assert int(want[1]) == i
        assert abs(fval - float(want[5])) <= 5e-7 + 1e-12, (LINE % (i, fval, gnorm, acc), printed)
        assert abs(gnorm - float(want[8])) <= 5e-7 + 1e-12, (LINE % (i, fval, gnorm, acc), printed)
        assert "%.1f" % acc == want[11], (LINE % (i, fval, gnorm, acc), printed)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_lecture_code_prints_its_log(cancer):
    """The verbatim lecture code and our data loading reproduce the printed log (2 steps: it is slow)."""
    assert_log_matches_printed(lecture_log(lecture, cancer, 2))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_structured_numerics_reproduce_the_printed_log(cancer):
    """All 10 printed steps with the structured loss and gradient (and the lecture's line search)."""
    assert_log_matches_printed(lecture_log(structured, cancer, 10, lecture.block_backtracking))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("mod,steps", [(structured, 10), (dense, 2)], ids=["structured", "dense"])
def test_lecture_script_runs_unchanged_with_fastjac(mod, steps, cancer):
    """The lecture's script with every function taken from fastjac, line search included."""
    assert_log_matches_printed(lecture_log(mod, cancer, steps))
