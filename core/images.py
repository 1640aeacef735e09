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
    """A depth map at (height, width): linear for predictions, nearest for ground truth (keeps 0 = no data)."""
    if depth.shape[:2] == tuple(size):
        return depth
    return cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_NEAREST if ground_truth else cv2.INTER_LINEAR)
