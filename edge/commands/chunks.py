"""`process --ray` without Ray: sequences cut into chunks, one chunk through the resumable loop on a worker, and a
sequence's outputs put together from its chunks on the driver. edge.commands.cluster schedules them.

    chunk      frames [start, end) of one sequence (a ROS bag or a video file is one chunk, read in order: a bag
               in bag order; a video because reaching frame k without seeking means decoding the k frames before it,
               and OpenCV's frame seeking is not exact on every codec; many videos still spread over workers). A
               worker writes its depth PNGs (and PLYs, a bag's depth_bag) into <out>/<sequence>/ exactly as
               `process` does, its metrics rows into <out>/<sequence>/.chunks/<start>-<end>/metrics.json
               (MetricsSink's own format), then done.json there: the chunk is complete, and a resumed run does not
               schedule it again.
    schedule   --keyframes N and auto: the driver computes the sequence's keyframe schedule once (which frames are
               readable, and each one's decision, from the frames alone: edge.keyframes.decide_keyframes, no network,
               the RGB only, segments of the sequence on threads at once and joined exactly: keyframe_schedule;
               cached in <out>/<sequence>/.chunks/schedule.json under the run's identity) and hands each chunk its
               priming and the decisions of its frames (KeyframeSchedule.priming), forced on them
               (StreamOutputs.schedule), so every chunk decides exactly as one unbroken run, whatever was skipped.
    priming    before `start` the worker replays frames through the keyframe policy (edge.loop StreamOutputs.primed:
               RGB only, no network, no output), so the chunk's first frame meets exactly the state an unbroken run
               has there (edge.keyframes KeyframeSteps.replay, as a resumed `process`):
                 every   the last readable frame before `start` (the temporal adapter's previous frame)
                 N, auto from the last keyframe before `start` when the chunk's first frame is a keyframe (its
                         adapter's previous frame); else from the keyframe before that one (the last keyframe's depth
                         is computed again, with its own previous keyframe, and carried)
    assembly   once all chunks of a sequence are done the driver joins their rows in frame order, recomputes the
               one figure that crosses a chunk boundary (`temporal` of a chunk's first frame, from the two PNGs and
               ground truths, with MetricsSink itself), and writes metrics.json/csv (MetricsSink) and the video
               (VideoSink, from the PNGs and the input frames).

The result is byte-identical to one `process` over the whole sequence: PNGs and every metrics column but the
timings. A chunk run again (a worker lost, an interrupted run) reuses the PNGs it already wrote, as on resume; its
done.json records the run's identity (edge.run_identity), and one of another identity is refused, never reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_text, temporary_path
from smoothdino.core.images import parse_size, resize_rgb
from smoothdino.edge.carry import camera_matrix
from smoothdino.edge.flicker import NO_FLICKER, FlickerMeter
from smoothdino.edge.fusion import fusion_enabled
from smoothdino.edge.keyframes import EVERY_FRAME, KeyframePolicy, decide_keyframes
from smoothdino.edge.loop import StreamOutputs, StreamReport, run_stream
from smoothdino.edge.metrics import METRICS
from smoothdino.edge.pipeline import FramePipeline
from smoothdino.edge.run_identity import RunIdentity, describe_difference
from smoothdino.edge.sinks import (
    DISPLAY_RANGE,
    DepthPngSink,
    MetricsSink,
    VideoSink,
    side_by_side,
)
from smoothdino.edge.sinks.view import overlay_lines
from smoothdino.edge.sources.frame import SourceStats
from smoothdino.edge.sources.recorded import FolderSource

from .robotics import RobotOptions, choose_carry, open_sequence, process_sinks, sequence_intrinsics

# The chunk size rule (chunk_size): about CHUNKS_PER_WORKER chunks for each worker over all frames, so the last
# chunks to finish leave the other workers idle for at most ~1/4 of a worker's share; at least MIN_CHUNK frames
# (a chunk primes with one or two extra encoder passes: <= ~1/16 more network work); at most MAX_CHUNK (progress
# and a lost worker's redo stay fine-grained on very long sequences).
CHUNKS_PER_WORKER = 4
MIN_CHUNK = 16
MAX_CHUNK = 1000

CHUNKS = ".chunks"  # <out>/<sequence>/.chunks/<start>-<end>/{metrics.json, metrics.csv, started, done.json}
SCHEDULE = "schedule.json"  # <out>/<sequence>/.chunks/schedule.json: the sequence's keyframe schedule (N, auto)
MARKER = ".smoothdino-cluster"  # <out>/.smoothdino-cluster: the driver's token; every worker must read it
# keyframe_schedule: segments of a sequence decided at once, on threads (OpenCV's decoding, resizing and phase
# correlation run outside the GIL), none shorter than MIN_SEGMENT frames (a guess that must be redone costs its frames)
SCHEDULE_THREADS = max(1, min(8, os.cpu_count() or 1))
MIN_SEGMENT = 48


def chunk_size(total_frames: int, workers: int) -> int:
    """Frames a chunk, from all sequences' frames and the cluster's workers (see the rule above)."""
    return max(MIN_CHUNK, min(MAX_CHUNK, math.ceil(total_frames / (CHUNKS_PER_WORKER * max(1, workers)))))


@dataclass(frozen=True)
class Chunk:
    sequence: str  # the input folder or bag
    name: str  # the sequence's output folder under --out
    start: int
    end: int  # one past the last frame
    bag: bool = False  # read in order as one chunk: a ROS bag or a video file

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
    length: int  # frames, after --frames
    bag: bool
    chunks: list[Chunk] = field(default_factory=list)
    carry: str = "shift"  # how depth is carried between keyframes, and the policy for it (as `process` chooses)
    policy: KeyframePolicy = EVERY_FRAME
    fusion: bool = False  # keyframes fused with the previous output (edge.fusion, as `process` chooses)


def plan_sequences(sequences: list[Path], robot: RobotOptions, limit: int | None, carry: str | None = None,
                   policy: KeyframePolicy = EVERY_FRAME, fusion: str = "off") -> list[SequencePlan]:
    """Each sequence's name and length (listing a folder, or a bag's index: no frame is decoded), and its carry and
    keyframe policy (edge.commands.robotics.choose_carry, as `process` chooses them)."""
    plans = []
    for path in sequences:
        source = open_sequence(Path(path), robot, limit)
        try:
            chosen, chosen_policy, _ = choose_carry(carry, source, robot, policy)
            plans.append(SequencePlan(Path(path), source.name, len(source), not isinstance(source, FolderSource),
                                      carry=chosen, policy=chosen_policy, fusion=fusion_enabled(fusion, chosen)))
        finally:
            source.close()
    names = [p.name for p in plans]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # two inputs would write one output folder (process would overwrite; here they would interleave)
        raise UserError(f"{twice[0]}: two sequences share this name, and so <out>/{twice[0]}; process them apart")
    return plans


def cut(plans: list[SequencePlan], size: int) -> list[SequencePlan]:
    """Chunks of `size` frames (a bag: one chunk; a fused sequence: one chunk too, since every fused output depends
    on every one before it in its shot, a chunk could not start without the one before it ending: parallel across
    sequences only)."""
    for plan in plans:
        step = plan.length if plan.bag or plan.fusion else size
        plan.chunks = [Chunk(str(plan.path), plan.name, s, min(s + step, plan.length), plan.bag)
                       for s in range(0, plan.length, max(1, step))]
    return plans


def last_readable_before(source: FolderSource, start: int) -> int:
    """--keyframes every: the first frame a chunk starting at `start` replays, the last readable one before it (the
    adapter's previous frame; a corrupt one is skipped by the unbroken run too). `start` when there is none."""
    for position in range(start - 1, -1, -1):
        if source.load(position) is not None:
            return position
    return start


@dataclass(frozen=True)
class KeyframeSchedule:
    """One unbroken run's keyframe decisions over a folder sequence: its readable frames in order (positions, names)
    and whether each is a keyframe."""

    positions: list[int]
    names: list[str]
    keyframes: list[bool]

    def priming(self, start: int, end: int) -> tuple[int, dict[str, bool]]:
        """(the first frame a chunk [start, end) replays, the decisions forced on the frames from there to `end`):
        see the module's table."""
        own = bisect_left(self.positions, start)  # the chunk's first readable frame
        stop = bisect_left(self.positions, end)
        keyframes: list[int] = []  # the last two before the chunk (a few frames back: O(N) or O(max_age))
        for i in range(own - 1, -1, -1):
            if self.keyframes[i]:
                keyframes.append(i)
                if len(keyframes) == 2:
                    break
        if own == stop or not keyframes:  # nothing of its own to compute, or nothing before it
            first = own
        elif self.keyframes[own] or len(keyframes) == 1:
            first = keyframes[0]
        else:
            first = keyframes[1]
        position = self.positions[first] if first < own else start
        return position, {self.names[i]: self.keyframes[i] for i in range(first, stop)}

    def record(self) -> dict:
        return {"positions": self.positions, "names": self.names, "keyframes": self.keyframes}


def keyframe_schedule(source: FolderSource, policy: KeyframePolicy, identity: RunIdentity,
                      refuse_size: Callable[[int, int], None], stop: Callable[[], bool] = lambda: False,
                      threads: int | None = None) -> KeyframeSchedule | None:
    """A folder sequence's schedule: each frame's RGB decoded (never its ground-truth depth), at the export's frame
    size (resized as the workers do, or refused by `refuse_size`), through edge.keyframes.decide_keyframes (phase
    correlation only, no network). None when `stop` said so before the end.

    In parallel, and exactly the serial schedule: the sequence is cut into `threads` segments (default
    SCHEDULE_THREADS; a short sequence is one), each decided on its own thread as if its first frame were a keyframe
    (its guess), and joined in order. A guess is the unbroken run's from the first frame where both make a keyframe:
    a keyframe's decisions after it depend on the frames from it on alone (what chunk priming relies on too). Up to
    there the unbroken run's decisions are computed again (catch_up), from the last keyframe before the segment:
    on all segments at once, from the last keyframe of the guess before (right whenever that guess held by its end),
    else on the joining thread. Under --keyframes N the segments start on multiples of N, so without skipped frames
    or scene cuts a guess holds from its first frame."""
    size = parse_size(identity.size)

    def decided(positions) -> Iterator[tuple[int, str, bool]]:
        """(position, name, keyframe) of the readable frames at `positions`, decided as from a fresh start."""
        readable: list[tuple[int, str]] = []

        def frames():
            for position in positions:
                if stop():
                    return
                frame = source.load(position, depth=False)
                if frame is None:
                    continue
                if frame.rgb.shape[:2] != size and not identity.resize:
                    refuse_size(*frame.rgb.shape[:2])
                readable.append((position, frame.name))
                yield resize_rgb(frame.rgb, size)

        for i, keyframe in enumerate(decide_keyframes(frames(), policy, identity.motion_downscale,
                                                      identity.min_confidence, identity.carry)):
            yield (*readable[i], keyframe)

    def catch_up(before: list, start: int, guess: list) -> list | None:
        """The unbroken run's decisions from `start` on, given its decisions `before` it from a keyframe on: computed
        until they meet `guess` on a keyframe, the guess's from there. None when stopped."""
        again = decided([p for p, _, _ in before] + list(range(start, len(source))))
        for _ in before:  # decided already
            next(again, None)
        caught: list = []
        for i, (_, _, keyframe) in enumerate(guess):
            unbroken = next(again, None)
            if unbroken is None:
                return None
            caught.append(unbroken)
            if unbroken[2] and keyframe:  # both start afresh here: the guess holds from here on
                caught += guess[i + 1:]
                break
        again.close()
        return caught

    def from_last_keyframe(decisions: list) -> list:
        last = next((i for i in range(len(decisions) - 1, -1, -1) if decisions[i][2]), None)
        return [] if last is None else decisions[last:]

    segments = schedule_segments(len(source), policy, threads or SCHEDULE_THREADS)
    with ThreadPoolExecutor(max_workers=len(segments), thread_name_prefix="schedule-segment") as pool:
        guesses = list(pool.map(lambda segment: list(decided(range(*segment))), segments))
        caught = list(pool.map(lambda s: catch_up(from_last_keyframe(guesses[s - 1]), segments[s][0], guesses[s])
                               if from_last_keyframe(guesses[s - 1]) else None, range(1, len(segments))))
    joined = guesses[0]
    for s in range(1, len(segments)):
        before = from_last_keyframe(joined)
        if not before:  # nothing readable before the segment: its own run is the unbroken one
            joined += guesses[s]
            continue
        early = caught[s - 1]
        if early is None or before[0][0] != from_last_keyframe(guesses[s - 1])[0][0]:
            early = catch_up(before, segments[s][0], guesses[s])  # the guess before did not hold to its end
        if early is None or stop():
            return None
        joined += early
    if stop():
        return None
    return KeyframeSchedule([p for p, _, _ in joined], [n for _, n, _ in joined], [k for _, _, k in joined])


def schedule_segments(frames: int, policy: KeyframePolicy, threads: int) -> list[tuple[int, int]]:
    """[start, end) of the segments keyframe_schedule decides at once: `threads` of them, none shorter than
    MIN_SEGMENT frames (one for a short sequence), under --keyframes N each a multiple of N long."""
    count = max(1, min(threads, frames // MIN_SEGMENT))
    length = math.ceil(frames / count)
    if policy.mode == "n":
        length = math.ceil(length / policy.n) * policy.n
    return [(s, min(s + length, frames)) for s in range(0, frames, length)] or [(0, 0)]


def _fingerprint(source: FolderSource) -> str:
    """The frame files as they are now (names, sizes, times): a schedule cached for other files is computed again."""
    digest = hashlib.sha256()
    for name, rgb, _ in source.frames:
        try:
            stat = rgb.stat()
            digest.update(f"{name}\t{rgb.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\t{rgb.name}\tmissing\n".encode())
    return digest.hexdigest()


def sequence_schedule(plan: SequencePlan, out: Path, policy: KeyframePolicy, identity: RunIdentity,
                      refuse_size: Callable[[int, int], None], stop: Callable[[], bool] = lambda: False,
                      threads: int | None = None) -> KeyframeSchedule | None:
    """`plan`'s schedule, computed once per sequence: read back from <out>/<sequence>/.chunks/schedule.json when it
    was computed there for this identity and these frame files, else computed (keyframe_schedule, on `threads`
    threads) and recorded there."""
    path = Path(out) / plan.name / CHUNKS / SCHEDULE
    source = FolderSource(plan.path, limit=plan.length)
    key = {"identity": identity.record(), "frames": _fingerprint(source)}
    try:
        cached = json.loads(path.read_text())
        if {k: cached[k] for k in key} == key:
            return KeyframeSchedule(cached["positions"], cached["names"], cached["keyframes"])
    except (OSError, ValueError, KeyError):
        pass  # none yet, or of another run: computed below
    schedule = keyframe_schedule(source, policy, identity, refuse_size, stop, threads)
    if schedule is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**key, **schedule.record()}) + "\n")
    return schedule


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
    identity: RunIdentity  # the run's (edge.run_identity): done.json records it
    carry: str = "shift"  # SequencePlan.carry
    fusion: bool = False  # SequencePlan.fusion
    resume: bool = True
    resize: bool = True
    limit: int | None = None
    robot: RobotOptions = field(default_factory=RobotOptions)
    run_info: dict = field(default_factory=dict)
    # N, auto: the first frame to replay and the decisions forced from there (KeyframeSchedule.priming); None: every
    # (the worker finds the last readable frame before the chunk), or the first chunk (nothing to prime)
    prime_from: int | None = None
    schedule: dict[str, bool] | None = None


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
    retried = _note_attempt(record, job.run_id)
    resume = job.resume or retried  # a retry reuses what its first attempt wrote in this run
    if chunk.bag:
        full = source = open_sequence(Path(chunk.sequence), job.robot, job.limit)
        first, primed = 0, frozenset()
    else:
        full = FolderSource(Path(chunk.sequence), limit=job.limit)  # as `process` opens it (PLY intrinsics)
        first = job.prime_from if job.prime_from is not None else last_readable_before(full, chunk.start)
        source = ChunkSource(full, first, chunk.start, chunk.end)
        primed = frozenset(full.names[first:chunk.start])
    encoder_runs = pipeline.runs["encoder"]
    sinks = process_sinks(full, folder, job.robot, pipeline.random_weights)
    report = run_stream(pipeline, source, StreamOutputs(folder=folder, video=None, resume=resume, sinks=sinks,
                                                        primed=primed, metrics_folder=record,
                                                        schedule=job.schedule),
                        resize=job.resize, run_info=job.run_info, keyframes=job.policy, carry=job.carry,
                        intrinsics=sequence_intrinsics(full, job.robot) if job.carry == "pose" else None,
                        on_frame=on_frame, fusion=job.fusion)
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
        "keyframes": job.policy.label, "identity": job.identity.record(),
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


def finished(chunk: Chunk, out: Path, identity: RunIdentity) -> dict | None:
    """The chunk's done.json when an earlier run of this identity completed it; None when it is still to run. One
    that another identity wrote is refused in one line: its PNGs are never reused under other options."""
    record = chunk.record(out)
    try:
        done = json.loads((record / "done.json").read_text())
    except (OSError, ValueError):
        return None
    difference = describe_difference(done.get("identity"), identity)
    if difference:
        raise UserError(f"{record}: a chunk done by a run with other options ({difference}); pass --overwrite to "
                        "redo the sequence whole, or choose another --out")
    return done if (record / "metrics.json").is_file() else None


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
    probe = temporary_path(Path(out) / "smoothdino-probe")
    try:
        probe.write_text(token)
        probe.unlink()
    except OSError as err:
        raise UserError(f"{out}: a worker on {node} cannot write there ({err.strerror or err}); --out must be "
                        "storage every node sees and can write") from None


# -- the driver's half: a sequence's outputs from its chunks ------------------------------------------------------

NAN_KEYS = frozenset(METRICS + ("temporal", "valid_fraction", "flicker", "flicker_p90"))


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


def _boundary_flicker(folder: Path, source: FolderSource, before: dict, row: dict, plan: SequencePlan,
                      robot: RobotOptions) -> tuple[float, float]:
    """`flicker` of a chunk's first frame against the last frame of the chunk before, from the two frames and PNGs
    (edge.flicker.FlickerMeter, as the loop measures it; the camera as the loop has it: the pose carry's)."""
    positions = {name: i for i, name in enumerate(source.names)}
    pngs, meter, flicker = DepthPngSink(folder / "depth"), FlickerMeter(), NO_FLICKER
    intrinsics = sequence_intrinsics(source, robot) if plan.carry == "pose" else None
    for name in (before["frame"], row["frame"]):
        frame = source.load(positions[name])
        depth = pngs.read(name)
        if frame is None or depth is None:
            return NO_FLICKER
        camera = None
        if intrinsics is not None:
            at = intrinsics.for_frame(frame.meta, *frame.rgb.shape[:2]).scaled(*frame.rgb.shape[:2])
            camera = camera_matrix(at.fx, at.fy, at.cx, at.cy)
        flicker = meter.measure(frame.rgb, depth, frame.depth_gt, camera)
    return flicker


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
        if chunk_rows and rows and "flicker" in chunk_rows[0]:
            (chunk_rows[0]["flicker"], chunk_rows[0]["flicker_p90"]) = _boundary_flicker(
                folder, folder_source, rows[-1], chunk_rows[0], plan, robot)
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
        _write_video(plan, folder, rows, robot, limit, random_weights, depth_range, stop,
                     bool(run_info.get("untrained_adapter")))
    return report


def _write_video(plan: SequencePlan, folder: Path, rows: list[dict], robot: RobotOptions, limit: int | None,
                 random_weights: bool, depth_range: tuple[float, float], stop: Callable[[], bool],
                 untrained: bool = False) -> None:
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
                # the overlay `process` draws from the same row (edge.loop): the same video frame for frame
                sink.write(side_by_side(frame.rgb, depth, overlay_lines(by_name.get(frame.name)), random_weights,
                                        depth_range, untrained))
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

