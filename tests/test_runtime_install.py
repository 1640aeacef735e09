"""The run-time install stays torch-free: the project's wheel goes into a fresh venv without torch (packages
from the registry only), processes frames from an existing export exactly as the full install does, and the
commands that need torch say in one line which extra to install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import cv2
import numpy as np
import pytest

from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence

from .conftest import SMALL
from .test_packaging import build_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh venv with only `pip install smoothdino-edge` (the wheel) in it."""
    root = tmp_path_factory.mktemp("runtime")
    wheel = build_wheel(root)
    env_dir = root / "venv"
    # no pip of its own (ensurepip: 3 s) and no byte-compiling of every installed file (8 s): this checkout's pip
    # installs into it, and the venv's first process writes the caches of what it imports (_run)
    venv.create(env_dir, with_pip=False)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q",
                           "--disable-pip-version-check", "--no-compile", str(wheel)], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        pytest.fail("pip install of the wheel into a fresh venv failed: " + " | ".join(tail))
    return env_dir


def _run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    env["COLUMNS"] = "200"
    return subprocess.run([str(env_dir / "bin" / "smoothdino"), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_fresh_venv_has_no_torch(runtime_venv, tmp_path):
    python = str(runtime_venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import importlib.util as u, smoothdino.edge, smoothdino.cli, sys; "
                            "print(u.find_spec('torch') is None, 'torch' in sys.modules, smoothdino.edge.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    no_torch, imported, where = probe.stdout.split()
    assert (no_torch, imported) == ("True", "False")
    assert str(runtime_venv) in where  # the installed copy, not the checkout


def test_runtime_processes_an_existing_export_like_the_full_install(runtime_venv, small_export, tmp_path):
    sequence = write_sequence(tmp_path / "seq" / "moving", SyntheticScene(*SMALL, frames=5))
    done = _run(runtime_venv, "process", str(sequence), "--engines", str(small_export), "--out", str(tmp_path / "lean"),
                "--backend", "onnxruntime", "--no-video", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RANDOM WEIGHTS" in done.stderr  # the export was made with random weights: the lean run says so too

    from smoothdino.cli import app
    from typer.testing import CliRunner

    full = CliRunner().invoke(app, ["process", str(sequence), "--engines", str(small_export), "--out",
                                    str(tmp_path / "full"), "--backend", "onnxruntime", "--no-video"])
    assert full.exit_code == 0, full.output
    lean = sorted((tmp_path / "lean" / "moving" / "depth").glob("*.png"))
    assert [p.name for p in lean] == [f"{i}.png" for i in range(1, 6)]
    for path in lean:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int32)
        b = cv2.imread(str(tmp_path / "full" / "moving" / "depth" / path.name), cv2.IMREAD_UNCHANGED).astype(np.int32)
        # the venvs may hold different ONNX Runtime releases: equal within 1 mm
        assert a.shape == SMALL and a.min() > 0 and np.abs(a - b).max() <= 1, path.name
    assert (tmp_path / "lean" / "moving" / "metrics.json").is_file()


def test_runtime_runs_inspect_on_an_existing_export(runtime_venv, small_export, tmp_path):
    """`inspect` (issue 13) runs on the lean install too: PCA images and stability from the graphs' outputs."""
    sequence = write_sequence(tmp_path / "seq" / "moving", SyntheticScene(*SMALL, frames=3))
    done = _run(runtime_venv, "inspect", str(sequence), "--engines", str(small_export), "--frames", "3", "--out",
                str(tmp_path / "inspect"), "--backend", "onnxruntime", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "inspect" / "moving"
    for sub in ("pca", "pca_fused"):
        images = sorted((folder / sub).glob("*.png"))
        assert len(images) == 3 and cv2.imread(str(images[0])).shape == (*SMALL, 3)
    assert cv2.imread(str(folder / "stability.png")) is not None and (folder / "stability.json").is_file()


@pytest.mark.parametrize("args, names", [
    (["export", "--random-weights", "--size", "70x98", "--out", "x"], "smoothdino export"),
    (["train", ".", "--random-weights", "--out", "runs"], "smoothdino train"),
    (["process", "{seq}", "--random-weights", "--out", "out"], "--engines DIR"),
])
def test_commands_that_need_torch_name_the_extra(runtime_venv, tmp_path_factory, args, names):
    sequence = write_sequence(tmp_path_factory.mktemp("seq") / "moving", SyntheticScene(*SMALL, frames=2))
    tmp_path = tmp_path_factory.mktemp("cwd")
    done = _run(runtime_venv, *[a.replace("{seq}", str(sequence)) for a in args], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert names in lines[0] and "'torch' extra" in lines[0] and "pip install torch==2.13.0" in lines[0]
    # the package is not on PyPI: the line adds the extra to what this install came from (here the wheel)
    assert re.search(r"then pip install '/\S+/smoothdino_edge-[^/']+\.whl\[torch\]'$", lines[0]), lines[0]
    assert not list(tmp_path.iterdir())  # nothing written


def test_runtime_benches_an_existing_export_without_torch(runtime_venv, small_export, tmp_path):
    """A Jetson's bench: `bench --engines` on the lean install times the export as it is (no export, no torch), with
    the row named from its manifest and its frames resized to the export's size."""
    sequence = write_sequence(tmp_path / "seq" / "moving", SyntheticScene(140, 196, frames=4))
    done = _run(runtime_venv, "bench", str(sequence), "--engines", str(small_export), "--backends", "onnxruntime",
                "--frames", "4", "--warmup", "1", "--out", str(tmp_path / "bench"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    key = f"vits14+temporal@onnxruntime/{json.loads((small_export / 'manifest.json').read_text())['precision']}"
    # the network's own rows and the fused ones beside them (the synthetic folder is NYUv2-layout: its camera is known)
    assert list(results["rows"]) == [key, f"{key}/fusion=auto"], results["rows"].keys()
    assert results["rows"][f"{key}/fusion=auto"]["fused"] and not results["rows"][key]["fused"]
    row = results["rows"][key]
    assert row["frames"] == 4 and row["timed_frames"] == 3 and row["accuracy"]["rmse"] > 0  # ground truth: 140x196
    assert results["frame_size"] == list(SMALL) and results["random_weights"]
    assert not (tmp_path / "bench" / "engines").exists()  # nothing exported
    assert (tmp_path / "bench" / "results.md").is_file() and "no accuracy_vs_latency.png" in done.stderr
