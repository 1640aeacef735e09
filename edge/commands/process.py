"""`smoothdino process`: recorded sequences (NYUv2/image folders, ROS bags) through the resumable loop, a progress
bar per sequence and the report table at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smoothdino.core.console import console, random_weights_notice
from smoothdino.edge.keyframes import EVERY_FRAME, KeyframePolicy
from smoothdino.edge.loop import StreamOutputs, StreamReport, run_stream
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.sinks import DISPLAY_RANGE

from .robotics import RobotOptions, check_sequence, first_frame_size, open_sequence, process_sinks
from .tables import stream_table


@dataclass
class ProcessOptions:
    sequences: list[Path]
    out: Path = Path("out/process")
    video: bool = True
    resize: bool = True  # frames of another size than the engines': resized (False: refused)
    resume: bool = True
    limit: int | None = None
    keyframes: KeyframePolicy = EVERY_FRAME
    robot: RobotOptions = field(default_factory=RobotOptions)
    depth_range: tuple[float, float] = DISPLAY_RANGE  # metres the video's depth colours span (--depth-range)

    def check(self) -> None:
        """Every bad input refused, in one line, before any work."""
        for sequence in self.sequences:
            check_sequence(Path(sequence), self.robot)

    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the first sequence's first readable frame: the size an on-the-fly export gets."""
        return first_frame_size(Path(self.sequences[0]), self.robot)


def process(pipeline: FramePipeline, options: ProcessOptions) -> list[StreamReport]:
    """Every sequence through the loop into <out>/<sequence>/; stops after an interrupted one (the same command
    resumes). Prints the table; returns the reports."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if pipeline.random_weights:
        random_weights_notice()
    console.print(f"pipeline: {pipeline.description}")
    run_info = {"pipeline": pipeline.description, "backend": pipeline.backend,
                "random_weights": pipeline.random_weights, "weights": pipeline.weights}
    reports = []
    with pipeline, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console) as bar:
        for sequence in options.sequences:
            source = open_sequence(Path(sequence), options.robot, options.limit)
            folder = Path(options.out) / source.name
            sinks = process_sinks(source, folder, options.robot, pipeline.random_weights)
            task = bar.add_task(source.name, total=len(source), rate="")
            reports.append(run_stream(
                pipeline, source, StreamOutputs(folder=folder, video=folder / "video.mp4" if options.video else None,
                                                resume=options.resume, sinks=sinks,
                                                depth_range=options.depth_range),
                resize=options.resize, run_info=run_info, keyframes=options.keyframes,
                on_frame=lambda r, task=task: bar.update(task, completed=r.computed + r.reused + r.skipped,
                                                         rate=f"{r.fps:.2f} FPS")))
            bar.update(task, completed=len(source))
            if reports[-1].interrupted:
                break
    console.print(stream_table(reports, f"processed -> {options.out}"))
    if any(r.interrupted for r in reports):
        console.print("interrupted: outputs so far are written; run the same command to resume")
    return reports
