"""The three-stage depth pipeline, wired from an export's manifest.json.

    frame -> encoder -> (adapter: current levels, previous levels, shift) -> decoder -> depth [H,W] m
               |                         ^
               +-- raw levels kept ------+   (the previous frame is never encoded twice)
    grey frame -> phase correlation (worker thread, overlaps the encoder) -> shift

First frame and scene cuts (phase-correlation confidence below `min_confidence`): previous := current and
shift := (0, 0, 0), which closes the temporal adapter's gate. A `paper` export has its constant offsets
folded into the decoder and no adapter stage: it is skipped.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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

    @property
    def inliers(self) -> int:
        """PnP inliers of the pose carry (0 otherwise)."""
        return self.pose.inliers if self.pose is not None else 0


class FramePipeline:
    """The per-frame method, once for every back-end: reset / prime / step -> FrameResult.

    Subclasses give the stages (`_encode`, `_adapt`, `_decode`, `_depth_to_host`); this class owns the
    order, the previous-frame state, the scene-cut rule and the phase correlation that runs beside the
    encoder. DepthPipeline (engines) and smoothdino.models.TorchPipeline (eager PyTorch) are the two."""

    backend = "?"
    has_adapter = False

    def _init_frame_state(self, frame_size, min_confidence: float, motion_downscale: int, keep_outputs: bool) -> None:
        self.frame_size = tuple(frame_size)
        self.min_confidence = min_confidence
        self.motion_downscale = max(1, int(motion_downscale))
        self.keep_outputs = keep_outputs
        self.runs: Counter[str] = Counter()  # stage -> runs, so tests can count encoder passes
        self._motion = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phase-correlation")
        self._previous: tuple[dict, np.ndarray] | None = None  # (raw levels, grey frame)

    # -- stages, given by the back-end ------------------------------------------------------------

    def _encode(self, rgb: np.ndarray): ...

    def _adapt(self, levels, previous, shift: Shift): ...

    def _decode(self, levels): ...

    def _depth_to_host(self, depth) -> np.ndarray: ...

    def _levels_to_host(self, levels, prefix: str = "") -> dict[str, np.ndarray]:
        return {}

    # -- the method -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new sequence: the next frame has no previous frame."""
        self._previous = None

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

    def prime(self, rgb: np.ndarray) -> None:
        """Make `rgb` the previous frame without producing depth (resuming mid-sequence exactly). The rule step
        applies holds here too: a frame whose levels are not finite leaves no previous frame."""
        self._check(rgb)
        levels = self._timed_encode(np.ascontiguousarray(rgb))
        self._previous = (levels, to_grey(rgb, self.motion_downscale)) if self._levels_finite(levels) else None

    def _levels_finite(self, levels) -> bool:
        """Every value of the encoder's levels is finite (host copies: only asked after a non-finite depth, or
        once when priming)."""
        return all(bool(np.isfinite(v).all()) for v in self._levels_to_host(levels).values())

    def _timed_shift(self, previous_grey, grey):
        start = time.perf_counter()
        shift = phase_shift(previous_grey, grey, self.motion_downscale)
        return shift, time.perf_counter() - start

    def step(self, rgb: np.ndarray) -> FrameResult:
        """One frame (uint8 RGB at the frame size) -> metric depth. A step that fails part-way resets the
        sequence: the encoder's ping-pong buffers may have turned, so the kept levels are no longer safe."""
        try:
            return self._step(rgb)
        except BaseException:
            self.reset()
            raise

    def _step(self, rgb: np.ndarray) -> FrameResult:
        t = dict.fromkeys(STAGE_TIMINGS, 0.0)
        start = time.perf_counter()
        self._check(rgb)
        rgb = np.ascontiguousarray(rgb)
        grey = to_grey(rgb, self.motion_downscale)
        motion = self._motion.submit(self._timed_shift, self._previous[1], grey) if self._previous else None
        t["pre"] = time.perf_counter() - start

        mark = time.perf_counter()
        levels = self._timed_encode(rgb)
        t["encoder"] = time.perf_counter() - mark

        shift, cut = NO_SHIFT, False
        if motion is not None:
            measured, t["motion"] = motion.result()  # usually done already: it ran beside the encoder
            shift, cut = scene_cut(measured, self.min_confidence)
        previous = levels if self._previous is None or cut else self._previous[0]

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
        self._previous = None if nonfinite and not self._levels_finite(levels) else (levels, grey)
        t["post"] = time.perf_counter() - mark
        t["total"] = time.perf_counter() - start
        return FrameResult(depth=depth, shift=shift, scene_cut=cut, timings=t, outputs=outputs, nonfinite=nonfinite)

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

    def _encode(self, rgb: np.ndarray) -> dict:
        return self.engines["encoder"].run({"image": rgb[None]})

    def _adapt(self, levels: dict, previous: dict, shift: Shift) -> dict:
        feeds = dict(levels)
        feeds.update({f"prev_{k}": v for k, v in previous.items()})
        feeds["shift"] = shift.as_array()
        out = self.engines["adapter"].run(feeds)
        return {k[len("fused_"):]: v for k, v in out.items()}

    def _decode(self, levels: dict):
        return self.engines["decoder"].run(levels)["depth"]

    def _depth_to_host(self, depth) -> np.ndarray:
        return to_host(depth)[0, 0]

    def _levels_to_host(self, levels: dict, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": to_host(v) for k, v in levels.items()}

    def close(self) -> None:
        super().close()
        for engine in self.engines.values():
            engine.close()
        self.engines = {}
