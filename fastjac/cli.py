"""Command line: ``fastjac train`` (or ``python -m fastjac train``) runs the lecture's training.

Exit status: 0 on success, 2 for a bad argument (one line on stderr), 1 when
training fails (e.g. the line search cannot make progress), 130 on Ctrl-C.
numpy work and matplotlib are imported only when needed, so ``--help`` and
argument errors return quickly.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:  # fastjac.train imports numpy: only when training
    from fastjac.train import History

NUM_EXAMPLES = 569  # fastjac.data.NUM_EXAMPLES, repeated to keep start-up light


class _Parser(argparse.ArgumentParser):
    """``parser.error`` on one line (no usage block), exit status 2."""

    train_parser: _Parser  # the ``train`` subcommand's parser (``build_parser`` sets it)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_in(low: int, high: int | None = None, what: str = "an integer") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _open_unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1, got {text!r}")
    return value


def _size(text: str) -> int:
    from fastjac.train import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> _Parser:
    parser = _Parser(prog="fastjac", description=(__doc__ or "fastjac").splitlines()[0])  # -OO drops docstrings
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = commands.add_parser(
        "train", help="train the lecture's network and print its lines",
        description="Train the lecture's one-hidden-layer network on the breast-cancer data "
                    "by block Armijo backtracking; the defaults reproduce the lecture's run.")
    p.add_argument("--impl", choices=("structured", "dense"), default="structured",
                   help="structured Jacobians and fused kernels, or the lecture's dense tensors "
                        "(default: %(default)s)")
    p.add_argument("--steps", type=_int_in(1, what="a positive integer"), default=100,
                   help="gradient steps (default: %(default)s)")
    p.add_argument("--hidden", type=_int_in(1, what="a positive integer"), default=20,
                   help="hidden units (default: %(default)s)")
    p.add_argument("--train-rows", type=_int_in(1, NUM_EXAMPLES - 1,
                                                f"an integer in 1..{NUM_EXAMPLES - 1}"),
                   default=400, help="first rows used for training, the rest for testing "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1, "an integer in 0..2**32-1"),
                   default=1234, help="numpy.random.seed before initialising the weights "
                        "(default: %(default)s)")
    p.add_argument("--alpha", type=_open_unit, default=0.1,
                   help="Armijo sufficient-decrease factor, in (0, 1) "
                        "(default: %(default)s)")
    p.add_argument("--beta", type=_open_unit, default=0.5,
                   help="line-search shrink factor, in (0, 1) (default: %(default)s)")
    p.add_argument("--max-iter", type=_int_in(1, what="a positive integer"), default=None,
                   help="most trial steps per line search (default: until beta**i < machine eps)")
    p.add_argument("--standardize", action="store_true",
                   help="scale features by the training rows' mean and std (not in the lecture)")
    p.add_argument("--dense-budget", type=_size, default=None, metavar="SIZE",
                   help="memory allowed for --impl dense's tensors, e.g. 8GiB "
                        "(default: $FASTJAC_DENSE_BUDGET or 4GiB)")
    p.add_argument("--plot", metavar="FILE", help="save loss and accuracy curves as PNG "
                                                  "(needs matplotlib)")
    p.add_argument("--json", metavar="FILE", help="write the full history as JSON")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final test accuracy")
    parser.train_parser = p
    return parser


def _version() -> str:
    from fastjac import __version__

    return __version__


def _check_writable(parser: argparse.ArgumentParser, option: str, path: str) -> None:
    """Fail now, before training, if ``path`` cannot be written."""
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    if os.path.isdir(target):
        parser.error(f"{option} {path}: is a directory")
    if not os.path.isdir(parent):
        parser.error(f"{option} {path}: directory {parent} does not exist")
    if os.path.exists(target) and not os.access(target, os.W_OK):
        parser.error(f"{option} {path}: file is not writable")
    if not os.path.exists(target) and not os.access(parent, os.W_OK | os.X_OK):
        parser.error(f"{option} {path}: directory {parent} is not writable")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fastjac`` and ``python -m fastjac``; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    train_parser = parser.train_parser
    if extra:
        train_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _train(train_parser, args)
    except KeyboardInterrupt:
        print(f"{train_parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None:
            _check_writable(parser, option, path)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'fastjac[plot]'")

    import warnings

    from fastjac.linesearch import LineSearchError
    from fastjac.train import DenseMemoryError, DenseMemoryWarning, check_dense_memory, train

    if args.impl == "dense":
        try:
            _, message = check_dense_memory(args.train_rows, args.hidden, args.dense_budget)
        except (DenseMemoryError, ValueError) as exc:
            parser.error(str(exc))
        if message:
            print(f"{parser.prog}: warning: {message}", file=sys.stderr)

    last = [-1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DenseMemoryWarning)  # reported above
            history = train(impl=args.impl, steps=args.steps, hidden=args.hidden,
                            train_rows=args.train_rows, seed=args.seed, alpha=args.alpha,
                            beta=args.beta, standardize=args.standardize,
                            max_iter=args.max_iter, dense_budget=args.dense_budget,
                            verbose=not args.quiet,
                            callback=lambda step: last.__setitem__(0, step.step))
    except LineSearchError as exc:
        print(f"{parser.prog}: error: line search failed at step {last[0] + 1}: "
              f"{' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if args.quiet:
        from fastjac.train import FINAL_FORMAT

        print(FINAL_FORMAT % history.test_accuracy)

    try:
        if args.json is not None:
            _write_json(history, args.json)
        if args.plot is not None:
            _write_plot(history, args.plot)
    except OSError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _write_json(history: History, path: str) -> None:
    import json

    with open(path, "w") as fh:
        json.dump(history.to_dict(), fh, indent=1)
        fh.write("\n")


def _write_plot(history: History, path: str) -> None:
    """Loss and training accuracy per step, test accuracy as a line; PNG via matplotlib's Agg."""
    # Figure + Agg canvas directly: no pyplot, no GUI backend, nothing global.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [s.step for s in history.steps]
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(2, 1, sharex=True)
    ax_loss.plot(steps, history.losses)
    ax_loss.set_ylabel("avg cross entropy (train)")
    ax_acc.plot(steps, history.train_accuracies, label="training")
    ax_acc.axhline(history.test_accuracy, color="C1", linestyle="--",
                   label=f"final test ({history.test_accuracy:.1f}%)")
    ax_acc.set_ylabel("accuracy (percent)")
    ax_acc.set_xlabel("step")
    ax_acc.legend(loc="lower right")
    c = history.config
    fig.suptitle(f"fastjac train: impl={c['impl']}, hidden={c['hidden']}, "
                 f"train rows={c['train_rows']}, alpha={c['alpha']}, beta={c['beta']}"
                 + (", standardized" if c["standardize"] else ""))
    fig.savefig(path, format="png")
