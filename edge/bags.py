"""ROS bags in and out, with `rosbags` (pure Python; no ROS installation needed).

BagSource reads the frames of one image topic (sensor_msgs/Image rgb8, bgr8, mono8 or CompressedImage jpeg,
png) from a ROS 2 bag folder or a single .mcap/.db3 file, with the intrinsics of the matching
sensor_msgs/CameraInfo. A message that cannot be read (corrupt, truncated JPEG, unknown encoding) is skipped
and counted, like a corrupt frame in a folder. BagSink writes what a ROS tool expects beside the depth PNGs: a
ROS 2 bag (MCAP storage) with the depth as 32FC1 metres, a CameraInfo and a subsampled PointCloud2, all on the
input's header stamps and frame_id."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.extras import missing_extra

from .intrinsics import Intrinsics, IntrinsicsChoice
from .pointcloud import POINT_STEP, POINTCLOUD2_FIELDS, depth_to_points
from .sources import Frame, SourceStats, decode_image

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
BAG_SUFFIXES = (".mcap", ".db3")
RAW_ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
MAX_SKIP_NOTICES = 5  # a bag of thousands of unreadable messages gets a few lines, then the count


def _rosbags():
    """The rosbags modules this file uses; a one-line error naming the extra when it is not installed."""
    try:
        from rosbags import highlevel, rosbag2, typesys
    except ModuleNotFoundError as err:
        raise missing_extra(err, "ROS bags") or err from None
    return highlevel, rosbag2, typesys


def is_bag(path: Path) -> bool:
    """A ROS 2 bag: a .mcap/.db3 file, or a folder with metadata.yaml or a .mcap/.db3 file in it."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in BAG_SUFFIXES
    return path.is_dir() and ((path / "metadata.yaml").is_file() or any(
        p.suffix.lower() in (".mcap", ".db3") for p in path.iterdir()))


def camera_namespace(topic: str) -> str:
    """'/camera/color/image_raw[/compressed]' -> '/camera/color' (where the depth topics go)."""
    topic = topic.rstrip("/")
    topic = topic.removesuffix("/compressed")
    return topic.rsplit("/", 1)[0]


def _storage_path(path: Path) -> Path:
    """rosbags reads a bag folder through its metadata.yaml; a folder holding only an .mcap/.db3 (copied
    without its metadata) is read through that file."""
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".mcap", ".db3"))
        if len(files) != 1:
            raise UserError(f"{path}: a bag folder needs metadata.yaml or exactly one .mcap/.db3 file "
                            f"(found {len(files)})")
        return files[0]
    return path


def depth_32fc1(depth: np.ndarray) -> np.ndarray:
    """Metres as ROS depth images carry them (32FC1, REP 118): float32, NaN where there is no depth (our 0)."""
    return np.where(depth > 0, depth, np.nan).astype("<f4")


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def intrinsics_from_camera_info(info) -> Intrinsics | None:
    """CameraInfo.k -> Intrinsics; None for an uncalibrated camera (k all zero)."""
    k = np.asarray(info.k, np.float64)
    if k.size != 9 or k[0] <= 0 or k[4] <= 0 or not info.width or not info.height:
        return None
    return Intrinsics(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(info.width), int(info.height))


def decode_image_message(msg, msgtype: str) -> np.ndarray | None:
    """sensor_msgs Image (rgb8, bgr8, mono8) or CompressedImage (jpeg, png) -> uint8 RGB [H,W,3]; None when
    the encoding is not one of those or the data does not fit the header."""
    if msgtype == COMPRESSED:
        fmt = msg.format.lower()
        jpeg, png = "jpeg" in fmt or "jpg" in fmt, "png" in fmt
        if "compresseddepth" in fmt or not (jpeg or png):
            return None
        try:
            bgr = decode_image(bytes(msg.data), jpeg)
        except cv2.error:  # an empty or mangled buffer
            return None
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    channels = RAW_ENCODINGS.get(msg.encoding.lower())
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if channels is None or height <= 0 or width <= 0 or step < width * channels or len(msg.data) < step * height:
        return None
    rows = np.asarray(msg.data, np.uint8)[: step * height].reshape(height, step)
    image = rows[:, : width * channels].reshape(height, width, channels)
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image[..., ::-1] if msg.encoding.lower() == "bgr8" else image)


class BagSource:
    """The frames of one image topic of a bag, in bag order. Without `topic`, the bag's only image topic;
    Frame.meta has the header stamp, frame_id, log time, topic and the CameraInfo's intrinsics."""

    live = False

    def __init__(self, path: Path, topic: str | None = None, limit: int | None = None):
        highlevel, _, typesys = _rosbags()
        self.path = Path(path)
        self.name = self.path.stem if self.path.is_file() else self.path.name
        self.stats = SourceStats()
        self.limit = limit
        try:
            self.reader = highlevel.AnyReader([_storage_path(self.path)],
                                              default_typestore=typesys.get_typestore(typesys.Stores.LATEST))
            self.reader.open()
        except (highlevel.AnyReaderError, FileNotFoundError, OSError, ValueError) as err:
            raise UserError(f"{self.path}: not a readable ROS bag ({str(err).strip() or type(err).__name__})") from None
        images = sorted({c.topic for c in self.reader.connections if c.msgtype in (IMAGE, COMPRESSED)})
        if topic is None:
            if len(images) != 1:
                others = ", ".join(sorted({c.topic for c in self.reader.connections})) or "none"
                self.reader.close()
                if images:
                    raise UserError(f"{self.path}: several image topics ({', '.join(images)}); pass --topic TOPIC")
                raise UserError(f"{self.path}: no sensor_msgs/Image or CompressedImage topic (topics: {others})")
            topic = images[0]
        elif topic not in images:
            self.reader.close()
            raise UserError(f"{self.path}: no image topic {topic} (image topics: {', '.join(images) or 'none'})")
        self.topic = topic
        self.image_connections = [c for c in self.reader.connections if c.topic == topic]
        self.info_connections = self._camera_info_connections()
        self.count = sum(c.msgcount for c in self.image_connections)
        duration = max(self.reader.duration, 1) / 1e9
        self.fps = (self.count - 1) / duration if self.count > 1 and self.reader.duration > 0 else 30.0
        self.camera_info = self._first_camera_info()

    def _camera_info_connections(self) -> list:
        infos = [c for c in self.reader.connections if c.msgtype == CAMERA_INFO]
        same = [c for c in infos if c.topic == f"{camera_namespace(self.topic)}/camera_info"]
        if same:
            return same
        return infos if len({c.topic for c in infos}) == 1 else []  # one camera: its info; several: none matches

    def _first_camera_info(self):
        if not self.info_connections:  # (no connections would mean every message to rosbags)
            return None
        for _, _, raw in self.reader.messages(self.info_connections):
            info = self._read_camera_info(raw)
            if info is not None:
                return info
        return None

    def _read_camera_info(self, raw: bytes):
        """A CameraInfo, or None for a corrupt one (ignored like a missing one)."""
        try:
            return self.reader.deserialize(raw, CAMERA_INFO)
        except Exception:  # noqa: BLE001 - any malformed CDR
            return None

    def __len__(self) -> int:
        return min(self.count, self.limit) if self.limit else self.count

    def _skip(self, name: str, why: str) -> None:
        self.stats.skipped += 1
        self.stats.skipped_names.append(name)
        if self.stats.skipped <= MAX_SKIP_NOTICES:
            more = "; further skips are only counted" if self.stats.skipped == MAX_SKIP_NOTICES else ""
            notice(f"{self.path}: {self.topic} message {name} {why}, skipped{more}")

    def __iter__(self) -> Iterator[Frame]:
        position = 0  # every message on the topic, readable or not: names stay stable when one is skipped
        info = self.camera_info
        for connection, log_time, raw in self.reader.messages([*self.image_connections, *self.info_connections]):
            if connection.msgtype == CAMERA_INFO:
                info = self._read_camera_info(raw) or info  # a corrupt one: keep the last good one
                continue
            if self.limit is not None and position >= self.limit:
                break
            name = f"{position:06d}"
            position += 1
            try:
                msg = self.reader.deserialize(raw, connection.msgtype)
            except Exception:  # noqa: BLE001 - any malformed CDR (SerdeError, struct/index errors) is a corrupt message
                self._skip(name, "is corrupt (cannot be deserialized)")
                continue
            rgb = decode_image_message(msg, connection.msgtype)
            if rgb is None:
                what = (f"format {msg.format!r}" if connection.msgtype == COMPRESSED else f"encoding {msg.encoding!r}")
                self._skip(name, f"has an unsupported or corrupt image ({what}; read: rgb8, bgr8, mono8, jpeg, png)")
                continue
            self.stats.read += 1
            stamp_ns = _stamp_ns(msg.header.stamp)
            yield Frame(rgb, position - 1, name, stamp_ns / 1e9, meta={
                "stamp_ns": stamp_ns, "frame_id": msg.header.frame_id, "log_time_ns": int(log_time),
                "topic": self.topic, "camera_info": info,
                "intrinsics": intrinsics_from_camera_info(info) if info is not None else None})

    def close(self) -> None:
        if self.reader.stack is not None:
            self.reader.close()


def _time(typestore, stamp_ns: int):
    return typestore.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


class BagSink:
    """A FrameSink writing a ROS 2 bag (MCAP storage, rosbag2 metadata) at `path` (a folder, as `ros2 bag`
    writes them): <namespace>/depth (Image 32FC1, metres, NaN where there is no depth, per REP 118),
    <namespace>/depth/camera_info and <namespace>/depth/points (PointCloud2 x y z rgb, every `cloud_stride`-th
    pixel). Written in a hidden folder beside `path` and moved into place when the stream ends; the earlier bag
    there is removed only once the new one is in place, and kept when a resumed run stopped short of it."""

    def __init__(self, path: Path, namespace: str, intrinsics: IntrinsicsChoice, cloud_stride: int = 4,
                 random_weights: bool = False):
        _, rosbag2, typesys = _rosbags()
        self.path = Path(path)
        self.namespace = namespace.rstrip("/")
        self.intrinsics = intrinsics
        self.cloud_stride = max(1, int(cloud_stride))
        self.typestore = typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)  # JetPack 6 ships Ubuntu 22.04: Humble
        self.staging = self.path.parent / f".{self.path.name}.{os.getpid()}.tmp"
        self._restore_previous()
        if self.staging.exists():
            shutil.rmtree(self.staging)
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
        metres = depth_32fc1(depth)
        self._put("depth", types[IMAGE](header=header, height=height, width=width, encoding="32FC1", is_bigendian=0,
                                       step=width * 4, data=metres.view(np.uint8).reshape(-1)), log_time)
        k = self.intrinsics.for_frame(frame.meta, height, width)
        source_info = frame.meta.get("camera_info") if self.intrinsics.explicit is None else None
        distortion = (source_info.distortion_model, np.asarray(source_info.d, np.float64)) if source_info is not None \
            else ("plumb_bob", np.zeros(5))
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        self._put("info", types[CAMERA_INFO](
            header=header, height=height, width=width, distortion_model=distortion[0], d=distortion[1],
            k=np.array(k.k), r=np.eye(3).reshape(-1), p=np.array(k.p), binning_x=0, binning_y=0, roi=roi), log_time)
        rgb = frame.rgb if frame.rgb.shape[:2] == (height, width) else None
        cloud = depth_to_points(depth, k, self.cloud_stride, rgb)
        fields = [types["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=t, count=1) for n, o, t in POINTCLOUD2_FIELDS]
        self._put("points", types[POINTCLOUD2](
            header=header, height=1, width=len(cloud), fields=fields, is_bigendian=False, point_step=POINT_STEP,
            row_step=POINT_STEP * len(cloud), data=cloud.packed(alpha=0).view(np.uint8), is_dense=True), log_time)
        self.frames += 1
        self.reused += result is None

    @property
    def _aside(self) -> str:
        return f"{self.path.name}.previous"

    def _restore_previous(self) -> None:
        """A run killed (SIGKILL, power) between moving the old bag aside and the new one in left no bag at `path`:
        the old one, whole, is moved back."""
        if self.path.exists():
            return
        for aside in sorted(self.path.parent.glob(f".{self.path.name}.*.tmp/{self._aside}")):
            os.replace(aside, self.path)
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
                os.replace(self.path, self.staging / self._aside)
            os.replace(self.staging / self.path.name, self.path)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
