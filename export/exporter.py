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

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smoothdino.calibration import DEFAULT_TOLERANCE_MM, GateError, calibration_pairs, run_gate
from smoothdino.calibration.gate import RecordedRun, record_run
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

from . import graph_cache
from .graphs import AdapterGraph, DecoderGraph, EncoderGraph
from .onnx import compare_with_torch, export_graph
from .spec import ExportSpec
from .fp16 import convert_to_fp16
from .stage_precision import (AUTO_CALIBRATION_PAIRS, AUTO_TIMING_REPEATS, INT8_MIN_GAIN, choose_auto_plan, export_plan,
                              gate_tolerance_mm, is_auto, precision_text, time_stage_graphs)
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
    meter: "ExportMeter | None" = None


# -- what the export is doing, and how much is left ---------------------------------------------------

# Work of each step in "decoder runs": one FP32 decoder run in ONNX Runtime at the export's size. Relative costs
# measured on a 2-core x86 CPU with VNNI at 480x640 (one decoder run ~2 s there); a progress bar turns them into
# seconds from the rate it sees, so only their ratios matter. RANGES: a graph with its ranges taken runs ~1.3x.
WORK = {"load": 1.5, "onnx": 7.5, "fp16": 0.5, "quantize": 0.6, "encoder": 0.37, "adapter": 0.01, "decoder": 1.0,
        "encoder.int8": 0.28, "adapter.int8": 0.01, "decoder.int8": 0.31}
RANGES = 1.3


def _runs(stages, plan: dict[str, str] | None = None) -> float:
    """Work of one gate pair (prime t-1: encoder; step t: every stage) at `plan` (None: fp32)."""
    def w(stage):
        p = (plan or {}).get(stage, "fp32")
        return WORK.get(f"{stage}.int8" if p == "int8" else stage, WORK[stage])
    return sum(w(s) for s in stages) + w("encoder")


class ExportMeter:
    """What the export is doing and how much work is left, for a progress bar (cli.export). `step(text)` names
    the current step; `plan(units)` sets the whole export's work (WORK units), `advance(units)` counts work done and
    `drop(units)` takes back work the export decided not to do. This one only prints the steps."""

    def __init__(self, say: Callable[[str], None] | None = None):
        self.say = say or (lambda msg: console.print(msg))
        self.total = self.done = 0.0

    def step(self, text: str) -> None:
        self.say(text)

    def decision(self, text: str) -> None:
        """A choice the export made and why (a progress bar keeps it on screen)."""
        self.say(text)

    def plan(self, units: float) -> None:
        self.total = units

    def advance(self, units: float) -> None:
        self.done += units

    def drop(self, units: float) -> None:
        self.total -= units


def _planned_work(ctx: "ExportContext", wanted: list[str], auto_cpu: bool) -> float:
    spec, stages = ctx.spec, list(ctx.modules)
    n = spec.calibration_frames
    work = WORK["load"] + WORK["onnx"]
    if "onnx-fp16" in wanted:
        work += WORK["fp16"] * len(stages)
    int8 = [s for s in stages if ctx.plan.get(s) == "int8"]
    if auto_cpu:
        k = min(n, AUTO_CALIBRATION_PAIRS)
        work += n * _runs(stages)  # the FP32 reference on the gate's pairs
        work += sum(WORK["quantize"] + (AUTO_TIMING_REPEATS + 1) * (WORK[s] * (s in TIMED_IN_TURNS) + WORK[f"{s}.int8"])
                    for s in int8)
        work += _calibration_work(stages, int8, k) + n * _runs(stages, ctx.plan)  # calibration, the INT8 gate
    else:
        if int8:
            work += _calibration_work(stages, int8, n)
        work += n * (_runs(stages) + _runs(stages, ctx.plan))  # the gate: candidate and reference
    return work


def _calibration_work(stages: list[str], int8: list[str], pairs: int) -> float:
    if not int8:
        return 0.0
    upto = stages[: max(stages.index(s) for s in int8) + 1]
    per_pair = sum(WORK[s] * (RANGES if s in int8 else 1.0) * (2 if s == "encoder" else 1) for s in upto)
    return pairs * per_pair + WORK["quantize"] * len(int8)


# -- one function per format ----------------------------------------------------------------------

def export_onnx(ctx: ExportContext) -> None:
    """FP32 graphs, each compared with its PyTorch module through ONNX Runtime. A stage an earlier export traced
    for the same module, weights and code is copied from the graph cache (export/graph_cache.py), then compared
    the same way; `export_seconds` names it `<stage>.onnx.cached`."""
    for stage, module in ctx.modules.items():
        start = time.perf_counter()
        files = ctx.stages[stage]
        key = graph_cache.graph_key(ctx.spec, ctx.weights, stage)
        path = ctx.out / f"{stage}.onnx"
        cached = graph_cache.fetch(key, path)
        if not cached:
            batch_shapes = {n: v["shape"] for n, v in {**files.inputs, **files.outputs}.items()} if ctx.spec.batch > 1 else None
            path = export_graph(module, stage, ctx.examples[stage], path, shapes=batch_shapes)
        errors = compare_with_torch(path, module, stage, ctx.examples[stage])
        ctx.seconds[f"{stage}.onnx" + (".cached" if cached else "")] = time.perf_counter() - start
        ctx.onnx_errors[stage] = errors
        worst = max(errors, key=errors.get)
        if errors[worst] > ONNX_TOLERANCE:
            raise UserError(f"{path}: output {worst} differs from PyTorch by {errors[worst]:.2e} relative "
                            f"(> {ONNX_TOLERANCE}); please report this export")
        ctx.stages[stage].onnx["fp32"] = path.name
        if not cached:
            graph_cache.keep(key, path)


def export_onnx_fp16(ctx: ExportContext) -> None:
    for stage in ctx.modules:
        start = time.perf_counter()
        path = convert_to_fp16(ctx.out / f"{stage}.onnx", ctx.out / f"{stage}.fp16.onnx", stage)
        ctx.seconds[f"{stage}.fp16.onnx"] = time.perf_counter() - start
        ctx.stages[stage].onnx["fp16"] = path.name


def export_onnx_int8(ctx: ExportContext) -> None:
    """Explicit Q/DQ INT8 graphs of the stages the plan runs in INT8, their scales from real frame pairs pushed
    through the FP32 graphs; the pairs share no frame with the gate's, so the gate judges held-out frames.
    `--precision auto` on the CPU does this in choose_auto_precision, for the stages whose INT8 pays."""
    if is_auto(ctx.spec.precision) and export_target(ctx.spec) == "cpu":
        return
    calibrate_int8(ctx, [s for s in ctx.modules if ctx.plan.get(s) == "int8"], ctx.spec.calibration_frames)


def calibrate_int8(ctx: ExportContext, stages: list[str], count: int) -> dict[str, int]:
    """Write <stage>.int8.onnx for `stages`, calibrated on `count` pairs held out from the gate's: MinMax ranges
    of every stage in one pass over the pairs (calibration/int8.py `stage_ranges`), other methods through
    quantize_static on the stages' feeds. Returns {stage: quantized nodes}."""
    from smoothdino.calibration.int8 import DEFAULT_METHOD, check_int8_graph, quantize_stage, stage_feeds, stage_ranges

    method = ctx.spec.calibration_method or DEFAULT_METHOD
    gate = _gate_pairs(ctx)
    pairs = calibration_pairs(ctx.spec.calibration, count, ctx.spec.size, avoid=gate)
    if not pairs:
        where = ", ".join(str(c) for c in ctx.spec.calibration)
        raise UserError(f"{where}: no frame pair left for INT8 calibration once the gate's {len(gate)} pairs are held "
                        "out; pass longer or more --calibration sequences (or fewer --calibration-frames)")
    meter = ctx.meter or ExportMeter(lambda m: None)
    meter.step(f"INT8: calibrating {', '.join(stages)} on {len(pairs)} frame pairs ...")
    start = time.perf_counter()
    # the FP32 graphs of every stage up to the last INT8 one: the decoder's inputs are the adapter's outputs
    needed = list(ctx.modules)[: max(list(ctx.modules).index(s) for s in stages) + 1]
    graphs = {s: ctx.out / ctx.stages[s].onnx["fp32"] for s in needed}
    ranges, feeds = {}, {}
    if method == "minmax":
        ranges = stage_ranges(graphs, pairs, stages, progress=lambda stage: meter.advance(
            WORK[stage] * (RANGES if stage in stages else 1.0)))
    else:
        feeds = stage_feeds(graphs, pairs)
    ctx.seconds["int8.calibration_tensors"] = time.perf_counter() - start
    quantized = {}
    for stage in stages:
        meter.step(f"INT8: quantizing the {stage} ...")
        start = time.perf_counter()
        path = quantize_stage(graphs[stage], ctx.out / f"{stage}.int8.onnx", stage, feeds.get(stage), method=method,
                              ranges=ranges.get(stage))
        ctx.seconds[f"{stage}.int8.onnx"] = time.perf_counter() - start
        meter.advance(WORK["quantize"])
        ctx.stages[stage].onnx["int8"] = path.name
        quantized[stage] = len(check_int8_graph(path)["quantized_nodes"])
    ctx.calibration.setdefault("quantized_nodes", {}).update(quantized)
    ctx.calibration.update(method=method, calibration_pairs=[list(p.frames) for p in pairs],
                           gate_pairs=[list(p.frames) for p in gate])
    return quantized


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


def choose_auto_precision(ctx: ExportContext, manifest: Manifest, say: Callable[[str], None] | None = None) -> None:
    """--precision auto on the CPU, cheapest question first:
    1. the FP32 plan on the gate's pairs, recorded once: the reference of every gate that follows, and the whole
       verdict when FP32 is what is chosen (its gate only tests finiteness: it is the reference);
    2. a speed probe: each INT8-candidate stage quantized with placeholder ranges (the calibrated graph's exact
       Q/DQ structure, so its speed, without a frame of calibration) timed in turns against its FP32 graph on a
       gate pair; a stage whose INT8 is not clearly faster (`choose_auto_plan`) is not calibrated at all;
    3. the stages that pay calibrated on AUTO_CALIBRATION_PAIRS pairs held out from the gate (one pass for all
       stages), their graphs checked to have the probe's structure;
    4. that plan gated against the recorded reference on the gate pairs (all of them when it passes; it stops at the
       first pair after which its refusal is certain: calibration.gate._certain_failure); a plan that fails falls
       back to fp32.
    What was timed, calibrated, skipped and gated, and why, goes into the manifest (gate.auto)."""
    from smoothdino.calibration.int8 import give_back_memory, int8_summary, placeholder_ranges, quantize_stage

    meter = ctx.meter or ExportMeter(say)
    int8_plan = dict(ctx.plan)
    stages = list(ctx.stages)
    pairs = _gate_pairs(ctx)
    fp32_plan = {s: "fp32" for s in stages}
    fp32_path = {s: ctx.out / ctx.stages[s].onnx["fp32"] for s in stages}

    _set_plan(ctx, manifest, fp32_plan)
    give_back_memory()  # what tracing and the ONNX checks freed
    meter.step(f"auto: the FP32 reference on the gate's {len(pairs)} frame pairs ...")
    with DepthPipeline(manifest, backend="onnxruntime", precision="fp32") as pipeline:
        reference = record_run(pipeline, pairs, progress=lambda: meter.advance(_runs(stages)))
    give_back_memory()

    probed = [s for s in stages if int8_plan[s] == "int8"]
    timings = {s: {"fp32": ms} for s, ms in reference_stage_ms(reference, stages).items()}
    probe_nodes = {}
    if probed:
        feeds = _probe_feeds(reference, pairs[0], probed, fp32_path)
        with tempfile.TemporaryDirectory(prefix="smoothdino-probe-") as tmp:
            graphs = {}
            for stage in probed:
                meter.step(f"auto: INT8 speed probe of the {stage} (placeholder ranges, timing only) ...")
                probe = quantize_stage(fp32_path[stage], Path(tmp) / f"{stage}.probe.int8.onnx", stage,
                                       ranges=placeholder_ranges(fp32_path[stage], stage))
                probe_nodes[stage] = len(int8_summary(probe)["quantized_nodes"])
                meter.advance(WORK["quantize"])
                graphs[stage] = {"fp32": fp32_path[stage], "int8": probe} if stage in TIMED_IN_TURNS else {"int8": probe}
            meter.step(f"auto: timing fp32 against int8 ({', '.join(probed)}), in turns ...")
            measured = time_stage_graphs(graphs, feeds, repeats=AUTO_TIMING_REPEATS,
                                         progress=lambda s, p: meter.advance(WORK[s if p == "fp32" else f"{s}.int8"]))
        for stage, ms in measured.items():
            timings[stage].update(ms)
        give_back_memory()
    candidate = choose_auto_plan(timings)
    paying = [s for s in stages if candidate[s] == "int8"]
    skipped = {s: f"int8 {timings[s]['int8']:.1f} ms is not under {1 - INT8_MIN_GAIN:.0%} of fp32 {timings[s]['fp32']:.1f} "
                  "ms: not calibrated" for s in probed if s not in paying}
    n_cal = min(ctx.spec.calibration_frames, AUTO_CALIBRATION_PAIRS)
    chosen, gate = fp32_plan, {"passed": None, "reasons": [], "skipped": "no stage is faster in int8 here"}
    if not paying:
        meter.drop(_calibration_work(stages, probed, n_cal) + len(pairs) * _runs(stages, int8_plan))
    else:
        meter.drop(_calibration_work(stages, probed, n_cal) - _calibration_work(stages, paying, n_cal)
                   + len(pairs) * (_runs(stages, int8_plan) - _runs(stages, candidate)))
        quantized = calibrate_int8(ctx, paying, n_cal)
        for stage in paying:  # the probe timed this very structure: same quantized nodes, only the scales differ
            if quantized[stage] != probe_nodes[stage]:
                raise UserError(f"{stage}: the INT8 graph quantizes {quantized[stage]} nodes but its speed probe "
                                f"{probe_nodes[stage]}; please report this export")
        manifest.record_files(ctx.out)
        tolerance = ctx.spec.tolerance_mm
        if tolerance is None:
            tolerance = gate_tolerance_mm(candidate, DEFAULT_TOLERANCE_MM)
        _set_plan(ctx, manifest, candidate)
        meter.step(f"auto: gating {manifest.precision} against the FP32 reference on {len(pairs)} pairs ...")
        with DepthPipeline(manifest, backend="onnxruntime") as gated:
            report = run_gate(gated, reference, pairs, tolerance, stop_when_certain=True,
                              progress=lambda: meter.advance(_runs(stages, candidate)))
        meter.drop((len(pairs) - report.frames) * _runs(stages, candidate))  # a certain refusal stops early
        gate = {"plan": precision_text(candidate), "passed": report.passed, "reasons": report.reasons,
                "rmse_vs_reference_mm": report.depth["rmse_vs_reference_mm"], "tolerance_mm": tolerance,
                "pairs": report.frames}
        ctx.gated = (candidate, report)
        if report.passed:
            chosen = candidate
        else:
            notice(f"--precision auto: the int8 plan failed its gate ({'; '.join(report.reasons)}); "
                   f"{', '.join(paying)} stay fp32")
    if chosen == fp32_plan:  # the reference itself: its recorded run is the whole gate (finiteness)
        tolerance = ctx.spec.tolerance_mm if ctx.spec.tolerance_mm is not None else \
            gate_tolerance_mm(fp32_plan, DEFAULT_TOLERANCE_MM)
        ctx.gated = (fp32_plan, run_gate(reference, reference, pairs, tolerance))
    ctx.auto = {"candidates": {"fp32": "fp32", "int8": precision_text(int8_plan)}, "stage_ms": timings,
                "int8_gate": gate, "chosen": precision_text(chosen),
                "calibrated": paying, "not_calibrated": skipped,
                "calibration_pairs": n_cal if paying else 0, "gate_pairs": len(pairs),
                "measured_on": (f"onnxruntime CPU, one engine at a time, the same threads; int8: a graph of the "
                                f"calibrated graph's structure on the first gate pair, best of {AUTO_TIMING_REPEATS} "
                                f"after a warm-up; fp32: {', '.join(TIMED_IN_TURNS)} the same way, in turns with its "
                                "int8 graph, the other stages their best run in the FP32 reference on the gate's "
                                f"{len(pairs)} pairs"),
                "rule": f"int8 where it takes at most {1 - INT8_MIN_GAIN:.0%} of fp32's time and its plan passes the gate"}
    _set_plan(ctx, manifest, chosen)
    why = "; ".join(f"{s} " + "/".join(f"{p} {ms:.1f} ms" for p, ms in timings[s].items()) for s in timings)
    not_calibrated = "".join(f"; {s}: {w}" for s, w in skipped.items())
    meter.decision(f"auto: chose {manifest.precision} ({why}{not_calibrated})")


# Stages whose FP32 time is measured again beside their INT8 probe rather than taken from the FP32 reference run:
# the encoder, whose step overlaps the motion thread (phase correlation) in the pipeline. The decoder and adapter
# run alone in a step, so their best reference run is their time (the decoder: ~3 runs of its graph saved).
TIMED_IN_TURNS = ("encoder",)


def reference_stage_ms(reference: RecordedRun, stages: list[str]) -> dict[str, float]:
    """{stage: ms}: each stage's best run in the recorded FP32 reference (FrameResult.timings)."""
    return {s: round(1000.0 * min(r.timings[s] for r in reference.results), 3) for s in stages}


def _probe_feeds(reference: RecordedRun, pair, stages: list[str], fp32_path: dict[str, Path]) -> dict[str, list[dict]]:
    """One gate pair's inputs of each stage, from the recorded reference (its kept outputs) where it has them."""
    from smoothdino.calibration.int8 import stage_feeds

    outputs = reference.result(0, pair).outputs
    feeds = {"encoder": [{"image": np.ascontiguousarray(pair.current)[None]}]}
    fused = {k[len("fused_"):]: v for k, v in outputs.items() if k.startswith("fused_")}
    feeds["decoder"] = [fused or {k: v for k, v in outputs.items() if k != "depth"}]
    if "adapter" in stages:  # its inputs hold the previous frame's levels, which the recording does not keep
        feeds["adapter"] = stage_feeds(fp32_path, [pair])["adapter"]
    return {s: feeds[s] for s in stages}


def _set_plan(ctx: ExportContext, manifest: Manifest, plan: dict[str, str]) -> None:
    ctx.plan = dict(plan)
    for stage, precision in plan.items():
        ctx.stages[stage].precision = precision
    manifest.precision = precision_text(plan)


def export_model(spec: ExportSpec, out: Path, progress: "Callable[[str], None] | ExportMeter | None" = None):
    """Run the export; `progress`: a function given each step's text, or an ExportMeter (a progress bar). Returns (manifest, gate report). Raises GateError after saving the report when
    the gate refuses and spec.force is not set."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meter = progress if isinstance(progress, ExportMeter) else ExportMeter(progress)
    say = meter.step
    wanted = formats_for(spec)
    start = time.perf_counter()
    auto_cpu = is_auto(spec.precision) and export_target(spec) == "cpu"
    say("loading weights and tracing")
    ctx = build_context(spec, out)
    ctx.meter = meter
    meter.plan(_planned_work(ctx, wanted, auto_cpu))
    meter.advance(WORK["load"])
    for name, description, run in EXPORT_FORMATS:
        if name in wanted and not (name == "onnx-int8" and auto_cpu):
            say(f"{description} ...")
            run(ctx)
            meter.advance({"onnx": WORK["onnx"], "onnx-fp16": WORK["fp16"] * len(ctx.modules)}.get(name, 0.0))
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
    if auto_cpu:
        choose_auto_precision(ctx, manifest)
    tolerance = spec.tolerance_mm if spec.tolerance_mm is not None else gate_tolerance_mm(ctx.plan, DEFAULT_TOLERANCE_MM)
    pairs = _gate_pairs(ctx)
    backend = manifest.tensorrt_flavour if "tensorrt" in wanted else "onnxruntime"  # falls back, with a notice
    if ctx.gated and ctx.gated[0] == ctx.plan:  # auto chose the plan it has just gated
        report = ctx.gated[1]
    else:
        say(f"precision gate on {len(pairs)} calibration pairs ...")
        with DepthPipeline(manifest, backend=backend) as candidate, \
                DepthPipeline(manifest, backend="onnxruntime", precision="fp32") as reference:
            report = run_gate(candidate, reference, pairs, tolerance,
                              progress=lambda: meter.advance(_runs(list(ctx.modules)) + _runs(list(ctx.modules), ctx.plan)))
    auto = {"auto": ctx.auto} if ctx.auto else {}
    report.calibration = {**ctx.calibration, "stage_precision": dict(ctx.plan), **auto}
    report.record(manifest, out, onnx_vs_torch_max_rel={s: max(e.values()) for s, e in ctx.onnx_errors.items()},
                  stage_precision=dict(ctx.plan), **auto)
    manifest.fingerprint = spec.fingerprint()
    manifest.export_seconds.update({k: round(v, 3) for k, v in ctx.seconds.items()})  # auto's calibration too
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
