"""The installed distribution claims one import name, `smoothdino`, and its run-time does not pull torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from .conftest import ROOT


def build_wheel(tmp_path: Path) -> Path:
    """The wheel a user would get, built from a copy of the tree (files git tracks or would track), so the
    build never writes into the checkout."""
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    for name in tracked + ["__init__.py"]:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel


def test_wheel_has_one_top_level_name(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"smoothdino"}, top
    for sub in ("models", "export", "calibration", "edge", "benchmarks", "core"):
        assert f"smoothdino/{sub}/__init__.py" in names
    assert "smoothdino/cli.py" in names and "smoothdino/__init__.py" in names
    # package data: the browser view's page (live --serve) is served from the installed package
    static = sorted(p.name for p in (ROOT / "edge" / "web" / "static").iterdir())
    assert static and [n for n in static if f"smoothdino/edge/web/static/{n}" not in names] == []
    assert not any(n.startswith("smoothdino/tests/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "smoothdino = smoothdino.cli:app" in zipfile.ZipFile(wheel).read(entry).decode()


def test_plain_install_does_not_pull_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.split()[0].lower().startswith("torch")]


def test_files_named_in_pyproject_exist():
    """Comments and settings in pyproject.toml that point at test or source files point at real ones."""
    import re

    text = (ROOT / "pyproject.toml").read_text()
    named = set(re.findall(r"\b((?:tests|models|export|edge|calibration|benchmarks|core)/[\w/]+\.py)\b", text))
    assert named, "pyproject.toml names no files: this test checks nothing"
    assert [n for n in named if not (ROOT / n).is_file()] == []
