"""Which node groups hurt depth most when quantized: `python -m smoothdino.benchmarks.int8_sensitivity [FOLDER]`.

FOLDER is an export (its FP32 graphs are used); without one, a vits14+temporal FP32 export at --size is made with
random weights into --out (reused on the next run). For one stage (default: the decoder), each node group (the
module path of its Conv/MatMul/Gemm nodes: `fusion_blocks.2`, `blocks.7/mlp`, ...) is quantized ALONE (everything
else float), calibrated on NYUv2 pairs held out from the evaluation pairs, and the depth drift from the FP32
graph (RMSE, mm) is measured on the evaluation pairs. The worst groups are the candidates for
calibration/int8.py SENSITIVE (kept in float). Also compares calibration methods with the whole stage quantized.
Random weights unless the export has real ones: then the ranking only shows this random init's fragility.
--record writes benchmarks/results/int8_sensitivity.json for the docs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from .record import Record, Table, add_record_option, command_line, load_note, write_record

NYU = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyu2_sample"


def node_groups(graph, stage: str) -> list[str]:
    from smoothdino.calibration.int8 import QUANTIZED_OPS

    groups = []
    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        if stage == "encoder":
            m = re.search(r"blocks\.\d+/(attn|mlp)", node.name)
        else:
            m = re.search(r"(fusion_blocks\.\d+|reassemble_blocks/\w+?\.\d+|convs\.\d+|/head/project|conv_depth|"
                          r"levels\.\d+)", node.name)
        key = m.group(0) if m else node.name.rsplit("/", 1)[0]
        if key not in groups:
            groups.append(key)
    return groups


def main(argv=None) -> dict:
    import onnx
    from smoothdino.calibration import calibration_pairs
    from smoothdino.calibration.int8 import METHODS, quantize_stage, stage_feeds
    from smoothdino.edge.engines.manifest import Manifest
    from smoothdino.edge.engines.onnxruntime_engine import OnnxRuntimeEngine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, nargs="?", help="an export (default: a random-weights one made at --size)")
    ap.add_argument("--size", default="224x294", help="the export made when no FOLDER is given")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "smoothdino-int8-sensitivity")
    ap.add_argument("--stage", default="decoder")
    ap.add_argument("--calibration-frames", type=int, default=3)
    ap.add_argument("--eval-frames", type=int, default=3)
    ap.add_argument("--methods", action="store_true", help="also compare minmax/entropy/percentile")
    add_record_option(ap, "int8_sensitivity")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    sequences = sorted(p for p in NYU.iterdir() if p.is_dir()) if NYU.is_dir() else []
    if args.folder is None:
        from smoothdino.core.images import parse_size

        from .int8_speed import export

        args.folder = export("vits14", "temporal", parse_size(args.size), "fp32",
                             args.out / f"vits14_temporal_fp32_{args.size}", sequences, 1).folder
    manifest = Manifest.load(args.folder)
    size = tuple(manifest.frame_size)
    held = calibration_pairs(sequences, args.eval_frames, size)
    cal = calibration_pairs(sequences, args.calibration_frames, size, avoid=held)
    graphs = {s: manifest.onnx_path(s, "fp32") for s in manifest.stage_names}
    upto = manifest.stage_names[: manifest.stage_names.index(args.stage) + 1]
    stage_cal = stage_feeds({s: graphs[s] for s in upto}, cal)[args.stage]
    stage_eval = stage_feeds({s: graphs[s] for s in upto}, held)[args.stage]
    src = graphs[args.stage]
    ref_engine = OnnxRuntimeEngine(src, providers=["CPUExecutionProvider"], threads=2)
    refs = [ref_engine.run(f) for f in stage_eval]

    def drift(path: Path) -> float:
        """Depth drift (decoder: mm RMSE) or mean relative error of the stage outputs (others, x1000)."""
        engine = OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"], threads=2)
        errs = []
        for feeds, ref in zip(stage_eval, refs):
            out = engine.run(feeds)
            if "depth" in ref:
                errs.append(float(np.mean((out["depth"] - ref["depth"]) ** 2)))
            else:
                errs.append(float(np.mean([np.mean(np.abs(out[k] - ref[k])) / np.mean(np.abs(ref[k])) for k in ref]) ** 2))
        return 1000.0 * float(np.sqrt(np.mean(errs)))

    groups = node_groups(onnx.load(str(src)).graph, args.stage)
    result = {"stage": args.stage, "frame_size": list(size), "random_weights": manifest.random_weights,
              "unit": "depth drift mm RMSE" if args.stage == "decoder" else "mean relative error x1000",
              "groups": {}, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / f"{args.stage}.int8.onnx"
        start = time.perf_counter()
        for group in groups:
            try:
                quantize_stage(src, dst, args.stage, stage_cal, only=[group])
            except Exception as err:  # a group with nothing quantizable
                result["groups"][group] = f"skipped ({type(err).__name__})"
                continue
            result["groups"][group] = round(drift(dst), 3)
            print(f"{group:40s} {result['groups'][group]}", flush=True)
        for method in METHODS if args.methods else ("minmax",):
            quantize_stage(src, dst, args.stage, stage_cal, method=method)
            result["methods"][method] = round(drift(dst), 3)
            print(f"all, {method:33s} {result['methods'][method]}", flush=True)
        result["seconds"] = round(time.perf_counter() - start, 1)
    ranked = sorted(((v, k) for k, v in result["groups"].items() if isinstance(v, float)), reverse=True)
    result["worst"] = [k for _, k in ranked[:3]]
    print(json.dumps(result, indent=1))
    if args.record:
        tables = [Table(f"{manifest.arch}+{manifest.adapter}'s {args.stage}, "
                        f"{size[0]}x{size[1]}: each node group quantized alone (minmax), the rest float; "
                        f"{result['unit']} against the FP32 graph on {len(held)} held-out NYUv2 frame pairs, worst first",
                        ["node group", result["unit"]],
                        [[k, v] for v, k in ranked] + [[k, v] for k, v in result["groups"].items()
                                                       if not isinstance(v, float)]),
                  Table(f"The whole {args.stage} quantized, per calibration method ({result['unit']})",
                        ["method", result["unit"]], [[k, v] for k, v in result["methods"].items()])]
        write_record(Record("int8_sensitivity", f"Which {args.stage} node groups move the depth most when quantized "
                            "alone (candidates to keep in float)?", tables,
                            random_weights=bool(manifest.random_weights), notes=[
                                "With random weights the ranking shows this random network's fragility, not the "
                                "trained one's: calibration/int8.py SENSITIVE (the groups kept in float; empty today) should "
                                "come from this sweep on real weights.",
                                f"{len(cal)} calibration pairs, disjoint from the evaluation pairs; "
                                f"{result['seconds']:g} s.", load_note(load_before)]),
                     args.record, command_line("smoothdino.benchmarks.int8_sensitivity", argv))
    return result


if __name__ == "__main__":
    main()
