"""Does one network pass over several cameras' frames cost less per frame than one pass each?

For each frame size, one export with a batch axis (`export --batch N`, N the largest batch asked for) and one
without (today's static graphs). Every row runs the same frames of B cameras (synthetic scenes, each moving its
own way, each camera with its own TemporalState), the network on every frame:

    static 1     the one-frame export, one pass per frame (what a camera costs today)
    single       the batch export, one pass per frame (does the batch axis itself cost anything?)
    batch B      the batch export, passes of B frames (step_batch)

All rows serve N cameras (N = the largest batch), so every row runs the same frames.
and reports milliseconds per frame (the pass's time / its frames), per stage and in total, the best and the median
of `--repeats` rounds after a warm-up round, and this process's CPU time per frame. The rounds interleave the rows,
so other work on a shared machine falls on every row alike.
`edge/batching.py` `choose_batch` takes a batch only where such a figure says it pays; `--record` writes
benchmarks/results/batching.json (the docs' figures), with the load average as the run began.

    python -m smoothdino.benchmarks.batching --sizes 224x294,480x640 --batches 1,2,4 --record

Random weights (nothing can be downloaded here): the arithmetic is the real network's, so the times are too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from .record import Record, Table, add_record_option, command_line, write_record

STAGES = ("encoder", "adapter", "decoder")


def _sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]


def camera_frames(size: tuple[int, int], cameras: int, frames: int) -> list[list[np.ndarray]]:
    """frames[camera][k]: each camera a synthetic scene of its own (seed), moving its own way."""
    from smoothdino.edge.sources.synthetic import SyntheticScene

    out = []
    for c in range(cameras):
        scene = SyntheticScene(size[0], size[1], frames=frames, seed=11 + c,
                               velocity=(2.6 - 1.7 * c, -1.3 + 0.9 * c))
        out.append([scene.frame(k)[0] for k in range(frames)])
    return out


def export_for(size: tuple[int, int], batch: int, precision: str, cache: Path):
    from smoothdino.export import ExportSpec
    from smoothdino.export.exporter import ensure_export

    spec = ExportSpec(arch="vits14", adapter="temporal", size=size, precision=precision, backend="onnx",
                      random_weights=True, calibration_frames=2, batch=batch)
    return ensure_export(spec, cache / f"vits14-temporal-{precision}-{size[0]}x{size[1]}-b{batch}")


def _round(pipeline, frames, states, batch: int, k: int) -> tuple[float, float, dict[str, float]]:
    """One round: frame k of every camera, in passes of `batch` frames. Returns (wall seconds, CPU seconds of this
    process, stage seconds)."""
    stages = dict.fromkeys(STAGES, 0.0)
    start, cpu = time.perf_counter(), time.process_time()
    for first in range(0, len(states), batch):
        group = range(first, min(first + batch, len(states)))
        if batch == 1:
            results = [pipeline.step(frames[c][k], state=states[c]) for c in group]
            for r in results:
                for s in STAGES:
                    stages[s] += r.timings[s]
        else:
            results = pipeline.step_batch([frames[c][k] for c in group], [states[c] for c in group])
            for s in STAGES:
                stages[s] += results[0].timings[s]  # the pass's, once
    return time.perf_counter() - start, time.process_time() - cpu, stages


def measure(rows: dict, frames, repeats: int) -> dict:
    """rows: name -> (pipeline, batch). Rounds interleave the rows (row A, B, C, then A, B, C again), so a change in
    what else the machine runs falls on every row alike; per row the best and the median round, per frame."""
    cameras = len(frames)
    states = {name: [pipeline.new_state() for _ in range(cameras)] for name, (pipeline, _) in rows.items()}
    for name, (pipeline, batch) in rows.items():
        _round(pipeline, frames, states[name], batch, 0)  # warm-up; it also gives every state its previous frame
    rounds: dict[str, list] = {name: [] for name in rows}
    for k in range(1, repeats + 1):
        for name, (pipeline, batch) in rows.items():
            rounds[name].append(_round(pipeline, frames, states[name], batch, k))
    out = {}
    for name, rs in rounds.items():
        best = min(rs, key=lambda r: r[0])
        out[name] = {"per_frame_ms": 1000 * best[0] / cameras,
                     "median_per_frame_ms": 1000 * statistics.median(r[0] for r in rs) / cameras,
                     "cpu_per_frame_ms": 1000 * statistics.median(r[1] for r in rs) / cameras,
                     "stage_per_frame_ms": {s: 1000 * best[2][s] / cameras for s in STAGES}}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="224x294,480x640", help="HEIGHTxWIDTH, comma-separated")
    ap.add_argument("--batches", default="1,2,4", help="cameras served together (the export's N is the largest)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per row, after a warm-up round")
    ap.add_argument("--precision", default="fp32", help="the graphs' precision (ONNX Runtime on the CPU: fp32)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    ap.add_argument("--cache", type=Path, default=None, help="export folders (reused while current)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    add_record_option(ap, "batching")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()

    from smoothdino.core.paths import smoothdino_home
    from smoothdino.edge.pipeline import DepthPipeline

    cache = args.cache or smoothdino_home() / "benchmarks" / "batching"
    batches = sorted({int(b) for b in args.batches.split(",")})
    top = max(batches)
    figures: dict = {"sizes": {}, "batches": batches, "backend": "onnxruntime", "precision": args.precision,
                     "threads": args.threads or os.cpu_count(), "load_average_before": list(load_before)}
    rows = []
    for size in _sizes(args.sizes):
        key = f"{size[0]}x{size[1]}"
        frames = camera_frames(size, top, args.repeats + 1)
        static = export_for(size, 1, args.precision, cache)
        batched = export_for(size, top, args.precision, cache) if top > 1 else static
        with DepthPipeline(static, backend="onnxruntime", threads=args.threads) as one, \
                DepthPipeline(batched, backend="onnxruntime", threads=args.threads) as many:
            runs = {"static 1": (one, 1), **{("single" if b == 1 else f"batch {b}"): (many, b) for b in batches}}
            result = measure(runs, frames, args.repeats)
        figures["sizes"][key] = result
        base = result["static 1"]
        for name, m in result.items():
            stage = m["stage_per_frame_ms"]
            rows.append([key, name, round(m["per_frame_ms"], 1), round(m["median_per_frame_ms"], 1),
                         round(m["cpu_per_frame_ms"], 1), round(stage["encoder"], 1), round(stage["adapter"], 1),
                         round(stage["decoder"], 1), round(m["median_per_frame_ms"] / base["median_per_frame_ms"], 3),
                         round(m["cpu_per_frame_ms"] / base["cpu_per_frame_ms"], 3)])
            print(f"{key} {name:>9}: {m['per_frame_ms']:8.1f} ms/frame (median {m['median_per_frame_ms']:.1f}, CPU "
                  f"{m['cpu_per_frame_ms']:.1f}; encoder {stage['encoder']:.1f}, adapter {stage['adapter']:.1f}, "
                  f"decoder {stage['decoder']:.1f}) median x{m['median_per_frame_ms'] / base['median_per_frame_ms']:.3f} of static 1 "
                  f"(CPU x{m['cpu_per_frame_ms'] / base['cpu_per_frame_ms']:.3f})", flush=True)
    figures["load_average_after"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    if args.record:
        cpus = os.cpu_count() or 1
        notes = [
            "Rounds interleave the rows (each row's round, then the next row's, and again), so other work on the "
            "machine falls on every row alike. CPU = this process's CPU seconds per frame (all its threads, median "
            "round): less sensitive to other work than the wall time, though ONNX Runtime's spinning threads count.",
            "The ratios compare medians (with rounds interleaved, the best round of a row is the one that met a "
            "quiet moment, which differs between rows). Stages: the best round's.",
            "Per frame = a round's time for every camera's frame / the cameras; `static 1` is the export "
            "without a batch axis (today's graphs), `single` the batch export run one frame a pass, `batch B` one "
            "pass of B cameras' frames (step_batch, each camera with its own previous features and shift).",
            f"ONNX Runtime on the CPU, {args.precision} graphs, {figures['threads']} threads, vits14 + temporal "
            f"adapter, network on every frame; best of {args.repeats} rounds after a warm-up.",
            f"1-minute load average as the run began: {load_before[0]:.2f} on {cpus} CPUs"
            + (" (other work shared the CPUs)" if load_before[0] >= 0.5 * cpus else " (a quiet machine)") + ".",
            "No GPU here: the TensorRT figure (profile 1..N) waits for one; choose_batch batches only where a "
            "figure for that back-end says it pays.",
        ]
        write_record(Record("batching", "Is one network pass over several cameras' frames cheaper per frame than "
                            "one pass each (ONNX Runtime, this CPU)?",
                            [Table("ms per frame", ["size", "run", "best", "median", "CPU", "encoder", "adapter",
                                                    "decoder", "median x static 1", "CPU x static 1"], rows)],
                            notes=notes, random_weights=True),
                     args.record, command_line(__spec__.name, argv))
    return figures


if __name__ == "__main__":
    main()
