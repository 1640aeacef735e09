"""live --async: every camera frame out at once, the network on the newest frame in its own thread."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from smoothdino.edge.asynchronous import AsyncPipeline
from smoothdino.edge.loop import StreamOutputs, run_stream
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.edge.sources import open_source

from .test_faults import write_video


class SlowPipeline(DepthPipeline):
    """The real pipeline with a network that takes `delay` seconds longer: a small, slow device."""

    delay = 0.25

    def _encode(self, rgb):
        time.sleep(self.delay)
        return super()._encode(rgb)


@pytest.mark.alone
def test_async_outputs_every_frame_while_the_network_is_busy(small_export, tmp_path):
    video = write_video(tmp_path / "camera.mp4", frames=75)  # 2.5 s at 30 FPS
    owner: list[threading.Thread] = []

    def open_slow():
        owner.append(threading.current_thread())
        return SlowPipeline.from_folder(small_export, backend="onnxruntime", threads=1)

    with AsyncPipeline(open_slow) as pipeline:
        source = open_source(str(video), live=True)  # paced like a camera: newest frame only, drops counted
        report = run_stream(pipeline, source, StreamOutputs(folder=tmp_path / "out"))
    assert owner and owner[0] is not threading.main_thread()  # the worker opened (owns) the engines

    read = source.stats.read
    # the loop kept up with the camera: waiting for the network (>= 0.25 s a pass) would drop ~7 frames in 8; the
    # few a 2-core machine drops when the loop, the worker and an fsync spike meet are counted, and stay few
    assert read >= 60 and source.stats.dropped <= 0.1 * read
    assert report.computed + report.waiting == read - source.stats.dropped  # every frame out, or counted
    assert 2 <= report.keyframes <= read / 6  # the network ran far less often than frames came
    with open(tmp_path / "out" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # no made-up depth before the first keyframe, and its depth used once ready: the frames waiting are those the
    # camera gave during its pass (0.25 s + the stages' time, as its rows record it), with a margin for the scheduler
    first_pass_s = SlowPipeline.delay + sum(float(rows[0][f"{s}_ms"]) for s in ("encoder", "adapter", "decoder")) / 1000
    assert 1 <= report.waiting <= 1.5 * 30 * first_pass_s + 3, (report.waiting, first_pass_s)
    assert len(rows) == report.computed == len(list((tmp_path / "out" / "depth").glob("*.png")))
    total_ms = np.array([float(r["total_ms"]) for r in rows])
    assert np.median(total_ms) < 0.2 * SlowPipeline.delay * 1000  # the output path never waits for the network
    ages = [int(r["age_frames"]) for r in rows]
    drops = [i for i in range(1, len(ages)) if ages[i] < ages[i - 1]]
    assert len(drops) >= 1  # a newer keyframe arrived: the age fell back
    for i in range(1, len(ages)):  # between keyframe arrivals the age grows by one frame a frame
        assert ages[i] == ages[i - 1] + 1 or i in drops
    assert min(ages) >= 1  # measured from the keyframe's capture: an async frame is never its own keyframe


def test_async_ctrl_c_ends_within_5_s_with_every_file_whole(small_export, tmp_path):
    video = write_video(tmp_path / "camera.mp4", frames=600)  # 20 s: far longer than the test
    out = tmp_path / "live"
    child = subprocess.Popen([sys.executable, "-m", "smoothdino.cli", "live", "--engines", str(small_export),
                              "--source", str(video), "--headless", "--backend", "onnxruntime", "--out", str(out),
                              "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None and len(list((out / "depth").glob("*.png"))) < 10:
        time.sleep(0.05)
    assert child.poll() is None, child.communicate()[1][-1500:]
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=30)
    # Ctrl-C is how a live run ends: a clean stop (exit 0), said in the summary line
    assert time.monotonic() - sent < 5.0 and child.returncode == 0, stderr[-1500:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    pngs = {p.stem for p in (out / "depth").glob("*.png")}
    assert all(cv2.imread(str(out / "depth" / f"{n}.png"), cv2.IMREAD_UNCHANGED) is not None for n in pngs)
    with open(out / "metrics.csv", newline="") as f:
        assert {r["frame"] for r in csv.DictReader(f)} == pngs


def test_async_worker_failure_reaches_the_caller_in_one_line(tmp_path):
    from smoothdino.core.errors import UserError

    with pytest.raises(UserError, match="no manifest"):
        AsyncPipeline(lambda: DepthPipeline.from_folder(tmp_path / "nothing"))


# -- issue 28: the worker's lifecycle and scene cuts ----------------------------------------------------------------

class FailingPipeline(DepthPipeline):
    """The real pipeline whose second network pass fails, as a CUDA error would."""

    def _decode(self, levels):
        self.passes_started = getattr(self, "passes_started", 0) + 1
        if self.passes_started == 2:
            raise RuntimeError("simulated CUDA error: an illegal memory access was encountered")
        return super()._decode(levels)


def _wait_for(condition, seconds=30.0):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    assert condition()


def test_a_worker_error_after_the_last_step_is_raised_by_close(small_export, textured_rgb):
    pipeline = AsyncPipeline(lambda: FailingPipeline.from_folder(small_export, backend="onnxruntime"))
    pipeline.step(textured_rgb)
    _wait_for(lambda: pipeline.passes == 1)
    pipeline.step(textured_rgb)  # the last frame: its pass fails after this returns
    _wait_for(lambda: not pipeline._thread.is_alive())
    with pytest.raises(RuntimeError, match="simulated CUDA error"):
        pipeline.close()
    pipeline.close()  # once raised, closing again is quiet
    with pytest.raises(RuntimeError, match="closed"):
        pipeline.step(textured_rgb)  # never stale depth from a closed pipeline


def test_a_startup_time_out_is_one_line_and_stops_the_thread(small_export):
    from smoothdino.core.errors import UserError

    opened: list = []

    def slow_open():
        time.sleep(1.0)
        opened.append(DepthPipeline.from_folder(small_export, backend="onnxruntime"))
        return opened[-1]

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(UserError, match="did not open within 0.2 s") as caught:
        AsyncPipeline(slow_open, startup_timeout=0.2)
    assert "\n" not in str(caught.value)
    _wait_for(lambda: opened and not opened[0].engines)  # it opened late, then closed its engines itself
    _wait_for(lambda: [t for t in threading.enumerate() if t.name == "network"] == [] or "network" in before)


def test_async_scene_cut_gives_no_depth_until_a_keyframe_of_the_new_scene(small_export):
    from smoothdino.edge.sources.synthetic import SyntheticScene

    scene = SyntheticScene(70, 98, frames=40, velocity=(0.5, 0.0))
    canvases = scene.canvases()
    first = [scene.frame(i, canvases)[0] for i in range(20)]
    other = cv2.GaussianBlur(np.random.default_rng(9).integers(0, 256, (70, 98, 3), dtype=np.uint8), (3, 3), 0)
    with AsyncPipeline(lambda: DepthPipeline.from_folder(small_export, backend="onnxruntime",
                                                          min_confidence=0.2)) as pipeline:
        result = pipeline.step(first[0])
        _wait_for(lambda: pipeline.passes >= 1)
        carried = pipeline.step(first[1])
        assert carried is not None and carried.carry == "shift" and carried.depth.any()
        cut = pipeline.step(other)  # frame 2
        assert cut.scene_cut and cut.carry == "none" and not cut.depth.any()  # never the old scene's depth
        after = [pipeline.step(np.ascontiguousarray(np.roll(other, 1 + i % 2, axis=1))) for i in range(3)]
        for index, r in enumerate(after, start=3):
            assert not r.scene_cut  # flagged once, on the cut
            if index - r.age_frames < 2:  # still the old scene's keyframe: no depth at all
                assert r.carry == "none" and not r.depth.any()
        _wait_for(lambda: pipeline._latest is not None and pipeline._latest.index >= 2)
        fresh = pipeline.step(np.ascontiguousarray(np.roll(other, 1, axis=1)))
    assert result is None
    assert fresh.carry == "shift" and fresh.depth.any() and not fresh.scene_cut


def test_async_carries_by_pose_from_the_frame_the_network_took(small_export):
    """The caller follows corners from the frame in flight, so the depth that arrives is carried by the pose."""
    from smoothdino.edge.sources.room import SyntheticRoom

    room = SyntheticRoom(70, 98, frames=14, step=0.04, turn=0.015)
    frames = [rgb for rgb, _ in room]
    with AsyncPipeline(lambda: DepthPipeline.from_folder(small_export, backend="onnxruntime"), carry="pose",
                       intrinsics=room.intrinsics) as pipeline:
        results = [pipeline.step(frames[0])]
        _wait_for(lambda: pipeline.passes >= 1)
        for rgb in frames[1:]:
            results.append(pipeline.step(rgb))
    carried = [r for r in results[1:] if r is not None]
    assert carried and {r.carry for r in carried} <= {"pose", "shift"}
    posed = [r for r in carried if r.carry == "pose"]
    assert len(posed) >= len(carried) // 2 and all(r.inliers >= 12 for r in posed)
    assert all(r.fallback for r in carried if r.carry == "shift")  # a fallback says why
