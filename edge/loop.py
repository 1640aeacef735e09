"""The loop: frames from a source, through the pipeline, into the sinks. Used by `process` (recorded
sequences, resumable) and `live` (cameras, real time). Ctrl-C, a closed window, or a source that ends
stop it cleanly; outputs are flushed in every case."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.signals import deferred_interrupts
from .pipeline import FramePipeline, FrameResult
from smoothdino.core.images import resize_depth, resize_rgb

from .sinks import DepthPngSink, MetricsSink, VideoSink, WindowSink, atomic_write_text, side_by_side
from .sources import Frame


@dataclass
class StreamReport:
    name: str
    computed: int = 0  # frames run through the pipeline
    reused: int = 0  # frames already written by an earlier run (resume)
    skipped: int = 0  # missing or corrupt input frames
    dropped: int = 0  # live frames the loop had no time for
    reconnects: int = 0  # times a lost camera came back
    nonfinite: int = 0  # frames whose depth had NaN/Inf pixels (written as 0 = no depth, flagged in metrics)
    scene_cuts: int = 0
    interrupted: bool = False
    wall_seconds: float = 0.0
    summary: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.computed / self.wall_seconds if self.wall_seconds and self.computed else 0.0


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


def claim_output_folder(folder: Path, pipeline: FramePipeline, resume: bool) -> None:
    """Depth PNGs are reused on resume only if the same export wrote them."""
    marker = folder / ".smoothdino-export"
    identity = pipeline.identity
    if resume and marker.is_file() and marker.read_text().strip() != identity:
        raise UserError(f"{folder}: written by another export ({marker.read_text().strip()}); "
                        "pass --no-resume to overwrite, or choose another --out")
    atomic_write_text(marker, identity + "\n")


def fit_frame(rgb: np.ndarray, size: tuple[int, int], resize: bool, source: str, pipeline: FramePipeline) -> np.ndarray:
    """Frames of another size than the export: resized (area) or refused in one line."""
    if rgb.shape[:2] != tuple(size) and not resize:
        pipeline.refuse_size(rgb.shape[0], rgb.shape[1])
    return resize_rgb(rgb, size)


class ResumableSteps:
    """One pipeline over one sequence, resumable: a frame whose output an earlier run already wrote is read
    back instead of computed, and the frame before the next computed one primes the pipeline, so a resumed
    run gives exactly the depth of an uninterrupted one. `process`, `live` and `bench` all step through it."""

    def __init__(self, pipeline: FramePipeline, read_done: Callable[[str], np.ndarray | None] | None = None):
        self.pipeline = pipeline
        self.read_done = read_done  # frame name -> depth written earlier, or None
        self.pending: np.ndarray | None = None  # last reused frame: primes the pipeline before the next computed one
        pipeline.reset()

    def __call__(self, name: str, rgb: np.ndarray, out_size: tuple[int, int]) -> tuple[np.ndarray, FrameResult | None]:
        """(depth at out_size, the FrameResult or None when the depth was read back)."""
        depth = self.read_done(name) if self.read_done is not None else None
        if depth is not None:
            self.pending = rgb
            return depth, None
        if self.pending is not None:
            self.pipeline.prime(self.pending)  # exact resume: frame t-1's levels without its depth
            self.pending = None
        result = self.pipeline.step(rgb)
        return resize_depth(result.depth, out_size), result


def overlay_lines(result: FrameResult | None, fps: float) -> list[str]:
    if result is None:
        return ["(resumed from disk)"]
    t = result.timings
    stages = " ".join(f"{k[:3]} {t[k] * 1000:.0f}" for k in ("encoder", "adapter", "decoder", "motion") if t.get(k))
    return [f"{fps:5.1f} FPS  {t['total'] * 1000:.0f} ms", f"ms: {stages}",
            f"shift {result.shift.dx:+.1f},{result.shift.dy:+.1f} px  conf {result.shift.confidence:.2f}"]


def run_stream(
    pipeline: FramePipeline,
    source,
    outputs: StreamOutputs,
    *,
    resize: bool = True,
    run_info: dict | None = None,
    on_frame: Callable[[StreamReport], None] | None = None,
) -> StreamReport:
    report = StreamReport(name=source.name)
    size = pipeline.frame_size
    pngs = DepthPngSink(outputs.folder / "depth") if outputs.folder else None
    if pngs is not None:
        claim_output_folder(pngs.folder, pipeline, outputs.resume)
    metrics = MetricsSink(outputs.folder, {**(run_info or {}), "source": source.name},
                          keep_rows=not source.live) if outputs.folder else None
    video = VideoSink(outputs.video, fps=getattr(source, "fps", 10.0)) if outputs.video else None
    window = WindowSink(f"smoothdino - {source.name}", outputs.snapshots, pipeline.random_weights) if outputs.window else None
    random_weights = pipeline.random_weights
    steps = ResumableSteps(pipeline, pngs.read if pngs is not None and outputs.resume and not source.live else None)
    warned_resize = False
    fps = 0.0
    start = time.perf_counter()
    try:
        for frame in source:
            frame: Frame
            if frame.rgb.shape[:2] != size and resize and not warned_resize:
                notice(f"{source.name}: frames are {frame.rgb.shape[0]}x{frame.rgb.shape[1]}, "
                       f"the engines {size[0]}x{size[1]}: resizing (depth is resized back)")
                warned_resize = True
            rgb = fit_frame(frame.rgb, size, resize, f"{source.name}/{frame.name}", pipeline)
            depth, result = steps(frame.name, rgb, frame.rgb.shape[:2])
            if result is None:  # written by an earlier run (an unreadable PNG is computed again)
                report.reused += 1
            else:
                if pngs is not None:
                    pngs.write(frame.name, depth)
                report.computed += 1
                report.scene_cuts += int(result.scene_cut)
                if result.nonfinite:
                    report.nonfinite += 1
                if result.nonfinite and report.nonfinite == 1:  # once per stream; metrics count every one
                    notice(f"{source.name}/{frame.name}: {result.nonfinite} NaN/Inf depth pixels (an FP16 overflow?) "
                           "written as 0 (no depth) and flagged in metrics; the temporal state restarts")
                fps = 0.9 * fps + 0.1 / max(result.timings["total"], 1e-6) if fps else 1.0 / max(result.timings["total"], 1e-6)
            if metrics is not None:
                metrics.add(frame.name, depth, frame.depth_gt, result.timings if result else None,
                            scene_cut=bool(result.scene_cut) if result else None,
                            **({"nonfinite_pixels": result.nonfinite} if result and result.nonfinite else {}))
            canvas = None
            if video is not None or window is not None:
                canvas = side_by_side(frame.rgb, depth, overlay_lines(result, fps), random_weights)
                if video is not None:
                    video.write(canvas)
            for sink in outputs.sinks:
                sink.write(frame, depth, result, canvas)
            if window is not None:
                window.show(canvas, rgb=frame.rgb, depth=depth, name=frame.name)
                if window.quit:
                    break
            report.wall_seconds = time.perf_counter() - start
            if on_frame:
                on_frame(report)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        report.wall_seconds = time.perf_counter() - start
        report.skipped = source.stats.skipped
        report.dropped = source.stats.dropped
        report.reconnects = source.stats.reconnects
        if metrics is not None:
            metrics.run_info.update(skipped_frames=source.stats.skipped_names, dropped_frames=source.stats.dropped,
                                    reconnects=source.stats.reconnects,
                                    reconnect_attempts=source.stats.reconnect_attempts,
                                    nonfinite_frames=report.nonfinite, interrupted=report.interrupted)
        closers = [metrics and metrics.write, video and video.close, window and window.close,
                   *(sink.close for sink in outputs.sinks), source.close]
        with deferred_interrupts():  # a second Ctrl-C/SIGTERM cannot cut the flush short
            close_all([c for c in closers if c])
        if metrics is not None:
            report.summary = metrics.summary()
    return report


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
