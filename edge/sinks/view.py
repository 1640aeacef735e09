"""The RGB | depth view every picture shares (window, video, snapshots): depth coloured on a fixed range, so a colour
means the same in every frame, and the overlay text on a dark band."""

from __future__ import annotations

import cv2
import numpy as np

DISPLAY_RANGE = (0.0, 10.0)  # metres mapped onto the colour map: fixed, so colours mean the same everywhere


def colorize(depth: np.ndarray) -> np.ndarray:
    """Metres -> BGR, near = warm (TURBO reversed)."""
    lo, hi = DISPLAY_RANGE
    scaled = np.clip((np.asarray(depth, np.float32) - lo) / (hi - lo), 0, 1)
    return cv2.applyColorMap(((1.0 - scaled) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)


def side_by_side(rgb: np.ndarray, depth: np.ndarray, lines: list[str], random_weights: bool = False) -> np.ndarray:
    """BGR canvas: the frame on the left, coloured depth on the right, text overlaid."""
    depth_bgr = colorize(depth)
    if depth_bgr.shape[:2] != rgb.shape[:2]:
        depth_bgr = cv2.resize(depth_bgr, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    canvas = np.concatenate([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), depth_bgr], axis=1)
    scale = max(0.4, rgb.shape[0] / 800)
    if random_weights:
        lines = ["RANDOM WEIGHTS - not metric"] + lines
    (_, text_h), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    step = int(text_h * 1.8) + 2
    if lines:  # a dark band keeps the text readable on any frame
        band = canvas[: step * len(lines) + 6, : canvas.shape[1] // 2]
        band[:] = (band * 0.45).astype(np.uint8)
    for i, text in enumerate(lines):
        y = step * (i + 1)
        color = (60, 60, 255) if text.startswith("RANDOM") else (255, 255, 255)
        cv2.putText(canvas, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return canvas
