"""The wheel a user installs carries the license and the typing marker."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_license_and_py_typed(tmp_path):
    # build from a copy of the sources, so that the build leaves nothing in the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT / "fastjac", src / "fastjac",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("fastjac-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastjac/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names), names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA")))
    assert b"License: MIT" in metadata or b"License-Expression: MIT" in metadata
    assert b"Classifier: Typing :: Typed" in metadata
