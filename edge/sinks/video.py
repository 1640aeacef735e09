"""The side-by-side MP4, written under a temporary name and renamed into place only once it is whole."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import (
    DiskFull,
)


class VideoSink:
    """MP4 (mp4v) of side-by-side frames, written under a temporary name (with the process id: two runs into one
    folder never share it) and renamed into place only once it is whole. cv2.VideoWriter reports nothing when the
    disk fills up, so the finished file is opened again and its frames counted before it may take the final name;
    a short one is removed and named in one line. `discard()` drops the file (a run that failed)."""

    def __init__(self, path: Path, fps: float = 10.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
        self.fps = fps
        self.writer = None
        self.frames = 0

    def write(self, canvas: np.ndarray) -> None:
        if self.writer is None:
            h, w = canvas.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                notice(f"{self.path}: OpenCV cannot write MP4 here; no video")
                self.writer = False
        if self.writer:
            self.writer.write(canvas)
            self.frames += 1

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if not writer:
            return
        writer.release()
        if not self.frames:
            self.tmp.unlink(missing_ok=True)
            return
        readable = video_frame_count(self.tmp)
        if readable != self.frames:
            self.tmp.unlink(missing_ok=True)
            raise DiskFull(self.path) if _disk_nearly_full(self.path.parent) else UserError(
                f"{self.path}: the video came out with {readable} of {self.frames} frames and was not kept; "
                "check the disk, or pass --no-video")
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        writer, self.writer = self.writer, None
        if writer:
            writer.release()
        self.tmp.unlink(missing_ok=True)


def video_frame_count(path: Path) -> int:
    """Frames a video file really holds, as a player would find them (0 if it does not open)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def _disk_nearly_full(folder: Path) -> bool:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize < (1 << 20)
