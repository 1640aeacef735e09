"""The three-stage depth pipeline, wired from an export's manifest.json.

    frame -> encoder -> (adapter: current levels, previous levels, shift) -> decoder -> depth [H,W] m
               |                         ^
               +-- raw levels kept ------+   (the previous frame is never encoded twice)
    grey frame -> phase correlation (worker thread, overlaps the encoder) -> shift

First frame and scene cuts (phase-correlation confidence below `min_confidence`): previous := current and
shift := (0, 0, 0), which closes the temporal adapter's gate. A `paper` export has its constant offsets
folded into the decoder and no adapter stage: it is skipped.

Several sequences (cameras) on one pipeline: what a sequence carries from frame to frame is a `TemporalState`
(the previous frame's raw levels and grey frame). The pipeline keeps one of its own for `step(rgb)`; a caller
serving several cameras keeps one per camera and passes it:

    states = {name: pipeline.new_state() for name in cameras}
    result = pipeline.step(rgb, state=states[name])              # one camera's frame
    results = pipeline.step_batch([rgb_a, rgb_b], [states["a"], states["b"]])   # one pass, several cameras

A state is never read or written by another sequence's step, so the temporal adapter's previous features never
cross cameras; `pipeline.temporal_state` gets or swaps the pipeline's own. `step_batch` runs the encoder, adapter
and decoder once on the stacked frames (an export with `--batch N`: `pipeline.max_batch`), each item with its own
previous levels, shift and scene-cut decision: its depth equals that item's `step` (within float round-off).
Whether a batch pays is measured, not assumed: edge/batching.py `choose_batch`.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from smoothdino.core.errors import UserError

from .carry import CameraPose
from .fusion import Fused
from .engines import TENSORRT_BACKENDS, Manifest, open_engine, resolve_backend, to_host
from .motion import NO_SHIFT, Shift, phase_shift, scene_cut, to_grey

STAGE_TIMINGS = ("pre", "motion", "encoder", "adapter", "decoder", "post", "propagate", "fusion", "total")


@dataclass
class FrameResult:
    depth: np.ndarray  # float32 [H,W], metres
    shift: Shift
    scene_cut: bool
    timings: dict[str, float]  # seconds per stage, see STAGE_TIMINGS
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # host copies, with keep_outputs=True
    nonfinite: int = 0  # NaN/Inf depth pixels (e.g. an FP16 overflow), returned as 0 = no depth
    keyframe: bool = True  # the network ran on this frame; False: a keyframe's depth carried here (edge.keyframes)
    age_frames: int = 0  # frames since the keyframe whose depth this is (0 on a keyframe)
    age_ms: float = 0.0  # how old that depth is, in milliseconds (0 on a keyframe)
    carry: str = "network"  # how the depth got here: network (a keyframe) | pose | shift | none (edge.carry)
    pose: CameraPose | None = None  # carry == "pose": the camera's motion since the keyframe
    tracked: int = 0  # corners followed from the keyframe to this frame (pose carry)
    fallback: str = ""  # why a pose carry fell back to the shift
    fusion: Fused | None = None  # a keyframe's fusion with the previous output (edge.fusion); None: not fused
    fused: bool = False  # the depth is fused (a fused keyframe, or carried from one)
    flicker: tuple[float, float] | None = None  # (median, p90) against the previous output (edge.flicker), by the loop
    batch: int = 1  # frames in the network pass that made this depth (step_batch); timings are that pass's

    @property
    def inliers(self) -> int:
        """PnP inliers of the pose carry (0 otherwise)."""
        return self.pose.inliers if self.pose is not None else 0


@dataclass(eq=False)
class TemporalState:
    """What one sequence (one camera) carries from one frame to the next through a FramePipeline: the previous
    frame's raw encoder levels (in the back-end's own form: numpy arrays, device tensors, torch tensors) and its
    grey frame (phase correlation). Empty at the start of a sequence, after a scene is dropped (non-finite levels)
    and after a step that failed. Make one per camera with `pipeline.new_state()`; it belongs to that pipeline (its
    levels are that pipeline's tensors) and is never shared between sequences."""

    levels: Any = None
    grey: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return self.levels is None

    def clear(self) -> None:
        self.levels = self.grey = None


class FramePipeline:
    """The per-frame method, once for every back-end: reset / prime / step -> FrameResult.

    Subclasses give the stages (`_encode`, `_adapt`, `_decode`, `_depth_to_host`); this class owns the
    order, the previous-frame state, the scene-cut rule and the phase correlation that runs beside the
    encoder. DepthPipeline (engines) and smoothdino.models.TorchPipeline (eager PyTorch) are the two.

    Per-sequence state is a TemporalState: `step(rgb)` uses the pipeline's own (`temporal_state`), `step(rgb,
    state=s)` / `prime(rgb, state=s)` / `reset(state=s)` one the caller keeps per camera, and `step_batch(frames,
    states)` several at once in one network pass (up to `max_batch` frames)."""

    backend = "?"
    has_adapter = False
    max_batch: int | None = 1  # frames one network pass takes (None: any number; eager torch)

    def _init_frame_state(self, frame_size, min_confidence: float, motion_downscale: int, keep_outputs: bool) -> None:
        self.frame_size = tuple(frame_size)
        self.min_confidence = min_confidence
        self.motion_downscale = max(1, int(motion_downscale))
        self.keep_outputs = keep_outputs
        self.runs: Counter[str] = Counter()  # stage -> runs, so tests can count encoder passes
        self._motion = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phase-correlation")
        self._state = TemporalState()  # the sequence step(rgb) continues; callers with several keep their own
        self._several = False  # a state other than the pipeline's own has been used (see _keep)

    # -- stages, given by the back-end ------------------------------------------------------------

    def _encode(self, rgb: np.ndarray): ...

    def _adapt(self, levels, previous, shift: Shift): ...

    def _decode(self, levels): ...

    def _depth_to_host(self, depth) -> np.ndarray: ...

    def _levels_to_host(self, levels, prefix: str = "") -> dict[str, np.ndarray]:
        return {}

    # batched stages (step_batch with more than one frame): levels of N frames <-> N levels of one frame
    def _encode_batch(self, rgbs: np.ndarray):
        raise NotImplementedError(f"{self.description}: no batched encoder")

    def _stack_levels(self, items: list):
        raise NotImplementedError

    def _split_levels(self, levels, n: int) -> list:
        raise NotImplementedError

    def _depths_to_host(self, depth, n: int) -> list[np.ndarray]:
        raise NotImplementedError

    def _keep(self, levels, state: TemporalState):
        """The levels a state keeps until its next frame. Host back-ends get fresh arrays per run: kept as they are.
        A device back-end whose encoder writes into a fixed set of buffers copies them once several states share
        the pipeline (DepthPipeline on TensorRT)."""
        return levels

    # -- sequence state -----------------------------------------------------------------------------

    def new_state(self) -> TemporalState:
        """An empty state for one more sequence (camera) on this pipeline."""
        return TemporalState()

    @property
    def temporal_state(self) -> TemporalState:
        """The pipeline's own sequence state, the one `step(rgb)` continues."""
        return self._state

    @temporal_state.setter
    def temporal_state(self, state: TemporalState | None) -> None:
        self._state = self._use(state) if state is not None else TemporalState()

    def _use(self, state: TemporalState | None) -> TemporalState:
        if state is None:
            return self._state
        if not isinstance(state, TemporalState):
            raise TypeError(f"state must be a TemporalState (pipeline.new_state()), not {type(state).__name__}")
        if state is not self._state and not self._several:
            self._several = True
            self._state.levels = self._keep(self._state.levels, self._state)  # before another state's encoder run
        return state

    # -- the method -------------------------------------------------------------------------------

    def reset(self, state: TemporalState | None = None) -> None:
        """Start a new sequence (the pipeline's own, or `state`'s): its next frame has no previous frame."""
        (state or self._state).clear()

    def _check(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise UserError(f"frames must be uint8 RGB HxWx3, got {rgb.dtype} {rgb.shape}")
        if rgb.shape[:2] != self.frame_size:
            self.refuse_size(*rgb.shape[:2])

    def refuse_size(self, height: int, width: int) -> None:
        h, w = self.frame_size
        raise UserError(f"input: frames are {height}x{width} but {self.description} was made for {h}x{w}; "
                        f"resize the frames (core.resize_rgb) or build it with size {height}x{width}")

    def _timed_encode(self, rgb: np.ndarray):
        self.runs["encoder"] += 1
        return self._encode(rgb)

    def prime(self, rgb: np.ndarray, state: TemporalState | None = None) -> None:
        """Make `rgb` the previous frame (of the pipeline's own sequence, or `state`'s) without producing depth
        (resuming mid-sequence exactly). The rule step applies holds here too: a frame whose levels are not finite
        leaves no previous frame."""
        state = self._use(state)
        self._check(rgb)
        levels = self._timed_encode(np.ascontiguousarray(rgb))
        if self._levels_finite(levels):
            state.levels, state.grey = self._keep(levels, state), to_grey(rgb, self.motion_downscale)
        else:
            state.clear()

    def _levels_finite(self, levels) -> bool:
        """Every value of the encoder's levels is finite (host copies: only asked after a non-finite depth, or
        once when priming)."""
        return all(bool(np.isfinite(v).all()) for v in self._levels_to_host(levels).values())

    def _timed_shift(self, previous_grey, grey):
        start = time.perf_counter()
        shift = phase_shift(previous_grey, grey, self.motion_downscale)
        return shift, time.perf_counter() - start

    def step(self, rgb: np.ndarray, state: TemporalState | None = None) -> FrameResult:
        """One frame (uint8 RGB at the frame size) -> metric depth, continuing the pipeline's own sequence or
        `state`'s (one per camera). A step that fails part-way resets that sequence: the encoder's ping-pong
        buffers may have turned, so the kept levels are no longer safe."""
        state = self._use(state)
        try:
            return self._step(rgb, state)
        except BaseException:
            state.clear()
            raise

    def _step(self, rgb: np.ndarray, state: TemporalState) -> FrameResult:
        t = dict.fromkeys(STAGE_TIMINGS, 0.0)
        start = time.perf_counter()
        self._check(rgb)
        rgb = np.ascontiguousarray(rgb)
        grey = to_grey(rgb, self.motion_downscale)
        motion = None if state.empty else self._motion.submit(self._timed_shift, state.grey, grey)
        t["pre"] = time.perf_counter() - start

        mark = time.perf_counter()
        levels = self._timed_encode(rgb)
        t["encoder"] = time.perf_counter() - mark

        shift, cut = NO_SHIFT, False
        if motion is not None:
            measured, t["motion"] = motion.result()  # usually done already: it ran beside the encoder
            shift, cut = scene_cut(measured, self.min_confidence)
        previous = levels if state.empty or cut else state.levels

        fused = levels
        if self.has_adapter:
            mark = time.perf_counter()
            self.runs["adapter"] += 1
            fused = self._adapt(levels, previous, shift)
            t["adapter"] = time.perf_counter() - mark

        mark = time.perf_counter()
        self.runs["decoder"] += 1
        depth_out = self._decode(fused)
        t["decoder"] = time.perf_counter() - mark

        mark = time.perf_counter()
        depth = self._depth_to_host(depth_out)
        nonfinite = int(depth.size - np.count_nonzero(np.isfinite(depth)))
        if nonfinite:  # 0 is "no depth" in every output format; the garbage never leaves the pipeline
            depth = np.where(np.isfinite(depth), depth, np.float32(0.0)).astype(np.float32)
        outputs = {}
        if self.keep_outputs:
            outputs = self._levels_to_host(levels)
            if fused is not levels:
                outputs.update(self._levels_to_host(fused, "fused_"))
            outputs["depth"] = depth
        # levels that overflowed would poison the next frame: it starts afresh, as after a scene cut. Non-finite levels
        # always give non-finite depth (every decoder path from them is a convolution), so they are looked at only
        # then; the rule reads the frame's own levels alone, so prime() applies it exactly when resuming
        if nonfinite and not self._levels_finite(levels):
            state.clear()
        else:
            state.levels, state.grey = self._keep(levels, state), grey
        t["post"] = time.perf_counter() - mark
        t["total"] = time.perf_counter() - start
        return FrameResult(depth=depth, shift=shift, scene_cut=cut, timings=t, outputs=outputs, nonfinite=nonfinite)

    def step_batch(self, frames: list[np.ndarray], states: list[TemporalState]) -> list[FrameResult]:
        """Several sequences' frames (one per state, e.g. one per camera) in one network pass -> one FrameResult
        each, in order. Each item has its own previous levels, grey frame, shift and scene-cut decision, exactly as
        `step(frames[i], state=states[i])` would: the batch changes how the stages run, not what an item gets.
        Up to `max_batch` frames (an export's `--batch N`); more is refused in one line. One frame is `step`.
        A batch that fails part-way resets every state in it. Each result's timings are the whole pass's (the
        latency each frame saw; per frame divide by `batch`)."""
        if len(frames) != len(states):
            raise ValueError(f"step_batch: {len(frames)} frames but {len(states)} states")
        if not frames:
            return []
        states = [self._use(s) for s in states]
        if len({id(s) for s in states}) != len(states):
            raise ValueError("step_batch: one state twice in a batch (a sequence's frames run one after another)")
        if len(frames) == 1:
            return [self.step(frames[0], states[0])]
        self.check_batch(len(frames))
        try:
            return self._step_batch(frames, states)
        except BaseException:
            for s in states:
                s.clear()
            raise

    def check_batch(self, n: int) -> None:
        """Refuse, in one line, a pass of more frames than the pipeline takes."""
        if self.max_batch is not None and n > self.max_batch:
            raise UserError(f"{self.description}: a pass of {n} frames, but it takes at most {self.max_batch}; "
                            f"export with --batch {n} (or pass at most {self.max_batch} frames)")

    def _step_batch(self, frames: list[np.ndarray], states: list[TemporalState]) -> list[FrameResult]:
        n = len(frames)
        t = dict.fromkeys(STAGE_TIMINGS, 0.0)
        start = time.perf_counter()
        for rgb in frames:
            self._check(rgb)
        rgbs = np.ascontiguousarray(np.stack(frames))
        greys = [to_grey(rgb, self.motion_downscale) for rgb in rgbs]
        motions = [None if s.empty else self._motion.submit(self._timed_shift, s.grey, g) for s, g in zip(states, greys)]
        t["pre"] = time.perf_counter() - start

        mark = time.perf_counter()
        self.runs["encoder"] += n
        batched = self._encode_batch(rgbs)
        t["encoder"] = time.perf_counter() - mark
        levels = self._split_levels(batched, n)

        shifts, cuts, previous = [], [], []
        for i, (motion, s) in enumerate(zip(motions, states)):
            shift, cut = NO_SHIFT, False
            if motion is not None:
                measured, seconds = motion.result()
                t["motion"] += seconds
                shift, cut = scene_cut(measured, self.min_confidence)
            shifts.append(shift)
            cuts.append(cut)
            previous.append(levels[i] if s.empty or cut else s.levels)

        fused = batched
        if self.has_adapter:
            mark = time.perf_counter()
            self.runs["adapter"] += n
            shift_array = np.concatenate([sh.as_array() for sh in shifts])
            fused = self._adapt(batched, self._stack_levels(previous), shift_array)
            t["adapter"] = time.perf_counter() - mark

        mark = time.perf_counter()
        self.runs["decoder"] += n
        depth_out = self._decode(fused)
        t["decoder"] = time.perf_counter() - mark

        mark = time.perf_counter()
        depths = self._depths_to_host(depth_out, n)
        fused_items = self._split_levels(fused, n) if self.keep_outputs and fused is not batched else None
        results = []
        for i, (depth, s) in enumerate(zip(depths, states)):
            nonfinite = int(depth.size - np.count_nonzero(np.isfinite(depth)))
            if nonfinite:
                depth = np.where(np.isfinite(depth), depth, np.float32(0.0)).astype(np.float32)
            outputs = {}
            if self.keep_outputs:
                outputs = self._levels_to_host(levels[i])
                if fused_items is not None:
                    outputs.update(self._levels_to_host(fused_items[i], "fused_"))
                outputs["depth"] = depth
            if nonfinite and not self._levels_finite(levels[i]):
                s.clear()
            else:
                s.levels, s.grey = self._keep(levels[i], s), greys[i]
            results.append(FrameResult(depth=depth, shift=shifts[i], scene_cut=cuts[i], timings=t, outputs=outputs,
                                       nonfinite=nonfinite, batch=n))
        t["post"] = time.perf_counter() - mark
        t["total"] = time.perf_counter() - start
        for result in results:
            result.timings = dict(t)
        return results

    @property
    def description(self) -> str:
        return self.backend

    @property
    def weights(self) -> dict[str, str]:
        """stage -> weights id (file@sha256 or random-weights(seed=N))."""
        return {}

    @property
    def random_weights(self) -> bool:
        return any(w.startswith("random-weights") for w in self.weights.values())

    def close(self) -> None:
        self._motion.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DepthPipeline(FramePipeline):
    """The three stages as engines (ONNX Runtime or TensorRT) from an export's manifest.json."""

    def __init__(
        self,
        manifest: Manifest,
        backend: str = "auto",
        precision: str | None = None,
        min_confidence: float = 0.1,
        motion_downscale: int = 1,
        keep_outputs: bool = False,
        threads: int | None = None,
    ):
        self.manifest = manifest
        self.precision = precision or manifest.precision
        have_engines = all(manifest.stages[s].engine for s in manifest.stage_names)
        self.backend = resolve_backend(backend, have_engines and self.precision == manifest.precision,
                                       manifest.tensorrt_flavour)
        if self.backend in TENSORRT_BACKENDS:
            from .machine.environment import gpu, tensorrt_version

            manifest.check_tensorrt(tensorrt_version(self.backend), gpu(), flavour=self.backend)
        self.engines, self.files = {}, {}  # stage -> engine, and the graph/engine file it was opened from
        for stage in manifest.stage_names:
            if self.backend in TENSORRT_BACKENDS:
                # Two output sets for the encoder: frame t-1's levels survive frame t's encoding.
                self.files[stage] = manifest.engine_path(stage)
                self.engines[stage] = open_engine(self.files[stage], self.backend,
                                                  output_sets=2 if stage == "encoder" else 1)
            else:
                # the manifest's own precision: each stage's graph (per-stage plans); else that precision's
                own = None if self.precision == manifest.precision else self.precision
                self.files[stage] = manifest.onnx_path(stage, own)
                self.engines[stage] = open_engine(self.files[stage], "onnxruntime", threads=threads)
        self.has_adapter = "adapter" in self.engines
        self.max_batch = manifest.max_batch  # an export with --batch N takes 1..N frames a pass
        self._init_frame_state(manifest.frame_size, min_confidence, motion_downscale, keep_outputs)

    @classmethod
    def from_folder(cls, folder: Path, **kwargs) -> "DepthPipeline":
        return cls(Manifest.load(folder), **kwargs)

    @property
    def description(self) -> str:
        m = self.manifest
        providers = getattr(self.engines["encoder"], "providers", None)
        where = f"onnxruntime[{','.join(p.replace('ExecutionProvider', '') for p in providers)}]" if providers else self.backend
        return f"{m.arch}+{m.adapter} {self.precision} {m.frame_size[0]}x{m.frame_size[1]} on {where}"

    @property
    def weights(self) -> dict[str, str]:
        return dict(self.manifest.weights)

    @property
    def identity(self) -> str:
        """What produced a depth map: model, weights, precision, size (back-ends agree within tolerance)."""
        m = self.manifest
        weights = ",".join(f"{k}={v}" for k, v in sorted(m.weights.items()))
        return f"{m.arch}+{m.adapter}/{m.head}/{self.precision}/{m.frame_size[0]}x{m.frame_size[1]}/{weights}"

    def refuse_size(self, height: int, width: int) -> None:
        self.manifest.check_frame_size(height, width, "input")

    def check_batch(self, n: int) -> None:
        self.manifest.check_batch(n, "step_batch")

    def _encode(self, rgb: np.ndarray) -> dict:
        return self.engines["encoder"].run({"image": rgb[None]})

    def _adapt(self, levels: dict, previous: dict, shift: Shift | np.ndarray) -> dict:
        feeds = dict(levels)
        feeds.update({f"prev_{k}": v for k, v in previous.items()})
        feeds["shift"] = shift.as_array() if isinstance(shift, Shift) else shift  # [N,3] in a batch
        out = self.engines["adapter"].run(feeds)
        return {k[len("fused_"):]: v for k, v in out.items()}

    def _decode(self, levels: dict):
        return self.engines["decoder"].run(levels)["depth"]

    def _depth_to_host(self, depth) -> np.ndarray:
        return to_host(depth)[0, 0]

    # batched: numpy arrays on ONNX Runtime, device tensors (views and copies, no host trip) on TensorRT
    def _encode_batch(self, rgbs: np.ndarray) -> dict:
        return self.engines["encoder"].run({"image": rgbs})

    def _stack_levels(self, items: list[dict]) -> dict:
        if self.backend in TENSORRT_BACKENDS:
            return self.engines["adapter"].stack_inputs({f"prev_{k}": [it[k] for it in items] for k in items[0]},
                                                        strip="prev_")
        return {k: np.concatenate([it[k] for it in items]) for k in items[0]}

    def _split_levels(self, levels: dict, n: int) -> list[dict]:
        return [{k: v[i:i + 1] for k, v in levels.items()} for i in range(n)]  # views (DeviceTensor slices too)

    def _depths_to_host(self, depth, n: int) -> list[np.ndarray]:
        host = to_host(depth)
        return [host[i, 0] for i in range(n)]

    def _keep(self, levels, state):
        """TensorRT: the encoder writes into two output sets (ping-pong), which is safe for one sequence; once
        several states share the pipeline, or a level is a slice of a batch's output, the state keeps a device copy
        of its own (a device-to-device copy, reusing the state's buffers)."""
        if levels is None or self.backend not in TENSORRT_BACKENDS:
            return levels
        if not self._several and not any(getattr(v, "is_view", False) for v in levels.values()):
            return levels
        return self.engines["encoder"].copy_levels(levels, state.levels)

    def _levels_to_host(self, levels: dict, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": to_host(v) for k, v in levels.items()}

    def close(self) -> None:
        super().close()
        self._state.clear()  # device levels (TensorRT) go before the engines that made them
        for engine in self.engines.values():
            engine.close()
        self.engines = {}
