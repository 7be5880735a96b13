"""One memory budget for every dense tensor fastjac is asked to build.

The lecture's dense Jacobians grow as N^2: ``Dlogit`` alone is an (N, k, N, k)
tensor, 51 GB at N = 4,000. Before ``fastjac.dense``'s tensor builders, its
``chain_rule`` and every structured Jacobian's ``to_dense()``/``__array__``
allocate, they call ``check_dense(shape, dtype, what)``, which raises
``DenseMemoryError`` (a ``MemoryError``) above the budget, without allocating.

The budget is ``set_dense_budget(nbytes)`` if called, else
``$FASTJAC_DENSE_BUDGET`` (e.g. ``8GiB``), else 4 GiB. The command line's
``--dense-budget`` and ``fastjac.train.train(dense_budget=...)`` use the same.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["DenseMemoryError", "get_dense_budget", "set_dense_budget", "dense_budget", "check_dense",
           "check_dense_gradient", "dense_tensor_shapes", "dense_gradient_bytes", "parse_size",
           "format_bytes", "BUDGET_ENV", "DEFAULT_DENSE_BUDGET"]

BUDGET_ENV = "FASTJAC_DENSE_BUDGET"
DEFAULT_DENSE_BUDGET = 4 * 2**30

_budget: int | None = None  # set_dense_budget's value; None: the environment or the default


class DenseMemoryError(MemoryError):
    """A dense tensor would exceed the memory budget (``fastjac.set_dense_budget``)."""


_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20,
          "mb": 10**6, "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40,
          "tb": 10**12}


def parse_size(text: str | int) -> int:
    """Bytes from ``"4GiB"``, ``"500MB"``, ``"2g"`` or ``"123456"``.

    KiB/MiB/GiB/TiB and bare K/M/G/T are powers of 1024; kB/MB/GB/TB of 1000.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a memory size: {text!r} (examples: 4GiB, 500MB, 2g, 123456)")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not 0 < value < math.inf:
        raise ValueError(f"memory size must be positive and finite, got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style rendering of a byte count."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def set_dense_budget(nbytes: int | str | None) -> None:
    """Set the bytes any one dense tensor may take: an int, a size such as ``"8GiB"``,
    or ``None`` to go back to ``$FASTJAC_DENSE_BUDGET`` or 4 GiB."""
    global _budget
    if nbytes is None:
        _budget = None
        return
    if isinstance(nbytes, bool):
        raise TypeError(f"the dense budget must be a number of bytes or a size, got {nbytes!r}")
    _budget = parse_size(nbytes)


@contextmanager
def dense_budget(nbytes: int | str | None) -> Iterator[int]:
    """``with dense_budget("16GiB"):`` sets the budget for the block and restores it after
    (``None`` keeps it as it is); yields the budget in force."""
    global _budget
    saved = _budget
    if nbytes is not None:
        set_dense_budget(nbytes)
    try:
        yield get_dense_budget()
    finally:
        _budget = saved


def get_dense_budget() -> int:
    """The budget in bytes: ``set_dense_budget``'s, else ``$FASTJAC_DENSE_BUDGET``, else 4 GiB."""
    if _budget is not None:
        return _budget
    env = os.environ.get(BUDGET_ENV)
    if env:
        try:
            return parse_size(env)
        except ValueError as exc:
            raise ValueError(f"${BUDGET_ENV}: {exc}") from None
    return DEFAULT_DENSE_BUDGET


def dense_bytes(shape: Iterable[int], dtype: DTypeLike) -> int:
    """Bytes of a dense array of ``shape`` and ``dtype`` (Python ints: no overflow)."""
    return math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize


def check_dense(shape: Iterable[int], dtype: DTypeLike, what: str) -> None:
    """Raise ``DenseMemoryError`` if a dense ``shape`` array of ``dtype`` exceeds the budget.

    ``what`` names the allocation in the message (e.g. ``"fastjac.dense.Dlogit"``).
    """
    shape = tuple(int(s) for s in shape)
    need = dense_bytes(shape, dtype)
    budget = get_dense_budget()
    if need > budget:
        raise DenseMemoryError(
            f"{what} would allocate a dense {shape} {np.dtype(dtype)} tensor: "
            f"{format_bytes(need)} ({need:,} bytes), over the dense budget of "
            f"{format_bytes(budget)}. Use the structured Jacobians (fastjac's D* functions, "
            f"J @ v, J.vjp) instead, or raise the budget with "
            f"fastjac.set_dense_budget(nbytes) or ${BUDGET_ENV} (e.g. {BUDGET_ENV}=64GiB)")


def dense_tensor_shapes(N: int, d: int, k: int, m: int = 2) -> dict[str, tuple[int, ...]]:
    """Shapes of the dense Jacobians one dense gradient of the lecture's network holds at once.

    They are all locals of the lecture's ``df`` until it returns, so the peak
    is their sum; ``Dlogit`` (N, k, N, k) dominates.
    """
    return {
        "Dlogit(Z1)": (N, k, N, k),
        "DX_affine(X2, W2, b2)": (N, m, N, k),
        "DW_affine(X, W1, b1)": (N, k, d, k),
        "Dmatrix_softmax(Z2)": (N, m, N, m),
        "Db_affine(X, W1, b1)": (N, k, k),
        "DW_affine(X2, W2, b2)": (N, m, k, m),
        "Db_affine(X2, W2, b2)": (N, m, m),
    }


def dense_gradient_bytes(N: int, d: int, k: int, m: int = 2, itemsize: int = 8) -> int:
    """Peak bytes of the dense tensors in one dense gradient: the sum of ``dense_tensor_shapes``."""
    return itemsize * sum(math.prod(s) for s in dense_tensor_shapes(N, d, k, m).values())


def check_dense_gradient(N: int, d: int, k: int, m: int, dtype: DTypeLike, what: str) -> None:
    """Raise ``DenseMemoryError`` before a dense gradient whose tensors together exceed the budget."""
    need = dense_gradient_bytes(N, d, k, m, np.dtype(dtype).itemsize)
    budget = get_dense_budget()
    if need > budget:
        shape = dense_tensor_shapes(N, d, k, m)["Dlogit(Z1)"]
        raise DenseMemoryError(
            f"{what} at N={N}, d={d}, k={k}, m={m} would hold dense Jacobians of "
            f"{format_bytes(need)} ({need:,} bytes; Dlogit alone is a {shape} {np.dtype(dtype)} "
            f"tensor), over the dense budget of {format_bytes(budget)}. Use the structured "
            f"implementation (fastjac.nn_loss_gradient_closure), fewer rows or hidden units, or "
            f"raise the budget with fastjac.set_dense_budget(nbytes) or ${BUDGET_ENV}")
