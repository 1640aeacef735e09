"""Corners of a keyframe followed frame to frame: what the pose carry (edge.carry) lifts to 3-D.

A keyframe seeds up to `max_corners` Shi-Tomasi corners; every later frame follows them from the frame before with
pyramidal Lucas-Kanade and a forward-backward check (a corner that does not track back to where it was is lost).
When fewer than half are left, new corners are found in the current frame where none is tracked and followed back to
the keyframe directly (one more LK call, same check), so each track keeps its anchor: its pixel in the keyframe.

Everything here is a function of the frames since the keyframe alone (no depth, no clock, no randomness), so a
resumed run or a `--ray` chunk that replays those frames arrives at exactly the same tracks.

Tracking runs on grey frames shrunk to at most TRACK_WIDTH pixels wide (area); positions are in pixels of the
frame the tracks were given (the export's frame size).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TRACK_WIDTH = 320  # wider frames are tracked at 1/2, 1/3, ... (LK at 320x240: ~1 ms for 200 corners)
MAX_CORNERS = 200
RESEED_BELOW = 0.5  # re-seed when fewer than this share of MAX_CORNERS is tracked
FB_ERROR_PX = 1.0  # forward-backward disagreement (tracking pixels) above which a corner is lost
HOMOGRAPHY_PX = 1.0  # RANSAC threshold of the parallax measure (tracking pixels)
GRID = 4  # coverage: the share of a GRID x GRID grid of the current frame holding a tracked corner
_LK = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


def tracking_scale(width: int) -> int:
    return max(1, -(-int(width) // TRACK_WIDTH))


def tracking_grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB at the frame size -> the uint8 grey frame the tracks follow (shrunk by tracking_scale)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    scale = tracking_scale(grey.shape[1])
    if scale > 1:
        grey = cv2.resize(grey, (grey.shape[1] // scale, grey.shape[0] // scale), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(grey)


def _lk(a: np.ndarray, b: np.ndarray, points: np.ndarray, guess: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Follow `points` from grey frame a to b, checked backwards: (positions in b, kept mask)."""
    if len(points) == 0:
        return points, np.zeros(0, bool)
    p0 = points.reshape(-1, 1, 2).astype(np.float32)
    flags = 0
    p1 = None
    if guess is not None:
        p1, flags = guess.reshape(-1, 1, 2).astype(np.float32).copy(), cv2.OPTFLOW_USE_INITIAL_FLOW
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, p1, flags=flags, **_LK)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **_LK)
    error = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    h, w = b.shape
    q = p1.reshape(-1, 2)
    kept = ((st1.ravel() == 1) & (st2.ravel() == 1) & (error < FB_ERROR_PX)
            & (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1))
    return q, kept


def _corners(grey: np.ndarray, count: int, avoid: np.ndarray | None = None) -> np.ndarray:
    mask = None
    if avoid is not None and len(avoid):
        mask = np.full(grey.shape, 255, np.uint8)
        for x, y in np.rint(avoid).astype(int):
            cv2.circle(mask, (int(x), int(y)), 6, 0, -1)
    found = cv2.goodFeaturesToTrack(grey, maxCorners=count, qualityLevel=0.01, minDistance=6, mask=mask, blockSize=5)
    return np.zeros((0, 2), np.float32) if found is None else found.reshape(-1, 2)


def follow_corners(previous_grey: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corners of one grey frame followed to the next (once, checked backwards): ([N, 2] there, [N, 2] here), in
    pixels of those frames. What a pair of consecutive frames needs (edge.flicker); a keyframe's tracks are
    KeyframeTracks."""
    corners = _corners(previous_grey, MAX_CORNERS)
    points, kept = _lk(previous_grey, grey, corners)
    return corners[kept], points[kept]


@dataclass
class TrackState:
    """What the keyframe decision reads: frames alone."""

    tracked: int  # corners followed from the keyframe to this frame
    coverage: float  # share of the frame's GRID x GRID cells that hold one
    parallax: float = 0.0  # median distance of the corners from the homography that best maps the keyframe's onto
    # them (RANSAC), a share of the frame's width: what a rotation (or a plane) cannot explain, so what the pose carry
    # has to get right from the depth: disocclusions and depth errors grow with it


class KeyframeTracks:
    """Corners of one keyframe, followed to the current frame. `update(grey)` for every later frame in order."""

    def __init__(self, keyframe_grey: np.ndarray, frame_width: int):
        self.keyframe = keyframe_grey
        self.scale = frame_width / keyframe_grey.shape[1]  # tracking pixels -> frame pixels
        self.previous = keyframe_grey
        corners = _corners(keyframe_grey, MAX_CORNERS)
        self.anchors = corners.copy()  # tracking pixels in the keyframe
        self.points = corners.copy()  # tracking pixels in the current frame

    def update(self, grey: np.ndarray) -> TrackState:
        points, kept = _lk(self.previous, grey, self.points)
        self.anchors, self.points = self.anchors[kept], points[kept]
        if len(self.points) < RESEED_BELOW * MAX_CORNERS:
            self._reseed(grey)
        self.previous = grey
        return self.state()

    def _reseed(self, grey: np.ndarray) -> None:
        fresh = _corners(grey, MAX_CORNERS - len(self.points), avoid=self.points)
        if not len(fresh):
            return
        # the tracks still alive say how far the view moved: start the search back in the keyframe there
        offset = np.median(self.anchors - self.points, axis=0) if len(self.points) else np.zeros(2, np.float32)
        anchors, kept = _lk(grey, self.keyframe, fresh, guess=fresh + offset)
        self.anchors = np.concatenate([self.anchors, anchors[kept]]).astype(np.float32)
        self.points = np.concatenate([self.points, fresh[kept]]).astype(np.float32)

    def state(self) -> TrackState:
        h, w = self.previous.shape
        if not len(self.points):
            return TrackState(0, 0.0, 1.0)
        cells = (np.minimum(self.points[:, 1] * GRID // h, GRID - 1) * GRID
                 + np.minimum(self.points[:, 0] * GRID // w, GRID - 1)).astype(int)
        parallax = 1.0  # too few corners to tell: as bad as it gets
        if len(self.points) >= 8:
            homography, _ = cv2.findHomography(self.anchors, self.points, cv2.RANSAC, HOMOGRAPHY_PX)
            if homography is not None:
                mapped = cv2.perspectiveTransform(self.anchors.reshape(-1, 1, 2), homography).reshape(-1, 2)
                parallax = float(np.median(np.linalg.norm(mapped - self.points, axis=1))) / w
        return TrackState(len(self.points), len(np.unique(cells)) / GRID ** 2, parallax)

    def correspondences(self) -> tuple[np.ndarray, np.ndarray]:
        """(keyframe pixels, current pixels), [N, 2] each, in pixels of the frame size (pixel centres mapped)."""
        s = self.scale
        return (self.anchors + 0.5) * s - 0.5, (self.points + 0.5) * s - 0.5
