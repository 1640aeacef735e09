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

from .engine import open_engine, resolve_backend, to_host
from smoothdino.core.errors import UserError
from .manifest import Manifest
from .motion import NO_SHIFT, Shift, phase_shift, scene_cut, to_grey

STAGE_TIMINGS = ("pre", "motion", "encoder", "adapter", "decoder", "post", "total")


@dataclass
class FrameResult:
    depth: np.ndarray  # float32 [H,W], metres
    shift: Shift
    scene_cut: bool
    timings: dict[str, float]  # seconds per stage, see STAGE_TIMINGS
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # host copies, with keep_outputs=True


class DepthPipeline:
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
        self.backend = resolve_backend(backend, have_engines and self.precision == manifest.precision)
        if self.backend == "tensorrt":
            from .environment import gpu, tensorrt_version

            manifest.check_tensorrt(tensorrt_version(), gpu())
        self.engines = {}
        for stage in manifest.stage_names:
            if self.backend == "tensorrt":
                # Two output sets for the encoder: frame t-1's levels survive frame t's encoding.
                self.engines[stage] = open_engine(manifest.engine_path(stage), "tensorrt",
                                                  output_sets=2 if stage == "encoder" else 1)
            else:
                self.engines[stage] = open_engine(manifest.onnx_path(stage, self.precision), "onnxruntime",
                                                  threads=threads)
        self.frame_size = tuple(manifest.frame_size)
        self.min_confidence = min_confidence
        self.motion_downscale = max(1, int(motion_downscale))
        self.keep_outputs = keep_outputs
        self.runs: Counter[str] = Counter()  # stage -> runs, so tests can count encoder passes
        self._motion = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phase-correlation")
        self._previous: tuple[dict, np.ndarray] | None = None  # (raw levels, grey frame)

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
    def identity(self) -> str:
        """What produced a depth map: model, weights, precision, size (back-ends agree within tolerance)."""
        m = self.manifest
        weights = ",".join(f"{k}={v}" for k, v in sorted(m.weights.items()))
        return f"{m.arch}+{m.adapter}/{m.head}/{self.precision}/{m.frame_size[0]}x{m.frame_size[1]}/{weights}"

    def reset(self) -> None:
        """Start a new sequence: the next frame has no previous frame."""
        self._previous = None

    def _check(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise UserError(f"frames must be uint8 RGB HxWx3, got {rgb.dtype} {rgb.shape}")
        if rgb.shape[:2] != self.frame_size:
            self.manifest.check_frame_size(rgb.shape[0], rgb.shape[1], "input")

    def _encode(self, rgb: np.ndarray) -> dict:
        self.runs["encoder"] += 1
        return self.engines["encoder"].run({"image": rgb[None]})

    def prime(self, rgb: np.ndarray) -> None:
        """Make `rgb` the previous frame without producing depth (resuming mid-sequence exactly)."""
        self._check(rgb)
        self._previous = (self._encode(rgb), to_grey(rgb, self.motion_downscale))

    def _timed_shift(self, previous_grey, grey):
        start = time.perf_counter()
        shift = phase_shift(previous_grey, grey, self.motion_downscale)
        return shift, time.perf_counter() - start

    def step(self, rgb: np.ndarray) -> FrameResult:
        """One frame (uint8 RGB at the export's frame size) -> metric depth."""
        t = {k: 0.0 for k in STAGE_TIMINGS}
        start = time.perf_counter()
        self._check(rgb)
        rgb = np.ascontiguousarray(rgb)
        grey = to_grey(rgb, self.motion_downscale)
        motion = self._motion.submit(self._timed_shift, self._previous[1], grey) if self._previous else None
        t["pre"] = time.perf_counter() - start

        mark = time.perf_counter()
        levels = self._encode(rgb)
        t["encoder"] = time.perf_counter() - mark

        shift, cut = NO_SHIFT, False
        if motion is not None:
            measured, t["motion"] = motion.result()  # usually done already: it ran beside the encoder
            shift, cut = scene_cut(measured, self.min_confidence)
        previous = levels if self._previous is None or cut else self._previous[0]

        fused = levels
        if "adapter" in self.engines:
            mark = time.perf_counter()
            feeds = dict(levels)
            feeds.update({f"prev_{k}": v for k, v in previous.items()})
            feeds["shift"] = shift.as_array()
            self.runs["adapter"] += 1
            out = self.engines["adapter"].run(feeds)
            fused = {k[len("fused_"):]: v for k, v in out.items()}
            t["adapter"] = time.perf_counter() - mark

        mark = time.perf_counter()
        self.runs["decoder"] += 1
        depth_out = self.engines["decoder"].run(fused)["depth"]
        t["decoder"] = time.perf_counter() - mark

        mark = time.perf_counter()
        depth = to_host(depth_out)[0, 0]
        outputs = {}
        if self.keep_outputs:
            outputs = {k: to_host(v) for k, v in levels.items()}
            if fused is not levels:
                outputs.update({f"fused_{k}": to_host(v) for k, v in fused.items()})
            outputs["depth"] = depth
        self._previous = (levels, grey)
        t["post"] = time.perf_counter() - mark
        t["total"] = time.perf_counter() - start
        return FrameResult(depth=depth, shift=shift, scene_cut=cut, timings=t, outputs=outputs)

    def close(self) -> None:
        self._motion.shutdown(wait=True)
        for engine in self.engines.values():
            engine.close()
        self.engines = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
