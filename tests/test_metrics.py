"""Depth metrics (edge/metrics.py) on hand-built arrays, against values worked out by hand in each test.

The ground truth holds pixels the masked metrics must skip (0, above 10 m, below 0.001 m) and the
prediction holds values outside the NYU range (20 m, -1 m) that the masked metrics clip to it first.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from smoothdino.edge.metrics import depth_metrics, summarize, temporal_error

GT = np.array([[0.0, 2.0, 0.9, 4.0],
               [1.0, 12.0, 0.0005, 0.5]], np.float32)
PRED = np.array([[3.0, 2.4, 0.6, 20.0],
                 [1.8, 5.0, 1.0, -1.0]], np.float32)
# Valid ground truth (0.001 < gt <= 10): 5 of 8 pixels. Their (prediction clipped to [0.001, 10], gt):
#   (2.4, 2.0)  err  0.4    |err|/gt 0.2     ratio 1.2    -> inside delta1, delta2, delta3
#   (0.6, 0.9)  err -0.3    |err|/gt 1/3     ratio 1.5    -> delta2, delta3 (1.25^2 = 1.5625)
#   (10., 4.0)  err  6.0    |err|/gt 1.5     ratio 2.5    -> none (1.25^3 = 1.953125)
#   (1.8, 1.0)  err  0.8    |err|/gt 0.8     ratio 1.8    -> delta3
#   (.001, 0.5) err -0.499  |err|/gt 0.998   ratio 500    -> none


def test_masked_metrics_match_hand_arithmetic():
    m = depth_metrics(PRED, GT)
    squares = 0.4 ** 2 + 0.3 ** 2 + 6.0 ** 2 + 0.8 ** 2 + 0.499 ** 2  # = 37.139001
    assert m["mse"] == pytest.approx(37.139001 / 5, rel=1e-6)
    assert m["mse"] == pytest.approx(squares / 5, rel=1e-6)
    assert m["rmse"] == pytest.approx(math.sqrt(37.139001 / 5), rel=1e-6)
    assert m["abs_rel"] == pytest.approx((0.2 + 1 / 3 + 1.5 + 0.8 + 0.998) / 5, rel=1e-6)
    log_ratios = [math.log10(1.2), math.log10(1.5), math.log10(2.5), math.log10(1.8), math.log10(500)]
    assert m["log10"] == pytest.approx(sum(log_ratios) / 5, rel=1e-6)
    assert (m["delta1"], m["delta2"], m["delta3"]) == pytest.approx((1 / 5, 2 / 5, 3 / 5))
    assert m["valid_fraction"] == pytest.approx(5 / 8)


def test_paper_mse_averages_every_pixel_unmasked():
    m = depth_metrics(PRED, GT)
    # all 8 pixels, raw values: (3-0)^2 (2.4-2)^2 (0.6-0.9)^2 (20-4)^2 (1.8-1)^2 (5-12)^2 (1-0.0005)^2 (-1-0.5)^2
    total = 9.0 + 0.16 + 0.09 + 256.0 + 0.64 + 49.0 + 0.99900025 + 2.25
    assert m["mse_paper"] == pytest.approx(total / 8, rel=1e-6)
    assert m["mse_paper"] != pytest.approx(m["mse"])  # the invalid pixels count here and not there


def test_invalid_pixels_do_not_change_masked_metrics():
    """Whatever the prediction says where the ground truth is invalid, the masked metrics stay the same."""
    other = PRED.copy()
    invalid = (GT <= 0.001) | (GT > 10)
    assert invalid.sum() == 3
    other[invalid] = 1000.0
    a, b = depth_metrics(PRED, GT), depth_metrics(other, GT)
    assert all(a[k] == b[k] for k in ("mse", "rmse", "abs_rel", "log10", "delta1", "delta2", "delta3"))
    assert b["mse_paper"] > a["mse_paper"]


def test_no_valid_pixel_gives_nan_not_an_error():
    gt = np.array([[0.0, 11.0], [0.0, 0.0]])
    m = depth_metrics(np.ones((2, 2)), gt)
    assert m["valid_fraction"] == 0.0
    assert all(math.isnan(m[k]) for k in ("mse", "rmse", "abs_rel", "log10", "delta1", "delta2", "delta3"))
    assert m["mse_paper"] == pytest.approx((1.0 + 100.0 + 1.0 + 1.0) / 4)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in size"):
        depth_metrics(np.ones((2, 3)), np.ones((3, 2)))


def test_temporal_error_on_pixels_valid_in_both_frames():
    gt = np.array([1.0, 2.0, 0.0, 3.0, 11.0])
    prev_gt = np.array([1.5, 0.0, 2.0, 3.0, 2.0])
    pred = np.array([1.2, 5.0, 5.0, 2.0, 7.0])
    prev_pred = np.array([1.0, 1.0, 1.0, 2.5, 1.0])
    # valid in both: index 0 and 3 (1: prev gt 0; 2: gt 0; 4: gt above 10 m)
    #   0: (1.2 - 1.0) - (1.0 - 1.5) = 0.2 + 0.5 = 0.7
    #   3: (2.0 - 2.5) - (3.0 - 3.0) = -0.5          -> |.| 0.5
    assert temporal_error(pred, prev_pred, gt, prev_gt) == pytest.approx((0.7 + 0.5) / 2)
    # a static scene predicted identically has no flicker
    assert temporal_error(pred, pred, gt, gt) == 0.0
    assert math.isnan(temporal_error(pred, prev_pred, np.zeros(5), prev_gt))


def test_summarize_skips_frames_without_ground_truth():
    rows = [{"mse": 1.0, "temporal": float("nan")}, {"mse": float("nan"), "temporal": 0.5}, {"mse": 3.0}]
    out = summarize(rows, keys=("mse", "temporal", "rmse"))
    assert out["mse"] == pytest.approx(2.0) and out["temporal"] == pytest.approx(0.5)
    assert math.isnan(out["rmse"])


def test_live_metrics_stay_flat_and_agree_with_the_recorded_path(tmp_path):
    """A live stream's MetricsSink keeps no rows (days of frames) yet reports what the recorded path reports."""
    import csv
    import json

    from smoothdino.edge.sinks import MetricsSink

    rng = np.random.default_rng(3)
    recorded = MetricsSink(tmp_path / "recorded", {})
    live = MetricsSink(tmp_path / "live", {}, keep_rows=False)
    gt = rng.uniform(0.5, 8.0, (12, 16)).astype(np.float32)
    for i in range(300):
        depth = gt + rng.normal(0, 0.2, gt.shape).astype(np.float32)
        timings = {"total": float(rng.uniform(0.01, 0.05)), "encoder": 0.01}
        extra = {"nonfinite_pixels": 3} if i == 7 else {}
        for sink in (recorded, live):
            sink.add(str(i), depth, gt, timings, **extra)
    assert live.rows == [] and len(recorded.rows) == 300
    a, b = recorded.summary(), live.summary()
    assert a.keys() == b.keys() and b["frames"] == 300
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-6), key
    live.write()
    with open(tmp_path / "live" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 and rows[7]["nonfinite_pixels"] == "3" and rows[8]["nonfinite_pixels"] == ""
    assert float(rows[5]["mse"]) == pytest.approx(recorded.rows[5]["mse"])
    payload = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert payload["frames_file"] == "metrics.csv" and payload["summary"]["frames"] == 300


def test_live_log_widens_for_a_column_a_later_row_adds_and_keeps_every_value(tmp_path):
    """A live stream's metrics.csv is appended row by row; a flag that first appears at a later frame (NaN depth at
    frame 5000, say) gets its own column, earlier rows keep theirs with an empty cell, nothing is dropped."""
    import csv

    from smoothdino.edge.sinks import MetricsSink

    sink = MetricsSink(tmp_path, {"source": "camera"}, keep_rows=False)
    depth = np.full((4, 6), 2.0, np.float32)
    sink.add("000000", depth, None, {"total": 0.010})
    sink.add("000001", depth, None, {"total": 0.020}, nonfinite_pixels=7)
    sink.add("000002", depth, None, {"total": 0.030}, scene_cut=True)
    sink.write()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["frame"] for r in rows] == ["000000", "000001", "000002"]
    assert [r["nonfinite_pixels"] for r in rows] == ["", "7", ""]
    assert [r["scene_cut"] for r in rows] == ["", "", "True"]
    assert [float(r["total_ms"]) for r in rows] == [10.0, 20.0, 30.0]
