"""`smoothdino live`: a camera (or a video replayed in real time) through the loop, with the window, the Foxglove
view, a recording and depth PNGs as asked. With `asynchronous` (the default) the network runs in its own thread and
every camera frame is output at once with the newest keyframe's depth carried to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smoothdino.core.console import console, random_weights_notice
from smoothdino.edge.asynchronous import AsyncPipeline
from smoothdino.edge.keyframes import EVERY_FRAME, KeyframePolicy
from smoothdino.edge.loop import StreamOutputs, StreamReport, claim_live_folder, run_stream
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.sinks import DISPLAY_RANGE
from smoothdino.edge.sources import open_source

from .robotics import RobotOptions, live_address, live_sink


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

    def check(self) -> tuple[str, int] | None:
        """Refusals before anything opens; returns the Foxglove address, if any."""
        address = live_address(self.foxglove)
        if self.out is not None:
            claim_live_folder(self.out, self.overwrite)
        return address


def live(open_pipeline: Callable[[], FramePipeline], options: LiveOptions) -> StreamReport:
    """Run until the source ends, q, Ctrl-C or SIGTERM; prints the one-line summary and returns the report."""
    address = options.check()
    mcap = options.record is not None and options.record.suffix.lower() == ".mcap"
    # async: the worker thread opens the engines and is the only one to touch them (TensorRT contexts are per thread)
    pipeline = AsyncPipeline(open_pipeline) if options.asynchronous else open_pipeline()
    if pipeline.random_weights:
        random_weights_notice()
    stream = open_source(options.source, live=True, limit=options.max_frames)
    console.print(f"live: {pipeline.description} <- {options.source}  (Ctrl-C to stop)")
    with pipeline:
        viewer = live_sink(address, options.record if mcap else None, options.robot, pipeline.random_weights)
        if viewer is not None and viewer.url:
            console.print(f"live: Foxglove -> open connection {viewer.url}")
        report = run_stream(pipeline, stream, StreamOutputs(
            folder=options.out, video=None if mcap else options.record, window=not options.headless, resume=False,
            sinks=[viewer] if viewer else [], snapshots=options.snapshots, depth_range=options.depth_range),
            run_info={"pipeline": pipeline.description, "random_weights": pipeline.random_weights},
            keyframes=options.keyframes)
    record = options.record
    console.print(f"live: {report.computed} frames, {report.fps:.2f} FPS, {report.dropped} dropped by the camera thread"
                  + (f", network {report.keyframes} passes ({report.network_fps:.2f}/s)" if report.keyframes < report.computed else "")
                  + (f", {report.waiting} before the first keyframe" if report.waiting else "")
                  + (f", {report.reconnects} camera reconnects" if report.reconnects else "")
                  + (f", {report.nonfinite} frames with NaN/Inf depth (written as 0)" if report.nonfinite else "")
                  + (", interrupted" if report.interrupted else "") + (f"; video {record}" if record and not mcap else "")
                  + (f"; foxglove: {viewer.published} frames published, {viewer.dropped} dropped for the viewer"
                     + (f", recording {record}" if mcap else "") if viewer else ""))
    return report
