"""Block Armijo backtracking and the lecture's helpers for lists of parameter blocks.

These functions do not depend on how Jacobians are stored, so ``fastjac.dense``
and ``fastjac.structured`` export the very same objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import numpy.random as rd
from numpy.typing import ArrayLike, NDArray


class LineSearchError(ValueError):
    """The line search cannot make progress (non-finite start, no descent, too many trials)."""


class LineSearchResult(tuple):
    """``(x, fx)`` as the lecture returns it, plus ``.t`` (accepted step) and ``.nfev``.

    It unpacks as two values, so ``x, fx = block_backtracking(...)`` works as in
    the lecture, while ``res.t`` and ``res.nfev`` give the step and the number
    of evaluations of ``f`` (including ``f(x0)``).
    """

    t: float
    nfev: int

    def __new__(cls, x: list[np.ndarray], fx: float | np.floating, t: float,
                nfev: int) -> LineSearchResult:
        self = super().__new__(cls, (x, fx))
        self.t, self.nfev = t, nfev
        return self

    x = property(lambda self: self[0])
    fx = property(lambda self: self[1])

    def __repr__(self) -> str:
        return f"LineSearchResult(fx={self.fx!r}, t={self.t!r}, nfev={self.nfev})"


class _LineSearch(Protocol):
    """The type of ``nn_line_search_closure(X, Y)``: ``block_backtracking`` on a fixed loss."""

    def __call__(self, x0: Sequence[np.ndarray], dx: Sequence[np.ndarray],
                 df0: Sequence[np.ndarray], alpha: float = 0.1, beta: float = 0.5,
                 max_iter: int | None = None, *,
                 f0: float | np.floating | None = None) -> LineSearchResult: ...


def _check_blocks(x: Sequence[ArrayLike], y: Sequence[ArrayLike], xname: str,
                  yname: str) -> None:
    if len(x) != len(y):
        raise ValueError(f"{xname} has {len(x)} blocks but {yname} has {len(y)}")
    for i, (a, b) in enumerate(zip(x, y)):
        if type(a) is np.ndarray and type(b) is np.ndarray and a.shape == b.shape:
            continue  # the common case, without np.shape's overhead
        sa, sb = np.shape(a), np.shape(b)
        if sa == sb:
            continue
        # (k,) gradients of (1, k) biases broadcast, as in the lecture's loop
        try:
            ok = np.broadcast_shapes(sa, sb) == sa
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"block {i}: {xname}[{i}] has shape {sa} but {yname}[{i}] "
                f"has shape {sb}, which does not broadcast to it"
            )


def update_blocks(x: Sequence[np.ndarray], y: Sequence[np.ndarray], t: float) -> list[np.ndarray]:
    """``[x_i + t * y_i]`` for two lists of blocks, y_i broadcasting to x_i (new arrays)."""
    _check_blocks(x, y, "x", "y")
    return [xi + t * yi for xi, yi in zip(x, y)]


def negate_blocks(x: Iterable[np.ndarray]) -> list[np.ndarray]:
    """``[-x_i]``: the descent direction from a list of gradient blocks."""
    return [-xi for xi in x]


# np.add.reduce(a, axis=None) is what np.sum(a) runs (the same values), without its
# Python wrapper: these two run once per training step.
def block_norm(x: Iterable[ArrayLike]) -> np.floating:
    """Euclidean norm of all blocks together: ``sqrt(sum_i ||x_i||^2)``."""
    return np.sqrt(sum(np.add.reduce(np.asarray(xi) ** 2, axis=None) for xi in x))


def block_dot(x: Iterable[np.ndarray], y: Iterable[np.ndarray]) -> np.floating:
    """``sum_i <x_i, y_i>`` over lists of equally shaped blocks."""
    return sum(np.add.reduce(xi * yi, axis=None) for xi, yi in zip(x, y))


def random_matrix(shape: tuple[int, int], sigma: float = 0.1) -> NDArray[np.float64]:
    """``sigma * randn`` of a 2-D ``shape`` from numpy's global generator (the lecture's init)."""
    return np.reshape(sigma * rd.randn(shape[0] * shape[1]), shape)


_EPS64 = float(np.finfo(np.float64).eps)  # np.finfo costs microseconds per call


def default_max_iter(beta: float) -> int:
    """Trials until ``beta**i`` falls below float64 epsilon: past that ``x0 + t dx`` is ``x0``."""
    return math.ceil(math.log(_EPS64) / math.log(beta)) + 1


def block_backtracking(x0: Sequence[np.ndarray],
                       f: Callable[[Sequence[np.ndarray]], float | np.floating],
                       dx: Sequence[np.ndarray], df0: Sequence[np.ndarray], alpha: float = 0.1,
                       beta: float = 0.5, verbose: bool = False, *, max_iter: int | None = None,
                       plot_file: str | None = None,
                       f0: float | np.floating | None = None) -> LineSearchResult:
    """Armijo backtracking along ``dx`` over blocks of variables (the lecture's).

    Accept the first ``t = beta**i`` with ``f(x0 + t dx) <= f(x0) + t alpha <dx, df0>``
    and ``f(x0 + t dx)`` finite.

    Parameters
    ----------
    x0, dx, df0 : lists of ndarrays, the same shapes block by block
        Start point, direction and gradient at ``x0``.
    f : callable, list of blocks -> float
    alpha : float in (0, 1), sufficient-decrease factor
    beta : float in (0, 1), step shrink factor
    verbose : bool
        Print ``(t, delta)`` and plot ``f`` near ``x0`` as the lecture does
        (needs matplotlib; without a display the plot is saved to ``plot_file``
        or ``block_backtracking.png`` and the path printed).
    max_iter : int, optional (keyword-only)
        Most trial steps. Default: enough for ``beta**i`` to fall below float64
        epsilon (53 for beta=0.5), beyond which the trial point no longer moves.
    plot_file : str, optional (keyword-only)
        Where to save the verbose plot.
    f0 : float, optional (keyword-only)
        ``f(x0)`` if the caller has it already (e.g. from the loss-and-gradient
        call that gave ``df0``): saves one evaluation. It must be ``f(x0)``.

    Returns
    -------
    LineSearchResult
        Unpacks as ``(x, fx)``; also has ``.t`` and ``.nfev`` (which counts
        ``f(x0)`` even when it is passed as ``f0``).

    Raises
    ------
    LineSearchError
        If ``f(x0)`` is not finite, ``dx`` is not a descent direction
        (``<dx, df0> >= 0`` or NaN), or no step is accepted in ``max_iter`` trials.
    """
    delta, max_iter = armijo_setup(x0, dx, df0, alpha, beta, max_iter)
    if f0 is None:
        f0 = f(x0)

    def trial(t: float) -> tuple[list[np.ndarray], float | np.floating]:
        x = update_blocks(x0, dx, t)
        return x, f(x)

    res = armijo_backtrack(f0, delta, beta, max_iter, trial)
    if verbose:
        print((res.t, delta))
        _plot_line(x0, f, dx, f0, delta, alpha, plot_file)
    return res


def armijo_setup(x0: Sequence[np.ndarray], dx: Sequence[np.ndarray], df0: Sequence[np.ndarray],
                 alpha: float, beta: float, max_iter: int | None) -> tuple[float, int]:
    """Check the arguments of a block line search; return ``(alpha <dx, df0>, max_iter)``.

    ``alpha <dx, df0>`` is a Python float whatever the blocks' dtype, so the
    Armijo test ``fx <= f0 + t delta`` is float64 arithmetic everywhere.

    Shared by ``block_backtracking`` and the fused ``nn_line_search_closure``
    so that both refuse the same inputs with the same errors.
    """
    _check_blocks(x0, dx, "x0", "dx")
    _check_blocks(x0, df0, "x0", "df0")
    if not (0 < alpha < 1 and 0 < beta < 1):
        raise ValueError(f"alpha and beta must lie in (0, 1), got alpha={alpha}, beta={beta}")
    if max_iter is None:
        max_iter = default_max_iter(beta)
    elif int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")

    slope = float(block_dot(dx, df0))
    if not slope < 0:
        raise LineSearchError(
            f"dx is not a descent direction: <dx, df0> = {slope!r} must be negative"
        )
    return alpha * slope, max_iter


def armijo_backtrack(f0: float | np.floating, delta: float, beta: float, max_iter: int,
                     trial: Callable[[float], tuple[list[np.ndarray], float | np.floating]]
                     ) -> LineSearchResult:
    """The Armijo loop: the first ``t = beta**i`` whose ``trial(t) -> (x, fx)`` has
    ``fx`` finite and ``fx <= f0 + t delta``, as a ``LineSearchResult``.

    ``trial(t)`` must return ``x = update_blocks(x0, dx, t)`` and the loss there,
    however it computes it; ``nfev`` counts ``f(x0)`` too.
    """
    check_start(f0)
    t = 1.0
    for i in range(1, max_iter + 1):
        x, fx = trial(t)
        if np.isfinite(fx) and fx <= f0 + t * delta:
            break
        t = beta * t
    else:
        raise no_step_error(max_iter, t / beta, f0, fx)
    return LineSearchResult(x, fx, t, i + 1)


def check_start(f0: float | np.floating) -> None:
    """Raise ``LineSearchError`` unless ``f(x0)`` is finite."""
    if not np.isfinite(f0):
        raise LineSearchError(f"f(x0) is not finite ({f0!r}); no step can satisfy Armijo")


def no_step_error(max_iter: int, t: float, f0: float | np.floating,
                  fx: float | np.floating) -> LineSearchError:
    """The ``LineSearchError`` for ``max_iter`` rejected trials, the last at step t with loss fx."""
    return LineSearchError(
        f"no step accepted in max_iter={max_iter} trials (last t={t:.3g}, "
        f"f(x0)={f0!r}, last f={fx!r})"
    )


def _plot_line(x0: Sequence[np.ndarray], f: Callable[[Sequence[np.ndarray]], float | np.floating],
               dx: Sequence[np.ndarray], f0: float | np.floating, delta: float, alpha: float,
               plot_file: str | None) -> None:
    """The lecture's verbose plot: f, the Armijo line and the tangent near t = 0."""
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "verbose=True plots with matplotlib: pip install 'fastjac[plot]'"
        ) from exc
    s = np.linspace(-1e-5, 1e-5, 64)
    fs = np.array([f(update_blocks(x0, dx, si)) for si in s])
    fig, ax = plt.subplots()
    ax.plot(s, fs)
    ax.plot(s, f0 + s * delta, "--")
    ax.plot(s, f0 + s * delta / alpha, ".")
    # numpy's ArrayLike has no list of Python and numpy scalars mixed (f0 is either)
    ax.scatter([0], [f0])  # type: ignore[arg-type]
    interactive = matplotlib.get_backend().lower() not in {"agg", "pdf", "svg", "ps", "cairo", "template"}
    if plot_file is None and interactive:
        plt.show()
    else:
        path = plot_file or "block_backtracking.png"
        fig.savefig(path)
        print(f"line-search plot saved to {path}")
    plt.close(fig)
