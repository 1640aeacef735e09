"""One network for several cameras: `live --source A --source B ...`.

One pipeline (one set of engines, one copy of the weights in memory) runs in one worker thread, the only thread
that touches it (TensorRT contexts belong to the thread that made them). Each camera gets a `NetworkLane`: a
FramePipeline-shaped handle whose step/prime/reset are carried out on the worker with that camera's own temporal
state (the adapter's previous features and grey frame, an `edge.pipeline.TemporalState` passed to each step), so one
camera's features never reach another's adapter. Everything else per camera (keyframe policy, carry,
tracks, fusion, metrics, outputs) stays in that camera's own loop, which takes its lane as its pipeline: `live
--no-async` steps the lane in the camera's thread (KeyframeSteps), `live` (async) puts an AsyncPipeline in front of
it, whose thread asks the lane for the newest frame whenever the last pass is done.

Fair scheduling: when several cameras wait, the worker serves the one whose depth is oldest (its last pass began
longest ago; a camera never served goes first), and a camera whose view was cut (`lane.hurry()`) before that. So a
camera waits at most one pass per other camera for its next pass, and a stalled or unplugged camera asks for
nothing: it never holds the others or the network.

Batching (`batch` > 1, an export with a batch axis, see edge.batching): several cameras' waiting frames go through
one pass; each keeps its own temporal state."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from smoothdino.core.errors import UserError

from .pipeline import FramePipeline, FrameResult


@dataclass
class LaneStats:
    """What one camera got from the shared network."""

    passes: int = 0
    waited_s: float = 0.0  # total time its requests waited for the worker
    max_wait_s: float = 0.0
    batched: int = 0  # passes it shared with other cameras (batching)
    max_wait_passes: int = 0  # the most passes for other cameras that began while one of its requests waited

    def as_dict(self) -> dict:
        return {"passes": self.passes, "mean_wait_ms": round(1000 * self.waited_s / max(self.passes, 1), 2),
                "max_wait_ms": round(1000 * self.max_wait_s, 2), "max_wait_passes": self.max_wait_passes,
                "batched_passes": self.batched}


@dataclass
class _Request:
    lane: "NetworkLane"
    kind: str  # "step" | "prime"
    rgb: np.ndarray
    asked: float = field(default_factory=time.monotonic)
    asked_at_pass: int = 0  # the network's pass count when it was asked
    done: threading.Event = field(default_factory=threading.Event)
    result: FrameResult | None = None
    error: BaseException | None = None


class SharedNetwork:
    """A pipeline behind one worker thread, shared by lanes (`lane(name)`). Use as a context manager: close() stops
    the worker, which closes the pipeline; an error the worker met opening the pipeline is raised by the
    constructor, one met on a pass by the step that asked for it."""

    def __init__(self, open_pipeline: Callable[[], FramePipeline], startup_timeout: float = 600.0, batch: int = 1):
        self._open_pipeline = open_pipeline
        self.batch = max(1, int(batch))
        self._lock = threading.Condition()
        self._queue: list[_Request] = []
        self._lanes: list[NetworkLane] = []
        self._stop = False
        self._closed = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.pipeline: FramePipeline | None = None
        self.passes = 0  # network passes (a batched pass counts once)
        self.frames = 0  # frames through the network
        self.busy_s = 0.0  # time the worker spent in passes
        self.queue_sum = 0  # requests waiting when each pass began, the served ones included (mean queue = sum / passes)
        self.started = time.monotonic()  # again once the pipeline is open: the rates leave its loading out
        self._thread = threading.Thread(target=self._work, name="shared-network", daemon=True)
        self._thread.start()
        if not self._ready.wait(startup_timeout):
            with self._lock:
                self._stop = True
            raise UserError(f"the network did not open within {startup_timeout:g} s (engines still loading or "
                            "building?); run it once without a time-out, or raise the time-out")
        if self._error is not None:
            self._thread.join()
            raise self._error
        self.started = time.monotonic()
        self.batch = min(self.batch, self.pipeline.max_batch or self.batch)

    def lane(self, name: str) -> "NetworkLane":
        """A camera's handle on the network (its own temporal state, its own statistics)."""
        with self._lock:
            if any(lane.name == name for lane in self._lanes):
                raise UserError(f"two cameras are named {name!r}; give each source its own --name")
            lane = NetworkLane(self, name, self.pipeline.new_state())
            self._lanes.append(lane)
            return lane

    @property
    def lanes(self) -> list["NetworkLane"]:
        return list(self._lanes)

    # -- the worker thread --------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            pipeline = self._open_pipeline()
        except BaseException as err:  # noqa: BLE001 - handed to the constructor's thread
            self._error = err
            self._ready.set()
            return
        self.pipeline = pipeline
        self._ready.set()
        try:
            while True:
                with self._lock:
                    while not self._queue and not self._stop:
                        self._lock.wait()
                    if self._stop:
                        break
                    taken = self._take()
                self._serve(pipeline, taken)
        finally:
            with self._lock:  # nobody waits forever on a request the worker will never serve
                for request in self._queue:
                    request.error = RuntimeError("the shared network was closed")
                    request.done.set()
                self._queue.clear()
            pipeline.close()

    def _take(self) -> list[_Request]:
        """The requests of the next pass (under the lock): the camera whose view was cut first, then the one whose
        last pass began longest ago; with batching, more step requests after it, in the same order."""
        self._queue.sort(key=lambda r: (not r.lane.hurried, r.lane.last_served, r.asked))
        first = self._queue[0]
        taken = [first]
        if self.batch > 1 and first.kind == "step":
            taken += [r for r in self._queue[1:] if r.kind == "step"][: self.batch - 1]
        self.queue_sum += len(self._queue)
        for request in taken:
            self._queue.remove(request)
        return taken

    def _serve(self, pipeline: FramePipeline, taken: list[_Request]) -> None:
        start = time.monotonic()
        for request in taken:
            lane = request.lane
            wait = start - request.asked
            lane.stats.passes += 1
            lane.stats.waited_s += wait
            lane.stats.max_wait_s = max(lane.stats.max_wait_s, wait)
            lane.stats.batched += len(taken) > 1
            lane.stats.max_wait_passes = max(lane.stats.max_wait_passes, self.passes - request.asked_at_pass)
            lane.last_served, lane.hurried = start, False
        try:
            if len(taken) > 1:
                results = pipeline.step_batch([r.rgb for r in taken], [r.lane.state for r in taken])
                for request, result in zip(taken, results):
                    request.result = result
            else:
                request = taken[0]
                if request.kind == "step":  # a step that fails clears the lane's state: it starts afresh
                    request.result = pipeline.step(request.rgb, state=request.lane.state)
                else:
                    pipeline.prime(request.rgb, state=request.lane.state)
        except BaseException as err:  # noqa: BLE001 - raised in the camera's thread that asked
            for request in taken:
                request.error = err
                pipeline.reset(state=request.lane.state)
        finally:
            self.passes += 1
            self.frames += len(taken)
            self.busy_s += time.monotonic() - start
            for request in taken:
                request.done.set()

    # -- the cameras' threads -----------------------------------------------------------------------

    def _ask(self, request: _Request) -> FrameResult | None:
        with self._lock:
            if self._stop:
                raise RuntimeError("the shared network is closed")
            request.asked_at_pass = self.passes
            self._queue.append(request)
            self._lock.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def summary(self) -> dict:
        """The network's figures for metrics: passes a second, frames a pass, mean queue, each camera's share."""
        seconds = max(time.monotonic() - self.started, 1e-6)
        return {"cameras": len(self._lanes), "passes": self.passes, "frames": self.frames,
                "passes_per_s": round(self.passes / seconds, 3), "frames_per_s": round(self.frames / seconds, 3),
                "busy": round(self.busy_s / seconds, 3), "batch": self.batch,
                "mean_queue": round(self.queue_sum / max(self.passes, 1), 3),
                "lanes": {lane.name: lane.stats.as_dict() for lane in self._lanes}}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join()

    def __enter__(self) -> "SharedNetwork":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NetworkLane:
    """One camera's handle on a SharedNetwork, shaped like a FramePipeline (what KeyframeSteps and AsyncPipeline
    use of one): step, prime and reset act on this camera's temporal state only; the pipeline's constants
    (frame_size, description, weights, ...) are the shared pipeline's. close() is the camera's: the network stays."""

    def __init__(self, network: SharedNetwork, name: str, state):
        self.network = network
        self.name = name
        self.state = state  # the camera's TemporalState on the shared pipeline: only the worker reads or writes it
        self.stats = LaneStats()
        self.last_served = float("-inf")  # when its last pass began: the oldest goes first
        self.hurried = False  # its view was cut: served before the others

    def __getattr__(self, name: str):  # frame_size, motion_downscale, min_confidence, description, identity, ...
        if name.startswith("_") or name in ("network", "pipeline"):
            raise AttributeError(name)
        return getattr(self.network.pipeline, name)

    def step(self, rgb: np.ndarray) -> FrameResult:
        return self.network._ask(_Request(self, "step", rgb))

    def prime(self, rgb: np.ndarray) -> None:
        self.network._ask(_Request(self, "prime", rgb))

    def reset(self) -> None:
        """This camera's next frame has no previous frame (the others keep theirs). Only this camera's thread asks
        the lane for anything, and it waits for each answer, so no pass of this lane is running now."""
        self.state.clear()

    def hurry(self) -> None:
        """This camera's view was cut: its next request goes before the others'."""
        self.hurried = True

    def close(self) -> None:
        pass

    def __enter__(self) -> "NetworkLane":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
