"""smoothdino: one command line for weights, export, calibration, processing, live depth, benchmarks, training.

Commands that only run engines (process with --engines, live, info) never import torch, so they work on a
Jetson with numpy, OpenCV, ONNX Runtime and TensorRT alone. Errors a user can fix print one line, exit 2.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from smoothdino.core.console import console, reset_notices
from smoothdino.core.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Live metric depth from a moving camera: DINOv2 + temporal adapter on TensorRT / ONNX Runtime.")
weights_app = typer.Typer(no_args_is_help=True, help="Official DINOv2 release files: list, fetch, verify.")
app.add_typer(weights_app, name="weights")


def user_errors(fn):
    """Turn UserError (and Ctrl-C) into one line and an exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        reset_notices()
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def parse_size(text: str) -> tuple[int, int]:
    """'480x640' (height x width) -> (480, 640)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h < 14 or w < 14:
            raise ValueError
        return h, w
    except ValueError:
        raise UserError(f"--size {text!r}: give HEIGHTxWIDTH, e.g. 480x640 (each at least 14)") from None


ARCH_HELP = "Backbone: vits14, vitb14, vitl14 or vitg14."
RANDOM_HELP = "Seeded random weights in the official layout (no download; results are not metric)."


# -- weights --------------------------------------------------------------------------------------

def _selected_files(archs: list[str] | None, kinds: list[str] | None):
    from smoothdino.models.checkpoints import OFFICIAL_FILES

    files = [f for f in OFFICIAL_FILES if (not archs or f.arch in archs) and (not kinds or f.kind in kinds)]
    if not files:
        raise UserError("no release file matches: archs are vits14 vitb14 vitl14 vitg14, kinds backbone dpt linear4")
    return files


@weights_app.command("list")
@user_errors
def weights_list(weights_dir: Optional[Path] = typer.Option(None, help="Also look in this folder.")):
    """The release files, their URLs and whether they are here."""
    from smoothdino.models.checkpoints import OFFICIAL_FILES, find_local, pinned_hash, weights_cache

    table = Table(title=f"DINOv2 release files (cache: {weights_cache()})")
    for col in ("file", "size here", "sha256 (pinned)", "url"):
        table.add_column(col)
    for f in OFFICIAL_FILES:
        path = find_local(f, weights_dir)
        size = f"{path.stat().st_size / 2**20:.1f} MiB" if path else "-"
        pin = (pinned_hash(path) or "not verified")[:16] if path else "-"
        table.add_row(f.name, size, pin, f.url)
    console.print(table)


@weights_app.command("fetch")
@user_errors
def weights_fetch(
    archs: Optional[list[str]] = typer.Argument(None, help="Archs to fetch (default: vits14 vitb14)."),
    kind: Optional[list[str]] = typer.Option(None, "--kind", help="backbone, dpt, linear4 (default: backbone and dpt)."),
):
    """Download release files into the cache: resumable, atomic, accepted only after a strict load."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from smoothdino.models.checkpoints import fetch

    files = _selected_files(archs or ["vits14", "vitb14"], kind or ["backbone", "dpt"])
    with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
        for f in files:
            task = bar.add_task(f.name, total=None)
            path = fetch(f, lambda done, total, task=task: bar.update(task, completed=done, total=total))
            bar.update(task, description=f"{f.name} ok -> {path}")


@weights_app.command("verify")
@user_errors
def weights_verify(
    archs: Optional[list[str]] = typer.Argument(None, help="Archs to check (default: all present)."),
    weights_dir: Optional[Path] = typer.Option(None, help="Folder with files copied by hand."),
):
    """Strict-load every release file present and check its SHA-256 against the pin."""
    from smoothdino.models.checkpoints import find_local, verify

    checked = 0
    for f in _selected_files(archs, None):
        path = find_local(f, weights_dir)
        if path is None:
            continue
        digest = verify(path, f)
        console.print(f"ok  {path}  sha256:{digest[:16]}")
        checked += 1
    if not checked:
        where = weights_dir or "the cache"
        raise UserError(f"no release files in {where}: run `smoothdino weights fetch` or pass --weights-dir DIR")


# -- info -----------------------------------------------------------------------------------------

@app.command()
@user_errors
def info():
    """Versions, GPU, usable back-ends, and the weights cache."""
    from smoothdino.edge import environment as env

    table = Table(title="smoothdino info", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for name, version in env.versions().items():
        table.add_row(name, version or "not installed")
    g = env.gpu()
    table.add_row("GPU", f"{g['name']} (compute {g['compute_capability']})" if g else "none")
    ok, why = env.tensorrt_usable()
    backends = ["onnxruntime (" + ", ".join(env.onnxruntime_providers()) + ")"]
    backends.append("tensorrt" if ok else f"tensorrt: no - {why}")
    table.add_row("back-ends", "\n".join(backends))
    table.add_row("torch reference", "yes" if env.package_version("torch") else "no (edge-only install)")
    table.add_row("OpenCV GStreamer (CSI cameras)", "yes" if env.opencv_gstreamer() else "no")
    from smoothdino.core.paths import weights_cache_dir

    cache = weights_cache_dir()
    present = sorted(p.name for p in cache.glob("*.pth")) if cache.is_dir() else []
    table.add_row("weights cache", f"{cache}\n" + ("\n".join(present) if present else "(empty)"))
    console.print(table)


# -- export / calibrate ---------------------------------------------------------------------------

def _gate_table(manifest, title: str) -> Table:
    gate = manifest.gate or {}
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("model", f"{manifest.arch} + {manifest.adapter} adapter, {manifest.head} head, {manifest.precision}"),
        ("frame size", f"{manifest.frame_size[0]}x{manifest.frame_size[1]}"),
        ("weights", "RANDOM (not metric)" if manifest.random_weights else "official release"),
        ("stages", ", ".join(f"{s}: {manifest.stages[s].engine or manifest.stages[s].onnx.get(manifest.precision)}"
                             for s in manifest.stage_names)),
    ]
    for key, label in (("rmse_vs_reference_mm", "depth drift vs FP32 (RMSE, mm)"),
                       ("max_abs_diff_mm", "max depth difference (mm)"),
                       ("rmse_reference_vs_gt_mm", "FP32 depth RMSE vs ground truth (mm)"),
                       ("rmse_candidate_vs_gt_mm", "exported depth RMSE vs ground truth (mm)"),
                       ("rmse_delta_mm", "RMSE change (mm)"), ("tolerance_mm", "tolerance (mm)")):
        if key in gate:
            rows.append((label, f"{gate[key]:.3f}"))
    rows.append(("gate", "PASS" if gate.get("passed") else "FAIL " + "; ".join(gate.get("reasons", []))))
    for stage, err in (gate.get("onnx_vs_torch_max_rel") or {}).items():
        rows.append((f"{stage}.onnx vs PyTorch (max rel)", f"{err:.1e}"))
    for label, value in rows:
        table.add_row(label, value)
    return table


def _export(arch, head, adapter, size, precision, backend, out, weights_dir, adapter_weights, random_weights, seed,
            calibration, calibration_frames, tolerance_mm, force, workspace_mib):
    from smoothdino.export import ExportSpec, export_model

    spec = ExportSpec(arch=arch, head=head, adapter=adapter, size=size, precision=precision, backend=backend,
                      weights_dir=weights_dir, adapter_weights=adapter_weights, random_weights=random_weights,
                      seed=seed, calibration=list(calibration or []), calibration_frames=calibration_frames,
                      tolerance_mm=tolerance_mm, force=force, workspace_mib=workspace_mib)
    with console.status("exporting") as status:
        manifest, _ = export_model(spec, out, progress=lambda msg: status.update(msg))
    return manifest


@app.command()
@user_errors
def export(
    arch: str = typer.Option("vits14", help=ARCH_HELP),
    head: str = typer.Option("dpt", help="NYUv2 depth head: dpt or linear4."),
    adapter: str = typer.Option("temporal", help="none, paper (folded into the decoder) or temporal."),
    size: str = typer.Option("480x640", help="Frame size HEIGHTxWIDTH the graphs are fixed to."),
    precision: str = typer.Option("fp16", help="fp32 or fp16 (mixed: fragile parts kept FP32 in the graph)."),
    backend: str = typer.Option("auto", help="tensorrt, onnx, or auto (TensorRT where it can build)."),
    out: Path = typer.Option(Path("engines/vits14-temporal"), help="Output folder (graphs, engines, manifest.json)."),
    weights_dir: Optional[Path] = typer.Option(None, help="Folder with the official .pth files (default: cache)."),
    adapter_weights: Optional[Path] = typer.Option(None, help="Trained adapter (smoothdino train checkpoint or state dict)."),
    random_weights: bool = typer.Option(False, "--random-weights", help=RANDOM_HELP),
    seed: int = typer.Option(0, help="Seed for --random-weights."),
    calibration: Optional[list[Path]] = typer.Option(None, help="NYUv2 sequence folders for the precision gate (repeat)."),
    calibration_frames: int = typer.Option(8, help="Calibration pairs for the gate."),
    tolerance_mm: Optional[float] = typer.Option(None, help="Gate tolerance on the depth RMSE change (default 5 mm fp16)."),
    force: bool = typer.Option(False, help="Keep an export that fails the gate."),
    workspace_mib: int = typer.Option(1024, help="TensorRT builder workspace cap (small Jetsons: 512)."),
):
    """Export the three graphs (encoder, adapter, decoder), convert precision, build engines, gate, manifest."""
    manifest = _export(arch, head, adapter, parse_size(size), precision, backend, out, weights_dir, adapter_weights,
                       random_weights, seed, calibration, calibration_frames, tolerance_mm, force, workspace_mib)
    console.print(_gate_table(manifest, f"export -> {out}"))


@app.command()
@user_errors
def calibrate(
    engines: Path = typer.Option(..., help="An export folder (manifest.json)."),
    calibration: Optional[list[Path]] = typer.Option(None, help="NYUv2 sequence folders (repeat)."),
    frames: int = typer.Option(16, help="Calibration pairs."),
    backend: str = typer.Option("auto", help="Back-end of the model under test."),
    tolerance_mm: Optional[float] = typer.Option(None, help="Tolerance on the depth RMSE change (mm)."),
):
    """Run the precision gate again (e.g. with real weights, on the target device) and record it."""
    from smoothdino.calibration import DEFAULT_TOLERANCE_MM, GateError, calibration_pairs, run_gate
    from smoothdino.edge.manifest import Manifest
    from smoothdino.edge.pipeline import DepthPipeline

    manifest = Manifest.load(engines)
    tolerance = tolerance_mm if tolerance_mm is not None else DEFAULT_TOLERANCE_MM[manifest.precision]
    pairs = calibration_pairs(list(calibration or []), frames, manifest.frame_size)
    with DepthPipeline(manifest, backend=backend) as candidate, \
            DepthPipeline(manifest, backend="onnxruntime", precision="fp32") as reference:
        report = run_gate(candidate, reference, pairs, tolerance)
    report.save(Path(engines) / "gate.json")
    manifest.gate = {**(manifest.gate or {}), **report.depth, "passed": report.passed, "reasons": report.reasons,
                     "frames": report.frames, "tolerance_mm": tolerance}
    manifest.save(Path(engines))
    console.print(_gate_table(manifest, f"precision gate: {report.candidate}"))
    if not report.passed:
        raise GateError(f"{Path(engines) / 'gate.json'}: {report.summary_line()}")


# -- process / live / demo -------------------------------------------------------------------------

def _pipeline_for(engines, out, backend, min_confidence, motion_downscale, threads=None, **export_kwargs):
    """Open an export; without one, export on the fly into <out>/engines (needs torch)."""
    from smoothdino.edge.pipeline import DepthPipeline

    if engines is None:
        from smoothdino.core.console import notice

        engines = Path(out) / "engines"
        notice(f"no --engines: exporting {export_kwargs['arch']}+{export_kwargs['adapter']} into {engines}")
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UserError("no --engines and no torch here: export elsewhere and pass --engines DIR") from None
        from smoothdino.edge.manifest import Manifest

        try:
            manifest = Manifest.load(engines)
            wanted = (tuple(export_kwargs["size"]), export_kwargs["arch"], export_kwargs["adapter"], export_kwargs["head"],
                      export_kwargs["precision"], bool(export_kwargs["random_weights"]))
            have = (tuple(manifest.frame_size), manifest.arch, manifest.adapter, manifest.head, manifest.precision,
                    manifest.random_weights)
            if wanted != have or export_kwargs.get("adapter_weights"):
                raise UserError("stale")  # export again below
        except UserError:
            _export(out=engines, backend="auto" if backend != "onnxruntime" else "onnx", **export_kwargs)
    return DepthPipeline.from_folder(engines, backend=backend, min_confidence=min_confidence,
                                     motion_downscale=motion_downscale, threads=threads)


def _first_frame_size(sequences: list[Path]) -> tuple[int, int]:
    from smoothdino.edge.sources import FolderSource

    source = FolderSource(sequences[0])
    for position in range(len(source)):
        frame = source.load(position)
        if frame is not None:
            return frame.rgb.shape[:2]
    raise UserError(f"{sequences[0]}: no readable frame")


def _report_table(reports, title: str) -> Table:
    table = Table(title=title)
    for col in ("sequence", "frames", "new", "resumed", "skipped", "scene cuts", "FPS", "p50 ms", "MSE (paper)",
                "RMSE", "AbsRel", "delta1", "temporal"):
        table.add_column(col, justify="right" if col != "sequence" else "left")
    for r in reports:
        s = r.summary

        def f(key, fmt="{:.3f}"):
            value = s.get(key)
            return fmt.format(value) if isinstance(value, float) and value == value else "-"

        table.add_row(r.name, str(s.get("frames", 0)), str(r.computed), str(r.reused), str(r.skipped),
                      str(r.scene_cuts), f"{r.fps:.2f}", f("latency_p50_ms", "{:.0f}"), f("mse_paper"), f("rmse"),
                      f("abs_rel"), f("delta1"), f("temporal"))
    return table


@app.command()
@user_errors
def process(
    sequences: list[Path] = typer.Argument(..., help="NYUv2 sequence folders (<i>.jpg [+ <i>.png depth]) or image folders."),
    out: Path = typer.Option(Path("out/process"), help="Output folder: <out>/<sequence>/{depth/*.png, video.mp4, metrics.*}."),
    engines: Optional[Path] = typer.Option(None, help="Export folder; without it, export on the fly into <out>/engines."),
    backend: str = typer.Option("auto", help="auto, tensorrt or onnxruntime."),
    arch: str = typer.Option("vits14", help=ARCH_HELP + " (on-the-fly export)"),
    head: str = typer.Option("dpt", help="Depth head (on-the-fly export)."),
    adapter: str = typer.Option("temporal", help="Adapter (on-the-fly export)."),
    size: Optional[str] = typer.Option(None, help="Export size HEIGHTxWIDTH (on-the-fly; default: the frames' size)."),
    precision: str = typer.Option("fp16", help="Precision (on-the-fly export)."),
    weights_dir: Optional[Path] = typer.Option(None, help="Official weights folder (on-the-fly export)."),
    adapter_weights: Optional[Path] = typer.Option(None, help="Trained adapter (on-the-fly export)."),
    random_weights: bool = typer.Option(False, "--random-weights", help=RANDOM_HELP),
    video: bool = typer.Option(True, help="Write <sequence>/video.mp4 (RGB | depth)."),
    resize: bool = typer.Option(True, help="Resize frames of another size to the engines' (else refuse)."),
    resume: bool = typer.Option(True, help="Skip frames whose depth PNG is already written."),
    limit: Optional[int] = typer.Option(None, help="At most this many frames per sequence."),
    min_confidence: float = typer.Option(0.1, help="Phase-correlation response below which a frame is a scene cut."),
    motion_downscale: int = typer.Option(1, help="Phase correlation on frames shrunk by this factor."),
):
    """Depth for recorded sequences: 16-bit PNGs (mm), a video, and metrics against ground truth."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from smoothdino.core.console import random_weights_notice
    from smoothdino.edge.loop import StreamOutputs, run_stream
    from smoothdino.edge.sources import FolderSource

    for seq in sequences:
        if not Path(seq).is_dir():
            raise UserError(f"{seq}: not a folder; give NYUv2 sequence folders such as nyu2_sample/bedroom_0004_out")
    frame_size = parse_size(size) if size else _first_frame_size(sequences)
    pipeline = _pipeline_for(engines, out, backend, min_confidence, motion_downscale, arch=arch, head=head,
                             adapter=adapter, size=frame_size, precision=precision, weights_dir=weights_dir,
                             adapter_weights=adapter_weights, random_weights=random_weights, seed=0,
                             calibration=[], calibration_frames=2, tolerance_mm=None, force=False, workspace_mib=1024)
    if pipeline.manifest.random_weights:
        random_weights_notice()
    console.print(f"pipeline: {pipeline.description}")
    reports = []
    run_info = {"pipeline": pipeline.description, "backend": pipeline.backend,
                "random_weights": pipeline.manifest.random_weights, "weights": pipeline.manifest.weights}
    with pipeline, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console) as bar:
        for seq in sequences:
            source = FolderSource(seq, limit=limit)
            task = bar.add_task(source.name, total=len(source), rate="")
            folder = Path(out) / source.name
            report = run_stream(
                pipeline, source,
                StreamOutputs(folder=folder, video=folder / "video.mp4" if video else None, resume=resume),
                resize=resize, run_info=run_info,
                on_frame=lambda r, task=task: bar.update(task, completed=r.computed + r.reused + r.skipped,
                                                         rate=f"{r.fps:.2f} FPS"),
            )
            bar.update(task, completed=len(source))
            reports.append(report)
            if report.interrupted:
                break
    console.print(_report_table(reports, f"processed -> {out}"))
    if any(r.interrupted for r in reports):
        console.print("interrupted: outputs so far are written; run the same command to resume")
        raise typer.Exit(130)


@app.command()
@user_errors
def live(
    source: str = typer.Option("0", help="0 | /dev/video0 | csi://0 | a GStreamer pipeline | a video file (replayed in real time)."),
    engines: Path = typer.Option(..., help="Export folder (manifest.json)."),
    backend: str = typer.Option("auto", help="auto, tensorrt or onnxruntime."),
    headless: bool = typer.Option(False, help="No window."),
    record: Optional[Path] = typer.Option(None, help="Also write the side-by-side video here."),
    out: Optional[Path] = typer.Option(None, help="Also write depth PNGs and metrics here."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after this many frames."),
    min_confidence: float = typer.Option(0.1, help="Scene-cut threshold on the phase-correlation response."),
    motion_downscale: int = typer.Option(2, help="Phase correlation on frames shrunk by this factor."),
):
    """Live depth from a camera: window with FPS and per-stage latency; Ctrl-C or q ends cleanly."""
    from smoothdino.core.console import random_weights_notice
    from smoothdino.edge.loop import StreamOutputs, run_stream
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.edge.sources import open_source

    pipeline = DepthPipeline.from_folder(engines, backend=backend, min_confidence=min_confidence,
                                         motion_downscale=motion_downscale)
    if pipeline.manifest.random_weights:
        random_weights_notice()
    stream = open_source(source, live=True, limit=max_frames)
    console.print(f"live: {pipeline.description} <- {source}  (Ctrl-C to stop)")
    with pipeline:
        report = run_stream(pipeline, stream, StreamOutputs(folder=out, video=record, window=not headless, resume=False),
                            run_info={"pipeline": pipeline.description, "random_weights": pipeline.manifest.random_weights})
    console.print(f"live: {report.computed} frames, {report.fps:.2f} FPS, {report.dropped} dropped by the camera thread"
                  + (", interrupted" if report.interrupted else "") + (f"; video {record}" if record else ""))


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("out/demo"), help="Output folder."),
    size: str = typer.Option("240x320", help="Frame size of the synthetic sequence and the export."),
    frames: int = typer.Option(24, help="Frames in the synthetic sequence."),
    arch: str = typer.Option("vits14", help=ARCH_HELP),
    backend: str = typer.Option("auto", help="auto, tensorrt or onnxruntime."),
):
    """The whole path on a fresh machine: synthetic moving sequence -> export -> process -> video, PNGs, metrics."""
    from smoothdino.core.console import notice
    from smoothdino.edge.synthetic import SyntheticScene, write_sequence
    from smoothdino.models.checkpoints import find_local, official_file

    height, width = parse_size(size)
    sequence = write_sequence(Path(out) / "sequence" / "synthetic", SyntheticScene(height, width, frames))
    have_official = all(find_local(official_file(arch, k)) for k in ("backbone", "dpt"))
    if not have_official:
        notice(f"official {arch} weights are not in the cache (smoothdino weights fetch {arch}): using random weights")
    process.__wrapped__(
        sequences=[sequence], out=Path(out), engines=None, backend=backend, arch=arch, head="dpt", adapter="temporal",
        size=size, precision="fp16", weights_dir=None, adapter_weights=None, random_weights=not have_official,
        video=True, resize=True, resume=True, limit=None, min_confidence=0.1, motion_downscale=1,
    )
    console.print(f"demo: open {Path(out) / sequence.name / 'video.mp4'}; depth PNGs and metrics.json beside it")


# -- bench ----------------------------------------------------------------------------------------

@app.command()
@user_errors
def bench(
    data: list[str] = typer.Option(..., help="NYUv2 sequence folders (repeat), or synthetic[:HxW]."),
    configs: str = typer.Option("vits14,vits14+paper,vits14+temporal,vitb14", help="Comma-separated arch[+adapter]."),
    backends: str = typer.Option("torch,onnxruntime,tensorrt", help="Comma-separated; unavailable ones are reported."),
    frames: int = typer.Option(50, help="Consecutive frames per sequence."),
    out: Path = typer.Option(Path("out/bench"), help="results.json, results.md, accuracy_vs_latency.png, depth/."),
    size: Optional[str] = typer.Option(None, help="Frame size HEIGHTxWIDTH (default: the frames')."),
    precision: str = typer.Option("fp16", help="Precision of the exported graphs/engines."),
    warmup: int = typer.Option(2, help="Frames per runner left out of the latency statistics."),
    weights_dir: Optional[Path] = typer.Option(None, help="Official weights folder (default: cache)."),
    adapter_weights: Optional[Path] = typer.Option(None, help="Trained adapter for the +temporal / +paper configs."),
    random_weights: bool = typer.Option(False, "--random-weights", help=RANDOM_HELP),
):
    """MSE and latency of DINOv2-small (+ adapters) against DINOv2-base, every back-end, same frames."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from smoothdino.benchmarks.bench import BenchSpec, run_bench
    from smoothdino.core.console import random_weights_notice

    spec = BenchSpec(data=[Path(d) if not d.startswith("synthetic") else d for d in data], out=out,
                     configs=[c for c in configs.split(",") if c], backends=[b for b in backends.split(",") if b],
                     frames=frames, size=parse_size(size) if size else None, precision=precision, warmup=warmup,
                     weights_dir=weights_dir, adapter_weights=adapter_weights, random_weights=random_weights)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("bench", total=None)
        results = run_bench(spec, progress=lambda n, total: bar.update(task, completed=n, total=total),
                            say=lambda msg: bar.update(task, description=msg))
    if results["random_weights"]:
        random_weights_notice()
    typer.echo((Path(out) / "results.md").read_text())


# -- train ----------------------------------------------------------------------------------------

@app.command()
@user_errors
def train(
    data: list[Path] = typer.Argument(..., help="NYUv2 scene folders (<i>.jpg + <i>.png) or a folder of scenes."),
    out: Path = typer.Option(Path("runs/adapter"), help="Run folder: checkpoint.pt, adapter.pt, log.jsonl, cache/."),
    arch: str = typer.Option("vits14", help=ARCH_HELP),
    head: str = typer.Option("dpt", help="Frozen NYUv2 depth head: dpt or linear4."),
    adapter: str = typer.Option("temporal", help="temporal (the method as intended) or paper (as published)."),
    hidden: int = typer.Option(64, help="Hidden width of the temporal adapter's conv block."),
    size: str = typer.Option("480x640", help="Training frame size HEIGHTxWIDTH (frames are resized)."),
    epochs: int = typer.Option(10, help="Epochs (paper: 10)."),
    batch: int = typer.Option(10, help="Pairs per batch (paper: 10); split across ranks under torchrun."),
    lr: float = typer.Option(1e-5, help="Adam learning rate (paper: 1e-5)."),
    regularized: bool = typer.Option(False, help="Add 0.1 x MSE to the un-adapted prediction (published variant)."),
    val_scenes: Optional[list[str]] = typer.Option(None, help="Scene names held out for validation (default: the last)."),
    frames_per_scene: Optional[int] = typer.Option(None, help="Use only the first N frames of each scene."),
    checkpoint_every: int = typer.Option(50, help="Write checkpoint.pt every N steps (atomically)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps (resumable)."),
    resume: bool = typer.Option(False, help="Continue exactly from <out>/checkpoint.pt."),
    cache: bool = typer.Option(True, help="Cache encoder levels on disk (float16) so later epochs skip the encoder."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default <out>/cache)."),
    min_confidence: float = typer.Option(0.1, help="Phase-correlation response below which a pair is a scene cut."),
    weights_dir: Optional[Path] = typer.Option(None, help="Official weights folder (default: cache)."),
    random_weights: bool = typer.Option(False, "--random-weights", help=RANDOM_HELP),
    seed: int = typer.Option(0, help="Seed for the batch order (and --random-weights)."),
):
    """Train an adapter with the encoder and decoder frozen (MSE to NYUv2 depth; torchrun for several GPUs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from smoothdino.models.train import TrainConfig, train as run_training

    cfg = TrainConfig(data=data, out=out, arch=arch, head=head, adapter=adapter, hidden=hidden, size=parse_size(size),
                      epochs=epochs, batch=batch, lr=lr, regularized=regularized, val_scenes=list(val_scenes or []),
                      frames_per_scene=frames_per_scene, checkpoint_every=checkpoint_every, max_steps=max_steps,
                      resume=resume, cache=cache, cache_dir=cache_dir, min_confidence=min_confidence,
                      weights_dir=weights_dir, random_weights=random_weights, seed=seed)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("training", total=max_steps, loss="")
        result = run_training(cfg, progress=lambda step, total, epoch, loss: bar.update(
            task, completed=step, total=total, description=f"epoch {epoch}", loss=f"loss {loss:.4f}"))
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports
    table = Table(title=f"train -> {out}")
    for col in ("epoch", "val original MSE", "val updated MSE", "change"):
        table.add_column(col, justify="right")
    for v in result.val:
        if "val_original_mse" in v:
            change = (v["val_updated_mse"] - v["val_original_mse"]) / v["val_original_mse"] * 100
            table.add_row(str(v["epoch"]), f"{v['val_original_mse']:.4f}", f"{v['val_updated_mse']:.4f}", f"{change:+.1f} %")
    console.print(table)
    console.print(f"{result.steps} steps, {result.seconds_per_step:.2f} s/step (median), encoder cache "
                  f"{result.cache_hits} hits / {result.cache_misses} misses; checkpoint {result.checkpoint}")
    if result.interrupted:
        raise typer.Exit(130)


def main() -> None:  # python -m smoothdino.cli
    app()


if __name__ == "__main__":
    sys.exit(main())
