"""A frame and what every source keeps: `Frame` (uint8 RGB, index, name, timestamp, optional ground-truth depth,
source-specific meta), `SourceStats` (read, skipped, dropped, reconnects), and the image readers every source shares
(a missing or corrupt image is None, never an exception)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.files import EXHAUSTED, DiskFull

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


@dataclass
class Frame:
    rgb: np.ndarray  # uint8 [H,W,3]
    index: int  # position in the stream, from 0
    name: str  # output name: the input file's stem, or a zero-padded index
    timestamp: float  # seconds (capture time for live sources, index / fps for recorded ones)
    depth_gt: np.ndarray | None = None  # float32 metres, 0 where unmeasured
    meta: dict = field(default_factory=dict)  # source-specific: e.g. a bag's header stamp, frame_id, intrinsics


@dataclass
class SourceStats:
    read: int = 0
    skipped: int = 0  # missing or corrupt frames
    dropped: int = 0  # live frames overwritten before the loop took them
    reconnects: int = 0  # times a lost camera came back
    reconnect_attempts: int = 0
    skipped_names: list[str] = field(default_factory=list)


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """Decode an image file; None if missing, truncated or undecodable; DiskFull (its reason said) when the process
    has no descriptor or memory left to read it with: a frame is never skipped for that.

    OpenCV decodes a truncated JPEG into a partly grey image with only a warning, so JPEGs are also
    required to start with SOI and end with EOI (trailing padding allowed)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        if err.errno in EXHAUSTED:  # no descriptor or memory left: the run ends as on a full disk, nothing skipped
            raise DiskFull(path, errno=err.errno) from None
        return None
    return decode_image(data, path.suffix.lower() in (".jpg", ".jpeg"), flags)


def decode_image(data: bytes, jpeg: bool, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """Encoded image bytes (a file's, a bag message's) -> image; None if truncated or undecodable."""
    if jpeg and (not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def read_depth_png(path: Path) -> np.ndarray | None:
    """NYUv2 depth PNG -> metres. 16-bit: millimetres (official pipeline, our own output);
    8-bit: the DenseDepth/Kaggle export, value / 255 * 10. 0 stays 0 (no measurement)."""
    raw = read_image(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        return None
    if raw.ndim == 3:
        raw = raw[..., 0]
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) / 1000.0
    return raw.astype(np.float32) / 255.0 * 10.0
