"""``fastjac.native``: kernels call helpers through their addresses, checked against a spec.

A call through an address must be the direct call: same result, same writes,
and an exception raised in the helper reaches the caller. A call whose types
differ from the declared spec must not compile, and a helper whose return type
differs must not give an address. The kernels that use it (``fused``) are one
kernel for every activation and loss, and take read-only data.
"""

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba.core import types
from numba.core.errors import TypingError
from numpy.testing import assert_array_equal

import fastjac
from fastjac import activations, fused, losses
from fastjac.mlp import MLP
from fastjac.native import Native

SCALE = Native("test.SCALE", lambda f: (f[::1], f[::1], types.float64), types.float64)
call_scale = SCALE.call


@numba.njit(no_cpython_wrapper=True)
def scale_sum(a, out, s):
    """out = s a; returns sum(out) in float64."""
    total = 0.0
    for i in range(a.shape[0]):
        out[i] = a[i] * s
        total += out[i]
    return total


@numba.njit(no_cpython_wrapper=True)
def scale_none(a, out, s):
    for i in range(a.shape[0]):
        out[i] = a[i] * s


@numba.njit(no_cpython_wrapper=True)
def scale_raises(a, out, s):
    if s < 0:
        raise ValueError("negative scale")
    return 0.0


@numba.njit
def through(address, a, out, s):
    return call_scale(address, (a, out, s))


@numba.njit
def through_int_scale(address, a, out):
    return call_scale(address, (a, out, 2))


@given(n=st.integers(0, 40), s=st.floats(-4, 4), dtype=st.sampled_from([np.float32, np.float64]))
def test_a_call_through_the_address_is_the_direct_call(n, s, dtype):
    a = np.random.default_rng(n).standard_normal(n).astype(dtype)
    out, expected_out = np.zeros(n, dtype=dtype), np.zeros(n, dtype=dtype)
    total = through(SCALE.address(scale_sum, dtype), a, out, s)
    expected_out[:] = a.astype(np.float64) * s  # in float64, stored in the array's dtype
    expected = 0.0
    for v in expected_out:  # summed in float64, in order
        expected += float(v)
    assert_array_equal(out, expected_out)
    assert total == expected


def test_a_read_only_array_stands_for_one_the_helper_only_reads():
    a = np.arange(5.0)
    a.setflags(write=False)
    out = np.zeros(5)
    assert through(SCALE.address(scale_sum, np.float64), a, out, 2.0) == 20.0
    assert_array_equal(out, 2 * np.arange(5.0))


def test_an_exception_in_the_helper_reaches_the_caller():
    address = SCALE.address(scale_raises, np.float64)
    assert through(address, np.ones(3), np.zeros(3), 1.0) == 0.0
    with pytest.raises(ValueError, match="negative scale"):
        through(address, np.ones(3), np.zeros(3), -1.0)


def test_a_call_with_other_types_does_not_compile():
    with pytest.raises(TypingError, match="not the declared"):
        through_int_scale(SCALE.address(scale_sum, np.float64), np.ones(3), np.zeros(3))
    with pytest.raises(TypingError, match="not the declared"):  # a strided array
        through(SCALE.address(scale_sum, np.float64), np.ones(6)[::2], np.zeros(3), 1.0)


def test_no_address_for_a_helper_of_another_return_type_or_dtype():
    with pytest.raises(TypeError, match="returns none, not float64"):
        SCALE.address(scale_none, np.float64)
    with pytest.raises(TypeError, match="float32 or float64, not int64"):
        SCALE.address(scale_sum, np.int64)


def test_one_gradient_kernel_serves_every_activation_and_loss(rng):
    """The gradient's and the line search's kernels call the activation's and the loss's
    loops by address: another activation or loss compiles only its loops."""
    kernels = fused.kernels(activations.TANH, losses.SOFTMAX_CROSS_ENTROPY)
    seen = None
    for activation, loss in [("tanh", "softmax_cross_entropy"), ("relu", "squared_error"),
                             ("logistic", "binary_cross_entropy"), (["relu", "identity"],
                                                                    "softmax_cross_entropy")]:
        net = MLP([4, 5, 3, 2], activation=activation, loss=loss)
        made = fused.kernels(net._mode, net._loss)
        assert made.rows_pass is kernels.rows_pass and made.line_rows is kernels.line_rows
        X = rng.standard_normal((9, 4))
        Y = np.eye(2)[rng.integers(0, 2, 9)]
        params = net.init(seed=0)
        loss_value, grads = net.loss_and_gradient_closure(X, Y)(params)
        net.line_search_closure(X, Y)(params, [-g for g in grads], grads)
        signatures = (list(kernels.rows_pass.signatures), list(kernels.line_rows.signatures))
        if seen is None:
            seen = signatures
        assert signatures == seen, (activation, loss)


@pytest.mark.parametrize("sizes", [[3, 2], [3, 4, 2], [3, 4, 5, 2]])
def test_read_only_data_give_the_same_results(sizes, rng):
    net = fastjac.MLP(sizes, activation="tanh")
    X = rng.standard_normal((7, 3))
    Y = np.eye(2)[rng.integers(0, 2, 7)]
    w = rng.random(7)
    params = net.init(seed=0)
    expected = net.loss_and_gradient_closure(X, Y, sample_weight=w)(params)
    direction = [-g for g in expected[1]]
    expected_step = net.line_search_closure(X, Y, sample_weight=w)(params, direction, expected[1])
    for a in (X, Y, w):
        a.setflags(write=False)
    got = net.loss_and_gradient_closure(X, Y, sample_weight=w)(params)
    assert got[0] == expected[0]
    for g, e in zip(got[1], expected[1]):
        assert_array_equal(g, e)
    step = net.line_search_closure(X, Y, sample_weight=w)(params, direction, expected[1])
    assert step[1] == expected_step[1]
    for p, e in zip(step[0], expected_step[0]):
        assert_array_equal(p, e)
    assert_array_equal(net.predict(X, params), net.predict(X.copy(), params))
