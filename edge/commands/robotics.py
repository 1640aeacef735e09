"""What `process` and `live` add for robots, from their options: a bag path read as a source, the bag and PLY
outputs beside the depth PNGs, the Foxglove live view / MCAP recording. The modules doing the work import
their optional libraries (rosbags, foxglove-sdk) only when one of these is asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smoothdino.core.errors import UserError
from smoothdino.edge.sinks.bag import BagSink
from smoothdino.edge.sources.bag import BagSource, camera_namespace, is_bag
from smoothdino.edge.sources.intrinsics import (
    IntrinsicsChoice,
    IntrinsicsText,
    parse_intrinsics,
)
from smoothdino.edge.sources.recorded import FolderSource

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


def check_sequence(path: Path, options: RobotOptions) -> None:
    """A folder of frames or a bag; --topic only for a bag."""
    if is_bag(path):
        return
    if not Path(path).is_dir():
        raise UserError(f"{path}: not a folder or a ROS bag; give NYUv2 sequence folders such as "
                        "nyu2_sample/bedroom_0004_out, or a bag (a folder with metadata.yaml, or a .mcap file)")
    if options.topic:
        raise UserError(f"{path}: --topic {options.topic} applies to ROS bags, and this is a folder of frames")


def open_sequence(path: Path, options: RobotOptions, limit: int | None = None):
    return BagSource(path, options.topic, limit=limit) if is_bag(path) else FolderSource(path, limit=limit)


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


def process_sinks(source, folder: Path, options: RobotOptions, random_weights: bool) -> list:
    """A bag in -> a bag out (<folder>/depth_bag); --points -> <folder>/points/<frame>.ply."""
    nyu = isinstance(source, FolderSource) and any(depth for _, _, depth in source.frames)
    intrinsics = IntrinsicsChoice(options.explicit, str(getattr(source, "path", source.name)), nyu=nyu)
    sinks = []
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


def live_sink(address: tuple[str, int] | None, record: Path | None, options: RobotOptions, random_weights: bool):
    """`live --foxglove [HOST:]PORT` and/or `--record run.mcap`: one FoxgloveSink serving and recording the same
    channels; None when neither was asked for."""
    if address is None and record is None:
        return None
    from smoothdino.edge.sinks.foxglove import FoxgloveSink

    return FoxgloveSink(address, record, intrinsics=IntrinsicsChoice(options.explicit, "live"),
                        cloud_stride=options.cloud_stride, random_weights=random_weights)
