"""``fastjac train`` / ``python -m fastjac train``: the lecture's output, files, and errors."""

import json
import os
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
    (["train", "--alpha", "0"], "--alpha: must be a number strictly between 0 and 1"),
    (["train", "--alpha", "1"], "--alpha"),
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


def test_importing_the_cli_loads_neither_matplotlib_nor_sklearn():
    code = ("import sys, fastjac.cli; "
            "print(sorted(m for m in ('matplotlib', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
