"""`smoothdino bench`: accuracy and latency of every configuration x back-end x precision, on the same frames.

Every runner is a pipeline with the same per-frame method (edge.FramePipeline: DepthPipeline on an export,
models.TorchPipeline for the eager FP32 reference) stepped through the same resumable loop as `process`
(edge.loop.ResumableSteps); the bench's own sink appends each computed frame to frames.jsonl and writes its
depth as a 16-bit PNG. Runners are interleaved frame by frame in a rotating order, so machine drift (thermal
throttling on a Jetson, a busy neighbour on a laptop) hits all of them alike. A frame record is reused only
when the same pipeline identity (model, weights, precision, size) on the same device wrote it. Exports come
from `ensure_export` (one staleness rule), and every row carries its export's gate verdict.
Outputs: results.json (everything, with versions, device, threads, load average), results.md, a plot.
"""

from __future__ import annotations

import contextlib

import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from smoothdino.core.backends import backend_word
from smoothdino.core.console import RANDOM_WEIGHTS_BANNER, console, notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_text
from smoothdino.core.images import resize_rgb
from smoothdino.edge.machine.environment import (
    device_description,
    gpu,
    tensorrt_usable,
    versions,
)
from smoothdino.edge.machine.jetson import jetson_info
from smoothdino.edge.engines.manifest import Manifest
from smoothdino.edge.loop import ResumableSteps
from smoothdino.edge.metrics import METRICS, depth_metrics, summarize, temporal_error
from smoothdino.edge.pipeline import STAGE_TIMINGS
from smoothdino.edge.sinks import DepthPngSink, json_dumps, to_millimetres
from smoothdino.edge.commands.robotics import RobotOptions, choose_carry, known_camera
from smoothdino.edge.carry import camera_matrix
from smoothdino.edge.fusion import fusion_enabled, parse_fusion
from smoothdino.edge.keyframes import parse_keyframes
from smoothdino.edge.sinks.keyframe_state import KeyframeStates
from smoothdino.edge.sources import FolderSource

from .report import PAPER_FIGURES, plot_accuracy_vs_latency, write_markdown
from .runners import (
    BENCH_BACKENDS,
    Config,
    cpu_model,
    device_used_mib,
    peak_rss_mib,
    percentiles,
    physical_cores,
    weight_mib,
)


@dataclass
class BenchSpec:
    data: list[Path | str]
    out: Path
    configs: list[str] = field(default_factory=lambda: ["vits14", "vits14+paper", "vits14+temporal", "vitb14"])
    backends: list[str] = field(default_factory=lambda: ["torch", "onnxruntime", "tensorrt"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])  # of the exports; torch is always fp32
    frames: int = 50  # per sequence, consecutive from the first
    size: tuple[int, int] | None = None  # default: the frames' size
    head: str = "dpt"
    warmup: int = 2
    threads: int | None = None  # default: physical cores; pinned for ONNX Runtime and torch alike
    weights_dir: Path | None = None
    adapter_weights: Path | None = None
    random_weights: bool = False
    seed: int = 0
    min_confidence: float = 0.1
    keyframes: list[str] = field(default_factory=lambda: ["every"])  # edge.keyframes policies: every, N, auto
    carry: str | None = None  # shift | pose between keyframes; None: pose where the camera is known (NYUv2 folders)
    # edge.fusion: a row per word and runner (auto: fused where the camera is known), one network pass shared by them
    fusion: list[str] = field(default_factory=lambda: ["off", "auto"])
    # Existing exports (a Jetson's, made by `export` or copied and `build`-ed): each is a row as it is, no export
    # and no torch; --configs and --precisions then do not apply, and the frames are resized to the exports' size.
    engines: list[Path] = field(default_factory=list)


@dataclass
class Runner:
    key: str  # config@backend/precision
    config: Config
    backend: str
    precision: str
    pipeline: object  # an edge.FramePipeline
    gate: dict | None  # the export's gate verdict (None for the torch reference)
    weight_mib: float
    device_load_mib: float | None
    description: str = ""  # kept: a closed pipeline no longer knows its engines
    keyframes: str = "every"  # the policy it steps with (its own pipeline: each policy keeps its own state)
    fusion: str = "off"  # edge.fusion word (off, on, auto); its keyframes fused with the earlier output; shares its network


class SharedNetwork:
    """One pipeline behind several runners that differ only after the network (fusion on and off): each runner
    steps its own proxy; a step whose frame and previous frame were just stepped by another proxy gets a copy of
    that result instead of a second network pass. Each proxy tracks the previous frame it gave, and the pipeline is
    brought to it (reset or prime) before a real pass, so every proxy gets exactly its own sequence's depth."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.previous: bytes | None = None  # the frame the pipeline's temporal state holds (its digest)
        self.cache: dict[tuple, object] = {}  # (previous digest, frame digest) -> FrameResult, the last few
        self.closed = False

    def proxy(self) -> "NetworkProxy":
        return NetworkProxy(self)


def _digest(rgb: np.ndarray) -> bytes:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16).digest()


class NetworkProxy:
    def __init__(self, shared: SharedNetwork):
        self._shared = shared
        self._previous: bytes | None = None
        self._previous_rgb: np.ndarray | None = None

    def __getattr__(self, name):  # frame_size, identity, weights, description, ...
        return getattr(self._shared.pipeline, name)

    def reset(self) -> None:
        self._previous, self._previous_rgb = None, None

    def prime(self, rgb: np.ndarray) -> None:
        self._previous, self._previous_rgb = _digest(rgb), rgb
        shared = self._shared
        shared.pipeline.prime(rgb)
        shared.previous = self._previous

    def step(self, rgb: np.ndarray):
        import copy

        shared, digest = self._shared, _digest(rgb)
        key = (self._previous, digest)
        if key not in shared.cache:
            if shared.previous != self._previous:  # another proxy moved the pipeline on: back to this one's state
                shared.pipeline.reset() if self._previous_rgb is None else shared.pipeline.prime(self._previous_rgb)
            result = shared.pipeline.step(rgb)
            shared.previous = digest
            shared.cache = {k: v for k, v in list(shared.cache.items())[-3:]}
            shared.cache[key] = result
        self._previous, self._previous_rgb = digest, rgb
        result = copy.copy(shared.cache[key])
        result.depth, result.timings = result.depth.copy(), dict(result.timings)
        return result

    def close(self) -> None:
        if not self._shared.closed:
            self._shared.closed = True
            self._shared.pipeline.close()


def _open_runner(spec: BenchSpec, config: Config, backend: str, precision: str, size, calibration) -> Runner:
    before = device_used_mib()
    if backend == "torch":
        from smoothdino.models import TorchPipeline

        pipeline = TorchPipeline(config.arch, config.adapter, spec.head, size, weights_dir=spec.weights_dir,
                                 adapter_weights=spec.adapter_weights, random_weights=spec.random_weights,
                                 seed=spec.seed, min_confidence=spec.min_confidence)
        gate, weights = None, weight_mib(pipeline)
    else:
        from smoothdino.edge.pipeline import DepthPipeline
        from smoothdino.export import ExportSpec, ensure_export

        export = ExportSpec(arch=config.arch, head=spec.head, adapter=config.adapter, size=tuple(size),
                            precision=precision, backend=backend, weights_dir=spec.weights_dir,
                            adapter_weights=spec.adapter_weights, random_weights=spec.random_weights, seed=spec.seed,
                            calibration=calibration, calibration_frames=2, force=True)  # a failed gate is reported
        folder = spec.out / "engines" / f"{config.name}-{precision}-{size[0]}x{size[1]}-{backend}"
        manifest = ensure_export(export, folder, progress=lambda msg: None)
        pipeline = DepthPipeline(manifest, backend=backend, min_confidence=spec.min_confidence, threads=spec.threads)
        gate, weights = manifest.gate, weight_mib(pipeline)
    after = device_used_mib()
    label = "fp32" if backend == "torch" else precision
    return Runner(f"{config.name}@{backend}/{label}", config, pipeline.backend, label, pipeline, gate, weights,
                  None if before is None else after - before, pipeline.description)


def _open_existing(spec: BenchSpec, folder: Path, backend: str) -> Runner:
    """A runner on an export that already exists: what it is (arch, adapter, precision) comes from its manifest."""
    from smoothdino.edge.pipeline import DepthPipeline

    before = device_used_mib()
    manifest = Manifest.load(folder)
    pipeline = DepthPipeline(manifest, backend=backend, min_confidence=spec.min_confidence, threads=spec.threads)
    config = Config(manifest.arch, manifest.adapter)
    after = device_used_mib()
    return Runner(f"{config.name}@{backend}/{manifest.precision}", config, pipeline.backend, manifest.precision,
                  pipeline, manifest.gate, weight_mib(pipeline), None if before is None else after - before,
                  pipeline.description)


def engines_size(folders: list[Path]) -> tuple[int, int]:
    """The one frame size every --engines export was made for (a bench compares rows on the same frames)."""
    sizes = {tuple(Manifest.load(Path(f)).frame_size): Path(f) for f in folders}
    if len(sizes) > 1:
        listed = ", ".join(f"{f} ({h}x{w})" for (h, w), f in sizes.items())
        raise UserError(f"--engines: exports of different frame sizes ({listed}); bench exports of one size")
    return next(iter(sizes))


def _open_runners(spec: BenchSpec, size, say, calibration: list[Path]) -> tuple[dict[str, Runner], dict[str, str]]:
    runners, skipped = {}, {}
    for folder in spec.engines:
        for backend in spec.backends:
            backend = backend_word(backend, "--backends", extra=("torch",))
            if backend == "torch":
                continue  # an export's rows are its back-ends'; the torch reference needs --configs
            if backend == "auto":
                raise UserError(f"--backends auto: name them ({', '.join(BENCH_BACKENDS)})")
            for keyframes in spec.keyframes:
                if backend in ("tensorrt", "tensorrt-rtx"):
                    usable, why = tensorrt_usable(backend)
                    if not usable:
                        skipped[f"{folder}@{backend}"] = f"{folder} on {backend} unavailable: {why}"
                        continue
                say(f"loading {folder} on {backend}")
                runner = _open_existing(spec, Path(folder), backend)
                if runner.backend != backend:
                    skipped[f"{folder}@{backend}"] = f"{folder}: {backend} fell back to {runner.backend}"
                    runner.pipeline.close()
                    continue
                runner.key += "" if keyframes == "every" else f"/keyframes={keyframes}"
                if runner.key in runners:  # two folders of one configuration: tell them apart by folder
                    runner.key = f"{Path(folder).name}:{runner.key}"
                runner.keyframes = keyframes
                runners[runner.key] = runner
    for text in [] if spec.engines else spec.configs:
        config = Config.parse(text)
        for backend in spec.backends:
            backend = backend_word(backend, "--backends", extra=("torch",))
            if backend == "auto":
                raise UserError(f"--backends auto: name them ({', '.join(BENCH_BACKENDS)})")
            for precision in ["fp32"] if backend == "torch" else spec.precisions:
                for keyframes in spec.keyframes:
                    key = f"{config.name}@{backend}/{precision}" + ("" if keyframes == "every" else f"/keyframes={keyframes}")
                    if key in runners:
                        continue
                    if backend in ("tensorrt", "tensorrt-rtx"):
                        usable, why = tensorrt_usable(backend)
                        if not usable:
                            skipped[key] = f"{backend} unavailable: {why}"
                            continue
                    if backend == "torch":
                        try:
                            import torch  # noqa: F401
                        except ImportError:
                            skipped[key] = "torch not installed"
                            continue
                    say(f"loading {key}")
                    runner = _open_runner(spec, config, backend, precision, size, calibration)
                    if runner.backend != backend:
                        skipped[key] = f"{backend} fell back to {runner.backend}"
                        runner.pipeline.close()
                        continue
                    runner.key, runner.keyframes = key, keyframes
                    runners[key] = runner
    if not runners:
        raise UserError("no configuration could run on the requested back-ends: " + "; ".join(skipped.values()))
    return runners, skipped


def _sequences(spec: BenchSpec) -> list[FolderSource]:
    sources = []
    for d in spec.data:
        if str(d).startswith("synthetic"):
            from smoothdino.core.images import parse_size
            from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence

            _, _, text = str(d).partition(":")
            h, w = parse_size(text or "480x640", "bench synthetic:")
            d = write_sequence(spec.out / "data" / f"synthetic_{h}x{w}", SyntheticScene(h, w, spec.frames))
        elif not Path(d).is_dir():
            raise UserError(f"{d}: not a folder; give bench NYUv2 sequence folders or synthetic[:HxW]")
        sources.append(FolderSource(Path(d), limit=spec.frames))
    return sources


class BenchSink:
    """frames.jsonl + depth PNGs: one record per computed frame, keyed by (pipeline identity, device, sequence,
    frame), so a resumed bench reuses only what this very model on this very device wrote.

    Each record is one write of a whole line, flushed and fsynced, so a killed bench leaves at most a torn last
    line: the next bench drops it (one notice; that frame is computed again). A damaged line before the end is not
    what a kill leaves, so it is refused in one line naming it."""

    def __init__(self, out: Path, device: str):
        self.path, self.device = Path(out) / "frames.jsonl", device
        self.done: dict[tuple, dict] = {}
        if self.path.is_file():
            self._read()
        self.log = open(self.path, "ab", buffering=0)  # unbuffered: write() is the system call

    def _read(self) -> None:
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1  # every line a finished write made ends with a newline
        if whole < len(data):
            with open(self.path, "r+b") as f:  # drop the torn tail, so the next record starts on a line of its own
                f.truncate(whole)
            notice(f"{self.path}: dropped a torn last line ({len(data) - whole} bytes, a bench stopped mid-write); "
                   "that frame is computed again")
        for number, line in enumerate(data[:whole].splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                self.done[(r.get("identity"), r.get("device"), r["sequence"], r["frame"])] = r
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                raise UserError(f"{self.path}:{number}: not a frame record ({type(err).__name__}); delete that line "
                                "(its frame is computed again) or the whole file") from None

    def key(self, runner: Runner, sequence: str, frame: str) -> tuple:
        return (f"{runner.key}|{runner.pipeline.identity}", self.device, sequence, frame)

    def reader(self, runner: Runner, pngs: DepthPngSink, sequence: str) -> Callable[[str], np.ndarray | None]:
        def read(frame: str):
            return pngs.read(frame) if self.key(runner, sequence, frame) in self.done else None
        return read

    def write(self, runner: Runner, sequence: str, frame: str, record: dict) -> None:
        identity, device, _, _ = key = self.key(runner, sequence, frame)
        record = {"runner": runner.key, "identity": identity, "device": device, "sequence": sequence,
                  "frame": frame, **record}
        line = memoryview((json.dumps(record) + "\n").encode())
        while line:  # one write for the whole line; a partial write (a signal, a full disk) gets the rest
            line = line[self.log.write(line):]
        os.fsync(self.log.fileno())  # on disk before the frame counts as done
        self.done[key] = record

    def close(self) -> None:
        self.log.close()


@contextlib.contextmanager
def torch_threads(threads: int, wanted: bool) -> Iterator[None]:
    """PyTorch's intra-op threads pinned for the torch runner, and given back afterwards: a bench called from
    a program (or a test session) must not leave the process's threads changed."""
    try:
        import torch
    except ModuleNotFoundError:
        wanted = False  # the torch runner reports itself unavailable
    if not wanted:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_bench(spec: BenchSpec, progress: Callable[[int, int], None] | None = None,
              say: Callable[[str], None] | None = None) -> dict:
    spec.threads = spec.threads or physical_cores()
    with torch_threads(spec.threads, "torch" in spec.backends):
        return _run_bench(spec, progress, say)


def _run_bench(spec: BenchSpec, progress: Callable[[int, int], None] | None,
               say: Callable[[str], None] | None) -> dict:
    say = say or (lambda msg: console.print(msg))
    spec.out = Path(spec.out)
    spec.out.mkdir(parents=True, exist_ok=True)
    sources = _sequences(spec)
    if spec.engines:
        spec.size = engines_size(spec.engines)  # the graphs are fixed to it: frames are resized
        spec.precisions = sorted({Manifest.load(Path(f)).precision for f in spec.engines})
    if spec.size is None:
        first = next(f for f in (s.load(i) for s in sources for i in range(len(s))) if f is not None)
        spec.size = first.rgb.shape[:2]
    size = tuple(spec.size)
    load_before = os.getloadavg()
    sink = BenchSink(spec.out, device_description())  # a damaged frames.jsonl is refused before any export
    try:
        runners, skipped = _open_runners(spec, size, say, [s.folder for s in sources])
    except BaseException:
        sink.close()
        raise
    for reason in skipped.values():
        notice(reason)
    cameras = spec.carry == "pose" or (spec.carry is None and any(known_camera(s, RobotOptions()) for s in sources))
    runners = _fusion_variants(runners, [w for w in spec.fusion if w != "auto" or cameras] or ["off"])
    total, finished = sum(len(s) for s in sources) * len(runners), 0
    computed = dict.fromkeys(runners, 0)
    start = time.perf_counter()
    try:
        for source in sources:
            steps, previous, cameras = {}, {}, {}
            first_size = next(f for f in (source.load(i) for i in range(len(source))) if f is not None).rgb.shape[:2]
            last_frame = None  # (rgb, gt) of the frame before, for flicker
            for key, r in runners.items():
                pngs = DepthPngSink(spec.out / "depth" / key.replace("@", "_at_").replace("/", "_") / source.name)
                carry, policy, intrinsics = choose_carry(spec.carry, source, RobotOptions(), parse_keyframes(r.keyframes))
                fused = fusion_enabled(r.fusion, carry)
                states = KeyframeStates(pngs.folder) if fused else None
                steps[key] = (ResumableSteps(r.pipeline, sink.reader(r, pngs, source.name), policy, carry=carry,
                                             fusion=fused, states=states), pngs, states)
                if intrinsics is not None:  # the pose carry's camera (NYUv2's Kinect for its folders)
                    camera = intrinsics.for_frame({}, *first_size)
                    steps[key][0].set_intrinsics(camera)
                    camera = camera.scaled(*first_size)
                    cameras[key] = camera_matrix(camera.fx, camera.fy, camera.cx, camera.cy)
            for position in range(len(source)):
                frame = source.load(position)
                if frame is None:
                    finished += len(runners)
                    continue
                rgb = resize_rgb(frame.rgb, size)
                order = list(runners)
                flicker_of = FlickerOf(last_frame, frame, cameras)
                last_frame = (frame.rgb, frame.depth_gt)
                turn = position % len(order)
                for key in order[turn:] + order[:turn]:  # rotate: nobody always runs first
                    step, pngs, states = steps[key]
                    depth, result = step(frame.name, rgb, frame.rgb.shape[:2])
                    if result is not None:
                        if states is not None and result.keyframe:  # a resumed bench restores fused keyframes
                            states.write(frame.name, *step.frames.keyframe_state())
                        pngs.write(frame.name, depth)
                        if states is not None and result.keyframe:
                            states.keep_only(frame.name)
                        depth = to_millimetres(depth).astype(np.float32) / 1000.0  # what the PNG holds
                        computed[key] += 1
                        record = {"warmup": computed[key] <= spec.warmup, "timings": result.timings,
                                  "keyframe": result.keyframe, "fused": result.fused}
                        median, p90 = flicker_of(key, previous.get(key), depth)
                        record["flicker"], record["flicker_p90"] = _finite_or_none(median), _finite_or_none(p90)
                        if frame.depth_gt is not None:
                            record["metrics"] = depth_metrics(depth, frame.depth_gt)
                            if key in previous and previous[key][1] is not None:
                                record["metrics"]["temporal"] = temporal_error(depth, *previous[key], frame.depth_gt)
                        sink.write(runners[key], source.name, frame.name, record)
                    previous[key] = (depth, frame.depth_gt)
                    finished += 1
                    if progress:
                        progress(finished, total)
    finally:
        sink.close()
        for r in runners.values():
            r.pipeline.close()
    conditions = {"threads": spec.threads, "cpu_model": cpu_model(), "load_average_before": list(load_before),
                  "load_average_after": list(os.getloadavg()),
                  "jetson": jetson_info()}  # module, JetPack, power mode, clocks locked; None off a Jetson
    results = _aggregate(spec, runners, skipped, sink, sources, time.perf_counter() - start, conditions)
    atomic_write_text(spec.out / "results.json", json_dumps(results))
    write_markdown(results, spec.out / "results.md")
    try:
        plot_accuracy_vs_latency(results, spec.out / "accuracy_vs_latency.png")
    except ModuleNotFoundError as err:  # a Jetson's run-time image: the tables are the result, the plot is extra
        if (err.name or "").split(".")[0] != "matplotlib":
            raise
        from smoothdino.core.extras import install_extra

        notice(f"no accuracy_vs_latency.png: matplotlib is not installed ({install_extra('bench')}); "
               "results.json and results.md are written")
    return results


def _fusion_variants(runners: dict[str, Runner], words: list[str]) -> dict[str, Runner]:
    """Each runner once per --fusion word (off: as it is; on, auto: key + /fusion=WORD), sharing one network pass.
    `auto` rows only where some sequence's camera is known (else auto is off: the same row twice)."""
    import dataclasses

    out = {}
    for key, r in runners.items():
        shared = SharedNetwork(r.pipeline)
        for word in dict.fromkeys(parse_fusion(w, "--fusion") for w in words):
            variant = f"{key}/fusion={word}" if word != "off" else key
            out[variant] = dataclasses.replace(r, key=variant, pipeline=shared.proxy(), fusion=word)
    return out


class FlickerOf:
    """Flicker for every runner on one frame (edge.flicker): with ground truth, one motion from the frame before,
    lifted by its ground truth and shared by every runner (so they are judged alike); without, each runner's own,
    lifted by its previous output. The camera: a runner's own (the pose carry's), else the shift."""

    def __init__(self, last_frame, frame, cameras: dict):
        self.last, self.frame, self.cameras = last_frame, frame, cameras
        self.shared = None

    def __call__(self, key: str, previous, depth: np.ndarray) -> tuple[float, float]:
        from smoothdino.edge.flicker import NO_FLICKER, flicker, pair_motion, sampled, sampled_camera, sampling_step

        if self.last is None or previous is None or self.last[0].shape != self.frame.rgb.shape:
            return NO_FLICKER
        step = sampling_step(depth.shape[1])
        k = sampled_camera(self.cameras.get(key), step)
        last_rgb, last_gt = self.last
        if last_gt is not None:
            if self.shared is None:
                self.shared = pair_motion(sampled(last_rgb, step), sampled(self.frame.rgb, step),
                                          sampled(last_gt, step), k)
            motion = self.shared
        else:
            motion = pair_motion(sampled(last_rgb, step), sampled(self.frame.rgb, step), sampled(previous[0], step), k)
        return flicker(sampled(previous[0], step), sampled(depth, step), motion)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _aggregate(spec, runners, skipped, sink: BenchSink, sources, seconds, conditions) -> dict:
    rows = {}
    for key, r in runners.items():
        keys = [sink.key(r, s.name, name) for s in sources for name in s.names]
        records = [sink.done[k] for k in keys if k in sink.done]
        metric_rows = [rec["metrics"] for rec in records if "metrics" in rec]
        timed = [rec["timings"] for rec in records if not rec.get("warmup")]
        latency = {stage: percentiles([t[stage] for t in timed]) for stage in STAGE_TIMINGS}
        p50 = latency["total"]["p50_ms"]
        # with keyframes the frame times are bimodal (a network pass or ~1 ms): the rate is 1 / mean, not 1 / p50
        mean_ms = 1000.0 * float(np.mean([t["total"] for t in timed])) if timed else float("nan")
        keyframe_share = float(np.mean([rec.get("keyframe", True) for rec in records])) if records else float("nan")
        flickers = [rec["flicker"] for rec in records if rec.get("flicker") is not None]
        flickers_p90 = [rec["flicker_p90"] for rec in records if rec.get("flicker_p90") is not None]
        gate = r.gate or {}
        rows[key] = {
            "config": r.config.name, "arch": r.config.arch, "adapter": r.config.adapter, "backend": r.backend,
            "precision": r.precision, "description": r.description, "identity": r.pipeline.identity,
            "weights": r.pipeline.weights, "frames": len(records), "frames_with_ground_truth": len(metric_rows),
            "timed_frames": len(timed),
            "gate": None if r.gate is None else {"passed": bool(gate.get("passed")), "reasons": gate.get("reasons", []),
                                                 "rmse_vs_reference_mm": gate.get("rmse_vs_reference_mm"),
                                                 "tolerance_mm": gate.get("tolerance_mm")},
            "accuracy": summarize(metric_rows, METRICS + ("temporal",)) if metric_rows else {},
            "latency": latency, "keyframes": r.keyframes, "keyframe_share": keyframe_share, "mean_ms": mean_ms,
            "fusion": r.fusion, "fused": any(rec.get("fused") for rec in records),
            "flicker": {"median": float(np.median(flickers)) if flickers else None,
                        "p90": float(np.median(flickers_p90)) if flickers_p90 else None, "pairs": len(flickers)},
            "fps": (1000.0 / p50 if r.keyframes == "every" else 1000.0 / mean_ms) if p50 == p50 and p50 > 0 else float("nan"),
            "memory": {"weights_mib": r.weight_mib, "device_load_mib": r.device_load_mib},
        }
    for key, row in rows.items():  # relative change against the vits14 row of the same back-end and precision
        base = rows.get(key.replace(f"{row['config']}@", "vits14@", 1))
        if base and base is not row and base["accuracy"] and row["accuracy"]:
            row["vs_vits14"] = {m: (row["accuracy"][m] - base["accuracy"][m]) / base["accuracy"][m] * 100
                                for m in ("mse_paper", "mse", "rmse", "abs_rel", "temporal") if base["accuracy"].get(m)}
    ratios = []
    for key, row in rows.items():  # small + adapter against base, per back-end and precision
        base = rows.get(key.replace(f"{row['config']}@", "vitb14@", 1))
        if row["arch"] == "vits14" and row["adapter"] != "none" and base:
            ratio = {"small": key, "base": key.replace(f"{row['config']}@", "vitb14@", 1),
                     "latency_ratio": row["latency"]["total"]["p50_ms"] / base["latency"]["total"]["p50_ms"]}
            if row["accuracy"] and base["accuracy"]:
                ratio["mse_ratio"] = row["accuracy"]["mse_paper"] / base["accuracy"]["mse_paper"]
            ratios.append(ratio)
    random_weights = any(r.pipeline.random_weights for r in runners.values())
    return {
        "random_weights": random_weights,
        "warning": RANDOM_WEIGHTS_BANNER if random_weights else None,
        "device": device_description(), "gpu": gpu(), "platform": platform.platform(), **conditions,
        "versions": versions(), "frame_size": list(spec.size), "precisions": spec.precisions, "head": spec.head,
        "sequences": {s.name: len(s) for s in sources}, "frames_per_sequence": spec.frames, "warmup": spec.warmup,
        "wall_seconds": seconds, "peak_rss_mib": peak_rss_mib(),
        "rows": rows, "skipped": skipped, "small_vs_base": ratios, "published": PAPER_FIGURES,
    }
