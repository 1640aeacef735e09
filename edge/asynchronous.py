"""`live --async`: the output rate is the camera's, whatever the network costs.

The network runs in a worker thread, on the newest frame whenever it is free (a frame that arrives while it is
busy replaces the one waiting; the network never queues up). Every source frame is output at once with the
latest finished keyframe's depth carried to it (edge.carry, by the shift or the pose, as `process` carries), so the
output path costs a motion measurement and a carry (a few ms), never a network pass. Frames before the first
keyframe finishes have no depth: they are counted (`waiting`), never shown with a made-up one. A scene cut (the view
no longer overlaps the keyframe's) gives no depth either until a keyframe of the new scene is ready.

The worker thread creates the pipeline itself and is the only thread that touches it: TensorRT execution
contexts belong to the thread that created them (the engines refuse another thread), and ONNX Runtime gets a
thread of its own. `threads` sets the network's CPU threads: on a small CPU, leave the output path a core.

With fusion (edge.fusion), a keyframe's depth is fused, in the caller's thread when it arrives, with the output this
pipeline gave its frame (the earlier keyframe's fused depth carried there), and that fused depth is what later frames
carry: the same fusion `process` runs, on the keyframes the network had time for.

For the pose carry the caller's thread follows corners from the frame the network is working on, so that when its
depth arrives the tracks to the current frame are there: it keeps the last few frames' greys to catch up from.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from smoothdino.core.errors import UserError

from .carry import NONE, Carried
from .fusion import DEFAULT_FUSION, FusionSettings
from .keyframes import (
    FrameGreys,
    KeyframeMotion,
    carried_result,
    carry_to,
    frame_greys,
    fused_result,
    parse_carry,
    pose_intrinsics,
)
from .pipeline import STAGE_TIMINGS, FramePipeline, FrameResult
from .sources.intrinsics import Intrinsics

CATCH_UP = 8  # frames of greys kept to start the tracks of a frame the network took a little while ago


@dataclass
class _Keyframe:
    depth: np.ndarray  # read-only: carried to every later frame
    greys: FrameGreys  # what its motion is measured from
    index: int
    timestamp: float
    timings: dict[str, float]
    result: FrameResult | None = None  # the network's own result (fusion takes it)


class AsyncPipeline:
    """A pipeline behind a worker thread. `step(rgb, timestamp)` never waits for the network: it returns the
    newest keyframe's depth carried to `rgb`, or None before the first keyframe is ready. Use as a context
    manager (close() stops the worker, which closes its pipeline, and raises an error the worker met that no step
    has raised yet)."""

    def __init__(self, open_pipeline: Callable[[], FramePipeline], startup_timeout: float = 600.0,
                 carry: str = "shift", intrinsics: Intrinsics | None = None, fusion: bool = False,
                 fusion_settings: FusionSettings = DEFAULT_FUSION):
        self._open_pipeline = open_pipeline
        self.carry = parse_carry(carry)
        self.fusion, self.fusion_settings = bool(fusion), fusion_settings
        self._priors: dict[int, tuple[Carried, int]] = {}  # frame index -> (the output it was given, its age)
        self._fused: tuple[int, np.ndarray, np.ndarray | None] | None = None  # (key index, fused depth, state)
        self._lock = threading.Condition()
        self._waiting: tuple | None = None  # (rgb, greys, index, timestamp, generation)
        self._in_flight: tuple[int, FrameGreys] | None = None  # the frame the network is working on
        self._latest: _Keyframe | None = None
        self._error: BaseException | None = None
        self._stop = False
        self._closed = False
        self._ready = threading.Event()
        self.passes = 0  # network passes finished
        self.replaced = 0  # frames handed to the network and replaced by a newer one before it took them
        self._index = 0
        self._generation = 0  # reset() starts a new one: a pass of the old sequence is not published
        self._cut_at: int | None = None  # a scene cut at this frame: no depth until a keyframe at or after it
        self._greys: deque[tuple[int, FrameGreys]] = deque(maxlen=CATCH_UP)
        self._motions: dict[int, KeyframeMotion] = {}  # frame index -> motion measured from it (key and in flight)
        self.pipeline: FramePipeline | None = None
        self._thread = threading.Thread(target=self._work, name="network", daemon=True)
        self._thread.start()
        if not self._ready.wait(startup_timeout):
            with self._lock:  # the worker closes the pipeline and ends once it has opened
                self._stop = True
            raise UserError(f"the network did not open within {startup_timeout:g} s (engines still loading or "
                            "building?); run it once without a time-out, or raise the time-out")
        if self._error is not None:
            self._thread.join()
            raise self._error
        # what the loop reads of a pipeline: constant after opening, so reading them here is safe
        self.frame_size = self.pipeline.frame_size
        self.motion_downscale = self.pipeline.motion_downscale
        self.min_confidence = self.pipeline.min_confidence
        self.k: np.ndarray | None = None
        if intrinsics is not None:
            self.set_intrinsics(intrinsics)

    def set_intrinsics(self, intrinsics: Intrinsics | None) -> None:
        """The camera's intrinsics (any image size: scaled to the network's); the pose carry needs them."""
        self.k = pose_intrinsics(self.carry, intrinsics, self.frame_size)

    def __getattr__(self, name: str):  # description, identity, random_weights, weights, refuse_size, ...
        if name.startswith("_") or self.__dict__.get("pipeline") is None:
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    # -- the worker thread: the only one that touches the pipeline --------------------------------

    def _work(self) -> None:
        try:
            pipeline = self._open_pipeline()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            self._error = err
            self._ready.set()
            return
        with self._lock:
            self.pipeline = pipeline
            stopped = self._stop  # the caller gave up waiting
        self._ready.set()
        seen = 0
        try:
            while not stopped:
                with self._lock:
                    while self._waiting is None and not self._stop:
                        self._lock.wait()
                    if self._stop:
                        return
                    (rgb, greys, index, timestamp, generation), self._waiting = self._waiting, None
                    self._in_flight = (index, greys)
                if generation != seen:
                    pipeline.reset()  # the adapter's previous keyframe belongs to another sequence
                    seen = generation
                result = pipeline.step(rgb)
                depth = result.depth
                depth.flags.writeable = False  # carried to every later frame: nobody edits it
                with self._lock:
                    self.passes += 1
                    if generation == self._generation:
                        self._latest = _Keyframe(depth, greys, index, timestamp, result.timings, result)
        except BaseException as err:  # noqa: BLE001
            with self._lock:
                self._error = err
        finally:
            pipeline.close()

    # -- the caller's thread ----------------------------------------------------------------------

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def step(self, rgb: np.ndarray, timestamp: float | None = None) -> FrameResult | None:
        start = time.perf_counter()
        if self._closed:
            raise RuntimeError("this AsyncPipeline is closed (its network thread has ended); open another")
        timestamp = time.monotonic() if timestamp is None else timestamp
        greys = frame_greys(rgb, self.motion_downscale, self.carry == "pose")
        with self._lock:
            self._raise_error()
            self.replaced += self._waiting is not None
            self._waiting = (rgb, greys, self._index, timestamp, self._generation)  # the newest: the next pass takes it
            self._lock.notify()
            key, in_flight = self._latest, self._in_flight
        index, self._index = self._index, self._index + 1
        mark = time.perf_counter()
        motion = self._follow(greys, index, key, in_flight)
        self._greys.append((index, greys))
        if key is None:
            return None
        timings = dict.fromkeys(STAGE_TIMINGS, 0.0)
        timings["motion"] = time.perf_counter() - mark
        for stage in ("encoder", "adapter", "decoder"):  # what the keyframe's pass cost (on the worker)
            timings[stage] = key.timings.get(stage, 0.0)
        if motion.cut and (self._cut_at is None or self._cut_at <= key.index):
            self._cut_at = index  # the view left the keyframe's scene: no depth until a keyframe of the new one
        cut_frame = self._cut_at == index
        if cut_frame and hasattr(self.pipeline, "hurry"):  # a shared network (edge.shared_network) serves this camera first
            self.pipeline.hurry()
        mark = time.perf_counter()
        depth = self._fused_depth(key, timings) if self.fusion else key.depth
        if self._cut_at is not None and key.index < self._cut_at:
            carried = Carried(np.zeros_like(key.depth), NONE)
        else:
            self._cut_at = None
            if self.carry == "pose" and self.k is None:
                pose_intrinsics(self.carry, None, self.frame_size)  # raises: one line naming the fix
            carried = carry_to(depth, motion, self.k, self._motions[key.index].tracks)
        timings["propagate"] = time.perf_counter() - mark - timings["fusion"]
        timings["total"] = time.perf_counter() - start
        result = carried_result(carried, motion, timings, index - key.index, (timestamp - key.timestamp) * 1000.0)
        result.scene_cut = cut_frame
        result.fused = self.fusion
        if self.fusion:  # what this frame was given: the fusion's start should the network take this frame
            self._priors = {i: p for i, p in self._priors.items() if i > index - CATCH_UP}  # the worker may take any
            if carried.carry != NONE:
                self._priors[index] = (carried, index - key.index)
        return result

    def _fused_depth(self, key: _Keyframe, timings: dict[str, float]) -> np.ndarray:
        """The keyframe's depth fused with the output its frame was given (once per keyframe, here in the caller's
        thread: a few ms); its fused depth is what every later frame carries."""
        if self._fused is None or self._fused[0] != key.index:
            prior, age = self._priors.pop(key.index, (None, 1))
            state = self._fused[2] if self._fused is not None and prior is not None else None
            result = FrameResult(depth=key.depth, shift=key.result.shift, scene_cut=False, timings={})
            fused_result(result, prior, age, state, self.fusion_settings)
            result.depth.flags.writeable = False
            self._fused = (key.index, result.depth, result.fusion.state)
            timings["fusion"] = result.timings["fusion"]
        return self._fused[1]

    def _follow(self, greys: FrameGreys, index: int, key: _Keyframe | None, in_flight: tuple | None):
        """Measure this frame from the keyframe (and keep following the frame in flight); the keyframe's motion."""
        wanted = dict([in_flight] if in_flight else [])
        if key is not None:
            wanted[key.index] = key.greys
        for stale in set(self._motions) - set(wanted):
            del self._motions[stale]
        for start, start_greys in wanted.items():
            if start not in self._motions:
                self._motions[start] = self._caught_up(start, start_greys)
        measured = {i: m.measure(greys) for i, m in self._motions.items()}
        return measured[key.index] if key is not None else None

    def _caught_up(self, index: int, greys: FrameGreys) -> KeyframeMotion:
        """The motion from frame `index`, its corners followed over the frames kept since (usually one or two); a
        frame older than those is followed from itself straight to the next frame."""
        motion = KeyframeMotion(greys, self.motion_downscale, self.min_confidence)
        for i, later in self._greys:
            if i > index:
                motion.measure(later)
        return motion

    def reset(self) -> None:
        """A new sequence: the next output waits for a keyframe of it."""
        with self._lock:
            self._latest, self._waiting, self._in_flight = None, None, None
            self._generation += 1
        self._priors.clear()
        self._fused = None
        self._cut_at = None
        self._motions.clear()
        self._greys.clear()

    def close(self) -> None:
        """Stop the worker; raise the error it met if no step has raised it yet."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join()
        with self._lock:
            self._raise_error()

    def __enter__(self) -> "AsyncPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
