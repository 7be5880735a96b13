"""The lecture's network in other autodiff libraries, for comparison (all float64).

Each ``*_closure(X, Y)`` returns ``fg(var) -> (loss, [dW1, db1, dW2, db2])`` with
numpy results, like ``fastjac.nn_loss_and_gradient_closure``; its library is
imported on first use, and ``MissingPeer`` (an ``ImportError``) says how to
install it when it is absent. The data are converted once, in the closure;
each call converts the parameters in and the gradients out, which is part of
what a user of that library pays.

* ``jax``: ``jax.jit(jax.value_and_grad(loss))`` with ``jax_enable_x64``.
* ``torch``: PyTorch eager autograd, float64 tensors sharing the numpy data.
* ``autograd``: HIPS autograd's ``value_and_grad`` over ``autograd.numpy``.
"""

import importlib

import numpy as np

INSTALL_HINT = "pip install 'fastjac[peers]' (torch==2.13.0 is the CPU wheel)"


class MissingPeer(ImportError):
    """A peer library is not installed."""


def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingPeer(f"{name} is not installed: {INSTALL_HINT}") from exc


def available(name):
    """True when the peer ``name`` (jax, torch, autograd) can be imported."""
    try:
        _import(name)
    except MissingPeer:
        return False
    return True


def version(name):
    """The installed distribution version of peer ``name``, or None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(name)
    except PackageNotFoundError:
        return None


def _float64(var):
    return [np.asarray(v, dtype=np.float64) for v in var]


def _blocks(grads):
    """[dW1, db1, dW2, db2] as numpy arrays, biases flattened to (k,) and (m,)."""
    dW1, db1, dW2, db2 = (np.asarray(g) for g in grads)
    return [dW1, db1.reshape(-1), dW2, db2.reshape(-1)]


def jax_closure(X, Y):
    """``fg`` by ``jax.jit(jax.value_and_grad(loss))`` in float64."""
    jax = _import("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = _import("jax.numpy")

    def loss(params, X, Y):
        W1, b1, W2, b2 = params
        H = jax.nn.sigmoid(X @ W1 + b1)
        logQ = jax.nn.log_softmax(H @ W2 + b2, axis=1)
        return -jnp.sum(Y * logQ) / X.shape[0]

    step = jax.jit(jax.value_and_grad(loss))
    Xj, Yj = jnp.asarray(X, dtype=jnp.float64), jnp.asarray(Y, dtype=jnp.float64)

    def fg(var):
        value, grads = step(tuple(jnp.asarray(v) for v in _float64(var)), Xj, Yj)
        return float(value), _blocks(grads)

    return fg


def torch_closure(X, Y):
    """``fg`` by PyTorch eager autograd in float64."""
    torch = _import("torch")
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))
    Yt = torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float64))

    def fg(var):
        params = [torch.tensor(v, requires_grad=True) for v in _float64(var)]
        W1, b1, W2, b2 = params
        H = torch.sigmoid(Xt @ W1 + b1)
        logQ = torch.log_softmax(H @ W2 + b2, dim=1)
        value = -(Yt * logQ).sum() / Xt.shape[0]
        value.backward()
        return float(value.detach()), _blocks(p.grad.numpy() for p in params)

    return fg


def autograd_closure(X, Y):
    """``fg`` by HIPS autograd's ``value_and_grad`` in float64."""
    autograd = _import("autograd")
    anp = _import("autograd.numpy")
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)

    def loss(params):
        W1, b1, W2, b2 = params
        H = 1 / (1 + anp.exp(-(anp.dot(X, W1) + b1)))
        Z2 = anp.dot(H, W2) + b2
        Z2 = Z2 - anp.max(Z2, axis=1, keepdims=True)
        logQ = Z2 - anp.log(anp.sum(anp.exp(Z2), axis=1, keepdims=True))
        return -anp.sum(Y * logQ) / X.shape[0]

    step = autograd.value_and_grad(loss)

    def fg(var):
        value, grads = step(_float64(var))
        return float(value), _blocks(grads)

    return fg


CLOSURES = {"jax": jax_closure, "torch": torch_closure, "autograd": autograd_closure}
