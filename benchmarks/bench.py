"""`smoothdino bench`: accuracy and latency of every configuration on every back-end, on the same frames.

Runners (configuration x back-end) are interleaved frame by frame, in a rotating order, so that machine
drift (thermal throttling on a Jetson, a busy neighbour on a laptop) hits all of them alike. Every computed
frame is appended to frames.jsonl and its depth written as a 16-bit PNG, so an interrupted bench resumes
where it stopped (a runner resuming mid-sequence is primed with the frame before). Outputs:
results.json (everything, with versions, device and weights), results.md (the table to paste into an issue,
with the published figures beside ours) and accuracy_vs_latency.png.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from smoothdino.core.console import RANDOM_WEIGHTS_BANNER, console, notice
from smoothdino.edge.environment import device_description, gpu, tensorrt_usable, versions
from smoothdino.core.errors import UserError
from smoothdino.edge.manifest import Manifest
from smoothdino.edge.metrics import METRICS, depth_metrics, summarize, temporal_error
from smoothdino.edge.pipeline import STAGE_TIMINGS
from smoothdino.edge.sinks import DepthPngSink, atomic_write_text, json_dumps, to_millimetres
from smoothdino.edge.sources import FolderSource

from .report import PAPER_FIGURES, plot_accuracy_vs_latency, write_markdown
from .runners import (BENCH_BACKENDS, Config, EngineRunner, TorchRunner, device_used_mib, peak_rss_mib, percentiles,
                      rss_mib)


@dataclass
class BenchSpec:
    data: list[Path]
    out: Path
    configs: list[str] = field(default_factory=lambda: ["vits14", "vits14+paper", "vits14+temporal", "vitb14"])
    backends: list[str] = field(default_factory=lambda: ["torch", "onnxruntime", "tensorrt"])
    frames: int = 50  # per sequence, consecutive from the first
    size: tuple[int, int] | None = None  # default: the frames' size
    head: str = "dpt"
    precision: str = "fp16"  # of the exported graphs / engines
    warmup: int = 2
    weights_dir: Path | None = None
    adapter_weights: Path | None = None
    random_weights: bool = False
    min_confidence: float = 0.1


def _export_for(spec: BenchSpec, config: Config, size, backend: str, calibration: list[Path]) -> Path:
    """An export of this configuration for the bench (reused when its manifest matches)."""
    folder = spec.out / "engines" / f"{config.name}-{spec.precision}-{size[0]}x{size[1]}-{backend}"
    try:
        m = Manifest.load(folder)
        if m.arch == config.arch and m.adapter == config.adapter and tuple(m.frame_size) == tuple(size):
            return folder
    except UserError:
        pass
    from smoothdino.export import ExportSpec, export_model

    export_model(ExportSpec(arch=config.arch, head=spec.head, adapter=config.adapter, size=tuple(size),
                            precision=spec.precision, backend="tensorrt" if backend == "tensorrt" else "onnx",
                            weights_dir=spec.weights_dir, adapter_weights=spec.adapter_weights,
                            random_weights=spec.random_weights, calibration=calibration, calibration_frames=2,
                            force=True), folder, progress=lambda msg: None)
    return folder


def _open_runners(spec: BenchSpec, size, say, calibration: list[Path]) -> tuple[dict, dict]:
    runners, skipped = {}, {}
    for text in spec.configs:
        config = Config.parse(text)
        for backend in spec.backends:
            key = f"{config.name}@{backend}"
            if backend not in BENCH_BACKENDS:
                raise UserError(f"--backends {backend!r}: choose from {', '.join(BENCH_BACKENDS)}")
            if backend == "tensorrt":
                usable, why = tensorrt_usable()
                if not usable:
                    skipped[key] = f"TensorRT unavailable: {why}"
                    continue
            if backend == "torch":
                try:
                    import torch  # noqa: F401
                except ImportError:
                    skipped[key] = "torch not installed"
                    continue
            say(f"loading {key}")
            before, device_before = rss_mib(), device_used_mib()
            if backend == "torch":
                runner = TorchRunner(config, size, spec.head, spec.weights_dir, spec.adapter_weights,
                                     spec.random_weights, spec.min_confidence)
            else:
                runner = EngineRunner(_export_for(spec, config, size, backend, calibration), backend, spec.min_confidence)
                if runner.backend != backend:
                    skipped[key] = f"{backend} fell back to {runner.backend}"
                    runner.close()
                    continue
            runner.config, runner.key, runner.rss_load_mib = config, key, rss_mib() - before
            device_after = device_used_mib()
            runner.device_load_mib = None if device_before is None else device_after - device_before
            runners[key] = runner
    if not runners:
        raise UserError("no configuration could run on the requested back-ends: " + "; ".join(skipped.values()))
    return runners, skipped


def _sequences(spec: BenchSpec) -> list[FolderSource]:
    sources = []
    for d in spec.data:
        if str(d).startswith("synthetic"):
            from smoothdino.edge.synthetic import SyntheticScene, write_sequence

            parts = str(d).split(":")
            h, w = (int(v) for v in parts[1].split("x")) if len(parts) > 1 else (480, 640)
            d = write_sequence(spec.out / "data" / f"synthetic_{h}x{w}", SyntheticScene(h, w, spec.frames))
        sources.append(FolderSource(Path(d), limit=spec.frames))
    return sources


def _load_done(path: Path) -> dict[tuple[str, str, str], dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["runner"], r["sequence"], r["frame"])] = r
    return done


def run_bench(spec: BenchSpec, progress: Callable[[int, int], None] | None = None,
              say: Callable[[str], None] | None = None) -> dict:
    say = say or (lambda msg: console.print(msg))
    spec.out = Path(spec.out)
    spec.out.mkdir(parents=True, exist_ok=True)
    sources = _sequences(spec)
    if spec.size is None:
        first = next(f for f in (s.load(i) for s in sources for i in range(len(s))) if f is not None)
        spec.size = first.rgb.shape[:2]
    size = tuple(spec.size)
    runners, skipped = _open_runners(spec, size, say, [s.folder for s in sources])
    for reason in skipped.values():
        notice(reason)
    log_path = spec.out / "frames.jsonl"
    done = _load_done(log_path)
    total = sum(len(s) for s in sources) * len(runners)
    finished = 0
    computed_per_runner = {k: 0 for k in runners}
    start = time.perf_counter()
    try:
        with open(log_path, "a") as log:
            for source in sources:
                for r in runners.values():
                    r.reset()
                state = {k: {"pending": None, "prev": None} for k in runners}
                for position in range(len(source)):
                    frame = source.load(position)
                    if frame is None:
                        finished += len(runners)
                        continue
                    rgb = frame.rgb if frame.rgb.shape[:2] == size else cv2.resize(
                        frame.rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                    order = list(runners)
                    shift = position % len(order)
                    for key in order[shift:] + order[:shift]:  # rotate: nobody always runs first
                        r, st = runners[key], state[key]
                        pngs = DepthPngSink(spec.out / "depth" / key.replace("@", "_at_") / source.name)
                        record = done.get((key, source.name, frame.name))
                        if record is not None and pngs.exists(frame.name):
                            depth = pngs.read(frame.name)
                            st["pending"] = rgb
                        else:
                            if st["pending"] is not None:
                                r.prime(st["pending"])
                                st["pending"] = None
                            depth, timings = r.step(rgb)
                            if depth.shape != frame.rgb.shape[:2]:
                                depth = cv2.resize(depth, frame.rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR)
                            pngs.write(frame.name, depth)
                            depth = to_millimetres(depth).astype(np.float32) / 1000.0  # what the PNG holds
                            computed_per_runner[key] += 1
                            record = {"runner": key, "sequence": source.name, "frame": frame.name,
                                      "warmup": computed_per_runner[key] <= spec.warmup,
                                      "timings": timings}
                            if frame.depth_gt is not None:
                                gt = frame.depth_gt
                                record["metrics"] = depth_metrics(depth, gt)
                                if st["prev"] is not None:
                                    record["metrics"]["temporal"] = temporal_error(depth, st["prev"][0], gt, st["prev"][1])
                            log.write(json.dumps(record) + "\n")
                            log.flush()
                            done[(key, source.name, frame.name)] = record
                        st["prev"] = (depth, frame.depth_gt) if frame.depth_gt is not None else None
                        finished += 1
                        if progress:
                            progress(finished, total)
    finally:
        for r in runners.values():
            r.close()
    results = _aggregate(spec, runners, skipped, done, sources, time.perf_counter() - start)
    atomic_write_text(spec.out / "results.json", json_dumps(results))
    write_markdown(results, spec.out / "results.md")
    plot_accuracy_vs_latency(results, spec.out / "accuracy_vs_latency.png")
    return results


def _aggregate(spec, runners, skipped, done, sources, seconds) -> dict:
    names = {s.name for s in sources}
    rows = {}
    for key, r in runners.items():
        records = [rec for (k, seq, _), rec in done.items() if k == key and seq in names]
        metric_rows = [rec["metrics"] for rec in records if "metrics" in rec]
        timed = [rec["timings"] for rec in records if not rec.get("warmup")]
        latency = {stage: percentiles([t[stage] for t in timed]) for stage in STAGE_TIMINGS}
        p50 = latency["total"]["p50_ms"]
        rows[key] = {
            "config": r.config.name, "arch": r.config.arch, "adapter": r.config.adapter, "backend": key.split("@")[1],
            "description": r.description, "weights": r.weights, "frames": len(records),
            "frames_with_ground_truth": len(metric_rows), "timed_frames": len(timed),
            "accuracy": summarize(metric_rows, METRICS + ("temporal",)) if metric_rows else {},
            "latency": latency, "fps": 1000.0 / p50 if p50 == p50 and p50 > 0 else float("nan"),
            "memory": {"rss_load_mib": r.rss_load_mib, "device_load_mib": r.device_load_mib},
        }
    for key, row in rows.items():  # relative change against the vits14 row of the same back-end
        base = rows.get(f"vits14@{row['backend']}")
        if base and base["accuracy"] and row["accuracy"] and key != f"vits14@{row['backend']}":
            row["vs_vits14"] = {m: (row["accuracy"][m] - base["accuracy"][m]) / base["accuracy"][m] * 100
                                for m in ("mse_paper", "mse", "rmse", "abs_rel", "temporal")
                                if base["accuracy"].get(m)}
    ratios = []
    for key, row in rows.items():  # small + adapter against base, per back-end
        base = rows.get(f"vitb14@{row['backend']}")
        if row["arch"] == "vits14" and row["adapter"] != "none" and base:
            ratio = {"small": key, "base": f"vitb14@{row['backend']}",
                     "latency_ratio": row["latency"]["total"]["p50_ms"] / base["latency"]["total"]["p50_ms"]}
            if row["accuracy"] and base["accuracy"]:
                ratio["mse_ratio"] = row["accuracy"]["mse_paper"] / base["accuracy"]["mse_paper"]
            ratios.append(ratio)
    random_weights = any("random-weights" in w for row in rows.values() for w in row["weights"].values())
    return {
        "random_weights": random_weights,
        "warning": RANDOM_WEIGHTS_BANNER if random_weights else None,
        "device": device_description(), "gpu": gpu(), "platform": platform.platform(),
        "versions": versions(), "frame_size": list(spec.size), "precision": spec.precision, "head": spec.head,
        "sequences": {s.name: len(s) for s in sources}, "frames_per_sequence": spec.frames, "warmup": spec.warmup,
        "wall_seconds": seconds, "peak_rss_mib": peak_rss_mib(),
        "rows": rows, "skipped": skipped, "small_vs_base": ratios, "published": PAPER_FIGURES,
    }
