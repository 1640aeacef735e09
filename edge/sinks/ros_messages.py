"""sensor_msgs fields from numpy, one conversion for every ROS output: the bag writer (bag.BagSink, through
`rosbags`) and a ROS 2 node (examples/ros2/depth_node.py, through rclpy) build their Image (32FC1 depth),
CameraInfo and PointCloud2 messages from these dicts, so what a bag holds and what a node publishes agree.

Each function returns the message's plain fields (no header, no nested messages): numpy arrays for the array
fields (what `rosbags` takes), Python ints, bools and strings for the rest. `for_rclpy(fields)` turns the arrays
into `array.array`, which rclpy's generated setters take without a per-element check."""

from __future__ import annotations

import array

import numpy as np
from smoothdino.edge.sources.intrinsics import Intrinsics, IntrinsicsChoice

from .pointcloud import POINT_STEP, POINTCLOUD2_FIELDS, PointCloud


def depth_32fc1(depth: np.ndarray) -> np.ndarray:
    """Metres as ROS depth images carry them (32FC1, REP 118): float32, NaN where there is no depth (our 0)."""
    return np.where(depth > 0, depth, np.nan).astype("<f4")


def depth_image_fields(depth: np.ndarray) -> dict:
    """sensor_msgs/Image fields of a depth map in metres: 32FC1, little-endian, NaN = no depth."""
    height, width = (int(v) for v in depth.shape[:2])
    metres = np.ascontiguousarray(depth_32fc1(depth))
    return {"height": height, "width": width, "encoding": "32FC1", "is_bigendian": 0, "step": width * 4,
            "data": metres.view(np.uint8).reshape(-1)}


def camera_info_fields(intrinsics: Intrinsics, height: int, width: int, distortion_model: str = "plumb_bob",
                       d: np.ndarray | None = None) -> dict:
    """sensor_msgs/CameraInfo fields (all but header and roi) of a pinhole camera at `height` x `width` (the
    intrinsics are scaled to that size); no distortion unless `d` is given (depth maps are not rectified by us)."""
    k = intrinsics.scaled(int(height), int(width))
    return {"height": int(height), "width": int(width), "distortion_model": distortion_model,
            "d": np.zeros(5) if d is None else np.asarray(d, np.float64).reshape(-1),
            "k": np.array(k.k, np.float64), "r": np.eye(3).reshape(-1), "p": np.array(k.p, np.float64),
            "binning_x": 0, "binning_y": 0}


def source_distortion(intrinsics: IntrinsicsChoice, frame_meta: dict) -> tuple[str, np.ndarray]:
    """(distortion_model, d) of a frame's CameraInfo: the source's own (a bag's camera_info) unless the intrinsics
    were given explicitly; else plumb_bob with no distortion."""
    info = frame_meta.get("camera_info") if intrinsics.explicit is None else None
    if info is None:
        return "plumb_bob", np.zeros(5)
    return info.distortion_model, np.asarray(info.d, np.float64)


def point_fields() -> list[dict]:
    """sensor_msgs/PointField fields of our PointCloud2 layout: x, y, z float32 and packed rgb."""
    return [{"name": name, "offset": offset, "datatype": datatype, "count": 1}
            for name, offset, datatype in POINTCLOUD2_FIELDS]


def pointcloud2_fields(cloud: PointCloud) -> dict:
    """sensor_msgs/PointCloud2 fields (all but header and `fields`, see point_fields()): one row of points,
    16 bytes each, every point valid."""
    return {"height": 1, "width": len(cloud), "is_bigendian": False, "point_step": POINT_STEP,
            "row_step": POINT_STEP * len(cloud), "data": cloud.packed(alpha=0).view(np.uint8), "is_dense": True}


TF_MESSAGE = "tf2_msgs/msg/TFMessage"  # what /tf carries: a list of geometry_msgs/TransformStamped


def keyframe_frame_id(camera_frame_id: str) -> str:
    """The frame the camera's pose is given in: the last keyframe's camera (re-anchored at every keyframe)."""
    return f"{camera_frame_id}_keyframe"


def camera_transform(result) -> tuple[tuple[float, float, float], tuple[float, float, float, float]] | None:
    """(translation xyz, rotation quaternion xyzw) of the camera in its keyframe's frame (edge.carry.CameraPose), the
    identity on a keyframe, None where the motion is unknown (a shift carry, no depth, a frame read back)."""
    if result is None:
        return None
    if result.carry == "network":
        return (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)
    if result.pose is None:
        return None
    pose = result.pose.camera_in_keyframe()
    return tuple(float(v) for v in pose[:3, 3]), result.pose.quaternion_xyzw()


def for_rclpy(fields: dict) -> dict:
    """The same fields as rclpy's messages take them: uint8 arrays -> array('B'), float arrays -> array('d')."""
    out = {}
    for key, value in fields.items():
        if isinstance(value, np.ndarray):
            if value.dtype == np.uint8:
                value = array.array("B", np.ascontiguousarray(value).tobytes())
            else:
                value = array.array("d", np.ascontiguousarray(value, np.float64).tobytes())
        out[key] = value
    return out
