"""`smoothdino process SEQ... --ray [ADDRESS]`: the same outputs as `process`, computed on a Ray cluster.

The driver (this module) cuts every sequence into chunks (edge.commands.chunks: the size rule, the priming that
makes a chunk's frames exactly those of one unbroken run), starts one worker per GPU or per --threads CPUs
(edge.commands.cluster_worker: each opens the export once), hands each idle worker the next chunk, shows one
progress bar (frames done / total, frames a second across the cluster, workers alive), and writes each sequence's
metrics.json/csv and video once all its chunks are done (chunks.assemble, a background thread, while the workers go
on with other chunks).

    --out        storage every node sees at the same path: workers write the PNGs (PLYs, bags) there themselves.
                 The driver writes a token into <out>/.smoothdino-cluster; a worker that cannot read it, or cannot
                 write beside it, refuses in one line (exit 2) before any frame.
    faults       a worker lost mid-chunk (killed, out of memory, its node gone): Ray starts it again and retries the
                 chunk, which reuses the frames it had written (as a resumed `process` does), so the result is still
                 exact; the table's footer counts the retried chunks. Ctrl-C stops the workers, keeps every finished
                 frame and chunk, and the same command resumes (finished chunks are not scheduled again). Corrupt
                 frames are skipped and counted, as `process` does. A sequence folder or a chunk that a run with
                 other options wrote is refused in one line (edge.run_identity), or redone whole with --overwrite.
    schedule     --keyframes N and auto: background threads of the driver compute each sequence's keyframe schedule
                 once (chunks.sequence_schedule: the RGB only, a sequence's segments on threads at once, the cores
                 shared by the sequences); a sequence's first chunk runs meanwhile, the others once it is there.
    ADDRESS      none or `auto`: join the cluster RAY_ADDRESS names or a Ray instance running on this machine, else
                 start a local one (stopped at the end); `local`: always a new local one; HOST:PORT (or ray://...):
                 join that cluster (checked first: an address nobody answers at is one line, not Ray's minutes of
                 retries).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from smoothdino.core.backends import backend_word
from smoothdino.core.console import adapter_state, console, random_weights_notice, untrained_adapter_notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_text, process_alive, remove_stale_temporaries
from smoothdino.edge.engines import Manifest
from smoothdino.edge.fusion import fusion_info
from smoothdino.edge.loop import StreamReport
from smoothdino.edge.run_identity import RunIdentity
from smoothdino.edge.sinks import DISPLAY_RANGE

from .chunks import (
    CHUNKS,
    MARKER,
    Chunk,
    ChunkJob,
    KeyframeSchedule,
    SequencePlan,
    assemble,
    chunk_size,
    cut,
    finished,
    plan_sequences,
    sequence_schedule,
)
from .process import claim_sequence_folder
from .tables import stream_table

RETRIES = 3  # a worker is started again (and its chunk retried) at most this many times


@dataclass
class ClusterOptions:
    engines: Path  # the export folder, on storage every node sees
    address: str | None = "auto"
    backend: str = "auto"
    threads: int | None = None  # CPU workers: ONNX Runtime threads and Ray CPUs a worker (default 1)
    chunk: int | None = None  # frames a chunk (default: chunks.chunk_size)
    pipeline_options: dict = field(default_factory=dict)  # min_confidence, motion_downscale


@dataclass
class ClusterRun:
    reports: list[StreamReport]
    workers: int = 0
    chunk_size: int = 0
    chunks: list[dict] = field(default_factory=list)  # done.json of every chunk run now, + the driver's wall_ms
    opened: list[dict] = field(default_factory=list)  # each worker's open(): description, open_ms
    startup_seconds: float = 0.0  # the workers started and their exports opened
    wall_seconds: float = 0.0  # from then to the last sequence's outputs written
    interrupted: bool = False

    @property
    def retried(self) -> list[dict]:
        return [c for c in self.chunks if c.get("retried")]


def import_ray():
    try:
        import ray
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "ray":
            raise
        from smoothdino.core.extras import install_extra

        raise UserError(f"--ray needs the 'cluster' extra (ray is not installed in {sys.prefix}): "
                        f"{install_extra('cluster')}") from None
    return ray


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT, ray://HOST:PORT or HOST (Ray's port 6379) -> (host, port), or one line."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, ":", "6379")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--ray {address}: give HOST:PORT of the cluster's head (ray start --head prints it), "
                        "ray://HOST:PORT, or auto")
    return host.strip("[]"), int(port)


def connect(ray, address: str | None) -> bool:
    """Join or start Ray (see the module's ADDRESS); True when this call connected (and so disconnects at the end)."""
    word = (address or "auto").strip()
    remote = word.lower() not in ("auto", "none", "", "local")
    if remote:
        host, port = parse_address(word)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as err:
            raise UserError(f"--ray {word}: no Ray cluster answers there ({err.strerror or err}); start one with "
                            "`ray start --head` or give its head's HOST:PORT") from None
    if ray.is_initialized():  # a program (or test) that joined a cluster already: run on it
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    try:
        if word.lower() == "local":
            ray.init(address="local", **kwargs)
        else:
            ray.init(address=(word if ":" in word else f"{host}:{port}") if remote else None, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UserError(f"--ray {word}: cannot join that Ray cluster ({str(err).splitlines()[0]})") from None
    return True


def worker_slots(resources: dict, backend: str, threads: int | None) -> tuple[int, dict]:
    """(workers, Ray resources of each): one per GPU for the TensorRT back-ends, else one per `threads` CPUs."""
    gpus = int(resources.get("GPU", 0))
    if gpus and backend_word(backend) != "onnxruntime":
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    per = max(1, threads or 1)
    return max(1, int(resources.get("CPU", 1)) // per), {"num_cpus": per}


def _cause(ray, err: BaseException) -> BaseException:
    """The worker's own exception inside Ray's wrapper: a UserError stays one line."""
    cause = getattr(err, "cause", None) if isinstance(err, ray.exceptions.RayTaskError) else None
    return cause if isinstance(cause, UserError) else err


def process(options, cluster: ClusterOptions) -> list[StreamReport]:
    """`process --ray`: prints the table and the cluster's footer; returns the sequences' reports."""
    result = run(options, cluster)
    if result.reports:  # the sequences whose outputs are all written
        console.print(stream_table(result.reports, f"processed on {result.workers} Ray workers -> {options.out}"))
    runs = len(result.chunks)
    line = f"{runs} chunks of up to {result.chunk_size} frames run on {result.workers} workers"
    if result.retried:
        reused = sum(c["reused"] for c in result.retried)
        line += (f"; {len(result.retried)} retried after a worker was lost ("
                 + ", ".join(f"{c['sequence']} {c['start']}-{c['end'] - 1}" for c in result.retried)
                 + f"; {reused} frames reused)")
    console.print(line)
    if result.interrupted:
        console.print(f"interrupted: outputs so far are written; {options.again}")
        return result.reports or [StreamReport(name="", interrupted=True)]
    return result.reports


def run(options, cluster: ClusterOptions, show: bool = True) -> ClusterRun:
    """Every sequence of `options` (a ProcessOptions) on the cluster; see the module."""
    ray = import_ray()
    if cluster.chunk is not None and cluster.chunk < 1:
        raise UserError(f"--chunk {cluster.chunk}: give 1 or more frames")
    plans = plan_sequences([Path(s) for s in options.sequences], options.robot, options.limit,
                           options.carry, options.keyframes, options.fusion)
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, recursive=True)  # what killed runs of this host left (another's: its workers')
    token = uuid.uuid4().hex
    atomic_write_text(out / MARKER, token + "\n")
    ours = connect(ray, cluster.address)
    driver = _Driver(ray, options, cluster, plans, out, token, show)
    try:
        return driver.run()
    finally:
        driver.stop_workers()
        if ours:
            ray.shutdown()


class _Driver:
    def __init__(self, ray, options, cluster: ClusterOptions, plans: list[SequencePlan], out: Path, token: str,
                 show: bool):
        self.ray, self.options, self.cluster, self.plans = ray, options, cluster, plans
        self.out, self.token = out, token
        self.show = show
        self.actors: list = []
        self.stop = threading.Event()
        self.result = ClusterRun(reports=[])
        self._task = None  # the progress bar's

    # -- workers ----------------------------------------------------------------------------------------------

    def start_workers(self, count: int, resources: dict) -> dict:
        from .cluster_worker import ChunkWorker

        options = ChunkWorker.options(**resources, max_restarts=RETRIES, max_task_retries=RETRIES)
        # a CPU worker's ONNX Runtime threads are the CPUs Ray gives it
        threads = self.cluster.threads or (None if "num_gpus" in resources else resources["num_cpus"])
        pipeline_options = {"threads": threads, **self.cluster.pipeline_options}
        engines = str(Path(self.cluster.engines).resolve())
        self.actors = [options.remote(str(self.out), self.token, engines, self.cluster.backend, pipeline_options)
                       for _ in range(count)]
        infos = self._get([a.open.remote() for a in self.actors])
        for info in infos:
            if "error" in info:
                raise UserError(info["error"])
        self.result.opened = infos
        return infos[0]

    def stop_workers(self) -> None:
        """Kill the workers. One killed mid-chunk (Ctrl-C) leaves its reserve and maybe a temporary file: once this
        host's worker processes are gone, what they left under --out is removed (another host's are removed by the
        next run's workers there, as their chunks start)."""
        if not self.actors:
            return
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - gone already
                pass
        self.actors = []
        here = [info["pid"] for info in self.result.opened if info.get("node") == socket.gethostname()]
        deadline = time.monotonic() + 10.0
        while any(process_alive(pid) for pid in here) and time.monotonic() < deadline:
            time.sleep(0.05)
        remove_stale_temporaries(self.out, recursive=True)

    def _get(self, refs):
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayError as err:
            cause = _cause(self.ray, err)
            if cause is err:
                raise
            raise UserError(str(cause)) from None

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self) -> ClusterRun:
        options, out = self.options, self.out
        slots, resources = worker_slots(self.ray.cluster_resources(), self.cluster.backend, self.cluster.threads)
        total = sum(p.length for p in self.plans)
        size = self.cluster.chunk or chunk_size(total, slots)
        cut(self.plans, size)
        count = max(1, min(slots, sum(len(p.chunks) for p in self.plans)))
        begin = time.perf_counter()
        info = self.start_workers(count, resources)
        self.result.startup_seconds = time.perf_counter() - begin
        if info["random_weights"]:
            random_weights_notice()
        untrained_adapter_notice(info["weights"])
        if self.show:
            console.print(f"pipeline: {info['description']} on {count} Ray workers "
                          f"({', '.join(f'{k}={v}' for k, v in resources.items())} each)")
        workers = SimpleNamespace(**info)  # what the workers' pipelines are; with a sequence's policy, its identity
        self.identities = {p.name: RunIdentity.of(workers, p.policy, options.resize, carry=p.carry, fusion=p.fusion)
                           for p in self.plans}
        self.run_info = {"pipeline": info["description"], "backend": info["backend"],
                         "random_weights": info["random_weights"], "weights": info["weights"],
                         **adapter_state(info["weights"])}
        self.result.workers, self.result.chunk_size = count, size
        self.run_id = uuid.uuid4().hex[:12]
        self.dones: dict[str, dict[str, dict]] = {p.name: {} for p in self.plans}
        queue: deque[ChunkJob] = deque()
        waiting: dict[str, list[Chunk]] = {}  # chunks that prime from their sequence's schedule, until it is there
        for plan in self.plans:  # every folder claimed (or refused) before any chunk runs
            claim_sequence_folder(out / plan.name, self.identities[plan.name], options.overwrite)
            if not options.resume:
                shutil.rmtree(out / plan.name / CHUNKS, ignore_errors=True)
        for plan in self.plans:
            scheduled = not plan.bag and plan.policy.mode != "every"
            for chunk in plan.chunks:
                done = options.resume and finished(chunk, out, self.identities[plan.name])
                if done:
                    self.dones[plan.name][chunk.key] = done
                elif scheduled and chunk.start > 0:
                    waiting.setdefault(plan.name, []).append(chunk)
                else:  # every (or a bag) primes without a schedule; a first chunk has nothing to prime
                    queue.append(self._job(chunk))
        self.frames_total = total
        self.frames_done = sum(d["end"] - d["start"] for ds in self.dones.values() for d in ds.values())
        self.frames_start = self.frames_done
        start = time.perf_counter()
        finals: dict[str, Future] = {}
        refuse_size = Manifest.load(Path(self.cluster.engines)).check_frame_size
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="assemble") as writer, \
                ThreadPoolExecutor(max_workers=max(1, min(len(waiting), os.cpu_count() or 1)),  # a sequence a core
                                   thread_name_prefix="schedule") as planner, self._bar() as bar:
            try:
                threads = max(1, (os.cpu_count() or 1) // max(1, len(waiting)))  # the cores, shared by the sequences
                schedules = {planner.submit(sequence_schedule, plan, out, plan.policy, self.identities[plan.name],
                                            lambda h, w, path=plan.path: refuse_size(h, w, str(path)),
                                            self.stop.is_set, threads): plan.name
                             for plan in self.plans if plan.name in waiting}
                for plan in self.plans:
                    self._complete(plan, finals, writer)
                self._schedule(queue, waiting, schedules, finals, writer, bar, start)
            except KeyboardInterrupt:
                self.result.interrupted = True
                self.stop.set()  # a video being written is dropped, never left half-written
                self.stop_workers()
            except BaseException:
                self.stop.set()
                raise
            reports = {}
            for name, future in finals.items():
                try:
                    reports[name] = future.result()
                except KeyboardInterrupt:  # Ctrl-C while the last outputs were written
                    self.result.interrupted = True
                    self.stop.set()
        self.result.wall_seconds = time.perf_counter() - start
        for name, report in reports.items():  # a sequence's FPS: its frames over the span its chunks ran in
            spans = [d for d in self.dones[name].values() if "finished_at" in d]
            if spans:
                report.wall_seconds = max(d["finished_at"] for d in spans) - min(d["submitted_at"] for d in spans)
        self.result.reports = [reports[p.name] for p in self.plans if p.name in reports]
        for report in self.result.reports:
            report.interrupted = self.result.interrupted
        return self.result

    def _job(self, chunk: Chunk, schedule: KeyframeSchedule | None = None) -> ChunkJob:
        o, plan = self.options, next(p for p in self.plans if p.name == chunk.name)
        prime_from, decisions = schedule.priming(chunk.start, chunk.end) if schedule else (None, None)
        return ChunkJob(chunk=chunk, out=str(self.out), run_id=self.run_id, policy=plan.policy,
                        identity=self.identities[plan.name], carry=plan.carry, fusion=plan.fusion, resume=o.resume,
                        resize=o.resize, limit=o.limit, robot=o.robot,
                        run_info={**self.run_info, **fusion_info(plan.fusion)}, prime_from=prime_from,
                        schedule=decisions)

    def _complete(self, plan: SequencePlan, finals: dict, writer: ThreadPoolExecutor) -> None:
        """All of a sequence's chunks done: its metrics and video written in the background."""
        dones = self.dones[plan.name]
        if plan.name in finals or len(dones) < len(plan.chunks):
            return
        o = self.options
        retried = sum(bool(d.get("retried")) for d in dones.values())
        cluster_info = {"workers": self.result.workers, "chunk_size": self.result.chunk_size,
                        "chunks": len(plan.chunks), "retried_chunks": retried}
        finals[plan.name] = writer.submit(assemble, plan, dict(dones), self.out, video=o.video, robot=o.robot,
                                          limit=o.limit, random_weights=self.run_info["random_weights"],
                                          depth_range=getattr(o, "depth_range", None) or DISPLAY_RANGE,
                                          cluster_info=cluster_info, stop=self.stop.is_set)

    def _schedule(self, queue: deque, waiting: dict[str, list[Chunk]], schedules: dict[Future, str], finals: dict,
                  writer, bar, start: float) -> None:
        ray = self.ray
        inflight: dict = {}  # chunk result ref -> (worker index, job, submitted at)
        idle = list(range(len(self.actors)))

        def submit(worker: int) -> None:
            job = queue.popleft()
            inflight[self.actors[worker].run.remote(job)] = (worker, job, time.perf_counter())

        polls: dict[int, tuple] = {}  # actor index -> (progress ref, sent at)
        answered: dict[int, float] = {}
        running: dict[int, int] = {}
        last_poll = 0.0
        while queue or inflight or schedules:
            for future in [f for f in schedules if f.done()]:  # a sequence's schedule is there: its chunks can run
                schedule, chunks = future.result(), waiting.pop(schedules.pop(future))
                if schedule is not None:  # None: stopped (Ctrl-C) before the end
                    queue.extend(self._job(chunk, schedule) for chunk in chunks)
            while queue and idle:
                submit(idle.pop())
            if not inflight:  # nothing runs: wait for a schedule
                wait(list(schedules), timeout=0.2, return_when=FIRST_COMPLETED)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.2) if inflight else ([], [])
            for ref in ready:
                worker, job, sent = inflight.pop(ref)
                done = self._get(ref)
                running[worker] = 0
                now = time.perf_counter()
                done.update(wall_ms=(now - sent) * 1000.0, submitted_at=sent - start, finished_at=now - start)
                self.result.chunks.append(done)
                self.dones[job.chunk.name][job.chunk.key] = done
                self.frames_done += job.chunk.frames
                self._complete(next(p for p in self.plans if p.name == job.chunk.name), finals, writer)
                if queue:
                    submit(worker)
                else:
                    idle.append(worker)
            now = time.perf_counter()
            if now - last_poll > 0.5:  # progress within the running chunks, and which workers answer
                last_poll = now
                for i, actor in enumerate(self.actors):
                    if i not in polls:
                        polls[i] = (actor.progress.remote(), now)
                refs = [ref for ref, _ in polls.values()]
                got, _ = ray.wait(refs, num_returns=len(refs), timeout=0.05)
                for i in [i for i, (ref, _) in polls.items() if ref in got]:
                    ref, _ = polls.pop(i)
                    try:
                        _, running[i] = ray.get(ref)
                        answered[i] = now
                    except ray.exceptions.RayError:
                        running[i] = 0
                        answered.pop(i, None)
            alive = sum(1 for t in answered.values() if now - t < 3.0)
            self._update(bar, sum(running.values()) if inflight else 0, alive, now - start)

    # -- progress ---------------------------------------------------------------------------------------------

    def _bar(self):
        if not self.show:
            return _NoBar()
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[workers]}"),
                        TimeRemainingColumn(), console=console)

    def _update(self, bar, running: int, alive: int, elapsed: float) -> None:
        if not self.show:
            return
        if self._task is None:
            self._task = bar.add_task("cluster", total=self.frames_total, rate="", workers="")
        done = min(self.frames_total, self.frames_done + running)
        fps = (done - self.frames_start) / elapsed if elapsed > 0 else 0.0
        bar.update(self._task, completed=done, rate=f"{fps:.1f} frames/s",
                   workers=f"{alive}/{len(self.actors)} workers")


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
