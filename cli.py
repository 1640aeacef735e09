"""smoothdino: one command line for weights, export, calibration, processing, live depth, benchmarks, training.

Commands that only run engines (process with --engines, live, info) never import torch, so they work on a
Jetson with numpy, OpenCV, ONNX Runtime and TensorRT alone. Errors a user can fix print one line, exit 2.
"""

from __future__ import annotations

import functools
import inspect as inspect_module
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from smoothdino.core.backends import BACKENDS, ONNXRUNTIME_BACKENDS, backend_word
from smoothdino.core.console import (
    console,
    error_line,
    notice,
    random_weights_notice,
    reset_notices,
    untrained_adapter_notice,
)
from smoothdino.core.errors import UserError
from smoothdino.core.extras import missing_extra
from smoothdino.core.images import parse_size
from smoothdino.core.signals import interrupt_exit_code, termination_as_interrupt
from smoothdino.edge.commands.tables import gate_table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Live metric depth from a moving camera: DINOv2 + temporal adapter on TensorRT / ONNX Runtime.")
weights_app = typer.Typer(no_args_is_help=True, help="Official DINOv2 release files: list, fetch, verify.")
app.add_typer(weights_app, name="weights")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        from smoothdino import __version__

        try:  # the installed distribution's (pyproject.toml); a source tree without one: the package's own
            typer.echo(f"smoothdino {version('smoothdino-edge')}")
        except PackageNotFoundError:
            typer.echo(f"smoothdino {__version__}")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
):
    pass


def user_errors(fn):
    """Turn UserError, a missing optional extra, Ctrl-C and SIGTERM into one line and an exit code instead of
    a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        reset_notices()
        try:
            try:
                with termination_as_interrupt():
                    return fn(*args, **kwargs)
            except ModuleNotFoundError as err:
                raise missing_extra(err, f"smoothdino {fn.__name__.replace('_', ' ')}") or err from None
        except UserError as err:
            error_line(str(err))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(interrupt_exit_code()) from None

    return wrapper


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
    kind: Optional[list[str]] = typer.Option(None, "--kind", metavar="backbone|dpt|linear4", help="Which files (repeat, or comma-separated; default: backbone and dpt)."),
):
    """Download release files into the cache: resumable, atomic, accepted only after a strict load. From a mirror with
    the release's layout: SMOOTHDINO_WEIGHTS_URL=URL."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from smoothdino.models.weights import fetch

    files = _selected_files(archs or ["vits14", "vitb14"], words(kind) or ["backbone", "dpt"])
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
    from smoothdino.models.checkpoints import find_local
    from smoothdino.models.weights import verify

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
    """Versions, GPU, usable back-ends, the weights cache; on a Jetson its module, JetPack, power mode and clocks."""
    from smoothdino.edge.machine import environment as env
    table = Table(title="smoothdino info", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for name, version in env.versions().items():
        table.add_row(name, version or "not installed")
    g = env.gpu()
    table.add_row("GPU", f"{g['name']} (compute {g['compute_capability']})" if g else "none")
    from smoothdino.edge.engines.factory import cuda_provider_state

    providers = env.onnxruntime_providers()
    cuda, cuda_line = cuda_provider_state(providers, (g or {}).get("name"))
    backends = ["onnxruntime (" + ", ".join(providers) + ")",
                f"onnxruntime-cuda: {'runs' if cuda else 'no'} - {cuda_line}"]
    flavours = env.tensorrt_flavours()
    for row in flavours:  # TensorRT and TensorRT for RTX: version, runs here, builds here
        version = f" {row['version']}" if row["version"] else ""
        runs = "runs engines" if row["usable"] else f"no - {row['why']}"
        builds = "; builds engines (no GPU needed)" if row["can_build"] and not row["usable"] else ""
        backends.append(f"{row['flavour']}{version}: {runs}{builds}")
    # what --backend auto takes for an export with engines of a flavour that runs here (export builds them)
    auto = next((r["flavour"] for r in flavours if r["usable"]), "onnxruntime-cuda" if cuda else "onnxruntime")
    backends.append(f"auto -> {auto} (TensorRT, then ONNX Runtime's CUDA provider, then the CPU)")
    table.add_row("back-ends", "\n".join(backends))
    table.add_row("torch reference", "yes" if env.package_version("torch") else "no (edge-only install)")
    table.add_row("OpenCV GStreamer (CSI cameras)", "yes" if env.opencv_gstreamer() else "no")
    jetson = env.jetson()
    if jetson is None:
        table.add_row("Jetson", "no")
    else:
        from smoothdino.edge.machine.jetson import describe

        for what, value in describe(jetson).items():
            table.add_row(what, value)
    from smoothdino.core.paths import weights_cache_dir

    cache = weights_cache_dir()
    present = sorted(p.name for p in cache.glob("*.pth")) if cache.is_dir() else []
    table.add_row("weights cache", f"{cache}\n" + ("\n".join(present) if present else "(empty)"))
    console.print(table)


# -- options shared by the commands that export (export, process, demo, bench) -----------------------

Arch = Annotated[str, typer.Option(metavar="vits14|vitb14|vitl14|vitg14", help="Backbone: DINOv2 small, base, large or giant.")]
Head = Annotated[str, typer.Option(metavar="dpt|linear4", help="NYUv2 depth head.")]
Adapter = Annotated[str, typer.Option(metavar="none|paper|temporal", help="none, paper (folded into the decoder) or temporal.")]
Precision = Annotated[str, typer.Option(metavar="fp32|fp16|int8|auto|STAGE=P,...", help="fp32, fp16 (GPUs), int8, auto (fastest gated: fp16 on GPUs; per stage fp32 or int8 on the CPU), or per stage: encoder=fp32,decoder=int8.")]
Backend = Annotated[str, typer.Option(metavar="|".join(BACKENDS), help="auto: TensorRT where its engines run, else ONNX Runtime's CUDA provider (the gpu extra), else the CPU; one notice says which.")]
WeightsDir = Annotated[Optional[Path], typer.Option(help="Folder with the official .pth files (default: cache).")]
AdapterWeights = Annotated[Optional[Path], typer.Option(help="Trained adapter (smoothdino train checkpoint or state dict).")]
RandomWeights = Annotated[bool, typer.Option("--random-weights", help="Seeded random weights in the official layout (no download; results are not metric).")]
Seed = Annotated[int, typer.Option(help="Seed for --random-weights.")]
MinConfidence = Annotated[float, typer.Option(help="Phase-correlation response below which a frame is a scene cut.")]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads per ONNX Runtime session (default: physical cores).")]
Intrinsics = Annotated[Optional[str], typer.Option(metavar="FX,FY,CX,CY", help="Camera fx,fy,cx,cy in pixels of the input frames, for point clouds (default: a bag's CameraInfo, else NYUv2's Kinect scaled to the frames).")]
CloudStride = Annotated[int, typer.Option(help="Point clouds keep every Nth pixel in each direction.")]
EnginesOrExport = Annotated[Path | None, typer.Option("--engines", help="Export folder; without it, export on the fly into <out>/engines.")]
ExportSize = Annotated[str | None, typer.Option("--size", metavar="HEIGHTxWIDTH", help="Export size HEIGHTxWIDTH (on-the-fly; default: the frames' size).")]
Keyframes = Annotated[str, typer.Option(metavar="every|N|auto", help="When the network runs: every (every frame, exact), N (every N-th frame), or auto (when the camera moved too far from the last keyframe, the views overlap poorly, or it is 4 frames old). Other frames get the last keyframe's depth carried to them (--carry).")]
Carry = Annotated[Optional[str], typer.Option(metavar="shift|pose", help="How a keyframe's depth reaches the frames after it: pose (the camera's 3-D motion from tracked corners; needs intrinsics) or shift (a 2-D translation). Default: pose where the camera is known (NYUv2 folders, bags with CameraInfo, --intrinsics), else shift, with a notice.")]
Fusion = Annotated[str, typer.Option(metavar="auto|on|off", help="Steady depth: each network frame's depth fused with the previous output carried into its view by the camera's motion (a scale kept across frames, agreeing pixels blended, the network's own depth where they disagree, a restart at scene cuts). auto (default): on where the camera is known (the pose carry); on: with the 2-D shift too; off: the network's depth as it comes, as the SmoothDINOv2 paper evaluates it. Metrics say whether it ran.")]
ResizeFrames = Annotated[bool, typer.Option("--resize/--no-resize", help="Resize frames of another size to the engines' (--no-resize: refuse).")]


def _export_spec(**options):
    """The one ExportSpec a command builds from its options (sizes as HEIGHTxWIDTH text or a tuple)."""
    from smoothdino.export.spec import ExportSpec

    if isinstance(options.get("size"), str):
        options["size"] = parse_size(options["size"])
    return ExportSpec(**{k: v for k, v in options.items() if v is not None})


def _open_pipeline(engines: Optional[Path], spec, out: Path, backend: str, **pipeline_options):
    """An export's pipeline; without --engines, `spec` is exported (or reused, when still current) into <out>/engines."""
    from smoothdino.edge.pipeline import DepthPipeline

    return DepthPipeline.from_folder(_export_folder(engines, spec, out), backend=backend_word(backend),
                                     **pipeline_options)


def _export_folder(engines: Optional[Path], spec, out: Path) -> Path:
    """--engines, or `spec` exported (or reused, when still current) into <out>/engines."""
    if engines is None:
        try:
            from smoothdino.export.exporter import ensure_export
        except ModuleNotFoundError as err:  # the torch-free run-time: only existing exports run here
            raise missing_extra(err, "exporting (no --engines given; or pass --engines DIR, an export made "
                                     "elsewhere)") or err from None

        engines = Path(out) / "engines"
        ensure_export(spec, engines, progress=lambda msg: None)
    return Path(engines)


def words(values: list[str] | None) -> list[str]:
    """A list option's values: repeated (`--x a --x b`) or comma-separated (`--x a,b`), or both. Paths are only
    repeated (a path may hold a comma)."""
    return [word.strip() for value in values or [] for word in value.split(",") if word.strip()]


# Options renamed so that one concept has one name in every command (--frames: a frame limit), the old name kept,
# hidden, for one release: command -> {old: new}. RenamedOptions reads the old name as the new one, with a notice.
RENAMED_OPTIONS = {"process": {"--limit": "--frames"}, "live": {"--max-frames": "--frames"},
                   # --frames is a frame limit everywhere; calibration pairs are --calibration-frames, as in export
                   "calibrate": {"--frames": "--calibration-frames"}, "build": {"--frames": "--calibration-frames"}}


class RenamedOptions(typer.core.TyperCommand):
    """A command that still takes its RENAMED_OPTIONS' old names (not shown in --help)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        renamed, given = RENAMED_OPTIONS.get(self.name, {}), list(args)
        for i, arg in enumerate(given):
            if arg == "--":  # what follows is arguments, never options
                break
            old, equals, value = arg.partition("=")
            if old in renamed:
                notice(f"{old} is now {renamed[old]} (the old name works until the next release)")
                given[i] = renamed[old] + equals + value
        return super().parse_args(ctx, given)


# -- export / calibrate ---------------------------------------------------------------------------

@app.command()
@user_errors
def export(
    arch: Arch = "vits14", head: Head = "dpt", adapter: Adapter = "temporal",
    size: Annotated[str, typer.Option(metavar="HEIGHTxWIDTH", help="Frame size the graphs are fixed to.")] = "480x640",
    precision: Precision = "fp16", backend: Backend = "auto",
    compute_capability: Annotated[Optional[list[str]], typer.Option(help="TensorRT for RTX targets, e.g. 8.6 (repeat, or comma-separated; default: this GPU, else a portable set).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder (graphs, engines, manifest.json).")] = Path("engines/vits14-temporal"),
    weights_dir: WeightsDir = None, adapter_weights: AdapterWeights = None, random_weights: RandomWeights = False,
    seed: Seed = 0,
    calibration: Annotated[Optional[list[Path]], typer.Option(help="NYUv2 sequence folders for calibration and the gate (repeat).")] = None,
    calibration_frames: Annotated[int, typer.Option(help="Calibration pairs (INT8 calibration and the gate).")] = 8,
    calibration_method: Annotated[str, typer.Option(metavar="minmax|entropy|percentile", help="INT8 activation ranges.")] = "minmax",
    tolerance_mm: Annotated[Optional[float], typer.Option(help="Gate tolerance on the depth RMSE change (default: 5 mm fp16, 10 mm int8).")] = None,
    force: Annotated[bool, typer.Option(help="Keep an export that fails the gate.")] = False,
    workspace_mib: Annotated[int, typer.Option(help="TensorRT builder workspace cap (small Jetsons: 512).")] = 1024,
    batch: Annotated[int, typer.Option(help="Frames one pass takes, for several cameras: graphs with a batch axis 1..N (TensorRT profile 1/N/N). 1: one frame, static graphs.")] = 1,
):
    """Export the three graphs (encoder, adapter, decoder), convert precision, build engines, gate, manifest."""
    from smoothdino.export import export_model

    spec = _export_spec(arch=arch, head=head, adapter=adapter, size=size, precision=precision, backend=backend,
                        compute_capabilities=words(compute_capability), weights_dir=weights_dir,
                        adapter_weights=adapter_weights, random_weights=random_weights, seed=seed,
                        calibration=list(calibration or []), calibration_frames=calibration_frames,
                        calibration_method=calibration_method, tolerance_mm=tolerance_mm, force=force, workspace_mib=workspace_mib,
                        batch=batch)
    with _ExportBar() as meter:
        manifest, _ = export_model(spec, out, progress=meter)
    console.print(gate_table(manifest, f"export -> {out}"))
    untrained_adapter_notice(manifest.weights)


class _ExportBar:
    """export's progress bar: the step it is on, the work done (export.exporter.WORK units, turned into seconds by
    the rate seen so far) and an estimate of the time left; its decisions stay printed above the bar."""

    def __init__(self):
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from smoothdino.export.exporter import ExportMeter

        bar = self

        class Meter(ExportMeter):
            def step(self, text):
                bar.progress.update(bar.task, description=text)

            def decision(self, text):
                bar.progress.console.print(text, soft_wrap=True, markup=False)

            def plan(self, units):
                super().plan(units)
                bar.progress.update(bar.task, total=self.total)

            def advance(self, units):
                super().advance(units)
                bar.progress.update(bar.task, completed=min(self.done, self.total))

            def drop(self, units):
                super().drop(units)
                bar.progress.update(bar.task, total=self.total, completed=min(self.done, self.total))

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TimeElapsedColumn(), TextColumn("elapsed,"), TimeRemainingColumn(), TextColumn("left"),
                                 console=console, transient=True, speed_estimate_period=60)
        self.task = self.progress.add_task("exporting", total=None)
        self.meter = Meter()

    def __enter__(self):
        self.progress.__enter__()
        return self.meter

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


@app.command(cls=RenamedOptions)
@user_errors
def calibrate(
    engines: Annotated[Path, typer.Option(help="An export folder (manifest.json).")],
    calibration: Annotated[Optional[list[Path]], typer.Option(help="NYUv2 sequence folders (repeat).")] = None,
    calibration_frames: Annotated[int, typer.Option(help="Calibration pairs.")] = 16,
    backend: Backend = "auto",
    tolerance_mm: Annotated[Optional[float], typer.Option(help="Tolerance on the depth RMSE change (mm).")] = None,
):
    """Run the precision gate again (e.g. with real weights, on the target device) and record it."""
    from smoothdino.edge.engines.manifest import Manifest

    _gate_and_record(Manifest.load(engines), Path(engines), backend, calibration, calibration_frames, tolerance_mm)


def _gate_and_record(manifest, folder: Path, backend: str, calibration, frames: int, tolerance_mm) -> None:
    """The precision gate on this machine (candidate: the export as `backend` runs it; reference: the FP32
    graphs on ONNX Runtime), recorded in gate.json and the manifest; exit 2 when it refuses."""
    from smoothdino.calibration import DEFAULT_TOLERANCE_MM, GateError, calibration_pairs, run_gate
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.export.stage_precision import gate_tolerance_mm

    tolerance = tolerance_mm if tolerance_mm is not None else gate_tolerance_mm(manifest.stage_precisions,
                                                                                 DEFAULT_TOLERANCE_MM)
    pairs = calibration_pairs(list(calibration or []), frames, manifest.frame_size)
    with DepthPipeline(manifest, backend=backend_word(backend)) as candidate, \
            DepthPipeline(manifest, backend="onnxruntime", precision="fp32") as reference:
        report = run_gate(candidate, reference, pairs, tolerance)
    report.record(manifest, folder)
    manifest.save(folder)
    console.print(gate_table(manifest, f"precision gate: {report.candidate}"))
    if not report.passed:
        raise GateError(f"{folder / 'gate.json'}: {report.summary_line()}")


@app.command(cls=RenamedOptions)
@user_errors
def build(
    engines: Annotated[Path, typer.Option(help="An export folder with ONNX graphs (manifest.json), e.g. copied from a PC.")],
    backend: Annotated[str, typer.Option(metavar="auto|tensorrt|tensorrt-rtx", help="tensorrt (JetPack, x86 GPUs) or tensorrt-rtx; auto: the one that runs here.")] = "auto",
    compute_capability: Annotated[Optional[list[str]], typer.Option(help="TensorRT for RTX targets, e.g. 8.6 (repeat, or comma-separated).")] = None,
    workspace_mib: Annotated[int, typer.Option(help="Builder workspace limit (MiB).")] = 1024,
    calibration: Annotated[Optional[list[Path]], typer.Option(help="NYUv2 sequence folders for the gate (repeat).")] = None,
    calibration_frames: Annotated[int, typer.Option(help="Calibration pairs for the gate.")] = 8,
    tolerance_mm: Annotated[Optional[float], typer.Option(help="Tolerance on the depth RMSE change (mm).")] = None,
):
    """TensorRT engines for an ONNX export, built on the target without PyTorch (export on a PC, build on the Jetson)."""
    from smoothdino.edge.machine.environment import FLAVOUR_TITLES, gpu, tensorrt_usable, tensorrt_version
    from smoothdino.edge.engines.manifest import Manifest
    from smoothdino.export.tensorrt import build_stage_engines, engines_record, require_tensorrt

    folder = Path(engines)
    manifest = Manifest.load(folder)
    flavour = backend_word(backend)
    if flavour == "auto":
        usable = [f for f in ("tensorrt", "tensorrt-rtx") if tensorrt_usable(f)[0]]
        if not usable:
            raise UserError(f"{folder}: no TensorRT can run engines here ({tensorrt_usable('tensorrt')[1]}); "
                            "on a Jetson use JetPack's TensorRT and pycuda, or name --backend tensorrt-rtx to "
                            "build ahead of time")
        flavour = usable[0]
    if flavour not in ("tensorrt", "tensorrt-rtx"):
        raise UserError(f"--backend {backend}: build makes TensorRT engines; use tensorrt or tensorrt-rtx")
    require_tensorrt(flavour)
    precisions = manifest.stage_precisions
    targets = words(compute_capability)
    record = engines_record(flavour, targets, precisions.values())  # refuses bad targets before any build
    console.print(f"building {FLAVOUR_TITLES[flavour]} engines in {folder} "
                  f"({', '.join(f'{s} {p}' for s, p in precisions.items())})")
    seconds = build_stage_engines(folder, {s: manifest.stages[s] for s in manifest.stage_names}, precisions,
                                  flavour=flavour, compute_capabilities=targets, workspace_mib=workspace_mib,
                                  onnx_path=manifest.onnx_path, batch=manifest.max_batch)
    for stage in manifest.stage_names:  # rebuilt engines get fresh records when the manifest is saved
        manifest.files.pop(manifest.stages[stage].engine, None)
    manifest.tensorrt = record
    manifest.versions["tensorrt"] = tensorrt_version(flavour) if flavour == "tensorrt" else None
    manifest.gpu = gpu()
    manifest.export_seconds.update({k: round(v, 3) for k, v in seconds.items()})
    manifest.gate = None  # the graphs' verdict does not speak for the new engines
    manifest.save(folder)
    console.print(f"engines: {', '.join(manifest.stages[s].engine for s in manifest.stage_names)} "
                  f"({sum(seconds.values()):.1f} s)")
    _gate_and_record(manifest, folder, flavour, calibration, calibration_frames, tolerance_mm)


# -- option groups: declared once, each command gets one object built from them ------------------------

@dataclass(frozen=True)
class OptionGroup:
    """Options several commands share. `with_options` adds them to a command's signature (typer reads it) and hands
    the command one object, built by `build` from their values, under the parameter `name`."""

    name: str
    params: dict[str, tuple]  # option -> (annotation, default)
    build: Callable[..., object]


def with_options(*groups: OptionGroup):
    def decorate(fn):
        signature = inspect_module.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in {g.name for g in groups}]
        shared = [inspect_module.Parameter(n, inspect_module.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                  for g in groups for n, (a, d) in g.params.items()]

        @functools.wraps(fn)
        def command(**kwargs):
            for g in groups:
                kwargs[g.name] = g.build(**{n: kwargs.pop(n) for n in g.params})
            return fn(**kwargs)

        command.__signature__ = signature.replace(parameters=own + shared)
        command.__annotations__ = {p.name: p.annotation for p in own + shared}
        return command

    return decorate


@dataclass(frozen=True)
class ModelChoice:
    """What an on-the-fly export builds when no --engines is given (the same words as `smoothdino export`)."""

    arch: str = "vits14"
    head: str = "dpt"
    adapter: str = "temporal"
    size: str | None = None
    precision: str = "fp16"
    weights_dir: Path | None = None
    adapter_weights: Path | None = None
    random_weights: bool = False
    seed: int = 0

    def spec(self, frame_size: Callable[[], tuple[int, int]], backend: str):
        return _export_spec(arch=self.arch, head=self.head, adapter=self.adapter, size=self.size or frame_size(),
                            precision=self.precision, weights_dir=self.weights_dir, adapter_weights=self.adapter_weights,
                            random_weights=self.random_weights, seed=self.seed, calibration_frames=2,
                            backend=word if (word := backend_word(backend)) in ONNXRUNTIME_BACKENDS else "auto")


@dataclass(frozen=True)
class RunChoice:
    """How the engines run: back-end, scene-cut threshold, CPU threads."""

    backend: str = "auto"
    min_confidence: float = 0.1
    threads: int | None = None

    def open(self, engines: Path | None, model: ModelChoice | None, out: Path,
             frame_size: Callable[[], tuple[int, int]], **pipeline_options):
        """The export's pipeline; without --engines the model is exported (or reused) into <out>/engines."""
        spec = None if engines else model.spec(frame_size, self.backend)
        return _open_pipeline(engines, spec, out, self.backend, min_confidence=self.min_confidence,
                              threads=self.threads, **pipeline_options)


def command(*groups: OptionGroup, **settings):
    """A command of the app, with one-line errors and the shared option groups it takes."""
    def decorate(fn):
        return app.command(**settings)(user_errors(with_options(*groups)(fn)))

    return decorate


MODEL = OptionGroup("model", {"arch": (Arch, "vits14"), "head": (Head, "dpt"), "adapter": (Adapter, "temporal"),
                              "size": (ExportSize, None), "precision": (Precision, "fp16"),
                              "weights_dir": (WeightsDir, None), "adapter_weights": (AdapterWeights, None),
                              "random_weights": (RandomWeights, False), "seed": (Seed, 0)}, ModelChoice)
RUN = OptionGroup("run", {"backend": (Backend, "auto"), "min_confidence": (MinConfidence, 0.1),
                          "threads": (Threads, None)}, RunChoice)
MotionDownscale = Annotated[int, typer.Option(help="Phase correlation on frames shrunk by this factor.")]


@dataclass(frozen=True)
class StepChoice:
    """Which export steps the frames, at what size, and on which frames the network runs."""

    engines: Path | None = None
    resize: bool = True
    keyframes: str = "every"
    carry: str | None = None  # None: pose where the camera is known (edge.commands.robotics.choose_carry)

    @property
    def policy(self):
        from smoothdino.edge.keyframes import parse_keyframes

        return parse_keyframes(self.keyframes)


STEP = OptionGroup("step", {"engines": (EnginesOrExport, None), "resize": (ResizeFrames, True),
                            "keyframes": (Keyframes, "every"), "carry": (Carry, None)}, StepChoice)
DepthRange = Annotated[Optional[str], typer.Option(metavar="MIN,MAX", help="Metres the depth colours span (video, window, snapshots; the colour bar shows the scale). Default 0,10 (NYUv2's range): a colour means the same depth in every frame and every run.")]


@dataclass(frozen=True)
class ViewChoice:
    """How depth is coloured where it is drawn."""

    depth_range: str | None = None

    @property
    def range(self) -> tuple[float, float]:
        from smoothdino.edge.sinks.view import parse_depth_range

        return parse_depth_range(self.depth_range)


VIEW = OptionGroup("view", {"depth_range": (DepthRange, None)}, ViewChoice)
ROS2_TRANSPORTS = r"(?i)dds|zenoh"
Ros2Transport = Annotated[Optional[str], typer.Option("--ros2", metavar="[dds|zenoh]", help="Publish live ROS 2 topics, no ROS install needed: dds (the default: ROS 2's default middleware, Humble and later) or zenoh (rmw_zenoh, Jazzy and later, through its router). Under --ros2-namespace: depth/image (32FC1 metres, NaN = no depth), depth/camera_info, depth/points (every --cloud-stride-th pixel), color/image with --ros2-color, /tf (the camera in its keyframe's frame: keyframes and --carry pose); sensor-data QoS, node `smoothdino`. The loop never waits for ROS: a frame not yet published is replaced by the next (counted).")]
Ros2Domain = Annotated[Optional[int], typer.Option(help="--ros2: the ROS 2 domain (default: ROS_DOMAIN_ID, else 0).")]
Ros2Namespace = Annotated[str, typer.Option(metavar="NAMESPACE", help="--ros2: namespace of the node and its topics, e.g. /robot1/front.")]
Ros2Connect = Annotated[Optional[str], typer.Option(metavar="ENDPOINT", help="--ros2 zenoh: the Zenoh router, e.g. tcp/192.168.1.10:7447 (default: tcp/localhost:7447, the robot's `ros2 run rmw_zenoh_cpp rmw_zenohd`; ZENOH_SESSION_CONFIG_URI is read as rmw_zenoh reads it).")]
Ros2Distro = Annotated[Optional[str], typer.Option(metavar="humble|jazzy|kilted|rolling", help="--ros2: the robot's ROS 2, humble (DDS only), jazzy, kilted or rolling (default: ROS_DISTRO, else jazzy).")]
Ros2Color = Annotated[bool, typer.Option("--ros2-color", help="--ros2: also publish color/image (the input frame, rgb8).")]


@dataclass(frozen=True)
class Ros2Choice:
    """`--ros2 [dds|zenoh]` and its companions."""

    ros2_transport: str | None = None
    ros2_domain: int | None = None
    ros2_namespace: str = ""
    ros2_connect: str | None = None
    ros2_distro: str | None = None
    ros2_color: bool = False

    @property
    def options(self):
        """edge.ros2.Ros2Options, or None without --ros2 (a companion option alone is refused)."""
        from smoothdino.edge.ros2 import Ros2Options

        if self.ros2_transport is None:
            given = [f"--{k.replace('_', '-')}" for k, v in vars(self).items() if v not in (None, "", False)]
            if given:
                raise UserError(f"{given[0]} applies to ROS 2 topics: add --ros2 (dds) or --ros2 zenoh")
            return None
        return Ros2Options(self.ros2_transport, self.ros2_domain, self.ros2_namespace, self.ros2_connect,
                           self.ros2_distro, self.ros2_color)


ROS2 = OptionGroup("ros2", {"ros2_transport": (Ros2Transport, None), "ros2_domain": (Ros2Domain, None),
                            "ros2_namespace": (Ros2Namespace, ""), "ros2_connect": (Ros2Connect, None),
                            "ros2_distro": (Ros2Distro, None), "ros2_color": (Ros2Color, False)}, Ros2Choice)
Serve = Annotated[Optional[str], typer.Option(metavar="[HOST:]PORT", help="Watch in a browser: RGB | depth with the colour bar, the depth and 3-D point under the cursor, rates, depth age, stage times, snapshots; the page is served from the package, no internet needed. Binds 127.0.0.1 unless a HOST is given (0.0.0.0:8080: every interface, behind a random token kept in a file only you can read, whose path is printed). At most 256 connections at once (the next are answered 503). The loop never waits for a viewer.")]


# -- process / inspect / live / demo ----------------------------------------------------------------

def _bare_option(args: list[str], option: str, values: str, default: str) -> list[str]:
    """`option` given without a value (last, or followed by something `values` does not match) gets `default`."""
    import re

    given = list(args)
    for i in reversed(range(len(given))):
        if given[i] == option and (i + 1 == len(given) or not re.fullmatch(values, given[i + 1])):
            given.insert(i + 1, default)
    return given


class RayAddressOptional(RenamedOptions):
    """`--ray` alone is `--ray auto` (typer has no option with an optional value): a bare --ray, or one followed by
    something that is no cluster address (another option, a sequence), gets `auto`. Likewise `--ros2` alone is
    `--ros2 dds`."""

    ADDRESS = r"(?i)(auto|local|none|ray://\S+|\[?[\w.:-]+\]?:\d+|\d+\.\d+\.\d+\.\d+)"

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        given = _bare_option(_bare_option(args, "--ray", self.ADDRESS, "auto"), "--ros2", ROS2_TRANSPORTS, "dds")
        return super().parse_args(ctx, given)


@command(STEP, MODEL, RUN, VIEW, ROS2, cls=RayAddressOptional)
def process(
    sequences: Annotated[list[Path], typer.Argument(help="Video files (.mp4, .mkv, .avi, ...), image folders, NYUv2 sequence folders (<i>.jpg + <i>.png depth), or ROS bags (a bag folder or a .mcap file).")],
    out: Annotated[Path, typer.Option(help="Output folder: <out>/<sequence>/{depth/*.png, video.mp4, metrics.*; depth_bag/ for a bag; points/*.ply}. With --ray: storage every node sees at the same path.")] = Path("out/process"),
    video: Annotated[bool, typer.Option(help="Write <sequence>/video.mp4 (RGB | depth).")] = True,
    resume: Annotated[bool, typer.Option(help="Skip frames whose depth PNG is already written (by a run with the same options: a folder written with others is refused).")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run's outputs in each <out>/<sequence> (e.g. one made with other options) instead of resuming it.")] = False,
    frames: Annotated[Optional[int], typer.Option(help="At most this many frames per sequence (the first ones).")] = None,
    motion_downscale: MotionDownscale = 1,
    topic: Annotated[Optional[str], typer.Option(metavar="TOPIC", help="A bag's image topic (Image rgb8/bgr8/mono8 or CompressedImage jpeg/png; default: the bag's only one).")] = None,
    intrinsics: Intrinsics = None,
    points: Annotated[bool, typer.Option("--points", help="Also write <sequence>/points/<frame>.ply (coloured point clouds, metres).")] = False,
    cloud_stride: CloudStride = 4,
    ray: Annotated[Optional[str], typer.Option("--ray", metavar="[ADDRESS]", help="Process on a Ray cluster, byte-identical to one process: every sequence in chunks, a worker per GPU (or per --threads CPUs, default 1) opening the export once. No value or auto: join RAY_ADDRESS or a Ray instance on this machine, else start one here; HOST:PORT: join that cluster's head. --out (and --engines) must be storage every node sees at the same path. Needs the 'cluster' extra.")] = None,
    chunk: Annotated[Optional[int], typer.Option(help="--ray: frames a chunk (default: all frames / (4 x workers), 16 to 1000).")] = None,
    serve: Serve = None,
    fusion: Fusion = "auto",
    step: StepChoice = None, model: ModelChoice = None, run: RunChoice = None, view: ViewChoice = None,
    ros2: Ros2Choice = None,
):
    """Depth for recorded videos and sequences: 16-bit PNGs (mm), a video, and metrics (against ground truth where
    there is some). A ROS bag in gives a ROS 2 bag out (<sequence>/depth_bag: 32FC1 depth, CameraInfo, PointCloud2)."""
    from smoothdino.edge.commands import process as command
    from smoothdino.edge.commands.robotics import RobotOptions

    options = command.ProcessOptions(sequences, out, video, step.resize, resume, frames, step.policy,
                                     RobotOptions(topic, intrinsics, points, cloud_stride), view.range,
                                     overwrite=overwrite, serve=serve, ros2=ros2.options, carry=step.carry,
                                     fusion=fusion)
    options.check()
    if ray is not None and serve is not None:
        raise UserError("--serve shows a run in this process and --ray runs on the cluster's workers: drop one of them")
    if ray is not None and options.ros2 is not None:
        raise UserError("--ros2 publishes from this process and --ray runs on the cluster's workers: drop one of them")
    if ray is not None:  # many machines (edge.commands.cluster): the workers open the export, the driver does not
        from smoothdino.edge.commands import cluster

        engines = _export_folder(step.engines, None if step.engines else model.spec(options.frame_size, run.backend), out)
        reports = cluster.process(options, cluster.ClusterOptions(
            engines, ray, run.backend, run.threads, chunk,
            {"min_confidence": run.min_confidence, "motion_downscale": motion_downscale}))
    else:
        pipeline = run.open(step.engines, model, out, options.frame_size, motion_downscale=motion_downscale)
        reports = command.process(pipeline, options)
    if any(r.interrupted for r in reports):
        raise typer.Exit(interrupt_exit_code())


@command(STEP, MODEL, RUN, VIEW)
def inspect(
    sequences: Annotated[list[str], typer.Argument(help="NYUv2 sequence folders, image folders, video files or synthetic[:HxW[:N]].")],
    out: Annotated[Path, typer.Option(help="Output folder: <out>/<sequence>/{pca/, pca_fused/, inspect.mp4, stability.*}.")] = Path("out/inspect"),
    level: Annotated[int, typer.Option(help="Feature level 0..3 (encoder blocks the depth head reads; 3 = last).")] = 3,
    frames: Annotated[int, typer.Option(help="At most this many frames per sequence (all are kept for the PCA).")] = 30,
    step: StepChoice = None, model: ModelChoice = None, run: RunChoice = None, view: ViewChoice = None,
):
    """What the adapter does: feature PCA images before/after it, and frame-to-frame stability (aligned)."""
    from smoothdino.edge.commands import inspect as command

    options = command.InspectOptions(sequences, out, level, frames, step.resize, step.policy, view.range, step.carry)
    sources = options.open_sources()
    pipeline = run.open(step.engines, model, out, options.frame_size, keep_outputs=True)
    command.inspect(pipeline, sources, options)


@command(RUN, VIEW, ROS2, cls=RayAddressOptional)
def live(
    engines: Annotated[Path, typer.Option(help="Export folder (manifest.json).")],
    source: Annotated[list[str], typer.Option(metavar="0|/dev/videoN|csi://N|VIDEO|PIPELINE", help="A camera (index, device, Jetson CSI sensor, rtsp://...), a GStreamer pipeline, or a video file (replayed in real time). Repeat for several cameras on one network: each gets its own keyframes, fusion, metrics and outputs (<out>/<name>/, <record>-<name>.mp4, a tile in --serve, Foxglove channels /<name>/..., ROS 2 topics <namespace>/<name>/... with one /tf), and the network serves the camera whose depth is oldest.")] = ["0"],
    name: Annotated[Optional[list[str]], typer.Option(metavar="NAME", help="With several --source: each camera's name, in the same order (default: from the source: a file's stem, video0, csi0). Letters, digits and _.")] = None,
    batch: Annotated[str, typer.Option(metavar="auto|off|N", help="With several --source: frames one network pass may take (an export with --batch N). auto: a batch only where export measured it faster a frame on this machine (on a CPU it usually is not); off: one frame a pass.")] = "auto",
    headless: Annotated[bool, typer.Option(help="No window.")] = False,
    snapshots: Annotated[Path, typer.Option(help="Where the window's s key saves RGB, 16-bit depth (mm) and colour depth PNGs.")] = Path("snapshots"),
    record: Annotated[Optional[Path], typer.Option(help="Also write the side-by-side video here (.mp4), or the Foxglove channels (.mcap); strftime fields as for --out.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write depth PNGs and metrics into this folder. A live run never resumes: a folder holding an earlier run is refused unless --overwrite. strftime fields make a folder per start (for autostart): runs/%Y%m%d-%H%M%S.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run's depth PNGs and metrics in --out.")] = False,
    frames: Annotated[Optional[int], typer.Option(help="Stop after this many frames.")] = None,
    motion_downscale: MotionDownscale = 2,
    foxglove: Annotated[Optional[str], typer.Option(metavar="[HOST:]PORT", help="Serve RGB, coloured and raw depth, point cloud and per-stage latency over Foxglove's WebSocket protocol. Binds 127.0.0.1 (this machine only) unless a HOST is given: 0.0.0.0:8765 serves every interface. At most 32 connections at once (the next are answered 503), each handshake within 5 s, each client at most 20 messages a second. A slow viewer gets frames dropped, never slows the loop.")] = None,
    intrinsics: Annotated[Optional[list[str]], typer.Option(metavar="FX,FY,CX,CY", help="Camera fx,fy,cx,cy in pixels of the input frames, for the pose carry and point clouds; with several --source, once for all or once per source.")] = None,
    cloud_stride: CloudStride = 4,
    asynchronous: Annotated[bool, typer.Option("--async/--no-async", help="The network in its own thread on the newest frame; every camera frame is output at once with the latest keyframe's depth moved by the camera shift (its age is shown). --no-async: the network on the frames --keyframes picks, in the loop (the camera waits).")] = True,
    keyframes: Keyframes = "every",
    carry: Carry = None,
    fusion: Fusion = "auto",
    serve: Serve = None,
    run: RunChoice = None, view: ViewChoice = None, ros2: Ros2Choice = None,
):
    """Live depth from a camera: window with FPS and per-stage latency; q (or Ctrl-C) ends cleanly, s saves a snapshot."""
    from smoothdino.edge.commands import live as command
    from smoothdino.edge.commands.robotics import RobotOptions
    from smoothdino.edge.keyframes import parse_keyframes

    from smoothdino.core.paths import dated

    several = len(source) > 1 or bool(name)
    options = command.LiveOptions(source[0], headless, snapshots, dated(record), dated(out), overwrite, frames, foxglove,
                                  asynchronous, parse_keyframes(keyframes),
                                  RobotOptions(intrinsics=None if several or not intrinsics else intrinsics[0],
                                               cloud_stride=cloud_stride), view.range,
                                  serve=serve, ros2=ros2.options, carry=carry, fusion=fusion)
    open_pipeline = lambda: run.open(engines, None, Path("."), lambda: None, motion_downscale=motion_downscale)  # noqa: E731
    if several:
        from smoothdino.edge.commands.live_cameras import live_cameras

        live_cameras(open_pipeline, options, source, name or [], intrinsics or [], batch)
    else:
        if len(intrinsics or []) > 1:
            raise UserError(f"--intrinsics given {len(intrinsics)} times for one --source; give it once")
        command.live(open_pipeline, options)


@command(VIEW)
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/demo"),
    size: Annotated[str, typer.Option(metavar="HEIGHTxWIDTH", help="Frame size of the synthetic sequence and the export.")] = "240x320",
    frames: Annotated[int, typer.Option(help="Frames in the synthetic sequence.")] = 24,
    arch: Arch = "vits14", backend: Backend = "auto", keyframes: Keyframes = "every", carry: Carry = None,
    view: ViewChoice = None,
):
    """The whole path on a fresh machine: synthetic moving sequence -> export -> process -> video, PNGs, metrics."""
    from smoothdino.edge.commands import process as command
    from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence
    from smoothdino.models.checkpoints import find_local, official_file

    height, width = parse_size(size)
    depth_range = view.range  # a bad --depth-range is refused before any work
    sequence = write_sequence(Path(out) / "sequence" / "synthetic", SyntheticScene(height, width, frames))
    have_official = all(find_local(official_file(arch, k)) for k in ("backbone", "dpt"))
    if not have_official:
        notice(f"official {arch} weights are not in the cache (smoothdino weights fetch {arch}): using random weights")
    model = ModelChoice(arch=arch, size=size, random_weights=not have_official)
    pipeline = RunChoice(backend=backend).open(None, model, out, lambda: (height, width))
    from smoothdino.edge.keyframes import parse_keyframes

    command.process(pipeline, command.ProcessOptions([sequence], out, keyframes=parse_keyframes(keyframes, carry=carry or "shift"),
                                                     depth_range=depth_range, carry=carry))
    console.print(f"demo: open {Path(out) / sequence.name / 'video.mp4'}; depth PNGs and metrics.json beside it")


# -- bench ----------------------------------------------------------------------------------------

@app.command()
@user_errors
def bench(
    sequences: Annotated[Optional[list[str]], typer.Argument(metavar="SEQUENCES...", help="NYUv2 sequence folders, or synthetic[:HxW] (generated frames, no ground truth).", show_default=False)] = None,
    data: Annotated[Optional[list[str]], typer.Option(hidden=True, help="The old name of SEQUENCES (kept for one release).")] = None,
    engines: Annotated[Optional[list[Path]], typer.Option(help="Bench these existing exports as they are (repeat; no export, no torch: a Jetson's). Each is a row per back-end; --configs and --precisions are then not used.")] = None,
    configs: Annotated[list[str], typer.Option(metavar="ARCH[+ADAPTER],...", help="arch[+adapter] (repeat, or comma-separated).")] = ["vits14,vits14+paper,vits14+temporal,vitb14"],
    backends: Annotated[list[str], typer.Option(metavar="BACKEND,...", help="torch, onnxruntime, tensorrt, tensorrt-rtx (repeat, or comma-separated); unavailable ones are reported.")] = ["torch,onnxruntime,tensorrt"],
    precisions: Annotated[list[str], typer.Option(metavar="PRECISION,...", help="Precisions of the exports: fp32, fp16, int8 (repeat, or comma-separated); a per-stage plan (encoder=fp32,decoder=int8) is one value of its own; torch runs fp32.")] = ["fp32"],
    frames: Annotated[int, typer.Option(help="Consecutive frames per sequence.")] = 50,
    out: Annotated[Path, typer.Option(help="results.json, results.md, accuracy_vs_latency.png, depth/.")] = Path("out/bench"),
    size: Annotated[Optional[str], typer.Option(metavar="HEIGHTxWIDTH", help="Frame size (default: the frames').")] = None,
    warmup: Annotated[int, typer.Option(help="Frames per runner left out of the latency statistics.")] = 2,
    threads: Threads = None,
    weights_dir: WeightsDir = None, adapter_weights: AdapterWeights = None, random_weights: RandomWeights = False,
    seed: Seed = 0,
    keyframes: Annotated[list[str], typer.Option(metavar="every|N|auto,...", help="Keyframe policies, each a row per configuration: every, N, auto (repeat, or comma-separated; see process --keyframes).")] = ["every"],
    carry: Carry = None,
    fusion: Annotated[list[str], typer.Option(metavar="off|on|auto,...", help="A row per word for every configuration: off (the network's depth as it comes, as the paper evaluates it), auto (fused where the camera is known), on (fused with the 2-D shift too); one network pass serves them all (see process --fusion).")] = ["off,auto"],
):
    """MSE and latency of DINOv2-small (+ adapters) against DINOv2-base: every back-end and precision, same frames."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from smoothdino.benchmarks.bench import BenchSpec, run_bench
    from smoothdino.edge.fusion import parse_fusion
    from smoothdino.edge.keyframes import parse_keyframes

    if data:
        notice("--data is now a positional argument: smoothdino bench SEQUENCES... (the old name works until the next release)")
    data = [*(sequences or []), *(data or [])]
    if not data:
        raise UserError("bench: give the frames, e.g. smoothdino bench nyu/bedroom_0004_out (or synthetic:480x640)")
    spec = BenchSpec(data=[d if d.startswith("synthetic") else Path(d) for d in data], out=out, engines=list(engines or []),
                     configs=words(configs), backends=words(backends),
                     precisions=[p for v in precisions for p in ([v] if "=" in v else words([v]))], frames=frames,
                     size=parse_size(size) if size else None, warmup=warmup, threads=threads, weights_dir=weights_dir,
                     adapter_weights=adapter_weights, random_weights=random_weights, seed=seed,
                     keyframes=[parse_keyframes(k).label for k in words(keyframes)], carry=carry,
                     fusion=[parse_fusion(w) for w in words(fusion)])
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
    arch: str = typer.Option("vits14", metavar="vits14|vitb14|vitl14|vitg14", help=ARCH_HELP),
    head: str = typer.Option("dpt", metavar="dpt|linear4", help="Frozen NYUv2 depth head."),
    adapter: str = typer.Option("temporal", metavar="temporal|paper", help="temporal (the method as intended) or paper (as published)."),
    hidden: int = typer.Option(64, help="Hidden width of the temporal adapter's conv block."),
    size: str = typer.Option("480x640", metavar="HEIGHTxWIDTH", help="Training frame size (frames are resized)."),
    epochs: int = typer.Option(10, help="Epochs (paper: 10)."),
    batch: int = typer.Option(10, help="Pairs per batch (paper: 10); split across ranks under torchrun."),
    lr: float = typer.Option(1e-5, help="Adam learning rate (paper: 1e-5)."),
    regularized: bool = typer.Option(False, help="Add 0.1 x MSE to the un-adapted prediction (published variant)."),
    val_scenes: Optional[list[str]] = typer.Option(None, help="Scene names held out for validation (repeat, or comma-separated; default: the last)."),
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
                      epochs=epochs, batch=batch, lr=lr, regularized=regularized, val_scenes=words(val_scenes),
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


# -- doctor -----------------------------------------------------------------------------------------

@app.command()
@user_errors
def doctor(
    engines: Annotated[Optional[Path], typer.Option(help="Also check this export folder (manifest.json) against this machine's TensorRT.")] = None,
    source: Annotated[Optional[str], typer.Option(metavar="SOURCE", help="Grab one frame from it: csi://0 | 0 | /dev/video0 | a GStreamer pipeline | a video file.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for that frame.")] = 10.0,
    root: Annotated[Optional[Path], typer.Option(hidden=True, envvar="SMOOTHDINO_SYSTEM_ROOT", help="Read the system files under this folder (tests).")] = None,
):
    """First thing to run on a Jetson, on the host and in the container: one line per check, each problem with its fix; exit 2 if any."""
    from smoothdino.edge.commands.doctor import run_doctor

    report = run_doctor(root, engines=engines, source=source, timeout=timeout)
    for line in report.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(report.exit_code)


def main() -> None:  # python -m smoothdino.cli
    app()


if __name__ == "__main__":
    sys.exit(main())
