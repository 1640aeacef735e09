"""`smoothdino export`: checkpoints -> three ONNX graphs -> precision -> engines -> gate -> manifest.json.

One table of formats, one function per format (the ultralytics way):

    format      files                  needs
    onnx        <stage>.onnx           torch, onnx          FP32 graphs, checked against PyTorch (1e-4)
    onnx-fp16   <stage>.fp16.onnx      onnxruntime          mixed-precision graphs (export/fp16.py)
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
from smoothdino.edge.environment import gpu, tensorrt_usable, versions
from smoothdino.core.errors import UserError
from smoothdino.edge.graph_io import IO, io_shapes
from smoothdino.edge.manifest import Manifest, StageFiles
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
from .tensorrt import build_engine

ONNX_TOLERANCE = 1e-4
PRECISIONS = ("fp32", "fp16")


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


# -- one function per format ----------------------------------------------------------------------

def export_onnx(ctx: ExportContext) -> None:
    """FP32 graphs, each compared with its PyTorch module through ONNX Runtime."""
    for stage, module in ctx.modules.items():
        start = time.perf_counter()
        path = export_graph(module, stage, ctx.examples[stage], ctx.out / f"{stage}.onnx")
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


def export_tensorrt(ctx: ExportContext) -> None:
    cache = ctx.out / "timing.cache"
    precision = ctx.spec.precision
    for stage in ctx.modules:
        start = time.perf_counter()
        src = ctx.out / ctx.stages[stage].onnx[precision]
        path = build_engine(src, ctx.out / f"{stage}.{precision}.engine", workspace_mib=ctx.spec.workspace_mib,
                            timing_cache=cache, fp32_exact=precision == "fp32")
        ctx.seconds[f"{stage}.engine"] = time.perf_counter() - start
        ctx.stages[stage].engine = path.name


EXPORT_FORMATS: list[tuple[str, str, Callable[[ExportContext], None]]] = [
    ("onnx", "FP32 ONNX graphs", export_onnx),
    ("onnx-fp16", "mixed-precision FP16 ONNX graphs", export_onnx_fp16),
    ("tensorrt", "TensorRT engines", export_tensorrt),
]


def formats_for(spec: ExportSpec) -> list[str]:
    wanted = ["onnx"]
    if spec.precision == "fp16":
        wanted.append("onnx-fp16")
    backend = spec.backend
    if backend == "auto":
        usable, why = tensorrt_usable()
        backend = "tensorrt" if usable else "onnx"
        if not usable:
            notice(f"TensorRT unavailable ({why}); exporting ONNX graphs for ONNX Runtime")
    if backend == "tensorrt":
        wanted.append("tensorrt")
    elif backend != "onnx":
        raise UserError(f"--backend {spec.backend!r}: choose auto, onnx or tensorrt")
    return wanted


# -- building the modules ------------------------------------------------------------------------

def example_frame(size: tuple[int, int], calibration: list[Path]) -> np.ndarray:
    """A real frame for tracing and checking: the first calibration pair's, else the synthetic scene's."""
    pairs = calibration_pairs(calibration, 1, size) if calibration else []
    if pairs:
        return pairs[0].current
    from smoothdino.edge.synthetic import SyntheticScene

    return SyntheticScene(size[0], size[1], frames=1).frame(0)[0]


def build_context(spec: ExportSpec, out: Path) -> ExportContext:
    if spec.precision not in PRECISIONS:
        raise UserError(f"--precision {spec.precision!r}: choose fp32 or fp16 (INT8 needs explicit Q/DQ: not yet)")
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
    encoder_graph = EncoderGraph(encoder, spec.size)
    with torch.no_grad():
        levels = encoder_graph(rgb)
    modules = {"encoder": encoder_graph}
    examples = {"encoder": (rgb,)}
    if spec.adapter == "temporal":
        previous = tuple(t.roll(1, dims=-1) if t.ndim == 4 else t * 0.98 for t in levels)  # a moved frame
        modules["adapter"] = AdapterGraph(adapter)
        examples["adapter"] = levels + previous + (torch.tensor([[5.0, -3.0, 0.8]]),)
    modules["decoder"] = DecoderGraph(decoder, spec.size)
    examples["decoder"] = levels
    dim, grid = get_arch(spec.arch).embed_dim, patch_grid(*spec.size)
    ctx = ExportContext(spec, out, modules, examples, weights)
    for stage in modules:
        shapes = io_shapes(stage, spec.size[0], spec.size[1], dim, grid)
        inputs, outputs = IO[stage]
        dtype = {"image": "uint8"}
        ctx.stages[stage] = StageFiles(
            onnx={},
            inputs={n: {"shape": shapes[n], "dtype": dtype.get(n, "float32")} for n in inputs},
            outputs={n: {"shape": shapes[n], "dtype": "float32"} for n in outputs},
        )
    return ctx


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
        precision=spec.precision, weights=ctx.weights, stages=ctx.stages,
        versions={**versions(), "tensorrt": _built_tensorrt_version(wanted)},
        gpu=gpu() if "tensorrt" in wanted else None,
        export_seconds={k: round(v, 3) for k, v in ctx.seconds.items()},
    )
    manifest.folder = out
    say(f"precision gate on {spec.calibration_frames} calibration pairs ...")
    tolerance = spec.tolerance_mm if spec.tolerance_mm is not None else DEFAULT_TOLERANCE_MM[spec.precision]
    pairs = calibration_pairs(spec.calibration, spec.calibration_frames, spec.size)
    backend = "tensorrt" if "tensorrt" in wanted else "onnxruntime"
    with DepthPipeline(manifest, backend=backend) as candidate, \
            DepthPipeline(manifest, backend="onnxruntime", precision="fp32") as reference:
        report = run_gate(candidate, reference, pairs, tolerance)
    report.save(out / "gate.json")
    manifest.gate = {**report.depth, "passed": report.passed, "reasons": report.reasons,
                     "frames": report.frames, "tolerance_mm": tolerance, "onnx_vs_torch_max_rel":
                     {s: max(e.values()) for s, e in ctx.onnx_errors.items()}}
    manifest.export_seconds["total"] = round(time.perf_counter() - start, 3)
    if not report.passed and not spec.force:
        stale = out / "manifest.json"
        if stale.exists():
            stale.unlink()  # a manifest beside refused graphs would let the run-time use them
        raise GateError(f"{out / 'gate.json'}: {report.summary_line()}; not accepted (use --force to keep it)")
    manifest.save(out)
    return manifest, report


def _built_tensorrt_version(wanted: list[str]) -> str | None:
    if "tensorrt" not in wanted:
        return None
    from smoothdino.edge.environment import tensorrt_version

    return tensorrt_version()

