"""What `process` and `live` add for robots, from their options: a bag path (or a video file) read as a source,
the bag and PLY outputs beside the depth PNGs, the Foxglove live view / MCAP recording, live ROS 2 topics. The
modules doing the work import their optional libraries (rosbags, foxglove-sdk, cyclonedds, zenoh) only when one is
asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smoothdino.core.console import console
from smoothdino.core.errors import UserError
from smoothdino.edge.sinks.bag import BagSink
from smoothdino.edge.sources.bag import BagSource, camera_namespace, is_bag
from smoothdino.edge.sources.intrinsics import (
    IntrinsicsChoice,
    IntrinsicsText,
    parse_intrinsics,
)
from smoothdino.edge.sources.frame import VIDEO_SUFFIXES
from smoothdino.edge.sources.recorded import FolderSource, VideoSource

BAG_OUTPUT = "depth_bag"  # <out>/<sequence>/depth_bag/: a ROS 2 bag folder (metadata.yaml + depth_bag.mcap)
POINTS_OUTPUT = "points"


@dataclass
class RobotOptions:
    topic: str | None = None  # a bag's image topic
    intrinsics: str | None = None  # "fx,fy,cx,cy" in pixels of the input frames
    points: bool = False  # PLY a frame
    cloud_stride: int = 4

    def __post_init__(self):
        if self.cloud_stride < 1:
            raise UserError(f"--cloud-stride {self.cloud_stride}: give 1 (every pixel) or more")
        self.explicit: IntrinsicsText | None = parse_intrinsics(self.intrinsics) if self.intrinsics else None


def is_video(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() in VIDEO_SUFFIXES


def check_sequence(path: Path, options: RobotOptions) -> None:
    """A folder of frames, a video file or a bag; --topic only for a bag. A video OpenCV cannot open is refused
    here, before any work."""
    if is_bag(path):
        return
    if is_video(path):
        VideoSource(path).close()
    elif not Path(path).is_dir():
        raise UserError(f"{path}: not a folder, a video file ({', '.join(sorted(VIDEO_SUFFIXES))}) or a ROS bag; "
                        "give a video, a folder of images or NYUv2 frames (<i>.jpg + <i>.png depth), or a bag (a "
                        "folder with metadata.yaml, or a .mcap file)")
    if options.topic:
        raise UserError(f"{path}: --topic {options.topic} applies to ROS bags, and this is "
                        f"{'a video' if is_video(path) else 'a folder of frames'}")


def open_sequence(path: Path, options: RobotOptions, limit: int | None = None):
    """A bag, a video (its frames named by index: 000000, 000001, ...) or a folder of frames (named as the files)."""
    if is_bag(path):
        return BagSource(path, options.topic, limit=limit)
    if is_video(path):
        return VideoSource(path, limit=limit)
    return FolderSource(path, limit=limit)


def first_frame_size(path: Path, options: RobotOptions) -> tuple[int, int]:
    source = open_sequence(path, options)
    try:
        if isinstance(source, FolderSource):
            frames = (source.load(i) for i in range(len(source)))
        else:
            frames = iter(source)
        for frame in frames:
            if frame is not None:
                return frame.rgb.shape[:2]
    finally:
        source.close()
    raise UserError(f"{path}: no readable frame")


def sequence_intrinsics(source, options: RobotOptions) -> IntrinsicsChoice:
    """Where a sequence's camera comes from: --intrinsics, else its own (a bag's CameraInfo), else NYUv2's Kinect
    (exact for an NYUv2 folder; for anything else an assumption said once)."""
    return IntrinsicsChoice(options.explicit, str(getattr(source, "path", source.name)), nyu=_nyu(source))


def _nyu(source) -> bool:
    return isinstance(source, FolderSource) and any(depth for _, _, depth in source.frames)


def known_camera(source, options: RobotOptions) -> str | None:
    """Why the camera of `source` is known ("--intrinsics", "the bag's CameraInfo", "NYUv2's Kinect calibration"),
    or None: the pose carry needs it, a guess would be worse than the shift."""
    if options.explicit is not None:
        return "--intrinsics"
    if getattr(source, "camera_info", None) is not None:
        return "the bag's CameraInfo"
    if _nyu(source):
        return "NYUv2's Kinect calibration"
    return None


def choose_carry(word: str | None, source, options: RobotOptions, policy, carries: bool | None = None):
    """(carry, policy for it, IntrinsicsChoice or None) for one sequence or camera (`source`: its name for a camera).
    `word` None: pose where the camera is known, else shift with one notice saying why; "pose" without a known camera
    is one line. `auto`'s limits are the carry's own (edge.keyframes.AUTO_LIMITS). `carries`: whether any frame gets
    carried depth (default: unless every frame is a keyframe; live --async always carries)."""
    from smoothdino.core.console import notice
    from smoothdino.edge.keyframes import auto_policy, parse_carry

    name = source if isinstance(source, str) else source.name
    known = "--intrinsics" if isinstance(source, str) and options.explicit is not None else \
        None if isinstance(source, str) else known_camera(source, options)
    if word is not None and parse_carry(word) == "pose" and known is None:
        raise UserError(f"{name}: --carry pose needs the camera's intrinsics; give --intrinsics fx,fy,cx,cy (pixels of "
                        "the input frames), or use --carry shift")
    carry = parse_carry(word) if word is not None else "pose" if known else "shift"
    if word is None and known is None and (policy.mode != "every" if carries is None else carries):
        notice(f"{name}: no camera intrinsics, so depth between keyframes is carried by the 2-D shift; pass "
               "--intrinsics fx,fy,cx,cy for the 3-D pose carry (--carry pose)")
    if policy.mode == "auto":
        policy = auto_policy(carry)
    intrinsics = None
    if carry == "pose":
        intrinsics = IntrinsicsChoice(options.explicit, name) if isinstance(source, str) else \
            sequence_intrinsics(source, options)
    return carry, policy, intrinsics


def process_sinks(source, folder: Path, options: RobotOptions, random_weights: bool, ros2=None) -> list:
    """A bag in -> a bag out (<folder>/depth_bag); --points -> <folder>/points/<frame>.ply; --ros2 -> this
    sequence's frames on the run's ROS 2 publisher (`ros2`, from ros2_publisher)."""
    intrinsics = sequence_intrinsics(source, options)
    sinks = [ros2.sequence_sink(intrinsics)] if ros2 is not None else []
    if isinstance(source, BagSource):
        sinks.append(BagSink(Path(folder) / BAG_OUTPUT, camera_namespace(source.topic), intrinsics,
                             options.cloud_stride, random_weights))
    if options.points:
        from smoothdino.edge.sinks.pointcloud import PlySink

        sinks.append(PlySink(Path(folder) / POINTS_OUTPUT, intrinsics, options.cloud_stride, random_weights))
    return sinks


def live_address(foxglove: str | None) -> tuple[str, int] | None:
    """`--foxglove [HOST:]PORT` checked before anything opens."""
    from smoothdino.edge.sinks.foxglove import parse_address

    return parse_address(foxglove) if foxglove is not None else None


def live_sink(address: tuple[str, int] | None, record: Path | None, options: RobotOptions, random_weights: bool,
              per_camera: bool = False):
    """`live --foxglove [HOST:]PORT` and/or `--record run.mcap`: one FoxgloveSink serving and recording the same
    channels; None when neither was asked for. `per_camera` (several --source): one server and one recording for
    the run, each camera's channels from `sink.stream(camera, intrinsics)`."""
    if address is None and record is None:
        return None
    from smoothdino.edge.sinks.foxglove import FoxgloveSink

    return FoxgloveSink(address, record, intrinsics=IntrinsicsChoice(options.explicit, "live"),
                        cloud_stride=options.cloud_stride, random_weights=random_weights, per_camera=per_camera)


def ros2_publisher(ros2, options: RobotOptions, live: bool, cameras: tuple[str, ...] = ()):
    """`--ros2 [dds|zenoh]`: the run's ROS 2 publisher (edge.ros2), None when not asked for. Opened before the
    first frame, so a bad endpoint or a DDS that cannot start is one line before any work. `cameras` (several
    --source): one node with each camera's topics under `<namespace>/<camera>/`, each camera's frames through
    `publisher.stream(camera, intrinsics)`."""
    if ros2 is None:
        return None
    from smoothdino.edge.ros2 import Ros2Publisher

    publisher = Ros2Publisher(ros2.transport, namespace=ros2.namespace, domain=ros2.domain, connect=ros2.connect,
                              distro=ros2.distro, color=ros2.color, node=ros2.node,
                              intrinsics=IntrinsicsChoice(options.explicit, "ros2"), cloud_stride=options.cloud_stride,
                              live=live, cameras=tuple(cameras))
    console.print(f"{'live' if live else 'process'}: ROS 2 ({publisher.transport.status()}, {publisher.graph.distro}) "
                  f"-> node {publisher.graph.namespace.rstrip('/')}/{publisher.graph.node}: "
                  + ", ".join(publisher.topics), soft_wrap=True)
    return publisher
