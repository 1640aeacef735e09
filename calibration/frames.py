"""Calibration frames: consecutive pairs (t-1, t) spread across scenes, so the adapter sees real motion
and the gate sees every kind of room. NYUv2 sequences when given, the synthetic scene otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from smoothdino.core.console import notice
from smoothdino.edge.sources import FolderSource
from smoothdino.edge.synthetic import SyntheticScene


@dataclass
class CalibrationPair:
    name: str  # scene/frame
    previous: np.ndarray  # uint8 RGB at the export size
    current: np.ndarray
    depth_gt: np.ndarray | None  # metres at the export size (nearest), 0 = unmeasured


def _fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return rgb if rgb.shape[:2] == tuple(size) else cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _fit_depth(depth: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    if depth is None or depth.shape == tuple(size):
        return depth
    return cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def calibration_pairs(sequences: list[Path] | None, count: int, size: tuple[int, int]) -> list[CalibrationPair]:
    """`count` pairs, round-robin over the sequences, evenly spaced within each."""
    if not sequences:
        notice("no calibration sequences given: gating on the synthetic scene (pass --calibration DIR for NYUv2)")
        scene = SyntheticScene(size[0], size[1], frames=2 * count + 1)
        canvases = scene.canvases()
        pairs = []
        for k in range(count):
            (prev, _), (cur, depth) = scene.frame(2 * k, canvases), scene.frame(2 * k + 1, canvases)
            pairs.append(CalibrationPair(f"synthetic/{2 * k + 1}", prev, cur, depth))
        return pairs
    sources = [FolderSource(Path(s)) for s in sequences]
    per_scene = [count // len(sources) + (1 if i < count % len(sources) else 0) for i in range(len(sources))]
    pairs = []
    for source, n in zip(sources, per_scene):
        if n == 0 or len(source) < 2:
            continue  # a pair needs two frames
        positions = np.linspace(1, len(source) - 1, n).round().astype(int)
        for pos in positions:
            prev, cur = source.load(int(pos) - 1), source.load(int(pos))
            if prev is None or cur is None:
                continue  # corrupt frame: take the others
            pairs.append(CalibrationPair(f"{source.name}/{cur.name}", _fit(prev.rgb, size), _fit(cur.rgb, size),
                                         _fit_depth(cur.depth_gt, size)))
    return pairs
