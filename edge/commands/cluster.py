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
                 frames are skipped and counted, as `process` does.
    ADDRESS      none or `auto`: join the cluster RAY_ADDRESS names or a Ray instance running on this machine, else
                 start a local one (stopped at the end); `local`: always a new local one; HOST:PORT (or ray://...):
                 join that cluster (checked first: an address nobody answers at is one line, not Ray's minutes of
                 retries).
"""

from __future__ import annotations

import shutil
import socket
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from smoothdino.core.backends import backend_word
from smoothdino.core.console import console, random_weights_notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_text
from smoothdino.edge.loop import StreamReport, claim_output_folder
from smoothdino.edge.sinks import DISPLAY_RANGE

from .chunks import (
    CHUNKS,
    MARKER,
    Chunk,
    ChunkJob,
    SequencePlan,
    assemble,
    chunk_size,
    cut,
    finished,
    needs_replay_from_start,
    plan_sequences,
)
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
        raise UserError(f"--ray needs the 'cluster' extra (ray is not installed in {sys.prefix}): "
                        "pip install 'smoothdino-edge[cluster]'") from None
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
    again = sum(bool(c.get("from_start")) for c in result.chunks)
    if again:
        line += f" ({again} again, primed from the first frame: --keyframes N after a corrupt frame)"
    if result.retried:
        reused = sum(c["reused"] for c in result.retried)
        line += (f"; {len(result.retried)} retried after a worker was lost ("
                 + ", ".join(f"{c['sequence']} {c['start']}-{c['end'] - 1}" for c in result.retried)
                 + f"; {reused} frames reused)")
    console.print(line)
    if result.interrupted:
        console.print("interrupted: outputs so far are written; run the same command to resume")
        return result.reports or [StreamReport(name="", interrupted=True)]
    return result.reports


def run(options, cluster: ClusterOptions, show: bool = True) -> ClusterRun:
    """Every sequence of `options` (a ProcessOptions) on the cluster; see the module."""
    ray = import_ray()
    if cluster.chunk is not None and cluster.chunk < 1:
        raise UserError(f"--chunk {cluster.chunk}: give 1 or more frames")
    plans = plan_sequences([Path(s) for s in options.sequences], options.robot, options.limit)
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
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
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - gone already
                pass
        self.actors = []

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
        size = self.cluster.chunk or chunk_size(total, slots, options.keyframes)
        cut(self.plans, size)
        count = max(1, min(slots, sum(len(p.chunks) for p in self.plans)))
        begin = time.perf_counter()
        info = self.start_workers(count, resources)
        self.result.startup_seconds = time.perf_counter() - begin
        if info["random_weights"]:
            random_weights_notice()
        if self.show:
            console.print(f"pipeline: {info['description']} on {count} Ray workers "
                          f"({', '.join(f'{k}={v}' for k, v in resources.items())} each)")
        self.identity = info["identity"]
        self.run_info = {"pipeline": info["description"], "backend": info["backend"],
                         "random_weights": info["random_weights"], "weights": info["weights"]}
        self.result.workers, self.result.chunk_size = count, size
        self.run_id = uuid.uuid4().hex[:12]
        self.dones: dict[str, dict[str, dict]] = {p.name: {} for p in self.plans}
        queue: deque[ChunkJob] = deque()
        for plan in self.plans:
            folder = out / plan.name
            if not options.resume:
                shutil.rmtree(folder / CHUNKS, ignore_errors=True)
            (folder / "depth").mkdir(parents=True, exist_ok=True)
            claim_output_folder(folder / "depth", SimpleNamespace(identity=self.identity), options.resume)
            for chunk in plan.chunks:
                done = options.resume and finished(chunk, out, options.keyframes, self.identity, options.resize)
                if done:
                    self.dones[plan.name][chunk.key] = done
                else:
                    queue.append(self._job(chunk))
        self.frames_total = total
        self.frames_done = sum(d["end"] - d["start"] for ds in self.dones.values() for d in ds.values())
        self.frames_start = self.frames_done
        start = time.perf_counter()
        finals: dict[str, Future] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="assemble") as writer, self._bar() as bar:
            try:
                for plan in self.plans:
                    self._complete(plan, queue, finals, writer)
                self._schedule(queue, finals, writer, bar, start)
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

    def _job(self, chunk: Chunk, from_start: bool = False) -> ChunkJob:
        o = self.options
        return ChunkJob(chunk=chunk, out=str(self.out), run_id=self.run_id, policy=o.keyframes, identity=self.identity,
                        resume=o.resume and not from_start, resize=o.resize, limit=o.limit, robot=o.robot,
                        run_info=self.run_info, from_start=from_start)

    def _complete(self, plan: SequencePlan, queue: deque, finals: dict, writer: ThreadPoolExecutor) -> None:
        """All of a sequence's chunks done: run again those primed on a wrong guess (--keyframes N after a corrupt
        frame), else write its metrics and video in the background."""
        dones = self.dones[plan.name]
        if plan.name in finals or len(dones) < len(plan.chunks):
            return
        again = needs_replay_from_start(plan, dones, self.options.keyframes)
        if again:
            for chunk in again:
                del dones[chunk.key]
                self.frames_done -= chunk.frames
                queue.appendleft(self._job(chunk, from_start=True))
            return
        o = self.options
        retried = sum(bool(d.get("retried")) for d in dones.values())
        cluster_info = {"workers": self.result.workers, "chunk_size": self.result.chunk_size,
                        "chunks": len(plan.chunks), "retried_chunks": retried}
        finals[plan.name] = writer.submit(assemble, plan, dict(dones), self.out, video=o.video, robot=o.robot,
                                          limit=o.limit, random_weights=self.run_info["random_weights"],
                                          depth_range=getattr(o, "depth_range", None) or DISPLAY_RANGE,
                                          cluster_info=cluster_info, stop=self.stop.is_set)

    def _schedule(self, queue: deque, finals: dict, writer, bar, start: float) -> None:
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
        while queue or inflight:
            while queue and idle:
                submit(idle.pop())
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
                self._complete(next(p for p in self.plans if p.name == job.chunk.name), queue, finals, writer)
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
