"""The precision gate: an exported model (ONNX Runtime or TensorRT, any precision) against the FP32
reference (the FP32 graphs in ONNX Runtime, which match PyTorch to 1e-4) on calibration pairs.

Reported per output (encoder levels, adapter outputs, depth): max and mean relative error and NaN/Inf
counts; for the final depth: RMSE of the difference to the reference (drift, mm), and each model's depth
RMSE against ground truth with their difference (mm). The gate refuses:
- any NaN/Inf (the depth's counted by the pipeline, FrameResult.nonfinite: it returns them as 0 = no depth);
- a depth RMSE that moves by more than the tolerance (default 5 mm for FP16, 10 mm for INT8), measured against ground
  truth when the calibration frames have it, against the reference's depth otherwise;
- a depth that drifts from the reference's by more than DRIFT_FACTOR x the tolerance (RMSE of the
  difference), so a wrong graph that happens to score the same against ground truth is refused too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from smoothdino.core.errors import UserError
from smoothdino.edge.metrics import valid_mask
from smoothdino.edge.pipeline import DepthPipeline, FrameResult
from smoothdino.core.files import atomic_write_text

from .frames import CalibrationPair

DEFAULT_TOLERANCE_MM = {"fp32": 1.0, "fp16": 5.0, "int8": 10.0}  # a mixed export: its loosest stage
DRIFT_FACTOR = 4.0


class GateError(UserError):
    """The candidate drifted past the tolerance or produced NaN/Inf."""


@dataclass
class GateReport:
    candidate: str
    reference: str
    frames: int
    tolerance_mm: float
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    depth: dict[str, float] = field(default_factory=dict)
    passed: bool = False
    reasons: list[str] = field(default_factory=list)
    # INT8: the frames the scales were calibrated on (never among the gate's `frames`), method and stage plan
    calibration: dict = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=1, allow_nan=True) + "\n")
        return Path(path)

    def summary_line(self) -> str:
        d = self.depth
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.reasons)
        change = f"RMSE change {d['rmse_delta_mm']:.2f} mm" if "rmse_delta_mm" in d else \
            f"stopped after {self.frames} of {d['pairs_planned']} pairs"
        return (f"gate {verdict} - {self.frames} frames, depth drift {d['rmse_vs_reference_mm']:.2f} mm RMSE, "
                f"{change} (tolerance {self.tolerance_mm} mm), "
                f"NaN/Inf {int(sum(o['nan_inf'] for o in self.outputs.values()))}")

    def record(self, manifest, folder: Path, **extra) -> None:
        """The one way a verdict is kept: gate.json beside the graphs, and its figures in manifest.gate (which
        `process`, `bench` and `info` read); `extra` adds export-time figures (ONNX vs PyTorch errors)."""
        self.save(Path(folder) / "gate.json")
        manifest.gate = {**self.depth, "passed": self.passed, "reasons": self.reasons, "frames": self.frames,
                         "tolerance_mm": self.tolerance_mm, "measured_on": self.candidate, **extra}


def _run_pair(pipeline: DepthPipeline, pair: CalibrationPair) -> FrameResult:
    pipeline.reset()
    pipeline.prime(pair.previous)  # frame t-1 becomes the previous frame, as in a stream
    return pipeline.step(pair.current)


@dataclass
class RecordedRun:
    """A pipeline's results on the gate's pairs, kept (outputs included): the FP32 reference run once and used by
    every gate of an export (`--precision auto`: the INT8 plan's, then the FP32 plan's if that one fails)."""
    description: str
    precision: str
    results: list[FrameResult]
    pairs: list[tuple[str, str]]  # the frames of each pair: a recording answers only for these

    def result(self, i: int, pair: CalibrationPair) -> FrameResult:
        if self.pairs[i] != pair.frames:
            raise ValueError(f"recorded run of pair {self.pairs[i]} asked for {pair.frames}")
        return self.results[i]


def record_run(pipeline: DepthPipeline, pairs: list[CalibrationPair], progress=None) -> RecordedRun:
    """Run `pipeline` on the pairs as the gate does, keeping every result. `progress()` after each pair."""
    pipeline.keep_outputs = True
    results = []
    for pair in pairs:
        result = _run_pair(pipeline, pair)
        # own copies: an array that views an engine's buffer would keep the engine's whole memory arena alive
        result.outputs = {k: np.array(v, copy=True) for k, v in result.outputs.items()}
        result.depth = np.array(result.depth, copy=True)
        results.append(result)
        if progress:
            progress()
    return RecordedRun(pipeline.description, pipeline.precision, results, [p.frames for p in pairs])


def _result(run: DepthPipeline | RecordedRun, i: int, pair: CalibrationPair) -> FrameResult:
    return run.result(i, pair) if isinstance(run, RecordedRun) else _run_pair(run, pair)


def run_gate(candidate: DepthPipeline | RecordedRun, reference: DepthPipeline | RecordedRun,
             pairs: list[CalibrationPair], tolerance_mm: float, progress=None,
             stop_when_certain: bool = False) -> GateReport:
    """`candidate` against `reference` on the pairs; either may be a `RecordedRun` of those pairs (not run again).
    `progress()` after each pair. `stop_when_certain`: stop at the first pair after which the verdict can only be a
    refusal whatever the other pairs give (`_certain_failure`); the report then has the pairs run (`frames`) and
    only the certain reasons. `--precision auto` uses it: a refused INT8 plan falls back to FP32 anyway."""
    if not pairs:
        raise UserError("precision gate: no calibration frames could be read")
    same_size = len({pair.current.shape[:2] for pair in pairs}) == 1  # the drift's pixel count is known ahead
    for run in (candidate, reference):
        if not isinstance(run, RecordedRun):
            run.keep_outputs = True
    errors: dict[str, dict[str, list[float]]] = {}
    sq_drift, max_abs, n_pixels = 0.0, 0.0, 0
    sq_cand_gt, sq_ref_gt, n_gt = 0.0, 0.0, 0
    reference_finite = True
    itself = candidate.description == reference.description  # the same graphs: run once, test finiteness
    for i, pair in enumerate(pairs):
        got_frame = _result(candidate, i, pair)
        want_frame = got_frame if itself else _result(reference, i, pair)
        if progress:
            progress()
        got, want = got_frame.outputs, want_frame.outputs
        reference_finite &= want_frame.nonfinite == 0
        for name, ref in want.items():
            out = got[name].astype(np.float64)
            ref = ref.astype(np.float64)
            reference_finite &= bool(np.isfinite(ref).all())
            e = errors.setdefault(name, {"max_rel": [], "mean_rel": [], "nan_inf": []})
            finite = np.isfinite(out)
            # the pipeline has already replaced NaN/Inf depth with 0 (no depth): it counted them in `nonfinite`
            e["nan_inf"].append(float(got_frame.nonfinite if name == "depth" else (~finite).sum()))
            diff = np.abs(np.where(finite, out, 0.0) - ref)
            e["max_rel"].append(float(diff.max() / max(np.abs(ref).max(), 1e-12)))
            e["mean_rel"].append(float(diff.mean() / max(np.abs(ref).mean(), 1e-12)))
        d_cand, d_ref = np.nan_to_num(got["depth"].astype(np.float64)), want["depth"].astype(np.float64)
        sq_drift += float(((d_cand - d_ref) ** 2).sum())
        max_abs = max(max_abs, float(np.abs(d_cand - d_ref).max()))
        n_pixels += d_ref.size
        if pair.depth_gt is not None:
            mask = valid_mask(pair.depth_gt)
            sq_cand_gt += float(((d_cand - pair.depth_gt) ** 2)[mask].sum())
            sq_ref_gt += float(((d_ref - pair.depth_gt) ** 2)[mask].sum())
            n_gt += int(mask.sum())
        if stop_when_certain and not itself and i + 1 < len(pairs):
            nan_inf = sum(sum(e["nan_inf"]) for e in errors.values())
            certain = _certain_failure(nan_inf, sq_drift, d_ref.size * len(pairs) if same_size else None,
                                       tolerance_mm, i + 1, len(pairs))
            if certain:
                return _stopped_report(candidate, reference, i + 1, len(pairs), tolerance_mm, errors,
                                       1000.0 * np.sqrt(sq_drift / n_pixels), 1000.0 * max_abs, certain)
    report = GateReport(candidate.description, reference.description, len(pairs), tolerance_mm,
                        outputs=_output_errors(errors))
    drift = 1000.0 * np.sqrt(sq_drift / n_pixels)
    report.depth = {"rmse_vs_reference_mm": drift, "max_abs_diff_mm": 1000.0 * max_abs}
    if n_gt:
        rc, rr = 1000.0 * np.sqrt(sq_cand_gt / n_gt), 1000.0 * np.sqrt(sq_ref_gt / n_gt)
        report.depth.update(rmse_candidate_vs_gt_mm=rc, rmse_reference_vs_gt_mm=rr, rmse_delta_mm=abs(rc - rr),
                            measured_against="ground truth")
    else:
        report.depth.update(rmse_delta_mm=drift, measured_against="reference depth (no ground truth)")
    nan_inf = sum(o["nan_inf"] for o in report.outputs.values())
    if nan_inf:
        report.reasons.append(f"{int(nan_inf)} NaN/Inf values")
    if not all(np.isfinite(v) for v in report.depth.values() if isinstance(v, float)) or not reference_finite:
        report.reasons.append("the FP32 reference itself is not finite (broken weights?)")
    if itself:
        report.depth["note"] = "candidate is the FP32 reference itself (fp32 on ONNX Runtime): only finiteness is tested"
    if report.depth["rmse_delta_mm"] > tolerance_mm:
        report.reasons.append(f"depth RMSE moved {report.depth['rmse_delta_mm']:.2f} mm > {tolerance_mm} mm")
    if drift > DRIFT_FACTOR * tolerance_mm:
        report.reasons.append(f"depth drifted {drift:.2f} mm RMSE from the reference > {DRIFT_FACTOR * tolerance_mm} mm")
    report.passed = not report.reasons
    return report


def _output_errors(errors: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Per output, over the pairs run: the largest max relative error, the mean of the mean ones, NaN/Inf count."""
    return {name: {"max_rel": max(e["max_rel"]), "mean_rel": float(np.mean(e["mean_rel"])), "nan_inf": sum(e["nan_inf"])}
            for name, e in errors.items()}


def _certain_failure(nan_inf: float, sq_drift: float, n_total: int | None, tolerance_mm: float,
                     done: int, planned: int) -> list[str]:
    """The reasons the gate will refuse whatever the pairs not yet run give (none: not certain yet).
    - a NaN/Inf already counted stays counted;
    - the drift over all pairs is sqrt(sum of squares / every pair's pixels): the pairs to come only add squares,
      so sqrt(the sum so far / every pair's pixels) is a lower bound of it (known when all pairs have one size).
    The RMSE-against-ground-truth criterion is a difference of two RMSEs, which more pairs can move either way:
    it never ends a gate early."""
    reasons = []
    if nan_inf:
        reasons.append(f"{int(nan_inf)} NaN/Inf values in the first {done} of {planned} pairs")
    if n_total:
        bound = 1000.0 * np.sqrt(sq_drift / n_total)
        if bound > DRIFT_FACTOR * tolerance_mm:
            reasons.append(f"depth drifts at least {bound:.2f} mm RMSE from the reference over the {planned} pairs "
                           f"(certain after {done}) > {DRIFT_FACTOR * tolerance_mm} mm")
    return reasons


def _stopped_report(candidate, reference, done: int, planned: int, tolerance_mm: float, errors: dict,
                    drift_mm: float, max_abs_mm: float, reasons: list[str]) -> GateReport:
    """A gate stopped at a certain refusal: the figures of the pairs run, and the certain reasons only."""
    report = GateReport(candidate.description, reference.description, done, tolerance_mm,
                        outputs=_output_errors(errors), reasons=reasons)
    report.depth = {"rmse_vs_reference_mm": drift_mm, "max_abs_diff_mm": max_abs_mm,
                    "stopped_after_pairs": done, "pairs_planned": planned,
                    "measured_against": f"stopped after {done} of {planned} pairs: the refusal was certain"}
    return report
