"""Depth metrics against ground truth, in numpy (the run-time has no torch).

- `mse_paper`: the SmoothDINOv2 paper's MSE: mean squared error over every pixel of the full map
  (metres^2), unmeasured pixels included, exactly as its evaluation code averages the whole tensor.
- Masked to valid ground truth (0.001 < gt <= 10 m, the NYU heads' range): MSE, RMSE, AbsRel, log10,
  delta1/2/3 (fraction with max(pred/gt, gt/pred) < 1.25^k).
- Temporal stability between consecutive frames: mean |(pred_t - pred_t-1) - (gt_t - gt_t-1)| on pixels
  valid in both; lower means less flicker that the scene does not explain.
"""

from __future__ import annotations

import numpy as np
from smoothdino.core.images import NYU_DEPTH_RANGE

VALID_RANGE = NYU_DEPTH_RANGE
METRICS = ("mse_paper", "mse", "rmse", "abs_rel", "log10", "delta1", "delta2", "delta3")


def valid_mask(gt: np.ndarray) -> np.ndarray:
    return (gt > VALID_RANGE[0]) & (gt <= VALID_RANGE[1])


def depth_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    out = {"mse_paper": float(np.mean((pred - gt) ** 2))}
    mask = valid_mask(gt)
    out["valid_fraction"] = float(mask.mean())
    if not mask.any():
        out.update({k: float("nan") for k in METRICS[1:]})
        return out
    p, g = np.clip(pred[mask], *VALID_RANGE), gt[mask]
    err = p - g
    ratio = np.maximum(p / g, g / p)
    out.update(
        mse=float(np.mean(err ** 2)),
        rmse=float(np.sqrt(np.mean(err ** 2))),
        abs_rel=float(np.mean(np.abs(err) / g)),
        log10=float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        delta1=float(np.mean(ratio < 1.25)),
        delta2=float(np.mean(ratio < 1.25 ** 2)),
        delta3=float(np.mean(ratio < 1.25 ** 3)),
    )
    return out


def temporal_error(pred: np.ndarray, prev_pred: np.ndarray, gt: np.ndarray, prev_gt: np.ndarray) -> float:
    both = valid_mask(gt) & valid_mask(prev_gt)
    if not both.any():
        return float("nan")
    dp = np.asarray(pred, np.float64) - np.asarray(prev_pred, np.float64)
    dg = np.asarray(gt, np.float64) - np.asarray(prev_gt, np.float64)
    return float(np.mean(np.abs(dp - dg)[both]))


def summarize(rows: list[dict[str, float]], keys=METRICS + ("temporal",)) -> dict[str, float]:
    """Mean of each metric over frames (NaN-aware: frames without ground truth do not count)."""
    out = {}
    for k in keys:
        values = np.array([r[k] for r in rows if k in r], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[k] = float(values.mean()) if values.size else float("nan")
    return out
