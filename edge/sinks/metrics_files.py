"""metrics.json and metrics.csv: per-frame depth metrics against ground truth and latency, strict JSON (NaN -> null)."""

from __future__ import annotations

import csv
import io
import json
from collections import deque
from pathlib import Path

import numpy as np
from smoothdino.core.console import RANDOM_WEIGHTS_BANNER
from smoothdino.core.files import (
    DISK_FULL,
    DiskFull,
    atomic_path,
    atomic_write_text,
)
from smoothdino.core.images import resize_depth
from smoothdino.edge.metrics import METRICS, depth_metrics, summarize, temporal_error

from .png import as_written


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and bool(np.isfinite(value))


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
        self._before: tuple | None = None  # what the last add changed, as it was (undo_last)
        self._flickers: deque[tuple[float, float]] = deque(maxlen=self.LATENCY_WINDOW)  # live: the last frames'
        self._flicker_added = False

    def add(self, name: str, depth: np.ndarray, gt: np.ndarray | None, timings: dict | None = None, **extra) -> dict:
        slot = self._counts.get("total_ms", 0) % self.LATENCY_WINDOW  # the latency slot a live row may overwrite
        self._before = (self._prev, dict(self._sums), dict(self._counts), slot,
                        self._latency[slot] if self._latency.size else None)
        depth = as_written(depth)
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
        """Take the last row back (its frame's other outputs failed): from memory, or cut from the live log and out
        of the running sums and latencies; the next row's `temporal` is against the frame before it again. Exactly
        as if the row never came (the sums are restored, not subtracted: no rounding left behind)."""
        self._prev, self._sums, self._counts, slot, latency = self._before
        self._before = None  # one row back, no more
        self.frames -= 1
        if self.keep_rows:
            self.rows.pop()
            return
        if self._flicker_added:
            self._flickers.pop()
            self._flicker_added = False
        if latency is not None:
            self._latency[slot] = latency
        if self._log is not None:
            self._log.truncate(self._row_start)

    def _accumulate(self, row: dict) -> None:
        for key in METRICS + ("temporal",):
            value = row.get(key)
            if value is not None and np.isfinite(value):
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
                self._counts[key] = self._counts.get(key, 0) + 1
        if row.get("carry"):  # frames by how their depth got there (network, pose, shift, none)
            self._counts[f"carry:{row['carry']}"] = self._counts.get(f"carry:{row['carry']}", 0) + 1
        self._flicker_added = _finite(row.get("flicker"))
        if self._flicker_added:
            self._flickers.append((row["flicker"], row.get("flicker_p90", float("nan"))))
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
        why = None
        try:
            complete = self._log.write(data) == len(data)
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            complete, why = False, err.errno
        if not complete:
            self._log.truncate(self._row_start)
            raise DiskFull(self.folder / "metrics.csv", errno=why)

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
        if self.keep_rows:
            carries = [r["carry"] for r in self.rows if r.get("carry")]
            counts = {c: carries.count(c) for c in dict.fromkeys(carries)}
        else:
            counts = {k.split(":", 1)[1]: v for k, v in self._counts.items() if k.startswith("carry:")}
        if counts:
            out["carry"] = counts  # frames by how their depth got there: network (keyframes), pose, shift, none
        flickers = [(r["flicker"], r.get("flicker_p90")) for r in self.rows if _finite(r.get("flicker"))] \
            if self.keep_rows else list(self._flickers)
        if flickers:  # edge.flicker, over frames: the median of each frame's median and of each frame's p90
            out["flicker_median"] = float(np.median([f for f, _ in flickers]))
            out["flicker_p90"] = float(np.median([p for _, p in flickers if _finite(p)] or [float("nan")]))
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
