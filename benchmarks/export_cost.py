"""Export time per graph and graph sizes, for the archs and precisions given; or, with --readme, what the README's
first export costs a newcomer: `smoothdino export --precision auto` at 480x640, run as the README runs it (a child
process per run), with its wall time, CPU time, peak memory and what it chose.

    python -m smoothdino.benchmarks.export_cost --archs vits14,vitb14 --size 480x640 --random-weights
    python -m smoothdino.benchmarks.export_cost --readme --runs 3 --random-weights --record

Results: <out>/export_cost.json and .md; --record (with --readme) also writes benchmarks/results/export_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smoothdino.core.images import parse_size
from smoothdino.core.files import atomic_write_text
from smoothdino.edge.sinks import json_dumps

from .record import Record, Table, add_record_option, command_line, load_note, write_record

README_COMMAND = ["export", "--precision", "auto"]  # README.md "Depth on your own video", less --out


def run_readme_export(folder: Path, weights_dir: Path | None, random_weights: bool) -> dict:
    """One README export in a child process (`python -m smoothdino.cli`, i.e. the `smoothdino` script): wall and
    CPU seconds and peak resident memory of that process (wait4), and what its manifest says it chose."""
    command = [sys.executable, "-m", "smoothdino.cli", *README_COMMAND, "--out", str(folder)]
    command += ["--weights-dir", str(weights_dir)] if weights_dir else []
    command += ["--random-weights"] if random_weights else []
    load = os.getloadavg()[0]
    start = time.perf_counter()
    # a first export: no graph traced before (export/graph_cache.py), as on a newcomer's machine
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "COLUMNS": "200", "SMOOTHDINO_GRAPH_CACHE": "0"})
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-3000:]}")
    manifest = json.loads((folder / "manifest.json").read_text())
    auto = manifest["gate"].get("auto") or {}
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 2**20,
            "load_at_start": load, "chose": manifest["precision"], "passed": manifest["gate"]["passed"],
            "drift_mm": manifest["gate"]["rmse_vs_reference_mm"], "auto": auto,
            "steps_s": manifest.get("export_seconds", {})}


def readme(a, argv) -> list[dict]:
    runs = []
    parent = Path(tempfile.mkdtemp(prefix="export-cost-readme-"))
    try:
        for i in range(a.runs):
            row = run_readme_export(parent / f"run{i}", a.weights_dir, a.random_weights)
            shutil.rmtree(parent / f"run{i}", ignore_errors=True)
            runs.append(row)
            print(f"run {i + 1}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, {row['peak_rss_gb']:.2f} GB peak, "
                  f"load {row['load_at_start']:.2f} at start, chose {row['chose']}", flush=True)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "export_cost_readme.json", json_dumps(runs))
    if a.record:
        record_readme(runs, a.random_weights, a.record, command_line(__spec__.name, argv))
    return runs


def int8_gate_text(auto: dict) -> str:
    gate = auto.get("int8_gate") or {}
    if gate.get("passed") is None:
        return "not run: " + gate.get("skipped", "")
    verdict = "passed" if gate["passed"] else "failed"
    pairs = f" on {gate['pairs']} pairs (a certain refusal stops early)" if "pairs" in gate else ""
    return (f"{gate['plan']} {verdict}, drift {gate['rmse_vs_reference_mm']:.1f} mm RMSE{pairs} "
            f"(tolerance {gate['tolerance_mm']:g})")


def record_readme(runs: list[dict], random_weights: bool, folder: Path, command: str) -> Path:
    from smoothdino.export.stage_precision import parse_precision

    last = runs[-1]["auto"]
    chosen = parse_precision(last["chosen"], list(last["stage_ms"])) if last.get("chosen") else {}
    rows = [[i + 1, r["wall_s"], r["cpu_s"], r["peak_rss_gb"], r["load_at_start"], r["chose"],
             int8_gate_text(r["auto"])] for i, r in enumerate(runs)]
    stage = [[s, ms.get("fp32"), ms.get("int8"), "yes" if s in last.get("calibrated", []) else "no",
              last.get("not_calibrated", {}).get(s, "-" if "int8" in ms else "fp32 only"), chosen.get(s)]
             for s, ms in last.get("stage_ms", {}).items()]
    best = min(runs, key=lambda r: r["wall_s"])
    notes = [load_note([runs[0]["load_at_start"]]),
             f"Best of {len(runs)}: {best['wall_s']:.0f} s wall and {max(r['peak_rss_gb'] for r in runs):.2f} GB peak at "
             f"most. CPU seconds (user + system) depend little on what else runs: on 2 CPUs, about half of them is "
             "the wall time of an idle machine; the wall times here are a ceiling wherever the load was above 2.",
             "auto: the FP32 plan recorded once on the gate's pairs (the gate's reference, and the verdict if FP32 is "
             "chosen), an INT8 speed probe per candidate stage, calibration only of the stages whose INT8 is clearly "
             f"faster ({last.get('calibration_pairs')} pairs, held out from the gate's {last.get('gate_pairs')}), then "
             "that plan gated against the FP32 reference, pair by pair, stopping at the first pair after which its "
             "refusal is certain (a plan that passes runs on every pair; docs/export.md).",
             "With random weights the INT8 plan drifts far from FP32 and fails its gate: the export ends FP32, as it "
             "should; with trained (or the official-format) weights it may pass and run INT8."]
    return write_record(Record("export_cost", "What does the README's first export (`smoothdino export --precision "
                               "auto`, 480x640) cost on this machine, and what does it choose?",
                               [Table("the README's export, one child process per run",
                                      ["run", "wall s", "CPU s", "peak RSS GB", "load at start", "chose", "INT8 gate"],
                                      rows),
                                Table("what auto measured per stage (last run; ms per frame, ONNX Runtime CPU)",
                                      ["stage", "fp32 ms", "int8 ms", "calibrated", "why not", "runs in"], stage)],
                               notes=notes, random_weights=random_weights), folder, command)


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
    p.add_argument("--readme", action="store_true", help="time the README's `smoothdino export --precision auto` instead")
    p.add_argument("--runs", type=int, default=3, help="--readme: runs (the machine may be shared: report each)")
    add_record_option(p, "export_cost (with --readme)")
    a = p.parse_args(argv)
    if a.readme:
        return readme(a, argv)
    if a.record:
        p.error("--record goes with --readme")
    from smoothdino.export import ExportSpec, export_model

    os.environ["SMOOTHDINO_GRAPH_CACHE"] = "0"  # the cost of tracing, not of a copy (export/graph_cache.py)
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
