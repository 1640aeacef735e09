"""Flicker: how much the depth changes between consecutive outputs that the camera's motion does not explain.

The one definition, used by `process` metrics, `bench`, the live views and benchmarks/stability.py:

    the earlier output d_(t-1) moved into the later view by the camera's motion between the two frames (edge.carry),
    then over the pixels that have depth in both, the median and the p90 of |d_t - carried d_(t-1)| / d_t.

A still scene under a steady network gives 0; per-frame scale jumps of 5 % give about 0.05. The motion between the
two frames is measured on the frames themselves: corners tracked from t-1 to t (edge.tracking), lifted to 3-D by a
depth of frame t-1 and the camera matrix, PnP (edge.carry.solve_pose); without a camera, or when PnP fails, the
phase-correlation shift. Which depth lifts the corners: the ground truth's when there is one (so every variant of a
benchmark is judged through the same motion), else the earlier output itself. Everything is computed on frames and
maps sampled to at most FLICKER_WIDTH pixels wide (every s-th pixel: it is a statistic, and costs ~2 ms a pair), and
depends on the two frames and depths alone, so a resumed run (which reads the earlier depth back from its PNG) gets
the same figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from smoothdino.core.images import as_written

from .carry import CameraPose, solve_pose, translate_depth, warp_depth
from .motion import Shift, phase_shift, to_grey
from .tracking import follow_corners, tracking_grey

FLICKER_WIDTH = 160  # both maps are sampled to at most this width
MIN_SHARED = 0.1  # fewer co-visible pixels than this share of the frame: no figure (NaN)
NO_FLICKER = (math.nan, math.nan)


@dataclass(frozen=True)
class PairMotion:
    """The camera's motion from one frame to the next, in pixels of the frames it was measured on."""

    pose: CameraPose | None  # with a camera matrix, when PnP solved
    k: np.ndarray | None  # the camera matrix at those frames' size
    shift: Shift  # the phase-correlation shift (always measured: the fallback)
    size: tuple[int, int]  # (height, width) of the frames


def sampling_step(width: int) -> int:
    """Every s-th pixel brings `width` to at most FLICKER_WIDTH."""
    return max(1, -(-int(width) // FLICKER_WIDTH))


def sampled(image: np.ndarray, step: int) -> np.ndarray:
    """Every `step`-th pixel of each row and column: pixel (i, j) is the full-size pixel (step i, step j)."""
    return np.ascontiguousarray(image[::step, ::step])


def sampled_camera(k: np.ndarray | None, step: int) -> np.ndarray | None:
    """The camera matrix of the sampled grid (full-size pixel s i is sampled pixel i: K / s exactly)."""
    return None if k is None else np.diag([1.0 / step, 1.0 / step, 1.0]) @ k


def pair_motion(previous_rgb: np.ndarray, rgb: np.ndarray, lift_depth: np.ndarray | None,
                k: np.ndarray | None) -> PairMotion:
    """The motion from `previous_rgb` to `rgb` (uint8, one size): the phase-correlation shift, and with a camera
    matrix and a depth of the earlier frame (that size, 0 = none), corners tracked between them, lifted, PnP."""
    h, w = rgb.shape[:2]
    shift = phase_shift(to_grey(previous_rgb), to_grey(rgb))
    pose = None
    if k is not None and lift_depth is not None:
        before, after = tracking_grey(previous_rgb), tracking_grey(rgb)
        scale = w / before.shape[1]  # tracking pixels -> the frames' pixels (pixel centres mapped)
        there, here = follow_corners(before, after)
        pose, _ = solve_pose((there + 0.5) * scale - 0.5, (here + 0.5) * scale - 0.5, lift_depth, k)
    return PairMotion(pose, k, shift, (h, w))


def flicker(previous: np.ndarray, depth: np.ndarray, motion: PairMotion) -> tuple[float, float]:
    """(median, p90) of |d_t - carried d_(t-1)| / d_t over the pixels with depth in both (NaN, NaN when fewer
    than MIN_SHARED of the frame). `previous` and `depth`: metres at the motion's frame size, 0 = no depth."""
    if motion.pose is not None and motion.k is not None:
        carried = warp_depth(np.asarray(previous, np.float32), motion.k, motion.pose)
    else:
        carried = translate_depth(np.asarray(previous, np.float32), motion.shift.dx, motion.shift.dy)
    current = np.asarray(depth, np.float32)
    both = (carried > 0) & (current > 0) & np.isfinite(current)
    if np.count_nonzero(both) < MIN_SHARED * both.size:
        return NO_FLICKER
    change = np.abs(current[both] - carried[both]) / current[both]
    return float(np.median(change)), float(np.percentile(change, 90))


class FlickerMeter:
    """Flicker of a stream of outputs, one frame after another: `measure(rgb, depth, gt, k)` returns the figure of
    this output against the one before (NaN for the first). `rgb`, `depth` (metres) and `gt` (metres, 0 = none; it
    lifts the corners when given) at one size, `k` the camera matrix there (None: the shift). The depth is taken as a
    16-bit PNG holds it (millimetres), so a resumed run that reads it back measures exactly the same."""

    def __init__(self):
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def reset(self) -> None:
        self._previous = None

    def measure(self, rgb: np.ndarray, depth: np.ndarray, gt: np.ndarray | None = None,
                k: np.ndarray | None = None) -> tuple[float, float]:
        step = sampling_step(rgb.shape[1])
        small = (sampled(rgb, step), as_written(sampled(depth, step)),
                 sampled(gt, step) if gt is not None and gt.shape == depth.shape else None)
        previous, self._previous = self._previous, small
        if previous is None or previous[0].shape != small[0].shape:
            return NO_FLICKER
        lift = previous[2] if previous[2] is not None and np.any(previous[2] > 0) else previous[1]
        return flicker(previous[1], small[1], pair_motion(previous[0], small[0], lift, sampled_camera(k, step)))
