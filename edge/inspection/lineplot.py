"""Line plots drawn with OpenCV: the run-time makes its own charts without matplotlib.

`line_plot([Panel(...), ...])` stacks panels vertically, each with axes, ticks, axis labels, a title and a
legend; NaN / None values leave gaps in a line. Returns a BGR uint8 image for atomic_imwrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

BLUE, ORANGE, GREY, GREEN = (180, 119, 31), (14, 127, 255), (140, 140, 140), (44, 160, 44)  # BGR
FONT = cv2.FONT_HERSHEY_SIMPLEX
INK = (30, 30, 30)
MARGIN = {"left": 78, "right": 16, "top": 34, "bottom": 48}


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float | None]
    color: tuple[int, int, int] = BLUE


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    note: str = ""  # one line under the title (e.g. a random-weights warning)


def _finite(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _ticks(low: float, high: float, count: int = 5) -> np.ndarray:
    """Round tick values covering [low, high] (1, 2, 5 x 10^k steps)."""
    span = max(high - low, 1e-12)
    raw = span / max(count - 1, 1)
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return np.arange(np.ceil(low / step) * step, high + step * 1e-6, step)


def _label(value: float) -> str:
    return f"{value:.4g}"


def _text(image, text, org, scale=0.45, color=INK, thickness=1):
    cv2.putText(image, text, (int(org[0]), int(org[1])), FONT, scale, color, thickness, cv2.LINE_AA)


def _draw_panel(image: np.ndarray, panel: Panel, top: int, height: int) -> None:
    width = image.shape[1]
    x0, x1 = MARGIN["left"], width - MARGIN["right"]
    y0, y1 = top + MARGIN["top"] + (14 if panel.note else 0), top + height - MARGIN["bottom"]
    _text(image, panel.title, (x0, top + 20), 0.55, thickness=1)
    if panel.note:
        _text(image, panel.note, (x0, top + 38), 0.4, (40, 40, 200))

    xs = np.concatenate([_finite(s.x) for s in panel.series]) if panel.series else np.array([])
    ys = np.concatenate([_finite(s.y) for s in panel.series]) if panel.series else np.array([])
    xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
    x_lo, x_hi = (xs.min(), xs.max()) if xs.size else (0.0, 1.0)
    y_lo, y_hi = (ys.min(), ys.max()) if ys.size else (0.0, 1.0)
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    pad = (y_hi - y_lo) * 0.08 if y_hi > y_lo else max(abs(y_hi) * 0.05, 0.01)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def to_px(x, y):
        return x0 + (x - x_lo) / (x_hi - x_lo) * (x1 - x0), y1 - (y - y_lo) / (y_hi - y_lo) * (y1 - y0)

    for value in _ticks(y_lo, y_hi):  # horizontal grid lines with their values
        _, py = to_px(x_lo, value)
        cv2.line(image, (x0, int(py)), (x1, int(py)), (225, 225, 225), 1)
        cv2.line(image, (x0 - 4, int(py)), (x0, int(py)), INK, 1)
        (tw, th), _ = cv2.getTextSize(_label(value), FONT, 0.4, 1)
        _text(image, _label(value), (x0 - 7 - tw, py + th / 2), 0.4)
    for value in _ticks(x_lo, x_hi, 8):
        px, _ = to_px(value, y_lo)
        cv2.line(image, (int(px), y1), (int(px), y1 + 4), INK, 1)
        (tw, _), _ = cv2.getTextSize(_label(value), FONT, 0.4, 1)
        _text(image, _label(value), (px - tw / 2, y1 + 18), 0.4)
    cv2.rectangle(image, (x0, y0), (x1, y1), INK, 1)

    (tw, _), _ = cv2.getTextSize(panel.xlabel, FONT, 0.45, 1)
    _text(image, panel.xlabel, ((x0 + x1 - tw) / 2, y1 + 38))
    (tw, th), _ = cv2.getTextSize(panel.ylabel, FONT, 0.45, 1)  # vertical label: drawn flat, then rotated
    label = np.full((th + 8, tw + 4, 3), 255, np.uint8)
    _text(label, panel.ylabel, (2, th + 2))
    label = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    ly = max(top, int((y0 + y1 - label.shape[0]) / 2))
    lh = min(label.shape[0], image.shape[0] - ly)
    image[ly:ly + lh, 4:4 + label.shape[1]] = label[:lh]

    for s in panel.series:
        points = [to_px(x, y) for x, y in zip(_finite(s.x), _finite(s.y))]
        run: list[tuple[int, int]] = []
        for px, py in points + [(np.nan, np.nan)]:  # a NaN ends a run: gaps stay gaps
            if np.isfinite(px) and np.isfinite(py):
                run.append((int(np.rint(px)), int(np.rint(py))))
                continue
            if len(run) > 1:
                cv2.polylines(image, [np.array(run, np.int32)], False, s.color, 2, cv2.LINE_AA)
            for point in run:
                cv2.circle(image, point, 3, s.color, -1, cv2.LINE_AA)
            run = []

    if panel.series:  # legend, top right inside the axes
        rows = [(s.label, s.color) for s in panel.series]
        text_w = max(cv2.getTextSize(label, FONT, 0.42, 1)[0][0] for label, _ in rows)
        lx, ly = x1 - text_w - 44, y0 + 6
        cv2.rectangle(image, (lx - 6, ly - 2), (x1 - 6, ly + 18 * len(rows) + 2), (255, 255, 255), -1)
        cv2.rectangle(image, (lx - 6, ly - 2), (x1 - 6, ly + 18 * len(rows) + 2), (190, 190, 190), 1)
        for i, (label, color) in enumerate(rows):
            cy = ly + 10 + 18 * i
            cv2.line(image, (lx, cy), (lx + 24, cy), color, 2, cv2.LINE_AA)
            _text(image, label, (lx + 30, cy + 5), 0.42)


def line_plot(panels: list[Panel], width: int = 900, panel_height: int = 320) -> np.ndarray:
    """Panels stacked top to bottom on a white BGR canvas."""
    image = np.full((panel_height * len(panels), width, 3), 255, np.uint8)
    for i, panel in enumerate(panels):
        _draw_panel(image, panel, i * panel_height, panel_height)
    return image
