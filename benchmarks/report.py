"""Bench reports: the Markdown table a user pastes into an issue, and the accuracy-vs-latency plot."""

from __future__ import annotations

from pathlib import Path

from smoothdino.core.files import atomic_path
from smoothdino.edge.machine.jetson import describe as describe_jetson
from smoothdino.core.files import atomic_write_text

# What the papers published, for the table beside ours (different protocols: read the notes).
PAPER_FIGURES = {
    "smoothdinov2": {
        "source": "Jagnandan et al., SmoothDINOv2 (NYUv2, MSE over the full 480x640 map, Kaggle 8-bit GT)",
        "vits14+adapter_vs_vits14_mse_change_percent": -23.8,
        "claim": "DINOv2-small + adapter: lower MSE than DINOv2-base, and faster",
    },
    "dinov2_table11_nyu_dpt_rmse_m": {
        "source": "Oquab et al. 2023, Table 11 (flip TTA, Eigen crop, official NYUv2 test split)",
        "vits14": 0.356, "vitb14": 0.317, "vitl14": 0.293, "vitg14": 0.279,
    },
}


def markdown_table(columns: list[str], rows: list[list]) -> list[str]:
    """A Markdown table: header, rule, one line per row (cells printed as given; None as '-')."""
    cell = lambda v: "-" if v is None else str(v)  # noqa: E731
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _f(value, fmt="{:.4f}"):
    return fmt.format(value) if isinstance(value, (int, float)) and value == value else "-"


def _gate(gate: dict | None) -> str:
    if gate is None:
        return "reference"
    return "pass" if gate["passed"] else "**FAILED**"


def write_markdown(results: dict, path: Path) -> Path:
    lines = ["# SmoothDINO Edge benchmark", ""]
    if results.get("random_weights"):
        lines += [f"> **{results['warning']}**", ""]
    lines += [
        f"- device: {results['device']}; platform: {results['platform']}",
        f"- frames: {', '.join(f'{k} ({v})' for k, v in results['sequences'].items())}, "
        f"{results['frame_size'][0]}x{results['frame_size'][1]}; latency after {results['warmup']} warm-up frames",
        f"- CPU: {results['cpu_model']}, {results['threads']} thread{'s' if results['threads'] != 1 else ''} pinned; "
        "load average before/after: "
        f"{results['load_average_before'][0]:.2f} / {results['load_average_after'][0]:.2f}",
        *(["- Jetson: " + "; ".join(f"{k}: {v}" for k, v in describe_jetson(results["jetson"]).items())]
          if results.get("jetson") else []),
        f"- exports: {', '.join(results['precisions'])}, head {results['head']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
        "- flicker: median over frames of the median (and p90) |d_t - d_(t-1) carried by the camera's motion| / d_t "
        "(edge.flicker; lower is steadier; any video, no ground truth needed); temporal: against the ground truth's "
        "own change; fused: keyframes fused with the earlier output (--fusion)",
        "",
        "| config | back-end | precision | gate | MSE (paper) m² | MSE valid | RMSE m | AbsRel | log10 | δ1 | δ2 | δ3 | "
        "temporal m | flicker | flicker p90 | ΔMSE vs vits14 | p50 ms | p95 ms | max ms | FPS | encoder | adapter | decoder | motion | weights MiB |",
        "|" + "---|" * 25,
    ]
    for key, row in results["rows"].items():
        a, lat = row["accuracy"], row["latency"]
        delta = row.get("vs_vits14", {}).get("mse_paper")
        lines.append("| " + " | ".join([
            row["config"] + ("" if row.get("keyframes", "every") == "every"
                             else f" (keyframes {row['keyframes']}: {row['keyframe_share']:.0%})")
            + (" fused" if row.get("fused") else ""),
            row["backend"], row["precision"], _gate(row["gate"]), _f(a.get("mse_paper")), _f(a.get("mse")), _f(a.get("rmse")),
            _f(a.get("abs_rel")), _f(a.get("log10")), _f(a.get("delta1"), "{:.3f}"), _f(a.get("delta2"), "{:.3f}"),
            _f(a.get("delta3"), "{:.3f}"), _f(a.get("temporal")), _f(row.get("flicker", {}).get("median"), "{:.4f}"),
            _f(row.get("flicker", {}).get("p90"), "{:.4f}"), _f(delta, "{:+.1f} %"),
            _f(lat["total"]["p50_ms"], "{:.0f}"), _f(lat["total"]["p95_ms"], "{:.0f}"), _f(lat["total"]["max_ms"], "{:.0f}"),
            _f(row["fps"], "{:.2f}"), _f(lat["encoder"]["p50_ms"], "{:.0f}"), _f(lat["adapter"]["p50_ms"], "{:.0f}"),
            _f(lat["decoder"]["p50_ms"], "{:.0f}"), _f(lat["motion"]["p50_ms"], "{:.1f}"),
            _f(row["memory"]["weights_mib"], "{:.1f}"),
        ]) + " |")
    failed = [k for k, row in results["rows"].items() if row["gate"] and not row["gate"]["passed"]]
    if failed:
        lines += ["", "## exports that FAILED their precision gate (kept for the bench; do not deploy them)", ""]
        lines += [f"- {k}: " + "; ".join(results["rows"][k]["gate"]["reasons"]) for k in failed]
    if results["small_vs_base"]:
        lines += ["", "## small + adapter vs base", ""]
        for r in results["small_vs_base"]:
            lines.append(f"- {r['small']} / {r['base']}: latency x{r['latency_ratio']:.2f}"
                         + (f", MSE x{r['mse_ratio']:.3f}" if "mse_ratio" in r else ""))
    if results["skipped"]:
        lines += ["", "## not run", ""] + [f"- {k}: {v}" for k, v in results["skipped"].items()]
    pub = results["published"]
    lines += [
        "", "## published figures", "",
        f"- SmoothDINOv2: small + adapter changes MSE by {pub['smoothdinov2']['vits14+adapter_vs_vits14_mse_change_percent']} % "
        f"against small; {pub['smoothdinov2']['claim']}. ({pub['smoothdinov2']['source']})",
        "- DINOv2 NYUv2 DPT RMSE (m): " + ", ".join(f"{k} {v}" for k, v in pub["dinov2_table11_nyu_dpt_rmse_m"].items()
                                                    if k.startswith("vit")) + f". ({pub['dinov2_table11_nyu_dpt_rmse_m']['source']})",
        "", "Metrics: see docs/benchmarks.md. ΔMSE is against the vits14 row of the same back-end and precision.", "",
    ]
    atomic_write_text(Path(path), "\n".join(lines))
    return Path(path)


def plot_accuracy_vs_latency(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    markers = {"torch": "o", "onnxruntime": "s", "tensorrt": "^", "tensorrt-rtx": "v"}
    for key, row in results["rows"].items():
        x = row["latency"]["total"]["p50_ms"]
        y = row["accuracy"].get("mse_paper", float("nan"))
        ax.scatter([x], [y], marker=markers.get(row["backend"], "o"), s=60)
        ax.annotate(key, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("latency per frame, p50 (ms)")
    ax.set_ylabel("MSE (paper definition, m²)")
    title = f"accuracy vs latency - {results['device']}"
    if results.get("random_weights"):
        title += "\nRANDOM WEIGHTS: not a real accuracy result"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return Path(path)
