"""Faults a robot meets in a long run, each with nothing lost: a camera that drops out (and comes back, or
not), SIGINT/SIGTERM during `process`, a full disk, a damaged export, and NaN/Inf depth."""

from __future__ import annotations

import csv
import json
import os
import re
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
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence

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
        time.sleep(0.08)  # a slow camera: the loop sees frames of both sessions even on a loaded machine
        rgb, _ = self.script.scene.frame(self.script.delivered % self.script.scene.frames, self.script.canvases)
        self.script.delivered += 1
        return True, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def get(self, prop):
        return 30.0

    def release(self):
        pass


def test_camera_that_comes_back_is_reconnected_with_backoff_and_counted(small_export, tmp_path, monkeypatch):
    import smoothdino.edge.sources.camera as sources

    # 6 frames, then the cable is pulled: two reopen attempts fail, the third delivers 6 more frames; then gone
    script = ScriptedCamera(sessions=[6, 6], refuse={1, 2, 4, 5, 6})
    monkeypatch.setattr(sources.cv2, "VideoCapture", script)
    source = CameraSource("0", retries=3, retry_delay=0.25, read_timeout=0.5)
    pipeline = DepthPipeline.from_folder(small_export, backend="onnxruntime")
    report = run_stream(pipeline, source, StreamOutputs(folder=tmp_path / "live", resume=False))
    assert not report.interrupted
    assert report.reconnects == 1 and source.stats.reconnect_attempts == 3 + 3  # 3 to come back, 3 before giving up
    # opens 1-3 and 4-6 are the two outages' attempts, after 0.25, 0.5 and 1 s of back-off (the first gap of each
    # outage also holds the session's frames)
    gaps = np.diff(script.opens)
    assert len(script.opens) == 7 and gaps[0] >= 0.25 and gaps[3] >= 0.25
    for k, delay in ((1, 0.5), (2, 1.0), (4, 0.5), (5, 1.0)):  # doubling: never early, late only by a loaded machine's slack
        assert delay <= gaps[k] < delay + 0.2, (k, gaps)
    written = sorted((tmp_path / "live" / "depth").glob("*.png"))
    assert 2 <= len(written) <= 12 and report.computed == len(written)  # frames of both sessions, none lost in the loop
    run = json.loads((tmp_path / "live" / "metrics.json").read_text())["run"]
    assert run["reconnects"] == 1 and run["reconnect_attempts"] == 6 and run["interrupted"] is False


def test_camera_that_never_returns_ends_live_cleanly_in_one_line(small_export, tmp_path, monkeypatch):
    import smoothdino.edge.sources.camera as sources

    script = ScriptedCamera(sessions=[5], refuse=set(range(1, 100)))
    monkeypatch.setattr(sources.cv2, "VideoCapture", script)
    monkeypatch.setattr(sources.CameraSource.__init__, "__defaults__",
                        (2, 0.02, None, 5.0, False, 8.0))  # retries, retry_delay, ... : a quick give-up
    result = CliRunner().invoke(app, ["live", "--engines", str(small_export), "--source", "0", "--headless", "--no-async",
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


def _process_child(long_sequence: Path, small_export: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "smoothdino.cli", "process", str(long_sequence), "--engines", str(small_export),
            "--out", str(out), "--backend", "onnxruntime", "--threads", "1", *extra]
    # as from a terminal: SIGHUP at its default even when the test runs under nohup (which the command respects)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=out.parent,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))


def _png_names(folder: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(folder) if entry.name.endswith(".png") and not entry.name.startswith(".")}
    except FileNotFoundError:
        return set()


def _assert_outputs_whole(folder: Path, reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The invariant after any stop: no temporary file, every PNG whole and equal to the uninterrupted run, and
    metrics.json listing exactly the PNGs on disk."""
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name or ".smoothdino-reserve" in p.name]
    written = _pngs(folder / "depth")
    for name, image in written.items():
        assert image is not None and image.dtype == np.uint16 and image.shape == SMALL, name
        assert np.array_equal(image, reference[name]), name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {f"{row['frame']}.png" for row in metrics["frames"]} == set(written), "metrics.json != PNGs on disk"
    return written


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_right_after_a_png_keeps_every_output_whole_and_resumes_exactly(long_sequence, small_export,
                                                                              uninterrupted, tmp_path, signum, code):
    """A real signal sent within a millisecond or two of a new depth PNG appearing (the window where the PNG was
    once on disk without its metrics row), again and again at different frames; then the same command resumes."""
    out = tmp_path / "out"
    depth = out / "long" / "depth"
    reference = _pngs(uninterrupted / "depth")
    kills = 0
    for new_pngs in (1, 2, 3, 1):  # stop after this many new PNGs, each time resuming where the last run stopped
        before = _png_names(depth)
        child = _process_child(long_sequence, small_export, out, "--no-video")
        deadline = time.monotonic() + 120
        while child.poll() is None and time.monotonic() < deadline and len(_png_names(depth) - before) < new_pngs:
            time.sleep(0.0005)
        if child.poll() is not None:
            break  # finished before the signal (all frames done): nothing left to interrupt
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
        kills += 1
        assert child.returncode == code, stderr[-1500:]
        assert "Traceback" not in stderr and "run the same command to resume" in stderr
        written = _assert_outputs_whole(out / "long", reference)
        assert len(written) >= len(before) + new_pngs
        assert json.loads((out / "long" / "metrics.json").read_text())["run"]["interrupted"] is True
    assert kills >= 3, "the runs finished before the signals: nothing was tested"

    result = CliRunner().invoke(app, ["process", str(long_sequence), "--engines", str(small_export), "--out", str(out),
                                      "--backend", "onnxruntime", "--no-video"])
    assert result.exit_code == 0, result.output
    resumed = _assert_outputs_whole(out / "long", reference)
    assert resumed.keys() == reference.keys()
    metrics = json.loads((out / "long" / "metrics.json").read_text())
    assert len(metrics["frames"]) == 40 and metrics["run"]["interrupted"] is False


def test_signal_while_held_is_raised_after_the_unit_and_a_second_one_cannot_cut_the_flush():
    """The gate itself: a signal inside a held unit waits for it; inside interruptible() it raises at once and
    closes the gate, so one right behind it is held (the flush after it runs to the end)."""
    from smoothdino.core.signals import held_signals, interruptible, termination_as_interrupt

    steps: list[str] = []
    with termination_as_interrupt(), held_signals() as gate:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while held: recorded
        steps.append("unit written")
        assert gate.pending == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            with interruptible():  # a pending signal raises on entry, before any work
                steps.append("never")
        with pytest.raises(KeyboardInterrupt):
            with interruptible():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)  # a second signal, during the "flush": held
        steps.append("flushed")
        assert gate.pending == signal.SIGINT
        gate.pending = None
    assert steps == ["unit written", "flushed"]


def write_video(path: Path, frames: int) -> Path:
    """The synthetic scene as a 30 FPS MP4 at the export's size (a camera stand-in `live` replays in real time)."""
    scene = SyntheticScene(*SMALL, frames=frames)
    canvases = scene.canvases()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (SMALL[1], SMALL[0]))
    for i in range(frames):
        writer.write(cv2.cvtColor(scene.frame(i, canvases)[0], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


# -- a full disk (a real one: a size-limited tmpfs) -----------------------------------------------

@pytest.fixture()
def small_disk(tmp_path):
    """A tmpfs of a few hundred KiB: room for some frames of a 70x98 run, not all. Needs root (mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}): the full-disk tests need root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _grow(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)


def test_full_disk_during_process_is_one_line_exit_2_nothing_partial_and_resumes(long_sequence, small_export,
                                                                                 uninterrupted, small_disk):
    out = small_disk / "out"
    args = ["process", str(long_sequence), "--engines", str(small_export), "--out", str(out), "--backend", "onnxruntime"]
    result = CliRunner().invoke(app, args)  # the video is on: it fills the disk too
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0] and str(out / "long") in errors[0], result.output
    assert "the same command resumes" in errors[0] and "Traceback" not in result.output
    reference = _pngs(uninterrupted / "depth")
    written = _assert_outputs_whole(out / "long", reference)  # metrics.json fitted: the reserve kept room for it
    assert 1 <= len(written) < 40
    assert not (out / "long" / "video.mp4").exists()  # no video of part of the frames under the final name

    _grow(small_disk)  # space freed: the same command finishes the job
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert _assert_outputs_whole(out / "long", reference).keys() == reference.keys()
    from smoothdino.edge.sinks import video_frame_count

    assert video_frame_count(out / "long" / "video.mp4") == 40


def test_full_disk_during_live_is_one_line_without_a_resume_promise(small_export, small_disk, tmp_path):
    video = write_video(tmp_path / "camera.mp4", frames=450)  # 15 s at 30 FPS: the disk fills long before
    out = small_disk / "live"
    result = CliRunner().invoke(app, ["live", "--engines", str(small_export), "--source", str(video), "--headless",
                                      "--backend", "onnxruntime", "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0] and str(out) in errors[0], result.output
    assert "resumes" not in result.output and "Traceback" not in result.output
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or ".smoothdino-reserve" in p.name]
    pngs = {p.stem for p in (out / "depth").glob("*.png")}
    assert pngs and all(cv2.imread(str(out / "depth" / f"{n}.png"), cv2.IMREAD_UNCHANGED) is not None for n in pngs)
    with open(out / "metrics.csv", newline="") as f:  # the log ends on a whole row, one per PNG
        assert {row["frame"] for row in csv.DictReader(f)} == pngs
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["summary"]["frames"] == len(pngs)


def test_live_refuses_a_folder_with_an_earlier_run_unless_overwrite(small_export, tmp_path):
    video = write_video(tmp_path / "camera.mp4", frames=4)
    out = tmp_path / "live"
    args = ["live", "--engines", str(small_export), "--source", str(video), "--headless", "--backend", "onnxruntime",
            "--out", str(out), "--no-async"]
    assert CliRunner().invoke(app, args).exit_code == 0
    first = {p.name: p.read_bytes() for p in (out / "depth").glob("*.png")}
    csv_before = (out / "metrics.csv").read_bytes()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "holds an earlier run" in result.output and "--overwrite" in result.output
    assert {p.name: p.read_bytes() for p in (out / "depth").glob("*.png")} == first  # nothing of it touched
    assert (out / "metrics.csv").read_bytes() == csv_before
    result = CliRunner().invoke(app, args + ["--overwrite"])
    assert result.exit_code == 0, result.output
    with open(out / "metrics.csv", newline="") as f:  # only the new run's frames (a live run may drop some)
        rows = {row["frame"] for row in csv.DictReader(f)}
    assert rows and {p.stem for p in (out / "depth").glob("*.png")} == rows


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
    from smoothdino.edge.engines.manifest import Manifest

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

def test_nonfinite_depth_is_flagged_never_written_and_the_run_goes_on(small_export, long_sequence, tmp_path,
                                                                      monkeypatch):
    """The network's own depth (no fusion: a fused frame's statistics would also change with the pixels it lost)."""
    from smoothdino.edge.sources import FolderSource

    uninterrupted = tmp_path / "reference"
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as clean:
        run_stream(clean, FolderSource(long_sequence, limit=8), StreamOutputs(folder=uninterrupted))
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
    # the overflow was in the depth alone: frame 4's features are finite, so frame 5 fuses with them as in the
    # uninterrupted run (features that overflow restart the temporal state: tests/test_keyframes.py)
    assert np.array_equal(cv2.imread(str(out / "depth" / "5.png"), cv2.IMREAD_UNCHANGED),
                          cv2.imread(str(uninterrupted / "depth" / "5.png"), cv2.IMREAD_UNCHANGED))


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


# -- a power cut: every output on disk before it takes its name ------------------------------------

WRITE_EVERY_OUTPUT = """
import sys
from pathlib import Path

import numpy as np
from smoothdino.edge.sinks import DepthPngSink, MetricsSink, VideoSink
from smoothdino.edge.sinks.bag import BagSink
from smoothdino.edge.sources import Frame
from smoothdino.edge.sources.intrinsics import IntrinsicsChoice

out = Path(sys.argv[1])
depth = np.full((16, 16), 2.0, np.float32)
DepthPngSink(out / "depth").write("0001", depth)
metrics = MetricsSink(out, {})
metrics.add("0001", depth, None)
metrics.write()
video = VideoSink(out / "video.mp4")
for _ in range(2):
    video.write(np.zeros((16, 32, 3), np.uint8))
video.close()
bag = BagSink(out / "depth_bag", "/cam", IntrinsicsChoice())
bag.write(Frame(np.zeros((16, 16, 3), np.uint8), 0, "0001", 0.0), depth, None, None)
bag.close()
"""


def test_every_output_is_on_disk_before_it_takes_its_name(tmp_path):
    """After a power cut (a Jetson's usual ending) a file that has its final name must hold its bytes: the PNG,
    metrics.json/csv, the MP4 and the bag are each fsync'd under their temporary name (a bag: every file and
    folder in it), renamed, then the folder holding the new name is fsync'd. Seen in the real system calls
    (strace) of a process that writes each."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: the system calls cannot be seen")
    pytest.importorskip("rosbags", reason="the bag writer (the robotics extra)")
    out, log = tmp_path / "out", tmp_path / "strace.log"
    traced = subprocess.run(["strace", "-f", "-qq", "-y", "-s", "4096", "-o", str(log),
                             "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
                             sys.executable, "-c", WRITE_EVERY_OUTPUT, str(out)], capture_output=True, text=True)
    if traced.returncode != 0 and "ptrace" in traced.stderr:
        pytest.skip(f"strace cannot trace here: {traced.stderr.strip().splitlines()[-1]}")
    assert traced.returncode == 0, traced.stderr[-2000:]
    synced: list[tuple[int, str]] = []  # (line, path) of each fsync
    renamed: dict[str, tuple[int, str]] = {}  # final path -> (line, temporary path)
    for number, line in enumerate(log.read_text().splitlines()):
        if re.search(r"\b(fsync|fdatasync)\(\d+<", line) and line.rstrip().endswith("= 0"):
            synced.append((number, line.split("<", 1)[1].rsplit(">)", 1)[0]))
        elif re.search(r"\brename(at2?)?\(", line) and line.rstrip().endswith("= 0"):
            source, target = re.findall(r'"([^"]+)"', line)[:2]
            renamed[target] = (number, source)
    for final in (out / "depth" / "0001.png", out / "metrics.json", out / "metrics.csv", out / "video.mp4",
                  out / "depth_bag"):
        assert str(final) in renamed, f"{final.name}: not renamed into place"
        at, temporary = renamed[str(final)]
        before = {path for number, path in synced if number < at}
        after = {path for number, path in synced if number > at}
        assert temporary in before, f"{final.name}: renamed before its bytes were synced"
        assert str(final.parent) in after, f"{final.name}: its folder was not synced after the rename"
    bag_files = [p for p in (out / "depth_bag").rglob("*") if p.is_file()]
    at, temporary = renamed[str(out / "depth_bag")]
    inside = {path for number, path in synced if number < at and path.startswith(temporary + "/")}
    assert len(inside) == len(bag_files), (inside, bag_files)


def test_write_cost_benchmark_measures_both_modes_and_leaves_nothing(tmp_path, capsys):
    """benchmarks/write_cost.py (the README's fsync figure), at a tiny size: both modes timed, the table printed."""
    from smoothdino.benchmarks.write_cost import MODES, main

    from smoothdino.benchmarks.record import read_record, record_markdown

    result = main(["--size", "70x98", "--frames", "8", "--rounds", "2", "--folder", str(tmp_path / "disk"),
                   "--out", str(tmp_path / "out"), "--record", str(tmp_path / "results")])
    assert set(result["modes"]) == set(MODES) and all(m["frames"] == 6 for m in result["modes"].values())
    assert json.loads((tmp_path / "out" / "write_cost.json").read_text())["fsync_p50_ms"] == result["fsync_p50_ms"]
    assert "| fsync (as shipped) |" in capsys.readouterr().out
    assert list((tmp_path / "disk").iterdir()) == []  # the PNGs went with their folder
    # the docs' copy of the figures (benchmarks/record.py): the same numbers, and the command that made them
    record = read_record(tmp_path / "results" / "write_cost.json")
    (table,) = record.tables
    assert [row[2] for row in table.rows] == [round(result["modes"][m]["p50_ms"], 2) for m in MODES]
    assert record.command.startswith("python -m smoothdino.benchmarks.write_cost --size 70x98 --frames 8")
    assert record.command.endswith(" --record") and str(tmp_path) not in record.command.split("--folder")[0]
    assert record.random_weights is None and "no network ran" in record_markdown(record)
    shown = record_markdown(record)
    assert f"| fsync (as shipped) | 6 | {table.rows[0][2]:.3g} |" in shown and record.command in shown


# -- a live row taken back ---------------------------------------------------------------------------

def test_a_row_taken_back_leaves_no_trace_in_the_summary_or_the_next_row(tmp_path):
    """A frame whose outputs failed takes its metrics row back: live (running sums, a latency window) and recorded
    (rows kept) must then say exactly what they would had the frame never come, including the next frame's
    temporal error (against the frame before it, not the one taken back)."""
    from smoothdino.edge.sinks import MetricsSink, json_dumps

    gt = np.full((8, 8), 2.0, np.float32)
    a, b, c = (np.full((8, 8), metres, np.float32) for metres in (2.1, 5.0, 2.2))
    for keep_rows in (False, True):
        taken = MetricsSink(tmp_path / f"taken-{keep_rows}", {}, keep_rows=keep_rows)
        never = MetricsSink(tmp_path / f"never-{keep_rows}", {}, keep_rows=keep_rows)
        taken.add("a", a, gt, {"total": 0.010})
        taken.add("b", b, gt, {"total": 0.900})
        taken.undo_last()
        last = taken.add("c", c, gt, {"total": 0.020})
        never.add("a", a, gt, {"total": 0.010})
        assert json_dumps(last) == json_dumps(never.add("c", c, gt, {"total": 0.020})), keep_rows
        assert json_dumps(taken.summary()) == json_dumps(never.summary()), keep_rows
        taken.write()
        never.write()
        for name in ("metrics.csv", "metrics.json"):
            assert (taken.folder / name).read_text() == (never.folder / name).read_text(), (keep_rows, name)


# -- live: a camera that does not open ---------------------------------------------------------------

@pytest.mark.parametrize("asynchronous", [True, False])
def test_live_whose_camera_does_not_open_closes_the_network(small_export, tmp_path, asynchronous):
    """The network opens first (a camera opened first would drop frames while the engines load); when the camera
    then fails, the command ends in one line with the network closed: no engines held, no network thread."""
    from smoothdino.core.errors import UserError
    from smoothdino.edge.commands.live import LiveOptions, live

    opened: list[DepthPipeline] = []

    def open_pipeline() -> DepthPipeline:
        opened.append(DepthPipeline.from_folder(small_export, backend="onnxruntime"))
        return opened[-1]

    with pytest.raises(UserError, match="no such file"):
        live(open_pipeline, LiveOptions(source=str(tmp_path / "camera.mp4"), headless=True, asynchronous=asynchronous))
    assert len(opened) == 1 and opened[0].engines == {}  # DepthPipeline.close() lets its engines go
    assert not [t for t in threading.enumerate() if t.name == "network"]
