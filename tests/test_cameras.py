"""Several cameras, one network (edge.shared_network, edge.cameras, `live --source A --source B`): each camera keeps
its own temporal state (checked against single-camera runs of the same frames), the network serves them fairly, and
a camera that dies ends alone while the others go on, each with its own outputs."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
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
from smoothdino.core.errors import UserError
from smoothdino.edge.cameras import camera_path, camera_specs, default_name
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.edge.shared_network import SharedNetwork
from smoothdino.edge.sources.synthetic import SyntheticScene

SMALL = (70, 98)


def scene_frames(n: int, seed: int, velocity=(2.6, -1.3), size=SMALL) -> list[np.ndarray]:
    return [rgb for rgb, _ in SyntheticScene(*size, frames=n, seed=seed, velocity=velocity)]


def test_camera_names_come_from_the_sources_and_bad_ones_are_refused_in_one_line():
    assert [default_name(s, i) for i, s in enumerate(["0", "/dev/video2", "csi://1", "synthetic:70x98", "a/front-cam.mp4",
                                                        "rtsp://x/y", "v4l2src ! appsink", "7.mp4"])] == \
        ["video0", "video2", "csi1", "synthetic3", "front_cam", "camera5", "camera6", "cam_7"]
    specs = camera_specs(["a/left.mp4", "b/left.mp4", "0"], intrinsics=["500,500,49,35"])
    assert [s.name for s in specs] == ["left", "left_2", "video0"]
    assert {s.intrinsics for s in specs} == {"500,500,49,35"}  # once: every camera alike
    assert [s.intrinsics for s in camera_specs(["0", "1"], intrinsics=["1,1,1,1", "2,2,2,2"])] == ["1,1,1,1", "2,2,2,2"]
    assert camera_path(Path("runs/live.mp4"), "front") == Path("runs/live-front.mp4")
    for names, intrinsics, words in ((["a"], None, "one --name per --source"), (["a", "1b"], None, "ROS name token"),
                                     (["a", "a"], None, "given twice"), (None, ["1,1,1,1"] * 3, "once per --source")):
        with pytest.raises(UserError, match=words) as refused:
            camera_specs(["0", "1"], names, intrinsics)
        assert "\n" not in str(refused.value)


def _step_alone(export: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    with DepthPipeline.from_folder(export, backend="onnxruntime", threads=1) as pipeline:
        return [pipeline.step(rgb).depth for rgb in frames]


def test_cameras_on_one_network_never_share_their_temporal_state(small_export_fp32):
    """Two sequences interleaved through one network (two threads, one lane each) give exactly the depth each gives
    alone; the same frames without their own previous frame give other depth (the state matters, so a crossing would
    show)."""
    sequences = {"a": scene_frames(5, seed=1), "b": scene_frames(5, seed=2, velocity=(-3.0, 1.0))}
    got: dict[str, list[np.ndarray]] = {}
    with SharedNetwork(lambda: DepthPipeline.from_folder(small_export_fp32, backend="onnxruntime", threads=1)) as net:
        lanes = {name: net.lane(name) for name in sequences}

        def run(name: str) -> None:
            got[name] = [lanes[name].step(rgb).depth for rgb in sequences[name]]

        threads = [threading.Thread(target=run, args=(name,)) for name in sequences]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert net.passes == 10 and {n: lane.stats.passes for n, lane in lanes.items()} == {"a": 5, "b": 5}
    for name, frames in sequences.items():
        alone = _step_alone(small_export_fp32, frames)
        for k, (mine, reference) in enumerate(zip(got[name], alone)):
            np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6, err_msg=f"{name} frame {k}")
    with DepthPipeline.from_folder(small_export_fp32, backend="onnxruntime", threads=1) as pipeline:
        pipeline.step(sequences["a"][0])
        crossed = pipeline.step(sequences["b"][1]).depth  # b's frame after a's: what a crossing would give
    assert np.abs(crossed - got["b"][1]).max() > 1e-3


def test_the_network_serves_the_camera_whose_depth_is_oldest(small_export_fp32):
    """Three cameras asking as fast as they can: each waits at most one pass per camera (the others', and the one
    already running when it asked), all get the same share, and a camera that stops asking holds nobody."""
    with SharedNetwork(lambda: DepthPipeline.from_folder(small_export_fp32, backend="onnxruntime", threads=1)) as net:
        lanes = [net.lane(f"cam{i}") for i in range(3)]
        frames = scene_frames(8, seed=3)
        counts = {"cam0": 8, "cam1": 8, "cam2": 2}  # cam2 stalls after 2 frames

        def run(lane) -> None:
            for rgb in frames[: counts[lane.name]]:
                lane.step(rgb)

        threads = [threading.Thread(target=run, args=(lane,)) for lane in lanes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        summary = net.summary()
    assert [summary["lanes"][f"cam{i}"]["passes"] for i in range(3)] == [8, 8, 2]
    assert all(lane["max_wait_passes"] <= 3 for lane in summary["lanes"].values()), summary
    assert summary["passes"] == 18 and summary["cameras"] == 3


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (SMALL[1], SMALL[0]))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory) -> Path:
    """4 s at 10 FPS: one scene, then at 2 s another (a scene cut)."""
    return write_video(tmp_path_factory.mktemp("cameras") / "cut.mp4",
                       scene_frames(20, seed=4) + scene_frames(20, seed=9, velocity=(-2.0, 2.0)))


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((folder / "depth").glob("*.png"))}


def test_live_with_two_sources_gives_each_camera_what_it_gets_alone(small_export_fp32, tmp_path):
    """--no-async, every frame a keyframe: each camera's depth PNGs are those of a one-camera `live` of the same source
    (frames of two sizes, so one is resized), each camera has its own folder and metrics, and network.json counts the
    shared passes."""
    common = ["--engines", str(small_export_fp32), "--headless", "--no-async", "--backend", "onnxruntime",
              "--threads", "1", "--fusion", "off"]
    sources = ["synthetic:70x98:6", "synthetic:56x84:6"]
    both = CliRunner().invoke(app, ["live", "--source", sources[0], "--source", sources[1], "--name", "front",
                                    "--name", "back", "--out", str(tmp_path / "both"), *common])
    assert both.exit_code == 0, both.output
    for name, source in zip(["front", "back"], sources):
        alone = CliRunner().invoke(app, ["live", "--source", source, "--out", str(tmp_path / name), *common])
        assert alone.exit_code == 0, alone.output
        mine, reference = _pngs(tmp_path / "both" / name), _pngs(tmp_path / name)
        assert len(mine) == 6 and mine.keys() == reference.keys()
        for frame in mine:
            np.testing.assert_array_equal(mine[frame], reference[frame], err_msg=f"{name} {frame}")
        run = json.loads((tmp_path / "both" / name / "metrics.json").read_text())["run"]
        assert run["camera"] == name and run["cameras"] == 2 and run["network"] == "shared"
    network = json.loads((tmp_path / "both" / "network.json").read_text())
    assert network["passes"] == 12 and {k: v["passes"] for k, v in network["lanes"].items()} == {"front": 6, "back": 6}
    assert "live front: 6 frames" in both.output and "shared by 2 cameras" in both.output


def test_several_cameras_refuse_bad_names_and_counts_before_anything_opens(small_export_fp32, tmp_path):
    for extra, words in ((["--name", "a"], "one --name per --source"), (["--name", "a", "--name", "a"], "given twice"),
                         (["--intrinsics", "1,1,1,1"] * 3, "once per --source")):
        result = CliRunner().invoke(app, ["live", "--engines", str(small_export_fp32), "--source", "synthetic:70x98:2",
                                          "--source", "synthetic:70x98:2", "--headless", "--out", str(tmp_path / "x"),
                                          *extra])
        assert result.exit_code == 2 and words in result.output, result.output
        assert not (tmp_path / "x").exists()


FIFO_WRITER = """
import os, sys, time
import cv2, numpy as np
path, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY)
os.write(fd, f"YUV4MPEG2 W{w} H{h} F15:1 Ip A1:1 C420jpeg\\n".encode())
rng = np.random.default_rng(5)
base = cv2.resize(rng.integers(0, 256, (8, 12, 3)).astype(np.uint8), (w + 80, h), interpolation=cv2.INTER_CUBIC)
k = 0
while True:
    bgr = np.ascontiguousarray(base[:, k % 80: k % 80 + w])
    os.write(fd, b"FRAME\\n" + cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).tobytes())
    k += 1
    time.sleep(1 / 15)
"""


class _Output:
    """A child's output drained in a thread (a full pipe would block it), with the browser view's URL once printed."""

    def __init__(self, child: subprocess.Popen):
        self.lines: list[str] = []
        self.url: str | None = None
        self.url_seen = threading.Event()
        self.thread = threading.Thread(target=self._drain, args=(child,), daemon=True)
        self.thread.start()

    def _drain(self, child) -> None:
        for line in child.stdout:
            self.lines.append(line)
            found = re.search(r"browser view -> (\S+)", line)
            if found:
                self.url = found.group(1)
                self.url_seen.set()
        self.url_seen.set()


def _page_messages(url: str, seconds: float) -> list[tuple[dict, bytes]]:
    """What a page receives in `seconds`, asking every camera's depth and acknowledging each message."""
    from websockets.sync.client import connect

    port = int(re.search(r":(\d+)/", url).group(1))
    got = []
    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=1) as page:
        page.send(json.dumps({"depth": True}))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                message = page.recv(timeout=max(0.01, end - time.monotonic()))
            except TimeoutError:
                break
            length = struct.unpack("!I", message[:4])[0]
            header = json.loads(message[4:4 + length])
            start = 4 + length + header["jpeg_bytes"]
            got.append((header, message[start:start + header["depth_bytes"]]))
            page.send(json.dumps({"ack": header["seq"]}))
    return got


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_three_cameras_one_cut_one_killed_each_keeps_its_own_outputs(small_export_fp32, cut_video, tmp_path):
    """`live` (async) with three sources: a video with a scene cut, another video, and a camera on a named pipe
    whose writer is killed mid-run. The browser view shows a tile per camera with that camera's own depth (the PNG
    its loop wrote for that frame). The killed camera's loop waits for it alone: the others run to their end, then
    Ctrl-C ends the run and every camera's outputs are whole, each in its own folder."""
    side = write_video(tmp_path / "side.mp4", scene_frames(30, seed=6, velocity=(1.0, 1.5)))
    fifo = tmp_path / "wrist.y4m"
    os.mkfifo(fifo)
    writer = subprocess.Popen([sys.executable, "-c", FIFO_WRITER, str(fifo), str(SMALL[0]), str(SMALL[1])])
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "smoothdino.cli", "live", "--engines", str(small_export_fp32),
                              "--source", str(cut_video), "--source", str(side), "--source", str(fifo),
                              "--name", "front", "--name", "side", "--name", "wrist", "--headless", "--out", str(out),
                              "--serve", "0", "--backend", "onnxruntime", "--threads", "1", "--fusion", "off"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    output = _Output(child)
    try:
        deadline = time.monotonic() + 120
        assert output.url_seen.wait(60) and output.url, "".join(output.lines)
        wrist = out / "wrist" / "metrics.csv"
        while time.monotonic() < deadline and child.poll() is None and \
                (not wrist.exists() or len(wrist.read_text().splitlines()) < 4):
            time.sleep(0.1)
        messages = _page_messages(output.url, 2.0)  # every camera live
        writer.kill()  # the wrist camera dies mid-run
        writer.wait()
        killed_at = time.monotonic()
        ended = [out / name / "metrics.json" for name in ("front", "side")]  # written when a camera's loop ends
        while time.monotonic() < deadline and child.poll() is None and not all(p.exists() for p in ended):
            time.sleep(0.1)  # both videos run on to their end (4 s and 3 s, frames dropped under load)
        assert all(p.exists() for p in ended), "".join(output.lines)[-3000:]
        time.sleep(1.0)
        assert child.poll() is None, "the run ended while the killed camera's loop should still wait for it"
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)
        output.thread.join(10)
    finally:
        writer.kill()
        if child.poll() is None:
            child.kill()
    printed = "".join(output.lines)
    assert child.returncode == 0 and "Traceback" not in printed, printed[-3000:]
    assert time.monotonic() - killed_at > 1.0
    for name in ("front", "side", "wrist"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["run"]["camera"] == name
        assert len(list((out / name / "depth").glob("*.png"))) >= 3
    side_rows = (out / "side" / "metrics.csv").read_text().splitlines()[1:]
    assert len(side_rows) >= 20  # the other video ran to its end while the wrist camera was dead (3 s, a few waiting)
    csv_front = (out / "front" / "metrics.csv").read_text().splitlines()
    header = csv_front[0].split(",")
    cuts = [line.split(",")[header.index("scene_cut")] for line in csv_front[1:]]
    assert "True" in cuts or "1" in cuts or "true" in cuts, "the video's scene cut is not in its metrics"
    network = json.loads((out / "network.json").read_text())
    assert set(network["lanes"]) == {"front", "side", "wrist"} and network["lanes"]["wrist"]["passes"] >= 1
    assert all(lane["max_wait_passes"] <= 3 + 1 for lane in network["lanes"].values()), network  # + a scene cut's turn
    # the browser view: a tile per camera, each message that camera's own depth (its PNG for that frame)
    assert {h["camera"] for h, _ in messages} == {"front", "side", "wrist"}
    assert all(h["cameras"] == ["front", "side", "wrist"] for h, _ in messages)
    compared = 0
    for h, png in messages:
        if png:
            shown = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
            written = cv2.imread(str(out / h["camera"] / "depth" / f"{h['frame']}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(shown, written, err_msg=f"{h['camera']} {h['frame']}")
            compared += 1
    assert compared >= 3


def test_open_cameras_gives_each_camera_the_depth_it_gets_alone(small_export_fp32):
    """The Python API: two cameras on one export, stepped from two threads, each frame's depth equal to a
    one-camera session's on the same frames (frames of another size resized there and back alike); async sessions
    on one network each get their own depth."""
    import smoothdino

    sequences = {"front": scene_frames(4, seed=1), "wrist": scene_frames(4, seed=2, velocity=(-3.0, 1.0), size=(56, 84))}
    got: dict[str, list[np.ndarray]] = {}
    with pytest.warns(UserWarning), smoothdino.open_cameras(small_export_fp32, list(sequences), colour="rgb",
                                                            backend="onnxruntime", threads=1, fusion="off") as cams:
        assert set(cams) == {"front", "wrist"} and len(cams) == 2

        def run(name: str) -> None:
            got[name] = [cams[name].step(rgb).depth for rgb in sequences[name]]

        threads = [threading.Thread(target=run, args=(name,)) for name in sequences]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert {k: v["passes"] for k, v in cams.summary()["lanes"].items()} == {"front": 4, "wrist": 4}
    assert cams["front"].closed and cams.network.pipeline is not None
    for name, frames in sequences.items():
        with pytest.warns(UserWarning), smoothdino.open(small_export_fp32, colour="rgb", backend="onnxruntime",
                                                        threads=1, fusion="off") as alone:
            for k, rgb in enumerate(frames):
                np.testing.assert_allclose(got[name][k], alone.step(rgb).depth, rtol=0, atol=1e-6, err_msg=f"{name} {k}")
    with pytest.raises(ValueError, match="name of its own"):
        smoothdino.open_cameras(small_export_fp32, ["a", "a"], colour="rgb")
    with pytest.raises(ValueError, match="not one of"):
        smoothdino.open_cameras(small_export_fp32, ["a"], colour="rgb", intrinsics={"b": (1, 1, 1, 1)})
    with pytest.warns(UserWarning), smoothdino.open_cameras(small_export_fp32, ["a", "b"], colour="rgb",
                                                            backend="onnxruntime", asynchronous=True) as cams:
        frames = {"a": scene_frames(1, seed=1)[0], "b": scene_frames(1, seed=2)[0]}
        deadline, depth = time.monotonic() + 60, {}
        while len(depth) < 2 and time.monotonic() < deadline:
            for name in frames:
                out = cams[name].step(frames[name])
                if out is not None:
                    depth[name] = out.depth
            time.sleep(0.02)
    assert set(depth) == {"a", "b"} and not np.array_equal(depth["a"], depth["b"])


def test_a_cut_camera_goes_first_then_the_oldest_depth(small_export_fp32):
    """The scheduling rule on a queue of three waiting cameras: the one whose view was cut first, then the one whose
    last pass began longest ago (a camera never served before any served one), then by when they asked."""
    from smoothdino.edge.shared_network import _Request

    rgb = scene_frames(1, seed=1)[0]
    with SharedNetwork(lambda: DepthPipeline.from_folder(small_export_fp32, backend="onnxruntime", threads=1)) as net:
        a, b, c, d = (net.lane(n) for n in "abcd")
        a.last_served, b.last_served, c.last_served = 10.0, 5.0, 7.0  # d never served
        with net._lock:  # the worker waits for requests: nothing is queued until this block ends
            net._queue = [_Request(lane, "step", rgb, asked=float(i)) for i, lane in enumerate((a, b, c, d))]
            order = [net._take()[0].lane.name for _ in range(4)]
            assert order == ["d", "b", "c", "a"]
            net._queue = [_Request(lane, "step", rgb, asked=float(i)) for i, lane in enumerate((a, b, c))]
            a.hurry()
            assert [net._take()[0].lane.name for _ in range(3)] == ["a", "b", "c"]
            a.hurried = False  # (served: _serve clears it)
            net.batch = 2
            net._queue = [_Request(lane, "step", rgb, asked=float(i)) for i, lane in enumerate((a, b, c))]
            assert [r.lane.name for r in net._take()] == ["b", "c"]  # a batch: the two oldest
            net._queue.clear()
