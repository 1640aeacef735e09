"""A synthetic moving scene with known camera shift and known depth, for tests, demos and calibration.

A textured canvas (multi-scale noise plus rectangles: strong phase-correlation signal) and a depth canvas
(a floor-like ramp with nearer boxes, 1-6 m) are cropped by a window that moves by a known sub-pixel
velocity. Between frames t-1 and t the content moves by -velocity, so phase_shift(previous, current)
should return (dx, dy) = -velocity.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.files import atomic_path

from .frame import Frame, SourceStats


@dataclass(frozen=True)
class SyntheticScene:
    height: int = 480
    width: int = 640
    frames: int = 30
    velocity: tuple[float, float] = (2.6, -1.3)  # window motion in px/frame (x, y)
    seed: int = 0

    @property
    def margin(self) -> int:
        return int(np.ceil(max(abs(self.velocity[0]), abs(self.velocity[1])) * self.frames)) + 8

    def true_shift(self) -> tuple[float, float]:
        """(dx, dy) of the content between consecutive frames, in phase_shift's convention."""
        return -self.velocity[0], -self.velocity[1]

    def canvases(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8, depth float32 metres), both (H + 2m, W + 2m)."""
        rng = np.random.default_rng(self.seed)
        m = self.margin
        h, w = self.height + 2 * m, self.width + 2 * m
        rgb = np.zeros((h, w, 3), np.float32)
        for cells, weight in ((4, 0.45), (16, 0.3), (64, 0.25)):
            noise = rng.random((max(2, h * cells // max(h, w)), cells, 3)).astype(np.float32)
            rgb += weight * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        rows = np.linspace(6.0, 1.2, h, dtype=np.float32)[:, None]
        depth = np.repeat(rows, w, axis=1) + 0.3 * np.sin(np.linspace(0, 3 * np.pi, w, dtype=np.float32))[None]
        for _ in range(6):  # boxes: nearer than the floor, each with its own colour
            bh, bw = rng.integers(h // 8, h // 3), rng.integers(w // 10, w // 4)
            y, x = rng.integers(0, h - bh), rng.integers(0, w - bw)
            depth[y:y + bh, x:x + bw] = np.minimum(depth[y:y + bh, x:x + bw], rng.uniform(1.0, 3.0))
            rgb[y:y + bh, x:x + bw] = 0.5 * rgb[y:y + bh, x:x + bw] + 0.5 * rng.random(3)
        rgb = np.clip(rgb * 255, 0, 255).astype(np.uint8)
        return rgb, depth.astype(np.float32)

    def frame(self, index: int, canvases=None) -> tuple[np.ndarray, np.ndarray]:
        """Frame `index`: (RGB uint8 [H,W,3], depth float32 [H,W] metres)."""
        rgb, depth = canvases or self.canvases()
        m = self.margin
        ox, oy = m + self.velocity[0] * index, m + self.velocity[1] * index
        crop = np.float32([[1, 0, -ox], [0, 1, -oy]])  # output(x) = canvas(x + offset)
        size = (self.width, self.height)
        return (
            cv2.warpAffine(rgb, crop, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT),
            cv2.warpAffine(depth, crop, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT),
        )

    def __iter__(self):
        canvases = self.canvases()
        for i in range(self.frames):
            yield self.frame(i, canvases)


def write_sequence(folder: Path, scene: SyntheticScene) -> Path:
    """Write the scene in the NYUv2 `nyu_data` layout: <i>.jpg (RGB) and <i>.png (depth, 16-bit mm),
    frames numbered from 1. Files are written atomically; an existing complete sequence is kept."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (rgb, depth) in enumerate(scene, start=1):
        jpg, png = folder / f"{i}.jpg", folder / f"{i}.png"
        if jpg.is_file() and png.is_file():
            continue
        for path, image, params in (
            (jpg, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]),
            (png, np.round(depth * 1000).astype(np.uint16), []),
        ):
            with atomic_path(path) as tmp:
                cv2.imwrite(str(tmp), image, params)
    return folder


class SyntheticSource:
    """The synthetic moving scene (known depth), generated in memory. With `total` beyond the scene's frames it
    sweeps back and forth (the camera reverses at each end), so a soak test can run for days on a small canvas."""

    def __init__(self, scene: SyntheticScene, total: int | None = None, live: bool = False):
        self.scene = scene
        self.total = total or scene.frames
        self.live = live  # True: the loop treats it as a camera (no resume), as `live` would
        self.name = f"synthetic_{scene.height}x{scene.width}"
        self.fps = 10.0
        self.stats = SourceStats()

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[Frame]:
        canvases = self.scene.canvases()
        period = max(1, 2 * (self.scene.frames - 1))
        for i in range(self.total):
            k = i % period
            rgb, depth = self.scene.frame(k if k < self.scene.frames else period - k, canvases)
            self.stats.read += 1
            yield Frame(rgb, i, f"{i + 1}", i / self.fps, depth)

    def close(self) -> None:
        pass
