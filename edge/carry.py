"""Carrying a keyframe's depth to a later frame: the one place it happens (keyframes, async live, benchmarks).

    shift   a whole-image translation by the phase-correlation shift (right for a pan)
    pose    the camera's motion since the keyframe (edge.tracking: corners tracked frame to frame, lifted to 3-D by
            the keyframe's depth, PnP with RANSAC), then every keyframe pixel moved into the current view: a z-buffer
            (nearer wins), one-pixel cracks closed, pixels no keyframe pixel reaches left 0
    none    after a scene cut with no keyframe of the new scene yet: no depth at all (0 everywhere)

A frame whose pose cannot be solved (too few inliers, a degenerate motion) falls back to the shift and says so
(`Carried.carry == "shift"` with `fallback` set). The decision whether a frame is a keyframe never depends on the
carry (edge.keyframes): frames alone decide, so a resumed run replays them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .motion import Shift

CARRIES = ("shift", "pose")  # what --carry accepts
NETWORK = "network"  # a keyframe's own depth: not carried
NONE = "none"  # no depth to carry (a scene cut before the new scene's first keyframe)

MIN_INLIERS = 12  # fewer PnP inliers than this: the pose is not trusted (falls back to the shift)
MIN_POINTS = 8  # fewer lifted corners than this: no PnP at all
REPROJECTION_PX = 2.0  # RANSAC inlier threshold, pixels of the frame the depth is at
RANSAC_ITERATIONS = 100


@dataclass(frozen=True)
class CameraPose:
    """The camera's motion since the keyframe: x_camera = R @ x_keyframe + t (metres, OpenCV's optical frame: x
    right, y down, z forward). `inliers` of `points` lifted corners agreed with it."""

    rotation: np.ndarray  # 3x3
    translation: np.ndarray  # 3
    inliers: int
    points: int

    def camera_in_keyframe(self) -> np.ndarray:
        """4x4: the current camera's pose in the keyframe's frame (maps camera coordinates to keyframe ones), the
        transform /tf publishes with the keyframe as parent."""
        out = np.eye(4)
        out[:3, :3] = self.rotation.T
        out[:3, 3] = -self.rotation.T @ self.translation
        return out

    def quaternion_xyzw(self) -> tuple[float, float, float, float]:
        """camera_in_keyframe's rotation as a unit quaternion (x, y, z, w), as geometry_msgs wants it."""
        m = self.rotation.T
        w = np.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
        x = np.copysign(np.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
        y = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
        z = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
        q = np.array([x, y, z, w])
        return tuple(float(v) for v in q / np.linalg.norm(q))


@dataclass(frozen=True)
class Carried:
    depth: np.ndarray  # float32 [H, W] metres, 0 = no depth; a new array (the keyframe's stays untouched)
    carry: str  # NETWORK | "pose" | "shift" | NONE
    pose: CameraPose | None = None  # with carry == "pose"
    fallback: str = ""  # why a pose carry fell back to the shift ("" when it did not)


def translate_depth(depth: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """depth carried by the camera shift: out(x) = depth(x - d), d rounded to whole pixels (nearest: depth edges
    and holes stay sharp, no blend of near and far), 0 where x - d falls outside the frame. Always a new array."""
    h, w = depth.shape
    sx, sy = int(round(dx)), int(round(dy))
    out = np.zeros_like(depth)
    if abs(sx) >= w or abs(sy) >= h:
        return out
    out[max(sy, 0): h + min(sy, 0), max(sx, 0): w + min(sx, 0)] = depth[max(-sy, 0): h - max(sy, 0),
                                                                         max(-sx, 0): w - max(sx, 0)]
    return out


def camera_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@lru_cache(maxsize=4)
def _pixel_rays(height: int, width: int, k: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-depth rays of the pixel centres, separably: x / z = (u - cx) / fx per column, y / z = (v - cy) / fy per
    row (float64 [W] and [H])."""
    fx, fy, cx, cy = k
    return (np.arange(width) - cx) / fx, (np.arange(height) - cy) / fy


def _k_tuple(k: np.ndarray) -> tuple[float, float, float, float]:
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


def lift(points: np.ndarray, depth: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [N, 2] (x, y) of the keyframe -> (3-D points [M, 3] in its camera, the indices of the M pixels that have
    depth). Depth is read at the nearest pixel (no blend across a depth edge)."""
    h, w = depth.shape
    x = np.clip(np.rint(points[:, 0]).astype(np.intp), 0, w - 1)
    y = np.clip(np.rint(points[:, 1]).astype(np.intp), 0, h - 1)
    z = depth[y, x].astype(np.float64)
    keep = np.flatnonzero(np.isfinite(z) & (z > 0))
    fx, fy, cx, cy = _k_tuple(k)
    p = points[keep].astype(np.float64)
    xyz = np.stack([(p[:, 0] - cx) / fx * z[keep], (p[:, 1] - cy) / fy * z[keep], z[keep]], axis=1)
    return xyz, keep


def solve_pose(keyframe_points: np.ndarray, current_points: np.ndarray, keyframe_depth: np.ndarray,
               k: np.ndarray) -> tuple[CameraPose | None, str]:
    """Corners seen in the keyframe and in the current frame (pixels, [N, 2] each, same order) and the keyframe's
    depth -> the camera's motion, or (None, why not). RANSAC is OpenCV's classic one, whose generator starts from the
    same fixed state on every call, so the same inputs always give the same pose: resume stays exact (a test holds
    it to that, bit for bit)."""
    if len(keyframe_points) < MIN_POINTS:
        return None, f"{len(keyframe_points)} tracked corners"
    xyz, keep = lift(keyframe_points, keyframe_depth, k)
    if len(keep) < MIN_POINTS:
        return None, f"{len(keep)} corners with depth"
    image = current_points[keep].astype(np.float64)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(xyz, image, k, None, iterationsCount=RANSAC_ITERATIONS,
                                                 reprojectionError=REPROJECTION_PX, confidence=0.999,
                                                 flags=cv2.SOLVEPNP_EPNP)
    count = 0 if inliers is None else len(inliers)
    if not ok or count < MIN_INLIERS:
        return None, f"{count} PnP inliers of {len(keep)}"
    index = inliers.ravel()
    # refine on the inliers (Levenberg-Marquardt from the RANSAC pose): sub-pixel corners, a steadier pose
    rvec, tvec = cv2.solvePnPRefineLM(xyz[index], image[index], k, None, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    translation = tvec.reshape(3)
    if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))):
        return None, "a non-finite pose"
    return CameraPose(rotation, translation, count, len(keep)), ""


def warp_depth(depth: np.ndarray, k: np.ndarray, pose: CameraPose) -> np.ndarray:
    """The keyframe's depth seen from the current camera: every keyframe pixel with depth lifted to 3-D, moved by
    the pose and projected to its nearest pixel; where several land on one pixel the nearest wins (a z-buffer);
    one-pixel cracks between splats (a surface seen closer than in the keyframe) are closed with the nearest
    neighbouring depth; everything else no keyframe pixel reaches is 0.

    Vectorised on whole planes: a pixel with ray r = (x, y, 1) and depth z lands at K (R z r + t) = z (K R r) + K t,
    and K R r is affine in x (per column) and y (per row), so each of its three planes is one broadcast sum; then
    np.minimum.at is the z-buffer (no sort). ~4 ms at 480x640 on 2 cores (benchmarks/keyframes.py --carry-cost).
    """
    h, w = depth.shape
    z = depth.astype(np.float32, copy=False)
    krt = k @ np.hstack([pose.rotation, pose.translation[:, None]])
    x, y = _pixel_rays(h, w, _k_tuple(k))
    a, b, c = ((krt[i, 0] * x)[None, :].astype(np.float32) + (krt[i, 1] * y + krt[i, 2])[:, None].astype(np.float32)
               for i in range(3))  # the three planes of K R r
    z_new = c * z + np.float32(krt[2, 3])  # depth in the current camera
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint((a * z + np.float32(krt[0, 3])) / z_new)
        v = np.rint((b * z + np.float32(krt[1, 3])) / z_new)
    seen = (z > 0) & (z_new > 1e-3) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    target = v * np.float32(w) + u  # exact in float32 below 2**24 pixels
    target[~seen] = h * w  # the unseen go to one extra cell, dropped below
    buffer = np.full(h * w + 1, np.inf, np.float32)
    np.minimum.at(buffer, target.astype(np.int32).reshape(-1), z_new.reshape(-1))
    surfaces = buffer[:-1].reshape(h, w)  # inf where nothing landed
    out = np.where(surfaces == np.inf, np.float32(0.0), surfaces)
    # a far surface seen through a crack in a nearer one (its pixel has nearer depth on both sides) is hidden in truth:
    # make it a crack, which close_cracks then fills from the nearer surface around it
    both_sides = np.minimum(cv2.dilate(surfaces, _PAIR_X), cv2.dilate(surfaces, _PAIR_Y))  # max of the two neighbours
    out[both_sides < out * np.float32(1.0 - SEE_THROUGH)] = 0.0
    return close_cracks(out)


_SQUARE = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
_PAIR_X = np.array([[1, 0, 1]], np.uint8)  # the left and right neighbours
_PAIR_Y = _PAIR_X.T.copy()  # above and below
SEE_THROUGH = 0.05  # a pixel 5 % farther than both neighbours on a line is a far surface seen through a crack


def close_cracks(depth: np.ndarray) -> np.ndarray:
    """Fill the empty pixels that a morphological closing of the covered area fills (holes inside the carried view,
    never its outer border) with the median of their 3x3 neighbours' depths: inside a surface that is the surface,
    at a depth edge the side most of the neighbours are on (nearest-of would fatten foregrounds by a pixel, farthest-of
    thin them). Works in place; returns `depth`."""
    covered = cv2.compare(depth, 0.0, cv2.CMP_GT)
    cracks = cv2.subtract(cv2.morphologyEx(covered, cv2.MORPH_CLOSE, _SQUARE), covered)
    ys, xs = np.nonzero(cracks)
    if not len(ys):
        return depth
    padded = np.pad(depth, 1)
    around = np.stack([padded[ys + 1 + dy, xs + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx], 1)
    count = np.count_nonzero(around, axis=1)
    around[around == 0] = np.inf  # empty neighbours sort last
    around.sort(axis=1)
    depth[ys, xs] = around[np.arange(len(ys)), (count - 1) // 2]  # the lower median of those with depth
    return depth


SPLAT_WIDTH = 320  # wider depth maps are splatted at 1/2, 1/3, ... and brought back by nearest neighbour


def warp_at_most(depth: np.ndarray, k: np.ndarray, pose: CameraPose, width: int) -> np.ndarray:
    """warp_depth on every s-th pixel (s the smallest factor that brings the width to `width` or less: a 480x640 map
    splats 240x320 points, a quarter of the work, 31 -> ~10 ms a frame on 2 cores), the result brought back to the full
    size by nearest neighbour: depth edges stay sharp and no value is invented between two surfaces."""
    h, w = depth.shape
    step = -(-w // width)
    if step <= 1:
        return warp_depth(depth, k, pose)
    small = np.ascontiguousarray(depth[::step, ::step])  # pixel (i, j) is full-size pixel (s i, s j): K / s exactly
    scale = np.diag([1.0 / step, 1.0 / step, 1.0])
    carried = warp_depth(small, scale @ k, pose)
    rows, cols = _nearest_samples(h, w, step, *carried.shape)
    return carried[rows][:, cols]


@lru_cache(maxsize=4)
def _nearest_samples(h: int, w: int, step: int, hs: int, ws: int) -> tuple[np.ndarray, np.ndarray]:
    """For each full-size row and column, the splatted one whose pixel centre (full-size s i) is nearest."""
    return (np.minimum(np.rint(np.arange(h) / step), hs - 1).astype(np.intp),
            np.minimum(np.rint(np.arange(w) / step), ws - 1).astype(np.intp))


def carry_depth(depth: np.ndarray, shift: Shift, pose: CameraPose | None = None, k: np.ndarray | None = None,
                fallback: str = "") -> Carried:
    """The one carry: by the pose when there is one (and the camera matrix of `depth`'s size), else by the shift."""
    if pose is not None and k is not None:
        return Carried(warp_at_most(depth, k, pose, SPLAT_WIDTH), "pose", pose)
    return Carried(translate_depth(depth, shift.dx, shift.dy), "shift", None, fallback)
