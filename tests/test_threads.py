"""Concurrency and determinism of the fast path.

Kernels release the GIL (``nogil=True``) and allocate their own scratch, so
calls from many Python threads must not interfere; row chunks are reduced in a
fixed order, so repeated calls are bitwise identical for a fixed thread count.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastjac


def problem(N, d=30, k=20, m=2, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, d)).astype(dtype)
    Y = np.eye(m, dtype=dtype)[rng.integers(0, m, N)]
    var = [(rng.normal(size=s) * 0.3).astype(dtype) for s in [(d, k), (1, k), (k, m), (1, m)]]
    return X, Y, var


def bits(result):
    loss, grad = result
    return [np.float64(loss).tobytes()] + [g.tobytes() for g in grad]


# small: the serial path; large: above the parallel threshold
SIZES = [pytest.param(300, id="N=300"), pytest.param(60_000, id="N=60000")]


@pytest.mark.parametrize("N", SIZES)
def test_eight_threads_match_serial_calls(N):
    problems = [problem(N, seed=s) for s in range(8)]
    closures = [fastjac.nn_loss_and_gradient_closure(X, Y) for X, Y, _ in problems]
    serial = [bits(fg(var)) for fg, (_, _, var) in zip(closures, problems)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            futures = [pool.submit(fg, var) for fg, (_, _, var) in zip(closures, problems)]
            assert [bits(f.result()) for f in futures] == serial


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N", SIZES)
def test_repeated_calls_are_bitwise_identical(N, dtype):
    X, Y, var = problem(N, dtype=dtype)
    fg = fastjac.nn_loss_and_gradient_closure(X, Y)
    first = bits(fg(var))
    assert all(bits(fg(var)) == first for _ in range(5))
    f = fastjac.nn_loss_closure(X, Y)
    assert len({np.float64(f(var)).tobytes() for _ in range(5)}) == 1


def test_single_threaded_blas_holds_and_restores():
    """Overlapping holds from two threads, the second thread ending last: the kernels' BLAS
    stays at one thread until the last hold ends, then gets back the count it had."""
    import threading

    from fastjac import blas
    if not blas.threads_controllable():
        pytest.skip("the kernels' BLAS is not OpenBLAS with its own thread pool here")

    def blas_threads():
        return blas._kernel_blas().get()

    before = blas_threads()
    assert before >= 1
    inside, release = threading.Event(), threading.Event()

    def other():
        with blas.single_threaded():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    with blas.single_threaded():
        assert blas_threads() == 1
        t.start()
        assert inside.wait(10)
    assert blas_threads() == 1  # the other thread still holds it
    release.set()
    t.join()
    assert blas_threads() == before


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_concurrent_calls_of_wide_networks_match_serial_calls(activation):
    """Layers wide enough for BLAS to thread a block's GEMM: the chunks hold BLAS at one
    thread; repeated calls give the same bits, and so do calls from many threads at once
    (some running their chunks serially)."""
    net = fastjac.MLP([64, 128, 64, 10], activation=activation)
    rng = np.random.default_rng(0)
    cases = []
    for s in range(4):
        X = rng.normal(size=(3000, 64))
        Y = np.eye(10)[rng.integers(0, 10, 3000)]
        cases.append((net.loss_and_gradient_closure(X, Y), net.init(seed=s)))
    serial = [bits(fg(params)) for fg, params in cases]
    fg, params = cases[0]
    assert all(bits(fg(params)) == serial[0] for _ in range(20))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(2):
            futures = [pool.submit(fg, params) for fg, params in cases]
            assert [bits(f.result()) for f in futures] == serial


def test_without_blas_control_chunks_keep_their_bits(monkeypatch):
    """Where the kernels' BLAS cannot be held (not OpenBLAS with its own thread pool),
    the plan caps the blocks instead; the gradient is then the same up to rounding."""
    from fastjac import blas, fused
    net = fastjac.MLP([64, 128, 64, 10], activation="tanh")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 64))
    Y = np.eye(10)[rng.integers(0, 10, 3000)]
    params = net.init(seed=0)
    held = net.loss_and_gradient_closure(X, Y)(params)
    monkeypatch.setattr(blas, "_kernel_blas", lambda: None)
    monkeypatch.setattr(fused.numba, "get_num_threads", lambda: 2)
    assert fused.plan(3000, net.sizes) == fused.Plan(1, fused.WIDE_BLOCK_ROWS)  # capped: 31 rows
    loss, grads = net.loss_and_gradient_closure(X, Y)(params)
    np.testing.assert_allclose(loss, held[0], rtol=1e-13)
    for g, h in zip(grads, held[1]):
        np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-15 * np.abs(h).max())


# A fresh process: a threaded pass (two chunks forced: the workers and the BLAS hold are
# used whatever the core count), then two forks, the second while another thread holds
# the workers and BLAS; each child's pass must finish with the parent's bits. Prints each
# child's exit code, or "hung".
FORKED = """
import os, sys, threading, time
import numpy as np
from fastjac import blas, fused
from fastjac.mlp import MLP
net = MLP([64, 128, 64, 10], activation="tanh")
rng = np.random.default_rng(0)
X = rng.standard_normal((3000, 64))
Y = np.eye(10)[rng.integers(0, 10, 3000)]
theta = net.pack(net.init(seed=0))

def run():
    total, g, _ = fused.network_pass(X, Y, None, theta, net._sizes, net._mode, net._acts,
                                     net._loss, with_grad=True, denom=3000.0, nchunks=2)
    return np.float64(total).tobytes() + g.tobytes()

def fork_and_check():
    pid = os.fork()
    if pid == 0:
        ok = run() == before and not fused._BUSY.locked() and blas._HOLDERS == 0
        os._exit(0 if ok else 3)
    return pid

def wait(pid):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return str(os.waitstatus_to_exitcode(status))
        time.sleep(0.05)
    os.kill(pid, 9)
    return "hung"

before = run()
first = wait(fork_and_check())
holding, release = threading.Event(), threading.Event()

def hold():
    with fused._BUSY, blas.single_threaded():
        holding.set()
        release.wait()

t = threading.Thread(target=hold)
t.start()
holding.wait()
pid = fork_and_check()
release.set()
t.join()
print(first, wait(pid))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_a_forked_child_runs_threaded_passes():
    """After fork only the forking thread exists: the child's passes must not hand chunks to
    the parent's worker threads (they would wait forever: they did until 2026-12-03), nor
    find the workers or BLAS held by a thread it does not have."""
    done = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["0", "0"], done.stdout


def test_an_interrupted_call_leaves_no_stale_chunk_for_the_next():
    """Ctrl-C (or an error in chunk 0) ends a call before it collects its workers' chunks:
    the next call must get its own chunks' results, never those left behind (it got them
    until 2026-12-03: silently wrong sums after an interrupted training step)."""
    import signal
    import threading
    import time

    from fastjac import fused

    def slow(c):
        if c == 0:  # the signal arrives while this thread waits for chunk 1
            threading.Timer(0.1, signal.pthread_kill,
                            (threading.main_thread().ident, signal.SIGINT)).start()
        else:
            time.sleep(0.5)
        return ("interrupted call", c)

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches only the main thread")
    with pytest.raises(KeyboardInterrupt):
        fused.run_chunks(slow, 2)

    def failing(c):
        if c == 0:
            raise ValueError("chunk 0")
        time.sleep(0.2)
        return ("failed call", c)

    with pytest.raises(ValueError, match="chunk 0"):
        fused.run_chunks(failing, 3)
    for _ in range(3):
        assert fused.run_chunks(lambda c: ("next call", c), 3) == [("next call", c)
                                                                   for c in range(3)]
