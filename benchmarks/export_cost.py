"""Export time per graph and graph sizes, for the archs and precisions given.

    python -m smoothdino.benchmarks.export_cost --archs vits14,vitb14 --size 480x640 --random-weights

Results: <out>/export_cost.json and .md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from smoothdino.core.images import parse_size
from smoothdino.core.files import atomic_write_text
from smoothdino.edge.sinks import json_dumps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="vits14,vitb14")
    p.add_argument("--adapter", default="temporal")
    p.add_argument("--size", default="480x640")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--backend", default="auto")
    p.add_argument("--calibration", type=Path, action="append", default=[])
    p.add_argument("--weights-dir", type=Path)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    a = p.parse_args(argv)
    from smoothdino.export import ExportSpec, export_model

    size = parse_size(a.size)
    rows = []
    for arch in a.archs.split(","):
        folder = a.out / f"export-cost-{arch}-{a.adapter}-{a.size}"
        start = time.perf_counter()
        manifest, report = export_model(ExportSpec(arch=arch, adapter=a.adapter, size=size, precision=a.precision,
                                                   backend=a.backend, weights_dir=a.weights_dir,
                                                   random_weights=a.random_weights, calibration=a.calibration,
                                                   calibration_frames=2, force=True), folder, progress=lambda m: None)
        wall = time.perf_counter() - start
        files = {p.name: p.stat().st_size / 2**20 for p in sorted(folder.iterdir()) if p.suffix in (".onnx", ".engine")}
        rows.append({"arch": arch, "seconds": manifest.export_seconds, "wall_seconds": wall, "mib": files,
                     "gate_drift_mm": report.depth["rmse_vs_reference_mm"]})
    lines = [f"# export cost ({a.adapter} adapter, {a.size}, {a.precision})", "", "| arch | file | MiB | seconds |", "|---|---|---|---|"]
    for r in rows:
        for name, mib in r["mib"].items():
            lines.append(f"| {r['arch']} | {name} | {mib:.1f} | {r['seconds'].get(name.replace('.' + a.precision + '.engine', '.engine'), float('nan')):.2f} |")
        lines.append(f"| {r['arch']} | total (with gate) | - | {r['wall_seconds']:.1f} |")
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "export_cost.json", json_dumps(rows))
    atomic_write_text(a.out / "export_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
