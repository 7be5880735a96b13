"""The fused fast path: loss-and-gradient and line search against the references.

``fastjac.dense`` (dense Jacobians, the lecture's algorithm) is the oracle on
small problems, the structured chain rule on larger ones; the fused kernels
must agree with both on every path they can take (serial, row chunks, any
block size), in float32 and float64, and be bitwise repeatable.

Tolerances. float64: rtol 1e-12, plus an absolute floor of 1e-14 times the
largest entry of the block, because an entry can be a sum of terms that
cancel (e.g. db2 = sum_rows (q - y) / N) and two correct summation orders then
differ by ~eps times the *terms*, not the result. float32: the fused kernel
computes in float32 (accumulation over N rows, d or k terms each), compared
with the float64 reference on the same float32 inputs: with eps32 = 6e-8 and
at most a few hundred terms per sum, errors stay below ~1e-5 of the block's
scale, so rtol 1e-4 with a floor of 1e-5 times the largest entry.
"""

import numpy as np
import pytest

import fastjac
from problems import fused_args, lecture_net
from fastjac import activations, dense, fused, losses, scalar, structured
from fastjac.linesearch import LineSearchError, block_backtracking, update_blocks

DTYPES = [np.float32, np.float64]


def problem(rng, N, d, k, m, dtype=np.float64, scale=0.5):
    X = rng.normal(size=(N, d))
    Y = np.eye(m)[rng.integers(0, m, N)]
    var = [scale * rng.normal(size=(d, k)), scale * rng.normal(size=(1, k)),
           scale * rng.normal(size=(k, m)), scale * rng.normal(size=(1, m))]
    return X.astype(dtype), Y.astype(dtype), [v.astype(dtype) for v in var]


def reference(X, Y, var, oracle):
    """(loss, grads) in float64 from ``oracle`` (dense or structured), grads shaped as fused's."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    var = [v.astype(np.float64) for v in var]
    return oracle.nn_loss_closure(X, Y)(var), oracle.nn_loss_gradient_closure(X, Y)(var)


def assert_matches(loss, grad, ref_loss, ref_grad, dtype):
    rtol, floor = (1e-12, 1e-14) if dtype == np.float64 else (1e-4, 1e-5)
    assert [g.shape for g in grad] == [g.shape for g in ref_grad]
    assert all(g.dtype == dtype for g in grad)
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    for g, r in zip(grad, ref_grad):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=floor * np.abs(r).max())


# The lecture's network as the fused kernels see it (``MLP([d, k, m], activation="logistic")``).
MODE = activations.LOGISTIC
ACTS = np.array([activations.LOGISTIC], dtype=np.int64)
LOSS = losses.SOFTMAX_CROSS_ENTROPY




def fused_loss_and_gradient(X, Y, theta, sizes, **kwargs):
    """Mean loss and gradient blocks [dW1 (d, k), db1 (k,), dW2 (k, m), db2 (m,)] of one
    ``fused.network_pass`` (the gradient divided by ``denom = N``, the loss sum by N)."""
    N = X.shape[0]
    total, g, _ = fused.network_pass(X, Y, None, theta, sizes, MODE, ACTS, LOSS, with_grad=True,
                                     denom=N, **kwargs)
    return total / N, fastjac.MLP(sizes, activation="logistic").unpack(g)


def fused_loss(X, Y, theta, sizes, **kwargs):
    """Mean loss of one ``fused.network_pass`` without gradient."""
    total, g, _ = fused.network_pass(X, Y, None, theta, sizes, MODE, ACTS, LOSS, with_grad=False,
                                     **kwargs)
    assert g is None
    return total / X.shape[0]


# Shapes: N=1, m=1, odd N that no block size divides, a layer wide enough for
# the BLAS-threaded serial plan (d k >= WIDE_MIN_ELEMENTS), k = 1.
SHAPES = {
    "N=1": (1, 3, 4, 2),
    "m=1": (13, 3, 4, 1),
    "odd": (37, 5, 7, 3),
    "k=1": (9, 4, 1, 3),
    "wide": (23, 64, 70, 11),
}
# (nchunks, block): serial in one block, serial in blocks of 7 (odd tail), one
# row per block, and 2 and 3 row chunks (the parallel kernel).
PATHS = {"serial": (1, None), "serial/7": (1, 7), "serial/1": (1, 1),
         "chunks2": (2, None), "chunks3/5": (3, 5)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_public_closure_matches_dense_reference(shape, dtype, rng):
    X, Y, var = problem(rng, *SHAPES[shape], dtype=dtype)
    loss, grad = fastjac.nn_loss_and_gradient_closure(X, Y)(var)
    assert isinstance(loss, float)
    assert_matches(loss, grad, *reference(X, Y, var, dense), dtype)
    # the dense module's own closure is exactly its two closures
    d_loss, d_grad = dense.nn_loss_and_gradient_closure(X, Y)(var)
    r_loss, r_grad = dense.nn_loss_closure(X, Y)(var), dense.nn_loss_gradient_closure(X, Y)(var)
    assert d_loss == r_loss and all(np.array_equal(a, b) for a, b in zip(d_grad, r_grad))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", ["odd", "wide", "N=1"])
def test_every_path_matches_dense_reference(shape, path, dtype, rng):
    X, Y, var = problem(rng, *SHAPES[shape], dtype=dtype)
    nchunks, block = PATHS[path]
    args = fused_args(X, Y, var)
    loss, grad = fused_loss_and_gradient(*args, nchunks=min(nchunks, X.shape[0]), block=block)
    ref = reference(X, Y, var, dense)
    assert_matches(loss, grad, *ref, dtype)
    loss_only = fused_loss(*args, nchunks=min(nchunks, X.shape[0]), block=block)
    np.testing.assert_allclose(loss_only, ref[0], rtol=1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,d,k,m", [(3001, 30, 20, 2), (1500, 70, 64, 10)])
def test_large_problems_match_structured_chain_rule(N, d, k, m, dtype, rng):
    """Above the parallel threshold (narrow: row chunks; wide: BLAS-threaded blocks)."""
    X, Y, var = problem(rng, N, d, k, m, dtype=dtype, scale=0.3)
    loss, grad = fastjac.nn_loss_and_gradient_closure(X, Y)(var)
    assert_matches(loss, grad, *reference(X, Y, var, structured), dtype)
    for nchunks, block in [(1, 64), (2, 100), (3, 256)]:
        loss, grad = fused_loss_and_gradient(*fused_args(X, Y, var), nchunks=nchunks, block=block)
        assert_matches(loss, grad, *reference(X, Y, var, structured), dtype)


def test_plan_picks_paths_from_sizes(monkeypatch):
    """Serial below the work threshold; one chunk per thread above it, in blocks of at
    most CHUNK_BLOCK_ROWS rows whose scratch stays below CHUNK_SCRATCH_BYTES, BLAS held
    at one thread where a block's GEMM could be threaded. The thread count is pinned:
    the plan must not depend on the machine."""
    monkeypatch.setattr(fused.numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(fused.blas, "threads_controllable", lambda: True)
    rows = fused.CHUNK_BLOCK_ROWS
    assert fused.plan(400, [30, 20, 2]) == fused.Plan(2, 200)  # the lecture: 2 x 200 rows
    assert fused.plan(10, [30, 20, 2]) == fused.Plan(1, 10)
    assert fused.plan(1, [1, 1, 1]) == fused.Plan(1, 1)
    for N, sizes in [(400_000, [30, 20, 2]), (100_000, [30, 64, 10]),
                     (100_000, [64, 128, 64, 10]), (1797, [64, 100, 10])]:
        assert fused.plan(N, sizes) == fused.Plan(2, rows)
    # scratch 8 (2 sum(hidden) + m + 4) bytes a row bounds very wide layers' blocks
    for sizes in ([256, 512, 10], [8, 784, 128, 10], [4, 4096, 2]):
        row_bytes = 8 * (2 * sum(sizes[1:-1]) + sizes[-1] + 4)
        assert fused.plan(40_000, sizes) == fused.Plan(
            2, min(rows, fused.CHUNK_SCRATCH_BYTES // row_bytes))
    assert fused.plan(4096, [4, 4096, 2]).block * 8 * (2 * 4096 + 6) <= fused.CHUNK_SCRATCH_BYTES
    # BLAS is held at one thread only where a GEMM of a block reaches BLAS's threshold
    assert not fused.one_blas_thread(2, 200, fused.layer_products([30, 20, 2]))  # the lecture
    assert fused.one_blas_thread(2, rows, fused.layer_products([64, 128, 64, 10]))
    assert not fused.one_blas_thread(1, rows, fused.layer_products([64, 128, 64, 10]))
    # any depth: the work is summed over the layers (640 multiply-adds per row for
    # [30, 20, 2], 1040 with one more hidden layer of 20)
    N = fused.PARALLEL_MIN_ELEMENTS // 1040 + 1
    assert N * 640 < fused.PARALLEL_MIN_ELEMENTS <= N * 1040
    assert fused.plan(N, [30, 20, 2]) == fused.Plan(1, min(N, fused.BLOCK_ROWS))
    assert fused.plan(N, [30, 20, 20, 2]).nchunks == 2
    monkeypatch.setattr(fused.numba, "get_num_threads", lambda: 1)
    assert fused.plan(400_000, [30, 20, 2]).nchunks == 1  # one thread: serial


def test_line_search_holds_blas_for_its_gemms(monkeypatch):
    """A line-search trial's GEMMs are the layers above the first and, with more than
    SMALL_M outputs, the output layer's: BLAS is held at one thread when any of them could
    be threaded, also for one hidden layer (whose only trial GEMM is the output layer's)."""
    monkeypatch.setattr(fused.numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(fused.blas, "threads_controllable", lambda: True)
    rng = np.random.default_rng(0)

    N = 1000
    for sizes, held in [([20, 128, 10], True), ([20, 128, fused.SMALL_M], False),
                        ([20, 8, 128, 2], True), ([20, 8, 8, 2], False)]:
        net = fastjac.MLP(sizes, "tanh")
        X = rng.standard_normal((N, sizes[0]))
        Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], N)]
        theta = net.pack(net.init(seed=0))
        run = fused.LineLoss(X, Y, None, np.array(sizes), net._mode, net._acts, net._loss,
                             theta, theta.copy())
        assert run.nchunks == 2 and run.block == fused.BLOCK_ROWS
        assert run.one_blas_thread == held, sizes
        # and with held BLAS it is still the loss along the line (theta + 0.5 theta)
        f = net.loss_closure(X, Y)
        assert run.sums([0.5])[0] / N == pytest.approx(f(net.unpack(1.5 * theta)), rel=1e-12)


def test_plan_without_blas_thread_control(monkeypatch):
    """Where BLAS's threads cannot be held, blocks are capped so that BLAS never threads a
    block's GEMM, and layers too wide for that run in one thread with BLAS threading its
    GEMMs."""
    monkeypatch.setattr(fused.numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(fused.blas, "threads_controllable", lambda: False)
    cap = (fused.BLAS_THREAD_MIN_MNK - 1) // 600
    assert fused.plan(400, [30, 20, 2]) == fused.Plan(2, 200)
    assert fused.plan(400_000, [30, 20, 2]) == fused.Plan(2, min(cap, fused.CHUNK_BLOCK_ROWS))
    for N, sizes in [(400_000, [30, 20, 2]), (100_000, [30, 64, 10]), (5000, [8, 9, 7, 3])]:
        p = fused.plan(N, sizes)
        assert p.nchunks == 2 and p.block * max(fused.layer_products(sizes)) < fused.BLAS_THREAD_MIN_MNK
    assert fused.plan(100_000, [30, 64, 10]) == fused.Plan(2, (fused.BLAS_THREAD_MIN_MNK - 1) // 1920)
    assert fused.plan(100_000, [64, 128, 64, 10]) == fused.Plan(1, fused.WIDE_BLOCK_ROWS)  # cap 31
    assert fused.plan(40_000, [256, 512, 10]) == fused.Plan(1, fused.WIDE_BLOCK_ROWS)
    assert fused.plan(40_000, [8, 784, 128, 10]) == fused.Plan(1, fused.WIDE_BLOCK_ROWS)


def test_pass_without_targets_gives_classes_or_outputs_only(rng):
    """With Y None a pass computes no loss: the classes (gradient kernel) or the outputs
    (outputs kernel) come out as predict's, and asking for a gradient is an error."""
    net = fastjac.MLP([6, 5, 3], "tanh")
    params = net.init(seed=0)
    X = rng.standard_normal((40, 6))
    theta = net.pack(params)
    sizes, mode, acts, code = np.array(net.sizes), net._mode, net._acts, net._loss
    classes = np.empty(40, dtype=np.int64)
    total, g, out = fused.network_pass(X, None, None, theta, sizes, mode, acts, code,
                                       with_grad=False, classes=classes)
    assert total == 0 and g is None and out is None
    probs = net.predict(X, params)
    np.testing.assert_array_equal(classes, np.argmax(probs, axis=1))
    _, _, out = fused.network_pass(X, None, None, theta, sizes, mode, acts, code,
                                   with_grad=False, outputs=True)
    np.testing.assert_array_equal(out, probs)
    with pytest.raises(ValueError, match="targets"):
        fused.network_pass(X, None, None, theta, sizes, mode, acts, code, with_grad=True)


def test_non_contiguous_inputs_and_bias_shapes(rng):
    X, Y, var = problem(rng, 80, 6, 5, 3)
    Xs, Ys = np.repeat(X, 2, axis=0)[::2], np.asfortranarray(Y)
    assert not Xs.flags.c_contiguous and not Ys.flags.c_contiguous
    varF = [np.asfortranarray(var[0]), var[1][0], np.asfortranarray(var[2]), var[3]]
    ref_loss, ref_grad = reference(X, Y, var, dense)
    for XX, YY, vv in [(Xs, Ys, var), (X, Y, varF), (X.astype(int), Y, var)]:
        if XX.dtype.kind == "i":
            ref_loss, ref_grad = reference(XX.astype(float), Y, var, dense)
        loss, grad = fastjac.nn_loss_and_gradient_closure(XX, YY)(vv)
        assert_matches(loss, grad, ref_loss, ref_grad, np.float64)
    # mixed float32 data and float64 blocks promote to float64, as the other closures do
    loss, grad = fastjac.nn_loss_and_gradient_closure(X.astype(np.float32), Y)(var)
    assert all(g.dtype == np.float64 for g in grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [50, 5000])
def test_repeated_calls_are_bitwise_identical(N, dtype, rng):
    X, Y, var = problem(rng, N, 30, 20, 2, dtype=dtype)
    fg = fastjac.nn_loss_and_gradient_closure(X, Y)
    first = fg(var)
    args = fused_args(X, Y, var)
    forced = fused_loss_and_gradient(*args, nchunks=2, block=33)
    for _ in range(4):
        loss, grad = fg(var)
        assert loss == first[0] and all(np.array_equal(a, b) for a, b in zip(grad, first[1]))
        loss, grad = fused_loss_and_gradient(*args, nchunks=2, block=33)
        assert loss == forced[0] and all(np.array_equal(a, b) for a, b in zip(grad, forced[1]))


def test_later_calls_still_check_and_convert_the_blocks(rng):
    """The closure skips re-validating blocks laid out as last time; any change is checked again."""
    X, Y, var = problem(rng, 30, 4, 3, 2)
    fg = fastjac.nn_loss_and_gradient_closure(X, Y)
    ref = reference(X, Y, var, dense)
    for _ in range(2):
        assert_matches(*fg(var), *ref, np.float64)
    assert_matches(*fg([np.asfortranarray(var[0]), var[1][0], var[2], var[3]]), *ref, np.float64)
    f32 = [v.astype(np.float32) for v in var]
    assert_matches(*fg(f32), *reference(X, Y, f32, dense), np.float64)  # promoted by float64 X
    with pytest.raises(ValueError):
        fg([var[0][:, :2], var[1], var[2], var[3]])
    with pytest.raises(TypeError):
        fg([var[0].astype(complex), var[1], var[2], var[3]])
    with pytest.raises(ValueError):
        fg(var[:3])
    assert_matches(*fg(var), *ref, np.float64)


def test_inputs_are_not_modified(rng):
    X, Y, var = problem(rng, 300, 8, 6, 3)
    copies = [a.copy() for a in [X, Y, *var]]
    g = as_var_shapes(fastjac.nn_loss_and_gradient_closure(X, Y)(var)[1], var)
    fastjac.nn_line_search_closure(X, Y)(var, fastjac.negate_blocks(g), g)
    assert all(np.array_equal(a, b) for a, b in zip([X, Y, *var], copies))


def test_extreme_logits_stay_finite(rng):
    """|Z1| and |Z2| up to ~1e4: logistic saturates without overflow, log-softmax stays finite.

    (The chain-rule path divides by Q = 0 here; tests/test_extreme.py checks the
    values against an extended-precision reference.)
    """
    X, Y, var = problem(rng, 60, 5, 6, 3, scale=1.0)
    var = [1e3 * var[0], 1e3 * var[1], 1e3 * var[2], var[3]]
    loss, grad = fastjac.nn_loss_and_gradient_closure(X, Y)(var)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grad)
    np.testing.assert_allclose(loss, structured.nn_loss_closure(X, Y)(var), rtol=1e-12)


def test_nan_propagates(rng):
    X, Y, var = problem(rng, 20, 3, 4, 2)
    X[3, 1] = np.nan
    loss, grad = fastjac.nn_loss_and_gradient_closure(X, Y)(var)
    assert np.isnan(loss) and np.isnan(grad[0]).any()
    assert np.isnan(fastjac.nn_loss_closure(X, Y)(var))


def test_no_per_row_temporaries(rng):
    """Scratch is O(block (2 k + m)) per thread: far below one (N, k) array."""
    import tracemalloc
    X, Y, var = problem(rng, 100_000, 30, 20, 2)
    fg = fastjac.nn_loss_and_gradient_closure(X, Y)
    fg(var)
    tracemalloc.start()
    try:
        fg(var)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"peak {peak} B; one (N, k) float64 array is {X.shape[0] * 20 * 8} B"


@pytest.mark.parametrize("name", ["exp_nonpos", "exp_poly_nonpos"])
def test_exp_nonpos_is_accurate(name):
    """Both exps (the table one of logistic and softmax, the table-free one of tanh) are
    within 2 ulp of numpy's over [-760, 0], exact 0 below underflow, NaN for NaN."""
    x = np.concatenate([-np.linspace(0, 760, 200_001), -np.geomspace(1e-300, 1, 1001),
                        [0.0, -0.0, -745.13, -745.14, -1e4, -np.inf, np.nan]])
    out = np.empty_like(x)
    _exp_all(getattr(scalar, name), x, out)
    ref = np.exp(x)
    normal = ref >= np.finfo(np.float64).tiny
    assert np.all(np.abs(out - ref)[normal] <= 2 * np.spacing(ref[normal]))  # within 2 ulp
    assert np.all(np.abs(out - ref)[~normal & ~np.isnan(ref)] <= 5e-324)
    assert out[-3] == 0 and out[-2] == 0 and np.isnan(out[-1])


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63, reason="needs 80-bit long double")
def test_exp_table_is_correctly_rounded():
    exact = np.exp2(np.arange(64, dtype=np.longdouble) / 64)
    assert np.array_equal(scalar._EXP2_J64, exact.astype(np.float64))
    split = np.longdouble(scalar._LN2_64_HI) + np.longdouble(scalar._LN2_64_LO)
    assert abs(split - np.log(np.longdouble(2)) / 64) < 1e-26
    assert float(np.float32(scalar._LN2_64_HI)) == scalar._LN2_64_HI  # 24-bit: n * HI exact


def _exp_all(exp, x, out):
    from numba import njit

    @njit
    def run(x, out):
        for i in range(x.size):
            out[i] = exp(x[i])

    run(x, out)


# ---------------------------------------------------------------- line search

def lecture_start():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    X = data["data"][:400]
    Y = np.eye(2)[data.target[:400]]
    state = np.random.get_state()
    np.random.seed(1234)
    var = [fastjac.random_matrix((30, 20)), np.zeros((1, 20)), fastjac.random_matrix((20, 2)),
           np.zeros((1, 2))]
    np.random.set_state(state)
    return X, Y, var


def as_var_shapes(grad, var):
    return [g.reshape(v.shape) for g, v in zip(grad, var)]


@pytest.fixture(params=["precomputed", "direct"])
def line_path(request, monkeypatch):
    """Force the line search's path: Z1 + t P precomputed (``LineLoss.sums``), or one fused
    loss per trial; the test can check the path was taken (``line_path[1]``: sums calls)."""
    precomputed = request.param == "precomputed"
    monkeypatch.setattr(fused, "LINESEARCH_MIN_INPUTS", 0 if precomputed else 10**9)
    monkeypatch.setattr(fused, "LINESEARCH_MAX_HELD", 10**12 if precomputed else 0)
    calls = []
    sums = fused.LineLoss.sums
    monkeypatch.setattr(fused.LineLoss, "sums",
                        lambda self, ts: calls.append(list(ts)) or sums(self, ts))
    return request.param, calls


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_line_search_follows_block_backtracking_for_many_steps(dtype, line_path):
    """The lecture's training on breast cancer: same t, nfev and blocks; fx to rtol 1e-12."""
    path, sums_calls = line_path
    X, Y, var = lecture_start()
    X, Y, var = X.astype(dtype), Y.astype(dtype), [v.astype(dtype) for v in var]
    f = structured.nn_loss_closure(X, Y)
    fg = fastjac.nn_loss_and_gradient_closure(X, Y)
    ls = fastjac.nn_line_search_closure(X, Y)
    for step in range(60 if dtype == np.float64 else 20):
        _, grad = fg(var)
        g = as_var_shapes(grad, var)
        dx = fastjac.negate_blocks(g)
        plain = block_backtracking(var, f, dx, g)
        fast = ls(var, dx, g)
        assert (fast.t, fast.nfev) == (plain.t, plain.nfev), step
        # float32: Z1 + t P and X (W1 + t dW1) round differently in float32
        # (eps 6e-8), and the mean loss is accumulated in float64: fx agrees to ~1e-7
        np.testing.assert_allclose(fast.fx, plain.fx, rtol=1e-12 if dtype == np.float64 else 1e-6)
        assert all(np.array_equal(a, b) for a, b in zip(fast.x, plain.x))
        x, fx = fast
        assert isinstance(fast, fastjac.LineSearchResult) and fx == fast.fx
        var = plain.x
    assert bool(sums_calls) == (path == "precomputed")


def lecture_line(X, Y, x0, dx, **kwargs):
    """The ``LineLoss`` the lecture's line search builds for x0, dx (and its N)."""
    Xc, Yc, theta, sizes = fused_args(X, Y, x0)
    dtheta = lecture_net(x0).pack(dx, dtype=theta.dtype)
    return fused.LineLoss(Xc, Yc, None, sizes, MODE, ACTS, LOSS, theta, dtheta, **kwargs), Xc.shape[0]


@pytest.mark.parametrize("nchunks,block", [(1, 7), (2, 50), (3, 256)])
def test_line_loss_paths_agree(nchunks, block, rng):
    """LineLoss.sums(ts) / N is the loss at update_blocks(x0, dx, t) (rtol 1e-12) on every path."""
    X, Y, var = problem(rng, 401, 6, 5, 3)
    dvar = [rng.normal(size=v.shape) for v in var]
    f = structured.nn_loss_closure(X, Y)
    line, N = lecture_line(X, Y, var, dvar, nchunks=nchunks, block=block)
    assert (line.nchunks, line.block) == (nchunks, block)
    ts = [0.0, 1.0, 0.25, 1e-3]
    for t, total in zip(ts, line.sums(ts)):
        np.testing.assert_allclose(total / N, f(update_blocks(var, dvar, t)), rtol=1e-12)


def test_line_search_picks_its_path_from_the_sizes():
    assert fused.precompute_line(400, [30, 20, 2])  # the lecture's: 16,000 values held
    assert fused.precompute_line(40_000, [256, 512, 10])  # wide: skips X W1 in every trial
    assert not fused.precompute_line(400_000, [30, 20, 2])  # 16 M values: a loss per trial
    assert fused.precompute_line(400, [30, 20, 20, 2])  # only the first layer is held, any depth
    assert not fused.precompute_line(400_000, [30, 20, 20, 2])


def test_fused_line_search_fails_like_block_backtracking(rng, line_path):
    path, sums_calls = line_path
    X, Y, var = problem(rng, 40, 4, 3, 2)
    f = structured.nn_loss_closure(X, Y)
    g = as_var_shapes(fastjac.nn_loss_and_gradient_closure(X, Y)(var)[1], var)
    neg = fastjac.negate_blocks(g)
    for ls in (fastjac.nn_line_search_closure(X, Y), dense.nn_line_search_closure(X, Y)):
        bad = [v.copy() for v in var]
        bad[2][0, 0] = np.inf
        for args, kwargs, match in [
            ((bad, neg, g), {}, "not finite"),
            ((var, g, g), {}, "not a descent direction"),
            ((var, [1e6 * d for d in neg], g), {"max_iter": 1}, "no step accepted"),
        ]:
            with pytest.raises(LineSearchError, match=match):
                block_backtracking(args[0], f, *args[1:], **kwargs)
            with pytest.raises(LineSearchError, match=match):
                ls(*args, **kwargs)
        with pytest.raises(ValueError, match="alpha and beta"):
            ls(var, neg, g, alpha=1.5)
        res = ls(var, [1e3 * d for d in neg], g, alpha=0.3, beta=0.8)
        ref = block_backtracking(var, f, [1e3 * d for d in neg], g, alpha=0.3, beta=0.8)
        assert (res.t, res.nfev) == (ref.t, ref.nfev)
    assert bool(sums_calls) == (path == "precomputed")


def test_dense_line_search_is_block_backtracking(rng):
    X, Y, var = problem(rng, 30, 4, 3, 2)
    g = as_var_shapes(dense.nn_loss_gradient_closure(X, Y)(var), var)
    res = dense.nn_line_search_closure(X, Y)(var, fastjac.negate_blocks(g), g, alpha=0.2)
    ref = block_backtracking(var, dense.nn_loss_closure(X, Y), fastjac.negate_blocks(g), g, alpha=0.2)
    assert (res.t, res.nfev, res.fx) == (ref.t, ref.nfev, ref.fx)
