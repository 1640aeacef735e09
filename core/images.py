"""Frame sizes and resizing, one rule for every command: frames shrink/grow with area interpolation, depth
maps come back with linear interpolation, ground truth (holes are 0) with nearest so holes stay holes."""

from __future__ import annotations

import cv2
import numpy as np

from .errors import UserError

NYU_DEPTH_RANGE = (0.001, 10.0)  # metres: the NYUv2 heads' bins/clamps, and the range metrics count as valid


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'480x640' (height x width) -> (480, 640)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h < 14 or w < 14:
            raise ValueError
        return h, w
    except ValueError:
        raise UserError(f"{option} {text!r}: give HEIGHTxWIDTH, e.g. 480x640 (each at least 14)") from None


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame at (height, width); unchanged when it already is."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_depth(depth: np.ndarray, size: tuple[int, int], ground_truth: bool = False) -> np.ndarray:
    """A depth map at (height, width): linear for predictions, nearest for ground truth (keeps 0 = no data).

    A prediction with holes (carried depth: pixels no keyframe pixel reaches are 0) is never blended with them: each
    output pixel averages only its neighbours that have depth (linear weights), and is a hole where the nearest
    input pixel is one. So no resized value lies outside the depths around it, at any size."""
    if depth.shape[:2] == tuple(size):
        return depth
    dsize = (size[1], size[0])
    if ground_truth:
        return cv2.resize(depth, dsize, interpolation=cv2.INTER_NEAREST)
    out = cv2.resize(depth, dsize, interpolation=cv2.INTER_LINEAR)
    if depth.size == 0 or depth.min() > 0:  # the network's own depth has no holes: the plain linear resize
        return out
    has = (depth > 0).astype(np.float32)
    weight = cv2.resize(has, dsize, interpolation=cv2.INTER_LINEAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(weight > 1e-6, out / weight, 0.0).astype(np.float32)
    out[cv2.resize(has, dsize, interpolation=cv2.INTER_NEAREST) == 0] = 0.0
    return out


def to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (the NYUv2 convention, depth_scale 1000): what a depth PNG holds."""
    return np.clip(np.round(np.asarray(depth, np.float64) * 1000.0), 0, 65535).astype(np.uint16)


def as_written(depth: np.ndarray) -> np.ndarray:
    """The depth as its PNG holds it, in metres (millimetre steps): what reading the PNG back gives."""
    return to_millimetres(depth).astype(np.float32) / 1000.0
