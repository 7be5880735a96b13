"""Extreme logits stay finite and correct in fastjac, where the lecture's formulas fail.

The reference is computed here in extended precision (``np.longdouble``, 80-bit
on x86-64: exp() reaches e^11356, so even e^(1e4) is finite) with the naive
textbook formulas, which need no stabilising tricks at that range.
"""

import types

import numpy as np
import pytest

import fastjac
import lecture
from fastjac import structured

LD = np.longdouble
pytestmark = pytest.mark.skipif(np.finfo(LD).maxexp < 16384,
                                reason="needs an extended-precision long double")


@np.errstate(over="ignore")  # e^(-z) = inf for z << 0 gives s = 0 exactly: the right limit
def reference(X, Y, var):
    """Loss and gradient in long double: s = 1/(1+e^-z), q = e^z/sum e^z, G2 = (q - y)/N,
    G1 = (G2 W2^T) s(z) s(-z)."""
    X, Y = X.astype(LD), Y.astype(LD)
    W1, b1, W2, b2 = (v.astype(LD) for v in var)
    N = X.shape[0]
    Z1 = X @ W1 + b1
    A, A_minus = 1 / (1 + np.exp(-Z1)), 1 / (1 + np.exp(Z1))  # s(z) and s(-z) = 1 - s(z)
    Z2 = A @ W2 + b2
    E = np.exp(Z2)
    Q = E / E.sum(axis=1, keepdims=True)
    loss = -np.sum(Y * (Z2 - np.log(E.sum(axis=1, keepdims=True)))) / N
    G2 = (Q * Y.sum(axis=1, keepdims=True) - Y) / N
    G1 = (G2 @ W2.T) * A * A_minus  # not A (1 - A): 1 - A cancels to 0 for z >> 0
    return loss, [X.T @ G1, G1.sum(0), A.T @ G2, G2.sum(0)]


def extreme_problem(scale, rng):
    """Hidden pre-activations and output logits of size ~``scale`` (both signs).

    |Z2| <= |b2| + sum_j |W2[j]| <= scale keeps e^Z2 finite in long double for scale <= 1e4.
    """
    N, d, k, m = 40, 5, 6, 3
    X = rng.normal(size=(N, d))
    Y = np.eye(m)[rng.integers(0, m, N)]
    W1 = rng.normal(size=(d, k)) * scale / d
    b1 = rng.choice([-1.0, 1.0], size=(1, k)) * scale
    W2 = rng.uniform(-1, 1, size=(k, m)) * 0.1 * scale / k
    b2 = np.linspace(-0.9, 0.9, m)[None, :] * scale  # logits past 709: e^z overflows float64
    return X, Y, [W1, b1, W2, b2]


def lecture_gradient_with(module):
    """The lecture's own ``nn_loss_gradient_closure`` (its code object, unchanged) with
    ``module``'s functions: the chain-rule route, as a student runs it."""
    fn = lecture.nn_loss_gradient_closure
    return types.FunctionType(fn.__code__, vars(module), fn.__name__, fn.__defaults__)


def gradient_routes(X, Y):
    """name -> gradient function of var, for the three ways fastjac differentiates the network."""
    fg = fastjac.nn_loss_and_gradient_closure(X, Y)
    return {
        "fused": lambda var: fg(var)[1],
        "structured": fastjac.nn_loss_gradient_closure(X, Y),
        "chain rule": lecture_gradient_with(structured)(X, Y),
    }


def assert_gradient_equals(grad, ref_grad, what):
    assert all(np.isfinite(g).all() for g in grad), what
    for g, r in zip(grad, ref_grad):
        r = r.astype(np.float64)
        # Entries may cancel (sums of +-q/N): measure error against the block's
        # scale. Where s(z)s(-z) ~ e^-|z| underflows into subnormals (< 1e-300)
        # float64 has no relative precision left, so allow that absolute floor.
        np.testing.assert_allclose(np.reshape(g, r.shape), r, rtol=0,
                                   atol=1e-12 * np.abs(r).max() + 1e-300, err_msg=what)


@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_every_route_is_finite_and_correct_at_extreme_logits(scale):
    rng = np.random.default_rng(int(scale) + 1)
    X, Y, var = extreme_problem(scale, rng)
    _, ref_grad = reference(X, Y, var)
    with np.errstate(all="ignore"):  # the lecture's own functions fail here
        assert not all(np.isfinite(g).all()
                       for g in lecture.nn_loss_gradient_closure(X, Y)(var))
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no inf, no 0 * inf
        for name, df in gradient_routes(X, Y).items():
            assert_gradient_equals(df(var), ref_grad, f"{name} at scale {scale:g}")


def test_every_route_at_the_issues_reproducer():
    """Logits (0, 800): Q = (e^-800, 1), so -P / Q overflows; the true db2 is (-1, 1)."""
    X, Y = np.ones((1, 1)), np.array([[1.0, 0.0]])
    var = [np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 2)), np.array([[0.0, 800.0]])]
    _, ref_grad = reference(X, Y, var)
    np.testing.assert_allclose(ref_grad[3].astype(float), [-1.0, 1.0], rtol=1e-300)
    for name, df in gradient_routes(X, Y).items():
        grad = df(var)
        assert_gradient_equals(grad, ref_grad, name)
        assert np.array_equal(np.ravel(grad[3]), [-1.0, 1.0]), name
    # with the weights scaled by 1e3, every block finite and right too
    rng = np.random.default_rng(3)
    X, Y, var = rng.normal(size=(20, 4)), np.eye(3)[rng.integers(0, 3, 20)], \
        [1e3 * rng.normal(size=s) for s in [(4, 5), (1, 5), (5, 3), (1, 3)]]
    _, ref_grad = reference(X, Y, var)
    for name, df in gradient_routes(X, Y).items():
        assert_gradient_equals(df(var), ref_grad, f"{name}, weights x 1e3")


@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_extreme_logits_finite_and_correct(scale):
    rng = np.random.default_rng(int(scale))
    X, Y, var = extreme_problem(scale, rng)
    ref_loss, ref_grad = reference(X, Y, var)
    assert np.isfinite(float(ref_loss)) and float(ref_loss) > 1  # really extreme

    with np.errstate(all="ignore"):
        assert not np.isfinite(lecture.nn_loss_closure(X, Y)(var))
        assert not all(np.isfinite(g).all() for g in lecture.nn_loss_gradient_closure(X, Y)(var))

    loss, grad = fastjac.nn_loss_and_gradient_closure(X, Y)(var)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grad)
    # The loss is a mean of O(scale) terms that cancel little: float64 rounding
    # of each Z2 (|Z2| <= scale) bounds the error by ~1e-14 relative.
    np.testing.assert_allclose(loss, float(ref_loss), rtol=1e-12)
    np.testing.assert_allclose(fastjac.nn_loss_closure(X, Y)(var), float(ref_loss), rtol=1e-12)
    for g, r in zip(grad, ref_grad):
        r = r.astype(np.float64)
        # Entries may cancel (sums of +-q/N): measure error against the block's
        # scale. Where s(z)s(-z) ~ e^-|z| underflows into subnormals (< 1e-300)
        # float64 has no relative precision left, so allow that absolute floor.
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12 * np.abs(r).max() + 1e-300)


@pytest.mark.parametrize("z", [-1e4, -1e3, -40.0, 0.0, 40.0, 1e3, 1e4])
def test_logistic_and_derivative_at_extremes(z):
    """s(z) never overflows; s(z) s(-z) keeps its (tiny, positive) value where representable."""
    Z = np.array([[z]])
    s = float(fastjac.logit(Z)[0, 0])
    ds = float(fastjac.Dlogit(Z)[0].values[0, 0])
    ez = np.exp(LD(-abs(z)))
    np.testing.assert_allclose(s, float(1 / (1 + np.exp(LD(-z)))), rtol=1e-15)
    np.testing.assert_allclose(ds, float(ez / (1 + ez) ** 2), rtol=1e-15, atol=0)
    assert np.isfinite(s) and np.isfinite(ds)
