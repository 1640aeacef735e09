"""The FP32 graphs an export traced, kept for the next export of the same model ($SMOOTHDINO_HOME/graphs).

Tracing the three PyTorch modules to ONNX and checking each against PyTorch is the fixed cost of every export
(4-15 s on 2 cores). The FP32 graphs depend only on what `graph_key` holds, so another export with the same key
(another precision, `bench --precisions`, a re-export after a refused gate, `process` exporting on the fly) copies
them and their recorded ONNX-vs-PyTorch errors instead of tracing again.

The key: the model (arch, head, adapter, frame size, batch), the weights' ids (SHA-256 of real files; the seed of
random ones), the example frame the graphs are checked on, the versions of Python, PyTorch, onnx and ONNX Runtime,
the opset, and a hash of this package's source, so any change to the code makes new keys. Each entry records its
files' SHA-256, checked on every use: an entry that differs is removed and the graphs are traced again. At most
KEEP entries, the least recently used removed first (an entry is 60-450 MB: the weights are in the graphs).
SMOOTHDINO_GRAPH_CACHE=0 turns the cache off."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

from smoothdino.core.files import sha256_of
from smoothdino.core.paths import smoothdino_home

KEEP = 6
RECORD = "graphs.json"
SOURCE_FOLDERS = ("models", "export", "core", "edge", "calibration")  # what builds and checks a graph


def cache_dir() -> Path | None:
    """The cache's folder, or None where SMOOTHDINO_GRAPH_CACHE=0."""
    if os.environ.get("SMOOTHDINO_GRAPH_CACHE", "1").strip() in ("0", "off", "no", "false"):
        return None
    return smoothdino_home() / "graphs"


PACKAGE = Path(__file__).resolve().parents[1]


@functools.cache
def source_hash(root: Path = PACKAGE) -> str:
    """SHA-256 of the package's Python source under `root`: the folders that build and check graphs, and the top
    level (cli.py)."""
    files = sorted(p for folder in SOURCE_FOLDERS for p in (root / folder).rglob("*.py")) + sorted(root.glob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def graph_key(spec, weights: dict[str, str], example: bytes, stages: list[str]) -> str:
    import onnx
    import onnxruntime
    import torch

    from .onnx import OPSET

    fields = {"arch": spec.arch, "head": spec.head, "adapter": spec.adapter, "size": list(spec.size),
              "batch": spec.batch, "stages": stages, "weights": weights,
              "example": hashlib.sha256(example).hexdigest(), "opset": OPSET, "python": platform.python_version(),
              "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
              "source": source_hash()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def fetch(key: str, out: Path) -> dict[str, dict[str, float]] | None:
    """Copy the entry's graphs into `out` as <stage>.onnx; {stage: ONNX-vs-PyTorch errors}, or None on a miss."""
    root = cache_dir()
    entry = root / key if root else None
    if entry is None or not (entry / RECORD).is_file():
        return None
    try:
        record = json.loads((entry / RECORD).read_text())
        for stage, sha in record["sha256"].items():
            target = out / f"{stage}.onnx"
            shutil.copyfile(entry / f"{stage}.onnx", target)
            if sha256_of(target) != sha:  # changed on disk since it was kept: never use it
                target.unlink()
                shutil.rmtree(entry, ignore_errors=True)
                return None
        os.utime(entry)  # recently used
        return record["errors"]
    except (OSError, ValueError, KeyError):  # removed by another export meanwhile, or unreadable: trace
        return None


def keep(key: str, out: Path, errors: dict[str, dict[str, float]]) -> None:
    """Keep `out`'s <stage>.onnx for `errors`' stages under `key`; a full disk or a race only skips keeping."""
    root = cache_dir()
    if root is None:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
        try:
            sha = {}
            for stage in errors:
                shutil.copyfile(out / f"{stage}.onnx", staging / f"{stage}.onnx")
                sha[stage] = sha256_of(staging / f"{stage}.onnx")
            (staging / RECORD).write_text(json.dumps({"sha256": sha, "errors": errors}, indent=1))
            os.rename(staging, root / key)  # whole or absent; another export may have kept it first
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _prune(root)
    except OSError:
        return


def _prune(root: Path) -> None:
    import time

    for abandoned in root.glob(".incoming-*"):  # a process killed while keeping an entry
        if time.time() - abandoned.stat().st_mtime > 3600:
            shutil.rmtree(abandoned, ignore_errors=True)
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[KEEP:]:
        shutil.rmtree(stale, ignore_errors=True)
