"""`smoothdino train`: the loss falls, an interruption resumes to the same state, a finished run says so.

The core tests train on small synthetic sequences written in the NYUv2 layout (<i>.jpg + <i>.png), so they
run on every machine; the scene split and pairing are also checked on the shared NYUv2 sample when present.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence
from smoothdino.models.train import find_scenes, make_pairs, split_scenes

EPOCHS = "4"  # one batch an epoch: the loss falls by half in 4 steps (seeded)
ARGS = ["--size", "70x98", "--frames-per-scene", "5", "--batch", "8", "--lr", "1e-3", "--epochs", EPOCHS,
        "--random-weights", "--val-scenes", "scene_val", "--checkpoint-every", "1"]
SCENES = {"scene_a": (2.6, -1.3), "scene_b": (-1.8, 2.2), "scene_val": (1.5, 1.0)}  # velocity, px/frame


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Three synthetic NYU-layout scenes at 70x98, 5 frames each: 8 training pairs = one batch per epoch."""
    root = tmp_path_factory.mktemp("synthetic_nyu")
    for seed, (name, velocity) in enumerate(SCENES.items()):
        write_sequence(root / name, SyntheticScene(70, 98, frames=5, velocity=velocity, seed=seed))
    return root


def _train(data_root, out, *extra):
    result = CliRunner().invoke(app, ["train", str(data_root), "--out", str(out), *ARGS, *extra])
    assert result.exit_code == 0, result.output
    return result


def _steps(out):
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "full"
    result = _train(data_root, out)
    return out, result


@pytest.mark.nyu
def test_split_by_scene_and_pairs_within_scenes_nyu(nyu_root):
    scenes = find_scenes([nyu_root])
    train, val = split_scenes(scenes, ["bedroom_0004_out"])
    assert [s.name for s in val] == ["bedroom_0004_out"] and len(train) == 2
    pairs = make_pairs(scenes[0], (70, 98), 5, 0.1)
    assert len(pairs) == 4 and all(p.scene == scenes[0].name for p in pairs)
    assert [p.current.stem for p in pairs] == ["2", "3", "4", "5"] and pairs[0].previous.stem == "1"
    assert all(p.shift[2] > 0.1 for p in pairs)  # consecutive NYU frames correlate


def test_split_by_scene_and_pairs_within_scenes_synthetic(data_root):
    scenes = find_scenes([data_root])
    train, val = split_scenes(scenes, ["scene_val"])
    assert [s.name for s in val] == ["scene_val"] and [s.name for s in train] == ["scene_a", "scene_b"]
    pairs = make_pairs(scenes[0], (70, 98), 5, 0.1)
    assert [p.current.stem for p in pairs] == ["2", "3", "4", "5"] and pairs[0].previous.stem == "1"
    dx, dy = SyntheticScene(velocity=SCENES["scene_a"]).true_shift()
    assert all(abs(p.shift[0] - dx) < 0.5 and abs(p.shift[1] - dy) < 0.5 and p.shift[2] > 0.1 for p in pairs)


def test_training_lowers_the_loss_and_reports_validation(full_run):
    out, result = full_run
    losses = [r["loss"] for r in _steps(out)]
    assert len(losses) == int(EPOCHS)
    assert losses[-1] < 0.9 * losses[0], losses
    assert "val original MSE" in result.output and "RANDOM WEIGHTS" in result.output
    assert "interrupted" not in result.output  # a finished run is not an interrupted one
    epochs = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "val_updated_mse" in r]
    assert len(epochs) == int(EPOCHS) and len({round(e["val_original_mse"], 9) for e in epochs}) == 1  # frozen model
    steps = _steps(out)
    assert steps[0]["cache_misses"] > 0 and steps[-1]["cache_misses"] == steps[1]["cache_misses"]  # encoder in epoch 0 only
    assert (out / "adapter.pt").is_file()
    from smoothdino.models import load_adapter

    trained = load_adapter("temporal", "vits14", out / "adapter.pt")  # usable by export --adapter-weights
    assert float(trained.levels[0].patch_out.weight.detach().abs().sum()) > 0


def test_stop_and_resume_reaches_the_same_state(full_run, data_root, tmp_path):
    out = tmp_path / "resumed"
    stopped = _train(data_root, out, "--max-steps", "2")
    assert len(_steps(out)) == 2 and "interrupted" not in stopped.output  # --max-steps is a plan, not a Ctrl-C
    _train(data_root, out, "--resume")
    a = torch.load(full_run[0] / "adapter.pt", weights_only=False)["adapter"]
    b = torch.load(out / "adapter.pt", weights_only=False)["adapter"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in _steps(out)] == [r["loss"] for r in _steps(full_run[0])]


def test_ctrl_c_saves_a_checkpoint_and_resume_is_exact(full_run, data_root, tmp_path):
    out = tmp_path / "sigint"
    cmd = [sys.executable, "-m", "smoothdino.cli", "train", str(data_root), "--out", str(out), *ARGS]
    # the resumed half runs in this process: the child must use as many threads, or float sums differ
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())})
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "log.jsonl").is_file() and len(_steps(out)) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    done = len(_steps(out))
    if done == int(EPOCHS):
        pytest.skip("training finished before the interrupt arrived")
    assert proc.returncode == 130, output
    assert "interrupted: checkpoint saved" in output and "Traceback" not in output
    _train(data_root, out, "--resume")
    a = torch.load(full_run[0] / "adapter.pt", weights_only=False)["adapter"]
    b = torch.load(out / "adapter.pt", weights_only=False)["adapter"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_ddp_same_command(data_root, tmp_path):
    import shutil

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not found beside this Python")
    out = tmp_path / "ddp"
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "smoothdino.cli", "train", str(data_root),
           "--out", str(out), *[a if a != EPOCHS else "2" for a in ARGS]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(_steps(out)) == 2 and (out / "adapter.pt").is_file()
    assert (proc.stdout + proc.stderr).count("val original MSE") == 1  # rank 0 reports


def test_resume_with_other_options_is_refused(full_run, data_root):
    out, _ = full_run
    result = CliRunner().invoke(app, ["train", str(data_root), "--out", str(out), *ARGS, "--resume", "--batch", "4"])
    assert result.exit_code == 2 and "saved with batch=8, now 4" in result.output
