"""`smoothdino process`, `live` and `demo`: the files a user opens, resume, bad input."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence

runner = CliRunner()


def _copy_frames(src, dst, n):
    dst.mkdir(parents=True)
    for i in range(1, n + 1):
        for ext in ("jpg", "png"):
            shutil.copy(src / f"{i}.{ext}", dst / f"{i}.{ext}")
    return dst


@pytest.fixture()
def sequence(tmp_path, request):
    """Six 640x480 frames with depth: the shared NYUv2 sample when present, else the synthetic scene."""
    from .conftest import NYU

    if NYU.is_dir():
        return _copy_frames(NYU / "bathroom_0028_out", tmp_path / "bathroom_0028_out", 6)
    return write_sequence(tmp_path / "synthetic", SyntheticScene(480, 640, frames=6))


def _process(sequence, out, engines, *extra):
    return runner.invoke(app, ["process", str(sequence), "--engines", str(engines), "--out", str(out), *extra])


def test_process_writes_pngs_video_metrics_and_resumes(sequence, small_export, tmp_path):
    """--fusion off: frames deleted after a complete run are computed again exactly from the network alone; a fused
    run keeps only its last keyframe's output, resumes where it stopped, and refuses such a hole in one line
    (tests/test_fusion_runs.py)."""
    out = tmp_path / "out"
    result = _process(sequence, out, small_export, "--fusion", "off")
    assert result.exit_code == 0, result.output
    folder = out / sequence.name
    pngs = sorted((folder / "depth").glob("*.png"), key=lambda p: int(p.stem))
    assert [p.stem for p in pngs] == [str(i) for i in range(1, 7)]  # same names as the input frames
    first = {}
    for p in pngs:
        depth = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (480, 640)
        assert 1 <= depth.min() and depth.max() <= 10000  # millimetres within the head's range
        first[p.name] = p.read_bytes()
    video = cv2.VideoCapture(str(folder / "video.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 1280
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(metrics["frames"]) == 6 and metrics["run"]["random_weights"] and "warning" in metrics["run"]
    assert np.isfinite(metrics["summary"]["rmse"]) and (folder / "metrics.csv").read_text().count("\n") == 7

    # Resume: nothing to redo.
    again = _process(sequence, out, small_export, "--fusion", "off")
    assert again.exit_code == 0 and "Traceback" not in again.output
    assert all(p.read_bytes() == first[p.name] for p in pngs)
    row = next(line for line in again.output.splitlines() if line.strip().startswith("│ " + sequence.name[:8]))
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[2:4] == ["0", "6"]  # new, resumed

    # An interrupted run left frames 4-6 unwritten: they are recomputed exactly (frame 3 primes the adapter).
    for name in ("4.png", "5.png", "6.png"):
        (folder / "depth" / name).unlink()
    resumed = _process(sequence, out, small_export, "--fusion", "off")
    assert resumed.exit_code == 0, resumed.output
    assert all((folder / "depth" / n).read_bytes() == first[n] for n in ("4.png", "5.png", "6.png"))


def test_process_survives_truncated_jpeg(sequence, small_export, tmp_path):
    data = (sequence / "3.jpg").read_bytes()
    (sequence / "3.jpg").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    result = _process(sequence, out, small_export, "--no-video")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "3.jpg" in result.output
    folder = out / sequence.name
    assert sorted(p.stem for p in (folder / "depth").glob("*.png")) == ["1", "2", "4", "5", "6"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["run"]["skipped_frames"] == ["3.jpg"]
    cells = [c.strip() for c in next(l for l in result.output.splitlines() if "│ " + sequence.name[:8] in l).split("│")[1:-1]]
    assert cells[4] == "1"  # skipped


def test_process_refuses_other_size_without_resize(sequence, small_export, tmp_path):
    result = _process(sequence, tmp_path / "out", small_export, "--no-resize")
    assert result.exit_code == 2
    line = [l for l in result.output.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and "480x640" in line[0] and "70x98" in line[0]


def test_process_bad_folder_one_line(small_export, tmp_path):
    result = _process(tmp_path / "missing", tmp_path / "out", small_export)
    assert result.exit_code == 2 and "not a folder" in result.output and "Traceback" not in result.output


def test_live_on_video_file_headless_ends_by_itself(small_export, tmp_path):
    video = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (98, 70))
    for rgb, _ in SyntheticScene(70, 98, frames=20):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    for start in (1, 2):  # an autostart's restart: the same command again gets a run folder and video of its own
        result = runner.invoke(app, ["live", "--source", str(video), "--engines", str(small_export), "--headless",
                                     "--record", str(tmp_path / "live-%H%M%S%f.mp4"),
                                     "--out", str(tmp_path / "runs" / "%Y%m%d-%H%M%S%f")])
        assert result.exit_code == 0, result.output
        assert "FPS" in result.output and "dropped" in result.output
        records, runs = sorted(tmp_path.glob("live-*.mp4")), sorted((tmp_path / "runs").iterdir())
        assert len(records) == len(runs) == start, (records, runs)
        assert cv2.VideoCapture(str(records[-1])).get(cv2.CAP_PROP_FRAME_COUNT) >= 1
        assert (runs[-1] / "metrics.json").is_file() and list((runs[-1] / "depth").glob("*.png"))


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--frames", "4", "--size", "70x98"])
    assert result.exit_code == 0, result.output
    assert "random weights" in result.output.lower()
    assert (out / "synthetic" / "video.mp4").is_file() and len(list((out / "synthetic" / "depth").glob("*.png"))) == 4
    summary = json.loads((out / "synthetic" / "metrics.json").read_text())["summary"]
    assert summary["frames"] == 4 and np.isfinite(summary["delta1"])


def test_resume_refuses_pngs_of_another_export_and_redoes_unreadable_ones(sequence, small_export, small_export_fp32, tmp_path):
    """--fusion off: an unreadable PNG in the middle is computed again from the network alone (a fused run cannot
    refill it exactly and says so in one line: tests/test_fusion_runs.py)."""
    out = tmp_path / "out"
    assert _process(sequence, out, small_export, "--no-video", "--fusion", "off").exit_code == 0
    depth = out / sequence.name / "depth"
    other = _process(sequence, out, small_export_fp32, "--no-video", "--fusion", "off")  # fp32 export, same folder
    assert other.exit_code == 2 and "the export (--engines" in other.output and "--overwrite" in other.output
    (depth / "2.png").write_bytes(b"not a png")  # e.g. a power cut on a Jetson
    again = _process(sequence, out, small_export, "--no-video", "--fusion", "off")
    assert again.exit_code == 0, again.output
    assert cv2.imread(str(depth / "2.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    cells = [c.strip() for c in next(l for l in again.output.splitlines() if "│ " + sequence.name[:8] in l).split("│")[1:-1]]
    assert cells[2:4] == ["1", "5"]  # only the unreadable one was computed again


def test_on_the_fly_export_is_reused_only_while_current(tmp_path):
    """process without --engines: same options reuse <out>/engines; another seed or precision exports again."""
    seq = write_sequence(tmp_path / "seq", SyntheticScene(70, 98, frames=2))
    out = tmp_path / "out"

    def run(*extra):
        result = runner.invoke(app, ["process", str(seq), "--out", str(out), "--random-weights", "--no-video",
                                     "--overwrite", "--backend", "onnxruntime", *extra])
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "engines" / "manifest.json").read_text())
        return " ".join(result.output.split()), manifest

    first, manifest = run("--precision", "fp32")
    assert "exporting vits14+temporal fp32 (no export there yet)" in first
    again, same = run("--precision", "fp32")
    assert "exporting" not in again and same["export_seconds"] == manifest["export_seconds"]
    reseeded, other = run("--precision", "fp32", "--seed", "1")
    assert "(weights changed)" in reseeded and other["weights"]["encoder"] == "random-weights(seed=1)"
    fp16, half = run("--precision", "fp16", "--seed", "1")
    assert "(precision changed)" in fp16 and half["precision"] == "fp16"
