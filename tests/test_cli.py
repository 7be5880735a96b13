"""``fastjac train`` / ``python -m fastjac train``: the lecture's output, files, and errors."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastjac.cli import main
from fastjac.train import train

LECTURE_OUTPUT = Path(__file__).with_name("lecture_output.txt")


def lecture_lines():
    return [ln for ln in LECTURE_OUTPUT.read_text().splitlines() if not ln.startswith("#")]


@pytest.fixture(autouse=True)
def keep_global_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "fastjac", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def assert_one_line_error(err, prog="fastjac train"):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err


def test_python_m_fastjac_train_prints_the_lectures_run(tmp_path):
    proc = run("train", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout.splitlines()
    expected = lecture_lines()
    assert out[:10] == expected[:10]
    assert out[10].startswith(expected[10])
    assert len(out) == 101 and out[100].startswith("Final test accuracy: ")
    assert list(tmp_path.iterdir()) == []  # writes nothing unless asked


def test_console_script():
    script = Path(sys.executable).with_name("fastjac")
    if not script.exists():
        script = shutil.which("fastjac")
        if script is None:
            pytest.skip("console script not installed (pip install -e . to create it)")
    proc = subprocess.run([str(script), "train", "--steps", "2"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == lecture_lines()[:2]


def test_main_in_process_matches_train(capsys):
    assert main(["train", "--steps", "3", "--seed", "5", "--hidden", "4"]) == 0
    out = capsys.readouterr().out
    history = train(steps=3, seed=5, hidden=4, verbose=False)
    from fastjac.train import FINAL_FORMAT, STEP_FORMAT

    expected = [STEP_FORMAT % (s.step, s.loss, s.grad_norm, s.train_accuracy)
                for s in history.steps] + [FINAL_FORMAT % history.test_accuracy]
    assert out.splitlines() == expected


def test_quiet_prints_only_the_final_line(capsys):
    assert main(["train", "--steps", "3", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("Final test accuracy: ")


BAD_ARGS = [
    (["train", "--steps", "0"], "argument --steps: must be a positive integer, got '0'"),
    (["train", "--steps", "-3"], "--steps"),
    (["train", "--steps", "ten"], "--steps"),
    (["train", "--hidden", "0"], "--hidden"),
    (["train", "--train-rows", "0"], "must be an integer in 1..568"),
    (["train", "--train-rows", "569"], "must be an integer in 1..568"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--armijo-alpha", "0"],
     "argument --armijo-alpha: must be a number strictly between 0 and 1"),
    (["train", "--armijo-alpha", "1"], "--armijo-alpha"),
    (["train", "--alpha", "-1"], "argument --alpha: must be a finite number >= 0 (the L2 penalty)"),
    (["train", "--alpha", "nan"], "argument --alpha"),
    (["train", "--alpha", "inf"], "argument --alpha"),
    (["train", "--alpha", "x"], "argument --alpha"),
    (["train", "--beta", "1.5"], "--beta"),
    (["train", "--beta", "nan"], "--beta"),
    (["train", "--beta", "x"], "--beta"),
    (["train", "--max-iter", "0"], "--max-iter"),
    (["train", "--impl", "sparse"], "argument --impl: invalid choice: 'sparse'"),
    (["train", "--dense-budget", "lots"], "--dense-budget: not a memory size"),
    (["train", "--json", "/nonexistent-dir/h.json"], "directory /nonexistent-dir does not exist"),
    (["train", "--plot", "/nonexistent-dir/p.png"], "--plot"),
    (["train", "--no-such-option"], "unrecognized arguments"),
    (["train", "--impl", "dense", "--dense-budget", "100MiB"],
     "the dense implementation needs about 580.1 MiB per gradient"),
    (["train", "--impl", "dense", "--train-rows", "568", "--hidden", "40"],
     "over the budget of 4.0 GiB"),
    (["train", "--train-rows", "x"], "argument --train-rows: must be an integer"),
    # data
    (["train", "--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
    (["train", "--dataset", "iris", "--csv", "x.csv", "--target", "y"],
     "argument --csv: not allowed with argument --dataset"),
    (["train", "--csv", "x.csv"], "--csv needs --target COLUMN"),
    (["train", "--target", "y"], "--target needs --csv FILE"),
    (["train", "--task", "clustering"], "argument --task: invalid choice"),
    (["train", "--dataset", "iris", "--train-rows", "150"],
     "--train-rows must be an integer in 1..149 (iris has 150 rows"),
    (["train", "--train-rows", "100", "--test-fraction", "0.2"],
     "argument --test-fraction: not allowed with argument --train-rows"),
    (["train", "--test-fraction", "0"], "argument --test-fraction: must be a number strictly"),
    (["train", "--test-fraction", "1"], "--test-fraction"),
    (["train", "--dataset", "iris", "--test-fraction", "0.999"],
     "--test-fraction 0.999 of iris's 150 rows leaves no training or no test rows"),
    # network
    (["train", "--hidden", "8", "--layers", "8,6"],
     "argument --layers: not allowed with argument --hidden"),
    (["train", "--layers", "8,0"], "argument --layers: must be positive integers separated"),
    (["train", "--layers", "8,,6"], "--layers"),
    (["train", "--layers", ""], "--layers"),
    (["train", "--activation", "sigmoid"], "argument --activation: must be one of identity"),
    (["train", "--layers", "8,6", "--activation", "tanh,relu,relu"],
     "--activation lists one name per hidden layer: 2"),
    (["train", "--activation", "tanh,relu"], "--activation lists one name per hidden layer: 1"),
    (["train", "--loss", "hinge"], "argument --loss: invalid choice: 'hinge'"),
    (["train", "--dataset", "diabetes", "--loss", "softmax_cross_entropy"],
     "--loss softmax_cross_entropy needs classes, but diabetes's target is a regression target"),
    (["train", "--task", "regression", "--loss", "binary_cross_entropy"], "needs classes"),
    (["train", "--impl", "dense", "--layers", "8,6"],
     "the dense implementation runs only the lecture's network"),
    (["train", "--impl", "dense", "--activation", "tanh"], "dense implementation runs only"),
    (["train", "--impl", "dense", "--alpha", "0.1"], "dense implementation runs only"),
    (["train", "--impl", "dense", "--dataset", "diabetes"], "dense implementation runs only"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err)
    assert message in captured.err


@pytest.mark.parametrize("argv, prog", [([], "fastjac"), (["fit"], "fastjac")])
def test_missing_or_unknown_command_exits_2(argv, prog, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert_one_line_error(capsys.readouterr().err, prog)


def test_output_paths_that_cannot_be_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--json", str(tmp_path)])
    assert exc.value.code == 2 and "is a directory" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SystemExit) as exc:
            main(["train", "--plot", str(locked / "p.png")])
        assert exc.value.code == 2 and "not writable" in capsys.readouterr().err


def test_bad_arguments_in_a_real_process():
    proc = run("train", "--train-rows", "1000")
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_line_error(proc.stderr)


def test_line_search_failure_is_one_line_and_exit_1(capsys):
    # t = 1 is never accepted on the raw features, so one trial cannot succeed.
    assert main(["train", "--max-iter", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err)
    assert "line search failed at step 0: no step accepted in max_iter=1 trials" in captured.err


def test_dense_warns_about_memory_on_stderr(capsys):
    assert main(["train", "--impl", "dense", "--steps", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "fastjac train: warning: the dense implementation needs about 580.1 MiB per gradient "
        "(Dlogit alone is a (400, 20, 400, 20) float64 tensor)")
    assert captured.out.splitlines()[0] == lecture_lines()[0]


def test_json_holds_the_full_history(tmp_path, capsys):
    path = tmp_path / "history.json"
    assert main(["train", "--steps", "12", "--json", str(path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    data = json.loads(path.read_text())
    assert set(data) == {"config", "steps", "test_accuracy", "params", "seconds"}
    assert data["config"]["impl"] == "structured" and data["config"]["steps"] == 12
    assert [s["step"] for s in data["steps"]] == list(range(12))
    assert set(data["steps"][0]) == {"step", "loss", "grad_norm", "train_accuracy", "t", "nfev"}
    assert "%f" % data["steps"][10]["loss"] == "0.640509"
    assert printed[0] == lecture_lines()[0]
    history = train(steps=12, verbose=False)
    assert [s["loss"] for s in data["steps"]] == list(history.losses)
    assert data["test_accuracy"] == history.test_accuracy
    assert np.array_equal(np.array(data["params"]["W1"]), history.params[0])
    assert np.shape(data["params"]["b2"]) == (1, 2)


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert main(["train", "--steps", "5", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(SystemExit) as exc:
        main(["train", "--plot", str(tmp_path / "p.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "--plot needs matplotlib" in err
    assert not (tmp_path / "p.png").exists()


def test_standardize_improves_on_the_raw_features(tmp_path, capsys):
    losses = {}
    for flag in ([], ["--standardize"]):
        path = tmp_path / f"h{len(flag)}.json"
        assert main(["train", "--steps", "20", "--json", str(path), *flag]) == 0
        losses[bool(flag)] = json.loads(path.read_text())["steps"][-1]["loss"]
    assert losses[True] < 0.5 * losses[False]


def test_help_and_version(capsys):
    for argv in (["--help"], ["train", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--dense-budget" in out and "fastjac 0." in out


def test_importing_the_cli_loads_neither_matplotlib_nor_sklearn_nor_scipy_sparse():
    """Each is imported where it is used: together they would add seconds to ``import``."""
    code = ("import sys, fastjac.cli; print(sorted(m for m in ('matplotlib', 'sklearn', "
            "'scipy.sparse') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- other data and networks

def test_the_clis_names_agree_with_the_package():
    from fastjac import activations, cli, data, losses

    assert cli.DATASETS == tuple(data.DATASETS)
    assert cli.ACTIVATIONS == tuple(activations.ACTIVATIONS)
    assert cli.LOSSES == tuple(losses.LOSSES)
    assert cli.TASKS == data.TASKS
    import inspect

    from fastjac.train import prepare

    params = set(inspect.signature(prepare).parameters)
    assert set(cli.OPTION_NAMES) <= params


def test_help_lists_the_new_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ("--dataset", "--csv FILE", "--target COLUMN", "--task", "--layers",
                   "--activation", "--loss", "--alpha", "--armijo-alpha", "--test-fraction"):
        assert option in out


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def csv_data(tmp_path, n=120):
    """A classification CSV (string labels, in the middle column) and a regression CSV."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, 3))
    labels = np.where(X[:, 0] + X[:, 1] > 0, "spam", "ham")
    cls = write_csv(tmp_path / "cls.csv", ["a", "b", "label", "c"],
                    [(f"{x[0]:.6f}", f"{x[1]:.6f}", lab, f"{x[2]:.6f}")
                     for x, lab in zip(X, labels)])
    reg = write_csv(tmp_path / "reg.csv", ["a", "b", "y", "c"],
                    [(f"{x[0]:.6f}", f"{x[1]:.6f}", f"{2 * x[0] - x[2]:.6f}", f"{x[2]:.6f}")
                     for x in X])
    return cls, reg


def test_csv_classification_round_trip(tmp_path, capsys):
    cls, _ = csv_data(tmp_path)
    path = tmp_path / "h.json"
    assert main(["train", "--csv", str(cls), "--target", "label", "--steps", "20",
                 "--standardize", "--json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 21 and out[0].startswith("Step: 0, Avg Cross Entropy: ")
    assert out[-1].startswith("Final test accuracy: ")
    data = json.loads(path.read_text())
    c = data["config"]
    assert c["dataset"] == str(cls) and c["target"] == "label" and c["task"] == "classification"
    assert c["classes"] == ["ham", "spam"] and c["sizes"] == [3, 20, 2]
    assert (c["train_rows"], c["test_rows"], c["test_fraction"]) == (90, 30, 0.25)
    assert set(data) == {"config", "steps", "test_accuracy", "params", "seconds"}
    assert data["steps"][-1]["loss"] < data["steps"][0]["loss"]
    assert data["steps"][-1]["train_accuracy"] > 80


def test_csv_regression_round_trip_with_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _, reg = csv_data(tmp_path)
    path, png = tmp_path / "h.json", tmp_path / "p.png"
    assert main(["train", "--csv", str(reg), "--target", "y", "--steps", "15", "--standardize",
                 "--train-rows", "100", "--json", str(path), "--plot", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 16
    assert all(ln.startswith(f"Step: {i}, Avg Half Squared Error: ") and
               " Training R^2: " in ln for i, ln in enumerate(out[:15]))
    assert out[-1].startswith("Final test R^2: ")
    data = json.loads(path.read_text())
    assert set(data) == {"config", "steps", "test_r2", "params", "seconds"}
    c = data["config"]
    assert c["task"] == "regression" and c["loss"] == "squared_error" and c["classes"] is None
    assert (c["train_rows"], c["test_rows"], c["test_fraction"]) == (100, 20, None)
    assert data["steps"][-1]["train_r2"] > 0.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_task_override(tmp_path, capsys):
    path = write_csv(tmp_path / "ints.csv", ["x", "grade"],
                     [(i / 10, i % 3 + 1) for i in range(30)])
    history = tmp_path / "h.json"
    assert main(["train", "--csv", str(path), "--target", "grade", "--steps", "2",
                 "--json", str(history), "--quiet"]) == 0
    assert json.loads(history.read_text())["config"]["classes"] == [1, 2, 3]
    assert main(["train", "--csv", str(path), "--target", "grade", "--steps", "2",
                 "--task", "regression", "--json", str(history), "--quiet"]) == 0
    assert json.loads(history.read_text())["config"]["task"] == "regression"
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Final test accuracy: ") and out[1].startswith("Final test R^2: ")


CSV_ERRORS = [
    ("a,b,y\n1,2,0\n4,x,1\n", ["--target", "y"],
     "column 'b' has a non-numeric value 'x' on line 3"),
    ("a,b,y\n1,2,0\n4,,1\n", ["--target", "y"], "column 'b' has a missing value on line 3"),
    ("a,b,y\n1,2,0\n4,5\n", ["--target", "y"], "line 3: 2 fields, but the header has 3"),
    ("a,b,y\n1,2,0\n", ["--target", "z"], "no column is named 'z'; the columns are 'a', 'b', 'y'"),
    ("", ["--target", "y"], "empty file"),
    ("a,y\n1,u\n2,v\n", ["--target", "y", "--task", "regression"],
     "target 'y' holds strings (e.g. 'u'): a regression target must be numeric"),
    ("a,y\n1,0.5\n2,1.5\n3,2.5\n", ["--target", "y", "--loss", "binary_cross_entropy"],
     "--loss binary_cross_entropy needs classes"),
    ("a,y\n1,0\n2,1\n3,1\n", ["--target", "y", "--train-rows", "3"],
     "--train-rows must be an integer in 1..2"),
]


@pytest.mark.parametrize("text, args, message", CSV_ERRORS,
                         ids=[re.sub(r"\W+", "-", m).strip("-") for _, _, m in CSV_ERRORS])
def test_csv_errors_exit_2_with_one_line(tmp_path, capsys, text, args, message):
    path = tmp_path / "data.csv"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--csv", str(path), *args])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err)
    assert message in captured.err


def test_csv_file_that_cannot_be_read(tmp_path, capsys):
    for path, message in ((tmp_path / "missing.csv", "No such file or directory"),
                          (tmp_path, "directory")):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--csv", str(path), "--target", "y"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert_one_line_error(err)
        assert str(path) in err and message in err


def test_layers_with_tanh_train_and_decrease_the_loss(tmp_path, capsys):
    path = tmp_path / "h.json"
    assert main(["train", "--dataset", "iris", "--layers", "8,6", "--activation", "tanh",
                 "--standardize", "--steps", "15", "--json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 16 and out[-1].startswith("Final test accuracy: ")
    data = json.loads(path.read_text())
    losses = [s["loss"] for s in data["steps"]]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.8 * losses[0]
    assert data["config"]["sizes"] == [4, 8, 6, 3] and data["config"]["activation"] == "tanh"
    assert set(data["params"]) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    assert np.shape(data["params"]["W2"]) == (8, 6)


def test_one_activation_per_layer_and_the_l2_penalty(tmp_path, capsys):
    path = tmp_path / "h.json"
    assert main(["train", "--dataset", "wine", "--layers", "5,4", "--activation",
                 "tanh,logistic", "--alpha", "0.01", "--armijo-alpha", "0.2", "--standardize",
                 "--steps", "4", "--seed", "3", "--json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Step: 0, Avg Cross Entropy + L2 Penalty: ")
    c = json.loads(path.read_text())["config"]
    assert c["activation"] == ["tanh", "logistic"] and c["l2"] == 0.01 and c["alpha"] == 0.2
    history = train(dataset="wine", layers=[5, 4], activation=["tanh", "logistic"], l2=0.01,
                    alpha=0.2, standardize=True, steps=4, seed=3, verbose=False)
    assert out == [history.step_line(s) for s in history.steps] + [history.final_line()]


def test_diabetes_regression_prints_r2_lines(capsys):
    assert main(["train", "--dataset", "diabetes", "--steps", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6
    for i, line in enumerate(out[:5]):
        assert line.startswith(f"Step: {i}, Avg Half Squared Error: ")
        assert " Gradient Norm: " in line and " Training R^2: " in line
    assert out[5].startswith("Final test R^2: ")


def test_split_options_on_the_default_data(tmp_path, capsys):
    path = tmp_path / "h.json"
    for args, rows in ((["--train-rows", "300"], (300, 269, None)),
                       (["--test-fraction", "0.2"], (455, 114, 0.2))):
        assert main(["train", "--steps", "1", "--quiet", "--json", str(path), *args]) == 0
        c = json.loads(path.read_text())["config"]
        assert (c["train_rows"], c["test_rows"], c["test_fraction"]) == rows


def test_default_run_does_not_import_sklearn():
    code = ("import sys; from fastjac.cli import main; rc = main(['train', '--steps', '1', "
            "'--quiet']); print(rc, 'sklearn' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0 False"
