"""Where depth goes: 16-bit PNGs, an MP4, a live window, metrics files. Every file is written atomically
(a temporary name, then os.replace), so an interrupted run never leaves a half-written output behind."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import RANDOM_WEIGHTS_BANNER, notice
from smoothdino.core.files import atomic_path, atomic_write_text  # noqa: F401  (re-exported)
from smoothdino.core.images import resize_depth

from .metrics import METRICS, depth_metrics, summarize, temporal_error

DISPLAY_RANGE = (0.0, 10.0)  # metres mapped onto the colour map: fixed, so colours mean the same everywhere


def to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (the NYUv2 convention, depth_scale 1000)."""
    return np.clip(np.round(np.asarray(depth, np.float64) * 1000.0), 0, 65535).astype(np.uint16)


def atomic_imwrite(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: OpenCV could not write it")


def _finite_or_none(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _finite_or_none(value.item())
    return value


def json_dumps(payload) -> str:
    """Strict JSON: NaN (a metric without ground truth) becomes null."""
    return json.dumps(_finite_or_none(payload), indent=1, allow_nan=False) + "\n"


class DepthPngSink:
    """<folder>/<frame name>.png, uint16 millimetres, the input frame's size."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.png"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def read(self, name: str) -> np.ndarray | None:
        """The written depth in metres; None if missing or unreadable."""
        path = self.path(name)
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
        return None if raw is None or raw.dtype != np.uint16 else raw.astype(np.float32) / 1000.0

    def write(self, name: str, depth: np.ndarray) -> None:
        atomic_imwrite(self.path(name), to_millimetres(depth))


def colorize(depth: np.ndarray) -> np.ndarray:
    """Metres -> BGR, near = warm (TURBO reversed)."""
    lo, hi = DISPLAY_RANGE
    scaled = np.clip((np.asarray(depth, np.float32) - lo) / (hi - lo), 0, 1)
    return cv2.applyColorMap(((1.0 - scaled) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)


def side_by_side(rgb: np.ndarray, depth: np.ndarray, lines: list[str], random_weights: bool = False) -> np.ndarray:
    """BGR canvas: the frame on the left, coloured depth on the right, text overlaid."""
    depth_bgr = colorize(depth)
    if depth_bgr.shape[:2] != rgb.shape[:2]:
        depth_bgr = cv2.resize(depth_bgr, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    canvas = np.concatenate([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), depth_bgr], axis=1)
    scale = max(0.4, rgb.shape[0] / 800)
    if random_weights:
        lines = ["RANDOM WEIGHTS - not metric"] + lines
    (_, text_h), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    step = int(text_h * 1.8) + 2
    if lines:  # a dark band keeps the text readable on any frame
        band = canvas[: step * len(lines) + 6, : canvas.shape[1] // 2]
        band[:] = (band * 0.45).astype(np.uint8)
    for i, text in enumerate(lines):
        y = step * (i + 1)
        color = (60, 60, 255) if text.startswith("RANDOM") else (255, 255, 255)
        cv2.putText(canvas, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return canvas


class VideoSink:
    """MP4 (mp4v) of side-by-side frames; written under a temporary name and renamed on close."""

    def __init__(self, path: Path, fps: float = 10.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.fps = fps
        self.writer = None
        self.frames = 0

    def write(self, canvas: np.ndarray) -> None:
        if self.writer is None:
            h, w = canvas.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                notice(f"{self.path}: OpenCV cannot write MP4 here; no video")
                self.writer = False
        if self.writer:
            self.writer.write(canvas)
            self.frames += 1

    def close(self) -> None:
        if self.writer:
            self.writer.release()
            if self.frames:
                os.replace(self.tmp, self.path)
        self.writer = None


class WindowSink:
    """A live window. Headless OpenCV builds (and machines without a display) get a notice, not an error."""

    def __init__(self, title: str = "smoothdino"):
        self.title = title
        self.enabled = True
        self.quit = False

    def show(self, canvas: np.ndarray) -> None:
        if not self.enabled:
            return
        try:
            cv2.imshow(self.title, canvas)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                self.quit = True
        except cv2.error:
            notice("no display available (headless OpenCV or no $DISPLAY); continuing without a window")
            self.enabled = False

    def close(self) -> None:
        if self.enabled:
            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass


class MetricsSink:
    """Per-frame metrics against ground truth (when the source has it) and latency, into metrics.csv and
    metrics.json. Metrics use the depth as written to the PNGs (millimetre steps), so anyone can
    recompute them from the files."""

    def __init__(self, folder: Path, run_info: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run_info = dict(run_info)
        self.rows: list[dict] = []
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, name: str, depth: np.ndarray, gt: np.ndarray | None, timings: dict | None = None, **extra) -> dict:
        depth = to_millimetres(depth).astype(np.float32) / 1000.0
        row = {"frame": name}
        if gt is not None:
            gt = resize_depth(gt, depth.shape, ground_truth=True)
            row.update(depth_metrics(depth, gt))
            row["temporal"] = temporal_error(depth, self._prev[0], gt, self._prev[1]) if self._prev else float("nan")
            self._prev = (depth, gt)
        else:
            self._prev = None
        if timings:
            row.update({f"{k}_ms": v * 1000.0 for k, v in timings.items()})
        row.update(extra)
        self.rows.append(row)
        return row

    def reset_sequence(self) -> None:
        self._prev = None

    def summary(self) -> dict:
        out = summarize(self.rows) if any("mse" in r for r in self.rows) else {}
        latency = [r["total_ms"] for r in self.rows if r.get("total_ms")]
        if latency:
            out["latency_p50_ms"] = float(np.percentile(latency, 50))
            out["latency_p95_ms"] = float(np.percentile(latency, 95))
            out["fps"] = float(1000.0 / np.mean(latency))
        out["frames"] = len(self.rows)
        return out

    def write(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.folder / "metrics.csv", buffer.getvalue())
        info = dict(self.run_info)
        if info.get("random_weights"):
            info["warning"] = RANDOM_WEIGHTS_BANNER
        payload = {"run": info, "summary": self.summary(), "metric_names": list(METRICS) + ["temporal"], "frames": self.rows}
        atomic_write_text(self.folder / "metrics.json", json_dumps(payload))
