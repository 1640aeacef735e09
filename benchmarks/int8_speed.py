"""INT8 goals in one run (ONNX Runtime CPU): `python -m smoothdino.benchmarks.int8_speed [--size 480x640]`.

Exports vits14+temporal (FP32 + INT8 Q/DQ, calibrated on NYUv2 pairs held out from the gate's; FP16 graphs
converted beside them) and vitb14 FP32 (no adapter), then times each stage's graph on the same real frame,
min of --repeats runs, one after the other in this process, and prints:
- decoder FP32 vs INT8 (goal: >= 3x);
- whole vits14+temporal frame (encoder + adapter + decoder) INT8 plan vs the FP16 default export (goal: >= 2x);
- vits14+temporal INT8 vs vitb14 FP32 (goal: <= 0.5x);
- the gate's INT8 depth figures on held-out NYUv2 frames (goal: within its tolerance).
Random weights (no weights are downloaded): depth values are not metric, drift figures only show quantization error.
--record writes benchmarks/results/int8_speed.json for the docs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from .record import Record, Table, add_record_option, command_line, load_note, write_record

NYU = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyu2_sample"


def time_graph(path: Path, feeds: dict, repeats: int = 3, threads: int = 2) -> float:
    """Seconds per run of one graph (min of `repeats` after a warm-up), ONNX Runtime CPU."""
    from smoothdino.edge.engines.onnxruntime_engine import OnnxRuntimeEngine

    engine = OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"], threads=threads)
    engine.run(feeds)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        engine.run(feeds)
        best = min(best, time.perf_counter() - start)
    engine.close()
    return best


def real_feeds(folder: Path, pair) -> dict[str, dict]:
    """Each stage's inputs for one frame pair through the export's FP32 graphs."""
    from smoothdino.calibration.int8 import stage_feeds
    from smoothdino.edge.engines.manifest import Manifest

    manifest = Manifest.load(folder)
    feeds = stage_feeds({s: manifest.onnx_path(s, "fp32") for s in manifest.stage_names}, [pair])
    return {s: f[-1] for s, f in feeds.items()}


def export(arch: str, adapter: str, size, precision: str, out: Path, sequences, calibration_frames: int):
    from smoothdino.export import ExportSpec, ensure_export

    spec = ExportSpec(arch=arch, adapter=adapter, size=tuple(size), precision=precision, backend="onnx",
                      random_weights=True, calibration=list(sequences), calibration_frames=calibration_frames,
                      force=True)
    return ensure_export(spec, out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calibration-frames", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "smoothdino-int8-speed")
    ap.add_argument("--no-vitb", action="store_true", help="skip the vitb14 FP32 export (slow)")
    add_record_option(ap, "int8_speed")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    size = tuple(int(v) for v in args.size.split("x"))
    sequences = sorted(p for p in NYU.iterdir() if p.is_dir()) if NYU.is_dir() else []
    from smoothdino.calibration import calibration_pairs
    from smoothdino.export.fp16 import convert_to_fp16

    tag = f"{size[0]}x{size[1]}"
    small = export("vits14", "temporal", size, "int8", args.out / f"vits14_temporal_int8_{tag}", sequences,
                   args.calibration_frames)
    for stage in small.stage_names:
        dst = small.folder / f"{stage}.fp16.onnx"
        if not dst.exists():
            convert_to_fp16(small.onnx_path(stage, "fp32"), dst, stage)
    pair = calibration_pairs(sequences, 1, size)[0]  # a gate frame: never an INT8 calibration frame
    feeds = real_feeds(small.folder, pair)
    plan = small.stage_precisions
    files = {"fp32": lambda s: small.folder / f"{s}.onnx", "fp16": lambda s: small.folder / f"{s}.fp16.onnx",
             "int8": lambda s: small.folder / f"{s}.int8.onnx"}
    result = {"conditions": f"ONNX Runtime CPU, 2 threads, {tag}, min of {args.repeats} runs after a warm-up, "
                            f"random weights, one process, machine shared (noisy)", "stage_precision": plan,
              "vits14_temporal": {}}
    for precision in ("fp32", "fp16", "int8"):
        row = {}
        for stage in small.stage_names:
            path = files[precision](stage)
            if path.exists():
                row[stage] = time_graph(path, feeds[stage], args.repeats)
        result["vits14_temporal"][precision] = row
    timing = result["vits14_temporal"]
    timing["int8_plan"] = {s: timing[p][s] for s, p in plan.items()}
    frame = {k: sum(v.values()) for k, v in timing.items()}
    result["frame_s"] = frame
    if not args.no_vitb:
        base = export("vitb14", "none", size, "fp32", args.out / f"vitb14_none_fp32_{tag}", sequences, 1)
        base_feeds = real_feeds(base.folder, pair)
        result["vitb14_fp32"] = {s: time_graph(base.onnx_path(s, "fp32"), base_feeds[s], args.repeats)
                                 for s in base.stage_names}
        frame["vitb14_fp32"] = sum(result["vitb14_fp32"].values())
    gate = json.loads((small.folder / "gate.json").read_text())
    result["gate"] = {**gate["depth"], "passed": gate["passed"], "tolerance_mm": gate["tolerance_mm"],
                      "frames": gate["frames"], "method": gate.get("calibration", {}).get("method")}
    result["goals"] = {
        "decoder_int8_speedup_vs_fp32 (>=3)": timing["fp32"]["decoder"] / timing["int8"]["decoder"],
        "frame_int8_speedup_vs_fp16_default (>=2)": frame["fp16"] / frame["int8_plan"],
        "frame_int8_vs_vitb14_fp32 (<=0.5)": frame["int8_plan"] / frame["vitb14_fp32"] if "vitb14_fp32" in frame else None,
        "int8_gate_passed": gate["passed"],
    }
    print(json.dumps(result, indent=1, default=float))
    (args.out / f"int8_speed_{tag}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    if args.record:
        write_record(Record("int8_speed", "Per stage, what does INT8 buy against FP32 and FP16 on this CPU, and how far "
                            "does it move the depth?", record_tables(result, tag, args.repeats),
                            notes=["The INT8 export is kept past a failed gate (--force) so that it can be timed: "
                                   "with random weights the gate's drift says how this random network takes "
                                   "quantization, not how the trained one does.", load_note(load_before)]),
                     args.record, command_line("smoothdino.benchmarks.int8_speed", argv))
    return result


def record_tables(result: dict, tag: str, repeats: int) -> list[Table]:
    """Per-stage ms for each graph set, the goals, and the gate's depth figures."""
    timing, frame = result["vits14_temporal"], result["frame_s"]
    stages = list(timing["fp32"])
    plan = ",".join(f"{s}={p}" for s, p in result["stage_precision"].items())
    labels = {"fp32": "vits14+temporal FP32", "fp16": "vits14+temporal FP16 (the default export)",
              "int8": "vits14+temporal INT8, every stage", "int8_plan": f"vits14+temporal INT8 plan ({plan})"}
    rows = [[labels[k], *(round(1000 * timing[k][s], 1) if s in timing[k] else None for s in stages),
             round(1000 * frame[k], 1)] for k in labels if k in timing]
    if "vitb14_fp32" in result:
        base = result["vitb14_fp32"]
        rows.append(["vitb14 FP32 (no adapter)", *(round(1000 * base[s], 1) if s in base else None for s in stages),
                     round(1000 * frame["vitb14_fp32"], 1)])
    speed = Table(f"ms a frame per stage at {tag}, ONNX Runtime CPU 2 threads, min of {repeats} runs after a warm-up, "
                  "on the same real NYUv2 frame", ["graphs", *stages, "frame"], rows)
    goals = Table("Against the goals", ["goal", "measured", "met"], [])
    for name, value in result["goals"].items():
        if isinstance(value, bool):
            goals.rows.append([name.replace("_", " "), "passed" if value else "failed", "yes" if value else "no"])
            continue
        what, bound = name.split(" (")
        limit = float(bound.strip("()<>="))
        met = None if value is None else (value >= limit if ">=" in bound else value <= limit)
        goals.rows.append([f"{what.replace('_', ' ')} ({bound.strip('()')}x)", "-" if value is None else f"{value:.2f}x",
                           "-" if met is None else ("yes" if met else "no")])
    gate = result["gate"]
    drift = Table(f"The INT8 plan's gate ({gate['frames']} held-out NYUv2 frame pairs, {gate.get('method') or '-'} "
                  "calibration), depth in mm", ["RMSE vs FP32", "max abs diff vs FP32", "tolerance", "passed"],
                  [[round(gate.get("rmse_vs_reference_mm", float("nan")), 1),
                    round(gate.get("max_abs_diff_mm", float("nan")), 1), gate["tolerance_mm"],
                    "yes" if gate["passed"] else "no"]])
    return [speed, goals, drift]


if __name__ == "__main__":
    main()
