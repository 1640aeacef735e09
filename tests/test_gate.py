"""The precision gate's early stop (`run_gate(..., stop_when_certain=True)`, what `--precision auto` uses for its
INT8 plan): it stops only where the full gate's refusal is already certain, so it never changes a verdict.

Recorded runs with known depths stand in for the pipelines: the drift of a candidate off by a constant is that
constant, so where the bound crosses the limit is known analytically."""

from __future__ import annotations

import numpy as np
import pytest

from smoothdino.calibration import run_gate
from smoothdino.calibration.frames import CalibrationPair
from smoothdino.calibration.gate import DRIFT_FACTOR, RecordedRun
from smoothdino.edge.pipeline import FrameResult

SIZE = (6, 8)
TOLERANCE_MM = 10.0  # the drift limit is DRIFT_FACTOR x this: 40 mm


def _pairs(n: int, sizes=None) -> list[CalibrationPair]:
    sizes = sizes or [SIZE] * n
    return [CalibrationPair(f"s/{2 * i + 1}", np.zeros((*s, 3), np.uint8), np.zeros((*s, 3), np.uint8), None,
                            (f"s/{2 * i}", f"s/{2 * i + 1}")) for i, s in enumerate(sizes)]


def _run(name: str, depths: list[np.ndarray], pairs, levels: list[np.ndarray] | None = None) -> RecordedRun:
    """A recorded run with these depths (and an encoder level per pair, where given)."""
    results = [FrameResult(depth=d, shift=None, scene_cut=False, timings={}, outputs={"depth": d}) for d in depths]
    for result, level in zip(results, levels or []):
        result.outputs["level"] = level
    return RecordedRun(name, name, results, [p.frames for p in pairs])


def _gates(offsets_m: list[float], sizes=None):
    """The full gate and the stopping one of a candidate off the reference by offsets_m[i] metres on pair i."""
    pairs = _pairs(len(offsets_m), sizes)
    reference = [np.full(p.current.shape[:2], 2.0, np.float32) for p in pairs]
    candidate = _run("int8", [r + np.float32(o) for r, o in zip(reference, offsets_m)], pairs)
    reference = _run("fp32", reference, pairs)
    return run_gate(candidate, reference, pairs, TOLERANCE_MM), \
        run_gate(candidate, reference, pairs, TOLERANCE_MM, stop_when_certain=True)


def test_a_constant_drift_stops_at_the_first_pair_where_the_bound_crosses_the_limit():
    # 100 mm on each of 8 pairs: after k pairs the drift over all 8 is at least 100 * sqrt(k / 8) mm, over 40 mm
    # from k = 2 on (35.4 mm after 1)
    full, stopped = _gates([0.1] * 8)
    assert not full.passed and full.frames == 8 and full.depth["rmse_vs_reference_mm"] == pytest.approx(100.0, rel=1e-4)
    assert not stopped.passed and stopped.frames == 2 and stopped.depth["pairs_planned"] == 8
    limit = DRIFT_FACTOR * TOLERANCE_MM
    k = next(k for k in range(1, 9) if 100.0 * np.sqrt(k / 8) > limit)
    assert stopped.frames == k
    assert stopped.reasons == [f"depth drifts at least {100.0 * np.sqrt(k / 8):.2f} mm RMSE from the reference over "
                               f"the 8 pairs (certain after {k}) > {limit} mm"]
    assert "stopped after 2 of 8 pairs" in stopped.summary_line()


@pytest.mark.parametrize("offsets_mm", [
    [41.0] * 8,  # fails on the drift, but only the whole run shows it (38.4 mm after 7 pairs): never stops
    [39.0] * 8,  # drift 39 < 40 mm, but the RMSE change (no ground truth: the drift) 39 > 10 mm: fails, never stops
    [0.0] * 7 + [200.0],  # the last pair decides: nothing to stop before it
    [120.0] + [0.0] * 7,  # the first pair alone makes it certain: 120 / sqrt(8) = 42.4 mm
    [5.0] * 8,  # passes
])
def test_stopping_never_changes_a_verdict(offsets_mm):
    full, stopped = _gates([o / 1000.0 for o in offsets_mm])
    assert stopped.passed == full.passed
    if stopped.frames < full.frames:  # stopped: its reasons are certain ones, the full gate has them too
        assert not full.passed and any("drifted" in r for r in full.reasons)


def test_a_nan_stops_the_gate_at_once_and_pairs_of_several_sizes_never_stop_on_the_drift():
    pairs = _pairs(4)
    reference = [np.full(SIZE, 2.0, np.float32) for _ in pairs]
    levels = [np.ones((2, 3), np.float32) for _ in pairs]
    broken = [lv.copy() for lv in levels]
    broken[1][0, 0] = np.nan  # an encoder level of pair 2: its depth may be right, the gate refuses anyway
    stopped = run_gate(_run("int8", reference, pairs, broken), _run("fp32", reference, pairs, levels), pairs,
                       TOLERANCE_MM, stop_when_certain=True)
    assert not stopped.passed and stopped.frames == 2 and stopped.reasons == ["1 NaN/Inf values in the first 2 of 4 pairs"]
    # one pair of another size: the pixel count of the pairs to come is not known ahead, so no drift bound
    full, stopped = _gates([0.1] * 8, sizes=[SIZE] * 7 + [(4, 8)])
    assert stopped.frames == full.frames == 8 and not stopped.passed


def test_a_large_drift_on_one_pair_that_the_others_dilute_passes_both_ways():
    """Ground truth 2 m; on pair 1 the reference reads 2.03 m and the candidate 1.97 m (the same RMSE against ground
    truth, 60 mm apart), the other 7 pairs agree: the drift over the 8 pairs is 60 / sqrt(8) = 21.2 mm < 40 mm and
    the RMSE change is 0, so the gate passes. A bound over the pairs run so far (60 mm) would have refused it."""
    pairs = _pairs(8)
    for pair in pairs:
        pair.depth_gt = np.full(SIZE, 2.0, np.float32)
    reference = [np.full(SIZE, 2.0, np.float32) for _ in pairs]
    candidate = [r.copy() for r in reference]
    reference[0] += np.float32(0.03)
    candidate[0] -= np.float32(0.03)
    for stop in (False, True):
        report = run_gate(_run("int8", candidate, pairs), _run("fp32", reference, pairs), pairs, TOLERANCE_MM,
                          stop_when_certain=stop)
        assert report.passed and report.frames == 8, report.reasons
        assert report.depth["rmse_vs_reference_mm"] == pytest.approx(60.0 / np.sqrt(8), rel=1e-3)
