"""Does every graph we export parse and build with TensorRT, and what does it cost? Built with TensorRT for
RTX, which builds ahead of time without a GPU, so this runs on any Linux x86_64 machine.

    python -m smoothdino.benchmarks.tensorrt_build                       # the full matrix
    python -m smoothdino.benchmarks.tensorrt_build --archs vits14 --heads dpt --sizes 70x98

Matrix: arch x head x adapter (none, paper folded into the decoder, temporal) x precision, at each size
(480x640 for vits14 only unless --archs-480 says otherwise). Random weights: the graphs' structure and types
are what TensorRT checks, not their values. Graphs are exported without the precision gate (the export
tests cover it). Results: <out>/tensorrt_build.json and .md (graph x precision -> parse/build, engine MiB,
build seconds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_text
from smoothdino.edge.sinks import json_dumps

from .report import markdown_table

ADAPTERS = ("none", "paper", "temporal")
PRECISIONS = ("fp32", "fp16")


def export_graphs(arch: str, head: str, adapter: str, size: tuple[int, int], out: Path,
                  stages: tuple[str, ...] | None = None, precisions: tuple[str, ...] = PRECISIONS) -> dict:
    """ONNX graphs (FP32, and the mixed FP16 ones) of an export, without the gate or the PyTorch comparison:
    {stage: StageFiles} with the manifest's I/O. `stages` limits which graphs are written."""
    from smoothdino.export import ExportSpec
    from smoothdino.export.exporter import build_context
    from smoothdino.export.fp16 import convert_to_fp16
    from smoothdino.export.onnx import export_graph

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = ExportSpec(arch=arch, head=head, adapter=adapter, size=size, precision="fp16", backend="onnx",
                      random_weights=True)
    ctx = build_context(spec, out)
    written = {}
    for stage in stages or tuple(ctx.modules):
        files = ctx.stages[stage]
        fp32 = export_graph(ctx.modules[stage], stage, ctx.examples[stage], out / f"{stage}.onnx")
        files.onnx["fp32"] = fp32.name
        if "fp16" in precisions:
            files.onnx["fp16"] = convert_to_fp16(fp32, out / f"{stage}.fp16.onnx", stage).name
        written[stage] = files
    return written


def build_row(label: str, onnx_path: Path, files, precision: str, compute_capabilities: list[str]) -> dict:
    from smoothdino.export.tensorrt import build_engine

    row = {"graph": label, "precision": precision, "result": "", "engine_mib": None, "build_s": None}
    start = time.perf_counter()
    engine = onnx_path.with_suffix(".engine")
    try:
        build_engine(onnx_path, engine, flavour="tensorrt-rtx", compute_capabilities=compute_capabilities,
                     expected_io={"inputs": files.inputs, "outputs": files.outputs}, fp32_exact=precision == "fp32")
    except UserError as err:
        row["result"] = "refused: " + str(err).split(": ", 1)[-1][:160]
    else:
        row.update(result="built", engine_mib=round(engine.stat().st_size / 2**20, 1))
        engine.unlink()  # engines are large; only their size is reported
    row["build_s"] = round(time.perf_counter() - start, 2)
    return row


def markdown(rows: list[dict], header: str) -> str:
    table = markdown_table(["graph", "precision", "parse/build", "engine MiB", "build s"],
                           [[r["graph"], r["precision"], r["result"], r["engine_mib"], r["build_s"]] for r in rows])
    return "\n".join([header, ""] + table) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="vits14,vitb14")
    p.add_argument("--heads", default="dpt,linear4")
    p.add_argument("--adapters", default=",".join(ADAPTERS))
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--sizes", default="70x98,480x640")
    p.add_argument("--archs-480", default="vits14", help="archs built at sizes of 480 rows or more")
    p.add_argument("--compute-capability", action="append", default=[],
                   help="TensorRT for RTX targets (default: the portable set, less Turing for FP32)")
    p.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    a = p.parse_args(argv)
    from smoothdino.edge.machine.environment import tensorrt_version
    from smoothdino.export.tensorrt import (
        require_tensorrt,
        resolve_compute_capabilities,
    )

    require_tensorrt("tensorrt-rtx")
    precisions = a.precisions.split(",")
    rows: list[dict] = []
    work = a.out / "tensorrt_build"
    started = time.perf_counter()
    for size_text in a.sizes.split(","):
        size = tuple(int(v) for v in size_text.split("x"))
        for arch in a.archs.split(","):
            if size[0] >= 480 and arch not in a.archs_480.split(","):
                continue
            encoder_done = False  # the encoder graph does not depend on the head or adapter: built once
            for head in a.heads.split(","):
                for adapter in a.adapters.split(","):
                    stages = ("decoder",) if encoder_done else None
                    if adapter == "temporal":
                        stages = ("adapter", "decoder") if encoder_done else None
                    folder = work / f"{arch}_{head}_{adapter}_{size_text}"
                    graphs = export_graphs(arch, head, adapter, size, folder, stages, tuple(precisions))
                    encoder_done = True
                    for stage, files in graphs.items():
                        label = f"{arch} {size_text} {stage}" + ("" if stage == "encoder" else f" ({head}, {adapter})")
                        for precision in precisions:
                            ccs = resolve_compute_capabilities("tensorrt-rtx", a.compute_capability, precision)
                            row = build_row(label, folder / files.onnx[precision], files, precision, ccs)
                            row["compute_capabilities"] = ccs
                            rows.append(row)
                            print(f"{row['graph']:<48} {precision}  {row['result'][:60]:<20} "
                                  f"{row['engine_mib'] or '':>7} MiB  {row['build_s']:>6} s", flush=True)
    header = (f"TensorRT for RTX {tensorrt_version('tensorrt-rtx')} ahead-of-time builds (no GPU), random weights; "
              f"targets sm {', '.join(resolve_compute_capabilities('tensorrt-rtx', a.compute_capability, 'fp16'))} "
              f"(FP16) / sm {', '.join(resolve_compute_capabilities('tensorrt-rtx', a.compute_capability, 'fp32'))} "
              f"(FP32); {time.perf_counter() - started:.0f} s in all")
    table = markdown(rows, header)
    print(table)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "tensorrt_build.md", table)
    atomic_write_text(a.out / "tensorrt_build.json", json_dumps({"header": header, "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
