"""A synthetic room seen by a camera that walks forward and turns: known depth, known camera motion, in 3-D.

The flat SyntheticScene only pans (a translation is exact for it); this one is what the pose carry is for. The
room is a textured box (walls, floor, ceiling) with a free-standing panel in front of the back wall, so some of
what the keyframe saw is hidden later and the other way round. Every pixel is ray-cast analytically: its depth is
the exact distance along the optical axis to the first surface hit, and its colour is a smooth texture fixed to that
surface (so corners track and phase correlation locks, as on real frames).

Camera convention: OpenCV's optical frame (x right, y down, z forward). A camera at position c with rotation R
(world -> camera) sees world point X at R (X - c).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from .frame import Frame, SourceStats
from .intrinsics import Intrinsics

# planes: (axis, value, bounds of the two other axes (lo, hi) each, texture id); the room is x in [-2, 2],
# y in [-1.3, 1.3] (y down: the floor is y = +1.3), z in [-1, 5]; the panel stands at z = 2.6
_ROOM = (
    ("x", -2.0, (-1.3, 1.3), (-1.0, 5.0), 0),
    ("x", 2.0, (-1.3, 1.3), (-1.0, 5.0), 1),
    ("y", -1.3, (-2.0, 2.0), (-1.0, 5.0), 2),
    ("y", 1.3, (-2.0, 2.0), (-1.0, 5.0), 3),
    ("z", 5.0, (-2.0, 2.0), (-1.3, 1.3), 4),
    ("z", 2.6, (-0.9, 0.3), (-0.6, 0.5), 5),
)
_AXES = {"x": 0, "y": 1, "z": 2}


def rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """World -> camera rotation for a camera turned by yaw (about y, to the right), pitch (about x, down) and roll
    (about z), in radians."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return (ry @ rx @ rz).T  # camera -> world is ry rx rz; world -> camera its transpose


@dataclass(frozen=True)
class SyntheticRoom:
    height: int = 120
    width: int = 160
    frames: int = 12
    step: float = 0.04  # metres forward a frame
    turn: float = 0.012  # radians of yaw a frame (and a third of it in pitch)
    fov: float = 1.1  # horizontal field of view, radians
    seed: int = 0

    @property
    def intrinsics(self) -> Intrinsics:
        f = self.width / 2 / np.tan(self.fov / 2)
        return Intrinsics(f, f, (self.width - 1) / 2, (self.height - 1) / 2, self.width, self.height)

    def pose(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(R world -> camera, camera centre in the world) of frame `index`."""
        r = rotation(self.turn * index, self.turn * index / 3)
        forward = r.T @ np.array([0.0, 0.0, 1.0])
        return r, np.array([0.0, 0.2, 0.0]) + self.step * index * forward

    def relative_pose(self, key: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) with x_index = R x_key + t: frame `index`'s camera seen from frame `key`'s."""
        rk, ck = self.pose(key)
        ri, ci = self.pose(index)
        r = ri @ rk.T
        return r, ri @ (ck - ci)

    @cached_property
    def _textures(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in _ROOM:
            texture = np.zeros((256, 256, 3), np.float32)
            for cells, weight in ((4, 0.4), (16, 0.35), (48, 0.25)):
                noise = rng.random((cells, cells, 3)).astype(np.float32)
                texture += weight * cv2.resize(noise, (256, 256), interpolation=cv2.INTER_CUBIC)
            out.append(np.clip(texture * 255, 0, 255))
        return out

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame `index`: (RGB uint8 [H, W, 3], depth float32 [H, W] metres along the optical axis)."""
        k = self.intrinsics
        r, c = self.pose(index)
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], -1)  # z = 1 in the camera
        world = rays @ r  # R^T ray for every pixel: directions in the world, still of unit camera depth
        depth = np.full(u.shape, np.inf)
        surface = np.full(u.shape, -1)
        hit = np.zeros(u.shape + (2,))
        for p, (axis, value, lo_hi_a, lo_hi_b, _) in enumerate(_ROOM):
            a = _AXES[axis]
            others = [i for i in range(3) if i != a]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (value - c[a]) / world[..., a]  # camera depth of the hit (rays have unit camera depth)
            point = c + t[..., None] * world
            inside = (t > 1e-6) & (t < depth)
            for o, (lo, hi) in zip(others, (lo_hi_a, lo_hi_b)):
                inside &= (point[..., o] >= lo) & (point[..., o] <= hi)
            depth = np.where(inside, t, depth)
            surface = np.where(inside, p, surface)
            hit = np.where(inside[..., None], point[..., others], hit)
        rgb = np.zeros(u.shape + (3,), np.float32)
        for p, texture in enumerate(self._textures):
            mask = surface == p
            if mask.any():  # 40 texels a metre, wrapping: texture coordinates from the hit point on the surface
                mx = (hit[..., 0] * 40.0 % 256).astype(np.float32)
                my = (hit[..., 1] * 40.0 % 256).astype(np.float32)
                sampled = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
                rgb[mask] = sampled[mask]
        depth = np.where(np.isfinite(depth), depth, 0.0)
        return np.clip(rgb, 0, 255).astype(np.uint8), depth.astype(np.float32)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(self.frames):
            yield self.frame(i)


class SyntheticRoomSource:
    """The room as a frame source (known depth as ground truth, its intrinsics in every frame's meta)."""

    live = False

    def __init__(self, room: SyntheticRoom):
        self.room = room
        self.name = f"room_{room.height}x{room.width}"
        self.fps = 10.0
        self.stats = SourceStats()

    def __len__(self) -> int:
        return self.room.frames

    def __iter__(self) -> Iterator[Frame]:
        for i, (rgb, depth) in enumerate(self.room):
            self.stats.read += 1
            yield Frame(rgb, i, f"{i + 1}", i / self.fps, depth, meta={"intrinsics": self.room.intrinsics})

    def close(self) -> None:
        pass
