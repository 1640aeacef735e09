"""The tables commands print: an export's gate verdict, and what processing a sequence gave."""

from __future__ import annotations

from rich.table import Table
from smoothdino.edge.engines.manifest import Manifest

GATE_FIGURES = (
    ("rmse_vs_reference_mm", "depth drift vs FP32 (RMSE, mm)"),
    ("max_abs_diff_mm", "max depth difference (mm)"),
    ("rmse_reference_vs_gt_mm", "FP32 depth RMSE vs ground truth (mm)"),
    ("rmse_candidate_vs_gt_mm", "exported depth RMSE vs ground truth (mm)"),
    ("rmse_delta_mm", "RMSE change (mm)"),
    ("tolerance_mm", "tolerance (mm)"),
)


def gate_table(manifest: Manifest, title: str) -> Table:
    gate = manifest.gate or {}
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    stages = ", ".join(f"{s}: {manifest.stages[s].engine or manifest.onnx_path(s).name}" for s in manifest.stage_names)
    rows = [
        ("model", f"{manifest.arch} + {manifest.adapter} adapter, {manifest.head} head, {manifest.precision}"),
        ("frame size", f"{manifest.frame_size[0]}x{manifest.frame_size[1]}"),
        ("weights", "RANDOM (not metric)" if manifest.random_weights else "official release"),
        *([("adapter", "UNTRAINED: the identity (no --adapter-weights)")] if manifest.untrained_adapter else []),
        ("stages", stages),
    ]
    rows += [(label, f"{gate[key]:.3f}") for key, label in GATE_FIGURES if key in gate]
    rows.append(("gate", "PASS" if gate.get("passed") else "FAIL " + "; ".join(gate.get("reasons", []))))
    if gate.get("measured_on"):  # e.g. ONNX Runtime where the engines cannot run (RTX engines built without a GPU)
        rows.append(("gate measured on", gate["measured_on"]))
    rows += [(f"{stage}.onnx vs PyTorch (max rel)", f"{err:.1e}")
             for stage, err in (gate.get("onnx_vs_torch_max_rel") or {}).items()]
    for label, value in rows:
        table.add_row(label, value)
    return table


def stream_table(reports, title: str) -> Table:
    table = Table(title=title)
    for col in ("sequence", "frames", "new", "resumed", "skipped", "scene cuts", "FPS", "p50 ms", "MSE (paper)",
                "RMSE", "AbsRel", "delta1", "temporal"):
        table.add_column(col, justify="right" if col != "sequence" else "left")
    keyed = any(r.keyframes < r.computed for r in reports)
    if keyed:  # the network ran on keyframes only: how often, and the two rates
        for col in ("keyframes", "network FPS"):
            table.add_column(col, justify="right")
    flagged = any(r.nonfinite or r.reconnects for r in reports)
    if flagged:  # faults a long run met: NaN/Inf frames (written as no depth), cameras that came back
        table.add_column("NaN/Inf frames", justify="right")
        table.add_column("reconnects", justify="right")
    for r in reports:
        s = r.summary

        def f(key, fmt="{:.3f}", s=s):
            value = s.get(key)
            return fmt.format(value) if isinstance(value, float) and value == value else "-"

        cells = [r.name, str(s.get("frames", 0)), str(r.computed), str(r.reused), str(r.skipped),
                 str(r.scene_cuts), f"{r.fps:.2f}", f("latency_p50_ms", "{:.0f}"), f("mse_paper"), f("rmse"),
                 f("abs_rel"), f("delta1"), f("temporal")]
        share = f"{r.keyframes / r.computed:.0%}" if r.computed else "-"
        table.add_row(*cells, *([share, f"{r.network_fps:.2f}"] if keyed else []),
                      *([str(r.nonfinite), str(r.reconnects)] if flagged else []))
    return table
