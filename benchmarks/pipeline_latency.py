"""Per-stage latency (p50/p95) and FPS of the edge pipeline, against (a) re-encoding the previous frame at
every step, as the published SmoothDINOv2 code does, and (b) PyTorch eager FP32.

    python -m smoothdino.benchmarks.pipeline_latency --data ../shared/data/nyu2_sample/basement_0001a_out --frames 20

Exports vits14 + temporal at the frame size (480x640 by default) unless --engines is given. Results:
<out>/pipeline_latency.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from smoothdino.core.images import parse_size, resize_rgb
from smoothdino.edge.pipeline import STAGE_TIMINGS, DepthPipeline
from smoothdino.core.files import atomic_write_text
from smoothdino.edge.sinks import json_dumps
from smoothdino.edge.sources import FolderSource
from smoothdino.edge.sources.synthetic import SyntheticScene

from .record import Record, Table, add_record_option, command_line, write_record
from .report import markdown_table
from .runners import percentiles


def frames_from(data: str | None, count: int, size) -> list[np.ndarray]:
    if data:
        source = FolderSource(Path(data), limit=count)
        rgbs = [f.rgb for f in source]
        return [resize_rgb(f, size) for f in rgbs]
    return [rgb for rgb, _ in SyntheticScene(size[0], size[1], frames=count)]


def run(frames, engines: Path, warmup: int, torch_reference: bool, random_weights: bool, weights_dir=None) -> dict:
    rows = {}
    with DepthPipeline.from_folder(engines, backend="auto") as pipeline:
        times = [pipeline.step(rgb).timings for rgb in frames]
        rows["edge pipeline (encoder once per frame)"] = times[warmup:]
        pipeline.reset()
        times = []
        for i, rgb in enumerate(frames):
            mark_extra = 0.0
            if i:  # the published loop encodes frame t-1 again, and fuses those levels into frame t
                start = time.perf_counter()
                pipeline.prime(frames[i - 1])
                mark_extra = time.perf_counter() - start
            t = dict(pipeline.step(rgb).timings)
            t["encoder"] += mark_extra
            t["total"] += mark_extra
            times.append(t)
        rows["re-encode previous frame (published)"] = times[warmup:]
        description = pipeline.description
    if torch_reference:
        m = json.loads((engines / "manifest.json").read_text())
        from smoothdino.models import TorchPipeline

        with TorchPipeline(m["arch"], m["adapter"], m["head"], tuple(m["frame_size"]), weights_dir=weights_dir,
                           random_weights=random_weights) as reference:
            rows["PyTorch eager FP32"] = [reference.step(rgb).timings for rgb in frames][warmup:]
    table = {name: {s: percentiles([t[s] for t in ts]) for s in STAGE_TIMINGS} for name, ts in rows.items()}
    base = table["edge pipeline (encoder once per frame)"]["total"]["p50_ms"]
    for name, stats in table.items():
        stats["fps"] = 1000.0 / stats["total"]["p50_ms"]
        stats["speedup_of_edge_pipeline"] = stats["total"]["p50_ms"] / base
    return {"pipeline": description, "frames": len(frames), "warmup": warmup, "results": table}


STAGES = ("total", "encoder", "adapter", "decoder", "motion", "pre", "post")


def table(result: dict) -> Table:
    return Table(f"{result['pipeline']}: ms a frame, p50 / p95 ({result['frames']} frames, the first "
                 f"{result['warmup']} left out)", ["variant", "FPS", *STAGES, "edge speed-up"],
                 [[name, f"{s['fps']:.2f}", *(f"{s[k]['p50_ms']:.1f} / {s[k]['p95_ms']:.1f}" for k in STAGES),
                   f"x{s['speedup_of_edge_pipeline']:.2f}"] for name, s in result["results"].items()])


def markdown(result: dict) -> str:
    t = table(result)
    return "\n".join(["# pipeline latency", "", t.caption, "", *markdown_table(t.columns, t.rows)]) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="NYUv2 sequence folder (default: synthetic frames)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--size", default="480x640")
    p.add_argument("--engines", type=Path, help="an export folder (default: export vits14+temporal fp16)")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--weights-dir", type=Path)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager reference")
    p.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    add_record_option(p, "pipeline_latency")
    a = p.parse_args(argv)
    size = parse_size(a.size)
    a.out.mkdir(parents=True, exist_ok=True)
    engines = a.engines
    if engines is None:
        from smoothdino.export import ExportSpec, export_model

        engines = a.out / f"engines-vits14-temporal-{a.precision}-{a.size}"
        if not (engines / "manifest.json").is_file():
            export_model(ExportSpec(size=size, precision=a.precision, backend="auto", weights_dir=a.weights_dir,
                                    random_weights=a.random_weights, calibration=[Path(a.data)] if a.data else [],
                                    calibration_frames=2, force=True), engines)
    result = run(frames_from(a.data, a.frames, size), engines, a.warmup, not a.no_torch, a.random_weights, a.weights_dir)
    atomic_write_text(a.out / "pipeline_latency.json", json_dumps(result))
    atomic_write_text(a.out / "pipeline_latency.md", markdown(result))
    print(markdown(result))
    if a.record:
        from smoothdino.edge.engines.manifest import Manifest

        random = Manifest.load(engines).random_weights
        write_record(Record("pipeline_latency", "Where does a frame's time go, and what does encoding each frame "
                            "once (not twice, as the published loop does) save?", [table(result)],
                            random_weights=random),
                     a.record, command_line(__spec__.name, argv))


if __name__ == "__main__":
    main()
