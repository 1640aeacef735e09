"""The RGB | depth view every picture shares (window, video, snapshots): depth coloured on a fixed range, so a colour
means the same in every frame; under the depth, a colour bar with its scale in metres and the "no depth" colour;
the overlay text in a dark band over the top left of the RGB half, sized to the frame."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
from smoothdino.core.console import UNTRAINED_ADAPTER_LINE
from smoothdino.core.errors import UserError

DISPLAY_RANGE = (0.0, 10.0)  # metres mapped onto the colour map (NYUv2's range): fixed, so colours mean the same
NO_DEPTH_BGR = (160, 160, 160)  # depth 0 / NaN: a light grey, far from every TURBO colour (>= 88 levels away)
NO_DEPTH_LABEL = "no depth"
FONT = cv2.FONT_HERSHEY_SIMPLEX
OVERLAY_SHARE = 0.25  # the overlay band takes at most this share of the frame's height (lines past it are left out)


def parse_depth_range(text: str | None) -> tuple[float, float]:
    """`--depth-range MIN,MAX` (metres) -> (min, max); None -> DISPLAY_RANGE."""
    if text is None or not str(text).strip():
        return DISPLAY_RANGE
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise UserError(f"--depth-range {text}: give MIN,MAX in metres, e.g. 0,10 or 0.3,4") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
        raise UserError(f"--depth-range {text}: needs 0 <= MIN < MAX (metres), e.g. 0,10 or 0.3,4")
    return lo, hi


def colorize(depth: np.ndarray, depth_range: tuple[float, float] = DISPLAY_RANGE) -> np.ndarray:
    """Metres -> BGR, near = warm (TURBO reversed) on `depth_range` (clipped at its ends); no depth (0, negative,
    NaN/Inf) gets its own colour, NO_DEPTH_BGR, which is on no part of the map."""
    lo, hi = depth_range
    depth = np.asarray(depth, np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    scaled = np.clip((np.where(valid, depth, lo) - lo) / (hi - lo), 0, 1)
    bgr = cv2.applyColorMap(((1.0 - scaled) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    bgr[~valid] = NO_DEPTH_BGR
    return bgr


def text_scale(frame_height: int) -> float:
    """Hershey font scale for a frame: the text grows with the frame (about 3.5 % of its height), never below a
    size that stays legible (0.33: letters about 8 px tall)."""
    return float(np.clip(frame_height / 700, 0.33, 1.2))


def _text_size(text: str, scale: float) -> tuple[int, int, int]:
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    return w, h, base


@dataclass(frozen=True)
class Legend:
    """Where the colour bar's parts are in its strip (rows from the strip's top, columns from its left)."""

    height: int  # rows of the strip
    bar_rows: tuple[int, int]  # [top, bottom) of the gradient
    bar_columns: tuple[int, int]  # first and last column of the gradient (depth_range[0] and [1])
    swatch_columns: tuple[int, int]  # [left, right) of the "no depth" swatch
    ticks: tuple[tuple[float, int], ...]  # (metres, column) of each tick mark
    tick_rows: tuple[int, int]  # [top, bottom) of the tick marks


def _nice_step(span: float, most: int) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k giving at most `most` intervals over `span`."""
    for power in range(math.floor(math.log10(span / max(most, 1))) - 1, 12):
        for base in (1, 2, 2.5, 5):
            step = base * 10.0 ** power
            if span / step <= most + 1e-9:
                return step
    return span


def _label(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def legend_layout(width: int, frame_height: int, depth_range: tuple[float, float] = DISPLAY_RANGE) -> Legend:
    """The colour bar under a depth picture `width` wide: the "no depth" swatch and its name on the left, the
    gradient from depth_range[0] to [1] on the right, ticks at round metres (1, 2, 2.5 or 5 x 10^k apart, as many
    as their labels have room for), the last one followed by "m". Its height depends on the frame height only."""
    scale = text_scale(frame_height)
    _, text_h, base = _text_size("0", scale)
    pad = max(2, text_h // 3)
    bar_h = max(6, text_h)
    tick_h = max(2, text_h // 3)
    height = pad + bar_h + tick_h + 2 + text_h + base + pad
    height += height % 2  # even: a frame of even height keeps an even canvas (H.264's yuv420p halves both sides)
    lo, hi = depth_range
    name_w = _text_size(NO_DEPTH_LABEL, scale)[0]
    swatch = (pad, pad + max(bar_h, name_w))
    last_w = _text_size(_label(hi), scale)[0]
    unit_w = _text_size(" m", scale)[0]
    x0 = swatch[1] + 2 * pad + _text_size(_label(lo), scale)[0] // 2 + 1
    x1 = width - 1 - pad - unit_w - last_w // 2
    if x1 - x0 < 8:  # too narrow for the name beside the bar: the bar takes the whole width, the swatch its end
        # (a frame 1-4 px wide: the swatch shrinks, or goes, so that at least one column of gradient stays)
        swatch = (0, max(0, min(max(2, min(bar_h, width // 6)), width - 2)))
        x0, x1 = swatch[1] + 1 if swatch[1] else 0, width - 1
    # as many intervals as labels fit (a label and a gap each), at least one: the ends are always marked
    label_w = 2 * max(_text_size(_label(v), scale)[0] for v in (lo, hi, (lo + hi) / 2)) + 4 * pad
    step = _nice_step(hi - lo, max(1, (x1 - x0) // label_w))
    first = math.ceil(lo / step - 1e-9) * step
    values = [round(first + i * step, 9) for i in range(int((hi - first) / step + 1e-9) + 1)]
    ticks = tuple((v, x0 + round((v - lo) / (hi - lo) * (x1 - x0))) for v in values if lo - 1e-9 <= v <= hi + 1e-9)
    bar_top = pad
    return Legend(height, (bar_top, bar_top + bar_h), (x0, x1), swatch, ticks,
                  (bar_top + bar_h, bar_top + bar_h + tick_h))


def depth_legend(width: int, frame_height: int, depth_range: tuple[float, float] = DISPLAY_RANGE) -> np.ndarray:
    """The colour bar strip (BGR, dark background): each column of the gradient is colorize() of its depth, and
    a tick's column is exactly its value's colour; the ticks are labelled in metres; the swatch is the "no
    depth" colour, named."""
    layout = legend_layout(width, frame_height, depth_range)
    scale = text_scale(frame_height)
    strip = np.full((layout.height, width, 3), 24, np.uint8)
    lo, hi = depth_range
    (x0, x1), (top, bottom) = layout.bar_columns, layout.bar_rows
    metres = lo + (np.arange(x0, x1 + 1, dtype=np.float64) - x0) / max(x1 - x0, 1) * (hi - lo)
    for value, x in layout.ticks:  # the column under a tick shows exactly the tick's depth
        metres[x - x0] = value
    metres = np.maximum(metres, 1e-6)  # a range starting at 0: the first column is the nearest colour, not "none"
    strip[top:bottom, x0:x1 + 1] = colorize(metres[None].astype(np.float32), depth_range)
    left, right = layout.swatch_columns
    strip[top:bottom, left:right] = NO_DEPTH_BGR
    _, text_h, _ = _text_size("0", scale)
    baseline_y = layout.tick_rows[1] + 2 + text_h
    if left > 0:  # the name fits (the narrow layout has only the swatch)
        cv2.putText(strip, NO_DEPTH_LABEL, (left, baseline_y), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    t0, t1 = layout.tick_rows
    for i, (value, x) in enumerate(layout.ticks):
        strip[t0:t1, x] = 255
        text = _label(value)
        w = _text_size(text, scale)[0]
        if left == 0 and 0 < i < len(layout.ticks) - 1:
            continue  # narrow: only the ends are labelled
        last = i == len(layout.ticks) - 1
        tx = int(np.clip(x - w // 2, 0, max(0, width - w - (_text_size(" m", scale)[0] if last else 0))))
        cv2.putText(strip, text + (" m" if last else ""), (tx, baseline_y), FONT, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return strip


def with_depth_legend(canvas: np.ndarray, depth_left: int, depth_width: int, frame_height: int,
                      depth_range: tuple[float, float] = DISPLAY_RANGE) -> np.ndarray:
    """`canvas` with a strip below it: the colour bar under the columns [depth_left, depth_left + depth_width),
    dark elsewhere."""
    legend = depth_legend(depth_width, frame_height, depth_range)
    strip = np.full((legend.shape[0], canvas.shape[1], 3), 24, np.uint8)
    strip[:, depth_left:depth_left + depth_width] = legend
    return np.concatenate([canvas, strip], axis=0)


def overlay(canvas: np.ndarray, lines: list[str], width: int, frame_height: int) -> None:
    """Draw `lines` (in place) at the top left, white on a darkened band (red for a RANDOM WEIGHTS line). The text
    scales with the frame; the band is as wide as the text (at most `width`) and at most OVERLAY_SHARE of the
    frame's height: lines that do not fit are left out, the first ones kept."""
    if not lines:
        return
    scale = text_scale(frame_height)
    _, text_h, base = _text_size("Ag", scale)
    margin = max(3, text_h // 3)
    step = text_h + base + max(2, text_h // 4)
    fits = max(1, int((OVERLAY_SHARE * frame_height - 2 * margin + (step - text_h)) // step))
    lines = lines[:fits]
    band_w = min(width, max(_text_size(t, scale)[0] for t in lines) + 2 * margin)
    band = canvas[: margin + step * len(lines) - (step - text_h - base) + margin, :band_w]
    band[:] = (band * 0.4).astype(np.uint8)
    for i, text in enumerate(lines):
        color = (60, 60, 255) if text.startswith(("RANDOM", "UNTRAINED")) else (255, 255, 255)
        cv2.putText(canvas, text, (margin, margin + text_h + step * i), FONT, scale, color, 1, cv2.LINE_AA)


STAGES = ("encoder", "adapter", "decoder", "motion")  # the overlay's "ms:" line, in this order


def frame_facts(result) -> dict:
    """What the overlay says of a frame, from its FrameResult, under the keys of its metrics row (edge.loop writes
    those from the same result), so a row read back from metrics.json gives the same facts."""
    facts = {f"{k}_ms": v * 1000.0 for k, v in result.timings.items()}
    facts.update(keyframe=result.keyframe, age_frames=result.age_frames, age_ms=result.age_ms,
                 shift=(result.shift.dx, result.shift.dy, result.shift.confidence))
    carry = getattr(result, "carry", None)  # how the keyframe's depth was carried here (FrameResult.carry, if given)
    if carry is not None:
        facts["carry"] = getattr(carry, "carry", carry)
    if getattr(result, "inliers", 0):
        facts["inliers"] = result.inliers
    if getattr(result, "fused", False):
        facts["fused"] = True
    flicker = getattr(result, "flicker", None)
    if flicker is not None:
        facts["flicker"] = flicker[0]
    return facts


def overlay_lines(frame, fps: float | None = None) -> list[str]:
    """The overlay text of one frame, the same wherever the frame is drawn (window, `live --record`, `process`'s
    video, the `--ray` driver's video). `frame` is its FrameResult, or its metrics row (a mapping: what `process`
    wrote and the `--ray` driver reads back from metrics.json; edge.loop draws a recorded run from the row, so both
    videos show the same frames), or None: a frame read back from an earlier run, as is a row without timings.
    `fps`: the output rate a live viewer sees; a line says only what the frame's facts hold."""
    facts = frame if frame is None or isinstance(frame, Mapping) else frame_facts(frame)
    if not facts or not facts.get("total_ms"):
        return ["(resumed from disk)"]
    age = ""
    if not facts.get("keyframe", True):  # a carried frame shows how old its depth is, and how it was carried
        age = f"  age {facts.get('age_frames', 0)}f"
        age += f" {facts['age_ms']:.0f}ms" if facts.get("age_ms") is not None else ""
        if facts.get("carry"):  # pose: how many tracked corners agreed with the camera's motion
            age += f" ({facts['carry']}" + (f", {facts['inliers']} inliers" if facts.get("inliers") else "") + ")"
    stages = " ".join(f"{k[:3]} {facts[k + '_ms']:.0f}" for k in STAGES if facts.get(k + "_ms"))
    lines = [(f"{fps:5.1f} FPS  " if fps is not None else "") + f"{facts['total_ms']:.0f} ms{age}", f"ms: {stages}"]
    if facts.get("shift") is not None:
        dx, dy, confidence = facts["shift"]
        lines.append(f"shift {dx:+.1f},{dy:+.1f} px  conf {confidence:.2f}")
    flicker = facts.get("flicker")
    if facts.get("fused") or (flicker is not None and flicker == flicker):
        lines.append(("fused" if facts.get("fused") else "not fused")
                     + (f"  flicker {100 * flicker:.1f} %" if flicker is not None and flicker == flicker else ""))
    return lines


def side_by_side(rgb: np.ndarray, depth: np.ndarray, lines: list[str], random_weights: bool = False,
                 depth_range: tuple[float, float] = DISPLAY_RANGE, untrained_adapter: bool = False) -> np.ndarray:
    """BGR canvas: the frame on the left, coloured depth on the right, the colour bar under the depth, the
    overlay text on the frame (first, in red: random weights, an untrained adapter). (H + legend rows) x 2W."""
    depth_bgr = colorize(depth, depth_range)
    height, width = rgb.shape[:2]
    if depth_bgr.shape[:2] != (height, width):
        depth_bgr = cv2.resize(depth_bgr, (width, height), interpolation=cv2.INTER_NEAREST)
    canvas = np.concatenate([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), depth_bgr], axis=1)
    state = (["RANDOM WEIGHTS - not metric"] if random_weights else []) + \
        ([UNTRAINED_ADAPTER_LINE] if untrained_adapter else [])
    overlay(canvas, state + list(lines), width, height)
    return with_depth_legend(canvas, width, width, height, depth_range)
