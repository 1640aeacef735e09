"""A live view for a robot without a screen: the frames, depth, point cloud and latency served over Foxglove's
WebSocket protocol (Foxglove, or anything that speaks it), and/or recorded to MCAP, with `foxglove-sdk`.

The depth loop never waits for a viewer: `write` only leaves the newest frame in a latest-wins mailbox (core.mailbox:
an unpublished frame it replaces is counted as dropped), its thread encodes and logs it, and the SDK's
server keeps a short per-client backlog that drops its oldest messages when a client reads too slowly. Clients reach
the SDK's server through a gate (foxglove_gate.py) that bounds what each may hold: connections, the handshake's time
and size, message size and rate.
A channel nobody subscribed to (and no recording) costs nothing: its message is not even built.

Several cameras (`live --source A --source B`): one sink, so one server (one gate, one port) and one recording, with
`per_camera=True`; `stream(camera)` gives each camera its FrameSink, written from that camera's thread, with its own
channels (`/<camera>` before each of TOPICS: `/front/depth/raw`, ...), its own frame_id (`<camera>_optical_frame`),
its own mailbox and publisher thread, and its own drops."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import RANDOM_WEIGHTS_BANNER, notice
from smoothdino.core.errors import UserError
from smoothdino.core.extras import missing_extra
from smoothdino.core.files import atomic_path
from smoothdino.core.mailbox import Mailbox
from smoothdino.edge.cameras import optical_frame
from smoothdino.edge.sources.frame import Frame
from smoothdino.edge.sources.intrinsics import IntrinsicsChoice

from .bag import depth_32fc1
from .foxglove_gate import FoxgloveGate
from .pointcloud import FOXGLOVE_FIELDS, POINT_STEP, depth_to_points
from .view import colorize

DEFAULT_HOST = "127.0.0.1"  # loopback unless asked: a robot's Wi-Fi is not a place for an open port
STOP_WAIT_S = 2.0
CLOSE_NOTICE_S = 10.0  # close() says it is still waiting for the publisher's last frame after this long
DEFAULT_BACKLOG = 8  # messages per client the server buffers before it drops the oldest
TOPICS = {"rgb": "/camera/rgb/compressed", "depth_colour": "/depth/colour/compressed", "depth": "/depth/raw",
          "calibration": "/depth/calibration", "points": "/depth/points", "latency": "/smoothdino/latency"}
DEFAULT_FRAME_ID = "camera"  # a frame without a frame_id of its own (a bag's), with one camera


def camera_topics(camera: str) -> dict[str, str]:
    """A camera's channels when several share the sink: `/<camera>` before each of TOPICS."""
    return {key: f"/{camera}{topic}" for key, topic in TOPICS.items()}


LATENCY_SCHEMA = {"title": "smoothdino.Latency", "type": "object", "properties": {
    "frame": {"type": "string"}, **{f"{k}_ms": {"type": "number"} for k in ("encoder", "adapter", "decoder", "motion", "total")},
    "fps": {"type": "number"}, "dropped_publishes": {"type": "integer"}, "warning": {"type": "string"},
    # how old the depth is: 0 on a keyframe; frames and ms since the keyframe it was carried from (edge.keyframes)
    "keyframe": {"type": "boolean"}, "age_frames": {"type": "integer"}, "age_ms": {"type": "number"},
    # how it was carried (edge.carry): network (a keyframe) | pose | shift | none, and the pose's PnP inliers
    "carry": {"type": "string"}, "inliers": {"type": "integer"},
    # steadiness (edge.flicker): median and p90 relative change against the previous output, carried by the camera's
    # motion; whether the depth is fused with the earlier output (edge.fusion)
    "flicker": {"type": "number"}, "flicker_p90": {"type": "number"}, "fused": {"type": "boolean"}}}


def _foxglove():
    try:
        import foxglove
        from foxglove import channels, messages
    except ModuleNotFoundError as err:
        raise missing_extra(err, "the Foxglove live view") or err from None
    return foxglove, channels, messages


def parse_address(text: str, option: str = "--foxglove") -> tuple[str, int]:
    """'[HOST:]PORT' -> (host, port); the host is 127.0.0.1 unless given ('0.0.0.0:8765' serves every interface)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise UserError(f"{option} {text!r}: give [HOST:]PORT, e.g. 8765 (loopback only) or 0.0.0.0:8765 "
                        "(every interface)") from None
    return host.strip("[]") or DEFAULT_HOST, number


class FoxgloveSink:
    """A FrameSink: serve (address) and/or record (an .mcap path) the same channels. Channels, with the
    frame's header stamp and frame_id (a bag's, else now and 'camera'): the RGB frame and the coloured depth
    as JPEG, the raw depth as 32FC1 metres, the camera calibration, a coloured point cloud (every
    `cloud_stride`-th pixel) and per-stage latency as JSON. `per_camera`: no channels of its own; each camera's
    come with `stream(camera)`."""

    def __init__(self, address: tuple[str, int] | None = None, record: Path | None = None, *,
                 intrinsics: IntrinsicsChoice | None = None, cloud_stride: int = 4, random_weights: bool = False,
                 backlog: int = DEFAULT_BACKLOG, jpeg_quality: int = 85, gate: bool = True,
                 gate_options: dict | None = None, per_camera: bool = False):
        foxglove, self._channel_kinds, self.messages = _foxglove()
        self._foxglove_module = foxglove
        self.intrinsics = intrinsics or IntrinsicsChoice()
        self.cloud_stride = max(1, int(cloud_stride))
        self.warning = RANDOM_WEIGHTS_BANNER if random_weights else None
        self.jpeg_quality = jpeg_quality
        self.context = foxglove.Context()
        self.per_camera = per_camera
        self.channels = None if per_camera else self._make_channels(TOPICS)
        self.streams: dict[str, CameraStream] = {}
        self.server = None
        self.gate: FoxgloveGate | None = None
        self.url = None
        self._recording = contextlib.ExitStack()
        self.mcap = None
        self.record = Path(record) if record else None
        try:
            if address is not None:
                host, port = address
                # the SDK on a private loopback port, the gate where the user asked: the SDK alone caps nothing
                # (foxglove_gate says what the gate bounds); gate=False serves the SDK itself (for measuring it)
                try:
                    self.server = foxglove.start_server(
                        name="smoothdino", host="127.0.0.1" if gate else host, port=0 if gate else port,
                        context=self.context, message_backlog_size=max(1, backlog))
                except RuntimeError as err:
                    why = str(err).replace("FoxgloveError: ", "")
                    raise UserError(f"--foxglove {host}:{port}: cannot serve ({why}); choose another port "
                                    "or host") from None
                if gate:
                    self.gate = FoxgloveGate((host, port), self.server.port, **(gate_options or {}))
                self.url = f"ws://{host}:{self.port}"
            if self.record is not None:
                self.record.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._recording.enter_context(atomic_path(self.record))  # moved into place on close
                self.mcap = foxglove.open_mcap(tmp, allow_overwrite=True, context=self.context)
        except BaseException:
            self._stop_outputs()
            raise
        self.published = 0
        self.dropped = 0  # frames replaced in the mailbox before the publisher took them
        self.publish_seconds = 0.0
        self._error: str | None = None
        self._close_error: BaseException | None = None  # raised by close(): e.g. the disk filled at the end
        # the outputs are closed on the mailbox's thread, after the last log: never under a publish, however slow
        self._mailbox: Mailbox[tuple] = Mailbox(self._publish_one, "foxglove-publisher", finish=self._finish)

    def _make_channels(self, topics: dict[str, str]) -> dict:
        foxglove, channels = self._foxglove_module, self._channel_kinds
        meta = {"warning": self.warning} if self.warning else None
        return {
            "rgb": channels.CompressedImageChannel(topics["rgb"], context=self.context, metadata=meta),
            "depth_colour": channels.CompressedImageChannel(topics["depth_colour"], context=self.context, metadata=meta),
            "depth": channels.RawImageChannel(topics["depth"], context=self.context, metadata=meta),
            "calibration": channels.CameraCalibrationChannel(topics["calibration"], context=self.context),
            "points": channels.PointCloudChannel(topics["points"], context=self.context, metadata=meta),
            "latency": foxglove.Channel(topics["latency"], schema=LATENCY_SCHEMA, context=self.context),
        }

    def stream(self, camera: str, intrinsics: IntrinsicsChoice | None = None) -> CameraStream:
        """Camera `camera`'s FrameSink on this sink's server and recording: its channels (camera_topics), its
        frame_id (edge.cameras.optical_frame), its intrinsics. Open every camera's stream before the frames flow."""
        if camera in self.streams:
            raise ValueError(f"foxglove: camera {camera!r} has a stream already")
        stream = CameraStream(self, camera, intrinsics or self.intrinsics)
        self.streams[camera] = stream
        return stream

    @property
    def port(self) -> int | None:
        """The port clients connect to: the gate's (the SDK's own is private)."""
        if self.gate is not None:
            return self.gate.port
        return self.server.port if self.server is not None else None

    def write(self, frame: Frame, depth: np.ndarray, result, canvas) -> None:
        if self.channels is None:
            raise RuntimeError("foxglove: a per-camera sink takes frames through stream(camera)")
        self.dropped += self._mailbox.put(_item(frame, depth, result))

    def _publish_one(self, item: tuple) -> None:
        start = time.perf_counter()
        try:
            self.publish(*item)
        except Exception as err:  # noqa: BLE001 - a viewer problem must never end the depth loop
            if self._error is None:
                self._error = f"{type(err).__name__}: {err}"
                notice(f"foxglove: publishing failed ({self._error}); the depth loop goes on")
        self.publish_seconds += time.perf_counter() - start
        self.published += 1

    def _finish(self) -> None:
        try:
            self._stop_outputs()
        except BaseException as err:  # noqa: BLE001 - handed to close(), which raises it
            self._close_error = err

    def _jpeg(self, bgr: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        return data.tobytes() if ok else b""

    def publish(self, frame: Frame, depth: np.ndarray, timings: dict, age: dict | None = None) -> None:
        """Build and log every channel that has a subscriber or a recording (called on the publisher thread)."""
        self._log(self.channels, self.intrinsics, frame.meta.get("frame_id") or DEFAULT_FRAME_ID, self.dropped,
                  frame, depth, timings, age)

    def _log(self, ch: dict, intrinsics: IntrinsicsChoice, frame_id: str, dropped: int, frame: Frame,
             depth: np.ndarray, timings: dict, age: dict | None) -> None:
        m = self.messages
        stamp_ns = int(frame.meta["stamp_ns"]) if "stamp_ns" in frame.meta else time.time_ns()
        stamp = m.Timestamp(stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000)
        height, width = depth.shape[:2]
        if ch["rgb"].has_sinks():
            ch["rgb"].log(m.CompressedImage(timestamp=stamp, frame_id=frame_id, format="jpeg",
                                            data=self._jpeg(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))))
        if ch["depth_colour"].has_sinks():
            ch["depth_colour"].log(m.CompressedImage(timestamp=stamp, frame_id=frame_id, format="jpeg",
                                                     data=self._jpeg(colorize(depth))))
        if ch["depth"].has_sinks():
            metres = depth_32fc1(depth)
            ch["depth"].log(m.RawImage(timestamp=stamp, frame_id=frame_id, width=width, height=height,
                                       encoding="32FC1", step=width * 4, data=metres.tobytes()))
        k = intrinsics.for_frame(frame.meta, height, width)
        if ch["calibration"].has_sinks():
            ch["calibration"].log(m.CameraCalibration(timestamp=stamp, frame_id=frame_id, width=width, height=height,
                                                      distortion_model="plumb_bob", D=[0.0] * 5, K=k.k,
                                                      R=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], P=k.p))
        if ch["points"].has_sinks():
            rgb = frame.rgb if frame.rgb.shape[:2] == (height, width) else None
            cloud = depth_to_points(depth, k, self.cloud_stride, rgb)
            kinds = m.PackedElementFieldNumericType
            fields = [m.PackedElementField(name=n, offset=o, type=getattr(kinds, t)) for n, o, t in FOXGLOVE_FIELDS]
            pose = m.Pose(position=m.Vector3(x=0.0, y=0.0, z=0.0), orientation=m.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
            ch["points"].log(m.PointCloud(timestamp=stamp, frame_id=frame_id, pose=pose, point_stride=POINT_STEP,
                                          fields=fields, data=cloud.packed(alpha=255).tobytes()))
        if ch["latency"].has_sinks():
            row = {"frame": frame.name, **{f"{k}_ms": v * 1000.0 for k, v in timings.items()},
                   "dropped_publishes": dropped, **(age or {})}
            if timings.get("total"):
                row["fps"] = 1.0 / timings["total"]
            if self.warning:
                row["warning"] = self.warning
            ch["latency"].log(row)

    def _stop_outputs(self) -> None:
        try:
            if self.mcap is not None:
                mcap, self.mcap = self.mcap, None
                mcap.close()
            self._recording.close()  # the recording appears under its name only now, complete
        finally:
            if self.gate is not None:  # clients first: each is told the server is going away (1001)
                gate, self.gate = self.gate, None
                gate.stop(STOP_WAIT_S)
            if self.server is not None:
                server, self.server = self.server, None
                # stop() waits for every client's close handshake, which a viewer that stopped reading never
                # completes: give it a moment, then leave it to a daemon thread rather than hang the exit
                stopper = threading.Thread(target=server.stop, name="foxglove-stop", daemon=True)
                stopper.start()
                stopper.join(timeout=STOP_WAIT_S)
                if stopper.is_alive():
                    notice(f"foxglove: a viewer did not answer the close within {STOP_WAIT_S:g} s; not waiting for it")

    def summary(self) -> str:
        """The end-of-run words: frames published and dropped (per camera with several)."""
        if not self.per_camera:
            return f"foxglove: {self.published} frames published, {self.dropped} dropped for the viewer"
        published = sum(s.published for s in self.streams.values())
        dropped = sum(s.dropped for s in self.streams.values())
        return (f"foxglove: {published} frames published, {dropped} dropped for the viewer ("
                + ", ".join(f"{name} {s.published}/{s.dropped}" for name, s in self.streams.items()) + ")")

    def close(self) -> None:
        for stream in list(self.streams.values()):  # every camera's last frame, before the recording closes
            stream.close()
        if not self._mailbox.close():
            return
        # the publisher sends the frame left in the mailbox, then closes the recording and the server itself
        if not self._mailbox.join(CLOSE_NOTICE_S):
            notice(f"foxglove: the last frame is still being published after {CLOSE_NOTICE_S:g} s; waiting for it, "
                   "so that the recording is whole")
            self._mailbox.join()
        if self._close_error is not None:
            raise self._close_error


def _item(frame: Frame, depth: np.ndarray, result) -> tuple:
    """What the publisher thread needs of one frame, taken on the loop's thread."""
    timings = dict(result.timings) if result is not None else {}
    age = {"keyframe": result.keyframe, "age_frames": result.age_frames, "age_ms": result.age_ms,
           "carry": result.carry, "inliers": result.inliers, "fused": result.fused} if result is not None else {}
    if result is not None and result.flicker is not None and result.flicker[0] == result.flicker[0]:
        age.update(flicker=result.flicker[0], flicker_p90=result.flicker[1])
    return frame, depth, timings, age


class CameraStream:
    """One camera's FrameSink on a shared FoxgloveSink (FoxgloveSink.stream): `write` is called from that camera's
    thread and never waits (a latest-wins mailbox of its own; a frame replaced before its publisher thread took it
    is counted in `dropped`, this camera's). Closing it publishes its last frame; the sink's server and recording
    stay open for the other cameras until the sink itself closes."""

    def __init__(self, sink: FoxgloveSink, camera: str, intrinsics: IntrinsicsChoice):
        self.sink, self.camera, self.intrinsics = sink, camera, intrinsics
        self.topics = camera_topics(camera)
        self.frame_id = optical_frame(camera)
        self.channels = sink._make_channels(self.topics)
        self.published = 0
        self.dropped = 0
        self.publish_seconds = 0.0
        self._error: str | None = None
        self._mailbox: Mailbox[tuple] = Mailbox(self._publish_one, f"foxglove-{camera}")

    def write(self, frame: Frame, depth: np.ndarray, result, canvas) -> None:
        self.dropped += self._mailbox.put(_item(frame, depth, result))

    def _publish_one(self, item: tuple) -> None:
        start = time.perf_counter()
        try:
            self.sink._log(self.channels, self.intrinsics, self.frame_id, self.dropped, *item)
        except Exception as err:  # noqa: BLE001 - a viewer problem must never end the depth loop
            if self._error is None:
                self._error = f"{type(err).__name__}: {err}"
                notice(f"foxglove {self.camera}: publishing failed ({self._error}); the depth loop goes on")
        self.publish_seconds += time.perf_counter() - start
        self.published += 1

    def close(self) -> None:
        """Publish the frame left in the mailbox (waiting for it: the recording must be whole), end the thread.
        Safe to call twice, from any thread: each call returns once the thread has ended."""
        self._mailbox.close()
        if not self._mailbox.join(CLOSE_NOTICE_S):
            notice(f"foxglove {self.camera}: the last frame is still being published after {CLOSE_NOTICE_S:g} s; "
                   "waiting for it, so that the recording is whole")
            self._mailbox.join()
