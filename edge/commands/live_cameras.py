"""`smoothdino live --source A --source B ...`: every camera of a robot from one process, on one network.

One SharedNetwork (edge.shared_network) holds the engines once and serves the cameras fairly; each camera runs
today's loop (edge.loop.run_stream) in a thread of its own, with its own keyframe policy, carry, fusion, flicker,
metrics and outputs, exactly as a one-camera `live` would. The main thread only waits: it shows the cameras' windows,
and on Ctrl-C, SIGTERM, a window's q or one camera's error it stops every camera between two frames, so each
flushes its outputs as at the end of its stream. A camera that stalls or is unplugged reconnects (or ends) alone;
the others and the network go on.

Outputs per camera, named after it (edge.cameras): `<out>/<camera>/` (depth PNGs, metrics), `<record>-<camera>.mp4`,
its tile in the browser view; `<out>/network.json` has the shared network's figures (passes a second, mean queue,
each camera's passes and waits). One Foxglove server and `--record x.mcap` for the run, each camera's channels under
`/<camera>/`; one ROS 2 node, each camera's topics under `<namespace>/<camera>/` and one /tf (_SharedSinks)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from smoothdino.core.console import adapter_state, console, random_weights_notice, untrained_adapter_notice
from smoothdino.core.files import atomic_write_text
from smoothdino.core.signals import termination_as_interrupt
from smoothdino.edge.asynchronous import AsyncPipeline
from smoothdino.edge.batching import batch_decision, parse_setting
from smoothdino.edge.cameras import CameraSpec, StoppableSource, camera_path, camera_specs
from smoothdino.edge.fusion import fusion_enabled, fusion_info
from smoothdino.edge.loop import StreamOutputs, StreamReport, claim_live_folder, run_stream
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.shared_network import SharedNetwork
from smoothdino.edge.sinks import WindowSink, side_by_side
from smoothdino.edge.sinks.view import overlay_lines
from smoothdino.edge.sources import open_source
from smoothdino.edge.sources.intrinsics import IntrinsicsChoice
from smoothdino.edge.sources.factory import is_synthetic, synthetic_source
from smoothdino.edge.web import parse_serve, serve_view

from .robotics import RobotOptions, choose_carry, live_address, live_sink, ros2_publisher

WINDOW_POLL_S = 0.03  # the main thread's window refresh (and how soon it sees a camera end)


class _Camera:
    """One camera's part of the run: its source, pipeline (a lane, behind an AsyncPipeline with --async), outputs
    and report; `run` is its thread's body."""

    def __init__(self, spec: CameraSpec, pipeline, source, outputs: StreamOutputs, run_info: dict, policy, carry,
                 intrinsics, fusion: bool):
        self.spec, self.pipeline, self.source, self.outputs = spec, pipeline, source, outputs
        self.run_info, self.policy, self.carry, self.intrinsics, self.fusion = run_info, policy, carry, intrinsics, fusion
        self.report: StreamReport | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, name=f"camera-{spec.name}", daemon=True)

    def run(self) -> None:
        try:
            self.report = run_stream(self.pipeline, self.source, self.outputs, run_info=self.run_info,
                                     keyframes=self.policy, carry=self.carry, intrinsics=self.intrinsics,
                                     fusion=self.fusion)
            self.report.interrupted |= self.source.stopped
        except BaseException as err:  # noqa: BLE001 - the main thread stops the others and raises it
            self.error = err


class _LatestView:
    """A camera's newest frame for the main thread's window (windows are drawn from the main thread only)."""

    def __init__(self, random_weights: bool, depth_range):
        self.random_weights, self.depth_range = random_weights, depth_range
        self.latest = None
        self.fps = 0.0
        self._last = None

    def write(self, frame, depth, result, canvas) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.fps = 0.9 * self.fps + 0.1 / max(now - self._last, 1e-6) if self.fps else 1.0 / max(now - self._last, 1e-6)
        self._last = now
        self.latest = (frame, depth, result)  # one reference swap: the main thread takes whichever is newest

    def close(self) -> None:
        pass


def check_cameras(sources: list[str], names: list[str], intrinsics: list[str], options) -> list[CameraSpec]:
    """Refusals before anything opens: the names and intrinsics, the synthetic specs, the per-camera folders."""
    cameras = camera_specs(sources, names, intrinsics)
    for camera in cameras:
        if is_synthetic(camera.source):
            synthetic_source(camera.source, options.max_frames)
        RobotOptions(intrinsics=camera.intrinsics)  # a bad fx,fy,cx,cy
    live_address(options.foxglove)
    if options.ros2 is not None:
        options.ros2.check()
    if options.out is not None:
        for camera in cameras:
            claim_live_folder(Path(options.out) / camera.name, options.overwrite)
    return cameras


def live_cameras(open_pipeline: Callable[[], FramePipeline], options, sources: list[str], names: list[str],
                 intrinsics: list[str], batch: str | int = "auto") -> list[StreamReport]:
    """Run every camera until each source ends, or Ctrl-C / SIGTERM / q stops them all; returns their reports.
    `batch` (auto | off | N): frames one network pass may take (edge.batching: auto batches only where measured
    faster a frame on this machine)."""
    setting = parse_setting(batch)
    cameras = check_cameras(sources, names, intrinsics, options)
    parse_serve(options.serve)
    stop = threading.Event()
    with SharedNetwork(open_pipeline) as network:
        if network.pipeline.random_weights:
            random_weights_notice()
        untrained_adapter_notice(network.pipeline.weights)
        manifest = getattr(network.pipeline, "manifest", None)
        network.batch, why = (1, "eager PyTorch: one frame a pass") if manifest is None else \
            batch_decision(manifest, len(cameras), network.pipeline.backend, setting)
        console.print(f"live: {network.batch} frame{'s' if network.batch > 1 else ''} a network pass ({why})")
        opened: list[_Camera] = []
        with serve_view(parse_serve(options.serve), snapshots=options.snapshots, depth_range=options.depth_range,
                        random_weights=network.pipeline.random_weights, intrinsics=None) as web, \
                _SharedSinks(options, cameras, network.pipeline.random_weights) as shared:
            try:
                for spec in cameras:
                    camera = _open_camera(spec, network, options, web, stop, len(cameras), shared)
                    opened.append(camera)
                    camera.thread.start()  # at once: a camera's frames are its loop's from the moment it opens
                console.print(f"live: {network.pipeline.description} <- {len(cameras)} cameras: "
                              + ", ".join(f"{c.spec.name} ({c.spec.source}, fusion {'on' if c.fusion else 'off'})"
                                          for c in opened) + "  (Ctrl-C to stop)", soft_wrap=True)
                if web is not None:
                    console.print(f"live: browser view -> {web.announce}", soft_wrap=True)
                shared.announce()
                _run(opened, options, network.pipeline.random_weights, stop)
            finally:  # whatever ended it (an error opening a camera, a signal): every loop stopped and flushed
                _finish(opened, {})
        summary = network.summary()
    if options.out is not None:
        atomic_write_text(Path(options.out) / "network.json", json.dumps(summary, indent=2) + "\n")
    errors = [c.error for c in opened if c.error is not None]
    for camera in opened:
        if camera.report is not None:
            console.print(f"live {camera.spec.name}: " + summary_line(camera.report), soft_wrap=True, markup=False)
    console.print(f"live: network {summary['passes']} passes ({summary['passes_per_s']:.2f}/s, "
                  f"{summary['frames_per_s']:.2f} frames/s) shared by {len(cameras)} cameras, mean queue "
                  f"{summary['mean_queue']:.2f}; " + ", ".join(
                      f"{name} {lane['passes']} (max wait {lane['max_wait_ms']:.0f} ms)"
                      for name, lane in summary["lanes"].items()), soft_wrap=True)
    for line in shared.summaries():
        console.print(f"live: {line}", soft_wrap=True, markup=False)
    if errors:
        raise errors[0]
    return [c.report for c in opened]


def _open_camera(spec: CameraSpec, network: SharedNetwork, options, web, stop: threading.Event,
                 count: int, shared: _SharedSinks) -> _Camera:
    robot = RobotOptions(intrinsics=spec.intrinsics, cloud_stride=options.robot.cloud_stride)
    carry, policy, intrinsics = choose_carry(options.carry, spec.name, robot, options.keyframes,
                                             carries=options.asynchronous or None)
    fusion = fusion_enabled(options.fusion, carry)
    lane = network.lane(spec.name)
    pipeline = AsyncPipeline(lambda: lane, carry=carry, fusion=fusion) if options.asynchronous else lane
    try:
        source = StoppableSource(open_source(spec.source, live=True, limit=options.max_frames), stop)
    except BaseException:
        pipeline.close()
        raise
    view = _LatestView(network.pipeline.random_weights, options.depth_range)
    sinks = [view] + ([web.stream(source, camera=spec.name, intrinsics=robot.explicit)] if web is not None else [])
    sinks += shared.streams(spec.name, IntrinsicsChoice(robot.explicit, spec.name))
    outputs = StreamOutputs(folder=Path(options.out) / spec.name if options.out else None,
                            video=camera_path(options.record, spec.name) if options.record and not shared.mcap else None,
                            window=False, resume=False, sinks=sinks, snapshots=options.snapshots,
                            depth_range=options.depth_range)
    run_info = {"pipeline": network.pipeline.description, "random_weights": network.pipeline.random_weights,
                "camera": spec.name, "cameras": count, "network": "shared",
                **adapter_state(network.pipeline.weights), **shared.run_info(spec.name), **fusion_info(fusion)}
    camera = _Camera(spec, pipeline, source, outputs, run_info, policy, carry, intrinsics, fusion)
    camera.view = view
    return camera


class _SharedSinks:
    """The run's one Foxglove sink (`--foxglove` and/or `--record x.mcap`: one server, one recording) and one ROS 2
    publisher (`--ros2`: one node), opened before the cameras, each camera a stream of them (its own channels or
    topics, mailbox and drops); closed after every camera's loop has ended (each closed its streams then)."""

    def __init__(self, options, cameras: list[CameraSpec], random_weights: bool):
        self.mcap = options.record is not None and options.record.suffix.lower() == ".mcap"
        self.record = options.record if self.mcap else None
        self.viewer = None
        self.ros2 = ros2_publisher(options.ros2, options.robot, live=True, cameras=tuple(c.name for c in cameras))
        try:
            self.viewer = live_sink(live_address(options.foxglove), self.record, options.robot, random_weights,
                                    per_camera=True)
        except BaseException:
            self.close()
            raise

    def announce(self) -> None:
        if self.viewer is not None and self.viewer.url:
            console.print(f"live: Foxglove -> open connection {self.viewer.url} (each camera's channels under "
                          f"/<camera>/)", soft_wrap=True)

    def streams(self, camera: str, intrinsics: IntrinsicsChoice) -> list:
        return [shared.stream(camera, intrinsics) for shared in (self.viewer, self.ros2) if shared is not None]

    def run_info(self, camera: str) -> dict:
        return self.ros2.streams[camera].run_info() if self.ros2 is not None and camera in self.ros2.streams else {}

    def summaries(self) -> list[str]:
        return ([self.viewer.summary() + (f", recording {self.record}" if self.record else "")] if self.viewer else []) \
            + ([self.ros2.summary()] if self.ros2 else [])

    def close(self) -> None:
        try:
            if self.viewer is not None:
                self.viewer.close()
        finally:
            if self.ros2 is not None:
                self.ros2.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run(opened: list[_Camera], options, random_weights: bool, stop: threading.Event) -> None:
    """Wait (drawing the windows) until every camera's loop has ended; stop them all on a signal, q, or the first
    camera that fails."""
    windows = {c.spec.name: WindowSink(f"smoothdino - {c.spec.name}", options.snapshots, random_weights,
                                       options.depth_range) for c in opened} if not options.headless else {}
    shown: dict[str, object] = {}
    try:
        with termination_as_interrupt():
            try:
                while any(c.thread.is_alive() for c in opened):
                    if any(c.error is not None for c in opened) or any(w.quit for w in windows.values()):
                        _halt(opened)
                    for camera in opened:
                        _show(camera, windows, shown, random_weights, options.depth_range)
                    time.sleep(WINDOW_POLL_S)
            except KeyboardInterrupt:
                _halt(opened)
                for camera in opened:  # each camera's loop flushes its outputs; a second signal is not a reason to leave them half written
                    _join(camera.thread)
    finally:
        _finish(opened, windows)


def _finish(opened: list[_Camera], windows: dict) -> None:
    """Every camera's loop stopped and joined (its outputs flushed), its pipeline and windows closed."""
    _halt(opened)
    for camera in opened:
        if camera.thread.ident is not None:
            _join(camera.thread)
        else:  # never started: its source is closed here, not by its loop
            camera.source.close()
        camera.pipeline.close()
    for window in windows.values():
        window.close()


def _halt(opened: list[_Camera]) -> None:
    """Every camera's loop ends after its current frame; a camera waiting for frames ends at once."""
    for camera in opened:
        camera.source.halt()


def _join(thread: threading.Thread) -> None:
    while thread.is_alive():
        try:
            thread.join()
        except KeyboardInterrupt:
            continue


def _show(camera: _Camera, windows: dict, shown: dict, random_weights: bool, depth_range) -> None:
    window = windows.get(camera.spec.name)
    latest = camera.view.latest
    if window is None or latest is None or shown.get(camera.spec.name) is latest:
        return
    shown[camera.spec.name] = latest
    frame, depth, result = latest
    canvas = side_by_side(frame.rgb, depth, overlay_lines(result, camera.view.fps), random_weights, depth_range)
    window.show(canvas, rgb=frame.rgb, depth=depth, name=f"{camera.spec.name}-{frame.name}")


def summary_line(report: StreamReport) -> str:
    """A camera's one-line summary (the same words as a one-camera `live`)."""
    return (f"{report.computed} frames, {report.fps:.2f} FPS, {report.dropped} dropped by the camera thread"
            + (f", network {report.keyframes} passes ({report.network_fps:.2f}/s)" if report.keyframes < report.computed else "")
            + (f", {report.waiting} before the first keyframe" if report.waiting else "")
            + (f", {report.reconnects} camera reconnects" if report.reconnects else "")
            + (f", {report.nonfinite} frames with NaN/Inf depth (written as 0)" if report.nonfinite else "")
            + (", interrupted" if report.interrupted else ""))
