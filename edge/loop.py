"""The loop: frames from a source, through the pipeline, into the sinks. Used by `process` (recorded
sequences, resumable) and `live` (cameras, real time). Ctrl-C, a closed window, or a source that ends
stop it cleanly; outputs are flushed in every case."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from smoothdino.core.console import notice, untrained_adapter
from smoothdino.core.errors import UserError
from smoothdino.core.files import DiskFull, SpaceReserve, remove_stale_temporaries
from smoothdino.core.images import resize_depth, resize_rgb
from smoothdino.core.signals import (
    held_signals,
    interruptible,
    termination_as_interrupt,
)

from .asynchronous import AsyncPipeline
from .carry import camera_matrix
from .flicker import FlickerMeter
from .keyframes import EVERY_FRAME, KeyframePolicy, KeyframeSteps
from .pipeline import FramePipeline, FrameResult
from .run_identity import RunIdentity, claim_run_folder
from .sinks import (
    DISPLAY_RANGE,
    DepthPngSink,
    MetricsSink,
    VideoSink,
    WindowSink,
    side_by_side,
)
from .sinks.keyframe_state import KeyframeStates
from .sinks.png import as_written
from .sinks.view import overlay_lines
from .sources import Frame
from .sources.intrinsics import IntrinsicsChoice


@dataclass
class StreamReport:
    name: str
    computed: int = 0  # frames run through the pipeline
    reused: int = 0  # frames already written by an earlier run (resume)
    skipped: int = 0  # missing or corrupt input frames
    dropped: int = 0  # live frames the loop had no time for
    reconnects: int = 0  # times a lost camera came back
    nonfinite: int = 0  # frames whose depth had NaN/Inf pixels (written as 0 = no depth, flagged in metrics)
    keyframes: int = 0  # network passes (with keyframes, the other frames carry a keyframe's depth)
    waiting: int = 0  # async: frames before the first keyframe was ready (no depth to show)
    scene_cuts: int = 0
    interrupted: bool = False
    wall_seconds: float = 0.0
    summary: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Output frames a second."""
        return self.computed / self.wall_seconds if self.wall_seconds and self.computed else 0.0

    @property
    def network_fps(self) -> float:
        """Network passes a second (= fps when every frame is a keyframe)."""
        return self.keyframes / self.wall_seconds if self.wall_seconds and self.keyframes else 0.0


class FrameSink(Protocol):
    """Anything else that takes every frame's depth: a bag writer, a live viewer server, point clouds.
    `result` is None for a frame read back from an earlier run (resume); `canvas` is the RGB | depth view
    when the loop drew one (video or window), else None."""

    def write(self, frame: Frame, depth: np.ndarray, result: FrameResult | None, canvas: np.ndarray | None) -> None: ...

    def close(self) -> None: ...


@dataclass
class StreamOutputs:
    folder: Path | None = None  # depth PNGs in folder/depth, metrics.json/csv in folder
    video: Path | None = None
    window: bool = False
    snapshots: Path = Path("snapshots")  # where the window's `s` key saves RGB + depth
    resume: bool = True
    sinks: list[FrameSink] = field(default_factory=list)  # more outputs, closed when the stream ends
    depth_range: tuple[float, float] = DISPLAY_RANGE  # metres the colour map spans (video, window, snapshots)
    # process --ray (edge.commands.chunks): frames before a chunk, only replayed to rebuild the keyframe state (never
    # output or counted), and the chunk's own folder for metrics.json/csv (its rows, joined later by the driver)
    primed: frozenset[str] = frozenset()
    metrics_folder: Path | None = None
    # process --ray: frame name -> keyframe?, the decisions of one unbroken run (the driver's schedule), forced on
    # the primed frames and the chunk's own; None: the policy decides
    schedule: dict[str, bool] | None = None


LIVE_OUTPUTS = ("depth", "metrics.json", "metrics.csv", ".smoothdino-export")


def claim_live_folder(folder: Path, overwrite: bool) -> None:
    """A live run never resumes (a camera cannot replay its frames) and never mixes with an earlier run's files:
    a folder that holds one is refused in one line, or emptied of our outputs with `overwrite`."""
    folder = Path(folder)
    earlier = [folder / name for name in LIVE_OUTPUTS if (folder / name).exists()]
    if not earlier:
        return
    if not overwrite:
        raise UserError(f"{folder}: holds an earlier run ({earlier[0].name}); choose another --out, or pass "
                        "--overwrite to replace it")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def fit_frame(rgb: np.ndarray, size: tuple[int, int], resize: bool, source: str, pipeline: FramePipeline) -> np.ndarray:
    """Frames of another size than the export: resized (area) or refused in one line."""
    if rgb.shape[:2] != tuple(size) and not resize:
        pipeline.refuse_size(rgb.shape[0], rgb.shape[1])
    return resize_rgb(rgb, size)


class ResumableSteps:
    """One pipeline over one sequence, resumable, behind a keyframe policy: a frame whose output an earlier run
    already wrote is read back instead of computed (the policy replays its decision on it), and what the next
    computed frame needs from before is rebuilt (edge.keyframes), so a resumed run gives exactly the depth of an
    uninterrupted one. `process`, `live` and `bench` all step through it."""

    def __init__(self, pipeline: FramePipeline, read_done: Callable[[str], np.ndarray | None] | None = None,
                 keyframes: KeyframePolicy = EVERY_FRAME, schedule: dict[str, bool] | None = None,
                 carry: str = "shift", fusion: bool = False, states: KeyframeStates | None = None):
        self.pipeline = pipeline
        self.read_done = read_done  # frame name -> depth written earlier, or None
        self.frames = KeyframeSteps(pipeline, keyframes, carry, fusion=fusion)
        self.schedule = schedule or {}  # frame name -> keyframe?, forced (StreamOutputs.schedule)
        self.replayed_age = 0  # frames since the keyframe, for the last frame read back
        self.states = states  # fusion: the keyframes' outputs an earlier run kept (edge.sinks.keyframe_state)
        self.keyframe_name: str | None = None  # the last keyframe replayed

    def __call__(self, name: str, rgb: np.ndarray, out_size: tuple[int, int],
                 timestamp: float | None = None) -> tuple[np.ndarray, FrameResult | None]:
        """(depth at out_size, the FrameResult or None when the depth was read back)."""
        depth = self.read_done(name) if self.read_done is not None else None
        if depth is not None:
            self.replay(name, rgb, timestamp)
            return depth, None
        if self.frames.needs_keyframe:  # fused: the replayed keyframe's output, as the earlier run kept it
            if self.states is None:
                raise UserError(f"{name}: resuming a fused run needs its keyframes' outputs; run again with --overwrite")
            self.frames.restore_keyframe(*self.states.read(self.keyframe_name))
        result = self.frames.step(rgb, timestamp, keyframe=self.schedule.get(name))
        return resize_depth(result.depth, out_size), result

    def set_intrinsics(self, intrinsics) -> None:
        self.frames.set_intrinsics(intrinsics)

    def replay(self, name: str, rgb: np.ndarray, timestamp: float | None = None) -> None:
        """A frame this run does not compute (written earlier, or a chunk's priming): the policy's decision (or
        the schedule's) replayed, no depth."""
        self.replayed_age = self.frames.replay(rgb, timestamp, keyframe=self.schedule.get(name))
        if self.replayed_age == 0:
            self.keyframe_name = name


def run_stream(
    pipeline: FramePipeline,
    source,
    outputs: StreamOutputs,
    *,
    resize: bool = True,
    run_info: dict | None = None,
    on_frame: Callable[[StreamReport], None] | None = None,
    keyframes: KeyframePolicy = EVERY_FRAME,
    carry: str = "shift",
    intrinsics: IntrinsicsChoice | None = None,
    fusion: bool = False,
) -> StreamReport:
    """Every frame of `source` through `pipeline` into the outputs. Each frame's outputs (its depth PNG, its
    metrics row, the video frame, every sink's output) are one unit: SIGINT/SIGTERM/SIGHUP are held while a unit
    is written and while the outputs are flushed at the end, and raise only while a frame is read or computed,
    so after any signal the metrics describe exactly the PNGs on disk (core.signals). `carry` (edge.carry): how
    keyframes' depth reaches the frames after them; the pose carry takes the camera from `intrinsics` at the first
    frame (the option, a bag's CameraInfo, NYUv2's Kinect). `fusion` (edge.fusion): every keyframe fused with the
    previous output; an AsyncPipeline brings its own. Every output's flicker (edge.flicker) is measured here, into
    the metrics rows and FrameResult.flicker for the sinks."""
    report = StreamReport(name=source.name)
    with termination_as_interrupt(), held_signals() as gate:
        try:
            _stream(pipeline, source, outputs, report, resize, run_info, on_frame, keyframes, carry, intrinsics, fusion)
        except KeyboardInterrupt:
            report.interrupted = True
        except DiskFull as err:  # `process` picks up where it stopped; a live stream starts anew
            raise DiskFull(err.path, resumable=not source.live) from None
        if gate.pending is not None:  # came during the last unit or the flush: everything is written
            gate.pending = None
            report.interrupted = True
    return report


def _stream(pipeline: FramePipeline, source, outputs: StreamOutputs, report: StreamReport, resize: bool,
            run_info: dict | None, on_frame: Callable[[StreamReport], None] | None, keyframes: KeyframePolicy,
            carry: str = "shift", intrinsics: IntrinsicsChoice | None = None, fusion: bool = False) -> None:
    size = pipeline.frame_size
    folder = outputs.folder
    fusion = getattr(pipeline, "fusion", fusion)  # an AsyncPipeline's own
    if folder:  # the folder's earlier frames are reused only if a run of this identity wrote them
        claim_run_folder(folder, RunIdentity.of(pipeline, keyframes, resize,
                                                asynchronous=isinstance(pipeline, AsyncPipeline),
                                                carry=getattr(pipeline, "carry", carry), fusion=fusion))
    pngs = DepthPngSink(folder / "depth") if folder else None
    # what a killed run left in our folders (its reserve, a PNG or the video half written): gone before we start
    if folder:
        remove_stale_temporaries(folder, recursive=True)
    if outputs.video:
        remove_stale_temporaries(Path(outputs.video).parent)
    reserve = metrics = video = window = None
    warned_resize = False
    fps = 0.0
    start = last_output = time.perf_counter()
    failed = opened = False
    try:  # the outputs open inside: one that cannot takes the others (the reserve too) away with it
        # room for metrics.json however full the disk gets under the PNGs
        reserve = SpaceReserve(folder, _summary_bytes(source)) if folder else None
        metrics = MetricsSink(outputs.metrics_folder or folder, {**(run_info or {}), "source": source.name},
                              keep_rows=not source.live) if folder else None
        video = VideoSink(outputs.video, fps=getattr(source, "fps", 10.0)) if outputs.video else None
        window = WindowSink(f"smoothdino - {source.name}", outputs.snapshots, pipeline.random_weights,
                            outputs.depth_range) if outputs.window else None
        # fused keyframes kept for a later resume: recorded runs only (a live run never resumes)
        states = KeyframeStates(folder) if folder and fusion and outputs.resume and not source.live and \
            not isinstance(pipeline, AsyncPipeline) else None
        if isinstance(pipeline, AsyncPipeline):  # live --async: never waits for the network, never resumes
            steps = AsyncSteps(pipeline)
        else:
            steps = ResumableSteps(pipeline, pngs.read if pngs is not None and outputs.resume and not source.live
                                   else None, keyframes, outputs.schedule, carry, fusion, states)
        flicker_meter = FlickerMeter()
        camera = None  # the camera matrix at the frames' own size, for flicker (None: the shift)
        frames = iter(source)
        untrained = untrained_adapter(pipeline.weights)  # said on every drawn frame, as random weights are
        camera_pending = getattr(pipeline, "carry", carry) == "pose"
        if camera_pending and intrinsics is None:
            raise UserError("--carry pose: the camera's intrinsics are unknown; give --intrinsics fx,fy,cx,cy or use "
                            "--carry shift")
        opened = True
        while True:
            with interruptible():  # nothing is written here: a signal ends the stream at once
                frame: Frame | None = next(frames, None)
                if frame is None:
                    break
                if frame.rgb.shape[:2] != size and resize and not warned_resize:
                    notice(f"{source.name}: frames are {frame.rgb.shape[0]}x{frame.rgb.shape[1]}, "
                           f"the engines {size[0]}x{size[1]}: resizing (depth is resized back)")
                    warned_resize = True
                rgb = fit_frame(frame.rgb, size, resize, f"{source.name}/{frame.name}", pipeline)
                if camera_pending:  # the pose carry's camera: the first frame says which (a bag's CameraInfo)
                    steps.set_intrinsics(intrinsics.for_frame(frame.meta, *frame.rgb.shape[:2]))
                    camera_pending = False
                if intrinsics is not None and camera is None:
                    at = intrinsics.for_frame(frame.meta, *frame.rgb.shape[:2]).scaled(*frame.rgb.shape[:2])
                    camera = camera_matrix(at.fx, at.fy, at.cx, at.cy)
                if frame.name in outputs.primed:  # before a chunk (process --ray): the keyframe state only
                    steps.replay(frame.name, rgb, frame.timestamp)
                    continue
                depth, result = steps(frame.name, rgb, frame.rgb.shape[:2], frame.timestamp)
            if depth is None:  # async, before the first keyframe is ready: counted, never shown without depth
                report.waiting += 1
                flicker_meter.reset()
                continue
            flicker = flicker_meter.measure(frame.rgb, depth, frame.depth_gt, camera)
            if result is not None:
                result.flicker = flicker
            # the frame's write unit: signals wait until every output describes this frame; an output that
            # fails (a full disk) takes the frame's PNG and metrics row back with it
            written: list = []
            try:
                if result is None:  # written by an earlier run (an unreadable PNG is computed again)
                    report.reused += 1
                elif pngs is not None:
                    if states is not None and result.keyframe:  # before its PNG: a PNG on disk has its state
                        states.write(frame.name, *steps.frames.keyframe_state())
                        written.append(lambda name=frame.name: states.remove(name))
                    pngs.write(frame.name, depth)
                    written.append(lambda name=frame.name: pngs.path(name).unlink(missing_ok=True))
                row = None
                if metrics is not None:
                    age = result.age_frames if result else steps.replayed_age
                    row = metrics.add(frame.name, depth, frame.depth_gt, result.timings if result else None,
                                      keyframe=age == 0, age_frames=age,
                                      scene_cut=bool(result.scene_cut) if result else None,
                                      flicker=flicker[0], flicker_p90=flicker[1],
                                      fused=result.fused if result else fusion,
                                      **carry_fields(result, age),
                                      **({"nonfinite_pixels": result.nonfinite} if result and result.nonfinite else {}))
                    written.append(metrics.undo_last)
                canvas = None
                if video is not None or window is not None:
                    # live: the result and the output rate; recorded: the PNG and the row it writes, which the
                    # --ray driver reads back for its video (edge.sinks.view.overlay_lines): the same video
                    if source.live:
                        canvas = side_by_side(frame.rgb, depth, overlay_lines(result, fps), pipeline.random_weights,
                                              outputs.depth_range, untrained)
                    else:
                        lines = overlay_lines(result if row is None else row)
                        canvas = side_by_side(frame.rgb, as_written(depth), lines, pipeline.random_weights,
                                              outputs.depth_range, untrained)
                    if video is not None:
                        video.write(canvas)
                for sink in outputs.sinks:
                    sink.write(frame, depth, result, canvas)
            except BaseException:
                for undo in reversed(written):
                    undo()
                raise
            if states is not None and result is not None and result.keyframe:
                states.keep_only(frame.name)  # the unit is complete: the earlier keyframe's state is no longer needed
            if result is not None:
                report.computed += 1
                report.keyframes += int(result.keyframe)
                report.scene_cuts += int(result.scene_cut)
                if result.nonfinite:
                    report.nonfinite += 1
                if result.nonfinite and report.nonfinite == 1:  # once per stream; metrics count every one
                    notice(f"{source.name}/{frame.name}: {result.nonfinite} NaN/Inf depth pixels (an FP16 overflow?) "
                           "written as 0 (no depth) and flagged in metrics; the temporal state restarts if the features overflowed")
                now = time.perf_counter()  # output frames a second, as the viewer sees them (not 1 / step time)
                interval, last_output = max(now - last_output, 1e-6), now
                fps = 0.9 * fps + 0.1 / interval if fps else 1.0 / max(result.timings["total"], 1e-6)
            report.wall_seconds = time.perf_counter() - start
            if on_frame:
                on_frame(report)
            if window is not None:
                window.show(canvas, rgb=frame.rgb, depth=depth, name=frame.name)
                if window.quit:
                    break
    except KeyboardInterrupt:
        report.interrupted = True
    except BaseException:
        failed = True  # a full disk, a bad frame: what was written stays, the unfinished video does not
        raise
    finally:
        report.wall_seconds = time.perf_counter() - start
        report.skipped = source.stats.skipped
        report.dropped = source.stats.dropped
        report.reconnects = source.stats.reconnects
        if isinstance(pipeline, AsyncPipeline):
            report.keyframes = pipeline.passes
        if metrics is not None:
            metrics.run_info.update(skipped_frames=source.stats.skipped_names, dropped_frames=source.stats.dropped,
                                    reconnects=source.stats.reconnects,
                                    reconnect_attempts=source.stats.reconnect_attempts,
                                    nonfinite_frames=report.nonfinite, interrupted=report.interrupted,
                                    keyframes="async" if isinstance(pipeline, AsyncPipeline) else keyframes.label,
                                    waiting_frames=report.waiting)
        closers = [reserve and reserve.release, opened and metrics and metrics.write,
                   video and (video.discard if failed else video.close), window and window.close,
                   *(sink.close for sink in outputs.sinks), source.close]
        close_all([c for c in closers if c])
        if metrics is not None:
            report.summary = metrics.summary()


class AsyncSteps:
    """live --async through the loop: every frame stepped at once with the newest keyframe's depth (None before the
    first one is ready); a live stream never resumes, so nothing is ever read back."""

    replayed_age = 0

    def __init__(self, pipeline: AsyncPipeline):
        self.pipeline = pipeline

    def set_intrinsics(self, intrinsics) -> None:
        self.pipeline.set_intrinsics(intrinsics)

    def __call__(self, name: str, rgb: np.ndarray, out_size: tuple[int, int],
                 timestamp: float | None = None) -> tuple[np.ndarray | None, FrameResult | None]:
        result = self.pipeline.step(rgb, timestamp)
        return (None, None) if result is None else (resize_depth(result.depth, out_size), result)


def carry_fields(result: FrameResult | None, age: int) -> dict:
    """A metrics row's account of how the frame's depth got there: `carry` (network, pose, shift, none; empty for a
    carried frame read back from an earlier run), the pose carry's PnP inliers and tracked corners, the camera's
    position (m) and rotation (quaternion) in its keyframe's frame, why a pose carry fell back to the shift, and on a
    fused keyframe whether the fusion restarted, the share of the earlier output's scale it kept and the share of
    pixels it blended."""
    if result is None:
        return {"carry": "network" if age == 0 else ""}
    fields = {"carry": result.carry}
    if result.carry == "pose" or result.fallback:
        fields.update(inliers=result.inliers, tracked=result.tracked)
    if result.pose is not None:
        pose = result.pose.camera_in_keyframe()
        (fields["tx_m"], fields["ty_m"], fields["tz_m"]) = (round(float(v), 5) for v in pose[:3, 3])
        (fields["qx"], fields["qy"], fields["qz"], fields["qw"]) = (round(v, 6) for v in result.pose.quaternion_xyzw())
    if result.fallback:
        fields["fallback"] = result.fallback
    if result.fusion is not None:  # a fused keyframe: how much of the earlier output it kept (edge.fusion)
        fused = result.fusion
        fields.update(fusion="restart" if fused.restarted else "fused", fusion_scale_kept=round(fused.kept, 4),
                      fusion_blended=round(fused.blended, 4))
    return fields


def _summary_bytes(source) -> int:
    """Room kept for metrics.json + metrics.csv: about 2 KiB a row for a recorded sequence (its rows are written at
    the end), the summary alone for a live stream (its rows were appended as they came)."""
    rows = 0 if source.live else len(source) if hasattr(source, "__len__") else 1000
    return min(max(64 << 10, rows * 2048), 64 << 20)


def close_all(closers: list[Callable[[], None]]) -> None:
    """Run every closer even when one fails (a full disk must not leave the camera open or the video
    unfinished); the first failure is raised at the end."""
    first: BaseException | None = None
    for close in closers:
        try:
            close()
        except Exception as err:  # noqa: BLE001 - re-raised below, after the others ran
            first = first or err
    if first is not None:
        raise first
