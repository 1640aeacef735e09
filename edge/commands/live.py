"""`smoothdino live`: a camera (or a video replayed in real time) through the loop, with the window, the Foxglove
view, a recording and depth PNGs as asked. With `asynchronous` (the default) the network runs in its own thread and
every camera frame is output at once with the newest keyframe's depth carried to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smoothdino.core.console import adapter_state, console, random_weights_notice, untrained_adapter_notice
from smoothdino.edge.asynchronous import AsyncPipeline
from smoothdino.edge.fusion import fusion_enabled, fusion_info, parse_fusion
from smoothdino.edge.keyframes import EVERY_FRAME, KeyframePolicy
from smoothdino.edge.loop import StreamOutputs, StreamReport, claim_live_folder, run_stream
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.ros2 import Ros2Options
from smoothdino.edge.sinks import DISPLAY_RANGE
from smoothdino.edge.sources import open_source
from smoothdino.edge.sources.factory import is_synthetic, synthetic_source
from smoothdino.edge.web import parse_serve, serve_view

from .robotics import RobotOptions, choose_carry, live_address, live_sink, ros2_publisher


@dataclass
class LiveOptions:
    source: str = "0"
    headless: bool = False
    snapshots: Path = Path("snapshots")
    record: Path | None = None  # .mp4: the side-by-side video; .mcap: the Foxglove channels
    out: Path | None = None  # depth PNGs and metrics
    overwrite: bool = False  # replace an earlier run in `out`
    max_frames: int | None = None
    foxglove: str | None = None  # [HOST:]PORT
    asynchronous: bool = True
    keyframes: KeyframePolicy = EVERY_FRAME  # without `asynchronous`
    robot: RobotOptions = field(default_factory=RobotOptions)
    depth_range: tuple[float, float] = DISPLAY_RANGE  # metres the window's, video's and snapshots' colours span
    serve: str | None = None  # [HOST:]PORT: the browser view (edge.web); its snapshot button saves into `snapshots`
    ros2: Ros2Options | None = None  # --ros2 [dds|zenoh]: live ROS 2 topics (edge.ros2)
    carry: str | None = None  # shift | pose; None: pose with --intrinsics, else shift (edge.commands.robotics.choose_carry)
    fusion: str = "auto"  # auto | on | off: keyframes fused with the previous output (edge.fusion); auto: with the pose carry

    def check(self) -> tuple[str, int] | None:
        """Refusals before anything opens; returns the Foxglove address, if any."""
        address = live_address(self.foxglove)
        if is_synthetic(self.source):
            synthetic_source(self.source, self.max_frames)  # a spec it cannot honour: said before the engines load
        parse_fusion(self.fusion)
        parse_serve(self.serve)
        if self.ros2 is not None:
            self.ros2.check()
        if self.out is not None:
            claim_live_folder(self.out, self.overwrite)
        return address


def live(open_pipeline: Callable[[], FramePipeline], options: LiveOptions) -> StreamReport:
    """Run until the source ends, q, Ctrl-C or SIGTERM; prints the one-line summary and returns the report."""
    address = options.check()
    mcap = options.record is not None and options.record.suffix.lower() == ".mcap"
    # async: the worker thread opens the engines and is the only one to touch them (TensorRT contexts are per thread)
    carry, policy, intrinsics = choose_carry(options.carry, options.source, options.robot, options.keyframes,
                                             carries=options.asynchronous or None)
    fusion = fusion_enabled(options.fusion, carry)
    pipeline = AsyncPipeline(open_pipeline, carry=carry, fusion=fusion) if options.asynchronous else open_pipeline()
    if pipeline.random_weights:
        random_weights_notice()
    untrained_adapter_notice(pipeline.weights)
    # the network opens first (a camera opened first would drop frames while the engines load), so a camera that
    # does not open closes it again
    try:
        stream = open_source(options.source, live=True, limit=options.max_frames)
    except BaseException:
        pipeline.close()
        raise
    console.print(f"live: {pipeline.description} <- {options.source}, fusion {'on' if fusion else 'off'}  (Ctrl-C to stop)")
    with pipeline, serve_view(parse_serve(options.serve), snapshots=options.snapshots,
                              depth_range=options.depth_range, random_weights=pipeline.random_weights,
                              intrinsics=options.robot.explicit) as web:
        ros2 = ros2_publisher(options.ros2, options.robot, live=True)  # first: a bad endpoint opens nothing else
        viewer = live_sink(address, options.record if mcap else None, options.robot, pipeline.random_weights)
        if viewer is not None and viewer.url:
            console.print(f"live: Foxglove -> open connection {viewer.url}")
        if web is not None:
            console.print(f"live: browser view -> {web.announce}", soft_wrap=True)
        report = run_stream(pipeline, stream, StreamOutputs(
            folder=options.out, video=None if mcap else options.record, window=not options.headless, resume=False,
            sinks=([viewer] if viewer else []) + ([web.stream(stream)] if web else []) + ([ros2] if ros2 else []),
            snapshots=options.snapshots, depth_range=options.depth_range),
            run_info={"pipeline": pipeline.description, "random_weights": pipeline.random_weights,
                      **adapter_state(pipeline.weights), **(ros2.run_info() if ros2 else {}), **fusion_info(fusion)},
            keyframes=policy, carry=carry, intrinsics=intrinsics, fusion=fusion)
    record = options.record
    console.print(f"live: {report.computed} frames, {report.fps:.2f} FPS, {report.dropped} dropped by the camera thread"
                  + (f", network {report.keyframes} passes ({report.network_fps:.2f}/s)" if report.keyframes < report.computed else "")
                  + (f", {report.waiting} before the first keyframe" if report.waiting else "")
                  + (f", {report.reconnects} camera reconnects" if report.reconnects else "")
                  + (f", {report.nonfinite} frames with NaN/Inf depth (written as 0)" if report.nonfinite else "")
                  + (", interrupted" if report.interrupted else "") + (f"; video {record}" if record and not mcap else "")
                  + (f"; foxglove: {viewer.published} frames published, {viewer.dropped} dropped for the viewer"
                     + (f", recording {record}" if mcap else "") if viewer else "")
                  + (f"; {ros2.summary()}" if ros2 else ""))
    return report
