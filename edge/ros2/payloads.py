"""One frame's ROS 2 messages as the bytes both transports send: CDR little-endian with its 4-byte header, built by
`rosbags` from the fields the bag writer uses (edge/sinks/ros_messages.py), so a bag and a live topic carry the same message.

    depth    sensor_msgs/Image 32FC1, metres, NaN = no depth (REP 118)
    info     sensor_msgs/CameraInfo of the depth image (the source's distortion when it has one)
    points   sensor_msgs/PointCloud2, x y z + packed rgb, every `cloud_stride`-th pixel each way
    color    sensor_msgs/Image rgb8, the input frame (on request)
    tf       tf2_msgs/TFMessage: the camera in its keyframe's frame (ros_messages.camera_transform: the identity
             on a keyframe, the pose carry's motion between them, nothing where the motion is unknown)

With several cameras (a snapshot's `camera`), the keys are the camera's (`front/depth`, topics.camera_key) and /tf
turns the other way round so that the cameras make one tree: parent the camera's optical frame
(`<camera>_optical_frame`, which the robot hangs under its base), child `<camera>_keyframe`, the keyframe's camera
seen from the camera now (the inverse of the camera in its keyframe). tf allows one parent a frame, so the optical
frame cannot be a child of both the robot's base and its keyframe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from smoothdino.edge.carry import CameraPose
from smoothdino.edge.sources.intrinsics import Intrinsics

from smoothdino.edge.sinks.pointcloud import depth_to_points
from .topics import Graph, camera_key
from smoothdino.edge.sinks.ros_messages import (
    TF_MESSAGE,
    camera_info_fields,
    depth_image_fields,
    keyframe_frame_id,
    point_fields,
    pointcloud2_fields,
)

Transform = tuple[tuple[float, float, float], tuple[float, float, float, float]]  # xyz, quaternion xyzw


@dataclass(frozen=True)
class FrameSnapshot:
    """What the publisher thread needs of one frame, taken on the loop's thread (no copies: the loop makes a new
    depth map and frame each time)."""

    depth: np.ndarray  # float32 [H, W] metres, 0 = no depth
    rgb: np.ndarray | None  # uint8 [H, W, 3] at the depth's size, or None
    stamp_ns: int  # capture time, ns since the UNIX epoch (ROS time)
    frame_id: str
    intrinsics: Intrinsics  # at the depth's size
    distortion: tuple[str, np.ndarray]  # CameraInfo's distortion_model and d
    transform: Transform | None = None  # the camera in its keyframe's frame (ros_messages.camera_transform)
    camera: str | None = None  # several cameras: whose frame it is (its topics' keys, /tf's direction)


def camera_keyframe_frame_id(camera: str) -> str:
    """With several cameras: the frame of a camera's last keyframe, a child of its optical frame on /tf."""
    return f"{camera}_keyframe"


def inverse(transform: Transform) -> Transform:
    """The inverse rigid transform: (R, t) -> (R^T, -R^T t), the quaternion conjugated."""
    (x, y, z), (qx, qy, qz, qw) = transform
    q = np.array([qx, qy, qz, qw], np.float64)
    q /= np.linalg.norm(q)
    qx, qy, qz, qw = q
    rotation = np.array([[1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
                         [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
                         [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)]])
    t = -rotation.T @ np.array([x, y, z], np.float64)
    return tuple(float(v) + 0.0 for v in t), tuple(float(v) + 0.0 for v in (-qx, -qy, -qz, qw))


def camera_pose(camera_in_keyframe: np.ndarray) -> CameraPose:
    """A 4x4 camera-in-keyframe matrix (smoothdino.DepthFrame.camera_in_keyframe) as edge.carry's CameraPose."""
    m = np.asarray(camera_in_keyframe, np.float64).reshape(4, 4)
    rotation = m[:3, :3].T  # CameraPose keeps keyframe -> camera
    return CameraPose(rotation=rotation, translation=-rotation @ m[:3, 3], inliers=0, points=0)


LIVE_AGE_S = 60.0  # a live frame's monotonic capture time is at most this old when it is published


def ros_time_ns(frame_meta: dict, timestamp: float, live: bool) -> int:
    """A frame's capture time on ROS's clock (the system clock, ns): a bag's header stamp; a live camera's
    monotonic capture time moved to the system clock; for anything else (recorded frames, whose timestamp is
    index / fps), now."""
    if "stamp_ns" in frame_meta:
        return int(frame_meta["stamp_ns"])
    age = time.monotonic() - timestamp
    if live and 0.0 <= age < LIVE_AGE_S:
        return time.time_ns() - int(age * 1e9)
    return time.time_ns()


class MessageBuilder:
    """Frame snapshot -> {topic key: CDR bytes} for the topics of `graph`."""

    def __init__(self, graph: Graph, cloud_stride: int = 4):
        self.graph = graph
        self.keys = {t.key for t in graph.topics}
        self.cloud_stride = max(1, int(cloud_stride))
        self.store = graph.typestore
        self.types = self.store.types

    def _cdr(self, msg) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msg.__msgtype__))

    def _header(self, stamp_ns: int, frame_id: str):
        t = self.types
        return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)

    def build(self, snap: FrameSnapshot) -> dict[str, bytes]:
        t = self.types
        header = self._header(snap.stamp_ns, snap.frame_id)
        height, width = snap.depth.shape[:2]
        key = lambda name: camera_key(snap.camera, name)  # noqa: E731 - `depth`, or `front/depth` of several
        out = {key("depth"): self._cdr(t["sensor_msgs/msg/Image"](header=header, **depth_image_fields(snap.depth)))}
        roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        out[key("info")] = self._cdr(t["sensor_msgs/msg/CameraInfo"](
            header=header, roi=roi, **camera_info_fields(snap.intrinsics, height, width, *snap.distortion)))
        cloud = depth_to_points(snap.depth, snap.intrinsics, self.cloud_stride, snap.rgb)
        fields = [t["sensor_msgs/msg/PointField"](**f) for f in point_fields()]
        out[key("points")] = self._cdr(t["sensor_msgs/msg/PointCloud2"](header=header, fields=fields,
                                                                        **pointcloud2_fields(cloud)))
        if key("color") in self.keys and snap.rgb is not None:
            rgb = np.ascontiguousarray(snap.rgb, np.uint8)
            out[key("color")] = self._cdr(t["sensor_msgs/msg/Image"](
                header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                data=rgb.reshape(-1)))
        if "tf" in self.keys and snap.transform is not None:
            out["tf"] = self._cdr(t[TF_MESSAGE](transforms=[self._transform(snap)]))
        return out

    def _transform(self, snap: FrameSnapshot):
        """The camera in its keyframe's frame, as the bag writer writes it: parent `<frame_id>_keyframe`, child
        `<frame_id>`. Of one of several cameras: parent its frame_id, child `<camera>_keyframe`, the inverse."""
        t = self.types
        if snap.camera is None:
            parent, child, motion = keyframe_frame_id(snap.frame_id), snap.frame_id, snap.transform
        else:
            parent, child, motion = snap.frame_id, camera_keyframe_frame_id(snap.camera), inverse(snap.transform)
        (x, y, z), (qx, qy, qz, qw) = motion
        transform = t["geometry_msgs/msg/Transform"](translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                                                     rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
        return t["geometry_msgs/msg/TransformStamped"](
            header=self._header(snap.stamp_ns, parent), child_frame_id=child, transform=transform)
