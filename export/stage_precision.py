"""Per-stage precision: which graph (fp32, fp16, int8) each stage of an export runs. Torch-free.

    fp32 | fp16                     every stage in that precision
    int8                            the decoder in INT8 (explicit Q/DQ), the encoder and adapter in the
                                    fastest precision that is gated for the target (INT8_PLAN below)
    encoder=fp32,decoder=int8       stage by stage; stages not named are fp32
    int8,encoder=fp32               a whole-model word, then overrides
    auto                            the fastest gated plan: on a GPU the fp16 plan (FP16 graphs are for
                                    GPUs); on the CPU, per stage, int8 where its graph clearly beats fp32's
                                    on this machine, then that plan gated, fp32 if it fails (`export_plan`,
                                    `choose_auto_plan`, export.exporter.choose_auto_precision)

ExportSpec.precision stays this text; `parse_precision` turns it into {stage: precision} and
`precision_text` writes a plan back in its shortest form (the manifest's `precision`).

Why INT8_PLAN is what it is (ONNX Runtime CPU, 2 threads, 480x640, random weights; benchmarks/int8_speed.py):
- decoder: INT8 Q/DQ Conv/MatMul is several times faster than FP32 (the DPT fusion convolutions dominate);
- encoder: only the weight MatMuls (qkv, proj, mlp fc1/fc2) are quantized; the activation-by-activation
  attention products stay float (quantizing them was slower than FP32); see CPU_ENCODER below;
- adapter: tiny (a few % of a frame); INT8 changes nothing measurable, so it stays FP32 on the CPU.
On a GPU (TensorRT, strongly typed) FP16 is the gated fast precision for the encoder and adapter.
"""

from __future__ import annotations

import time
from pathlib import Path

from smoothdino.core.errors import UserError
from smoothdino.edge.engines.graph_io import STAGES  # the one stage list

PRECISIONS = ("fp32", "fp16", "int8")
AUTO = "auto"
TARGETS = ("cpu", "gpu")

# The encoder on the CPU: INT8 (weight MatMuls only) measured faster than FP32 -> int8. Set from
# benchmarks/int8_speed.py; change it here (one place) if a new measurement says otherwise.
CPU_ENCODER = "int8"
INT8_PLAN = {
    "cpu": {"encoder": CPU_ENCODER, "adapter": "fp32", "decoder": "int8"},
    "gpu": {"encoder": "fp16", "adapter": "fp16", "decoder": "int8"},
}


def parse_precision(text: str, stages: tuple[str, ...] | list[str] = STAGES, target: str = "cpu") -> dict[str, str]:
    """'int8' | 'fp16' | 'encoder=fp32,decoder=int8' | 'int8,encoder=fp32' -> {stage: precision} for `stages`."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: one of {', '.join(TARGETS)}")
    words = [w.strip().lower() for w in str(text).split(",") if w.strip()]
    if not words:
        raise UserError("--precision: empty; choose fp32, fp16, int8 or stage=precision pairs (encoder=fp32,decoder=int8)")
    plan = {stage: "fp32" for stage in stages}
    for i, word in enumerate(words):
        if "=" not in word:
            if i != 0:
                raise UserError(f"--precision {text!r}: a whole-model precision ({word}) must come first")
            _check(word, text)
            plan = {stage: INT8_PLAN[target].get(stage, "int8") if word == "int8" else word for stage in stages}
            continue
        stage, precision = (p.strip() for p in word.split("=", 1))
        if stage not in STAGES:
            raise UserError(f"--precision {text!r}: unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        _check(precision, text)
        if stage in plan:  # naming a stage the model lacks (adapter of a paper export) is harmless
            plan[stage] = precision
    return plan


def _check(precision: str, text: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"--precision {text!r}: {precision!r} is not one of {', '.join(PRECISIONS)} "
                        "(or auto, or stage=precision pairs such as encoder=fp32,decoder=int8)")


def precision_text(plan: dict[str, str]) -> str:
    """The shortest text for a plan: 'int8' when every stage is int8, else 'encoder=..,adapter=..,decoder=..'."""
    values = set(plan.values())
    if len(values) == 1:
        return values.pop()
    return ",".join(f"{s}={plan[s]}" for s in STAGES if s in plan)


def precisions_needed(plan: dict[str, str]) -> set[str]:
    """The graph precisions an export must write (fp32 always: it is the reference and the INT8 source)."""
    return {"fp32", *plan.values()}


def gate_tolerance_mm(plan: dict[str, str], defaults: dict[str, float]) -> float:
    """A mixed export is held to the loosest tolerance of its stages' precisions (int8 10 mm, fp16 5 mm)."""
    return max(defaults[p] for p in plan.values())


INT8_MIN_GAIN = 0.05  # int8 must save this share of fp32's time: a gain within timing noise is not worth its error
AUTO_TIMING_REPEATS = 2  # auto's speed probe: best of this many runs in turns after a warm-up (decoder-sized runs)
# auto calibrates its INT8 stages on this many pairs (at most --calibration-frames), held out from the gate's pairs,
# which stay --calibration-frames: the gate judges every plan on all of them. Measured: benchmarks/export_cost.py.
AUTO_CALIBRATION_PAIRS = 2


def fastest(timings: dict[str, float]) -> str:
    """`auto` on the CPU: a stage's fastest precision (`timings`: {precision: ms}, fp32 among them); another precision
    beats fp32 only by saving more than INT8_MIN_GAIN of its time."""
    clearly = {p: t for p, t in timings.items() if p == "fp32" or t < (1 - INT8_MIN_GAIN) * timings["fp32"]}
    return min(clearly, key=clearly.get)


# -- auto --------------------------------------------------------------------------------------------

def is_auto(text: str) -> bool:
    return str(text).strip().lower() == AUTO


def export_plan(text: str, stages: tuple[str, ...] | list[str] = STAGES, target: str = "cpu") -> dict[str, str]:
    """The plan an export builds graphs for. `auto` on a GPU is the fp16 plan, decided here, before the export;
    on the CPU it is the int8 plan, whose graphs are timed against the fp32 graphs (always written) once both
    exist; `choose_auto_plan` then picks per stage and the pick is gated."""
    if not is_auto(text):
        return parse_precision(text, stages, target)
    return parse_precision("fp16" if target == "gpu" else "int8", stages, target)


def choose_auto_plan(timings: dict[str, dict[str, float]]) -> dict[str, str]:
    """`auto` on the CPU: each stage's `fastest` precision, the plan then gated (export.exporter.choose_auto_precision).
    `timings` is {stage: {precision: ms}} of the graphs the stage has."""
    return {stage: fastest(ms) for stage, ms in timings.items()}


def time_stage_graphs(graphs: dict[str, dict[str, Path]], feeds: dict[str, list[dict]], repeats: int = 3,
                      threads: int | None = None, progress=None) -> dict[str, dict[str, float]]:
    """{stage: {precision: ms}}: a stage's graphs in ONNX Runtime (CPU, the same threads for all) on the stage's
    feeds, each warmed up once, then run in turns (fp32, int8, fp32, int8, ...: a load that comes and goes weighs
    on both alike), best of `repeats`; the best run is the least disturbed by other processes. `progress(stage,
    precision)` after each timed or warm-up run."""
    from smoothdino.edge.engines.onnxruntime_engine import OnnxRuntimeEngine

    timings: dict[str, dict[str, float]] = {}
    for stage, paths in graphs.items():
        engines = {p: OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"], threads=threads)
                   for p, path in paths.items()}
        try:
            runs: dict[str, list[float]] = {p: [] for p in engines}
            for turn in range(repeats + 1):  # turn 0: warm-up (allocations and first-run kernel choices)
                for precision, engine in engines.items():
                    start = time.perf_counter()
                    for feed in feeds[stage]:
                        engine.run(feed)
                    if turn:
                        runs[precision].append((time.perf_counter() - start) * 1000.0 / len(feeds[stage]))
                    if progress:
                        progress(stage, precision)
        finally:
            for engine in engines.values():
                engine.close()
        timings[stage] = {p: round(min(r), 3) for p, r in runs.items()}
    return timings
