"""A `process --ray` worker: a Ray actor that opens the export once per worker process and runs chunks
(edge.commands.chunks.run_chunk) for the driver (edge.commands.cluster). Imported only where Ray is installed.

One actor per GPU (num_gpus=1), or per --threads CPUs where the cluster has no GPU or the back-end is ONNX Runtime.
The export is opened lazily in the thread that runs the chunks (pycuda's context is current in one thread), and
again after Ray restarts a lost worker. `progress` answers from a second thread while a chunk runs.

TensorRT engines run only on the GPU model and TensorRT version they were built for. A worker whose GPU the export's
engines do not fit builds its own once per node from the export's ONNX graphs, with `smoothdino build` (which records
the GPU and TensorRT version in that copy's manifest.json), into $SMOOTHDINO_HOME/cluster-engines/<export>-<target>/;
one worker of the node builds while the others wait on a file lock, and later runs reuse the copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import ray
from smoothdino.core.backends import ONNXRUNTIME_BACKENDS, backend_word
from smoothdino.core.errors import UserError
from smoothdino.core.files import remove_stale_temporaries, temporary_path
from smoothdino.core.paths import smoothdino_home
from smoothdino.edge.engines import TENSORRT_BACKENDS, Manifest
from smoothdino.edge.machine.environment import gpu, tensorrt_usable, tensorrt_version
from smoothdino.edge.pipeline import DepthPipeline

from .chunks import ChunkJob, check_shared_out, run_chunk


def engines_for_this_node(folder: Path, backend: str) -> Path:
    """The export folder to open on this node: `folder` itself, or this node's own TensorRT build of it."""
    manifest = Manifest.load(folder)
    word = backend_word(backend)
    have_engines = all(manifest.stages[s].engine for s in manifest.stage_names)
    if word in ONNXRUNTIME_BACKENDS or (word == "auto" and not have_engines):
        return folder
    flavour = word if word in TENSORRT_BACKENDS else (manifest.tensorrt_flavour or "tensorrt")
    if not tensorrt_usable(flavour)[0]:
        return folder  # DepthPipeline falls back to ONNX Runtime and says so
    here, version = gpu(), tensorrt_version(flavour)
    if have_engines:
        try:
            manifest.check_tensorrt(version, here, flavour=flavour)
            return folder
        except UserError:
            pass  # built for another GPU or TensorRT: this node builds its own below
    export = hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()[:12]
    here = here or {}
    target = re.sub(r"[^A-Za-z0-9.]+", "-",
                    f"{here.get('name', 'gpu')}-sm{here.get('compute_capability')}-{flavour}{version}")
    local = smoothdino_home() / "cluster-engines" / f"{export}-{target}"
    local.parent.mkdir(parents=True, exist_ok=True)
    with open(local.with_name(local.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder a node; the others wait here, then open its engines
        if (local / "manifest.json").is_file():
            return local
        remove_stale_temporaries(local.parent)  # the copy of a build killed on this node
        tmp = temporary_path(local)
        shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("*.engine", "*.plan", "*.runtime-cache"))
        built = subprocess.run([sys.executable, "-m", "smoothdino.cli", "build", "--engines", str(tmp),
                                "--backend", flavour], check=False, capture_output=True, text=True)
        if built.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = (built.stderr or built.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"{folder}: building TensorRT engines for {target} on {socket.gethostname()} failed: "
                            f"{last[0]}")
        os.replace(tmp, local)
    return local


@ray.remote(concurrency_groups={"control": 1})
class ChunkWorker:
    def __init__(self, out: str, token: str, engines: str, backend: str, pipeline_options: dict):
        self.node = socket.gethostname()
        self.engines, self.backend, self.pipeline_options = engines, backend, pipeline_options
        self.pipeline: DepthPipeline | None = None
        self.open_ms = 0.0
        self.frames = 0  # frames of the running chunk done so far (progress)
        self.error: str | None = None
        try:
            check_shared_out(Path(out), token, self.node)
        except UserError as err:
            self.error = str(err)

    def open(self) -> dict:
        """The export, opened once for this worker process; what it is, or the one-line error."""
        if self.error is None and self.pipeline is None:
            start = time.perf_counter()
            try:
                folder = engines_for_this_node(Path(self.engines), self.backend)
                self.pipeline = DepthPipeline.from_folder(folder, backend=self.backend, **self.pipeline_options)
            except UserError as err:
                self.error = str(err)
            self.open_ms = (time.perf_counter() - start) * 1000.0
        if self.error is not None:
            return {"error": self.error}
        p = self.pipeline
        return {"pid": os.getpid(), "node": self.node, "description": p.description, "backend": p.backend,
                "weights": p.weights, "random_weights": p.random_weights, "identity": p.identity,
                # with the job's policy and resizing, the run's identity (edge.run_identity.RunIdentity.of)
                "precision": p.precision, "frame_size": tuple(p.frame_size), "min_confidence": p.min_confidence,
                "motion_downscale": p.motion_downscale, "open_ms": self.open_ms}

    def run(self, job: ChunkJob) -> dict:
        info = self.open()
        if "error" in info:
            raise UserError(info["error"])
        self.frames = 0

        def count(report) -> None:
            self.frames = report.computed + report.reused + report.skipped

        try:
            done = run_chunk(self.pipeline, job, count)
        finally:
            self.frames = 0
        done["open_ms"] = self.open_ms
        return done

    @ray.method(concurrency_group="control")
    def progress(self) -> tuple[int, int]:
        """(this worker's pid, frames of its running chunk done), answered while a chunk runs."""
        return os.getpid(), self.frames
