"""Command line: ``fastjac train`` (or ``python -m fastjac train``) trains by Armijo backtracking.

With no options it is the lecture's run (its network, the breast-cancer data,
its printed lines); ``--dataset``, ``--csv FILE --target COLUMN``, ``--layers``,
``--activation``, ``--loss`` and ``--alpha`` (the L2 penalty) train other
networks on other data.

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

# Repeated from fastjac.data / fastjac.train to keep start-up light (a test checks they agree).
DATASETS = ("breast_cancer", "digits", "iris", "wine", "diabetes")
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "squared_error")
TASKS = ("classification", "regression")

# train()'s parameters as this command's options, for its error messages.
OPTION_NAMES = {"impl": "--impl", "steps": "--steps", "hidden": "--hidden", "layers": "--layers",
                "train_rows": "--train-rows", "test_fraction": "--test-fraction", "seed": "--seed",
                "alpha": "--armijo-alpha", "beta": "--beta", "max_iter": "--max-iter",
                "l2": "--alpha", "activation": "--activation", "loss": "--loss", "task": "--task",
                "dataset": "--dataset"}


class _Parser(argparse.ArgumentParser):
    """``parser.error`` on one line (no usage block), exit status 2."""

    train_parser: _Parser  # the ``train`` subcommand's parser (``build_parser`` sets it)

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # one line, whatever the message holds
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_in(low: int | None, high: int | None = None, what: str = "an integer"
            ) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
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


def _penalty(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (the L2 penalty), "
                                         f"got {text!r}")
    return value


def _widths(text: str) -> list[int]:
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas "
                                         f"(e.g. 64,32), got {text!r}")
    return widths


def _activations(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if name not in ACTIVATIONS:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(ACTIVATIONS)}, or one per hidden layer separated by "
                f"commas, got {text!r}")
    return names


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
        "train", help="train a network by block Armijo backtracking (default: the lecture's run)",
        description="Train a network by steepest descent with block Armijo backtracking on "
                    "scikit-learn's bundled data or your own CSV file; with no options, the "
                    "lecture's one-hidden-layer network on the breast-cancer data, printing the "
                    "lecture's lines.")
    data = p.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=DATASETS, default=None,
                        help="one of scikit-learn's bundled sets (default: breast_cancer)")
    source.add_argument("--csv", metavar="FILE",
                        help="a CSV file with a header row; needs --target; every other column "
                             "must be numeric")
    data.add_argument("--target", metavar="COLUMN", help="the CSV file's target column, by name")
    data.add_argument("--task", choices=TASKS, default=None,
                      help="override the task the target gives (strings or integers: "
                           "classification; other numbers: regression)")
    split = data.add_mutually_exclusive_group()
    split.add_argument("--train-rows", type=_int_in(None), default=None, metavar="R",
                       help="the first R rows train, the rest test (default: 400 for "
                            "breast_cancer, the lecture's split)")
    split.add_argument("--test-fraction", type=_open_unit, default=None, metavar="F",
                       help="test on ceil(F N) rows drawn by a permutation seeded by --seed "
                            "(default: 0.25 for every dataset but breast_cancer)")
    data.add_argument("--standardize", action="store_true",
                      help="scale features by the training rows' mean and std (not in the lecture)")

    net = p.add_argument_group("network")
    width = net.add_mutually_exclusive_group()
    width.add_argument("--hidden", type=_int_in(1, what="a positive integer"), default=None,
                       metavar="K", help="one hidden layer of K units (default: 20)")
    width.add_argument("--layers", type=_widths, default=None, metavar="K1,K2,...",
                       help="hidden layer widths, e.g. 64,32")
    net.add_argument("--activation", type=_activations, default=["logistic"],
                     metavar="NAME[,NAME...]",
                     help=f"hidden activation: {', '.join(ACTIVATIONS)}, or one per hidden layer "
                          f"(default: logistic, the lecture's)")
    net.add_argument("--loss", choices=LOSSES, default=None,
                     help="default: softmax_cross_entropy for classification, squared_error for "
                          "regression")
    net.add_argument("--alpha", type=_penalty, default=0.0,
                     help="L2 penalty alpha / (2 N) sum ||W||^2, scikit-learn's alpha "
                          "(default: %(default)s)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--impl", choices=("structured", "dense"), default="structured",
                     help="fused kernels (any network), or the lecture's dense tensors (the "
                          "lecture's network only) (default: %(default)s)")
    opt.add_argument("--steps", type=_int_in(1, what="a positive integer"), default=100,
                     help="gradient steps (default: %(default)s)")
    opt.add_argument("--seed", type=_int_in(0, 2**32 - 1, "an integer in 0..2**32-1"),
                     default=1234, help="numpy.random.seed before initialising the weights, and "
                                        "the --test-fraction permutation (default: %(default)s)")
    opt.add_argument("--armijo-alpha", type=_open_unit, default=0.1, metavar="A",
                     help="Armijo sufficient-decrease factor, in (0, 1) (default: %(default)s)")
    opt.add_argument("--beta", type=_open_unit, default=0.5,
                     help="line-search shrink factor, in (0, 1) (default: %(default)s)")
    opt.add_argument("--max-iter", type=_int_in(1, what="a positive integer"), default=None,
                     help="most trial steps per line search (default: until beta**i < machine eps)")
    opt.add_argument("--dense-budget", type=_size, default=None, metavar="SIZE",
                     help="memory allowed for --impl dense's tensors, e.g. 8GiB "
                          "(default: $FASTJAC_DENSE_BUDGET or 4GiB)")

    out = p.add_argument_group("output")
    out.add_argument("--plot", metavar="FILE", help="save loss and accuracy (or R^2) curves as "
                                                    "PNG (needs matplotlib)")
    out.add_argument("--json", metavar="FILE", help="write the full history as JSON")
    out.add_argument("--quiet", action="store_true", help="print only the final test line")
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
    if args.csv is not None and args.target is None:
        parser.error("--csv needs --target COLUMN (the target column's name)")
    if args.target is not None and args.csv is None:
        parser.error("--target needs --csv FILE")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None:
            _check_writable(parser, option, path)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install 'fastjac[plot]'")

    from fastjac.data import load_csv
    from fastjac.linesearch import LineSearchError
    from fastjac.train import DenseMemoryError, Dataset, prepare, run

    activation = args.activation[0] if len(args.activation) == 1 else args.activation
    try:
        dataset: str | Dataset = (load_csv(args.csv, args.target) if args.csv is not None
                                  else args.dataset or "breast_cancer")
        plan = prepare(impl=args.impl, steps=args.steps, hidden=args.hidden,
                       train_rows=args.train_rows, seed=args.seed, alpha=args.armijo_alpha,
                       beta=args.beta, standardize=args.standardize, dataset=dataset,
                       layers=args.layers, activation=activation, loss=args.loss, l2=args.alpha,
                       task=args.task, test_fraction=args.test_fraction, max_iter=args.max_iter,
                       dense_budget=args.dense_budget, names=OPTION_NAMES)
    except (DenseMemoryError, ValueError) as exc:
        parser.error(str(exc))
    if plan.dense_message:
        print(f"{parser.prog}: warning: {plan.dense_message}", file=sys.stderr)

    last = [-1]
    try:
        history = run(plan, verbose=not args.quiet,
                      callback=lambda step: last.__setitem__(0, step.step))
    except LineSearchError as exc:
        print(f"{parser.prog}: error: line search failed at step {last[0] + 1}: "
              f"{' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if args.quiet:
        print(history.final_line())

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
    """Loss and training accuracy (or R^2) per step, the test score as a line; PNG via Agg."""
    # Figure + Agg canvas directly: no pyplot, no GUI backend, nothing global.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fastjac.train import CLASSIFICATION, LOSS_LABELS

    c = history.config
    classify = history.task == CLASSIFICATION
    steps = [s.step for s in history.steps]
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_score = fig.subplots(2, 1, sharex=True)
    ax_loss.plot(steps, history.losses)
    label = LOSS_LABELS.get(c.get("loss", ""), "loss").lower() + (" + L2" if c.get("l2") else "")
    ax_loss.set_ylabel(f"{label} (train)")
    if classify:
        ax_score.plot(steps, history.train_accuracies, label="training")
        ax_score.axhline(history.test_accuracy, color="C1", linestyle="--",
                         label=f"final test ({history.test_accuracy:.1f}%)")
        ax_score.set_ylabel("accuracy (percent)")
    else:
        ax_score.plot(steps, history.train_r2s, label="training")
        ax_score.axhline(history.test_r2, color="C1", linestyle="--",
                         label=f"final test ({history.test_r2:.4f})")
        ax_score.set_ylabel("R^2")
    ax_score.set_xlabel("step")
    ax_score.legend(loc="lower right")
    act = c.get("activation")
    fig.suptitle(f"fastjac train: {c.get('dataset')}, sizes {c.get('sizes')}, "
                 f"{act if isinstance(act, str) else ','.join(act or [])}, impl={c['impl']}, "
                 f"train rows={c['train_rows']}, armijo alpha={c['alpha']}, beta={c['beta']}"
                 + (f", L2 alpha={c['l2']}" if c.get("l2") else "")
                 + (", standardized" if c["standardize"] else ""), fontsize="medium")
    fig.savefig(path, format="png")
