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
