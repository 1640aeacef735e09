"""`smoothdino inspect`: what the adapter does to the features (PCA images before/after it) and how steady they
are frame to frame once the camera motion is taken out, per sequence (edge.inspection)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smoothdino.core.console import (
    adapter_state,
    console,
    notice,
    random_weights_notice,
    untrained_adapter_notice,
)
from smoothdino.edge.inspection.sequence import (
    RANDOM_WEIGHTS_NOTE,
    check_level,
    first_frame_size,
    inspect_sequence,
    open_sequence,
    stability_table,
)
from smoothdino.edge.keyframes import EVERY_FRAME, KeyframePolicy
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.sinks import DISPLAY_RANGE

from .robotics import RobotOptions, choose_carry


@dataclass
class InspectOptions:
    sequences: list[str]
    out: Path = Path("out/inspect")
    level: int = 3
    frames: int = 30
    resize: bool = True
    keyframes: KeyframePolicy = EVERY_FRAME
    depth_range: tuple[float, float] = DISPLAY_RANGE  # metres the video's depth colours span (--depth-range)
    carry: str | None = None  # shift | pose (auto's decisions follow the carry); None: pose where the camera is known

    def open_sources(self) -> list:
        """Every bad argument refused, in one line, before any work."""
        check_level(self.level)
        return [open_sequence(seq, self.frames) for seq in self.sequences]

    def frame_size(self) -> tuple[int, int]:
        return first_frame_size(self.sequences[0])


def inspect(pipeline: FramePipeline, sources: list, options: InspectOptions) -> list[dict]:
    """Each sequence into <out>/<sequence>/; prints the stability table; returns what stability.json holds."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if pipeline.random_weights:
        random_weights_notice()
    untrained_adapter_notice(pipeline.weights)
    console.print(f"pipeline: {pipeline.description}")
    if not pipeline.has_adapter:
        kind = getattr(getattr(pipeline, "manifest", None), "adapter", "none")
        notice(f"adapter {kind!r} has no adapter stage (paper offsets are folded into the decoder): no fused features, "
               "writing pca/ only and no 'after' figures")
    run_info = {"pipeline": pipeline.description, "backend": pipeline.backend,
                "random_weights": pipeline.random_weights, "weights": pipeline.weights,
                **adapter_state(pipeline.weights)}
    payloads = []
    with pipeline, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        for source in sources:
            task = bar.add_task(source.name, total=len(source))
            carry, policy, intrinsics = choose_carry(options.carry, source, RobotOptions(), options.keyframes)
            payloads.append(inspect_sequence(pipeline, source, Path(options.out) / source.name, options.level,
                                             resize=options.resize, run_info=run_info, keyframes=policy,
                                             carry=carry, intrinsics=intrinsics,
                                             depth_range=options.depth_range,
                                             on_frame=lambda n, task=task: bar.update(task, completed=n)))
            source.close()
    console.print(stability_table(payloads, f"feature stability, level {options.level} -> {options.out}"))
    console.print("cosine: frame t vs frame t-1 shifted by the phase-correlation shift (1 = unchanged), mean over "
                  "cells inside both frames")
    console.print("depth change: mean |depth t - shifted depth t-1| in mm; per frame in <sequence>/stability.json, "
                  "plotted in stability.png")
    if pipeline.random_weights:
        console.print(f"[bold red]{RANDOM_WEIGHTS_NOTE}[/]")
    return payloads
