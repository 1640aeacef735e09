"""ROS bags in, with `rosbags` (pure Python; no ROS installation needed).

BagSource reads the frames of one image topic (sensor_msgs/Image rgb8, bgr8, mono8 or CompressedImage jpeg,
png) from a ROS 2 bag folder or a single .mcap/.db3 file, with the intrinsics of the matching
sensor_msgs/CameraInfo. A message that cannot be read (corrupt, truncated JPEG, unknown encoding) is skipped
and counted, like a corrupt frame in a folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.extras import missing_extra

from .frame import Frame, SourceStats, decode_image
from .intrinsics import Intrinsics

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
