"""`live --async`: the output rate is the camera's, whatever the network costs.

The network runs in a worker thread, on the newest frame whenever it is free (a frame that arrives while it is
busy replaces the one waiting; the network never queues up). Every source frame is output at once with the
latest finished keyframe's depth carried to it by the camera shift (edge.keyframes.translate_depth), so the
output path costs a phase correlation and a translation (a few ms), never a network pass. Frames before the
first keyframe finishes have no depth: they are counted (`waiting`), never shown with a made-up one.

The worker thread creates the pipeline itself and is the only thread that touches it: TensorRT execution
contexts belong to the thread that created them (the engines refuse another thread), and ONNX Runtime gets a
thread of its own. `threads` sets the network's CPU threads: on a small CPU, leave the output path a core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .keyframes import translate_depth
from .motion import phase_shift, to_grey
from .pipeline import STAGE_TIMINGS, FramePipeline, FrameResult


@dataclass
class _Keyframe:
    depth: np.ndarray
    grey: np.ndarray
    index: int
    timestamp: float
    timings: dict[str, float]


class AsyncPipeline:
    """A pipeline behind a worker thread. `step(rgb, timestamp)` never waits for the network: it returns the
    newest keyframe's depth carried to `rgb`, or None before the first keyframe is ready. Use as a context
    manager (close() stops the worker, which closes its pipeline)."""

    def __init__(self, open_pipeline: Callable[[], FramePipeline], startup_timeout: float = 600.0):
        self._open_pipeline = open_pipeline
        self._lock = threading.Condition()
        self._waiting: tuple | None = None  # (rgb, grey, index, timestamp, generation)
        self._latest: _Keyframe | None = None
        self._error: BaseException | None = None
        self._stop = False
        self._ready = threading.Event()
        self.passes = 0  # network passes finished
        self.replaced = 0  # frames handed to the network and replaced by a newer one before it took them
        self._index = 0
        self._generation = 0  # reset() starts a new one: a pass of the old sequence is not published
        self.pipeline: FramePipeline | None = None
        self._thread = threading.Thread(target=self._work, name="network", daemon=True)
        self._thread.start()
        self._ready.wait(startup_timeout)
        if self._error is not None:
            self._thread.join()
            raise self._error
        # what the loop reads of a pipeline: constant after opening, so reading them here is safe
        self.frame_size = self.pipeline.frame_size
        self.motion_downscale = self.pipeline.motion_downscale

    def __getattr__(self, name: str):  # description, identity, random_weights, weights, refuse_size, ...
        if name.startswith("_") or self.__dict__.get("pipeline") is None:
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    # -- the worker thread: the only one that touches the pipeline --------------------------------

    def _work(self) -> None:
        try:
            self.pipeline = self._open_pipeline()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        seen = 0
        try:
            while True:
                with self._lock:
                    while self._waiting is None and not self._stop:
                        self._lock.wait()
                    if self._stop:
                        return
                    (rgb, grey, index, timestamp, generation), self._waiting = self._waiting, None
                if generation != seen:
                    self.pipeline.reset()  # the adapter's previous keyframe belongs to another sequence
                    seen = generation
                result = self.pipeline.step(rgb)
                with self._lock:
                    self.passes += 1
                    if generation == self._generation:
                        self._latest = _Keyframe(result.depth, grey, index, timestamp, result.timings)
        except BaseException as err:  # noqa: BLE001
            with self._lock:
                self._error = err
        finally:
            self.pipeline.close()

    # -- the caller's thread ----------------------------------------------------------------------

    def step(self, rgb: np.ndarray, timestamp: float | None = None) -> FrameResult | None:
        start = time.perf_counter()
        timestamp = time.monotonic() if timestamp is None else timestamp
        grey = to_grey(rgb, self.motion_downscale)
        with self._lock:
            if self._error is not None:
                raise self._error
            self.replaced += self._waiting is not None
            self._waiting = (rgb, grey, self._index, timestamp, self._generation)  # the newest frame: the next network pass takes it
            self._lock.notify()
            key = self._latest
        index, self._index = self._index, self._index + 1
        if key is None:
            return None
        mark = time.perf_counter()
        shift = phase_shift(key.grey, grey, self.motion_downscale)
        timings = dict.fromkeys(STAGE_TIMINGS, 0.0)
        timings["motion"] = time.perf_counter() - mark
        mark = time.perf_counter()
        depth = translate_depth(key.depth, shift.dx, shift.dy)
        timings["propagate"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - start
        for stage in ("encoder", "adapter", "decoder"):  # what the keyframe's pass cost (on the worker)
            timings[stage] = key.timings.get(stage, 0.0)
        return FrameResult(depth=depth, shift=shift, scene_cut=False, timings=timings, keyframe=index == key.index,
                           age_frames=index - key.index, age_ms=(timestamp - key.timestamp) * 1000.0)

    def reset(self) -> None:
        """A new sequence: the next output waits for a keyframe of it."""
        with self._lock:
            self._latest, self._waiting = None, None
            self._generation += 1

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join()

    def __enter__(self) -> "AsyncPipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
