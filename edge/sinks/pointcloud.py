"""Metric depth + intrinsics -> 3-D points, in the camera's optical frame (x right, y down, z forward: the
frame ROS images are stamped with), and the three ways they leave: PLY files, sensor_msgs/PointCloud2 and
Foxglove's PointCloud. One packed layout serves both messages, so a point is converted once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from smoothdino.core.files import atomic_write_bytes
from smoothdino.edge.sources.frame import Frame
from smoothdino.edge.sources.intrinsics import Intrinsics, IntrinsicsChoice

# 16 bytes a point: x, y, z float32, then colour as B, G, R, A bytes. Read as one little-endian float32 at
# offset 12, the colour bytes are PCL/ROS's packed "rgb" (0x00RRGGBB, alpha byte 0); Foxglove reads the
# same bytes as separate red/green/blue/alpha fields.
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("b", "u1"), ("g", "u1"), ("r", "u1"), ("a", "u1")])
POINT_STEP = POINT_DTYPE.itemsize
FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
POINTCLOUD2_FIELDS = (("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("rgb", 12, FLOAT32))
FOXGLOVE_FIELDS = (("x", 0, "Float32"), ("y", 4, "Float32"), ("z", 8, "Float32"),
                   ("blue", 12, "Uint8"), ("green", 13, "Uint8"), ("red", 14, "Uint8"), ("alpha", 15, "Uint8"))


@dataclass
class PointCloud:
    xyz: np.ndarray  # float32 [N,3], metres, camera optical frame
    rgb: np.ndarray | None  # uint8 [N,3] colour of each point's pixel, when the frame was given
    pixels: np.ndarray  # int [N,2] (row, column) each point came from

    def __len__(self) -> int:
        return len(self.xyz)

    def packed(self, alpha: int = 0) -> np.ndarray:
        """The points in POINT_DTYPE (alpha 0 for ROS's packed rgb, 255 for Foxglove's RGBA)."""
        out = np.zeros(len(self), POINT_DTYPE)
        out["x"], out["y"], out["z"] = self.xyz[:, 0], self.xyz[:, 1], self.xyz[:, 2]
        if self.rgb is not None:
            out["r"], out["g"], out["b"] = self.rgb[:, 0], self.rgb[:, 1], self.rgb[:, 2]
        else:
            out["r"] = out["g"] = out["b"] = 255
        out["a"] = alpha
        return out


def depth_to_points(depth: np.ndarray, intrinsics: Intrinsics, stride: int = 1, rgb: np.ndarray | None = None) -> PointCloud:
    """Every `stride`-th pixel in both directions (from pixel 0,0) with a valid depth (finite, > 0) becomes
    X = (u - cx) z / fx, Y = (v - cy) z / fy, Z = z, with intrinsics scaled to the depth map's size."""
    stride = max(1, int(stride))
    height, width = depth.shape[:2]
    k = intrinsics.scaled(height, width)
    rows, cols = np.mgrid[0:height:stride, 0:width:stride]
    z = np.asarray(depth, np.float64)[::stride, ::stride]
    valid = np.isfinite(z) & (z > 0)
    rows, cols, z = rows[valid], cols[valid], z[valid]
    xyz = np.stack([(cols - k.cx) * z / k.fx, (rows - k.cy) * z / k.fy, z], axis=1).astype(np.float32)
    colours = None
    if rgb is not None:
        if rgb.shape[:2] != (height, width):
            raise ValueError(f"colour frame {rgb.shape[:2]} and depth {depth.shape[:2]} differ in size")
        colours = np.ascontiguousarray(rgb[rows, cols, :3])
    return PointCloud(xyz, colours, np.stack([rows, cols], axis=1))


PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def ply_bytes(cloud: PointCloud, comments: tuple[str, ...] = ()) -> bytes:
    """Binary little-endian PLY, x y z float + red green blue uchar per vertex (MeshLab, CloudCompare, Open3D)."""
    vertices = np.zeros(len(cloud), PLY_DTYPE)
    vertices["x"], vertices["y"], vertices["z"] = cloud.xyz[:, 0], cloud.xyz[:, 1], cloud.xyz[:, 2]
    if cloud.rgb is not None:
        vertices["red"], vertices["green"], vertices["blue"] = cloud.rgb[:, 0], cloud.rgb[:, 1], cloud.rgb[:, 2]
    header = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments),
              f"element vertex {len(cloud)}", *(f"property {t} {n}" for t, n in (
                  ("float", "x"), ("float", "y"), ("float", "z"), ("uchar", "red"), ("uchar", "green"), ("uchar", "blue"))),
              "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes()


class PlySink:
    """`process --points`: <folder>/<frame name>.ply, one coloured point cloud a frame (a FrameSink)."""

    def __init__(self, folder: Path, intrinsics: IntrinsicsChoice, stride: int = 1, random_weights: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.intrinsics = intrinsics
        self.stride = stride
        self.comments = ("smoothdino depth, camera optical frame (x right, y down, z forward), metres",
                         *(("RANDOM WEIGHTS - not metric",) if random_weights else ()))
        self.written = 0

    def write(self, frame: Frame, depth: np.ndarray, result, canvas) -> None:
        path = self.folder / f"{frame.name}.ply"
        if result is None and path.is_file():  # resumed frame, its cloud already written
            return
        k = self.intrinsics.for_frame(frame.meta, *depth.shape[:2])
        rgb = frame.rgb if frame.rgb.shape[:2] == depth.shape[:2] else None
        cloud = depth_to_points(depth, k, self.stride, rgb)
        atomic_write_bytes(path, ply_bytes(cloud, (*self.comments, f"intrinsics {k.text()}")))
        self.written += 1

    def close(self) -> None:
        pass
