"""The videos and pictures a user shares: H.264 MP4s that browsers play (checked with the bundled ffmpeg and by
reading the MP4's boxes, never with OpenCV), the mp4v fallback and its notice, files that never appear half
written, the colour bar with its scale in metres, --depth-range, and an overlay that leaves the picture readable."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from smoothdino.cli import app
from smoothdino.edge.sinks.video import ENCODER_VARIABLE, VideoSink
from smoothdino.edge.sinks.view import (
    DISPLAY_RANGE,
    NO_DEPTH_BGR,
    colorize,
    depth_legend,
    legend_layout,
    side_by_side,
    text_scale,
)
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence
from typer.testing import CliRunner

from .conftest import SMALL

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (a run-time dependency) gives H.264")
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
LEGEND_ROWS = legend_layout(SMALL[1], SMALL[0]).height


# -- what a player finds in the file -------------------------------------------------------------

def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order, read here from the bytes (size, type; 64-bit sizes too)."""
    data, kinds, at = path.read_bytes(), [], 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        size = struct.unpack(">Q", data[at + 8:at + 16])[0] if size == 1 else size or len(data) - at
        assert size >= 8 and at + size <= len(data), f"box {kind!r} at {at} runs past the end"
        kinds.append(kind.decode())
        at += size
    return kinds


def probe(path: Path) -> dict:
    """codec, pixel format and size of the video stream as `ffmpeg -i` reports them, and the frames it decodes."""
    info = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False).stderr
    stream = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\w+)(?:\([^)]*\))?, (\d+)x(\d+)", info)
    assert stream, info
    decoded = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                             capture_output=True, text=True, check=False)
    assert decoded.returncode == 0, decoded.stderr[-1500:]
    frames = int(re.findall(r"frame=\s*(\d+)", decoded.stderr)[-1])
    return {"codec": stream[1], "pix_fmt": stream[2], "size": (int(stream[3]), int(stream[4])), "frames": frames}


def first_frame(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The first frame as ffmpeg decodes it (BGR)."""
    raw = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(size[1], size[0], 3)


@pytest.fixture(scope="module")
def short_sequence(tmp_path_factory) -> Path:
    return write_sequence(tmp_path_factory.mktemp("seq") / "short", SyntheticScene(*SMALL, frames=5))


def _process(sequence: Path, engines: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["process", str(sequence), "--engines", str(engines), "--out", str(out),
                                    "--backend", "onnxruntime", *extra])


def test_process_writes_h264_that_browsers_play(short_sequence, small_export, tmp_path, monkeypatch):
    monkeypatch.delenv(ENCODER_VARIABLE, raising=False)
    result = _process(short_sequence, small_export, tmp_path / "out")
    assert result.exit_code == 0, result.output
    video = tmp_path / "out" / "short" / "video.mp4"
    assert probe(video) == {"codec": "h264", "pix_fmt": "yuv420p", "frames": 5,
                            "size": (2 * SMALL[1], SMALL[0] + LEGEND_ROWS)}
    boxes = top_level_boxes(video)
    assert boxes[0] == "ftyp" and boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart: plays while loading
    assert "browsers" not in result.output  # no fallback notice
    assert not [p for p in video.parent.iterdir() if ".tmp" in p.name]


def test_forced_fallback_is_mp4v_with_a_notice(short_sequence, small_export, tmp_path, monkeypatch):
    monkeypatch.setenv(ENCODER_VARIABLE, "mp4v")
    result = _process(short_sequence, small_export, tmp_path / "out")
    assert result.exit_code == 0, result.output
    video = tmp_path / "out" / "short" / "video.mp4"
    found = probe(video)
    assert found["codec"] == "mpeg4" and found["frames"] == 5 and found["size"] == (2 * SMALL[1], SMALL[0] + LEGEND_ROWS)
    lines = [line for line in result.output.splitlines() if "web browsers do not play" in line]
    assert len(lines) == 1 and "notice:" in lines[0] and "mp4v" in lines[0], result.output


def test_unknown_encoder_is_one_line(short_sequence, small_export, tmp_path, monkeypatch):
    monkeypatch.setenv(ENCODER_VARIABLE, "vp9")
    result = _process(short_sequence, small_export, tmp_path / "out")
    assert result.exit_code == 2 and f"{ENCODER_VARIABLE}=vp9" in result.output and "Traceback" not in result.output


# -- the sink itself -------------------------------------------------------------------------------

def test_odd_frame_size_is_padded_by_one_pixel(tmp_path):
    sink = VideoSink(tmp_path / "odd.mp4", fps=12)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (71, 97, 3), dtype=np.uint8) for _ in range(7)]
    for frame in frames:
        sink.write(frame)
    sink.close()
    assert probe(tmp_path / "odd.mp4") == {"codec": "h264", "pix_fmt": "yuv420p", "frames": 7, "size": (98, 72)}


def test_encoder_that_dies_leaves_no_file_and_one_line(tmp_path):
    from smoothdino.core.errors import UserError

    path = tmp_path / "video.mp4"
    sink = VideoSink(path)
    frame = np.zeros((64, 64, 3), np.uint8)
    sink.write(frame)
    sink.writer.process.kill()  # ffmpeg gone mid-stream (as when it exits non-zero)
    sink.writer.process.wait()
    with pytest.raises(UserError) as err:
        for _ in range(50):  # the pipe takes a few frames before it reports the broken end
            sink.write(frame)
        sink.close()
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
    sink.discard()  # what the loop does next: nothing left to remove, no error


class FakeGStreamerWriter:
    """cv2.VideoWriter where GStreamer pipelines are asked for: records the pipeline, opens as told, and writes a
    real MP4 through OpenCV's mp4v so the sink's checks run as on a Jetson."""

    opens = True
    pipelines: list[str] = []

    def __init__(self, target, *args):
        self.real = None
        if isinstance(target, str) and "appsrc" in target:
            FakeGStreamerWriter.pipelines.append(target)
            if self.opens:
                location = re.search(r'location="([^"]+)"', target)[1]
                self.real = REAL_WRITER(location, cv2.VideoWriter_fourcc(*"mp4v"), args[2], args[3])
        else:
            self.real = REAL_WRITER(target, *args)

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.real is not None and self.real.isOpened()

    def write(self, frame):
        self.real.write(frame)

    def release(self):
        self.real.release()


REAL_WRITER = cv2.VideoWriter


@pytest.mark.parametrize("opens", [True, False])
def test_jetson_encoder_first_then_ffmpeg(tmp_path, monkeypatch, opens):
    """auto: the Jetson's nvv4l2h264enc pipeline when GStreamer has it (here a stand-in), ffmpeg when it does not
    open; never mp4v while one of them works."""
    from smoothdino.edge.sinks import video

    monkeypatch.delenv(ENCODER_VARIABLE, raising=False)
    monkeypatch.setattr(video, "jetson_encoder", lambda: None)
    monkeypatch.setattr(video.cv2, "VideoWriter", FakeGStreamerWriter)
    monkeypatch.setattr(FakeGStreamerWriter, "opens", opens)
    FakeGStreamerWriter.pipelines = []
    sink = VideoSink(tmp_path / "my run" / "video.mp4")
    for _ in range(4):
        sink.write(np.zeros((48, 64, 3), np.uint8))
    name = sink.writer.name
    sink.close()
    assert len(FakeGStreamerWriter.pipelines) == 1
    pipeline = FakeGStreamerWriter.pipelines[0]
    assert "nvv4l2h264enc" in pipeline and "faststart=true" in pipeline and f'"{sink.tmp}"' in pipeline
    assert name == ("H.264 (Jetson nvv4l2h264enc)" if opens else "H.264 (ffmpeg)")
    assert probe(tmp_path / "my run" / "video.mp4")["frames"] == 4


def test_discard_drops_the_file(tmp_path):
    sink = VideoSink(tmp_path / "video.mp4")
    for _ in range(3):
        sink.write(np.zeros((32, 32, 3), np.uint8))
    sink.discard()
    assert list(tmp_path.iterdir()) == []


def test_interrupted_process_never_leaves_half_an_mp4(small_export, tmp_path):
    """SIGINT mid-run: the video of the frames done so far is closed whole (every frame its PNG has) or absent;
    SIGKILL mid-run: nothing under the final name (only the temporary file, named with the process id)."""
    sequence = write_sequence(tmp_path / "seq" / "long", SyntheticScene(*SMALL, frames=40))
    for signum in (signal.SIGINT, signal.SIGKILL):
        out = tmp_path / f"out{int(signum)}"
        depth, video = out / "long" / "depth", out / "long" / "video.mp4"
        child = subprocess.Popen([sys.executable, "-m", "smoothdino.cli", "process", str(sequence), "--engines",
                                  str(small_export), "--out", str(out), "--backend", "onnxruntime", "--threads", "1"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        deadline = time.monotonic() + 180
        while child.poll() is None and time.monotonic() < deadline and len(list(depth.glob("*.png"))) < 3:
            time.sleep(0.01)
        assert child.poll() is None, "the run ended before the signal"
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
        time.sleep(0.5)  # after SIGKILL, the orphaned ffmpeg sees the end of its input and exits
        pngs = len(list(depth.glob("*.png")))
        assert 3 <= pngs < 40
        if signum == signal.SIGINT:
            assert child.returncode == 130 and "Traceback" not in stderr, stderr[-1500:]
            assert probe(video)["frames"] == pngs and probe(video)["codec"] == "h264"
            assert not [p for p in video.parent.iterdir() if ".tmp" in p.name]
        else:  # the temporary file stays until the next start removes it (tests/test_leftovers.py)
            assert not video.exists()
            from smoothdino.core.files import parse_temporary

            left = [p.name for p in video.parent.iterdir() if p.name.startswith(".video.")]
            assert len(left) == 1 and parse_temporary(left[0]).pid == child.pid, left


# -- the colour bar --------------------------------------------------------------------------------

def test_no_depth_has_its_own_colour():
    turbo = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO).reshape(256, 3)
    assert np.abs(turbo.astype(int) - np.array(NO_DEPTH_BGR)).max(axis=1).min() >= 60
    shown = colorize(np.array([[0.0, np.nan, -1.0, np.inf, 0.01, 10.0]], np.float32))[0]
    assert (shown[:4] == NO_DEPTH_BGR).all() and not (shown[4:] == NO_DEPTH_BGR).all(axis=1).any()
    assert (colorize(np.array([[3.0]], np.float32), (0.5, 4.0)) != colorize(np.array([[3.0]], np.float32))).any()


def bar_from_pixels(strip: np.ndarray) -> dict:
    """What the strip shows, found from its pixels: the gradient's first/last columns and its middle row, the
    tick marks' columns (white 1-pixel columns under the bar), the "no depth" swatch's columns."""
    background = strip[0, -1].copy()
    rows = np.nonzero((np.abs(strip.astype(int) - background).max(axis=2) > 0).sum(axis=1) > strip.shape[1] // 3)[0]
    bar_row = int(rows[0] + 2)
    row = strip[bar_row]
    swatch = np.nonzero((row == NO_DEPTH_BGR).all(axis=1))[0]
    coloured = np.nonzero((np.abs(row.astype(int) - background).max(axis=1) > 0)
                          & ~(row == NO_DEPTH_BGR).all(axis=1))[0]
    below = next(r for r in range(bar_row, strip.shape[0]) if not (strip[r, coloured] != background).any(axis=1).all())
    ticks = np.nonzero((strip[below] == 255).all(axis=1))[0]
    return {"row": bar_row, "x0": int(coloured.min()), "x1": int(coloured.max()), "ticks": ticks.tolist(),
            "swatch": (int(swatch.min()), int(swatch.max()) + 1), "label_rows": (below + 2, strip.shape[0])}


def rendered(text: str, scale: float) -> np.ndarray:
    canvas = np.zeros((60, 40 + 20 * len(text)), np.uint8)
    cv2.putText(canvas, text, (4, 40), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
    ys, xs = np.nonzero(canvas > 40)
    return canvas[ys.min() - 1:ys.max() + 2, xs.min() - 1:xs.max() + 2]


def label_centre(strip: np.ndarray, found: dict, text: str, scale: float, near: int | None = None) -> tuple[float, float]:
    """(score, x of the centre) of the best match of `text` in the label row (within a word's width of `near`)."""
    grey = cv2.cvtColor(strip[found["label_rows"][0]:], cv2.COLOR_BGR2GRAY)
    word = rendered(text, scale)
    left = 0 if near is None else max(0, near - word.shape[1])
    grey = grey[:, left:] if near is None else grey[:, left:near + word.shape[1] + 1]
    if word.shape[0] > grey.shape[0] or word.shape[1] > grey.shape[1]:
        return 0.0, -1.0
    _, best, _, at = cv2.minMaxLoc(cv2.matchTemplate(grey, word, cv2.TM_CCOEFF_NORMED))
    return best, left + at[0] + word.shape[1] / 2


@pytest.mark.parametrize("size", [(240, 320), (480, 640)])
@pytest.mark.parametrize("depth_range, ticks", [(DISPLAY_RANGE, [0, 2, 4, 6, 8, 10]), ((0.5, 4.0), None)])
def test_colour_bar_colours_ticks_and_labels_match_the_range(size, depth_range, ticks):
    height, width = size
    strip = depth_legend(width, height, depth_range)
    found = bar_from_pixels(strip)
    lo, hi = depth_range
    values = [v for v, _ in legend_layout(width, height, depth_range).ticks]
    if ticks is not None and height == 240:
        assert values == ticks
    assert values[0] >= lo and values[-1] <= hi and len(values) >= 3
    assert len(found["ticks"]) == len(values)
    for value, x in zip(values, found["ticks"]):
        # the tick sits where the range puts its value, and the bar above it is colorize(value)
        assert abs(x - (found["x0"] + (value - lo) / (hi - lo) * (found["x1"] - found["x0"]))) <= 0.51
        expected = colorize(np.array([[max(value, 1e-6)]], np.float32), depth_range)[0, 0]
        assert (strip[found["row"], x] == expected).all(), (value, strip[found["row"], x], expected)
        text = f"{value:.2f}".rstrip("0").rstrip(".")
        score, centre = label_centre(strip, found, text, text_scale(height), near=x)
        assert score > 0.75 and abs(centre - x) <= 3, (text, score, centre, x)
    # between the ticks the bar runs through the map monotonically, near warm to far cool
    row = strip[found["row"], found["x0"]:found["x1"] + 1].astype(int)
    assert row[0, 2] > row[0, 0] and row[-1, 0] > row[-1, 2]
    # the end of the scale is in metres, and "no depth" is shown in its colour and named
    assert label_centre(strip, found, f"{values[-1]:g} m", text_scale(height))[0] > 0.75
    left, right = found["swatch"]
    assert right - left >= 6
    score, centre = label_centre(strip, found, "no depth", text_scale(height))
    assert score > 0.75 and left - 2 <= centre - rendered("no depth", text_scale(height)).shape[1] / 2 <= right


def test_depth_range_changes_the_bar_and_the_depth_colours():
    rgb, depth = SyntheticScene(240, 320, frames=1).frame(0)
    ten = side_by_side(rgb, depth, [], depth_range=DISPLAY_RANGE)
    four = side_by_side(rgb, depth, [], depth_range=(0.5, 4.0))
    assert ten.shape == four.shape
    assert np.array_equal(ten[:240, 320:], colorize(depth)) and np.array_equal(four[:240, 320:], colorize(depth, (0.5, 4.0)))
    assert np.array_equal(ten[240:, 320:], depth_legend(320, 240)) and np.array_equal(four[240:, 320:], depth_legend(320, 240, (0.5, 4.0)))
    assert not np.array_equal(ten[240:], four[240:])


def test_depth_range_option_reaches_the_video(short_sequence, small_export, tmp_path, monkeypatch):
    monkeypatch.delenv(ENCODER_VARIABLE, raising=False)
    result = _process(short_sequence, small_export, tmp_path / "out", "--depth-range", "0.5,4")
    assert result.exit_code == 0, result.output
    size = (2 * SMALL[1], SMALL[0] + LEGEND_ROWS)
    legend = first_frame(tmp_path / "out" / "short" / "video.mp4", size)[SMALL[0]:, SMALL[1]:].astype(int)
    error = {r: np.abs(legend - depth_legend(SMALL[1], SMALL[0], r)).mean() for r in ((0.5, 4.0), DISPLAY_RANGE)}
    assert error[(0.5, 4.0)] < 6 and error[(0.5, 4.0)] < error[DISPLAY_RANGE], error


@pytest.mark.parametrize("text", ["4,1", "1", "a,b", "-1,3"])
def test_bad_depth_range_is_one_line(text, short_sequence, small_export, tmp_path):
    result = _process(short_sequence, small_export, tmp_path / "out", f"--depth-range={text}")
    assert result.exit_code == 2 and "--depth-range" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["live", "--engines", "nowhere"], ["inspect", "synthetic:70x98:2"],
                                     ["demo"]], ids=["live", "inspect", "demo"])
def test_every_command_that_colours_depth_takes_depth_range(command, tmp_path):
    result = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "out"), "--depth-range", "4,1"])
    assert result.exit_code == 2 and "--depth-range 4,1" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# -- the overlay -----------------------------------------------------------------------------------

LINES = ["  9.8 FPS  102 ms  age 2f 180ms", "ms: enc 80 ada 5 dec 15 mot 1", "shift +2.6,-1.3 px  conf 0.83"]


@pytest.mark.parametrize("size", [(240, 320), (480, 640)])
def test_overlay_scales_with_the_frame_and_leaves_the_picture_readable(size):
    height, width = size
    rgb, depth = SyntheticScene(height, width, frames=1).frame(0)
    canvas = side_by_side(rgb, depth, LINES, random_weights=True)
    picture, plain = canvas[:height, :width], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    changed = (picture != plain).any(axis=2)
    rows, cols = np.nonzero(changed)
    assert rows.max() < 0.25 * height and cols.max() < 0.75 * width  # a band at the top left, no more
    assert changed.mean() < 0.25 * 0.75
    # all four lines are there, at a size that grows with the frame
    grey = cv2.cvtColor(picture[: int(0.25 * height)], cv2.COLOR_BGR2GRAY)
    for word in ("RANDOM", "FPS", "enc", "shift"):
        template = rendered(word, text_scale(height))
        score = cv2.minMaxLoc(cv2.matchTemplate(grey, template, cv2.TM_CCOEFF_NORMED))[1]
        assert score > 0.6, (word, score)
    assert text_scale(480) > text_scale(240)


@pytest.mark.parametrize("size", [(1, 1), (1, 2), (1, 3), (3, 1), (2, 2), (3, 3), (2, 5), (5, 4)])
def test_frames_a_few_pixels_wide_get_their_whole_view(size):
    """A 1-3 px wide frame (a crop, a line sensor) still gets its RGB | depth view and colour bar."""
    height, width = size
    rgb = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = np.linspace(0.5, 9.0, height * width, dtype=np.float32).reshape(height, width)
    canvas = side_by_side(rgb, depth, LINES, random_weights=True)
    assert canvas.shape == (height + legend_layout(width, height).height, 2 * width, 3)
    assert np.array_equal(canvas[:height, width:], colorize(depth))  # the depth half: the depth's colours
    layout = legend_layout(width, height)
    (x0, x1), (top, _) = layout.bar_columns, layout.bar_rows
    assert 0 <= x0 <= x1 < width  # at least one column of the gradient
    assert tuple(canvas[height + top, width + x1]) == tuple(colorize(np.float32([[DISPLAY_RANGE[1]]]))[0, 0])


# -- one overlay: process and the --ray driver draw the same frames -----------------------------------

def _decoded(path: Path) -> np.ndarray:
    """Every frame as ffmpeg decodes it (BGR), [N, H, W, 3]."""
    size = probe(path)["size"]
    raw = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "bgr24",
                          "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size[1], size[0], 3)


def test_ray_video_frames_equal_process_video_frames(short_sequence, small_export, tmp_path, monkeypatch):
    """The --ray driver draws each frame's overlay from the metrics row its chunk wrote; `process` draws the same
    row, so for the same frames, PNGs and rows the two videos are the same, frame for frame."""
    from smoothdino.edge.commands.chunks import SequencePlan, assemble, cut
    from smoothdino.edge.commands.robotics import RobotOptions

    monkeypatch.delenv(ENCODER_VARIABLE, raising=False)
    result = _process(short_sequence, small_export, tmp_path / "one", "--keyframes", "2")  # carried frames too
    assert result.exit_code == 0, result.output
    one = tmp_path / "one" / "short"
    # the driver's side: one chunk whose record holds the rows `process` wrote, the same PNGs
    out = tmp_path / "many"
    plan = cut([SequencePlan(short_sequence, "short", 5, False)], 5)[0]
    record = plan.chunks[0].record(out)
    record.mkdir(parents=True)
    shutil.copy(one / "metrics.json", record / "metrics.json")
    shutil.copytree(one / "depth", out / "short" / "depth")
    rows = json.loads((one / "metrics.json").read_text())["frames"]
    assert any(not r["keyframe"] for r in rows) and all("total_ms" in r for r in rows)
    done = {"computed": 5, "reused": 0, "keyframe_passes": 3, "scene_cuts": 0, "nonfinite": 0, "skipped_frames": []}
    assemble(plan, {plan.chunks[0].key: done}, out, video=True, robot=RobotOptions(), limit=None, random_weights=True)
    process_frames, ray_frames = _decoded(one / "video.mp4"), _decoded(out / "short" / "video.mp4")
    assert process_frames.shape == ray_frames.shape and len(ray_frames) == 5
    for i, (a, b) in enumerate(zip(process_frames, ray_frames)):
        assert np.array_equal(a, b), f"frame {i}: {np.count_nonzero(a != b)} values differ"


# -- an ffmpeg that stops taking frames ----------------------------------------------------------------

@pytest.mark.parametrize("where", ["write", "close"])
def test_a_stalled_ffmpeg_ends_in_one_line_within_the_bound(tmp_path, where):
    """ffmpeg stopped (SIGSTOP: a real stalled child) while the sink writes a frame or waits for the file: the wait
    is bounded (held signals cannot end it), then one line names the file, ffmpeg is gone and so is the file."""
    from smoothdino.core.errors import UserError

    path = tmp_path / "video.mp4"
    sink = VideoSink(path)
    sink.stall_seconds = 1.0  # the bound, shortened for the test
    frame = np.zeros((240, 320, 3), np.uint8)  # 230 KB: more than a pipe holds
    sink.write(frame)
    ffmpeg = sink.writer.process
    os.kill(ffmpeg.pid, signal.SIGSTOP)
    raised: list[BaseException] = []

    def finish() -> None:
        try:
            for _ in range(20 if where == "write" else 0):
                sink.write(frame)
            sink.close()
        except BaseException as err:  # noqa: BLE001 - looked at below
            raised.append(err)

    worker = threading.Thread(target=finish, daemon=True)
    began = time.monotonic()
    worker.start()
    worker.join(timeout=20)
    blocked = worker.is_alive()
    if ffmpeg.poll() is None:
        os.kill(ffmpeg.pid, signal.SIGCONT)  # let a blocked writer go (the test failed)
    assert not blocked, "the sink waited on the stopped ffmpeg without a bound"
    assert time.monotonic() - began < 10
    assert len(raised) == 1 and isinstance(raised[0], UserError), raised
    message = str(raised[0])
    assert str(path) in message and "\n" not in message and "ffmpeg" in message, message
    assert ffmpeg.poll() is not None  # stopped ffmpeg killed, not left behind
    assert list(tmp_path.iterdir()) == []
