"""`smoothdino export`: checkpoints -> three ONNX graphs -> precision -> engines -> gate -> manifest.json.

One table of formats, one function per format (the ultralytics way):

    format      files                  needs
    onnx        <stage>.onnx           torch, onnx          FP32 graphs, checked against PyTorch (1e-4)
    onnx-fp16   <stage>.fp16.onnx      onnxruntime          mixed-precision graphs (export/fp16.py)
    onnx-int8   <stage>.int8.onnx      onnxruntime          explicit Q/DQ INT8, calibrated on NYUv2 pairs held
                                                            out from the gate's (calibration/int8.py)
    tensorrt    <stage>.<prec>.engine  tensorrt             strongly typed engines of those graphs

Every export ends with the precision gate (calibration/gate.py) and a manifest.json that records the
gate's figures; a failed gate leaves the report, exits non-zero, and writes no manifest unless --force.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smoothdino.calibration import DEFAULT_TOLERANCE_MM, GateError, calibration_pairs, run_gate
from smoothdino.core.console import console, notice
from smoothdino.edge.machine.environment import gpu, tensorrt_usable, versions
from smoothdino.core.errors import UserError
from smoothdino.edge.engines.graph_io import IO, io_shapes
from smoothdino.edge.engines.manifest import Manifest, StageFiles
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.models.adapter import load_adapter
from smoothdino.models.archs import get_arch, patch_grid
from smoothdino.models.decoder import load_decoder
from smoothdino.models.fold import fold_offsets_into_decoder
from smoothdino.models.vit import load_encoder

from .graphs import AdapterGraph, DecoderGraph, EncoderGraph
from .onnx import compare_with_torch, export_graph
from .spec import ExportSpec
from .fp16 import convert_to_fp16
from .stage_precision import (INT8_MIN_GAIN, choose_auto_plan, export_plan, gate_tolerance_mm, is_auto, precision_text,
                              time_stage_graphs)
from .tensorrt import build_stage_engines, engines_record

ONNX_TOLERANCE = 1e-4


@dataclass
class ExportContext:
    spec: ExportSpec
    out: Path
    modules: dict[str, torch.nn.Module]  # stage -> graph module
    examples: dict[str, tuple[torch.Tensor, ...]]
    weights: dict[str, str]
    stages: dict[str, StageFiles] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    onnx_errors: dict[str, dict[str, float]] = field(default_factory=dict)
    plan: dict[str, str] = field(default_factory=dict)  # stage -> precision (export/stage_precision.py)
    gate_pairs: list | None = None  # the gate's frame pairs (INT8 calibration avoids them)
    calibration: dict = field(default_factory=dict)  # INT8: method and frames, for gate.json
    auto: dict | None = None  # --precision auto on the CPU: what was timed and gated, and what was chosen
    gated: tuple | None = None  # (plan, GateReport) already gated by auto: the final gate reuses it


# -- one function per format ----------------------------------------------------------------------

def export_onnx(ctx: ExportContext) -> None:
    """FP32 graphs, each compared with its PyTorch module through ONNX Runtime."""
    for stage, module in ctx.modules.items():
        start = time.perf_counter()
        files = ctx.stages[stage]
        batch_shapes = {n: v["shape"] for n, v in {**files.inputs, **files.outputs}.items()} if ctx.spec.batch > 1 else None
        path = export_graph(module, stage, ctx.examples[stage], ctx.out / f"{stage}.onnx", shapes=batch_shapes)
        errors = compare_with_torch(path, module, stage, ctx.examples[stage])
        ctx.seconds[f"{stage}.onnx"] = time.perf_counter() - start
        ctx.onnx_errors[stage] = errors
        worst = max(errors, key=errors.get)
        if errors[worst] > ONNX_TOLERANCE:
            raise UserError(f"{path}: output {worst} differs from PyTorch by {errors[worst]:.2e} relative "
                            f"(> {ONNX_TOLERANCE}); please report this export")
        ctx.stages[stage].onnx["fp32"] = path.name


def export_onnx_fp16(ctx: ExportContext) -> None:
    for stage in ctx.modules:
        start = time.perf_counter()
        path = convert_to_fp16(ctx.out / f"{stage}.onnx", ctx.out / f"{stage}.fp16.onnx", stage)
        ctx.seconds[f"{stage}.fp16.onnx"] = time.perf_counter() - start
        ctx.stages[stage].onnx["fp16"] = path.name


def export_onnx_int8(ctx: ExportContext) -> None:
    """Explicit Q/DQ INT8 graphs of the stages the plan runs in INT8, their scales from real frame pairs pushed
    through the FP32 graphs; the pairs share no frame with the gate's, so the gate judges held-out frames."""
    from smoothdino.calibration.int8 import DEFAULT_METHOD, check_int8_graph, quantize_stage, stage_feeds

    stages = [s for s in ctx.modules if ctx.plan.get(s) == "int8"]
    method = ctx.spec.calibration_method or DEFAULT_METHOD
    gate = _gate_pairs(ctx)
    pairs = calibration_pairs(ctx.spec.calibration, ctx.spec.calibration_frames, ctx.spec.size, avoid=gate)
    if not pairs:
        where = ", ".join(str(c) for c in ctx.spec.calibration)
        raise UserError(f"{where}: no frame pair left for INT8 calibration once the gate's {len(gate)} pairs are held "
                        "out; pass longer or more --calibration sequences (or fewer --calibration-frames)")
    start = time.perf_counter()
    # the FP32 graphs of every stage up to the last INT8 one: the decoder's inputs are the adapter's outputs
    needed = list(ctx.modules)[: max(list(ctx.modules).index(s) for s in stages) + 1]
    feeds = stage_feeds({s: ctx.out / ctx.stages[s].onnx["fp32"] for s in needed}, pairs)
    ctx.seconds["int8.calibration_tensors"] = time.perf_counter() - start
    for stage in stages:
        start = time.perf_counter()
        path = quantize_stage(ctx.out / ctx.stages[stage].onnx["fp32"], ctx.out / f"{stage}.int8.onnx", stage,
                              feeds[stage], method=method)
        ctx.seconds[f"{stage}.int8.onnx"] = time.perf_counter() - start
        ctx.stages[stage].onnx["int8"] = path.name
        ctx.calibration.setdefault("quantized_nodes", {})[stage] = len(check_int8_graph(path)["quantized_nodes"])
    ctx.calibration.update(method=method, calibration_pairs=[list(p.frames) for p in pairs],
                           gate_pairs=[list(p.frames) for p in gate])


def _gate_pairs(ctx: ExportContext) -> list:
    if ctx.gate_pairs is None:
        ctx.gate_pairs = calibration_pairs(ctx.spec.calibration, ctx.spec.calibration_frames, ctx.spec.size)
    return ctx.gate_pairs


def export_tensorrt(ctx: ExportContext) -> None:
    """Engines of the spec's TensorRT flavour; `tensorrt-rtx` builds here without a GPU."""
    stages = {stage: ctx.stages[stage] for stage in ctx.modules}
    precisions = {stage: files.precision or ctx.spec.precision for stage, files in stages.items()}  # per stage
    ctx.seconds.update(build_stage_engines(ctx.out, stages, precisions, flavour=_tensorrt_flavour(ctx.spec),
                                           compute_capabilities=ctx.spec.compute_capabilities,
                                           workspace_mib=ctx.spec.workspace_mib, batch=ctx.spec.batch))


EXPORT_FORMATS: list[tuple[str, str, Callable[[ExportContext], None]]] = [
    ("onnx", "FP32 ONNX graphs", export_onnx),
    ("onnx-fp16", "mixed-precision FP16 ONNX graphs", export_onnx_fp16),
    ("onnx-int8", "INT8 Q/DQ ONNX graphs (calibrated on real frame pairs)", export_onnx_int8),
    ("tensorrt", "TensorRT engines", export_tensorrt),
]


def formats_for(spec: ExportSpec) -> list[str]:
    wanted = ["onnx"]
    plan = export_plan(spec.precision, target=export_target(spec))
    wanted += [f"onnx-{p}" for p in ("fp16", "int8") if p in plan.values()]
    backend = _tensorrt_flavour(spec, say_why=True) or "onnxruntime"
    if backend in ("tensorrt", "tensorrt-rtx"):  # one format, "tensorrt", builds either flavour
        wanted.append("tensorrt")
    elif backend != "onnxruntime":  # the spec has already refused other words (core.backends)
        raise UserError(f"--backend {spec.backend}: this build cannot export for it")
    return wanted


def export_target(spec: ExportSpec) -> str:
    """"gpu" when the export builds TensorRT engines or is for ONNX Runtime's CUDA provider, else "cpu" (ONNX
    Runtime on the CPU): what `int8` and `auto` mean."""
    return "gpu" if spec.backend == "onnxruntime-cuda" or _tensorrt_flavour(spec) else "cpu"


def _tensorrt_flavour(spec: ExportSpec, say_why: bool = False) -> str | None:
    """The TensorRT flavour the export builds engines with, None for ONNX graphs only. auto: TensorRT where it
    can run here, else TensorRT for RTX where it can run here (an RTX GPU), else none. tensorrt-rtx is never
    picked by auto on a machine that cannot run its engines, though it can build them: ask for it."""
    if spec.backend in ("tensorrt", "tensorrt-rtx"):
        return spec.backend
    if spec.backend != "auto":
        return None
    usable, why = tensorrt_usable("tensorrt")
    if usable:
        return "tensorrt"
    if tensorrt_usable("tensorrt-rtx")[0]:
        return "tensorrt-rtx"
    if say_why:
        notice(f"TensorRT unavailable ({why}); exporting ONNX graphs for ONNX Runtime")
    return None


# -- building the modules ------------------------------------------------------------------------

def example_frame(size: tuple[int, int], calibration: list[Path]) -> np.ndarray:
    """A real frame for tracing and checking: the first calibration pair's, else the synthetic scene's."""
    pairs = calibration_pairs(calibration, 1, size) if calibration else []
    if pairs:
        return pairs[0].current
    from smoothdino.edge.sources.synthetic import SyntheticScene

    return SyntheticScene(size[0], size[1], frames=1).frame(0)[0]


def build_context(spec: ExportSpec, out: Path) -> ExportContext:
    export_plan(spec.precision)  # refuses unknown words before the slow part (PRECISIONS: fp32 fp16 int8)
    kw = {"random_weights": spec.random_weights, "seed": spec.seed}
    weights_dir = None if spec.random_weights else spec.weights_dir
    encoder = load_encoder(spec.arch, weights_dir, **kw)
    decoder = load_decoder(spec.arch, spec.head, weights_dir, **kw)
    adapter = load_adapter(spec.adapter, spec.arch, spec.adapter_weights, **kw)
    weights = {"encoder": encoder.weights_id, "decoder": decoder.weights_id}
    if spec.adapter != "none":
        weights["adapter"] = adapter.weights_id
    if spec.adapter == "paper":  # a constant offset: fold it, no adapter stage at run time
        decoder = fold_offsets_into_decoder(decoder, adapter.static_offsets())

    rgb = torch.from_numpy(np.ascontiguousarray(example_frame(spec.size, spec.calibration)))[None]
    if spec.batch > 1:  # --batch: traced and checked on two different frames (nothing specialises on one)
        rgb = torch.cat([rgb, rgb.flip(2)])
    encoder_graph = EncoderGraph(encoder, spec.size)
    with torch.no_grad():
        levels = encoder_graph(rgb)
    modules = {"encoder": encoder_graph}
    examples = {"encoder": (rgb,)}
    if spec.adapter == "temporal":
        previous = tuple(t.roll(1, dims=-1) if t.ndim == 4 else t * 0.98 for t in levels)  # a moved frame
        modules["adapter"] = AdapterGraph(adapter)
        examples["adapter"] = levels + previous + (torch.tensor([[5.0, -3.0, 0.8], [-2.0, 4.0, 0.5]][: len(rgb)]),)
    modules["decoder"] = DecoderGraph(decoder, spec.size)
    examples["decoder"] = levels
    dim, grid = get_arch(spec.arch).embed_dim, patch_grid(*spec.size)
    ctx = ExportContext(spec, out, modules, examples, weights)
    ctx.plan = export_plan(spec.precision, list(modules), target=export_target(spec))
    for stage in modules:
        shapes = io_shapes(stage, spec.size[0], spec.size[1], dim, grid, batch=spec.batch)
        inputs, outputs = IO[stage]
        dtype = {"image": "uint8"}
        ctx.stages[stage] = StageFiles(
            onnx={},
            inputs={n: {"shape": shapes[n], "dtype": dtype.get(n, "float32")} for n in inputs},
            outputs={n: {"shape": shapes[n], "dtype": "float32"} for n in outputs},
            precision=ctx.plan[stage],
        )
    return ctx


def choose_auto_precision(ctx: ExportContext, manifest: Manifest, say: Callable[[str], None]) -> None:
    """--precision auto on the CPU: time each stage's fp32 and int8 graph on a gate pair, take per stage the int8
    graph only where it is clearly faster (`choose_auto_plan`), and gate that plan; a plan that fails falls back to
    fp32. Timing first means a CPU where INT8 gains nothing (no VNNI) skips the INT8 gate altogether."""
    from smoothdino.calibration.int8 import stage_feeds

    int8_plan = dict(ctx.plan)
    pairs = _gate_pairs(ctx)
    files = ctx.stages
    say("auto: timing each stage's fp32 and int8 graphs in ONNX Runtime ...")
    feeds = stage_feeds({s: ctx.out / files[s].onnx["fp32"] for s in files}, pairs[:1])
    graphs = {s: {p: ctx.out / name for p, name in files[s].onnx.items() if p in ("fp32", int8_plan[s])}
              for s in files}
    timings = time_stage_graphs(graphs, feeds)
    candidate = choose_auto_plan(timings)
    chosen, gate = candidate, {"passed": None, "reasons": [], "skipped": "no stage is faster in int8 here"}
    if "int8" in candidate.values():
        tolerance = ctx.spec.tolerance_mm
        if tolerance is None:
            tolerance = gate_tolerance_mm(candidate, DEFAULT_TOLERANCE_MM)
        _set_plan(ctx, manifest, candidate)
        say(f"auto: gating {manifest.precision} ...")
        with DepthPipeline(manifest, backend="onnxruntime") as gated, \
                DepthPipeline(manifest, backend="onnxruntime", precision="fp32") as reference:
            report = run_gate(gated, reference, pairs, tolerance)
        gate = {"plan": precision_text(candidate), "passed": report.passed, "reasons": report.reasons,
                "rmse_vs_reference_mm": report.depth["rmse_vs_reference_mm"], "tolerance_mm": tolerance}
        ctx.gated = (candidate, report)
        if not report.passed:
            chosen = {stage: "fp32" for stage in candidate}
            kept = [s for s in candidate if candidate[s] == "int8"]
            notice(f"--precision auto: the int8 plan failed its gate ({'; '.join(report.reasons)}); "
                   f"{', '.join(kept)} stay fp32")
    ctx.auto = {"candidates": {"fp32": "fp32", "int8": precision_text(int8_plan)}, "stage_ms": timings,
                "int8_gate": gate, "chosen": precision_text(chosen),
                "measured_on": "onnxruntime CPU, best of 3 runs per frame",
                "rule": f"int8 where it takes at most {1 - INT8_MIN_GAIN:.0%} of fp32's time and its plan passes the gate"}
    _set_plan(ctx, manifest, chosen)
    say(f"auto: chose {manifest.precision} "
        f"({', '.join(f'{s} ' + '/'.join(f'{p} {ms:.1f} ms' for p, ms in timings[s].items()) for s in timings)})")


def _set_plan(ctx: ExportContext, manifest: Manifest, plan: dict[str, str]) -> None:
    ctx.plan = dict(plan)
    for stage, precision in plan.items():
        ctx.stages[stage].precision = precision
    manifest.precision = precision_text(plan)


def export_model(spec: ExportSpec, out: Path, progress: Callable[[str], None] | None = None):
    """Run the export. Returns (manifest, gate report). Raises GateError after saving the report when
    the gate refuses and spec.force is not set."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda msg: console.print(msg))
    wanted = formats_for(spec)
    start = time.perf_counter()
    say("loading weights and tracing")
    ctx = build_context(spec, out)
    for name, description, run in EXPORT_FORMATS:
        if name in wanted:
            say(f"{description} ...")
            run(ctx)
    manifest = Manifest(
        arch=spec.arch, head=spec.head, adapter=spec.adapter, adapter_folded=spec.adapter == "paper",
        frame_size=tuple(spec.size), grid=patch_grid(*spec.size), embed_dim=get_arch(spec.arch).embed_dim,
        precision=precision_text(ctx.plan), weights=ctx.weights, stages=ctx.stages,
        versions={**versions(), "tensorrt": _built_tensorrt_version(wanted, spec)},
        gpu=gpu() if "tensorrt" in wanted else None,
        tensorrt=_built_tensorrt(spec, wanted),
        export_seconds={k: round(v, 3) for k, v in ctx.seconds.items()},
        batch=spec.batch,
    )
    manifest.folder = out
    manifest.record_files(out)  # the graphs and engines just written: the gate below opens them checked
    if is_auto(spec.precision) and export_target(spec) == "cpu":
        choose_auto_precision(ctx, manifest, say)
    say(f"precision gate on {spec.calibration_frames} calibration pairs ...")
    tolerance = spec.tolerance_mm if spec.tolerance_mm is not None else gate_tolerance_mm(ctx.plan, DEFAULT_TOLERANCE_MM)
    pairs = _gate_pairs(ctx)
    backend = manifest.tensorrt_flavour if "tensorrt" in wanted else "onnxruntime"  # falls back, with a notice
    if ctx.gated and ctx.gated[0] == ctx.plan:  # auto chose the plan it has just gated
        report = ctx.gated[1]
    else:
        with DepthPipeline(manifest, backend=backend) as candidate, \
                DepthPipeline(manifest, backend="onnxruntime", precision="fp32") as reference:
            report = run_gate(candidate, reference, pairs, tolerance)
    auto = {"auto": ctx.auto} if ctx.auto else {}
    report.calibration = {**ctx.calibration, "stage_precision": dict(ctx.plan), **auto}
    report.record(manifest, out, onnx_vs_torch_max_rel={s: max(e.values()) for s, e in ctx.onnx_errors.items()},
                  stage_precision=dict(ctx.plan), **auto)
    manifest.fingerprint = spec.fingerprint()
    manifest.export_seconds["total"] = round(time.perf_counter() - start, 3)
    if not report.passed and not spec.force:
        stale = out / "manifest.json"
        if stale.exists():
            stale.unlink()  # a manifest beside refused graphs would let the run-time use them
        raise GateError(f"{out / 'gate.json'}: {report.summary_line()}; not accepted (use --force to keep it)")
    if spec.batch > 1:  # what edge.batching.choose_batch's auto reads: is a batch faster a frame here?
        from smoothdino.edge.batching import export_timing

        manifest.batch_timing = export_timing(manifest, backend, say)
    manifest.save(out)
    return manifest, report


def _built_tensorrt_version(wanted: list[str], spec: ExportSpec | None = None) -> str | None:
    """The plain-TensorRT version of the engines (manifest.versions["tensorrt"], as older manifests have it);
    None for ONNX-only and TensorRT for RTX exports (manifest.tensorrt records those)."""
    if "tensorrt" not in wanted or (spec is not None and _tensorrt_flavour(spec) != "tensorrt"):
        return None
    from smoothdino.edge.machine.environment import tensorrt_version

    return tensorrt_version("tensorrt")


def _built_tensorrt(spec: ExportSpec, wanted: list[str]) -> dict | None:
    """manifest.tensorrt: the engines' flavour, version and (RTX) target compute capabilities."""
    if "tensorrt" not in wanted:
        return None
    return engines_record(_tensorrt_flavour(spec), spec.compute_capabilities, [spec.precision])



def ensure_export(spec: ExportSpec, folder: Path, progress: Callable[[str], None] | None = None) -> Manifest:
    """The export of `spec` in `folder`: reused when its manifest records the same fingerprint (the one
    staleness rule, see ExportSpec.fingerprint) and a passed gate (or --force), else exported again."""
    folder = Path(folder)
    wanted = spec.fingerprint()
    why = "no export there yet"
    if (folder / "manifest.json").is_file():
        try:
            manifest = Manifest.load(folder)
        except UserError as err:
            why = f"unreadable manifest ({err})"
        else:
            changed = sorted(k for k in set(wanted) | set(manifest.fingerprint)
                             if wanted.get(k) != manifest.fingerprint.get(k))
            if not changed and ((manifest.gate or {}).get("passed") or spec.force):
                return manifest
            why = f"{', '.join(changed)} changed" if changed else "its gate failed"
    notice(f"{folder}: exporting {spec.arch}+{spec.adapter} {spec.precision} ({why})")
    manifest, _ = export_model(spec, folder, progress=progress)
    return manifest
