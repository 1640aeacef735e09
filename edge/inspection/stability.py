"""Temporal stability: how much frame t's features (and depth) differ from frame t-1's once the camera
motion is taken out.

Frame t-1's map is shifted by the phase-correlation shift (current(x) ~ previous(x - d); d / 14 cells for
patch maps, sub-pixel, bilinear via cv2.warpAffine) and compared only where the shifted map is real: cells
whose source lies outside the previous grid, or that reach into the encoder's centre padding, are left out.
Features: cosine similarity per cell, mean over valid cells (1 = unchanged). Depth: mean absolute change in
millimetres over valid pixels that have depth in both frames.
"""

from __future__ import annotations

import cv2
import numpy as np

from .grid import FeatureGrid

WARP_CHANNELS = 128  # cv2.warpAffine refuses images with a few hundred channels: warp them in slices
FULL = 1.0 - 1e-3  # a warped validity mask at least this high came wholly from inside the source


def shift_image(image: np.ndarray, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """aligned(x) = image(x - d) for an image [H,W] or [H,W,C] (bilinear, sub-pixel), and the bool [H,W]
    mask of pixels that came wholly from inside the image."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    h, w = image.shape[:2]
    move = np.float32([[1, 0, dx], [0, 1, dy]])  # forward map: warpAffine inverts it, dst(x) = src(x - d)

    def warp(x):
        return cv2.warpAffine(x, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    if image.ndim == 2 or image.shape[2] <= WARP_CHANNELS:
        aligned = warp(image).reshape(image.shape)
    else:
        aligned = np.concatenate([warp(image[..., i:i + WARP_CHANNELS]).reshape(h, w, -1)
                                  for i in range(0, image.shape[2], WARP_CHANNELS)], axis=2)
    valid = warp(np.ones((h, w), np.float32)) >= FULL
    return aligned, valid


def cosine_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-cell cosine similarity of two patch maps [C,h,w] -> [h,w] (0 where either cell is all zero)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    dot = np.einsum("chw,chw->hw", a, b)
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    return np.where(norms > 0, dot / np.maximum(norms, 1e-30), 0.0).astype(np.float32)


def aligned_feature_similarity(current: np.ndarray, previous: np.ndarray, shift_px: tuple[float, float],
                               grid: FeatureGrid) -> tuple[float, int]:
    """(mean cosine over valid cells, number of valid cells) of patch maps [C,h,w] (or [1,C,h,w]) after
    shifting `previous` by `shift_px` = (dx, dy) frame pixels; NaN and 0 when no cell overlaps."""
    current = np.asarray(current)[0] if np.ndim(current) == 4 else np.asarray(current)
    previous = np.asarray(previous)[0] if np.ndim(previous) == 4 else np.asarray(previous)
    dx, dy = grid.to_cells(*shift_px)
    aligned, inside = shift_image(np.moveaxis(previous, 0, -1), dx, dy)
    content = grid.content_mask()
    came_from_content, _ = shift_image(content.astype(np.float32), dx, dy)
    valid = inside & content & (came_from_content >= FULL)
    if not valid.any():
        return float("nan"), 0
    cosine = cosine_map(current, np.moveaxis(aligned, -1, 0))
    return float(cosine[valid].mean()), int(valid.sum())


def aligned_depth_change_mm(current: np.ndarray, previous: np.ndarray, shift_px: tuple[float, float]) -> float:
    """Mean |depth_t - shifted depth_t-1| in millimetres (depth maps [H,W] in metres, 0 = no depth), over
    pixels valid after the shift and with depth in both frames; NaN when none."""
    current = np.asarray(current, np.float32)
    aligned, inside = shift_image(previous, *shift_px)
    # a pixel next to a hole in frame t-1 interpolates towards 0: keep only pixels whose source had depth
    had_depth, _ = shift_image((np.asarray(previous) > 0).astype(np.float32), *shift_px)
    valid = inside & (current > 0) & (had_depth >= FULL)
    if not valid.any():
        return float("nan")
    return float(np.abs(current[valid] - aligned[valid]).mean() * 1000.0)


FIGURES = ("features_before", "features_before_unaligned", "features_after", "depth_change_mm")


class StabilityTracker:
    """Frame by frame: one row per frame comparing it with the frame before (None on the first frame, after a
    scene cut, and `features_after` when there is no adapter)."""

    def __init__(self, grid: FeatureGrid):
        self.grid = grid
        self.rows: list[dict] = []
        self._previous: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None

    def reset(self) -> None:
        self._previous = None

    def add(self, name: str, before: np.ndarray, after: np.ndarray | None, depth: np.ndarray,
            shift: tuple[float, float, float], scene_cut: bool = False) -> dict:
        dx, dy, confidence = (float(v) for v in shift)
        row = {"frame": name, "dx": dx, "dy": dy, "confidence": confidence, "scene_cut": bool(scene_cut),
               "valid_cells": 0, **dict.fromkeys(FIGURES)}
        if self._previous is not None and not scene_cut:
            prev_before, prev_after, prev_depth = self._previous
            row["features_before"], row["valid_cells"] = aligned_feature_similarity(before, prev_before, (dx, dy),
                                                                                     self.grid)
            row["features_before_unaligned"], _ = aligned_feature_similarity(before, prev_before, (0.0, 0.0),
                                                                              self.grid)
            if after is not None and prev_after is not None:
                row["features_after"], _ = aligned_feature_similarity(after, prev_after, (dx, dy), self.grid)
            row["depth_change_mm"] = aligned_depth_change_mm(depth, prev_depth, (dx, dy))
        self._previous = (before, after, depth)
        self.rows.append(row)
        return row

    def summary(self) -> dict:
        """Per figure: mean over the frame pairs that have it (None when none do); pairs and scene cuts."""
        out = {}
        for key in FIGURES:
            values = [r[key] for r in self.rows if r[key] is not None and np.isfinite(r[key])]
            out[key] = float(np.mean(values)) if values else None
        out["pairs"] = sum(r["features_before"] is not None for r in self.rows)
        out["scene_cuts"] = sum(r["scene_cut"] for r in self.rows)
        return out
