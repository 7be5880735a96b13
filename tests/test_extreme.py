"""Extreme logits stay finite and correct in fastjac, where the lecture's formulas fail.

The reference is computed here in extended precision (``np.longdouble``, 80-bit
on x86-64: exp() reaches e^11356, so even e^(1e4) is finite) with the naive
textbook formulas, which need no stabilising tricks at that range.
"""

import numpy as np
import pytest

import fastjac
import lecture

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
