"""Calibration frames: consecutive pairs (t-1, t) spread across scenes, so the adapter sees real motion
and the gate sees every kind of room. NYUv2 sequences when given, the synthetic scene otherwise.

Two sets are drawn from the same sequences: the gate's pairs (`calibration_pairs`) and, for INT8, the pairs
whose activations set the quantization scales (`calibration_pairs(..., avoid=gate_pairs)`): no frame of
one is a frame of the other, so the gate judges INT8 on frames it was not calibrated on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from smoothdino.core.console import notice_once
from smoothdino.edge.sources import FolderSource
from smoothdino.edge.sources.synthetic import SyntheticScene


@dataclass
class CalibrationPair:
    name: str  # scene/frame
    previous: np.ndarray  # uint8 RGB at the export size
    current: np.ndarray
    depth_gt: np.ndarray | None  # metres at the export size (nearest), 0 = unmeasured
    frames: tuple[str, str] = field(default=("", ""))  # "scene/frame" of previous and current: disjointness


def _fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return rgb if rgb.shape[:2] == tuple(size) else cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _fit_depth(depth: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    if depth is None or depth.shape == tuple(size):
        return depth
    return cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def calibration_pairs(sequences: list[Path] | None, count: int, size: tuple[int, int],
                      avoid: list[CalibrationPair] | None = None) -> list[CalibrationPair]:
    """`count` pairs, round-robin over the sequences, evenly spaced within each. With `avoid`, none of the
    returned pairs shares a frame with those pairs (INT8 calibration frames held out from the gate's)."""
    used = {f for pair in avoid or [] for f in pair.frames}
    if not sequences:
        notice_once("synthetic-calibration",  # the gate's pairs and INT8's held-out ones: one fact, said once
                    "no calibration sequences given: gating on the synthetic scene (pass --calibration DIR for NYUv2)")
        # the synthetic scene is a function of the frame index: held-out pairs start past the avoided ones
        first = 1 + max((int(f.split("/")[1]) for f in used), default=-1)
        first += first % 2  # pairs start on even frames
        scene = SyntheticScene(size[0], size[1], frames=first + 2 * count + 1)
        canvases = scene.canvases()
        pairs = []
        for k in range(count):
            i = first + 2 * k
            (prev, _), (cur, depth) = scene.frame(i, canvases), scene.frame(i + 1, canvases)
            pairs.append(CalibrationPair(f"synthetic/{i + 1}", prev, cur, depth, (f"synthetic/{i}", f"synthetic/{i + 1}")))
        return pairs
    sources = [FolderSource(Path(s)) for s in sequences]
    per_scene = [count // len(sources) + (1 if i < count % len(sources) else 0) for i in range(len(sources))]
    pairs = []
    for source, n in zip(sources, per_scene):
        if n == 0 or len(source) < 2:
            continue  # a pair needs two frames
        names = source.names
        free = [p for p in range(1, len(source))
                if f"{source.name}/{names[p - 1]}" not in used and f"{source.name}/{names[p]}" not in used]
        if not free:
            continue
        positions = sorted({free[int(round(i))] for i in np.linspace(0, len(free) - 1, n)})
        for pos in positions:
            prev, cur = source.load(int(pos) - 1), source.load(int(pos))
            if prev is None or cur is None:
                continue  # corrupt frame: take the others
            pairs.append(CalibrationPair(f"{source.name}/{cur.name}", _fit(prev.rgb, size), _fit(cur.rgb, size),
                                         _fit_depth(cur.depth_gt, size),
                                         (f"{source.name}/{prev.name}", f"{source.name}/{cur.name}")))
    return pairs
