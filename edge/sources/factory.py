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


def open_source(spec: str, *, live: bool = False, limit: int | None = None, **kwargs):
    """A frame source from a command-line string.

    folder -> FolderSource; video file -> VideoSource (as a live-style stream with --live); digit,
    /dev/videoN, csi://N, rtsp://..., or a GStreamer pipeline -> CameraSource; synthetic[:HxW[:N]] ->
    SyntheticSource."""
    path = Path(spec).expanduser()
    if spec.startswith("synthetic") and not path.exists():
        parts = spec.split(":")
        h, w = parse_size(parts[1], "synthetic:") if len(parts) > 1 else (480, 640)
        n = int(parts[2]) if len(parts) > 2 else (limit or 30)
        return SyntheticSource(SyntheticScene(h, w, n))
    if path.is_dir():
        return FolderSource(path, limit=limit)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        if live:  # replay as a camera: real-time pacing, newest-frame-only, drops counted
            return CameraSource(str(path), retries=0, limit=limit, pace=True, **kwargs)
        return VideoSource(path, limit=limit)
    if spec.isdigit() or spec.startswith(("/dev/video", "csi://", "rtsp://", "http://", "https://")) or "!" in spec:
        return CameraSource(spec, limit=limit, **kwargs)
    if path.suffix.lower() in VIDEO_SUFFIXES or os.sep in spec:
        raise UserError(f"{spec}: no such file or folder")
    raise UserError(f"{spec}: not a folder, video, camera (0, /dev/video0, csi://0) or GStreamer pipeline")
