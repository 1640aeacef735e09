"""Frame sources: order, ground truth decoding, corrupt frames, live capture behaviour."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from smoothdino.core.errors import UserError
from smoothdino.edge.sources import CameraSource, FolderSource, open_source, read_depth_png
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence


def test_folder_numeric_order_and_ground_truth(tmp_path):
    folder = write_sequence(tmp_path / "seq", SyntheticScene(42, 56, frames=11))
    source = FolderSource(folder)
    assert source.names == [str(i) for i in range(1, 12)]  # 2 before 10
    frames = list(source)
    assert len(frames) == 11 and frames[0].rgb.shape == (42, 56, 3)
    _, depth = SyntheticScene(42, 56, frames=11).frame(0)
    assert np.abs(frames[0].depth_gt - depth).max() <= 0.00051  # 16-bit millimetres


def test_nyu_eight_bit_depth_scale(tmp_path):
    path = tmp_path / "1.png"
    cv2.imwrite(str(path), np.array([[0, 51, 255]], np.uint8))
    np.testing.assert_allclose(read_depth_png(path), [[0.0, 2.0, 10.0]], atol=1e-6)


@pytest.mark.nyu
def test_nyu_sequence_reads_real_frames(nyu_scene):
    source = FolderSource(nyu_scene, limit=3)
    frames = list(source)
    assert [f.name for f in frames] == ["1", "2", "3"]
    assert frames[0].rgb.shape == (480, 640, 3) and frames[0].depth_gt.max() <= 10.0


def test_truncated_jpeg_is_skipped_and_counted(tmp_path):
    folder = write_sequence(tmp_path / "seq", SyntheticScene(42, 56, frames=5))
    data = (folder / "3.jpg").read_bytes()
    (folder / "3.jpg").write_bytes(data[: len(data) // 2])
    source = FolderSource(folder)
    assert [f.name for f in source] == ["1", "2", "4", "5"]
    assert source.stats.skipped == 1 and source.stats.skipped_names == ["3.jpg"]


def test_bad_source_strings_one_line(tmp_path):
    for spec in (str(tmp_path / "nope"), "not-a-camera"):
        with pytest.raises(UserError) as err:
            open_source(spec)
        assert "\n" not in str(err.value)


def _video(path, frames=30, fps=30.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (56, 42))
    for rgb, _ in SyntheticScene(42, 56, frames=frames):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_live_capture_keeps_newest_and_counts_drops(tmp_path):
    video = _video(tmp_path / "cam.mp4", frames=30, fps=100.0)
    source = CameraSource(str(video), retries=0, pace=True)
    got = []
    for frame in source:
        got.append(frame.index)
        time.sleep(0.05)  # a slow consumer: the capture thread overwrites frames meanwhile
    source.close()
    assert 0 < len(got) < 30
    assert source.stats.dropped > 0
    assert source.stats.read + source.stats.dropped <= 30


class FlakyCapture:
    """A camera that delivers `frames` frames, then stops; reopening it fails."""

    opened = 0

    def __init__(self, frames):
        FlakyCapture.opened += 1
        self.left = frames if FlakyCapture.opened == 1 else 0

    def isOpened(self):  # noqa: N802
        return FlakyCapture.opened == 1

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        time.sleep(0.01)
        return True, np.zeros((8, 8, 3), np.uint8)

    def get(self, prop):
        return 30.0

    def release(self):
        pass


def test_camera_that_disappears_is_retried_then_ends(monkeypatch):
    import smoothdino.edge.sources.camera as sources

    FlakyCapture.opened = 0
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *a: FlakyCapture(5))
    source = CameraSource("0", retries=2, retry_delay=0.01)
    frames = list(source)  # ends by itself: no exception, no hang
    source.close()
    assert 1 <= len(frames) <= 5
    assert FlakyCapture.opened == 3  # the first open and two retries


def test_nyu_folder_missing_jpeg_is_a_missing_frame_not_rgb(tmp_path):
    folder = write_sequence(tmp_path / "seq", SyntheticScene(42, 56, frames=4))
    (folder / "2.jpg").unlink()  # its depth PNG stays: it must not be read as a colour frame
    source = FolderSource(folder)
    assert [f.name for f in source] == ["1", "3", "4"]
    assert source.stats.skipped == 1 and source.stats.skipped_names == ["2.jpg"]


def test_a_folder_named_synthetic_is_a_folder(tmp_path):
    folder = write_sequence(tmp_path / "synthetic_run", SyntheticScene(42, 56, frames=2))
    assert isinstance(open_source(str(folder)), FolderSource)


def test_synthetic_source_runs_in_constant_memory_whatever_n():
    """`synthetic:HxW:N` sweeps back and forth over one canvas: a million frames cost what a hundred do (the canvas
    used to slide N frames' worth: 2.95 TiB for 240x320:100000). Its first frames are the scene's own."""
    import tracemalloc

    from smoothdino.edge.sources.factory import SYNTHETIC_SWEEP

    def peak_reading(spec: str):
        tracemalloc.start()
        try:
            source = open_source(spec)
            frames = iter(source)
            first = [next(frames) for _ in range(4)]
            return source, first, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    source, first, peak = peak_reading("synthetic:70x98:1000000")
    _, _, sweep_peak = peak_reading(f"synthetic:70x98:{SYNTHETIC_SWEEP}")
    assert len(source) == 10**6 and [f.name for f in first] == ["1", "2", "3", "4"]
    assert peak < 32 * 2**20 and peak < 1.1 * sweep_peak, f"{peak / 2**20:.1f} MiB to read 4 frames of 70x98"
    canvas, _ = source.scene.canvases()
    assert canvas.nbytes == open_source(f"synthetic:70x98:{SYNTHETIC_SWEEP}").scene.canvases()[0].nbytes < 2 * 2**20
    rgb, depth = SyntheticScene(70, 98, SYNTHETIC_SWEEP).frame(3)
    assert np.array_equal(first[3].rgb, rgb) and np.array_equal(first[3].depth_gt, depth)
    # at the end of a sweep the camera turns: frame SWEEP (0-based) is frame SWEEP - 2 again
    later = [f for _, f in zip(range(SYNTHETIC_SWEEP + 1), iter(source))]
    assert np.array_equal(later[SYNTHETIC_SWEEP].rgb, later[SYNTHETIC_SWEEP - 2].rgb)
    # a short sequence is exactly the scene it names, as before
    short = list(open_source("synthetic:70x98:3"))
    assert all(np.array_equal(f.rgb, rgb) for f, (rgb, _) in zip(short, SyntheticScene(70, 98, 3), strict=True))


@pytest.mark.parametrize("spec, said", [
    ("synthetic:70x98:0", "synthetic:70x98:0: FRAMES must be a whole number of at least 1"),
    ("synthetic:70x98:-5", "FRAMES must be a whole number of at least 1"),
    ("synthetic:70x98:1e6", "FRAMES must be a whole number of at least 1"),
    ("synthetic:0x98", "synthetic:0x98: give synthetic[:HEIGHTxWIDTH[:FRAMES]]"),
    ("synthetic:9000x98:3", "a 9000x98 synthetic frame is larger than it can build"),
    ("synthetic:big", "synthetic:big: give synthetic[:HEIGHTxWIDTH[:FRAMES]]"),
    ("synthetic:70x98:3:4", "give synthetic[:HEIGHTxWIDTH[:FRAMES]]"),
    ("synthetic70x98", "synthetic70x98: give synthetic[:HEIGHTxWIDTH[:FRAMES]]"),
])
def test_a_synthetic_spec_it_cannot_honour_is_one_line_and_exit_2(spec, said):
    """Said before anything opens (the engines named here do not exist)."""
    from smoothdino.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["live", "--source", spec, "--engines", "nowhere", "--headless"])
    assert result.exit_code == 2, result.output
    assert said in result.output and len(result.output.strip().splitlines()) == 1
