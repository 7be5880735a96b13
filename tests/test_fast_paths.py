"""Fast paths beside the fused pass: own log, fused predict, ``f0``, and the batched line search.

* ``scalar.log_pos`` against an 80-bit ``log``;
* ``structured.nn_predict`` (fused argmax) against the dense reference, and the
  kernels' argmax (``losses.argmax_rows``, seen through ``nn_predict`` and
  ``fg(classes=True)``) against ``np.argmax``;
* ``f0=`` saves exactly one evaluation and changes nothing else;
* the line search over ``LineLoss.sums`` against ``update_blocks`` and
  ``block_backtracking``: the parameters at t are rounded as numpy rounds
  ``x0 + t dx`` (``LineLoss.thetas``), so the loss at ``res.x`` is ``res.fx``
  bitwise, and a batch of steps gives the bits of the same steps one at a
  time (the closure's speculative batches change nothing);
* ``LineLoss`` / ``line_rows`` / ``softmax_cross_entropy_rows`` on the shapes
  the other tests leave out (m > 8, k = 1, zero and soft label rows).
"""

import numba
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastjac
from fastjac import activations, dense, fused, losses, scalar, structured
from fastjac.linesearch import armijo_setup, block_backtracking, update_blocks
from problems import fused_args, lecture_net, standardized_problem

DTYPES = [np.float32, np.float64]
F64 = np.finfo(np.float64)

# The lecture's network as the fused kernels see it (``MLP([d, k, m], activation="logistic")``).
MODE = activations.LOGISTIC
ACTS = np.array([activations.LOGISTIC], dtype=np.int64)
LOSS = losses.SOFTMAX_CROSS_ENTROPY


# Not cached: Numba's disk cache would keep a stale copy of scalar.log_pos after an edit.
@numba.njit(fastmath={"contract"})
def _log_all(x, out):
    for i in range(x.size):
        out[i] = scalar.log_pos(x[i])


def log_pos_all(x):
    out = np.empty_like(x)
    _log_all(x, out)
    return out


@numba.njit(fastmath={"contract"})
def log_pos_one(x):
    """``scalar.log_pos`` of one scalar, outside a loop (helpers have no Python entry)."""
    return scalar.log_pos(x)


@numba.njit
def _sce_rows(ZT, Y, w, with_grad, denom, rows):
    return losses.softmax_cross_entropy_rows(ZT, Y, w, with_grad, denom, rows)


def grad_blocks(X, Y, var):
    """(loss, gradient shaped as var) from the fused closure."""
    loss, grad = fastjac.nn_loss_and_gradient_closure(X, Y)(var)
    return loss, [g.reshape(v.shape) for g, v in zip(grad, var)]




class Counted:
    """``f`` that counts its calls."""

    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, x):
        self.calls += 1
        return self.f(x)


# ---------------------------------------------------------------- log_pos


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63, reason="needs 80-bit long double")
@pytest.mark.parametrize("values", ["[1, 2)", "[0.5, 1.5)", "exp(+-700)", "edges"])
def test_log_pos_within_one_ulp(values, rng):
    """log_pos (in a kernel loop and on one scalar) is within 1 ulp of an 80-bit log."""
    x = {
        "[1, 2)": rng.uniform(1, 2, 100_000),
        "[0.5, 1.5)": rng.uniform(0.5, 1.5, 100_000),
        "exp(+-700)": np.exp(rng.uniform(-700, 700, 100_000)),
        "edges": np.array([1.0, 2.0, np.sqrt(2), np.sqrt(0.5), np.nextafter(np.sqrt(2), 0),
                           np.nextafter(np.sqrt(0.5), 1), 1e-300, 1e300, F64.max, F64.tiny]),
    }[values]
    out = log_pos_all(x)
    exact = np.log(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(exact.astype(np.float64))).astype(np.longdouble)
    err = np.abs(out.astype(np.longdouble) - exact) / ulp
    assert err.max() <= 1, f"{err.max():.3f} ulp at x = {x[np.argmax(err)]!r}"
    assert_array_equal([log_pos_one(v) for v in x[:200]], out[:200])
    if values == "edges":
        assert out[0] == 0.0 and out[1] == np.log(2.0)


def test_log_pos_nan_and_inf():
    """NaN gives NaN and +inf gives +inf, in a loop and as a scalar call."""
    out = log_pos_all(np.array([np.nan, np.inf, 2.0]))
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == np.log(2.0)
    assert np.isnan(log_pos_one(np.nan)) and log_pos_one(np.inf) == np.inf


# ---------------------------------------------------------------- predict


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,d,k,m", [(1, 3, 4, 2), (257, 5, 6, 1), (257, 4, 3, 2),
                                     (33, 6, 5, 7), (301, 7, 9, 12), (1, 2, 3, 12)])
def test_nn_predict_matches_dense(N, d, k, m, dtype, rng):
    """Fused nn_predict gives dense's classes, int64 (N,), on both sides of SMALL_M."""
    X, _, var = standardized_problem(rng, N, d, k, m, dtype=dtype)
    got = structured.nn_predict(X, var)
    assert got.dtype == np.int64 and got.shape == (N,)
    ref = dense.nn_predict(X, var)
    assert_array_equal(got, ref)
    if m > 1 and N > 100:
        assert len(np.unique(got)) > 1  # not a degenerate all-one-class problem


@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_rows_is_numpy_argmax(dtype):
    """argmax_rows picks np.argmax's index: first of equal maxima, first NaN, -0.0 == 0.0.

    ``argmax_rows`` is inlined into the kernels, so each row goes through the
    fused pass as the logits of a one-row network with k = 1: X = 0 gives the
    hidden unit s(0) = 0.5 exactly, so W2 = 2 row, b2 = -0.0 give the logits
    ``-0.0 + 0.5 (2 v) = v`` bitwise for every v (signed zeros, infinities
    and NaN included); m = 4 <= SMALL_M, the output layer's loops.
    """
    nan, inf = np.nan, np.inf
    rows = [
        [1.0, 3.0, 2.0, 0.0],
        [3.0, 3.0, 1.0, 3.0],     # tie: first
        [1.0, 2.0, 2.0, 1.0],     # tie in the middle
        [5.0, 5.0, 5.0, 5.0],     # all equal
        [1.0, nan, 9.0, nan],     # first NaN beats a larger value after it
        [9.0, 1.0, nan, 2.0],     # NaN after the maximum
        [nan, 9.0, 1.0, 2.0],     # NaN first
        [-inf, -inf, -inf, -inf],
        [-inf, -1e30, inf, inf],
        [-0.0, 0.0, -1.0, 0.0],   # signed zeros tie
        [0.0, 0.0, 0.0, 1.0],     # maximum last
    ]
    Z = np.array(rows, dtype=dtype)
    X, Y = np.zeros((1, 1), dtype=dtype), np.zeros((1, 4), dtype=dtype)
    out, out_fg = [], []
    for z in Z:
        var = [np.zeros((1, 1), dtype=dtype), np.zeros((1, 1), dtype=dtype),
               (2 * z)[None, :], np.full((1, 4), -0.0, dtype=dtype)]
        assert_array_equal(dense.logit(X @ var[0] + var[1]) @ var[2] + var[3], z[None, :])
        out.append(structured.nn_predict(X, var)[0])
        out_fg.append(fastjac.nn_loss_and_gradient_closure(X, Y, classes=True)(var)[2][0])
    assert_array_equal(out, np.argmax(Z, axis=1))
    assert_array_equal(out, [1, 0, 1, 0, 1, 2, 0, 0, 2, 0, 3])
    assert_array_equal(out_fg, out)


# ---------------------------------------------------------------- f0


def network(rng, dtype=np.float64, N=40):
    X, Y, var = standardized_problem(rng, N, 4, 3, 2, dtype=dtype)
    f0, g = grad_blocks(X, Y, var)
    return X, Y, var, f0, g


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e6])
def test_block_backtracking_f0_saves_one_call(scale, rng):
    """f0=f(x0) gives the same x, fx, t, nfev as without it and calls f once fewer."""
    X, Y, var, _, g = network(rng)
    f = structured.nn_loss_closure(X, Y)
    dx = [-scale * gi for gi in g]
    plain, given = Counted(f), Counted(f)
    kwargs = {"max_iter": 60}
    ref = block_backtracking(var, plain, dx, g, **kwargs)
    res = block_backtracking(var, given, dx, g, f0=f(var), **kwargs)
    assert (res.t, res.nfev, res.fx) == (ref.t, ref.nfev, ref.fx)
    assert all(np.array_equal(a, b) for a, b in zip(res.x, ref.x))
    assert given.calls == plain.calls - 1 == ref.nfev - 1


@pytest.fixture(params=["direct", "line", "mixed"])
def ls_path(request, monkeypatch):
    """Force nn_line_search_closure's path (``line``: the first layer along the line held,
    trials by ``LineLoss.sums``); ``mixed`` passes float32 dx with float64 x0 where the line
    path would be taken: the blocks are not all in the data's dtype, so each trial is one
    fused loss at ``update_blocks``' point (``theta + t dtheta`` would round differently).
    Returns the path and the list of ``LineLoss.sums`` calls (their steps)."""
    direct = request.param == "direct"
    monkeypatch.setattr(fused, "LINESEARCH_MIN_INPUTS", 10**9 if direct else 0)
    monkeypatch.setattr(fused, "LINESEARCH_MAX_HELD", 0 if direct else 10**12)
    calls = []
    sums = fused.LineLoss.sums

    def spy(self, ts):
        calls.append(list(ts))
        return sums(self, ts)

    monkeypatch.setattr(fused.LineLoss, "sums", spy)
    return request.param, calls


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # dense's exp/log on long steps
@pytest.mark.parametrize("module", [dense, fastjac], ids=["dense", "fastjac"])
def test_line_search_closure_f0(module, ls_path, rng):
    """ls(..., f0=f(x0)) matches ls(...) (t, nfev, fx); f0 is used, not recomputed; bad f0 raises."""
    path, sums_calls = ls_path
    used_line = module is fastjac and path == "line"
    X, Y, var, f0, g = network(rng)
    if module is dense:
        f0 = dense.nn_loss_closure(X, Y)(var)
    ls = module.nn_line_search_closure(X, Y)
    for scale in [1.0, 10.0, 100.0]:
        dx = [-scale * gi for gi in g]
        if path == "mixed":
            dx = [d.astype(np.float32) for d in dx]
        sums_calls.clear()
        ref = ls(var, dx, g)
        assert (sums_calls[:1] == [[0.0]]) == used_line  # f(x0) on the line, t = 0
        sums_calls.clear()
        res = ls(var, dx, g, f0=f0)
        assert [0.0] not in sums_calls  # the given f0, not recomputed
        assert (res.t, res.nfev) == (ref.t, ref.nfev), scale
        if module is dense:
            assert res.fx == ref.fx
        assert_allclose(res.fx, ref.fx, rtol=1e-13)
        assert all(np.array_equal(a, b) for a, b in zip(res.x, ref.x))
    assert ref.t < 1  # the largest step is rejected at t = 1 ...
    assert ls(var, dx, g, f0=1e300).t == 1.0  # ... unless the given f0 says otherwise
    for bad in [np.nan, np.inf, -np.inf]:
        with pytest.raises(fastjac.LineSearchError, match="not finite"):
            ls(var, dx, g, f0=bad)
    assert bool(sums_calls) == used_line


# ---------------------------------------------------------------- the line search over LineLoss.sums


def line_for(X, Y, x0, dx, **kwargs):
    """The LineLoss nn_line_search_closure builds for x0, dx (same GEMM, X^T given)."""
    Xc, Yc, theta, sizes = fused_args(X, Y, x0)
    dtheta = lecture_net(x0).pack(dx, dtype=theta.dtype)
    return fused.LineLoss(Xc, Yc, None, sizes, MODE, ACTS, LOSS, theta, dtheta, **kwargs)


@pytest.fixture
def sums_calls(monkeypatch):
    """The steps of every ``LineLoss.sums`` call (a spy: the line path was taken)."""
    calls = []
    sums = fused.LineLoss.sums
    monkeypatch.setattr(fused.LineLoss, "sums",
                        lambda self, ts: calls.append(list(ts)) or sums(self, ts))
    return calls


@pytest.fixture(params=["serial", "threads"])
def line_chunks(request, monkeypatch):
    """Force the LineLoss of nn_line_search_closure serial or chunked (one chunk per thread);
    returns ``chunks(N)``, the number of row chunks it then uses for N rows."""
    serial = request.param == "serial"
    monkeypatch.setattr(fused, "LINE_PARALLEL_MIN_ELEMENTS", 10**12 if serial else 0)
    return lambda N: 1 if serial else min(numba.get_num_threads(), N)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,d,k,m", [(40, 4, 3, 2), (400, 30, 20, 2), (60, 5, 4, 11)])
def test_line_search_is_bitwise_update_blocks(N, d, k, m, dtype, rng, sums_calls):
    """Line path: res.x is update_blocks(x0, dx, t), LineLoss's parameters at res.t are res.x
    bitwise (``thetas``), and the loss there is res.fx exactly."""
    X, Y, x0 = standardized_problem(rng, N, d, k, m, dtype=dtype)
    _, g = grad_blocks(X, Y, x0)
    ls = fastjac.nn_line_search_closure(X, Y)
    for scale, beta in [(1.0, 0.5), (30.0, 0.5), (30.0, 0.8)]:
        dx = [-scale * gi for gi in g]
        res = ls(x0, dx, g, beta=beta)
        assert sums_calls, "not the line path"
        sums_calls.clear()
        expected = update_blocks(x0, dx, res.t)
        for a, b in zip(res.x, expected):
            assert a.dtype == b.dtype == dtype
            assert_array_equal(a, b)
        line = line_for(X, Y, x0, dx)
        assert line.sums([res.t])[0] / N == res.fx
        assert_array_equal(line.thetas[0], lecture_net(x0).pack(res.x))
    assert res.t < 1 and res.t != 2.0 ** round(np.log2(res.t))  # t inexact in float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_line_loss_thetas_round_as_update_blocks(dtype, rng):
    """LineLoss's parameters at t are update_blocks(x0, dx, t) bitwise, in a batch or alone
    (t in the dtype, a product then a sum, no FMA)."""
    X, Y, x0 = standardized_problem(rng, 20, 3, 9, 4, dtype=dtype)
    dx = [rng.standard_normal(v.shape).astype(dtype) for v in x0]
    net = lecture_net(x0)
    theta, dtheta = net.pack(x0), net.pack(dx)
    line = line_for(X, Y, x0, dx)
    ts = [1.0, 0.8 ** 7, 0.1 ** 3, 1 / 3, 0.3]
    line.sums(ts)
    batch = line.thetas[:len(ts)].copy()
    fused_once = []
    for q, t in enumerate(ts):
        expected = net.pack(update_blocks(x0, dx, t))
        assert_array_equal(batch[q], expected)
        line.sums([t])
        assert_array_equal(line.thetas[0], expected)
        L = np.longdouble  # one rounding of the exact x + t dx: what an FMA would give
        fused_once.append(np.array_equal((theta + L(t) * dtheta).astype(dtype), expected))
    assert not all(fused_once)  # the check above can tell the two roundings apart


def python_backtrack(line, N, f0, delta, beta, max_iter):
    """The Armijo loop of ``block_backtracking`` written in Python over ``line.sums([t])``, one
    step per call: ``(i, t, fx)``; i = 0 if no step is accepted (t, fx: the last trial's)."""
    t, fx = 1.0, np.nan
    for i in range(1, max_iter + 1):
        if i > 1:
            t = beta * t
        fx = line.sums([t])[0] / N
        if np.isfinite(fx) and fx <= f0 + t * delta:
            return i, t, fx
    return 0, t, fx


def line_problem(rng, dtype, N=301, d=5, k=4, m=3):
    """Data, x0's blocks, the descent direction dx = -g and the gradient g (var's shapes)."""
    X, Y, var = standardized_problem(rng, N, d, k, m, dtype=dtype)
    _, g = grad_blocks(X, Y, var)
    return X, Y, var, fastjac.negate_blocks(g), g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [7, 256])
@pytest.mark.parametrize("nchunks", [1, 2])
def test_sums_in_batches_equal_single_steps(nchunks, block, dtype, rng):
    """LineLoss.sums at [t1, ..., tK] in one call gives the bits of the same steps in separate
    calls and in any split into batches, chunked or not: each step's sum is over the same
    blocks in the same order whatever K is (the line search's speculative batches rely on it)."""
    X, Y, x0, dx, _ = line_problem(rng, dtype)
    for scale in [1.0, 40.0]:
        line = line_for(X, Y, x0, [scale * d for d in dx], nchunks=nchunks, block=block)
        assert line.nchunks == nchunks and line.block == block
        for ts in [[0.5 ** i for i in range(fused.LineLoss.MAX_BATCH)],
                   [0.8 ** i for i in range(7)], [0.0, 1 / 3, 0.3, 1.0, 1e-3]]:
            together = line.sums(ts)
            assert len(together) == len(ts) and all(isinstance(v, float) for v in together)
            assert together == [line.sums([t])[0] for t in ts], (scale, ts)
            assert together == line.sums(ts[:1]) + line.sums(ts[1:3]) + line.sums(ts[3:])
            assert together[::-1] == line.sums(ts[::-1])
            assert len(set(together)) > 1  # the line moves


@pytest.mark.parametrize("dtype", DTYPES)
def test_line_search_equals_python_loop(dtype, line_chunks, rng, sums_calls):
    """The closure's batched Armijo loop returns the one-step Python loop's (t, nfev, fx) exactly,
    chunked or not, whatever the first batch (the previous search's accepted trial)."""
    X, Y, x0, dx, g = line_problem(rng, dtype)
    N = X.shape[0]
    ls = fastjac.nn_line_search_closure(X, Y)  # one closure: its batch size carries over
    trials, batches = [], []
    for scale in [1.0, 40.0]:
        sdx = [scale * d for d in dx]
        line = line_for(X, Y, x0, sdx)
        assert line.nchunks == line_chunks(N)
        f0 = line.sums([0.0])[0] / N
        for alpha, beta in [(0.1, 0.5), (0.3, 0.8), (1e-4, 0.1)]:
            delta, max_iter = armijo_setup(x0, sdx, g, alpha, beta, None)
            i, t, fx = python_backtrack(line, N, f0, delta, beta, max_iter)
            sums_calls.clear()
            res = ls(x0, sdx, g, alpha, beta)
            batches += [len(ts) for ts in sums_calls]
            assert i >= 1 and (res.t, res.nfev, res.fx) == (t, i + 1, fx), (scale, alpha, beta)
            assert all(np.array_equal(a, b) for a, b in zip(res.x, update_blocks(x0, sdx, t)))
            trials.append(i)
    assert max(trials) > 2  # some searches backtracked several times
    assert max(batches) > 2  # and some later searches evaluated several steps in one pass


def test_line_search_failure_reports_the_last_trial(line_chunks, rng, sums_calls):
    """With max_iter trials rejected, ls raises block_backtracking's error (same last t), its last
    f is LineLoss's at that t; the same line does have an acceptable step."""
    X, Y, var, _, g = network(rng)
    N = X.shape[0]
    dx = [-1e6 * gi for gi in g]
    f = structured.nn_loss_closure(X, Y)
    line = line_for(X, Y, var, dx)
    assert line.nchunks == line_chunks(N)
    f0 = line.sums([0.0])[0] / N
    ls = fastjac.nn_line_search_closure(X, Y)
    for max_iter in [1, 2, 3, 4]:
        sums_calls.clear()
        with pytest.raises(fastjac.LineSearchError) as fast:
            ls(var, dx, g, max_iter=max_iter)
        assert sums_calls, "not the line path"
        with pytest.raises(fastjac.LineSearchError) as plain:
            block_backtracking(var, f, dx, g, max_iter=max_iter)
        t = 0.5 ** (max_iter - 1)
        fx = line.sums([t])[0] / N
        assert f"last t={t:.3g}," in str(plain.value)
        assert f"last t={t:.3g}," in str(fast.value) and f"last f={fx!r})" in str(fast.value)
        assert np.isfinite(fx) and fx > f0
    delta = armijo_setup(var, dx, g, 0.1, 0.5, 4)[0]
    assert python_backtrack(line, N, f0, delta, 0.5, 4) == (0, t, fx)  # the last trial's t and fx
    assert ls(var, dx, g, max_iter=60).nfev > 2  # the same line does have an acceptable step


# ---------------------------------------------------------------- LineLoss chunks, shapes


@pytest.mark.parametrize("nchunks", [2, 3])
@pytest.mark.parametrize("N,k,m", [(301, 4, 3), (157, 1, 12), (50, 6, 10)])
def test_line_loss_chunks_equal_serial(N, k, m, nchunks, rng):
    """LineLoss over 2 or 3 row chunks gives the serial sums (rtol 1e-13), for K steps at once;
    the sums over two halves of the rows add up to the whole."""
    X, Y, x0, dx, _ = line_problem(rng, np.float64, N, 5, k, m)
    ts = [0.0, 1.0, 0.3]
    for block in [5, 64]:
        serial = line_for(X, Y, x0, dx, nchunks=1, block=block)
        rows = np.array(serial.sums(ts))
        chunks = line_for(X, Y, x0, dx, nchunks=nchunks, block=block)
        assert_allclose(chunks.sums(ts), rows, rtol=1e-13)
        half = np.array(line_for(X[:N // 2], Y[:N // 2], x0, dx, nchunks=1, block=block).sums(ts))
        rest = np.array(line_for(X[N // 2:], Y[N // 2:], x0, dx, nchunks=1, block=block).sums(ts))
        assert_allclose(half + rest, rows, rtol=1e-13)
        assert np.all((0 < half) & (half < rows))
        for line in (serial, chunks):  # one step at a time gives the same bits as three at once
            together = line.sums(ts)
            assert together == [line.sums([t])[0] for t in ts]


@pytest.mark.parametrize("nchunks,block", [(1, 256), (1, 9), (2, 64), (3, 5)])
@pytest.mark.parametrize("N,d,k,m", [(211, 5, 1, 3), (150, 4, 6, 12), (77, 3, 1, 9)])
def test_line_loss_matches_nn_loss_wide_m_and_k1(N, d, k, m, nchunks, block, rng):
    """LineLoss.sums(ts) / N equals nn_loss at update_blocks(x0, dx, t) (rtol 1e-12), m > 8 or k = 1."""
    X, Y, x0, dx, _ = line_problem(rng, np.float64, N, d, k, m)
    f = structured.nn_loss_closure(X, Y)
    line = line_for(X, Y, x0, dx, nchunks=nchunks, block=block)
    ts = [0.0, 1.0, 0.25, 1e-3]
    values = [total / N for total in line.sums(ts)]
    for t, value in zip(ts, values):
        assert_allclose(value, f(update_blocks(x0, dx, t)), rtol=1e-12)
    assert len(set(values)) == 4  # the line moves


# ---------------------------------------------------------------- softmax_cross_entropy


def softmax_problem(rng, B, m):
    """Moderate logits Z (B, m) and labels mixing one-hot, all-zero and soft rows (sums != 1)."""
    Z = 3.0 * rng.standard_normal((B, m))
    Y = np.eye(m)[rng.integers(0, m, B)]
    Y[1::4] = 0.0                                            # rows without a label
    Y[2::4] = rng.dirichlet(np.ones(m), size=len(Y[2::4]))  # soft labels summing to 1
    Y[3::4] *= rng.uniform(0.2, 3.0, size=(len(Y[3::4]), 1))  # one-hot with a weight
    return Z, Y


@pytest.mark.parametrize("weighted", [False, True], ids=["unit", "weights"])
@pytest.mark.parametrize("B,m", [(1, 2), (9, 1), (13, 3), (64, 12)])
def test_softmax_cross_entropy_matches_dense(B, m, weighted, rng):
    """Transposed-layout loss is dense's cross-entropy * B; with_grad leaves (Q rowsum(Y) - Y)^T / denom.

    With weights w (B,) the loss is ``sum_r w_r l_r`` and the gradient's column r
    is scaled by w_r; an empty w means unit weights.
    """
    Z, Y = softmax_problem(rng, B, m)
    denom = 3 * B + 1.0
    Q = dense.matrix_softmax(Z)
    if weighted:
        w = rng.uniform(0.0, 2.0, B)
        ref_loss = np.sum(w * -np.sum(Y * np.log(Q), axis=1))
    else:
        w = np.empty(0)
        ref_loss = dense.cross_entropy(Y, Q) * B
    ref_grad = ((Q * Y.sum(axis=1, keepdims=True) - Y) / denom).T * (w if weighted else 1.0)
    Z2T = np.ascontiguousarray(Z.T)
    rows = np.full((4, B + 3), np.nan)  # scratch wider than B, garbage to start with
    loss = _sce_rows(Z2T.copy(), Y, w, False, denom, rows)
    assert_allclose(loss, ref_loss, rtol=1e-13)
    G = Z2T.copy()
    assert _sce_rows(G, Y, w, True, denom, rows) == loss
    assert_allclose(G, ref_grad, rtol=1e-13, atol=1e-16 * np.abs(ref_grad).max(initial=1.0))
    if B > 1:
        assert_array_equal(G[:, 1::4], (Q[1::4] * 0).T)  # no label: zero gradient


# ---------------------------------------------------------------- classes from the gradient pass


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,d,k,m", [(1, 3, 4, 2), (400, 30, 20, 2), (301, 5, 6, 12),
                                     (150, 8, 70, 3), (60, 64, 64, 3)])
def test_fg_classes_are_nn_predict(N, d, k, m, dtype, rng):
    """fg(classes=True) returns fg's loss and gradient bitwise plus nn_predict's classes, on every plan."""
    X, Y, var = standardized_problem(rng, N, d, k, m, dtype=dtype)
    loss, grad = fastjac.nn_loss_and_gradient_closure(X, Y)(var)
    loss_c, grad_c, classes = fastjac.nn_loss_and_gradient_closure(X, Y, classes=True)(var)
    assert loss_c == loss and all(np.array_equal(a, b) for a, b in zip(grad_c, grad))
    assert classes.dtype == np.int64 and classes.shape == (N,)
    assert_array_equal(classes, structured.nn_predict(X, var))
    assert_array_equal(classes, dense.nn_predict(X, var))
    if N * k <= 8000:  # the dense Jacobians are (N, k, N, k)
        _, _, classes_d = dense.nn_loss_and_gradient_closure(X, Y, classes=True)(var)
        assert_array_equal(classes_d, classes)


@pytest.mark.parametrize("job", ["gradient", "loss", "outputs"])
@pytest.mark.parametrize("nchunks,block", [(1, None), (1, 7), (2, 7), (3, 64)])
def test_fused_pass_classes_on_every_path(nchunks, block, job, rng):
    """The fused pass's classes match np.argmax of the dense logits with chunks and odd blocks,
    beside the gradient, the loss alone or the outputs (predict)."""
    X, Y, var = standardized_problem(rng, 333, 4, 5, 3)
    Xc, Yc, theta, sizes = fused_args(X, Y, var)
    classes = np.full(333, -1, dtype=np.int64)
    fused.network_pass(Xc, None if job == "outputs" else Yc, None, theta, sizes, MODE, ACTS, LOSS,
                       with_grad=job == "gradient", denom=333.0, outputs=job == "outputs",
                       classes=classes, nchunks=nchunks, block=block)
    W1, b1, W2, b2 = var
    assert_array_equal(classes, np.argmax(dense.logit(X @ W1 + b1) @ W2 + b2, axis=1))
    assert_array_equal(classes, structured.nn_predict(X, var))


# ---------------------------------------------------------------- one LineLoss per closure


def test_line_search_closure_reuses_its_line_loss_safely(rng, monkeypatch):
    """The closure's cached LineLoss moves to each new line: 5 searches equal fresh LineLoss ones,
    and a change of dtype builds a new one."""
    made = []
    init = fused.LineLoss.__init__

    def spy(self, *args, **kwargs):
        made.append(args[0].dtype)
        init(self, *args, **kwargs)

    monkeypatch.setattr(fused.LineLoss, "__init__", spy)
    X, Y, x = standardized_problem(rng, 120, 6, 5, 3)
    ls = fastjac.nn_line_search_closure(X, Y)
    f = structured.nn_loss_closure(X, Y)
    for _ in range(5):
        _, g = grad_blocks(X, Y, x)
        dx = fastjac.negate_blocks(g)
        res = ls(x, dx, g)
        plain = block_backtracking(x, f, dx, g)
        assert (res.t, res.nfev) == (plain.t, plain.nfev)
        assert_allclose(res.fx, plain.fx, rtol=1e-13)
        x = res.x
    assert made == [np.float64]
    x32 = [v.astype(np.float32) for v in x]
    _, g32 = grad_blocks(X.astype(np.float32), Y.astype(np.float32), x32)
    fastjac.nn_line_search_closure(X.astype(np.float32), Y.astype(np.float32))(
        x32, fastjac.negate_blocks(g32), g32)
    ls(x32, fastjac.negate_blocks(g32), g32)  # float32 blocks with float64 X: trial by trial
    assert made[1:] == [np.float32]  # the float64 closure made no LineLoss for them


@pytest.mark.parametrize("dtype", DTYPES)
def test_line_products_from_X_and_from_its_transpose_agree(dtype, rng, monkeypatch):
    """LineLoss's two first-layer GEMMs ([X^T; 1] for small X, X itself for large) give the same ZPT."""
    X, Y, x0, dx, _ = line_problem(rng, dtype, N=97, d=7, k=5, m=3)
    small = line_for(X, Y, x0, dx)
    monkeypatch.setattr(fused, "LINESEARCH_MAX_HELD", 0)
    large = line_for(X, Y, x0, dx)
    assert small.XT1.shape == (8, 97) and large.XT1.size == 0
    W1, b1, dW1, db1 = x0[0], x0[1], dx[0], dx[1]
    exact = np.concatenate([X @ W1 + b1, X @ dW1 + db1], axis=1).T
    tol = 1e-13 if dtype == np.float64 else 1e-5
    assert_allclose(small.ZPT, exact, rtol=tol, atol=tol * np.abs(exact).max())
    assert_allclose(large.ZPT, exact, rtol=tol, atol=tol * np.abs(exact).max())
    assert_allclose(small.sums([0.0, 0.5]), large.sums([0.0, 0.5]), rtol=tol)


def test_kernel_helpers_refuse_python_calls():
    """A helper compiled without a Python entry point raises instead of crashing."""
    with pytest.raises(TypeError, match="kernel helper"):
        scalar.log_pos(2.0)
    with pytest.raises(TypeError, match="kernel helper"):
        losses.softmax_cross_entropy_rows(np.zeros((2, 3)), np.zeros((3, 2)), np.empty(0),
                                          False, 1.0, np.zeros((4, 3)))
