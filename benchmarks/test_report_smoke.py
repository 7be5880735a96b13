"""``report.py --quick`` runs end to end and writes its three files."""

import json

import pytest

pytest.importorskip("matplotlib", reason="report.py plots with matplotlib: pip install -e '.[bench]'")

import report  # noqa: E402


def test_report_quick_writes_files(tmp_path):
    results = report.main(["--quick", "--out", str(tmp_path), "--impls", "numpy,fused,structured"])
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# fastjac benchmark report") and "## Targets (issue 4)" in md
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["targets"]) == len(results["targets"]) == 7
    assert saved["scaling"]["narrow"]["400"]["numpy"]["median_s"] > 0


def test_report_estimators_quick_splits_each_fit(tmp_path):
    """``report_estimators.py --quick`` end to end: every L-BFGS fit is split into the time in
    its objective and the rest, and the split is written."""
    import report_estimators

    results = report_estimators.main(["--quick", "--out", str(tmp_path)])
    md = (tmp_path / "estimators.md").read_text()
    assert "| in the objective / outside |" in md and "in the objective alone" in md
    saved = json.loads((tmp_path / "estimators.json").read_text())
    assert set(saved["compare"]) == {"synthetic", "digits", "diabetes"}
    for r in results["compare"].values():
        for t in r["times"].values():
            for fit in t["fits"]:
                assert 0 < fit["objective_s"] < fit["seconds"]
                assert fit["nfev"] >= t["n_iter"][0]
            # medians of pointwise-smaller samples are smaller
            assert 0 < t["objective_median_s"] < t["median_s"]
            assert t["outside_median_s"] > 0


def test_one_ulp_control_leaves_the_data_alone():
    """The agreement check's control refits on a copy with X[0, 0] one ulp up."""
    import numpy as np
    import report_estimators
    from sklearn.datasets import load_iris
    from sklearn.neural_network import MLPClassifier

    X, y = load_iris(return_X_y=True)
    before = X.copy()
    make = (lambda: MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=5,
                                  random_state=0), True)
    with report_estimators.NfevRecorder() as nfev:
        loss = report_estimators.fit_once(make, X, y, nfev)["loss"]
        rel = report_estimators.one_ulp_control(make, X, y, loss, nfev)
    assert np.array_equal(X, before)
    assert 0 <= rel < 1e-6  # five iterations from one moved input value
