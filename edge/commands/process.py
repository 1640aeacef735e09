"""`smoothdino process`: recorded sequences (video files, NYUv2/image folders, ROS bags) through the resumable
loop, a progress bar per sequence and the report table at the end."""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from smoothdino.core.console import adapter_state, console, random_weights_notice, untrained_adapter_notice
from smoothdino.edge.fusion import fusion_enabled, fusion_info, parse_fusion
from smoothdino.edge.keyframes import EVERY_FRAME, KeyframePolicy, parse_carry
from smoothdino.edge.loop import StreamOutputs, StreamReport, run_stream
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.ros2 import Ros2Options
from smoothdino.edge.run_identity import RunIdentity, claim_run_folder
from smoothdino.edge.sinks import DISPLAY_RANGE
from smoothdino.edge.sinks.keyframe_state import FOLDER as FUSION_STATES
from smoothdino.edge.web import parse_serve, serve_view

from .chunks import CHUNKS
from .robotics import (
    BAG_OUTPUT,
    POINTS_OUTPUT,
    RobotOptions,
    check_sequence,
    choose_carry,
    first_frame_size,
    open_sequence,
    process_sinks,
    ros2_publisher,
)
from .tables import stream_table

# what a run writes into <out>/<sequence>/ (--ray: also its chunks' records): what --overwrite removes
SEQUENCE_OUTPUTS = ("depth", "metrics.json", "metrics.csv", "video.mp4", POINTS_OUTPUT, BAG_OUTPUT, CHUNKS,
                    FUSION_STATES)


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
    overwrite: bool = False  # an earlier run's outputs in a sequence folder are removed first (any options)
    serve: str | None = None  # [HOST:]PORT: watch the run in a browser (edge.web); snapshots go to <out>/snapshots
    ros2: Ros2Options | None = None  # --ros2 [dds|zenoh]: every frame on ROS 2 topics as it is done (edge.ros2)
    carry: str | None = None  # shift | pose; None: pose where the camera is known (edge.commands.robotics.choose_carry)
    fusion: str = "auto"  # auto | on | off: keyframes fused with the previous output (edge.fusion); auto: with the pose carry

    def check(self) -> None:
        """Every bad input refused, in one line, before any work."""
        for sequence in self.sequences:
            check_sequence(Path(sequence), self.robot)
        if self.carry is not None and parse_carry(self.carry) == "pose" and self.robot.explicit is None:
            for sequence in self.sequences:  # the pose carry needs a camera: refused before any work
                source = open_sequence(Path(sequence), self.robot, 1)
                try:
                    choose_carry(self.carry, source, self.robot, self.keyframes, carries=False)
                finally:
                    source.close()
        parse_fusion(self.fusion)
        parse_serve(self.serve)
        if self.ros2 is not None:
            self.ros2.check()

    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the first sequence's first readable frame: the size an on-the-fly export gets."""
        return first_frame_size(Path(self.sequences[0]), self.robot)

    @property
    def again(self) -> str:
        """What to run to resume after an interruption."""
        return "run the same command without --overwrite to resume" if self.overwrite else \
            "run the same command to resume"


def claim_sequence_folder(folder: Path, identity: RunIdentity, overwrite: bool) -> None:
    """<out>/<sequence> for a run of `identity`: with `overwrite` an earlier run's outputs are removed first; else
    a folder another identity wrote is refused in one line (edge.run_identity), never mixed."""
    if overwrite:
        for name in SEQUENCE_OUTPUTS:
            path = Path(folder) / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    claim_run_folder(folder, identity)


def process(pipeline: FramePipeline, options: ProcessOptions) -> list[StreamReport]:
    """Every sequence through the loop into <out>/<sequence>/; stops after an interrupted one (the same command
    resumes). Prints the table; returns the reports."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if pipeline.random_weights:
        random_weights_notice()
    untrained_adapter_notice(pipeline.weights)
    console.print(f"pipeline: {pipeline.description}")
    run_info = {"pipeline": pipeline.description, "backend": pipeline.backend,
                "random_weights": pipeline.random_weights, "weights": pipeline.weights,
                **adapter_state(pipeline.weights)}
    reports = []
    with pipeline, serve_view(parse_serve(options.serve), snapshots=Path(options.out) / "snapshots",
                              depth_range=options.depth_range, random_weights=pipeline.random_weights,
                              intrinsics=options.robot.explicit) as web, \
            (ros2_publisher(options.ros2, options.robot, live=False) or nullcontext()) as ros2, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console) as bar:
        if web is not None:
            console.print(f"process: browser view -> {web.announce}", soft_wrap=True)
        if ros2 is not None:
            run_info.update(ros2.run_info())  # the publisher's counts, in each metrics.json
        for sequence in options.sequences:
            source = open_sequence(Path(sequence), options.robot, options.limit)
            folder = Path(options.out) / source.name
            try:
                carry, policy, intrinsics = choose_carry(options.carry, source, options.robot, options.keyframes)
                fusion = fusion_enabled(options.fusion, carry)
                claim_sequence_folder(folder, RunIdentity.of(pipeline, policy, options.resize, carry=carry,
                                                             fusion=fusion), options.overwrite)
            except BaseException:
                source.close()
                raise
            sinks = process_sinks(source, folder, options.robot, pipeline.random_weights, ros2)
            if web is not None:
                sinks.append(web.stream(source))
            task = bar.add_task(source.name, total=len(source), rate="")
            reports.append(run_stream(
                pipeline, source, StreamOutputs(folder=folder, video=folder / "video.mp4" if options.video else None,
                                                resume=options.resume, sinks=sinks,
                                                depth_range=options.depth_range),
                resize=options.resize, run_info={**run_info, **fusion_info(fusion)}, keyframes=policy, carry=carry,
                intrinsics=intrinsics, fusion=fusion,
                on_frame=lambda r, task=task: bar.update(task, completed=r.computed + r.reused + r.skipped,
                                                         rate=f"{r.fps:.2f} FPS")))
            bar.update(task, completed=len(source))
            if reports[-1].interrupted:
                break
    console.print(stream_table(reports, f"processed -> {options.out}"))
    if ros2 is not None:
        console.print(f"process: {ros2.summary()}")
    if any(r.interrupted for r in reports):
        console.print(f"interrupted: outputs so far are written; {options.again}")
    return reports
