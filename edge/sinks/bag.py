"""ROS bags out: what a ROS tool expects beside the depth PNGs, a ROS 2 bag (MCAP storage) with the depth as 32FC1
metres, a CameraInfo and a subsampled PointCloud2, all on the input's header stamps and frame_id."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.files import DISK_FULL, DiskFull, durable_replace, temporary_path
from smoothdino.edge.sources.bag import CAMERA_INFO, IMAGE, POINTCLOUD2, _rosbags
from smoothdino.edge.sources.frame import Frame
from smoothdino.edge.sources.intrinsics import IntrinsicsChoice

from .pointcloud import depth_to_points
from .ros_messages import (
    TF_MESSAGE,
    camera_info_fields,
    camera_transform,
    depth_32fc1,
    depth_image_fields,
    keyframe_frame_id,
    point_fields,
    pointcloud2_fields,
    source_distortion,
)

__all__ = ["BagSink", "depth_32fc1"]  # depth_32fc1 lives in ros_messages (shared with examples/ros2); kept here too


def _time(typestore, stamp_ns: int):
    return typestore.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


class BagSink:
    """A FrameSink writing a ROS 2 bag (MCAP storage, rosbag2 metadata) at `path` (a folder, as `ros2 bag`
    writes them): <namespace>/depth (Image 32FC1, metres, NaN where there is no depth, per REP 118),
    <namespace>/depth/camera_info and <namespace>/depth/points (PointCloud2 x y z rgb, every `cloud_stride`-th
    pixel). Written in a hidden folder beside `path` (core.files.temporary_path) and moved into place, synced, when
    the stream ends; the earlier bag there is moved aside (`.<name>.previous`, never a temporary name: a stale
    temporary is removed at the next start) and removed only once the new one is in place, and kept when a resumed
    run stopped short of it."""

    def __init__(self, path: Path, namespace: str, intrinsics: IntrinsicsChoice, cloud_stride: int = 4,
                 random_weights: bool = False):
        _, rosbag2, typesys = _rosbags()
        self.path = Path(path)
        self.namespace = namespace.rstrip("/")
        self.intrinsics = intrinsics
        self.cloud_stride = max(1, int(cloud_stride))
        self.typestore = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)  # JetPack 6 ships Ubuntu 22.04: Humble
        self.staging = temporary_path(self.path)
        self._restore_previous()
        self.staging.mkdir(parents=True)
        # metadata format 8: the oldest rosbags writes, so the widest range of ROS 2 releases reads it
        self.writer = rosbag2.Writer(self.staging / self.path.name, version=8, storage_plugin=rosbag2.StoragePlugin.MCAP)
        if random_weights:
            self.writer.set_custom_data("smoothdino", "RANDOM WEIGHTS - depth values are not metric")
        self.writer.open()
        self.topics = {"depth": f"{self.namespace}/depth", "info": f"{self.namespace}/depth/camera_info",
                       "points": f"{self.namespace}/depth/points"}
        self.connections = {
            "depth": self.writer.add_connection(self.topics["depth"], IMAGE, typestore=self.typestore),
            "info": self.writer.add_connection(self.topics["info"], CAMERA_INFO, typestore=self.typestore),
            "points": self.writer.add_connection(self.topics["points"], POINTCLOUD2, typestore=self.typestore),
            # the camera's motion since the keyframe (pose carry): camera frame in the keyframe's frame
            "tf": self.writer.add_connection("/tf", TF_MESSAGE, typestore=self.typestore),
        }
        self.frames = 0
        self.reused = 0  # frames read back from an earlier run's PNGs (a resumed run)

    def _put(self, key: str, msg, log_time: int) -> None:
        self.writer.write(self.connections[key], log_time, self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def write(self, frame: Frame, depth: np.ndarray, result, canvas) -> None:
        types = self.typestore.types
        stamp_ns = int(frame.meta.get("stamp_ns", round(frame.timestamp * 1e9)))
        log_time = int(frame.meta.get("log_time_ns", stamp_ns))
        header = types["std_msgs/msg/Header"](stamp=_time(self.typestore, stamp_ns),
                                              frame_id=frame.meta.get("frame_id", "camera"))
        height, width = depth.shape[:2]
        self._put("depth", types[IMAGE](header=header, **depth_image_fields(depth)), log_time)
        k = self.intrinsics.for_frame(frame.meta, height, width)
        distortion = source_distortion(self.intrinsics, frame.meta)
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        self._put("info", types[CAMERA_INFO](header=header, roi=roi, **camera_info_fields(k, height, width, *distortion)),
                  log_time)
        rgb = frame.rgb if frame.rgb.shape[:2] == (height, width) else None
        cloud = depth_to_points(depth, k, self.cloud_stride, rgb)
        fields = [types["sensor_msgs/msg/PointField"](**f) for f in point_fields()]
        self._put("points", types[POINTCLOUD2](header=header, fields=fields, **pointcloud2_fields(cloud)), log_time)
        moved = camera_transform(result)
        if moved is not None:
            (x, y, z), (qx, qy, qz, qw) = moved
            transform = types["geometry_msgs/msg/Transform"](
                translation=types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
            parent = types["std_msgs/msg/Header"](stamp=header.stamp, frame_id=keyframe_frame_id(header.frame_id))
            stamped = types["geometry_msgs/msg/TransformStamped"](header=parent, child_frame_id=header.frame_id,
                                                                  transform=transform)
            self._put("tf", types[TF_MESSAGE](transforms=[stamped]), log_time)
        self.frames += 1
        self.reused += result is None

    @property
    def _aside(self) -> Path:
        return self.path.parent / f".{self.path.name}.previous"

    def _restore_previous(self) -> None:
        """A run killed (SIGKILL, power) between moving the old bag aside and the new one in left no bag at `path`:
        the old one, whole, is moved back (also from inside an older version's staging folder); killed just after
        the new one went in, the old one is removed."""
        if self.path.exists():
            shutil.rmtree(self._aside, ignore_errors=True)
            return
        older = sorted(self.path.parent.glob(f".{self.path.name}.*.tmp/{self.path.name}.previous"))
        for aside in [self._aside, *older]:
            if aside.exists():
                os.replace(aside, self.path)
                if aside != self._aside:
                    shutil.rmtree(aside.parent, ignore_errors=True)
                return

    def _frames_in(self, path: Path) -> int:
        """Depth frames in the bag at `path`; 0 for none, another camera's, or one that cannot be read."""
        _, rosbag2, _ = _rosbags()
        try:
            with rosbag2.Reader(path) as reader:
                return sum(c.msgcount for c in reader.connections if c.topic == self.topics["depth"])
        except Exception:  # noqa: BLE001 - a damaged bag is replaced, whatever rosbags says about it
            return 0

    def close(self) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            writer.close()
            self._restore_previous()
            earlier = self._frames_in(self.path) if self.path.exists() else 0
            # A resumed run writes every frame again (read back from the PNGs), so a shorter bag means it was
            # stopped part way: the earlier, longer one stays. (--no-resume rewrote the PNGs: its bag replaces.)
            if self.frames < earlier and (self.reused or not self.frames):
                notice(f"{self.path}: kept the bag already there ({earlier} frames; this run stopped after "
                       f"{self.frames}); run the same command to the end to rewrite it")
                return
            # the earlier bag is moved aside, not deleted, until the new one is in place: never no bag, never half
            if self.path.exists():
                os.replace(self.path, self._aside)
            try:
                durable_replace(self.staging / self.path.name, self.path)
            except OSError as err:  # the new bag is not in place: the earlier one goes back
                self._restore_previous()
                if err.errno in DISK_FULL:
                    raise DiskFull(self.path, errno=err.errno) from None
                raise
            shutil.rmtree(self._aside, ignore_errors=True)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
