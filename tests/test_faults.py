"""Faults a robot meets in a long run, each with nothing lost: a camera that drops out (and comes back, or
not), SIGINT/SIGTERM during `process`, a full disk, a damaged export, and NaN/Inf depth."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.edge.loop import StreamOutputs, run_stream
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.edge.sources import CameraSource
from smoothdino.edge.synthetic import SyntheticScene, write_sequence

from .conftest import SMALL


# -- a camera that drops out -----------------------------------------------------------------------

class ScriptedCamera:
    """cv2.VideoCapture stand-in driven by a script shared by every open: `sessions[k]` frames are delivered
    by the k-th successful open; opens listed in `refuse` fail (isOpened False). Open times are recorded."""

    def __init__(self, sessions: list[int], refuse: set[int]):
        self.sessions, self.refuse = list(sessions), set(refuse)
        self.opens: list[float] = []
        self.scene = SyntheticScene(*SMALL, frames=64)
        self.delivered = 0
        self.canvases = self.scene.canvases()

    def __call__(self, *args):
        self.opens.append(time.monotonic())
        return _Capture(self, len(self.opens) - 1)


class _Capture:
    def __init__(self, script: ScriptedCamera, number: int):
        self.script, self.number = script, number
        self.ok = number not in script.refuse
        self.left = script.sessions.pop(0) if self.ok and script.sessions else 0

    def isOpened(self):  # noqa: N802
        return self.ok

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(0.02)
        rgb, _ = self.script.scene.frame(self.script.delivered % self.script.scene.frames, self.script.canvases)
        self.script.delivered += 1
        return True, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def get(self, prop):
        return 30.0

    def release(self):
        pass


def test_camera_that_comes_back_is_reconnected_with_backoff_and_counted(small_export, tmp_path, monkeypatch):
    import smoothdino.edge.sources as sources

    # 6 frames, then the cable is pulled: two reopen attempts fail, the third delivers 6 more frames; then gone
    script = ScriptedCamera(sessions=[6, 6], refuse={1, 2, 4, 5, 6})
    monkeypatch.setattr(sources.cv2, "VideoCapture", script)
    source = CameraSource("0", retries=3, retry_delay=0.05, read_timeout=0.5)
    pipeline = DepthPipeline.from_folder(small_export, backend="onnxruntime")
    report = run_stream(pipeline, source, StreamOutputs(folder=tmp_path / "live", resume=False))
    assert not report.interrupted
    assert report.reconnects == 1 and source.stats.reconnect_attempts == 3 + 3  # 3 to come back, 3 before giving up
    gaps = np.diff(script.opens)  # opens 1-3 and 4-6 are the two outages' attempts, 0.05, 0.1, 0.2 s apart
    assert len(script.opens) == 7 and gaps[2] > 1.6 * gaps[1] and gaps[5] > 1.6 * gaps[4]  # exponential back-off
    written = sorted((tmp_path / "live" / "depth").glob("*.png"))
    assert 2 <= len(written) <= 12 and report.computed == len(written)  # frames of both sessions, none lost in the loop
    run = json.loads((tmp_path / "live" / "metrics.json").read_text())["run"]
    assert run["reconnects"] == 1 and run["reconnect_attempts"] == 6 and run["interrupted"] is False


def test_camera_that_never_returns_ends_live_cleanly_in_one_line(small_export, tmp_path, monkeypatch):
    import smoothdino.edge.sources as sources

    script = ScriptedCamera(sessions=[5], refuse=set(range(1, 100)))
    monkeypatch.setattr(sources.cv2, "VideoCapture", script)
    monkeypatch.setattr(sources.CameraSource.__init__, "__defaults__",
                        (2, 0.02, None, 5.0, False, 8.0))  # retries, retry_delay, ... : a quick give-up
    result = CliRunner().invoke(app, ["live", "--engines", str(small_export), "--source", "0", "--headless",
                                      "--backend", "onnxruntime", "--out", str(tmp_path / "live")])
    assert result.exit_code == 0, result.output
    ended = [line for line in result.output.splitlines() if "reconnect attempts" in line]
    assert len(ended) == 1 and "stream ended" in ended[0]
    assert "Traceback" not in result.output
    assert len(list((tmp_path / "live" / "depth").glob("*.png"))) >= 1


# -- SIGINT / SIGTERM during process ---------------------------------------------------------------

@pytest.fixture(scope="module")
def long_sequence(tmp_path_factory) -> Path:
    return write_sequence(tmp_path_factory.mktemp("seq") / "long", SyntheticScene(*SMALL, frames=40))


@pytest.fixture(scope="module")
def uninterrupted(long_sequence, small_export, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    result = CliRunner().invoke(app, ["process", str(long_sequence), "--engines", str(small_export), "--out", str(out),
                                      "--backend", "onnxruntime", "--no-video"])
    assert result.exit_code == 0, result.output
    return out / "long"


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))}


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_process_keeps_whole_files_and_resumes_exactly(long_sequence, small_export, uninterrupted,
                                                                     tmp_path, signum, code):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "smoothdino.cli", "process", str(long_sequence), "--engines", str(small_export),
            "--out", str(out), "--backend", "onnxruntime", "--no-video", "--threads", "1"]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    depth = out / "long" / "depth"
    deadline = time.monotonic() + 120
    while len(list(depth.glob("*.png"))) < 4 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == code, stderr[-1500:]
    assert "Traceback" not in stderr and "run the same command to resume" in stderr

    written = _pngs(depth)
    assert 4 <= len(written) < 40, "the signal came too late to test anything"
    assert not [p for p in (out / "long").rglob("*") if ".tmp" in p.name]  # no half-written file anywhere
    reference = _pngs(uninterrupted / "depth")
    for name, image in written.items():
        assert image is not None and image.dtype == np.uint16 and image.shape == SMALL, name
        assert np.array_equal(image, reference[name]), name  # whole, and the same as an uninterrupted run
    metrics = json.loads((out / "long" / "metrics.json").read_text())
    assert metrics["run"]["interrupted"] is True
    assert {f"{row['frame']}.png" for row in metrics["frames"]} == set(written)  # metrics describe the files on disk

    result = CliRunner().invoke(app, ["process", str(long_sequence), "--engines", str(small_export), "--out", str(out),
                                      "--backend", "onnxruntime", "--no-video"])
    assert result.exit_code == 0, result.output
    resumed = _pngs(depth)
    assert resumed.keys() == reference.keys()
    assert all(np.array_equal(resumed[n], reference[n]) for n in reference)
    metrics = json.loads((out / "long" / "metrics.json").read_text())
    assert len(metrics["frames"]) == 40 and metrics["run"]["interrupted"] is False


# -- a full disk -----------------------------------------------------------------------------------

def test_full_disk_is_one_line_exit_2_and_no_partial_file(long_sequence, small_export, uninterrupted, tmp_path,
                                                          monkeypatch):
    import smoothdino.core.files as files

    real_write = files.write_file
    budget = {"pngs": 5}

    def filling_disk(path, data):
        if path.suffix == ".png":
            budget["pngs"] -= 1
        if budget["pngs"] < 0 or (path.suffix != ".png" and budget["pngs"] <= 0):
            with open(path, "wb") as f:  # what a full disk does: part of the file, then ENOSPC
                f.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(files, "write_file", filling_disk)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["process", str(long_sequence), "--engines", str(small_export), "--out", str(out),
                                      "--backend", "onnxruntime", "--no-video"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0] and "/long/" in errors[0]
    assert "Traceback" not in result.output
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # the partial file was removed
    written = _pngs(out / "long" / "depth")
    assert len(written) == 5 and all(np.array_equal(img, _pngs(uninterrupted / "depth")[n]) for n, img in written.items())

    monkeypatch.setattr(files, "write_file", real_write)  # space freed: the same command finishes the job
    result = CliRunner().invoke(app, ["process", str(long_sequence), "--engines", str(small_export), "--out", str(out),
                                      "--backend", "onnxruntime", "--no-video"])
    assert result.exit_code == 0, result.output
    assert len(_pngs(out / "long" / "depth")) == 40


# -- a damaged export ------------------------------------------------------------------------------

def _damaged(small_export: Path, tmp_path: Path, name: str, how: str) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(small_export, copy)
    path = copy / name
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # same size, one byte changed
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    return copy


@pytest.mark.parametrize("name, how, says", [
    ("manifest.json", "truncate", "not a smoothdino manifest"),
    ("encoder.fp16.onnx", "truncate", "truncated or replaced"),
    ("decoder.fp16.onnx", "flip", "SHA-256 mismatch"),
    ("adapter.fp16.onnx", "flip", "SHA-256 mismatch"),
])
def test_damaged_export_file_is_named_in_one_line(small_export, long_sequence, tmp_path, name, how, says):
    copy = _damaged(small_export, tmp_path, name, how)
    result = CliRunner().invoke(app, ["process", str(long_sequence), "--engines", str(copy), "--out",
                                      str(tmp_path / "out"), "--backend", "onnxruntime", "--limit", "2"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(copy / name) in errors[0] and says in errors[0], result.output


def test_damaged_engine_is_refused_before_tensorrt_sees_it(small_export, tmp_path):
    """TensorRT engines get the same record: a truncated .engine is refused by the manifest (no GPU needed)."""
    from smoothdino.edge.manifest import Manifest

    copy = tmp_path / "export"
    shutil.copytree(small_export, copy)
    manifest = Manifest.load(copy)
    engine = copy / "encoder.fp16.engine"
    engine.write_bytes(os.urandom(4096))  # stands in for a serialized engine
    manifest.stages["encoder"].engine = engine.name
    manifest.files.pop(engine.name, None)
    manifest.save(copy)
    assert Manifest.load(copy).engine_path("encoder") == engine  # recorded, and intact
    engine.write_bytes(engine.read_bytes()[:1000])
    with pytest.raises(Exception, match="4096 when exported"):
        Manifest.load(copy).engine_path("encoder")


# -- NaN / Inf in the depth ------------------------------------------------------------------------

def test_nonfinite_depth_is_flagged_never_written_and_the_run_goes_on(small_export, long_sequence, uninterrupted,
                                                                      tmp_path, monkeypatch):
    from smoothdino.edge.sources import FolderSource

    pipeline = DepthPipeline.from_folder(small_export, backend="onnxruntime")
    real = pipeline._depth_to_host
    calls = {"n": 0}

    def overflowing(depth_out):
        depth = real(depth_out).copy()
        calls["n"] += 1
        if calls["n"] == 4:  # frame 4: an FP16 overflow in a corner, NaN in a row
            depth[:10, :10] = np.inf
            depth[30] = np.nan
        return depth

    monkeypatch.setattr(pipeline, "_depth_to_host", overflowing)
    out = tmp_path / "out"
    report = run_stream(pipeline, FolderSource(long_sequence, limit=8), StreamOutputs(folder=out))
    assert report.computed == 8 and report.nonfinite == 1
    frame4 = cv2.imread(str(out / "depth" / "4.png"), cv2.IMREAD_UNCHANGED)
    reference = cv2.imread(str(uninterrupted / "depth" / "4.png"), cv2.IMREAD_UNCHANGED)
    bad = np.zeros(SMALL, bool)
    bad[:10, :10] = True
    bad[30] = True
    assert (frame4[bad] == 0).all()  # "no depth", never 65535 or a wrapped NaN cast
    assert np.array_equal(frame4[~bad], reference[~bad])
    for name in ("5.png", "8.png"):  # the run went on, from a fresh temporal state
        later = cv2.imread(str(out / "depth" / name), cv2.IMREAD_UNCHANGED)
        assert later.min() > 0 and later.shape == SMALL
    rows = {r["frame"]: r for r in json.loads((out / "metrics.json").read_text())["frames"]}
    assert rows["4"]["nonfinite_pixels"] == int(bad.sum()) and "nonfinite_pixels" not in rows["5"]
    assert json.loads((out / "metrics.json").read_text())["run"]["nonfinite_frames"] == 1
    # after the overflow, frame 5 is fused with itself (as after a scene cut), not with frame 4's levels
    fresh = DepthPipeline.from_folder(small_export, backend="onnxruntime")
    rgb5 = cv2.cvtColor(cv2.imread(str(long_sequence / "5.jpg")), cv2.COLOR_BGR2RGB)
    expected = np.clip(np.round(fresh.step(rgb5).depth * 1000), 0, 65535).astype(np.uint16)
    assert np.array_equal(cv2.imread(str(out / "depth" / "5.png"), cv2.IMREAD_UNCHANGED), expected)


def test_sigterm_handler_is_main_thread_only_and_restored():
    """Off the main thread (a test runner's worker, a GUI thread) nothing changes; on it, the previous handler is
    back when the command ends."""
    from smoothdino.core.signals import Terminated, termination_as_interrupt

    before = signal.getsignal(signal.SIGTERM)

    def in_worker():
        with termination_as_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    seen: list = []
    worker = threading.Thread(target=in_worker)
    worker.start()
    worker.join()
    assert seen == [before]
    with pytest.raises(Terminated), termination_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)  # the handler raises here
    assert signal.getsignal(signal.SIGTERM) is before
