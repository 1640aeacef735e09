"""`process --ray` without Ray: sequences cut into chunks, one chunk through the resumable loop on a worker, and a
sequence's outputs put together from its chunks on the driver. edge.commands.cluster schedules them.

    chunk      frames [start, end) of one sequence (a ROS bag is one chunk: it is read in bag order). A worker writes
               its depth PNGs (and PLYs, a bag's depth_bag) into <out>/<sequence>/ exactly as `process` does, its
               metrics rows into <out>/<sequence>/.chunks/<start>-<end>/metrics.json (MetricsSink's own format),
               then done.json there: the chunk is complete, and a resumed run does not schedule it again.
    priming    before `start` the worker replays frames through the keyframe policy (edge.loop StreamOutputs.primed:
               RGB only, no network, no output), so the chunk's first frame meets exactly the state an unbroken run
               has there (edge.keyframes KeyframeSteps.replay, as a resumed `process`):
                 every   the last readable frame before `start` (the temporal adapter's previous frame)
                 N       from the keyframe before the last one (start - N when `start` is itself a keyframe); the
                         keyframes are every N-th *readable* frame, so when an earlier chunk skipped a corrupt frame
                         before that point the driver runs the chunk again primed from the first frame
                 auto    from the sequence's first frame: every decision depends on all earlier frames (phase
                         correlation only, ~1-4 ms a frame)
    assembly   once all chunks of a sequence are done the driver joins their rows in frame order, recomputes the
               one figure that crosses a chunk boundary (`temporal` of a chunk's first frame, from the two PNGs and
               ground truths, with MetricsSink itself), and writes metrics.json/csv (MetricsSink) and the video
               (VideoSink, from the PNGs and the input frames).

The result is byte-identical to one `process` over the whole sequence: PNGs and every metrics column but the
timings. A chunk run again (a worker lost, an interrupted run) reuses the PNGs it already wrote, as on resume.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_text
from smoothdino.edge.keyframes import KeyframePolicy
from smoothdino.edge.loop import StreamOutputs, StreamReport, run_stream
from smoothdino.edge.metrics import METRICS
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.sinks import (
    DISPLAY_RANGE,
    DepthPngSink,
    MetricsSink,
    VideoSink,
    side_by_side,
)
from smoothdino.edge.sources.frame import SourceStats
from smoothdino.edge.sources.recorded import FolderSource

from .robotics import RobotOptions, open_sequence, process_sinks

# The chunk size rule (chunk_size): about CHUNKS_PER_WORKER chunks for each worker over all frames, so the last
# chunks to finish leave the other workers idle for at most ~1/4 of a worker's share; at least MIN_CHUNK frames
# (every/N prime with one or two extra encoder passes a chunk: <= ~1/16 more network work), MIN_CHUNK_AUTO with
# --keyframes auto (its priming replays the sequence from its first frame); at most MAX_CHUNK (progress and a
# lost worker's redo stay fine-grained on very long sequences).
CHUNKS_PER_WORKER = 4
MIN_CHUNK = 16
MIN_CHUNK_AUTO = 64
MAX_CHUNK = 1000

CHUNKS = ".chunks"  # <out>/<sequence>/.chunks/<start>-<end>/{metrics.json, metrics.csv, started, done.json}
MARKER = ".smoothdino-cluster"  # <out>/.smoothdino-cluster: the driver's token; every worker must read it


def chunk_size(total_frames: int, workers: int, policy: KeyframePolicy) -> int:
    """Frames a chunk, from all sequences' frames and the cluster's workers (see the rule above)."""
    low = MIN_CHUNK_AUTO if policy.mode == "auto" else MIN_CHUNK
    return max(low, min(MAX_CHUNK, math.ceil(total_frames / (CHUNKS_PER_WORKER * max(1, workers)))))


@dataclass(frozen=True)
class Chunk:
    sequence: str  # the input folder or bag
    name: str  # the sequence's output folder under --out
    start: int
    end: int  # one past the last frame
    bag: bool = False

    @property
    def key(self) -> str:
        return f"{self.start:07d}-{self.end:07d}"

    @property
    def frames(self) -> int:
        return self.end - self.start

    def record(self, out: Path) -> Path:
        return Path(out) / self.name / CHUNKS / self.key


@dataclass
class SequencePlan:
    path: Path
    name: str
    length: int  # frames, after --limit
    bag: bool
    chunks: list[Chunk] = field(default_factory=list)


def plan_sequences(sequences: list[Path], robot: RobotOptions, limit: int | None) -> list[SequencePlan]:
    """Each sequence's name and length (listing a folder, or a bag's index: no frame is decoded)."""
    plans = []
    for path in sequences:
        source = open_sequence(Path(path), robot, limit)
        try:
            plans.append(SequencePlan(Path(path), source.name, len(source), not isinstance(source, FolderSource)))
        finally:
            source.close()
    names = [p.name for p in plans]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # two inputs would write one output folder (process would overwrite; here they would interleave)
        raise UserError(f"{twice[0]}: two sequences share this name, and so <out>/{twice[0]}; process them apart")
    return plans


def cut(plans: list[SequencePlan], size: int) -> list[SequencePlan]:
    """Chunks of `size` frames (a bag: one chunk)."""
    for plan in plans:
        step = plan.length if plan.bag else size
        plan.chunks = [Chunk(str(plan.path), plan.name, s, min(s + step, plan.length), plan.bag)
                       for s in range(0, plan.length, max(1, step))]
    return plans


def prime_start(source: FolderSource, start: int, policy: KeyframePolicy) -> int:
    """The first frame a chunk starting at `start` replays (see the module's table)."""
    if start == 0 or policy.mode == "auto":
        return 0
    if policy.mode == "n":
        n = policy.n
        return start - n if start % n == 0 else max(start // n * n - n, 0)
    first = start - 1  # every: the last readable frame (a corrupt one is skipped by the unbroken run too)
    while first > 0 and source.load(first) is None:
        first -= 1
    return first


class ChunkSource:
    """Frames [first, end) of a folder source, with the positions, names and timestamps the whole sequence gives
    them (the frames before the chunk only prime). Missing or corrupt frames are skipped and counted, as there."""

    live = False

    def __init__(self, source: FolderSource, first: int, start: int, end: int):
        self.source, self.first, self.start, self.end = source, first, start, end
        self.name, self.fps = source.name, source.fps
        self.stats = SourceStats()
        self.reached: float | None = None  # perf_counter when the chunk's own first frame was asked for

    def __len__(self) -> int:
        return self.end - self.first

    def __iter__(self):
        for position in range(self.first, self.end):
            if position == self.start:
                self.reached = time.perf_counter()
            frame = self.source.load(position)
            if frame is None:
                path = self.source.frames[position][1]
                self.stats.skipped += 1
                self.stats.skipped_names.append(path.name)
                if position >= self.start:  # the chunk that owns the frame says so, once
                    notice(f"{path}: missing or corrupt frame, skipped")
                continue
            self.stats.read += 1
            yield frame

    def close(self) -> None:
        self.source.close()


@dataclass(frozen=True)
class ChunkJob:
    """What a worker needs for one chunk (pickled to it)."""

    chunk: Chunk
    out: str
    run_id: str  # this driver run: a second start of the chunk in the same run is a retry
    policy: KeyframePolicy
    identity: str  # the export's (DepthPipeline.identity): done.json records it
    resume: bool = True
    resize: bool = True
    limit: int | None = None
    robot: RobotOptions = field(default_factory=RobotOptions)
    run_info: dict = field(default_factory=dict)
    from_start: bool = False  # --keyframes N after a corrupt frame: prime from the sequence's first frame, rewrite


def _note_attempt(record: Path, attempt: str) -> bool:
    """Record that `attempt` (run id + kind) started this chunk; True when it had started it before (a retry)."""
    started = record / "started"
    seen = started.read_text().split() if started.is_file() else []
    atomic_write_text(started, "\n".join([*seen, attempt]) + "\n")
    return attempt in seen


def run_chunk(pipeline: FramePipeline, job: ChunkJob, on_frame: Callable[[StreamReport], None] | None = None) -> dict:
    """One chunk through edge.loop.run_stream on this worker; returns what done.json records."""
    begin = time.perf_counter()
    chunk = job.chunk
    folder = Path(job.out) / chunk.name
    record = chunk.record(Path(job.out))
    record.mkdir(parents=True, exist_ok=True)
    (record / "done.json").unlink(missing_ok=True)
    retried = _note_attempt(record, f"{job.run_id}:{'replay' if job.from_start else 'first'}")
    resume = job.resume or retried  # a retry reuses what its first attempt wrote in this run
    if chunk.bag:
        full = source = open_sequence(Path(chunk.sequence), job.robot, job.limit)
        first, primed = 0, frozenset()
    else:
        full = FolderSource(Path(chunk.sequence), limit=job.limit)  # as `process` opens it (PLY intrinsics)
        first = 0 if job.from_start else prime_start(full, chunk.start, job.policy)
        source = ChunkSource(full, first, chunk.start, chunk.end)
        primed = frozenset(full.names[first:chunk.start])
    encoder_runs = pipeline.runs["encoder"]
    sinks = process_sinks(full, folder, job.robot, pipeline.random_weights)
    report = run_stream(pipeline, source, StreamOutputs(folder=folder, video=None, resume=resume, sinks=sinks,
                                                        primed=primed, metrics_folder=record),
                        resize=job.resize, run_info=job.run_info, keyframes=job.policy, on_frame=on_frame)
    if report.interrupted:
        raise KeyboardInterrupt(f"{chunk.name} {chunk.key}: interrupted")
    if chunk.bag:
        skipped = list(source.stats.skipped_names)
        positions: list[int] = []
    else:
        own = {full.frames[i][1].name: i for i in range(chunk.start, chunk.end)}
        skipped = [n for n in source.stats.skipped_names if n in own]
        positions = [own[n] for n in skipped]
    reached = getattr(source, "reached", None)
    done = {
        "sequence": chunk.name, "start": chunk.start, "end": chunk.end, "prime_from": first,
        "keyframes": job.policy.label, "identity": job.identity, "resize": job.resize, "from_start": job.from_start,
        "computed": report.computed, "reused": report.reused, "skipped": len(skipped), "skipped_frames": skipped,
        "skipped_positions": positions, "keyframe_passes": report.keyframes, "scene_cuts": report.scene_cuts,
        "nonfinite": report.nonfinite, "retried": retried,
        # figures for the per-chunk overhead: setup + replay until the chunk's first frame, the encoder passes
        # beyond one per keyframe (the pipeline's previous frame primed), the whole run; the worker's process
        "prime_ms": (reached - begin) * 1000.0 if reached else 0.0,
        "prime_frames": chunk.start - first,
        "extra_encoder_passes": max(0, pipeline.runs["encoder"] - encoder_runs - report.keyframes),
        "run_ms": (time.perf_counter() - begin) * 1000.0,
        "pid": os.getpid(), "node": socket.gethostname(),
    }
    atomic_write_text(record / "done.json", json.dumps(done) + "\n")
    return done


def finished(chunk: Chunk, out: Path, policy: KeyframePolicy, identity: str, resize: bool) -> dict | None:
    """The chunk's done.json when an earlier run completed it with the same export, policy and resizing."""
    try:
        done = json.loads((chunk.record(out) / "done.json").read_text())
    except (OSError, ValueError):
        return None
    same = (done.get("keyframes"), done.get("identity"), done.get("resize")) == (policy.label, identity, resize)
    return done if same and (chunk.record(out) / "metrics.json").is_file() else None


def needs_replay_from_start(plan: SequencePlan, dones: dict[str, dict], policy: KeyframePolicy) -> list[Chunk]:
    """--keyframes N: chunks primed from a keyframe counted as if no frame before it were corrupt, while an
    earlier chunk skipped one there. They run again, primed from the first frame (exact whatever was skipped)."""
    if policy.mode != "n":
        return []
    skipped = sorted(p for c in plan.chunks for p in dones[c.key].get("skipped_positions", []))
    return [c for c in plan.chunks if not dones[c.key].get("from_start") and skipped
            and skipped[0] < dones[c.key]["prime_from"]]


def check_shared_out(out: Path, token: str, node: str) -> None:
    """On a worker: --out is the folder the driver wrote (its marker and token) and this worker can write there."""
    marker = Path(out) / MARKER
    try:
        seen = marker.read_text().strip()
    except OSError:
        seen = None
    if seen != token:
        what = "does not see" if seen is None else "sees another run's"
        raise UserError(f"{out}: a worker on {node} {what} {MARKER} that the driver wrote there; --out must be "
                        "storage every node sees at the same path (NFS or another shared mount)")
    probe = Path(out) / f".smoothdino-probe-{node}-{os.getpid()}"
    try:
        probe.write_text(token)
        probe.unlink()
    except OSError as err:
        raise UserError(f"{out}: a worker on {node} cannot write there ({err.strerror or err}); --out must be "
                        "storage every node sees and can write") from None


# -- the driver's half: a sequence's outputs from its chunks ------------------------------------------------------

NAN_KEYS = frozenset(METRICS + ("temporal", "valid_fraction"))


def _row(row: dict) -> dict:
    """A row as MetricsSink held it: metrics.json writes NaN as null (a metric without valid ground truth)."""
    return {k: float("nan") if v is None and k in NAN_KEYS else v for k, v in row.items()}


def _boundary_temporal(folder: Path, source: FolderSource, before: dict, row: dict) -> float:
    """`temporal` of a chunk's first frame against the last frame of the chunk before (the worker had no previous
    frame): MetricsSink computes it from the two PNGs and ground truths, as one process would have."""
    positions = {name: i for i, name in enumerate(source.names)}
    pngs, scratch = DepthPngSink(folder / "depth"), MetricsSink(folder, {})  # scratch: never written
    for name in (before["frame"], row["frame"]):
        frame = source.load(positions[name])
        last = scratch.add(name, pngs.read(name), frame.depth_gt if frame is not None else None)
    return last.get("temporal", float("nan"))


def _overlay(row: dict | None) -> list[str]:
    """The video's overlay for a frame, from its metrics row (edge.loop.overlay_lines' content, where it is known)."""
    if not row or "total_ms" not in row:
        return ["(resumed from disk)"]
    stages = " ".join(f"{k[:3]} {row[k + '_ms']:.0f}" for k in ("encoder", "adapter", "decoder", "motion")
                      if row.get(k + "_ms"))
    age = f"  age {row.get('age_frames', 0)}f" if not row.get("keyframe", True) else ""
    return [f"{row['total_ms']:.0f} ms{age}", f"ms: {stages}"]


def assemble(plan: SequencePlan, dones: dict[str, dict], out: Path, *, video: bool, robot: RobotOptions,
             limit: int | None, random_weights: bool, depth_range: tuple[float, float] = DISPLAY_RANGE,
             cluster_info: dict | None = None, stop: Callable[[], bool] = lambda: False) -> StreamReport:
    """<out>/<sequence>/metrics.json, metrics.csv and video.mp4 from the chunks' records, in frame order."""
    folder = Path(out) / plan.name
    rows: list[dict] = []
    run_info: dict = {}
    skipped: list[str] = []
    folder_source = None if plan.bag else FolderSource(plan.path)
    for chunk in plan.chunks:
        record = json.loads((chunk.record(out) / "metrics.json").read_text())
        chunk_rows = [_row(r) for r in record.get("frames", [])]
        if chunk_rows and rows and "temporal" in chunk_rows[0] and "temporal" in rows[-1]:
            chunk_rows[0]["temporal"] = _boundary_temporal(folder, folder_source, rows[-1], chunk_rows[0])
        rows += chunk_rows
        run_info = run_info or {k: v for k, v in record["run"].items() if k != "warning"}
        skipped += dones[chunk.key]["skipped_frames"]
    done = list(dones.values())
    report = StreamReport(name=plan.name, computed=sum(d["computed"] for d in done),
                          reused=sum(d["reused"] for d in done), skipped=len(skipped),
                          keyframes=sum(d["keyframe_passes"] for d in done),
                          scene_cuts=sum(d["scene_cuts"] for d in done), nonfinite=sum(d["nonfinite"] for d in done))
    run_info.update(skipped_frames=skipped, nonfinite_frames=report.nonfinite, interrupted=False)
    if cluster_info is not None:
        run_info["cluster"] = cluster_info
    metrics = MetricsSink(folder, run_info)
    metrics.rows, metrics.frames = rows, len(rows)
    metrics.write()
    report.summary = metrics.summary()
    if video:
        _write_video(plan, folder, rows, robot, limit, random_weights, depth_range, stop)
    return report


def _write_video(plan: SequencePlan, folder: Path, rows: list[dict], robot: RobotOptions, limit: int | None,
                 random_weights: bool, depth_range: tuple[float, float], stop: Callable[[], bool]) -> None:
    source = open_sequence(plan.path, robot, limit)
    sink = VideoSink(folder / "video.mp4", fps=getattr(source, "fps", 10.0))
    pngs, by_name = DepthPngSink(folder / "depth"), {r["frame"]: r for r in rows}
    try:
        for frame in _quiet(source):
            if stop():
                sink.discard()
                return
            depth = pngs.read(frame.name)
            if depth is not None:
                sink.write(side_by_side(frame.rgb, depth, _overlay(by_name.get(frame.name)), random_weights,
                                        depth_range))
        sink.close()
    except BaseException:
        sink.discard()
        raise
    finally:
        source.close()


def _quiet(source):
    """A folder source's readable frames without its skip notices (the chunks said them already)."""
    if isinstance(source, FolderSource):
        return (f for f in (source.load(i) for i in range(len(source))) if f is not None)
    return iter(source)

