"""The Python API: live metric depth inside your own program (a ROS 2 node, a grasp planner, a mapper).

    import cv2
    import smoothdino

    with smoothdino.open("engines/vits14-temporal", colour="bgr") as model:   # engines close on leaving
        frame = cv2.imread("frame.jpg")                                       # any size, uint8, BGR as declared
        out = model.step(frame)                                               # a DepthFrame
        out.depth                                                             # float32 [H, W] metres, 0 = no depth
        cloud = model.to_points(out.depth, (fx, fy, cx, cy), frame=frame)     # x right, y down, z forward

One object is one camera stream: the temporal adapter fuses each frame with the previous one, so frames go in
in order, and `reset()` starts another sequence. Frames of any size are resized to the export's as `process`
and `live` resize them (core.images.resize_rgb, area) and depth comes back at the frame's size
(core.images.resize_depth, linear): `step` gives exactly the depth `smoothdino process` writes for the same
frames. The colour order is stated (`colour="rgb"` or `"bgr"`), never guessed.

`keyframes` runs the network on some frames only and carries the last keyframe's depth to the others
(edge.keyframes.KeyframeSteps, as `process --keyframes`); `asynchronous=True` is `live --async`: the network
runs in its own thread on the newest frame and `step` never waits for it (edge.asynchronous.AsyncPipeline).
Nothing here imports PyTorch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import cv2
import numpy as np
from smoothdino.core.backends import backend_word
from smoothdino.core.console import RANDOM_WEIGHTS_BANNER
from smoothdino.core.errors import UserError
from smoothdino.core.images import resize_depth, resize_rgb

from .asynchronous import AsyncPipeline
from .fusion import fusion_enabled, parse_fusion
from .keyframes import KeyframePolicy, KeyframeSteps, parse_carry, parse_keyframes
from .motion import Shift
from .pipeline import DepthPipeline, FramePipeline, FrameResult
from .shared_network import SharedNetwork
from .ros2 import Ros2Publisher  # noqa: F401 - the API's ROS 2 publisher: DepthFrames as live topics
from .sinks.pointcloud import PointCloud, depth_to_points
from .sources.intrinsics import Intrinsics

Colour = Literal["rgb", "bgr"]
# Intrinsics (any image size: scaled to the depth map's), or fx, fy, cx, cy in pixels of the depth map
IntrinsicsLike = Intrinsics | Sequence[float]
COLOURS = ("rgb", "bgr")


@dataclass
class DepthFrame:
    """One frame's depth and where it came from."""

    depth: np.ndarray  # float32 [H, W], metres, at the input frame's size; 0 = no depth
    keyframe: bool  # the network ran on this frame (False: a keyframe's depth carried here by the camera shift)
    age_frames: int  # frames since the keyframe whose depth this is (0 on a keyframe)
    age_ms: float  # how old that depth is, in milliseconds (0 on a keyframe)
    shift: Shift  # camera shift in pixels of the export's frame size (dx, dy) and its confidence
    scene_cut: bool  # the view changed too much: the temporal adapter started afresh on this frame
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (edge.pipeline.STAGE_TIMINGS)
    nonfinite: int = 0  # NaN/Inf pixels the network produced (an FP16 overflow), returned as 0
    carry: str = "network"  # how the depth got here: network (a keyframe), pose, shift, none (after a scene cut)
    inliers: int = 0  # PnP inliers of a pose carry
    camera_in_keyframe: np.ndarray | None = None  # pose carry: 4x4, this camera's pose in the keyframe's frame
    fused: bool = False  # fusion ran: this depth (or its keyframe's) is the network's fused with the earlier output


def _depth_frame(result: FrameResult, size: tuple[int, int]) -> DepthFrame:
    pose = result.pose.camera_in_keyframe() if result.pose is not None else None
    return DepthFrame(depth=resize_depth(result.depth, size), keyframe=result.keyframe, age_frames=result.age_frames,
                      age_ms=result.age_ms, shift=result.shift, scene_cut=result.scene_cut,
                      timings=dict(result.timings), nonfinite=result.nonfinite, carry=result.carry,
                      inliers=result.inliers, camera_in_keyframe=pose, fused=result.fused)


def _colour(colour: str) -> Colour:
    word = str(colour).strip().lower()
    if word not in COLOURS:
        raise ValueError(f"colour={colour!r}: say which order the frames' channels are in, 'rgb' or 'bgr' "
                         "(OpenCV reads and captures BGR)")
    return word  # type: ignore[return-value]


def check_frame(frame: object, colour: Colour) -> None:
    """A ValueError, in one line with the fix, for anything but a uint8 H x W x 3 numpy array."""
    upper = colour.upper()
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame: expected a numpy uint8 HxWx3 {upper} array, got {type(frame).__name__}")
    got = f"got {frame.dtype} {frame.shape}"
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise ValueError(f"frame: expected uint8 HxWx3 {upper}, {got} (grey): "
                         f"convert with cv2.cvtColor(frame, cv2.COLOR_GRAY2{upper})")
    if frame.ndim != 3 or frame.shape[2] != 3:
        fix = f": drop alpha with cv2.cvtColor(frame, cv2.COLOR_{upper}A2{upper})" \
            if frame.ndim == 3 and frame.shape[2] == 4 else ""
        raise ValueError(f"frame: expected uint8 HxWx3 {upper}, {got}{fix}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame: expected uint8 HxWx3 {upper}, {got}: scale to 0..255 and use .astype(np.uint8)")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame: empty, {got}")


def as_intrinsics(intrinsics: IntrinsicsLike, height: int, width: int) -> Intrinsics:
    """The camera at a `height` x `width` image: an Intrinsics of any size is scaled to it; fx, fy, cx, cy are
    taken as pixels of that image."""
    if isinstance(intrinsics, Intrinsics):
        return intrinsics.scaled(int(height), int(width))
    values = [float(v) for v in intrinsics]
    if len(values) != 4 or values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"intrinsics {intrinsics!r}: give an Intrinsics or fx, fy, cx, cy in pixels (fx, fy > 0)")
    return Intrinsics(*values, width=int(width), height=int(height))


class _Session:
    """What both modes share: frame checks and resizing, point clouds, closing."""

    def __init__(self, pipeline: FramePipeline | AsyncPipeline, stepper: KeyframeSteps | AsyncPipeline,
                 colour: Colour, intrinsics: IntrinsicsLike | None = None):
        self._pipeline = pipeline  # closed with the session
        self._stepper = stepper  # what reset() restarts
        self._intrinsics = intrinsics  # resolved at the first frame (fx, fy, cx, cy are pixels of the frames)
        self.carry: str = stepper.carry  # how frames between keyframes get depth: "shift" or "pose"
        frame_size, description, random_weights = pipeline.frame_size, pipeline.description, pipeline.random_weights
        self.colour: Colour = colour
        self.frame_size: tuple[int, int] = tuple(frame_size)  # (height, width) the network runs at
        self.description: str = description  # model, precision, size and back-end, as the CLI prints it
        self.random_weights: bool = random_weights  # True: a test export, depth values are not metric
        self._closed = False
        if random_weights:
            warnings.warn(RANDOM_WEIGHTS_BANNER, stacklevel=4)  # at the caller of open_depth

    @property
    def closed(self) -> bool:
        """True once close() ran (the engines are released; step raises)."""
        return self._closed

    def _network_rgb(self, frame: np.ndarray, colour: str | None) -> np.ndarray:
        """The frame as the network takes it: RGB at the export's size."""
        self._check_open()
        rgb = self._as_rgb(frame, colour)
        if self._intrinsics is not None:  # the first frame says what size fx, fy, cx, cy belong to
            self._stepper.set_intrinsics(as_intrinsics(self._intrinsics, *frame.shape[:2]))
            self._intrinsics = None
        return resize_rgb(rgb, self.frame_size)

    def _as_rgb(self, frame: np.ndarray, colour: str | None) -> np.ndarray:
        """The frame checked and in RGB order (the declared order, or `colour` for this call)."""
        order = self.colour if colour is None else _colour(colour)
        check_frame(frame, order)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if order == "bgr" else frame

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this smoothdino depth session is closed (its engines are released); open another")

    def to_points(self, depth: np.ndarray | DepthFrame, intrinsics: IntrinsicsLike, *, stride: int = 1,
                  frame: np.ndarray | None = None, colour: Colour | None = None) -> PointCloud:
        """Depth -> 3-D points in the camera's optical frame (x right, y down, z forward; metres), as the PLY and
        bag writers compute them (edge.sinks.pointcloud.depth_to_points): every `stride`-th pixel each way with
        depth > 0. `intrinsics`: an Intrinsics (scaled to the depth map) or fx, fy, cx, cy in pixels of the depth
        map (= of the frame given to step). `frame`: that frame (colour order as declared, or `colour`), for
        coloured points. Returns a PointCloud: .xyz float32 [N, 3], .rgb uint8 [N, 3] or None, .pixels [N, 2]."""
        depth = depth.depth if isinstance(depth, DepthFrame) else np.asarray(depth)
        if depth.ndim != 2:
            raise ValueError(f"depth: expected a [H, W] map in metres, got {depth.dtype} {depth.shape}")
        rgb = self._as_rgb(frame, colour) if frame is not None else None
        return depth_to_points(depth, as_intrinsics(intrinsics, *depth.shape), stride, rgb)

    def reset(self) -> None:
        """A new sequence (another camera, a cut in the video): the next frame does not fuse with the last (a
        synchronous session's next frame is a keyframe; an async one's step returns None until one is ready)."""
        self._check_open()
        self._stepper.reset()

    def close(self) -> None:
        """Release the engines (and the worker thread). Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._pipeline.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.description} colour={self.colour} {state}>"


class DepthSession(_Session):
    """Depth for every frame, computed in the calling thread (`step` returns when the depth is ready). With a
    keyframe policy, the network runs only on keyframes and the other frames get the last keyframe's depth moved
    by the camera shift. TensorRT engines belong to the thread that opened them: call step from that thread (or
    use asynchronous=True)."""

    def __init__(self, pipeline: FramePipeline, colour: Colour, keyframes: KeyframePolicy, carry: str = "shift",
                 intrinsics: IntrinsicsLike | None = None, fusion: bool = False):
        self._steps = KeyframeSteps(pipeline, keyframes, carry, fusion=fusion)  # the camera comes with the first frame
        self.keyframes: KeyframePolicy = keyframes
        super().__init__(pipeline, self._steps, colour, intrinsics)

    def step(self, frame: np.ndarray, *, colour: Colour | None = None, timestamp: float | None = None) -> DepthFrame:
        """The next frame of the sequence (uint8 H x W x 3, any size, in the declared colour order or `colour`)
        -> its DepthFrame, depth at the frame's size. `timestamp` (seconds, the capture time) dates carried
        depth (age_ms); without it, the time since the keyframe's depth was ready."""
        rgb = self._network_rgb(frame, colour)
        return _depth_frame(self._steps.step(rgb, timestamp), frame.shape[:2])


class AsyncDepthSession(_Session):
    """`live --async`: the network runs in its own thread on the newest frame; `step` never waits for it and
    returns the latest keyframe's depth carried to this frame by the camera shift (a few ms), or None until the
    first keyframe is ready. The worker thread opens and alone touches the engines (TensorRT included)."""

    def __init__(self, pipeline: AsyncPipeline, colour: Colour, intrinsics: IntrinsicsLike | None = None):
        super().__init__(pipeline, pipeline, colour, intrinsics)

    @property
    def passes(self) -> int:
        """Network passes finished so far (fewer than frames when the network is slower than the camera)."""
        return self._pipeline.passes

    def step(self, frame: np.ndarray, *, colour: Colour | None = None,
             timestamp: float | None = None) -> DepthFrame | None:
        """The newest frame -> a DepthFrame (depth at the frame's size, `age_frames` >= 1: the keyframe is an
        earlier frame), or None before the first keyframe of the sequence is ready. `timestamp`: capture time in
        seconds on one clock (default: time.monotonic() now). Raises an error the network thread met."""
        rgb = self._network_rgb(frame, colour)
        rgb = np.array(rgb, copy=True)  # the worker reads it later: the caller may reuse its buffer meanwhile
        result = self._pipeline.step(rgb, timestamp)
        return None if result is None else _depth_frame(result, frame.shape[:2])



@overload
def open_depth(export_dir: str | os.PathLike, *, colour: Colour | None = ..., color: Colour | None = ...,
               backend: str = ..., keyframes: str | int | KeyframePolicy = ..., asynchronous: Literal[False] = ...,
               threads: int | None = ..., min_confidence: float = ..., motion_downscale: int = ...,
               carry: str | None = ..., intrinsics: IntrinsicsLike | None = ...,
               fusion: str = ...) -> DepthSession: ...


@overload
def open_depth(export_dir: str | os.PathLike, *, colour: Colour | None = ..., color: Colour | None = ...,
               backend: str = ..., keyframes: str | int | KeyframePolicy = ..., asynchronous: Literal[True],
               threads: int | None = ..., min_confidence: float = ..., motion_downscale: int = ...,
               carry: str | None = ..., intrinsics: IntrinsicsLike | None = ...,
               fusion: str = ...) -> AsyncDepthSession: ...


def open_depth(export_dir: str | os.PathLike, *, colour: Colour | None = None, color: Colour | None = None,
               backend: str = "auto", keyframes: str | int | KeyframePolicy = "every", asynchronous: bool = False,
               threads: int | None = None, min_confidence: float = 0.1,
               motion_downscale: int = 1, carry: str | None = None,
               intrinsics: IntrinsicsLike | None = None, fusion: str = "auto") -> DepthSession | AsyncDepthSession:
    """Open an export (a folder with manifest.json, from `smoothdino export`) for one camera stream; `smoothdino.open`.

    colour (or color): the frames' channel order, "rgb" or "bgr" (OpenCV: "bgr"); required, never guessed.
    backend: "auto" (TensorRT where its engines can run, else ONNX Runtime, with a notice), "onnxruntime",
        "tensorrt" or "tensorrt-rtx".
    keyframes: "every" (the network on every frame), N (on frames 0, N, 2N, ...) or "auto" (when the camera moved
        too far from the last keyframe): as `process --keyframes`.
    asynchronous: True for `live --async` (an AsyncDepthSession; keyframes must stay "every").
    threads: ONNX Runtime's CPU threads (default: its own choice). min_confidence: the scene-cut threshold.
    motion_downscale: phase correlation on frames shrunk by this factor (1: as `process`; `live` uses 2).
    carry: how frames between keyframes get the keyframe's depth: "pose" (the camera's 3-D motion; needs
        `intrinsics`) or "shift" (a translation). Default: "pose" when `intrinsics` are given, else "shift".
    intrinsics: the camera, an Intrinsics (any size) or fx, fy, cx, cy in pixels of the frames given to step.
    fusion: "auto" (the default: each keyframe's depth fused with the earlier output where the camera is known, i.e.
        with the pose carry: steadier and more accurate), "on" (with the shift carry too) or "off" (the network's
        depth as it comes, as the SmoothDINOv2 paper evaluates it). DepthFrame.fused says whether it ran.

    Every array a session returns is the caller's to keep and edit: the session keeps its own copies.

    Bad arguments raise ValueError; a missing or unusable export raises smoothdino.core.errors.UserError naming
    the file and the fix. Use the session as a context manager (or call close()) to release the engines."""
    order = _order(colour, color, "open_depth")
    carry, policy, fused = _camera_choices(carry, intrinsics, keyframes, fusion, asynchronous)
    folder = Path(export_dir)
    options = _pipeline_options(backend, min_confidence, motion_downscale, threads)
    return _session(lambda: DepthPipeline.from_folder(folder, **options), order, policy, carry, intrinsics, fused,
                    asynchronous)


def _order(colour: str | None, color: str | None, function: str) -> Colour:
    if colour is None and color is None:  # as for any missing keyword: the order is never guessed
        raise TypeError(f"{function}() missing the keyword argument 'colour' (or 'color'): 'rgb' or 'bgr'")
    if colour is not None and color is not None and _colour(colour) != _colour(color):
        raise ValueError(f"colour={colour!r} and color={color!r}: give the frames' channel order once")
    return _colour(colour if colour is not None else color)


def _camera_choices(carry, intrinsics, keyframes, fusion, asynchronous: bool):
    """(carry, keyframe policy, fusion on?) for one camera, checked (ValueError in one line)."""
    try:
        carry = parse_carry(carry if carry is not None else "pose" if intrinsics is not None else "shift", "carry")
        if carry == "pose" and intrinsics is None:
            raise UserError("carry='pose' needs the camera: pass intrinsics=(fx, fy, cx, cy) in pixels of your frames, "
                            "or an Intrinsics")
        policy = parse_keyframes(keyframes, option="keyframes", carry=carry)
        fused = fusion_enabled(parse_fusion(fusion, "fusion"), carry)
    except UserError as err:
        raise ValueError(str(err)) from None
    if asynchronous and policy.mode != "every":
        raise ValueError(f"keyframes={keyframes!r} with asynchronous=True: the asynchronous session runs the network "
                         "whenever it is free (on the newest frame); leave keyframes='every'")
    return carry, policy, fused


def _pipeline_options(backend, min_confidence, motion_downscale, threads) -> dict:
    try:
        backend = backend_word(str(backend), option="backend")
    except UserError as err:
        raise ValueError(str(err)) from None
    return {"backend": backend, "min_confidence": float(min_confidence), "motion_downscale": int(motion_downscale),
            "threads": threads}


def _session(open_pipeline, order: Colour, policy, carry: str, intrinsics, fused: bool, asynchronous: bool):
    if asynchronous:
        return AsyncDepthSession(AsyncPipeline(open_pipeline, carry=carry, fusion=fused), order, intrinsics)
    return DepthSession(open_pipeline(), order, policy, carry, intrinsics, fused)


class CameraSessions(Mapping):
    """Several cameras on one network (`smoothdino.open_cameras`): camera name -> its session (a DepthSession, or an
    AsyncDepthSession with asynchronous=True), each with its own temporal state, keyframes, carry and fusion, all on
    one set of engines in one worker thread (edge.shared_network: the camera whose depth is oldest is served first).
    Step each camera from any thread, e.g. one per camera. `network` gives the shared figures (passes a second,
    queue, each camera's passes and waits). Closing it (or leaving the `with`) closes every session and the engines."""

    def __init__(self, network: SharedNetwork, sessions: dict[str, _Session]):
        self.network = network
        self._sessions = sessions

    def __getitem__(self, name: str) -> _Session:
        return self._sessions[name]

    def __iter__(self):
        return iter(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def summary(self) -> dict:
        """The shared network's figures (SharedNetwork.summary)."""
        return self.network.summary()

    def close(self) -> None:
        """Close every camera's session, then the engines. Safe to call twice."""
        for session in self._sessions.values():
            session.close()
        self.network.close()

    def __enter__(self) -> "CameraSessions":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CameraSessions {', '.join(self._sessions)} on {self.network.pipeline.description}>"


def open_cameras(export_dir: str | os.PathLike, cameras: Sequence[str], *, colour: Colour | None = None,
                 color: Colour | None = None, backend: str = "auto", keyframes: str | int | KeyframePolicy = "every",
                 asynchronous: bool = False, threads: int | None = None, min_confidence: float = 0.1,
                 motion_downscale: int = 1, carry: str | None = None,
                 intrinsics: IntrinsicsLike | Mapping[str, IntrinsicsLike] | None = None, fusion: str = "auto",
                 batch: str | int = "auto") -> CameraSessions:
    """Open an export once for several cameras (`smoothdino.open_cameras`): `live --source A --source B` in your
    own program. `cameras`: their names; `intrinsics`: one camera model for all, or a mapping name -> its own (a
    camera left out has none). `batch`: frames one network pass may take (auto: only where the export measured a
    batch faster a frame here; edge.batching). Every other argument is open_depth's, the same for every camera.

        with smoothdino.open_cameras("engines/vits14-temporal", ["front", "wrist"], colour="bgr") as cams:
            front = cams["front"].step(front_frame)    # from the front camera's thread
            wrist = cams["wrist"].step(wrist_frame)    # from the wrist camera's thread
    """
    from smoothdino.edge.batching import batch_decision, parse_setting

    order = _order(colour, color, "open_cameras")
    names = [str(name) for name in cameras]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"cameras={list(cameras)!r}: give each camera a name of its own (at least one)")
    each = dict(intrinsics) if isinstance(intrinsics, Mapping) else {name: intrinsics for name in names}
    unknown = set(each) - set(names)
    if unknown:
        raise ValueError(f"intrinsics for {sorted(unknown)[0]!r}, which is not one of cameras={names!r}")
    choices = {name: _camera_choices(carry, each.get(name), keyframes, fusion, asynchronous) for name in names}
    try:
        setting = parse_setting(batch)
    except UserError as err:
        raise ValueError(str(err).replace("--batch", "batch=")) from None
    folder = Path(export_dir)
    options = _pipeline_options(backend, min_confidence, motion_downscale, threads)
    network = SharedNetwork(lambda: DepthPipeline.from_folder(folder, **options))
    sessions: dict[str, _Session] = {}
    try:
        network.batch = batch_decision(network.pipeline.manifest, len(names), network.pipeline.backend, setting)[0]
        for name in names:
            lane = network.lane(name)
            carry_of, policy, fused = choices[name]
            sessions[name] = _session(lambda lane=lane: lane, order, policy, carry_of, each.get(name), fused,
                                      asynchronous)
    except BaseException:
        for session in sessions.values():
            session.close()
        network.close()
        raise
    return CameraSessions(network, sessions)
