"""fastjac.data: scikit-learn's bundled sets, the user's CSV files, splits and scaling."""

import re
import subprocess
import sys

import numpy as np
import pytest

from fastjac import data
from fastjac.data import (
    BREAST_CANCER_CLASSES,
    DATASETS,
    DataError,
    load_breast_cancer_data,
    load_csv,
    load_dataset,
    make_dataset,
    split_rows,
    standardize,
)


@pytest.fixture(autouse=True)
def keep_global_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


# ---------------------------------------------------------------- bundled sets

SKLEARN_LOADERS = {"breast_cancer": "load_breast_cancer", "digits": "load_digits",
                   "iris": "load_iris", "wine": "load_wine", "diabetes": "load_diabetes"}


@pytest.mark.parametrize("name", list(DATASETS))
def test_each_dataset_loads_with_its_shape_and_task(name):
    import sklearn.datasets

    info = DATASETS[name]
    ds = load_dataset(name)
    assert ds.name == name and ds.task == info.task
    assert ds.X.shape == (info.rows, info.features) and ds.X.dtype == np.float64
    assert ds.X.flags.c_contiguous
    assert ds.n_rows == info.rows and ds.n_features == info.features
    assert ds.n_outputs == info.outputs and ds.Y.shape == (info.rows, info.outputs)
    # bitwise scikit-learn's arrays
    ref = getattr(sklearn.datasets, SKLEARN_LOADERS[name])()
    assert np.array_equal(ds.X, ref.data) and np.array_equal(ds.target, ref.target)
    if info.task == "classification":
        assert ds.classes == [str(c) for c in ref.target_names]
        assert np.array_equal(ds.class_index, ref.target)
        assert np.array_equal(ds.Y[np.arange(info.rows), ref.target], np.ones(info.rows))
        assert np.array_equal(ds.Y.sum(axis=1), np.ones(info.rows))
    else:
        assert np.array_equal(ds.Y[:, 0], ref.target)
        with pytest.raises(ValueError, match="regression target, not classes"):
            ds.classes


def test_breast_cancer_classes_are_sklearns():
    from sklearn.datasets import load_breast_cancer

    assert BREAST_CANCER_CLASSES == tuple(load_breast_cancer().target_names)


@pytest.mark.parametrize("name", ["breast_cancer", "iris", "digits"])
def test_without_the_bundled_files_sklearns_loaders_give_the_same(name, monkeypatch):
    direct = load_dataset(name)
    monkeypatch.setattr(data, "_sklearn_data_file", lambda filename: None)
    fallback = load_dataset(name)
    assert np.array_equal(direct.X, fallback.X) and np.array_equal(direct.target, fallback.target)
    assert direct.classes == fallback.classes
    if name == "breast_cancer":
        X, labels, targets = load_breast_cancer_data()
        assert np.array_equal(X, direct.X) and np.array_equal(targets, direct.target)


def test_the_default_data_loads_without_importing_sklearn():
    code = ("import sys; from fastjac.data import load_dataset, load_breast_cancer_data; "
            "load_breast_cancer_data(); [load_dataset(n) for n in "
            "('breast_cancer', 'iris', 'wine', 'digits')]; print('sklearn' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_task_override_on_a_bundled_set():
    digits = load_dataset("digits", task="regression")
    assert digits.task == "regression" and digits.Y.shape == (1797, 1)
    assert np.array_equal(digits.Y[:, 0], digits.target.astype(float))
    diabetes = load_dataset("diabetes", task="classification")
    assert diabetes.n_outputs == len(np.unique(diabetes.target))
    assert diabetes.classes == sorted(set(diabetes.target.tolist()))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of breast_cancer, digits"):
        load_dataset("mnist")


# ---------------------------------------------------------------- arrays

def test_make_dataset_infers_the_task_from_the_target():
    X = np.arange(12.0).reshape(6, 2)
    assert make_dataset(X, [0, 1, 0, 1, 2, 2]).task == "classification"
    assert make_dataset(X, np.array([True, False] * 3)).task == "classification"
    assert make_dataset(X, ["b", "a", "b", "c", "a", "a"]).task == "classification"
    assert make_dataset(X, np.array(["b", "a"] * 3, dtype=object)).task == "classification"
    objects = make_dataset(X, np.array([2, 10, 2, 10, 1, 1], dtype=object))
    assert objects.task == "classification" and objects.classes == [1, 2, 10]
    assert make_dataset(X, np.array([0.5, 1, 2, 3, 4, 5], dtype=object)).task == "regression"
    assert make_dataset(X, [0.5, 1, 2, 3, 4, 5]).task == "regression"
    ds = make_dataset(X, ["b", "a", "b", "c", "a", "a"])
    assert ds.classes == ["a", "b", "c"]  # sorted, the order of Y's columns
    assert np.array_equal(ds.class_index, [1, 0, 1, 2, 0, 0])
    assert np.array_equal(ds.Y, np.eye(3)[[1, 0, 1, 2, 0, 0]])
    reg = make_dataset(X, [0, 1, 0, 1, 2, 2], task="regression")
    assert reg.task == "regression" and reg.Y.shape == (6, 1)


@pytest.mark.parametrize("X, y, task, match", [
    (np.ones((3, 2)), [0, 1], None, r"X must be \(N, d\) and y \(N,\)"),
    (np.ones((3,)), [0, 1, 0], None, r"X must be \(N, d\)"),
    (np.ones((0, 2)), np.array([], dtype=int), None, "no data"),
    (np.array([[1.0, np.nan], [2, 3]]), [0, 1], None, "non-finite value in column 1"),
    (np.array([["a", "b"], ["c", "d"]]), [0, 1], None, "X must be numeric"),
    (np.ones((3, 2)), [1, 1, 1], None, "single class"),
    (np.ones((3, 2)), ["x", "y", "x"], "regression", "a regression target must be numeric"),
    (np.ones((3, 2)), [0.5, np.inf, 1.0], None, "non-finite value"),
    (np.ones((3, 2)), [0, 1, 0], "clustering", "task must be one of classification, regression"),
], ids=["y-length", "X-1d", "no-rows", "X-nan", "X-strings", "one-class", "regress-strings",
        "y-inf", "bad-task"])
def test_make_dataset_rejects(X, y, task, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(X, y, task=task)


# ---------------------------------------------------------------- CSV files

def write(tmp_path, text, name="data.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_with_string_labels_is_classification(tmp_path):
    path = write(tmp_path, "\ufeffx1, label ,x2\n1.5,yes,2\n\n-3,no, 4e-1\n0,yes,7\n0.25,maybe,1\n")
    ds = load_csv(path, "label")
    assert ds.task == "classification" and ds.name == str(path) and ds.target_name == "label"
    assert np.array_equal(ds.X, [[1.5, 2], [-3, 0.4], [0, 7], [0.25, 1]])
    assert ds.classes == ["maybe", "no", "yes"]
    assert np.array_equal(ds.class_index, [2, 1, 2, 0])


def test_csv_target_types(tmp_path):
    ints = load_csv(write(tmp_path, "a,y\n1,3\n2,1\n3,3\n4,10\n"), "y")
    assert ints.task == "classification" and ints.classes == [1, 3, 10]
    floats = load_csv(write(tmp_path, "a,y\n1,3.0\n2,1.5\n3,2e1\n"), "y")
    assert floats.task == "regression" and np.array_equal(floats.Y[:, 0], [3.0, 1.5, 20.0])
    forced = load_csv(write(tmp_path, "a,y\n1,3\n2,1\n3,4\n"), "y", task="regression")
    assert forced.task == "regression" and forced.Y.dtype == np.float64


CSV_ERRORS = [
    ("a,b,y\n1,2,0\n4,x,1\n", "y", "column 'b' has a non-numeric value 'x' on line 3"),
    ("a,b,y\n1,2,0\n4,,1\n", "y", "column 'b' has a missing value on line 3"),
    ("a,b,y\n1,2,0\n4,nan,1\n", "y", "column 'b' has a non-finite value 'nan' on line 3"),
    ("a,b,y\n1,2,0\n4,5\n", "y", "line 3: 2 fields, but the header has 3"),
    ("a,b,y\n1,2,0\n", "z", "no column is named 'z'; the columns are 'a', 'b', 'y'"),
    ("a,y,y\n1,2,0\n", "y", "two columns are named 'y'"),
    ("", "y", "empty file"),
    ("a,y\n", "y", "no data rows"),
    ("y\n1\n2\n", "y", "no feature columns"),
    ("a,y\n1,0\n2,\n", "y", "target column 'y' has a missing value on line 3"),
    ("a,y\n1,3\n2,3\n", "y", "single class"),
    ("a,y\n1,nan\n2,1.5\n", "y", "target 'y' has a non-finite value"),
]


@pytest.mark.parametrize("text, target, message", CSV_ERRORS,
                         ids=[re.sub(r"\W+", "-", m).strip("-") for _, _, m in CSV_ERRORS])
def test_csv_errors_name_the_file_and_the_column(tmp_path, text, target, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as exc:
        load_csv(path, target)
    assert message in str(exc.value) and str(exc.value).startswith(str(path))
    assert "\n" not in str(exc.value)


def test_csv_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="No such file"):
        load_csv(tmp_path / "missing.csv", "y")
    with pytest.raises(DataError, match="directory"):
        load_csv(tmp_path, "y")
    with pytest.raises(DataError, match="not a UTF-8 text file"):
        load_csv(write(tmp_path, "a,y\n\xe9,1\n", encoding="latin-1"), "y")
    with pytest.raises(DataError, match="a regression target must be numeric"):
        load_csv(write(tmp_path, "a,y\n1,u\n2,v\n"), "y", task="regression")


# ---------------------------------------------------------------- splits and scaling

def test_split_first_rows():
    split = split_rows(10, train_rows=7)
    assert np.array_equal(split.train, np.arange(7)) and np.array_equal(split.test, [7, 8, 9])


def test_split_by_fraction_is_seeded_and_leaves_the_global_generator_alone():
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    a = split_rows(150, test_fraction=0.25, seed=1)
    assert np.array_equal(np.random.get_state()[1], before)
    assert len(a.test) == 38 and len(a.train) == 112  # ceil(0.25 * 150) test rows
    assert np.array_equal(np.sort(np.concatenate([a.train, a.test])), np.arange(150))
    assert np.all(np.diff(a.train) > 0) and np.all(np.diff(a.test) > 0)
    perm = np.random.RandomState(1).permutation(150)
    assert np.array_equal(a.test, np.sort(perm[:38]))
    b, c = split_rows(150, test_fraction=0.25, seed=1), split_rows(150, test_fraction=0.25, seed=2)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one"),
    (dict(train_rows=3, test_fraction=0.5), "exactly one"),
    (dict(train_rows=0), r"1\.\.9"),
    (dict(train_rows=10), r"1\.\.9"),
    (dict(test_fraction=0.01), None),  # ceil(0.1) = 1 test row: fine
    (dict(test_fraction=0.95), "leaves no training or no test rows"),
], ids=["neither", "both", "rows-0", "rows-N", "fraction-small", "fraction-large"])
def test_split_errors(kwargs, match):
    if match is None:
        assert len(split_rows(10, **kwargs).test) == 1
        return
    with pytest.raises(ValueError, match=match):
        split_rows(10, **kwargs)


def test_standardize_with_row_indices():
    X = load_breast_cancer_data().X
    by_count = standardize(X, 400)
    by_index = standardize(X, np.arange(400))
    assert all(np.array_equal(a, b) for a, b in zip(by_count, by_index))
    rows = np.array([3, 50, 7, 400])
    Xs, mean, std = standardize(X, rows)
    np.testing.assert_allclose(Xs[rows].mean(axis=0), 0, atol=1e-12)
    assert np.array_equal(mean, X[rows].mean(axis=0))
    for bad in (np.array([], dtype=int), np.array([0.5, 1.0])):
        with pytest.raises(ValueError, match="train_rows"):
            standardize(X, bad)
