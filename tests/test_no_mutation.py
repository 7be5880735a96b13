"""No public function writes to its inputs: every argument is made read-only first.

A write to a read-only array raises ``ValueError: assignment destination is
read-only`` (numpy) or a Numba error, so a passing test means no writes; the
arrays are also compared with copies afterwards.
"""

import numpy as np
import pytest

import fastjac
from fastjac import dense, structured

MODULES = [pytest.param(dense, id="dense"), pytest.param(structured, id="structured")]


def frozen(*arrays):
    out = []
    for a in arrays:
        a = np.array(a)
        a.flags.writeable = False
        out.append(a)
    return out


@pytest.fixture
def problem():
    rng = np.random.default_rng(7)
    N, d, k, m = 9, 4, 3, 2
    X, Y = frozen(rng.normal(size=(N, d)), np.eye(m)[rng.integers(0, m, N)])
    var = frozen(rng.normal(size=(d, k)), rng.normal(size=(1, k)), rng.normal(size=(k, m)),
                 rng.normal(size=(1, m)))
    copies = [a.copy() for a in (X, Y, *var)]
    yield X, Y, var
    for a, c in zip((X, Y, *var), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("mod", MODULES)
def test_jacobian_builders_and_chain_rule(mod, problem):
    X, Y, (W1, b1, W2, b2) = problem
    Z = X @ W1 + b1
    (Z,) = frozen(Z)
    for name in ("DX_affine", "DW_affine", "Db_affine"):
        J, shape = getattr(mod, name)(X, W1, b1)
        G, = frozen(np.ones(J.shape[:2]))
        mod.chain_rule(G, J, shape)
    for name in ("Dlogit", "Dmatrix_softmax"):
        J, shape = getattr(mod, name)(Z)
        G, = frozen(np.ones(shape))
        mod.chain_rule(G, J, shape)
        F, = frozen(np.ones(shape + (2,)))
        mod.chain_rule(J, F, shape)
        mod.chain_rule(J, J, shape)
    mod.logit(Z), mod.matrix_softmax(Z), mod.softmax(Z[0])
    Q, = frozen(mod.matrix_softmax(Z[:, :2]))
    mod.cross_entropy(Y, Q), mod.DQcross_entropy(Y, Q)


@pytest.mark.parametrize("mod", MODULES)
def test_network_closures(mod, problem):
    X, Y, var = problem
    mod.nn_loss_closure(X, Y)(var)
    mod.nn_loss_gradient_closure(X, Y)(var)
    mod.nn_loss_and_gradient_closure(X, Y)(var)


@pytest.mark.parametrize("mod", MODULES)
def test_line_searches_return_new_blocks(mod, problem):
    X, Y, var = problem
    loss, grad = mod.nn_loss_and_gradient_closure(X, Y)(var)
    dx = frozen(*fastjac.negate_blocks([g.reshape(v.shape) for g, v in zip(grad, var)]))
    df0 = frozen(*[g.reshape(v.shape) for g, v in zip(grad, var)])
    for search in (lambda: mod.block_backtracking(var, mod.nn_loss_closure(X, Y), dx, df0),
                   lambda: mod.nn_line_search_closure(X, Y)(var, dx, df0)):
        x, fx = search()
        assert len(x) == 4 and fx < loss
        assert all(xi is not vi and not np.shares_memory(xi, vi) for xi, vi in zip(x, var))
    fastjac.update_blocks(var, dx, 0.5), fastjac.negate_blocks(var), fastjac.block_norm(var)
