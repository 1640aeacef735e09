"""`smoothdino inspect`: what the adapter does to the features, frame by frame, and how steady they are.

For one sequence: the pipeline runs with keep_outputs=True; the chosen level's encoder patch map (before)
and adapter-fused patch map (after) of every frame are kept, one PCA basis is fitted over all of them, and
<folder>/ gets
    pca/<frame>.png, pca_fused/<frame>.png   first three components as colour, at the frame size
    inspect.mp4                              RGB | PCA before | PCA after | depth, the depth's colour bar below
    stability.json, stability.png            aligned frame-to-frame similarity before / after, depth change
Torch-free: it reads the graphs' outputs only. Kept maps are float16 (memory: ~1.2 MB per frame and map
at 480x640 with ViT-S); the stability figures use the float32 outputs as they come.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from rich.table import Table
from smoothdino.core.console import RANDOM_WEIGHTS_BANNER, notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_text
from smoothdino.core.images import resize_depth
from smoothdino.edge.engines.graph_io import NUM_LEVELS
from smoothdino.edge.keyframes import EVERY_FRAME, KeyframePolicy, KeyframeSteps
from smoothdino.edge.loop import fit_frame
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.sinks import DISPLAY_RANGE, VideoSink, atomic_imwrite, colorize, json_dumps
from smoothdino.edge.sinks.view import with_depth_legend
from smoothdino.edge.sources import open_source

from .grid import FeatureGrid
from .lineplot import BLUE, GREY, ORANGE, Panel, Series, line_plot
from .pca import FeaturePCA
from .stability import StabilityTracker

RANDOM_WEIGHTS_NOTE = "random weights: these numbers show that the tool works, not what the adapter method does"


def open_sequence(spec: str, frames: int):
    """A recorded sequence to inspect: a NYUv2/image folder, a video file or synthetic[:HxW[:N]] (cameras are
    refused: the PCA basis is fitted over the whole sequence, so it must end)."""
    if frames < 1:
        raise UserError(f"--frames {frames}: give at least 1 (2 or more for the stability figures)")
    if not spec.startswith("synthetic") and not Path(spec).expanduser().exists():
        raise UserError(f"{spec}: no such folder or video; give NYUv2 sequence folders (e.g. "
                        "nyu2_sample/bedroom_0004_out), a video file or synthetic[:HxW[:N]]")
    source = open_source(spec, limit=frames)
    if getattr(source, "live", False):
        source.close()
        raise UserError(f"{spec}: a live source; inspect needs a recorded sequence (folder, video or synthetic)")
    return source


def first_frame_size(spec: str) -> tuple[int, int]:
    """(height, width) of a sequence's first readable frame."""
    source = open_sequence(spec, 1)
    try:
        for frame in source:
            return frame.rgb.shape[:2]
    finally:
        source.close()
    raise UserError(f"{spec}: no readable frame")


def check_level(level: int) -> int:
    if level not in range(NUM_LEVELS):
        raise UserError(f"--level {level}: choose a feature level from 0 to {NUM_LEVELS - 1} "
                        "(0 = early block, 3 = the last block the depth head reads)")
    return level


def _label(image: np.ndarray, text: str, warning: str = "") -> np.ndarray:
    """A panel of the video with its name (and a warning line) in a dark band at the top."""
    image = image.copy()
    scale = max(0.35, image.shape[0] / 900)
    (_, th), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    lines = [(text, (255, 255, 255))] + ([(warning, (60, 60, 255))] if warning else [])
    step = int(th * 1.8) + 2
    band = image[: step * len(lines) + 4]
    band[:] = (band * 0.45).astype(np.uint8)
    for i, (line, color) in enumerate(lines):
        cv2.putText(image, line, (4, step * (i + 1) - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return image


def _to_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A per-cell colour image at the engines' frame size -> the input frame's size (cells stay blocks)."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def stability_plot(rows: list[dict], title: str, random_weights: bool) -> np.ndarray:
    x = list(range(len(rows)))
    features = [Series("before adapter (aligned)", x, [r["features_before"] for r in rows], BLUE),
                Series("before, not aligned", x, [r["features_before_unaligned"] for r in rows], GREY)]
    if any(r["features_after"] is not None for r in rows):
        features.insert(1, Series("after adapter (aligned)", x, [r["features_after"] for r in rows], ORANGE))
    note = RANDOM_WEIGHTS_NOTE if random_weights else ""
    return line_plot([
        Panel(f"{title}: feature similarity to frame t-1", "frame", "cosine (mean over cells)", features, note),
        Panel("depth change from frame t-1 (aligned)", "frame", "mean |change| (mm)",
              [Series("depth", x, [r["depth_change_mm"] for r in rows], BLUE)]),
    ])


def inspect_sequence(pipeline: FramePipeline, source, folder: Path, level: int, *, resize: bool = True,
                     run_info: dict | None = None, on_frame: Callable[[int], None] | None = None,
                     keyframes: KeyframePolicy = EVERY_FRAME,
                     depth_range: tuple[float, float] = DISPLAY_RANGE, carry: str = "shift",
                     intrinsics=None) -> dict:
    """Run `source` through `pipeline` (opened with keep_outputs=True) and write the inspection into
    `folder`; returns what stability.json holds. With keyframes, only the frames the network ran on are
    inspected (carried frames have no features), each against the previous keyframe: what the adapter fuses.
    `depth_range`: the metres the video's depth colours span."""
    check_level(level)
    if not pipeline.keep_outputs:
        raise ValueError("inspect_sequence needs a pipeline opened with keep_outputs=True")
    folder = Path(folder)
    size = tuple(pipeline.frame_size)
    random_weights = pipeline.random_weights
    before_key, after_key = f"patch{level}", f"fused_patch{level}"

    steps = KeyframeSteps(pipeline, keyframes, carry)  # resets the pipeline
    tracker: StabilityTracker | None = None
    grid: FeatureGrid | None = None
    kept: list[dict] = []
    warned_resize = False
    for frame in source:
        if frame.rgb.shape[:2] != size and not warned_resize and resize:
            notice(f"{source.name}: frames are {frame.rgb.shape[0]}x{frame.rgb.shape[1]}, the engines "
                   f"{size[0]}x{size[1]}: resizing (images are resized back)")
            warned_resize = True
        if intrinsics is not None and steps.k is None:  # the pose carry's camera, from the first frame
            steps.set_intrinsics(intrinsics.for_frame(frame.meta, *frame.rgb.shape[:2]))
        result = steps.step(fit_frame(frame.rgb, size, resize, f"{source.name}/{frame.name}", pipeline))
        if not result.keyframe:
            continue
        before, after = result.outputs[before_key][0], result.outputs.get(after_key)
        after = None if after is None else after[0]
        if grid is None:
            grid = FeatureGrid(size, before.shape[1:])
            tracker = StabilityTracker(grid)
        shift = (result.shift.dx, result.shift.dy, result.shift.confidence)
        tracker.add(frame.name, before, after, result.depth, shift, result.scene_cut)
        kept.append({"name": frame.name, "rgb": frame.rgb, "depth": resize_depth(result.depth, frame.rgb.shape[:2]),
                     "before": before.astype(np.float16), "after": None if after is None else after.astype(np.float16)})
        if on_frame:
            on_frame(len(kept))
    if not kept:
        raise UserError(f"{source.name}: no readable frame to inspect")
    has_fused = kept[0]["after"] is not None

    pca = FeaturePCA.fit([k["before"] for k in kept] + ([k["after"] for k in kept] if has_fused else []),
                         mask=grid.content_mask())
    for sub in ("pca", "pca_fused") if has_fused else ("pca",):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    video = VideoSink(folder / "inspect.mp4", fps=getattr(source, "fps", 10.0))
    warning = "RANDOM WEIGHTS" if random_weights else ""
    try:
        for k in kept:
            frame_size = k["rgb"].shape[:2]
            pca_before = _to_size(pca.image(k["before"], grid), frame_size)
            atomic_imwrite(folder / "pca" / f"{k['name']}.png", pca_before)
            panels = [_label(cv2.cvtColor(k["rgb"], cv2.COLOR_RGB2BGR), f"{k['name']}", warning),
                      _label(pca_before, f"PCA L{level} before")]
            if has_fused:
                pca_after = _to_size(pca.image(k["after"], grid), frame_size)
                atomic_imwrite(folder / "pca_fused" / f"{k['name']}.png", pca_after)
                panels.append(_label(pca_after, f"PCA L{level} after adapter"))
            panels.append(_label(colorize(k["depth"], depth_range), "depth"))
            canvas = np.concatenate(panels, axis=1)
            width = frame_size[1]
            video.write(with_depth_legend(canvas, canvas.shape[1] - width, width, frame_size[0], depth_range))
    finally:
        video.close()

    rows = tracker.rows
    info = dict(run_info or {})
    if random_weights:
        info["warning"] = RANDOM_WEIGHTS_BANNER
    payload = {
        "run": info, "sequence": source.name, "level": level, "frames": len(rows), "grid": list(grid.grid),
        "frame_size": list(size), "has_fused_features": has_fused,
        "pca": {"explained_variance_ratio": pca.explained_variance_ratio.tolist(), "fitted_cells": pca.fitted_cells,
                "fitted_on": f"{'encoder and fused' if has_fused else 'encoder'} features, every frame, no padded cells"},
        "summary": tracker.summary(),
        "note": RANDOM_WEIGHTS_NOTE if random_weights else "",
        "rows": rows,
    }
    atomic_write_text(folder / "stability.json", json_dumps(payload))
    atomic_imwrite(folder / "stability.png", stability_plot(rows, source.name, random_weights))
    return payload


def _figure(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def stability_table(payloads: list[dict], title: str) -> Table:
    """One row per sequence: mean aligned cosine before/after the adapter, unaligned, depth change."""
    table = Table(title=title)
    for col in ("sequence", "level", "pairs", "cosine before", "cosine after", "before, not aligned",
                "depth change (mm)", "scene cuts"):
        table.add_column(col, justify="left" if col == "sequence" else "right")
    for p in payloads:
        s = p["summary"]
        table.add_row(p["sequence"], str(p["level"]), str(s["pairs"]), _figure(s["features_before"], 4),
                      _figure(s["features_after"], 4), _figure(s["features_before_unaligned"], 4),
                      _figure(s["depth_change_mm"], 1), str(s["scene_cuts"]))
    return table
