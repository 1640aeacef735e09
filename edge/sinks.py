"""Where depth goes: 16-bit PNGs, an MP4, a live window, metrics files. Every file is written atomically
(a temporary name, then os.replace), so an interrupted run never leaves a half-written output behind."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import RANDOM_WEIGHTS_BANNER, notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import DISK_FULL, DiskFull, atomic_path, atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported)
from smoothdino.core.images import resize_depth

from smoothdino.edge.machine.display import window_unavailable_reason
from .metrics import METRICS, depth_metrics, summarize, temporal_error

DISPLAY_RANGE = (0.0, 10.0)  # metres mapped onto the colour map: fixed, so colours mean the same everywhere


def to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (the NYUv2 convention, depth_scale 1000)."""
    return np.clip(np.round(np.asarray(depth, np.float64) * 1000.0), 0, 65535).astype(np.uint16)


def atomic_imwrite(path: Path, image: np.ndarray) -> None:
    """Encoded in memory, then written by Python: a full disk raises ENOSPC (one line), where cv2.imwrite
    would only return False."""
    ok, encoded = cv2.imencode(Path(path).suffix, image)
    if not ok:
        raise OSError(f"{path}: OpenCV cannot encode a {image.dtype} {image.shape} image as {Path(path).suffix}")
    atomic_write_bytes(path, encoded.tobytes())


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
    """MP4 (mp4v) of side-by-side frames, written under a temporary name (with the process id: two runs into one
    folder never share it) and renamed into place only once it is whole. cv2.VideoWriter reports nothing when the
    disk fills up, so the finished file is opened again and its frames counted before it may take the final name;
    a short one is removed and named in one line. `discard()` drops the file (a run that failed)."""

    def __init__(self, path: Path, fps: float = 10.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
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
        writer, self.writer = self.writer, None
        if not writer:
            return
        writer.release()
        if not self.frames:
            self.tmp.unlink(missing_ok=True)
            return
        readable = video_frame_count(self.tmp)
        if readable != self.frames:
            self.tmp.unlink(missing_ok=True)
            raise DiskFull(self.path) if _disk_nearly_full(self.path.parent) else UserError(
                f"{self.path}: the video came out with {readable} of {self.frames} frames and was not kept; "
                "check the disk, or pass --no-video")
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        writer, self.writer = self.writer, None
        if writer:
            writer.release()
        self.tmp.unlink(missing_ok=True)


def video_frame_count(path: Path) -> int:
    """Frames a video file really holds, as a player would find them (0 if it does not open)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def _disk_nearly_full(folder: Path) -> bool:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize < (1 << 20)


class WindowSink:
    """The live window: the RGB | depth view, pixel for pixel. Keys: q or Esc quits, s saves a snapshot (RGB,
    16-bit depth in millimetres, colour depth) into `snapshots`; closing the window quits too. Where no window
    can open (headless OpenCV, no X server) the loop goes on without one, after a notice."""

    def __init__(self, title: str = "smoothdino", snapshots: Path = Path("snapshots"), random_weights: bool = False):
        self.title = title
        self.snapshots = Path(snapshots)
        self.random_weights = random_weights
        self.quit = False
        self.opened = False
        self.visible_when_open: float | None = None  # visibility read after the first frame; -1: cannot tell
        why = window_unavailable_reason()  # asked first: OpenCV's Qt build aborts the process without a display
        self.enabled = why is None
        if why:
            notice(f"no window: {why}; continuing without one (pass --headless to silence this)")

    def show(self, canvas: np.ndarray, rgb: np.ndarray | None = None, depth: np.ndarray | None = None,
             name: str = "frame") -> None:
        """Draw `canvas`; `rgb` (RGB uint8) and `depth` (metres) are what `s` saves."""
        if not self.enabled:
            return
        if self.opened and self._closed():
            self.quit = True  # closed with the mouse: the user ends the run as with q
            return
        try:
            if not self.opened:  # no Qt toolbar or status bar: the window shows the canvas and nothing else
                cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
                self.opened = True
            cv2.imshow(self.title, canvas)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            notice("no display available (headless OpenCV or no $DISPLAY); continuing without a window")
            self.enabled = False
            return
        if key in (ord("q"), 27):
            self.quit = True
        elif key == ord("s") and rgb is not None and depth is not None:
            self.save_snapshot(name, rgb, depth)

    def _closed(self) -> bool:
        """The window was closed since the last frame (Qt forgets it; GTK reports it invisible). Backends that
        cannot tell (visibility -1 while open) are never taken for closed."""
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            return True
        if self.visible_when_open is None:
            self.visible_when_open = visible
        return self.visible_when_open == 1 and visible < 1

    def save_snapshot(self, name: str, rgb: np.ndarray, depth: np.ndarray) -> list[Path]:
        """<snapshots>/<time>-<frame>_rgb.png, _depth_mm.png (uint16), _depth_color.png; a failure (a full disk)
        is one notice, never the end of a live run."""
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        images = {f"{stem}_rgb.png": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), f"{stem}_depth_mm.png": to_millimetres(depth),
                  f"{stem}_depth_color.png": colorize(depth)}
        paths = [self.snapshots / file_name for file_name in images]
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
            for path, image in zip(paths, images.values()):
                atomic_imwrite(path, image)
        except OSError as err:
            notice(f"snapshot not saved: {err}")
            return []
        notice("snapshot: " + ", ".join(str(p) for p in paths)
               + (" (random weights: the depth is not metric)" if self.random_weights else ""))
        return paths

    def close(self) -> None:
        if self.enabled and self.opened:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)  # lets the GUI thread actually take the window down
            except cv2.error:
                pass


def _csv_text(rows: list[dict], fields: list[str], header: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class MetricsSink:
    """Per-frame metrics against ground truth (when the source has it) and latency, into metrics.csv and
    metrics.json. Metrics use the depth as written to the PNGs (millimetre steps), so anyone can
    recompute them from the files.

    A recorded sequence keeps its rows and rewrites both files atomically at the end. A live stream
    (`keep_rows=False`) may run for days: each row is appended to metrics.csv as it comes (a log: at worst
    its last line is cut by a power loss), and the summary comes from running sums and the latencies of the
    last LATENCY_WINDOW frames, so memory stays flat however long it runs."""

    LATENCY_WINDOW = 100_000

    def __init__(self, folder: Path, run_info: dict, keep_rows: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run_info = dict(run_info)
        self.keep_rows = keep_rows
        self.rows: list[dict] = []
        self.frames = 0
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._latency = np.zeros(self.LATENCY_WINDOW if not keep_rows else 0, np.float32)
        self._log = None  # live: metrics.csv, open for appending (unbuffered)
        self._fields: list[str] = []
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
        if self.keep_rows:
            self.rows.append(row)
        else:
            self._append(row)
            self._accumulate(row)
        self.frames += 1
        return row

    def undo_last(self) -> None:
        """Take the last row back (its frame's other outputs failed): from memory, or cut from the live log."""
        self.frames -= 1
        if self.keep_rows:
            self.rows.pop()
        elif self._log is not None:
            self._log.truncate(self._row_start)

    def _accumulate(self, row: dict) -> None:
        for key in METRICS + ("temporal",):
            value = row.get(key)
            if value is not None and np.isfinite(value):
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
                self._counts[key] = self._counts.get(key, 0) + 1
        if row.get("total_ms"):
            self._latency[(self._counts.get("total_ms", 0)) % self.LATENCY_WINDOW] = row["total_ms"]
            self._counts["total_ms"] = self._counts.get("total_ms", 0) + 1

    def _append(self, row: dict) -> None:
        """One row onto the live log, in one unbuffered write; a row cut short by a full disk is cut back out."""
        new = [k for k in row if k not in self._fields]
        if new or self._log is None:  # a column no earlier row had (a NaN flag at frame 5000): widen, never drop
            self._widen(self._fields + new)
        data = _csv_text([row], self._fields).encode()
        self._row_start = self._log.tell()
        try:
            complete = self._log.write(data) == len(data)
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            complete = False
        if not complete:
            self._log.truncate(self._row_start)
            raise DiskFull(self.folder / "metrics.csv")

    def _widen(self, fields: list[str]) -> None:
        """metrics.csv again with `fields` as its header (rows so far copied, new cells empty), then opened for
        appending. Rare (the column set is small), so a days-long log is copied a handful of times at most."""
        path = self.folder / "metrics.csv"
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=fields, restval="")
            writer.writeheader()
            if self._log is not None:  # streamed row by row: the log may be large
                self._log.close()
                with open(path, newline="") as f:
                    writer.writerows(csv.DictReader(f))
        self._fields = fields
        self._log = open(path, "ab", buffering=0)

    def reset_sequence(self) -> None:
        self._prev = None

    def _latencies(self) -> np.ndarray:
        if self.keep_rows:
            return np.array([r["total_ms"] for r in self.rows if r.get("total_ms")], np.float64)
        return self._latency[: min(self._counts.get("total_ms", 0), self.LATENCY_WINDOW)].astype(np.float64)

    def summary(self) -> dict:
        if self.keep_rows:
            out = summarize(self.rows) if any("mse" in r for r in self.rows) else {}
        else:
            out = {k: self._sums[k] / self._counts[k] for k in self._sums} if "mse" in self._sums else {}
        latency = self._latencies()
        if latency.size:
            out["latency_p50_ms"] = float(np.percentile(latency, 50))
            out["latency_p95_ms"] = float(np.percentile(latency, 95))
            out["fps"] = float(1000.0 / np.mean(latency))
        out["frames"] = self.frames
        return out

    def write(self) -> None:
        info = dict(self.run_info)
        if info.get("random_weights"):
            info["warning"] = RANDOM_WEIGHTS_BANNER
        payload = {"run": info, "summary": self.summary(), "metric_names": list(METRICS) + ["temporal"]}
        if self.keep_rows:
            keys: list[str] = []
            for row in self.rows:
                keys += [k for k in row if k not in keys]
            atomic_write_text(self.folder / "metrics.csv", _csv_text(self.rows, keys, header=True))
            payload["frames"] = self.rows
        else:
            if self._log is not None:
                self._log.close()
                self._log = None
            payload["frames_file"] = "metrics.csv"  # one row per frame, appended as the stream ran
        atomic_write_text(self.folder / "metrics.json", json_dumps(payload))
