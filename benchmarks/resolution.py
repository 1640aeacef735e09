"""Frame size vs latency and depth: `python -m smoothdino.benchmarks.resolution [--sizes 480x640,364x476,...]`.

vits14+temporal exported at each size (FP32 + the INT8 plan, ONNX Runtime CPU); per stage latency (min of
--repeats after a warm-up, same process, one after the other) and the depth drift against the --reference
(480x640) FP32 output: each size's depth is resized (bilinear) to the reference size and compared, RMSE in mm, on
NYUv2 pairs held out from the INT8 calibration frames. Random weights: drift shows resolution + quantization error
of a random network, not metric accuracy. --record writes benchmarks/results/resolution.json for the docs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np

from .int8_speed import NYU, export, time_graph
from .record import Record, Table, add_record_option, command_line, load_note, write_record
from .report import markdown_table

SIZES = ((480, 640), (364, 476), (280, 364), (224, 294))


def main(argv=None) -> dict:
    from smoothdino.calibration import calibration_pairs
    from smoothdino.calibration.int8 import stage_feeds
    from smoothdino.edge.pipeline import DepthPipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES))
    ap.add_argument("--frames", type=int, default=2, help="held-out NYUv2 pairs for the drift")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--calibration-frames", type=int, default=3)
    ap.add_argument("--reference", default="480x640", help="the size whose FP32 depth the others are compared with")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "smoothdino-resolution")
    add_record_option(ap, "resolution")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    sequences = sorted(p for p in NYU.iterdir() if p.is_dir()) if NYU.is_dir() else []
    full = tuple(int(v) for v in args.reference.split("x"))
    ref = f"{full[0]}x{full[1]}"
    eval_full = calibration_pairs(sequences, args.frames, full)  # the gate's pairs: never calibration frames
    rows, reference = [], None
    for size in [full] + [s for s in sizes if s != full]:
        manifest = export("vits14", "temporal", size, "int8", args.out / f"vits14_temporal_int8_{size[0]}x{size[1]}",
                          sequences, args.calibration_frames)
        pairs = calibration_pairs(sequences, args.frames, size)
        feeds = stage_feeds({s: manifest.onnx_path(s, "fp32") for s in manifest.stage_names}, pairs[:1])
        depths = {}
        for precision in ("fp32", None):  # None: the export's own per-stage plan (INT8)
            with DepthPipeline(manifest, backend="onnxruntime", precision=precision, threads=2) as pipe:
                out = []
                for pair in pairs:
                    pipe.reset()
                    pipe.prime(pair.previous)
                    out.append(cv2.resize(pipe.step(pair.current).depth, (full[1], full[0]), interpolation=cv2.INTER_LINEAR))
                depths[precision or "int8"] = np.stack(out)
        if size == full:
            reference = depths["fp32"]
        for precision in ("fp32", "int8"):
            latency = {s: 1000 * time_graph(manifest.onnx_path(s, None if precision == "int8" else "fp32"),
                                            feeds[s][-1], args.repeats) for s in manifest.stage_names}
            drift = 1000 * float(np.sqrt(np.mean((depths[precision] - reference) ** 2)))
            row = {"size": f"{size[0]}x{size[1]}", "precision": precision if precision == "fp32" else manifest.precision,
                   **{f"{s}_ms": round(v, 1) for s, v in latency.items()},
                   "frame_ms": round(sum(latency.values()), 1), "drift_vs_reference_fp32_mm": round(drift, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = Table(f"vits14+temporal per frame size, ONNX Runtime CPU 2 threads, min of {args.repeats} runs after a "
                  f"warm-up; drift: depth resized to {ref} against the {ref} FP32 depth on {len(eval_full)} held-out "
                  "NYUv2 pairs",
                  ["size", "precision", "encoder ms", "adapter ms", "decoder ms", "frame ms",
                   f"depth drift vs {ref} FP32 (mm RMSE)"],
                  [[r["size"], r["precision"], r.get("encoder_ms"), r.get("adapter_ms"), r.get("decoder_ms"),
                    r["frame_ms"], r["drift_vs_reference_fp32_mm"]] for r in rows])
    print("\n" + "\n".join(markdown_table(table.columns, table.rows)))
    print(f"\nONNX Runtime CPU, 2 threads, min of {args.repeats} runs, {len(eval_full)} held-out NYUv2 pairs, "
          "random weights, shared machine (noisy)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "resolution.json").write_text(json.dumps(rows, indent=1) + "\n")
    if args.record:
        write_record(Record("resolution", "Which frame size to pick: what does each size cost a frame, and how far "
                            "does its depth move from the full size's?", [table], notes=[
                                "With random weights the drift is resolution and quantization error of a random "
                                "network, not accuracy; the INT8 plans are kept past a failed gate so they can be "
                                "timed.", load_note(load_before)]),
                     args.record, command_line("smoothdino.benchmarks.resolution", argv))
    return {"rows": rows}


if __name__ == "__main__":
    main()
