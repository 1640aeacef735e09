"""`open_source`: a frame source from a command-line string (folder, video, camera, GStreamer pipeline, synthetic)."""

from __future__ import annotations

import os
from pathlib import Path

from smoothdino.core.errors import UserError
from smoothdino.core.images import parse_size

from .camera import CameraSource
from .frame import VIDEO_SUFFIXES
from .recorded import FolderSource, VideoSource
from .synthetic import SyntheticScene, SyntheticSource

SYNTHETIC_SWEEP = 100  # frames of one sweep of the synthetic scene: its canvas (and memory) stops growing there
SYNTHETIC_MAX_SIDE = 4096  # the largest synthetic frame side: the canvas of a larger one would not fit in memory
SYNTHETIC_HELP = "give synthetic[:HEIGHTxWIDTH[:FRAMES]], e.g. synthetic:240x320:1000 (each side 14 to 4096, FRAMES >= 1)"


def open_source(spec: str, *, live: bool = False, limit: int | None = None, **kwargs):
    """A frame source from a command-line string.

    folder -> FolderSource; video file -> VideoSource (as a live-style stream with --live); digit,
    /dev/videoN, csi://N, rtsp://..., a named pipe, or a GStreamer pipeline -> CameraSource; synthetic[:HxW[:N]] ->
    SyntheticSource."""
    if is_synthetic(spec):
        return synthetic_source(spec, limit)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, limit=limit)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        if live:  # replay as a camera: real-time pacing, newest-frame-only, drops counted
            return CameraSource(str(path), retries=0, limit=limit, pace=True, **kwargs)
        return VideoSource(path, limit=limit)
    if spec.isdigit() or spec.startswith(("/dev/video", "csi://", "rtsp://", "http://", "https://")) or "!" in spec \
            or path.is_fifo():  # a named pipe: a stream another program writes (ffmpeg -f yuv4mpegpipe), read as a camera
        return CameraSource(spec, limit=limit, **kwargs)
    if path.suffix.lower() in VIDEO_SUFFIXES or os.sep in spec:
        raise UserError(f"{spec}: no such file or folder")
    raise UserError(f"{spec}: not a folder, video, camera (0, /dev/video0, csi://0) or GStreamer pipeline")


def is_synthetic(spec: str) -> bool:
    """A synthetic[...] spec (a folder or file of that name is read as one)."""
    return spec.startswith("synthetic") and not Path(spec).expanduser().exists()


def synthetic_source(spec: str, limit: int | None = None) -> SyntheticSource:
    """`synthetic[:HxW[:N]]`: N frames (default `limit`, else 30) of the synthetic scene at H x W (default 480x640),
    in constant memory whatever N: the scene is at most SYNTHETIC_SWEEP frames long and the camera sweeps back and
    forth across it. The first SYNTHETIC_SWEEP frames are those of SyntheticScene(H, W, N). A spec it cannot honour
    is one UserError."""
    parts = spec.split(":")
    if parts[0] != "synthetic" or len(parts) > 3 or any(not p.strip() for p in parts[1:]):
        raise UserError(f"{spec}: {SYNTHETIC_HELP}")
    try:
        h, w = parse_size(parts[1], "synthetic:") if len(parts) > 1 else (480, 640)
    except UserError:
        raise UserError(f"{spec}: {SYNTHETIC_HELP}") from None
    if max(h, w) > SYNTHETIC_MAX_SIDE:
        raise UserError(f"{spec}: a {h}x{w} synthetic frame is larger than it can build; {SYNTHETIC_HELP}")
    if len(parts) > 2:
        try:
            n = int(parts[2])
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"{spec}: FRAMES must be a whole number of at least 1, e.g. synthetic:240x320:1000")
    else:
        n = limit or 30
    return SyntheticSource(SyntheticScene(h, w, min(n, SYNTHETIC_SWEEP)), total=n)
