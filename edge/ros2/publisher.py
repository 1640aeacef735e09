"""Depth as live ROS 2 topics with no ROS install: `live --ros2` / `process --ros2`, and the publisher object of the
Python API. One front for both transports (DDS: dds.py; rmw_zenoh's Zenoh: zenoh.py); the topics, types
and QoS are topics.py's, the message bytes payloads.py's.

The depth loop never waits for ROS: `write` (and `publish`) only leave the newest frame in a latest-wins mailbox
(core.mailbox), replacing a frame not yet published (counted as dropped), and its thread builds the messages and hands them
to the transport, whose sends never block (DDS best effort; Zenoh drops under congestion). Publishing is so at
most one frame behind. A failing publish is said once and counted; the loop goes on.

    from smoothdino.edge.api import Ros2Publisher

    with smoothdino.open("engines/vits14-temporal", colour="bgr") as model, \\
            Ros2Publisher("dds", namespace="/front", intrinsics=(fx, fy, cx, cy)) as ros:
        out = model.step(frame)
        ros.publish(out, rgb=cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))   # depth, camera_info, points (+ /tf)

Several cameras (`live --source A --source B`): one publisher, so one node and one DDS participant or Zenoh
session, opened with `cameras=(names)`: each camera's topics are under `<namespace>/<camera>/`, its frame_id
`<camera>_optical_frame`, and `stream(camera)` is its FrameSink, written from that camera's thread: a mailbox and a
publisher thread of its own (drops counted per camera), the transport's sends one at a time. /tf, one for all: each
camera's `<camera>_keyframe` a child of its optical frame (payloads.py); the robot supplies its base -> each
optical frame (its URDF or a static_transform_publisher), which makes the cameras one tree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.mailbox import Mailbox
from smoothdino.edge.sources.frame import Frame
from smoothdino.edge.sources.intrinsics import Intrinsics, IntrinsicsChoice, IntrinsicsText

from .payloads import FrameSnapshot, MessageBuilder, Transform, camera_pose, ros_time_ns
from .topics import DEFAULT_NODE, TRANSPORTS, Graph
from smoothdino.edge.sinks.ros_messages import camera_transform, source_distortion
from smoothdino.edge.cameras import optical_frame

DEFAULT_FRAME_ID = "camera"  # as the bag and Foxglove outputs stamp frames without a frame_id of their own
CLOSE_WAIT_S = 5.0  # close() waits this long for the last frame's publish, then leaves it (never hangs the exit)


@dataclass
class Ros2Options:
    """`--ros2 [dds|zenoh]` and its companions, as given; `check` refuses bad ones before anything opens."""

    transport: str = "dds"
    domain: int | None = None  # ROS_DOMAIN_ID, else 0
    namespace: str = ""
    connect: str | None = None  # Zenoh: the router's endpoint (default tcp/localhost:7447)
    distro: str | None = None  # humble, jazzy, kilted, rolling (default ROS_DISTRO, else jazzy)
    color: bool = False  # also color/image
    node: str = DEFAULT_NODE
    cameras: tuple[str, ...] = ()  # several cameras: each one's topics under <namespace>/<camera>/

    def check(self) -> Graph:
        from .zenoh import check_endpoint

        word = str(self.transport).strip().lower()
        if word not in TRANSPORTS:
            raise UserError(f"--ros2 {self.transport}: give dds (ROS 2's default middleware) or zenoh (rmw_zenoh)")
        self.transport = word
        if self.connect is not None:
            if word != "zenoh":
                raise UserError(f"--ros2-connect {self.connect}: the router endpoint is for --ros2 zenoh; DDS finds "
                                "its peers itself (CYCLONEDDS_URI sets interfaces and peers)")
            self.connect = check_endpoint(self.connect)
        graph = Graph.of(self.namespace, node=self.node, domain=self.domain, distro=self.distro, color=self.color,
                         cameras=tuple(self.cameras))
        if word == "zenoh" and not graph.has_type_hashes:
            raise UserError("--ros2 zenoh on Humble: Humble's rmw_zenoh keys carry no type hash and are not spoken "
                            "here; use --ros2 dds (or --ros2-distro jazzy or later)")
        return graph


def _camera(intrinsics) -> tuple[IntrinsicsChoice, Intrinsics | None]:
    """The publisher's camera: an IntrinsicsChoice (the commands'), an Intrinsics (any image size: scaled to the
    depth), fx, fy, cx, cy in pixels of the depth maps, or None (NYUv2's Kinect, said once)."""
    if isinstance(intrinsics, IntrinsicsChoice):
        return intrinsics, None
    if isinstance(intrinsics, Intrinsics):
        return IntrinsicsChoice(None, "ros2", nyu=True), intrinsics  # handed to each frame as its own
    if intrinsics is None:
        return IntrinsicsChoice(None, "ros2 publisher"), None
    values = [float(v) for v in intrinsics]
    if len(values) != 4 or values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"intrinsics {intrinsics!r}: give an Intrinsics or fx, fy, cx, cy in pixels (fx, fy > 0)")
    return IntrinsicsChoice(IntrinsicsText(*values), "ros2"), None


class Ros2Publisher:
    """ROS 2 topics of a camera's depth, over DDS or Zenoh. A FrameSink for the loop (`write`), and the Python API's
    publisher (`publish`). Topics under `namespace`: depth/image (32FC1 metres, NaN = no depth), depth/camera_info,
    depth/points (every `cloud_stride`-th pixel), color/image with `color`, and /tf where the camera's motion is known (keyframes, pose carry).
    `live`: frame timestamps are a camera's monotonic capture times (live sources); otherwise recorded frames
    without a stamp of their own are stamped when they are published. Close it (or use `with`) to leave the graph."""

    def __init__(self, transport="dds", *, namespace: str = "", domain: int | None = None, connect: str | None = None,
                 distro: str | None = None, color: bool = False, node: str = DEFAULT_NODE,
                 intrinsics: IntrinsicsChoice | Intrinsics | Sequence[float] | None = None, cloud_stride: int = 4,
                 frame_id: str = DEFAULT_FRAME_ID, live: bool = True, cameras: Sequence[str] = ()):
        self.intrinsics, self._own_intrinsics = _camera(intrinsics)
        self.frame_id = frame_id
        self.live = live
        if isinstance(transport, str):
            self.options = Ros2Options(transport, domain, namespace, connect, distro, color, node, tuple(cameras))
            self.graph = self.options.check()
            self.transport = self._open(self.graph, self.options)
        else:  # a transport object of your own: publish(payloads), status(), close(), and its `graph`
            self.transport, self.graph = transport, transport.graph
        self.builder = MessageBuilder(self.graph, cloud_stride)
        # the counts, in the dict a run's metrics.json holds (run_info): published; dropped, frames replaced in the
        # mailbox before the publisher thread took them; failed, publishes that raised (said once)
        self.counts = {"transport": self.transport.name, "namespace": self.graph.namespace,
                       "domain": self.graph.domain, "distro": self.graph.distro, "published": 0, "dropped": 0,
                       "failed": 0}
        self.publish_seconds = 0.0
        self._error: str | None = None
        self._send = threading.Lock()  # the transport sends one frame at a time (several cameras' threads)
        self.streams: dict[str, CameraStream] = {}
        self._mailbox: Mailbox[FrameSnapshot] = Mailbox(self._publish_one, "ros2-publisher")

    @staticmethod
    def _open(graph: Graph, options: Ros2Options):
        if options.transport == "zenoh":
            from .zenoh import ZenohTransport

            return ZenohTransport(graph, options.connect)
        from .dds import DdsTransport

        return DdsTransport(graph)

    @property
    def topics(self) -> list[str]:
        return [t.name for t in self.graph.topics]

    @property
    def published(self) -> int:
        return self.counts["published"]

    @property
    def dropped(self) -> int:
        return self.counts["dropped"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    # -- the loop's side: hand over the newest frame, never wait ------------------------------------------------

    def write(self, frame: Frame, depth: np.ndarray, result, canvas) -> None:
        """FrameSink: this frame's topics (a frame read back by a resumed run is published too)."""
        self._write(frame, depth, camera_transform(result), self.intrinsics)

    def _write(self, frame: Frame, depth: np.ndarray, transform: Transform | None, intrinsics: IntrinsicsChoice) -> None:
        if self.graph.cameras:
            raise RuntimeError("this Ros2Publisher has several cameras: publish each one's frames through "
                               "stream(camera)")
        height, width = depth.shape[:2]
        meta = frame.meta if self._own_intrinsics is None else {**frame.meta, "intrinsics": self._own_intrinsics}
        k = intrinsics.for_frame(meta, height, width)
        self._post(FrameSnapshot(depth=depth, rgb=frame.rgb if frame.rgb.shape[:2] == (height, width) else None,
                                 stamp_ns=ros_time_ns(frame.meta, frame.timestamp, self.live),
                                 frame_id=frame.meta.get("frame_id") or self.frame_id, intrinsics=k,
                                 distortion=source_distortion(intrinsics, frame.meta), transform=transform))

    def publish(self, depth, *, rgb: np.ndarray | None = None, stamp_ns: int | None = None,
                camera_in_keyframe: np.ndarray | None = None, frame_id: str | None = None) -> None:
        """Python API: one frame's topics, without waiting. `depth`: float32 [H, W] metres (0 = no depth) or a
        smoothdino.DepthFrame (its depth; on /tf, the identity on a keyframe and its camera_in_keyframe between
        keyframes). `rgb`: the frame in RGB order at the depth's size, for coloured points and color/image.
        `stamp_ns`: capture time in ns since the UNIX epoch (default: now). `camera_in_keyframe`: 4x4, the camera in
        its keyframe's frame, published on /tf. The arrays are copied: reuse yours at once."""
        if self._mailbox.closed:
            raise RuntimeError("this Ros2Publisher is closed; open another")
        pose = camera_in_keyframe if camera_in_keyframe is not None else getattr(depth, "camera_in_keyframe", None)
        motion = SimpleNamespace(carry="pose" if pose is not None else getattr(depth, "carry", None),
                                 pose=camera_pose(pose) if pose is not None else None)
        metres = np.array(getattr(depth, "depth", depth), np.float32, copy=True)
        if metres.ndim != 2:
            raise ValueError(f"depth: expected a [H, W] map in metres, got {metres.dtype} {metres.shape}")
        if rgb is not None and (rgb.dtype != np.uint8 or rgb.shape != (*metres.shape, 3)):
            raise ValueError(f"rgb: expected uint8 {metres.shape[0]}x{metres.shape[1]}x3 (the depth's size), got "
                             f"{rgb.dtype} {rgb.shape}")
        meta = {"stamp_ns": int(stamp_ns if stamp_ns is not None else time.time_ns())}
        if frame_id:
            meta["frame_id"] = frame_id
        frame = Frame(np.array(rgb, copy=True) if rgb is not None else np.zeros((1, 1, 3), np.uint8), 0, "api",
                      meta["stamp_ns"] / 1e9, meta=meta)
        self._write(frame, metres, camera_transform(motion), self.intrinsics)

    def _post(self, snapshot: FrameSnapshot) -> None:
        if self._mailbox.put(snapshot):
            self.counts["dropped"] += 1

    # -- the publisher thread ------------------------------------------------------------------------------------

    def _publish_one(self, snapshot: FrameSnapshot, counts: dict | None = None) -> None:
        """Build the frame's messages (on the calling publisher thread) and send them (one thread at a time);
        `counts`: a camera stream's, counted besides the publisher's."""
        start = time.perf_counter()
        try:
            payloads = self.builder.build(snapshot)
            with self._send:
                self.transport.publish(payloads)
                self.counts["published"] += 1
            if counts is not None:
                counts["published"] += 1
        except Exception as err:  # noqa: BLE001 - ROS trouble must never end the depth loop
            with self._send:
                self.counts["failed"] += 1
                first, self._error = self._error is None, self._error or f"{type(err).__name__}: {err}"
            if counts is not None:
                counts["failed"] += 1
            if first:
                notice(f"ros2: publishing failed ({self._error}); the depth loop goes on")
        self.publish_seconds += time.perf_counter() - start

    def flush(self, timeout: float = CLOSE_WAIT_S) -> bool:
        """Wait until the frame in the mailbox (if any) is published; False if that took longer than `timeout`."""
        return self._mailbox.flush(timeout)

    def sequence_sink(self, intrinsics: IntrinsicsChoice | None = None) -> _SequenceSink:
        """A FrameSink for one of several streams sharing this publisher (process: one a sequence), with that
        stream's camera: closing it publishes the stream's last frame and keeps the publisher open for the next."""
        return _SequenceSink(self, intrinsics or self.intrinsics)

    def stream(self, camera: str, intrinsics: IntrinsicsChoice | None = None) -> CameraStream:
        """Camera `camera`'s FrameSink (the publisher opened with it in `cameras`): its topics under
        `<namespace>/<camera>/`, frame_id `<camera>_optical_frame`, its intrinsics; written from its thread."""
        if camera not in self.graph.cameras:
            raise ValueError(f"ros2: camera {camera!r} is not one of this publisher's ({', '.join(self.graph.cameras)})"
                             if self.graph.cameras else "ros2: open the publisher with cameras=(...) for streams")
        if camera in self.streams:
            raise ValueError(f"ros2: camera {camera!r} has a stream already")
        stream = CameraStream(self, camera, intrinsics or self.intrinsics)
        self.streams[camera] = stream
        return stream

    def summary(self) -> str:
        return (f"ros2 {self.transport.name}: {self.published} frames published to {self.graph.namespace}"
                + (f", {self.dropped} dropped (the publisher was still busy)" if self.dropped else "")
                + (f", {self.failed} failed ({self._error})" if self.failed else "")
                + (" (" + ", ".join(f"{name} {s.counts['published']}" + (f"/{s.counts['dropped']} dropped"
                                                                            if s.counts["dropped"] else "")
                                    for name, s in self.streams.items()) + ")" if self.streams else ""))

    def run_info(self) -> dict:
        """For a run's run_info (metrics.json's "run"): the counts dict itself, so the file written when the stream
        ends holds the counts of then (a frame still being published then is not in them). With several streams on
        one publisher (process), the counts since the publisher opened."""
        return {"ros2": self.counts}

    def close(self) -> None:
        """Publish the frame left in the mailbox (each camera stream's too), then leave the ROS graph. Safe to call
        twice."""
        for stream in list(self.streams.values()):
            stream.close()
        if not self._mailbox.close():
            return
        if not self._mailbox.join(CLOSE_WAIT_S) or not all(s.ended for s in self.streams.values()):
            notice(f"ros2: the last frame was still being published after {CLOSE_WAIT_S:g} s; not waiting for it")
            return
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _SequenceSink:
    def __init__(self, publisher: Ros2Publisher, intrinsics: IntrinsicsChoice):
        self.publisher = publisher
        self.intrinsics = intrinsics

    def write(self, frame, depth, result, canvas) -> None:
        self.publisher._write(frame, depth, camera_transform(result), self.intrinsics)

    def close(self) -> None:
        self.publisher.flush()


class CameraStream:
    """One camera's FrameSink on a shared Ros2Publisher (Ros2Publisher.stream): `write` is called from that camera's
    thread and never waits (a latest-wins mailbox and publisher thread of its own; `counts` are this camera's).
    Closing it publishes its last frame; the node stays for the other cameras until the publisher closes."""

    def __init__(self, publisher: Ros2Publisher, camera: str, intrinsics: IntrinsicsChoice):
        self.publisher, self.camera, self.intrinsics = publisher, camera, intrinsics
        self.frame_id = optical_frame(camera)
        graph = publisher.graph
        self.counts = {"transport": publisher.transport.name, "namespace": f"{graph.namespace.rstrip('/')}/{camera}",
                       "domain": graph.domain, "distro": graph.distro, "published": 0, "dropped": 0, "failed": 0}
        self._mailbox: Mailbox[FrameSnapshot] = Mailbox(lambda snap: publisher._publish_one(snap, self.counts),
                                                        f"ros2-{camera}")

    def write(self, frame: Frame, depth: np.ndarray, result, canvas) -> None:
        height, width = depth.shape[:2]
        snapshot = FrameSnapshot(depth=depth, rgb=frame.rgb if frame.rgb.shape[:2] == (height, width) else None,
                                 stamp_ns=ros_time_ns(frame.meta, frame.timestamp, self.publisher.live),
                                 frame_id=self.frame_id, intrinsics=self.intrinsics.for_frame(frame.meta, height, width),
                                 distortion=source_distortion(self.intrinsics, frame.meta),
                                 transform=camera_transform(result), camera=self.camera)
        if self._mailbox.put(snapshot):
            self.counts["dropped"] += 1
            with self.publisher._send:
                self.publisher.counts["dropped"] += 1

    @property
    def ended(self) -> bool:
        return self._mailbox.join(0)

    def run_info(self) -> dict:
        """For this camera's metrics.json ("run"): its counts (as Ros2Publisher.run_info)."""
        return {"ros2": self.counts}

    def close(self) -> None:
        """Publish the frame left in the mailbox and end the thread (within CLOSE_WAIT_S). Safe to call twice."""
        self._mailbox.close()
        if not self._mailbox.join(CLOSE_WAIT_S):
            notice(f"ros2 {self.camera}: the last frame was still being published after {CLOSE_WAIT_S:g} s; "
                   "not waiting for it")
