"""Fast paths beside the fused pass: own log, fused predict, ``f0``, and the one-kernel line search.

* ``fused.log_pos`` against an 80-bit ``log``;
* ``structured.nn_predict`` (fused argmax) against the dense reference;
* ``f0=`` saves exactly one evaluation and changes nothing else;
* the one-kernel Armijo loop (``LineLoss.backtrack``) against ``update_blocks``
  and a plain Python loop over ``LineLoss.__call__``: bitwise equal, because it
  rounds the trial's second layer as numpy does;
* ``trial_rows`` / ``trial_chunks`` / ``LineLoss`` / ``softmax_cross_entropy`` on the shapes
  the other tests leave out (m > 8, k = 1, zero and soft label rows).
"""

import numba
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastjac
from fastjac import dense, fused, structured
from fastjac.linesearch import block_backtracking, update_blocks
from problems import standardized_problem

DTYPES = [np.float32, np.float64]
F64 = np.finfo(np.float64)


# Not cached: Numba's disk cache would keep a stale copy of fused.log_pos after an edit.
@numba.njit(fastmath={"contract"})
def _log_all(x, out):
    for i in range(x.size):
        out[i] = fused.log_pos(x[i])


def log_pos_all(x):
    out = np.empty_like(x)
    _log_all(x, out)
    return out


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
    """log_pos (in a kernel loop and called from Python) is within 1 ulp of an 80-bit log."""
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
    assert_array_equal([fused.log_pos(v) for v in x[:200]], out[:200])
    if values == "edges":
        assert out[0] == 0.0 and out[1] == np.log(2.0)


def test_log_pos_nan_and_inf():
    """NaN gives NaN and +inf gives +inf, in a loop and as a scalar call."""
    out = log_pos_all(np.array([np.nan, np.inf, 2.0]))
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == np.log(2.0)
    assert np.isnan(fused.log_pos(np.nan)) and fused.log_pos(np.inf) == np.inf


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
    """argmax_rows picks np.argmax's index: first of equal maxima, first NaN, -0.0 == 0.0."""
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
    Z2T = np.ascontiguousarray(np.array(rows, dtype=dtype).T)  # (m, B)
    out = np.full(Z2T.shape[1], -1, dtype=np.int64)
    fused.argmax_rows(Z2T, out)
    assert_array_equal(out, np.argmax(Z2T, axis=0))
    assert_array_equal(out, [1, 0, 1, 0, 1, 2, 0, 0, 2, 0, 3])


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


@pytest.fixture(params=["direct", "kernel", "mixed"])
def ls_path(request, monkeypatch):
    """Force nn_line_search_closure's path; ``mixed`` passes float32 dx with float64 x0."""
    direct = request.param == "direct"
    monkeypatch.setattr(fused, "LINESEARCH_MIN_INPUTS", 10**9 if direct else 0)
    monkeypatch.setattr(fused, "LINESEARCH_MAX_HELD", 0 if direct else 10**12)
    calls = []
    backtrack = fused.LineLoss.backtrack

    def spy(self, *args, **kwargs):
        calls.append(args)
        return backtrack(self, *args, **kwargs)

    monkeypatch.setattr(fused.LineLoss, "backtrack", spy)
    return request.param, calls


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # dense's exp/log on long steps
@pytest.mark.parametrize("module", [dense, fastjac], ids=["dense", "fastjac"])
def test_line_search_closure_f0(module, ls_path, rng):
    """ls(..., f0=f(x0)) matches ls(...) (t, nfev, fx); f0 is used, not recomputed; bad f0 raises."""
    path, kernel_calls = ls_path
    X, Y, var, f0, g = network(rng)
    if module is dense:
        f0 = dense.nn_loss_closure(X, Y)(var)
    ls = module.nn_line_search_closure(X, Y)
    for scale in [1.0, 10.0, 100.0]:
        dx = [-scale * gi for gi in g]
        if path == "mixed":
            dx = [d.astype(np.float32) for d in dx]
        ref = ls(var, dx, g)
        res = ls(var, dx, g, f0=f0)
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
    used_kernel = module is fastjac and path == "kernel"
    assert bool(kernel_calls) == used_kernel


# ---------------------------------------------------------------- one-kernel line search


def line_for(X, Y, x0, dx, **kwargs):
    """The LineLoss nn_line_search_closure builds for x0, dx (same GEMM, X^T given)."""
    Xc, Yc, W1, b1, _, _ = structured._network_args(X, Y, x0)
    _, _, dW1, db1, _, _ = structured._network_args(X, Y, dx)
    return fused.LineLoss(Xc, Yc, W1, b1, dW1, db1, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,d,k,m", [(40, 4, 3, 2), (400, 30, 20, 2), (60, 5, 4, 11)])
def test_kernel_line_search_is_bitwise_update_blocks(N, d, k, m, dtype, rng, monkeypatch):
    """Kernel path: res.x is update_blocks(x0, dx, t) and LineLoss at res.x gives res.fx exactly."""
    calls = []
    backtrack = fused.LineLoss.backtrack
    monkeypatch.setattr(fused.LineLoss, "backtrack",
                        lambda self, *a, **kw: calls.append(a) or backtrack(self, *a, **kw))
    X, Y, x0 = standardized_problem(rng, N, d, k, m, dtype=dtype)
    _, g = grad_blocks(X, Y, x0)
    ls = fastjac.nn_line_search_closure(X, Y)
    for scale, beta in [(1.0, 0.5), (30.0, 0.5), (30.0, 0.8)]:
        dx = [-scale * gi for gi in g]
        res = ls(x0, dx, g, beta=beta)
        assert len(calls) == 1, "not the one-kernel path"
        calls.clear()
        expected = update_blocks(x0, dx, res.t)
        for a, b in zip(res.x, expected):
            assert a.dtype == b.dtype == dtype
            assert_array_equal(a, b)
        line = line_for(X, Y, x0, dx)
        assert line(res.t, res.x[2], res.x[3].ravel()) == res.fx
    assert res.t < 1 and res.t != 2.0 ** round(np.log2(res.t))  # t inexact in float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_output_layer_rounds_as_update_blocks(dtype, rng):
    """step_output_layer gives (W2 + t dW2)^T and b2 + t db2 bitwise as numpy (t in the dtype, no FMA)."""
    k, m = 9, 4
    W2, dW2 = (rng.standard_normal((k, m)).astype(dtype) for _ in range(2))
    b2, db2 = (rng.standard_normal(m).astype(dtype) for _ in range(2))
    W2T, b2t = np.empty((m, k), dtype=dtype), np.empty(m, dtype=dtype)
    fused_once = []
    for t in [1.0, 0.8 ** 7, 0.1 ** 3, 1 / 3, 0.3]:
        fused.step_output_layer(W2, b2, dW2, db2, t, W2T, b2t)
        assert_array_equal(W2T, (W2 + t * dW2).T)
        assert_array_equal(b2t, b2 + t * db2)
        L = np.longdouble  # one rounding of the exact x + t dx: what an FMA would give
        fused_once.append(np.array_equal((W2 + L(t) * dW2).astype(dtype), W2T))
    assert not all(fused_once)  # the check above can tell the two roundings apart


def python_backtrack(line, W2, b2, dW2, db2, f0, delta, beta, max_iter):
    """The Armijo loop of ``backtrack`` written in Python over ``line(t, W2 + t dW2, b2 + t db2)``."""
    t, fx = 1.0, np.nan
    for i in range(1, max_iter + 1):
        fx = line(t, W2 + t * dW2, b2 + t * db2)
        if np.isfinite(fx) and fx <= f0 + t * delta:
            return i, t, fx
        t = beta * t
    return 0, t, fx


def line_problem(rng, dtype, N=301, d=5, k=4, m=3):
    """x0's blocks and a descent direction (dW1, db1, dW2, db2), all contiguous, b's 1-D."""
    X, Y, var = standardized_problem(rng, N, d, k, m, dtype=dtype)
    _, g = grad_blocks(X, Y, var)
    Xc, Yc, W1, b1, W2, b2 = structured._network_args(X, Y, var)
    dx = [-np.reshape(gi, v.shape) for gi, v in zip(g, (W1, b1, W2, b2))]
    slope = float(sum(np.sum(a.astype(np.float64) * b) for a, b in zip(dx, g)))
    return Xc, Yc, (W1, b1, W2, b2), dx, slope


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [7, 256])
@pytest.mark.parametrize("nchunks", [1, 2])
def test_kernel_backtrack_equals_python_loop(nchunks, block, dtype, rng):
    """line.backtrack returns the Python loop's (i, t, fx) exactly, chunked or not."""
    X, Y, (W1, b1, W2, b2), (dW1, db1, dW2, db2), slope = line_problem(rng, dtype)
    trials = []
    for scale in [1.0, 40.0]:
        sW1, sb1, sW2, sb2 = (scale * a for a in (dW1, db1, dW2, db2))
        line = fused.LineLoss(X, Y, W1, b1, sW1, sb1, nchunks=nchunks, block=block)
        assert line.nchunks == nchunks and line.block == block
        f0 = line(0.0, W2, b2)
        for alpha, beta in [(0.1, 0.5), (0.3, 0.8), (1e-4, 0.1)]:
            delta = alpha * scale * slope
            args = (W2, b2, sW2, sb2, f0, delta, beta, 60)
            got = line.backtrack(*args)
            assert got == python_backtrack(line, *args), (scale, alpha, beta)
            for batch in [2, 3, 20]:  # speculative batches change nothing
                assert line.backtrack(*args, batch=batch) == got, (scale, alpha, beta, batch)
            assert got[0] >= 1
            trials.append(got[0])
    assert max(trials) > 2  # some searches backtracked several times


@pytest.mark.parametrize("nchunks", [1, 2])
def test_kernel_backtrack_failure_returns_zero(nchunks, rng):
    """With max_iter=1 and a huge direction the kernel returns i == 0 and the trial's fx."""
    X, Y, (W1, b1, W2, b2), (dW1, db1, dW2, db2), slope = line_problem(rng, np.float64)
    s = 1e6
    line = fused.LineLoss(X, Y, W1, b1, s * dW1, s * db1, nchunks=nchunks)
    f0 = line(0.0, W2, b2)
    args = (W2, b2, s * dW2, s * db2, f0, 0.1 * s * slope, 0.5)
    i, t, fx = line.backtrack(*args, 1)
    assert i == 0
    assert fx == line(1.0, W2 + s * dW2, b2 + s * db2) and np.isfinite(fx) and fx > f0
    assert line.backtrack(*args, 60)[0] > 1  # the same line does have an acceptable step


def test_kernel_failure_reports_the_last_trial_step(rng):
    """On failure backtrack's t is the last trial's (its docstring) and ls's error equals block_backtracking's."""
    X, Y, var, _, g = network(rng)
    dx = [-1e6 * gi for gi in g]
    Xc, Yc, W1, b1, W2, b2 = structured._network_args(X, Y, var)
    line = line_for(X, Y, var, dx)
    f0 = line(0.0, W2, b2)
    _, t, _ = line.backtrack(W2, b2, dx[2], dx[3].ravel(), f0, -1.0, 0.5, 1)
    with pytest.raises(fastjac.LineSearchError) as fast:
        fastjac.nn_line_search_closure(X, Y)(var, dx, g, max_iter=1)
    with pytest.raises(fastjac.LineSearchError) as plain:
        block_backtracking(var, structured.nn_loss_closure(X, Y), dx, g, max_iter=1)
    assert "last t=1," in str(plain.value)
    assert t == 1.0 and "last t=1," in str(fast.value)


# ---------------------------------------------------------------- trial chunks, LineLoss


@pytest.mark.parametrize("nchunks", [2, 3])
@pytest.mark.parametrize("N,k,m", [(301, 4, 3), (157, 1, 12), (50, 6, 10)])
def test_trial_chunks_equal_trial_rows(N, k, m, nchunks, rng):
    """trial_chunks over 2 or 3 row chunks gives trial_rows over all rows (rtol 1e-13), for K steps at once."""
    X, Y, (W1, b1, W2, b2), (dW1, db1, dW2, db2), _ = line_problem(rng, np.float64, N, 5, k, m)
    ZPT = fused.LineLoss(X, Y, W1, b1, dW1, db1).ZPT
    ts = np.array([0.0, 1.0, 0.3])
    W2Ts = np.stack([np.ascontiguousarray((W2 + t * dW2).T) for t in ts])
    b2s = np.stack([b2 + t * db2 for t in ts])
    for block in [5, 64]:
        size = block * (k + m + 4)
        rows, half, rest = np.empty(3), np.empty(3), np.empty(3)
        fused.trial_rows(ZPT, Y, W2Ts, b2s, ts, 3, 0, N, block, np.empty(size), rows)
        chunks = np.empty((nchunks, 3))
        fused.trial_chunks(ZPT, Y, W2Ts, b2s, ts, 3, block, np.empty((nchunks, size)), chunks)
        assert_allclose(chunks.sum(axis=0), rows, rtol=1e-13)
        fused.trial_rows(ZPT, Y, W2Ts, b2s, ts, 3, 0, N // 2, block, np.empty(size), half)
        fused.trial_rows(ZPT, Y, W2Ts, b2s, ts, 3, N // 2, N, block, np.empty(size), rest)
        assert_allclose(half + rest, rows, rtol=1e-13)
        assert np.all((0 < half) & (half < rows))
        for q in range(3):  # one step at a time gives the same bits as three at once
            one = np.empty(1)
            fused.trial_rows(ZPT, Y, W2Ts[q:q + 1], b2s[q:q + 1], ts[q:q + 1], 1, 0, N, block,
                             np.empty(size), one)
            assert one[0] == rows[q]


@pytest.mark.parametrize("nchunks,block", [(1, 256), (1, 9), (2, 64), (3, 5)])
@pytest.mark.parametrize("N,d,k,m", [(211, 5, 1, 3), (150, 4, 6, 12), (77, 3, 1, 9)])
def test_line_loss_matches_nn_loss_wide_m_and_k1(N, d, k, m, nchunks, block, rng):
    """LineLoss(t, W2, b2) equals nn_loss at [W1 + t dW1, b1 + t db1, W2, b2] (rtol 1e-12), m > 8 or k = 1."""
    X, Y, (W1, b1, W2, b2), (dW1, db1, _, _), _ = line_problem(rng, np.float64, N, d, k, m)
    f = structured.nn_loss_closure(X, Y)
    line = fused.LineLoss(X, Y, W1, b1, dW1, db1, nchunks=nchunks, block=block)
    values = []
    for t in [0.0, 1.0, 0.25, 1e-3]:
        values.append(line(t, W2, b2))
        assert_allclose(values[-1], f([W1 + t * dW1, b1 + t * db1, W2, b2]), rtol=1e-12)
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


@pytest.mark.parametrize("B,m", [(1, 2), (9, 1), (13, 3), (64, 12)])
def test_softmax_cross_entropy_matches_dense(B, m, rng):
    """Transposed-layout loss is dense's cross-entropy * B; with_grad leaves (Q rowsum(Y) - Y)^T / N."""
    Z, Y = softmax_problem(rng, B, m)
    N = 3 * B + 1
    ref_loss = dense.cross_entropy(Y, dense.matrix_softmax(Z)) * B
    Q = dense.matrix_softmax(Z)
    ref_grad = ((Q * Y.sum(axis=1, keepdims=True) - Y) / N).T
    Z2T = np.ascontiguousarray(Z.T)
    rows = np.full((4, B + 3), np.nan)  # scratch wider than B, garbage to start with
    loss = fused.softmax_cross_entropy(Z2T.copy(), Y, False, N, rows)
    assert_allclose(loss, ref_loss, rtol=1e-13)
    G = Z2T.copy()
    assert fused.softmax_cross_entropy(G, Y, True, N, rows) == loss
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


@pytest.mark.parametrize("nchunks", [1, 2])
def test_fused_pass_classes_on_every_path(nchunks, rng):
    """The fused pass's classes match np.argmax of the dense logits with chunks and odd blocks."""
    X, Y, var = standardized_problem(rng, 333, 4, 5, 3)
    args = structured._network_args(X, Y, var)
    classes = np.full(333, -1, dtype=np.int64)
    fused.nn_loss_and_gradient(*args, nchunks=nchunks, block=7, classes=classes)
    W1, b1, W2, b2 = var
    assert_array_equal(classes, np.argmax(dense.logit(X @ W1 + b1) @ W2 + b2, axis=1))


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
    ls(x32, fastjac.negate_blocks(g32), g32)  # float32 blocks with float64 X: float64 again
    assert made[1:] == [np.float32]  # the float64 closure reused its LineLoss for the converted blocks


@pytest.mark.parametrize("dtype", DTYPES)
def test_line_products_from_X_and_from_its_transpose_agree(dtype, rng, monkeypatch):
    """LineLoss's two first-layer GEMMs ([X^T; 1] for small X, X itself for large) give the same ZPT."""
    X, Y, (W1, b1, W2, b2), (dW1, db1, dW2, db2), _ = line_problem(rng, dtype, N=97, d=7, k=5, m=3)
    small = fused.LineLoss(X, Y, W1, b1, dW1, db1)
    monkeypatch.setattr(fused, "LINESEARCH_MAX_HELD", 0)
    large = fused.LineLoss(X, Y, W1, b1, dW1, db1)
    assert small.XT1 is not None and large.XT1 is None
    exact = np.concatenate([X @ W1 + b1, X @ dW1 + db1], axis=1).T
    tol = 1e-13 if dtype == np.float64 else 1e-5
    assert_allclose(small.ZPT, exact, rtol=tol, atol=tol * np.abs(exact).max())
    assert_allclose(large.ZPT, exact, rtol=tol, atol=tol * np.abs(exact).max())
    for t in [0.0, 0.5]:
        assert_allclose(small(t, W2 + t * dW2, b2 + t * db2), large(t, W2 + t * dW2, b2 + t * db2),
                        rtol=tol)
