"""Depth as 16-bit PNGs in millimetres (the NYUv2 convention), written atomically: encoded in memory, then written
by Python, so a full disk is an error naming the file, never a half-written PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.files import (
    atomic_write_bytes,
)
from smoothdino.core.images import as_written, to_millimetres  # noqa: F401 - as_written: the sinks' name for it


def atomic_imwrite(path: Path, image: np.ndarray, durable: bool = True) -> None:
    """Encoded in memory, then written by Python: a full disk raises ENOSPC (one line), where cv2.imwrite
    would only return False. On the disk before it takes its name (core.files; `durable=False`: only to measure
    what that costs, benchmarks/write_cost.py)."""
    ok, encoded = cv2.imencode(Path(path).suffix, image)
    if not ok:
        raise OSError(f"{path}: OpenCV cannot encode a {image.dtype} {image.shape} image as {Path(path).suffix}")
    atomic_write_bytes(path, encoded.tobytes(), durable)


class DepthPngSink:
    """<folder>/<frame name>.png, uint16 millimetres, the input frame's size."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.png"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def read(self, name: str) -> np.ndarray | None:
        """The written depth in metres; None if missing or unreadable."""
        path = self.path(name)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
        return None if raw is None or raw.dtype != np.uint16 else raw.astype(np.float32) / 1000.0

    def write(self, name: str, depth: np.ndarray) -> None:
        atomic_imwrite(self.path(name), to_millimetres(depth))
