"""Per-example and curvature quantities (``fastjac.curvature``) against their routes and oracles.

* Every quantity equals its dense route: per-example Jacobians of the logits
  by the dense reference's chain rule (``backprop.logit_jacobians``), then
  contracted with the loss's per-row gradient and Hessian in numpy; Hessian
  products against the numpy R-operator twin and its full Hessian. Depths 1-3,
  every activation, every loss. Tolerance: 1e-12 relative to the largest
  entry of the reference (every entry is a sum of O(N P) products of O(1)
  terms computed in another order; float64 rounding stays below 1e-14 of the
  largest, so 1e-12 leaves a margin of 100).
* JAX (``vmap(grad)``, ``jacrev``, ``hessian``, ``jvp``/``vjp``) is the
  outside oracle when it is installed; those tests skip otherwise.
* Exact cases: K-FAC is the GGN block at N = 1 and for a deep linear network
  with squared error; Monte Carlo estimates stay within 6 of their exact
  standard deviations of the exact values and converge; with ReLU the
  Hessian's diagonal is the GGN's; the NTK is ``J J^T``; the Hessian-vector
  product matches finite differences of the gradient.
"""

import math
import tracemalloc

import numpy as np
import pytest

import fastjac
from fastjac import MLP, backprop, dense, losses, structured

ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "squared_error")
DEPTHS = ([5, 3], [5, 4, 3], [5, 4, 3, 3])


def problem(rng, sizes, loss, N=7):
    X = rng.normal(size=(N, sizes[0]))
    m = sizes[-1]
    if loss == "softmax_cross_entropy":
        Y = np.eye(m)[rng.integers(0, m, N)]
    elif loss == "binary_cross_entropy":
        Y = (rng.random((N, m)) < 0.5).astype(float)
    else:
        Y = rng.normal(size=(N, m))
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [rng.normal(size=(a, b)) / math.sqrt(a), 0.3 * rng.normal(size=(1, b))]
    return X, Y, params


def flat(blocks):
    return np.concatenate([np.ravel(b) for b in blocks])


def unflat(vector, like):
    return [v.reshape(b.shape) for v, b in zip(np.split(vector, np.cumsum([b.size for b in like])[:-1]), like)]


def close(got, ref, rtol=1e-12, what=""):
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=0, atol=rtol * max(np.abs(ref).max(), 1e-300),
                               err_msg=what)


class Dense:
    """The dense route's ingredients for one problem: J (N, m, P), per-row r (N, m), H (N, m, m)."""

    def __init__(self, net, X, Y, params):
        self.net, self.N = net, X.shape[0]
        blocks = [np.asarray(p, dtype=float) for p in params]
        self.blocks = blocks
        J = backprop.logit_jacobians(dense, net, X, blocks)
        self.J = np.concatenate([j.reshape(self.N, net.sizes[-1], -1) for j in J], axis=2)
        Z = backprop.forward(dense, net, X, blocks)[1][-1]
        loss = losses.LOSSES[net.loss]
        F = loss.output(Z)
        self.r, self.H = loss.dZ(Y, F), loss.hessian(Y, F)
        weights = flat([np.ones_like(b) if i % 2 == 0 else np.zeros_like(b)
                        for i, b in enumerate(blocks)])
        self.alpha_diag = net.alpha / self.N * weights
        self.G = np.einsum("ncp,ncd,ndq->pq", self.J, self.H, self.J) / self.N + np.diag(self.alpha_diag)
        self.grads = np.einsum("ncp,nc->np", self.J, self.r)  # per example

    def hessian(self, X, Y):
        P = self.J.shape[2]
        rows = [flat(backprop.hessian_vector_product_twin(self.net, X, Y, self.blocks,
                                                          unflat(e, self.blocks)))
                for e in np.eye(P)]
        return np.array(rows)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_quantity_equals_its_dense_route(activation, loss, rng):
    for sizes in DEPTHS:
        net = MLP(sizes, activation=activation, loss=loss, alpha=0.2)
        X, Y, params = problem(rng, sizes, loss)
        N, m = X.shape[0], sizes[-1]
        d = Dense(net, X, Y, params)
        what = f"{activation}, {loss}, {sizes}"
        pe = net.per_example_gradients(X, Y, params)
        assert [b.shape for b in pe] == [(N,) + (s if len(s) == 2 and s[0] != 1 else s[-1:])
                                         for s in net.shapes]
        close(np.concatenate([b.reshape(N, -1) for b in pe], 1), d.grads, what="per-example " + what)
        close(net.per_example_gradient_norms(X, Y, params), np.linalg.norm(d.grads, axis=1),
              what="norms " + what)
        close(flat(net.sum_grad_squared(X, Y, params)), (d.grads ** 2).sum(0), what="sgs " + what)
        close(flat(net.diag_ggn(X, Y, params)), np.diag(d.G), what="diag_ggn " + what)
        v = [rng.normal(size=np.shape(p)) for p in params]
        close(flat(net.ggn_vector_product(X, Y, params, v)), d.G @ flat(v), what="Gv " + what)
        Hfull = d.hessian(X, Y)
        close(flat(net.hessian_vector_product(X, Y, params, v)), Hfull @ flat(v), what="Hv " + what)
        close(flat(net.diag_hessian(X, Y, params)), np.diag(Hfull), what="diag H " + what)
        J = net.jacobian_params(X, params)
        close(np.concatenate([j.reshape(N, m, -1) for j in J], 2), d.J, what="J " + what)
        F = net.jacobian_params(X, params, factored=True)
        assert F.nbytes == 8 * N * sum(m * n + p for p, n in zip(sizes[:-1], sizes[1:]))
        close(np.concatenate([j.reshape(N, m, -1) for j in F.to_dense()], 2), d.J,
              what="factored J " + what)


def test_the_twins_agree_with_each_other(rng):
    """The structured module's chain rule gives the dense route's Jacobians; the R-operator
    twin's GGN product is the dense G v."""
    net = MLP([5, 4, 3, 3], activation="tanh", loss="softmax_cross_entropy", alpha=0.1)
    X, Y, params = problem(rng, net.sizes, net.loss)
    blocks = [np.asarray(p, float) for p in params]
    for a, b in zip(backprop.logit_jacobians(structured, net, X, blocks),
                    backprop.logit_jacobians(dense, net, X, blocks)):
        close(a, b)
    d = Dense(net, X, Y, params)
    v = [rng.normal(size=b.shape) for b in blocks]
    close(flat(backprop.hessian_vector_product_twin(net, X, Y, blocks, v, gauss_newton=True)),
          d.G @ flat(v))


# ---------------------------------------------------------------- exact cases

@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_kfac_is_the_ggn_block_at_one_row(activation, loss, rng):
    net = MLP([5, 4, 3, 3], activation=activation, loss=loss)
    X, Y, params = problem(rng, net.sizes, loss, N=1)
    G = Dense(net, X, Y, params).G
    o = 0
    for (A, B), (p, n) in zip(net.kfac(X, Y, params), zip(net.sizes[:-1], net.sizes[1:])):
        assert A.shape == (p + 1, p + 1) and B.shape == (n, n)
        block = slice(o, o + (p + 1) * n)  # [W_l; b_l] row-major: W's entries, then b's
        close(np.kron(A, B), G[block, block], what=f"layer of {p} x {n}")
        o += (p + 1) * n


def test_kfac_is_exact_for_a_deep_linear_network_with_squared_error(rng):
    """With identity activations and squared error, S_n S_n^T does not depend on the row."""
    net = MLP([6, 5, 4, 3], activation="identity", loss="squared_error")
    X, Y, params = problem(rng, net.sizes, net.loss, N=30)
    G = Dense(net, X, Y, params).G
    o = 0
    for (A, B), (p, n) in zip(net.kfac(X, Y, params), zip(net.sizes[:-1], net.sizes[1:])):
        block = slice(o, o + (p + 1) * n)
        close(np.kron(A, B), G[block, block])
        o += (p + 1) * n
    # and not for a nonlinear one (the test above can fail)
    net2 = MLP([6, 5, 4, 3], activation="tanh", loss="squared_error")
    G2 = Dense(net2, X, Y, params).G
    A, B = net2.kfac(X, Y, params)[0]
    assert not np.allclose(np.kron(A, B), G2[:35, :35], rtol=1e-3)


def test_relu_hessian_diagonal_is_the_ggns_with_squared_error(rng):
    """z_L is linear in each single weight for a fixed activation pattern, so d^2 z / dw^2 = 0."""
    net = MLP([5, 6, 4, 3], activation="relu", loss="squared_error", alpha=0.3)
    X, Y, params = problem(rng, net.sizes, net.loss, N=40)
    close(flat(net.diag_hessian(X, Y, params)), flat(net.diag_ggn(X, Y, params)), rtol=1e-13)


def test_ntk_is_J_J_transposed(rng):
    net = MLP([5, 6, 4, 3], activation="tanh")
    X1, _, params = problem(rng, net.sizes, net.loss, N=6)
    X2 = rng.normal(size=(4, 5))
    J1 = np.concatenate([j.reshape(6, 3, -1) for j in net.jacobian_params(X1, params)], 2)
    J2 = np.concatenate([j.reshape(4, 3, -1) for j in net.jacobian_params(X2, params)], 2)
    close(net.empirical_ntk(X1, params, X2), np.einsum("ncp,mcp->nm", J1, J2))
    full = net.empirical_ntk(X1, params, X2, trace=False)
    close(full, np.einsum("ncp,mdp->nmcd", J1, J2))
    close(np.einsum("nmcc->nm", full), net.empirical_ntk(X1, params, X2))
    K = net.empirical_ntk(X1, params)  # X2 = X1: symmetric, positive semi-definite
    close(K, K.T)
    assert np.linalg.eigvalsh(K).min() > -1e-10 * np.abs(K).max()


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hessian_vector_product_matches_finite_differences(activation, rng):
    """(grad(x + h v) - grad(x - h v)) / 2h = H v + O(h^2 |grad'''|) + O(eps |grad| / h): with
    h = 1e-5 and O(1) derivatives both are below 1e-9; 1e-7 relative leaves a margin."""
    net = MLP([5, 6, 4, 3], activation=activation, loss="softmax_cross_entropy", alpha=0.1)
    X, Y, params = problem(rng, net.sizes, net.loss, N=30)
    v = [rng.normal(size=np.shape(p)) for p in params]
    fg = net.loss_and_gradient_closure(X, Y)
    h = 1e-5
    fd = (flat(fg(fastjac.update_blocks(params, v, h))[1])
          - flat(fg(fastjac.update_blocks(params, v, -h))[1])) / (2 * h)
    hv = flat(net.hessian_vector_product(X, Y, params, v))
    np.testing.assert_allclose(hv, fd, rtol=0, atol=1e-7 * np.abs(hv).max())


# ---------------------------------------------------------------- Monte Carlo

@pytest.mark.parametrize("samples", [1, 64, 4096])
def test_monte_carlo_diag_ggn_converges_to_the_exact_one(samples, rng):
    """The estimate averages ``samples`` i.i.d. draws a row of ``(J^T (q - e_y))^2``; its exact
    mean is the exact diagonal (Fisher = GGN for the canonical link) and its standard
    deviation ``sqrt(sum_n Var_n / samples) / N`` is computed by enumerating the classes.
    The draws are seeded, so the 6-sigma bound is checked on fixed numbers."""
    net = MLP([5, 4, 3], activation="tanh", loss="softmax_cross_entropy")
    X, Y, params = problem(rng, net.sizes, net.loss, N=25)
    N, m = X.shape[0], 3
    d = Dense(net, X, Y, params)
    mean = np.zeros(d.J.shape[2])
    var = np.zeros(d.J.shape[2])
    for n in range(N):
        z = backprop.forward(dense, net, X[n:n + 1], d.blocks)[1][-1]
        q = losses.LOSSES[net.loss].output(z)[0]
        vals = np.array([(d.J[n].T @ (q - np.eye(m)[k])) ** 2 for k in range(m)])
        mu = q @ vals
        mean += mu / N
        var += (q @ vals ** 2 - mu ** 2) / N ** 2
    close(mean, np.diag(d.G))  # the exact expectation is the exact diagonal
    est = flat(net.diag_ggn(X, Y, params, mc_samples=samples, seed=123))
    sigma = np.sqrt(var / samples)
    assert np.all(np.abs(est - mean) <= 6 * sigma + 1e-12 * np.abs(mean).max())
    if samples == 4096:
        assert np.abs(est - mean).max() < 0.05 * np.abs(mean).max()


def test_monte_carlo_kfac_converges(rng):
    """B's estimate with many samples approaches the exact B (same 6-sigma reasoning, with the
    variance of a sample's ``s s^T`` per entry bounded by its exact second moment)."""
    net = MLP([5, 4, 3], activation="logistic", loss="softmax_cross_entropy")
    X, Y, params = problem(rng, net.sizes, net.loss, N=20)
    exact = net.kfac(X, Y, params)
    approx = net.kfac(X, Y, params, fisher="mc", mc_samples=20000, seed=7)
    for (A, B), (A2, B2) in zip(exact, approx):
        close(A2, A)  # A does not depend on the samples
        assert np.abs(B2 - B).max() < 0.02 * np.abs(B).max()
    empirical = net.kfac(X, Y, params, fisher="empirical")
    assert not np.allclose(empirical[1][1], exact[1][1], rtol=1e-3)  # a different matrix


# ---------------------------------------------------------------- memory, errors

def test_norms_diagonals_and_products_use_no_per_example_memory():
    """At N = 100,000 (30-20-2): outputs O(N + P), scratch per thread, nothing N x P."""
    rng = np.random.default_rng(0)
    N = 100_000
    net = MLP([30, 20, 2], activation="logistic")
    X = rng.normal(size=(N, 30))
    Y = np.eye(2)[rng.integers(0, 2, N)]
    params = net.init(seed=0)
    v = [rng.normal(size=np.shape(p)) for p in params]
    calls = {
        "norms": lambda: net.per_example_gradient_norms(X, Y, params),
        "diag_ggn": lambda: net.diag_ggn(X, Y, params),
        "sum_grad_squared": lambda: net.sum_grad_squared(X, Y, params),
        "ggn_vector_product": lambda: net.ggn_vector_product(X, Y, params, v),
        "hessian_vector_product": lambda: net.hessian_vector_product(X, Y, params, v),
    }
    per_example = N * net.n_params * 8  # what a per-example route would hold: 53 MB
    for name, call in calls.items():
        call()  # compile outside the traced region
        tracemalloc.start()
        try:
            call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= 16 * 10**6, (name, peak)
        assert peak * 3 < per_example, (name, peak)


def test_bad_arguments(rng):
    net = MLP([5, 4, 3])
    X, Y, params = problem(rng, net.sizes, net.loss)
    with pytest.raises(ValueError, match="fisher must be"):
        net.kfac(X, Y, params, fisher="true")
    with pytest.raises(ValueError, match="mc_samples must be a positive integer"):
        net.diag_ggn(X, Y, params, mc_samples=0)
    with pytest.raises(ValueError, match=r"W1 must have shape \(5, 4\)"):
        net.ggn_vector_product(X, Y, params, [np.ones((4, 4)), *params[1:]])
    with pytest.raises(ValueError, match="X has 4 columns"):
        net.per_example_gradients(X[:, :4], Y, params)


# ---------------------------------------------------------------- JAX, the outside oracle

@pytest.fixture(scope="module")
def jx():
    """``(jax, jax.numpy)`` in float64; the tests that use it skip without JAX."""
    jax = pytest.importorskip("jax", reason="JAX is the outside oracle when installed")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jax, jnp


def row_loss_on_logits(jax, jnp, loss, z, y):
    if loss == "softmax_cross_entropy":
        return -jnp.sum(y * jax.nn.log_softmax(z))
    if loss == "binary_cross_entropy":
        return jnp.sum(jax.nn.softplus(z) - y * z)
    return 0.5 * jnp.sum((y - z) ** 2)


def unflat_jax(t, like):
    out, o = [], 0
    for b in like:
        size = int(np.size(b))
        out.append(t[o:o + size].reshape(np.shape(b)))
        o += size
    return out


@pytest.mark.parametrize("sizes", DEPTHS, ids=lambda s: f"depth{len(s) - 1}")
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_jax_agrees(activation, loss, sizes, jx, rng):
    """vmap(grad), vmap(jacrev), hessian and jvp/vjp give fastjac's quantities, at
    depths 1 to 3."""
    jax, jnp = jx
    net = MLP(sizes, activation=activation, loss=loss, alpha=0.2)
    X, Y, params = problem(rng, net.sizes, loss, N=9)
    N = X.shape[0]
    acts = {"identity": lambda z: z, "logistic": jax.nn.sigmoid, "tanh": jnp.tanh,
            "relu": jax.nn.relu}

    def logits(ps, x):
        a = x
        for l in range(net.n_layers):
            z = a @ ps[2 * l] + ps[2 * l + 1].reshape(-1)
            a = acts[net.activations[l]](z) if l < net.n_layers - 1 else z
        return a

    def row_loss(ps, x, y):
        return row_loss_on_logits(jax, jnp, loss, logits(ps, x), y)

    def mean_loss(t):
        ps = unflat_jax(t, params)
        data = jnp.mean(jax.vmap(row_loss, (None, 0, 0))(ps, X, Y))
        return data + net.alpha / (2 * N) * sum(jnp.sum(ps[2 * l] ** 2) for l in range(net.n_layers))

    jp = [jnp.asarray(p) for p in params]
    per = jax.vmap(jax.grad(row_loss), (None, 0, 0))(jp, X, Y)
    for a, b in zip(net.per_example_gradients(X, Y, params), per):
        close(a, np.asarray(b).reshape(a.shape))
    per_flat = np.concatenate([np.asarray(b).reshape(N, -1) for b in per], axis=1)
    close(net.per_example_gradient_norms(X, Y, params), np.linalg.norm(per_flat, axis=1))
    close(flat(net.sum_grad_squared(X, Y, params)), (per_flat ** 2).sum(axis=0))
    J = jax.vmap(jax.jacrev(logits), (None, 0))(jp, X)
    for a, b in zip(net.jacobian_params(X, params), J):
        close(a, np.asarray(b).reshape(a.shape))
    J_flat = np.concatenate([np.asarray(b).reshape(N, net.sizes[-1], -1) for b in J], axis=2)
    close(net.empirical_ntk(X, params), np.einsum("ncp,kcp->nk", J_flat, J_flat))
    theta = jnp.asarray(flat(params))
    H = np.asarray(jax.hessian(mean_loss)(theta))
    v = [rng.normal(size=np.shape(p)) for p in params]
    close(flat(net.hessian_vector_product(X, Y, params, v)), H @ flat(v))
    close(flat(net.diag_hessian(X, Y, params)), np.diag(H))

    def f_logits(t):
        return logits(unflat_jax(t, params), X)

    z, Jv = jax.jvp(f_logits, (theta,), (jnp.asarray(flat(v)),))
    Hz = jax.vmap(jax.hessian(lambda zz, y: row_loss_on_logits(jax, jnp, loss, zz, y)))(z, jnp.asarray(Y))
    Gv = np.array(jax.vjp(f_logits, theta)[1](jnp.einsum("nij,nj->ni", Hz, Jv) / N)[0])
    Gv += np.concatenate([net.alpha / N * np.ravel(vi) if i % 2 == 0 else 0 * np.ravel(vi)
                          for i, vi in enumerate(v)])
    close(flat(net.ggn_vector_product(X, Y, params, v)), Gv)
    # the GGN's diagonal: JAX's Jacobians of the logits with its loss Hessians
    Jt = np.concatenate([np.asarray(b).reshape(N, net.sizes[-1], -1) for b in J], axis=2)
    G = np.einsum("ncp,ncd,ndq->pq", Jt, np.asarray(Hz), Jt) / N
    G += np.diag(np.concatenate([net.alpha / N * np.ones(np.size(p)) if i % 2 == 0
                                 else np.zeros(np.size(p)) for i, p in enumerate(params)]))
    close(flat(net.diag_ggn(X, Y, params)), np.diag(G))
