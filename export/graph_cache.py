"""The FP32 graphs exports traced, kept for the next export of the same stage ($SMOOTHDINO_HOME/graphs).

Tracing a PyTorch module to ONNX and checking the graph (`onnx.checker`) is the fixed cost of every export (4-15 s
on 2 cores). A stage's FP32 graph depends only on what `graph_key` holds, so another export with the same key
(another precision, `bench --precisions`, another adapter over the same encoder, a re-export after a refused gate,
`process` exporting on the fly) copies it instead of tracing again. The comparison with PyTorch runs on every export
all the same, on that export's own frame: a copied graph is checked like a traced one.

The key of a stage: the stage, what builds its module (encoder: arch, frame size, batch and the encoder's weights;
adapter: also the adapter and its weights; decoder: arch, head, adapter, size, batch and every weight but the
encoder's, since `paper` folds its adapter into the decoder), the weights' ids (SHA-256 of real files, the seed of
random ones), the versions of Python, PyTorch and onnx, the opset, and a hash of this package's source, so that any
change to the code makes new keys. Each entry keeps its graph's SHA-256, checked on every use: an entry that differs
is removed and the stage traced again. At most KEEP entries, the least recently used removed first (an encoder's
is 90-350 MB: the weights are in the graph). SMOOTHDINO_GRAPH_CACHE=0 turns the cache off."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from smoothdino.core.files import sha256_of
from smoothdino.core.paths import smoothdino_home

KEEP = 12
RECORD = "graph.json"
GRAPH = "graph.onnx"
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


def graph_key(spec, weights: dict[str, str], stage: str) -> str:
    import onnx
    import torch

    from .onnx import OPSET

    builds = {"arch": spec.arch, "size": list(spec.size), "batch": spec.batch}
    if stage == "encoder":
        builds["weights"] = {"encoder": weights["encoder"]}
    elif stage == "adapter":
        builds.update(adapter=spec.adapter, weights={"adapter": weights.get("adapter")})
    else:
        builds.update(head=spec.head, adapter=spec.adapter, weights={k: v for k, v in weights.items() if k != "encoder"})
    fields = {"stage": stage, **builds, "opset": OPSET, "python": platform.python_version(),
              "torch": torch.__version__, "onnx": onnx.__version__, "source": source_hash()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def fetch(key: str, target: Path) -> bool:
    """Copy the entry's graph to `target`; False on a miss (nothing written)."""
    root = cache_dir()
    entry = root / key if root else None
    if entry is None or not (entry / RECORD).is_file():
        return False
    try:
        sha = json.loads((entry / RECORD).read_text())["sha256"]
        shutil.copyfile(entry / GRAPH, target)
        if sha256_of(target) != sha:  # changed on disk since it was kept: never use it
            target.unlink()
            shutil.rmtree(entry, ignore_errors=True)
            return False
        os.utime(entry)  # recently used
        return True
    except (OSError, ValueError, KeyError):  # removed by another export meanwhile, or unreadable: trace
        Path(target).unlink(missing_ok=True)
        return False


def keep(key: str, graph: Path) -> None:
    """Keep `graph` under `key`; a full disk or a race only skips keeping."""
    root = cache_dir()
    if root is None:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
        try:
            shutil.copyfile(graph, staging / GRAPH)
            (staging / RECORD).write_text(json.dumps({"sha256": sha256_of(staging / GRAPH)}))
            os.rename(staging, root / key)  # whole or absent; another export may have kept it first
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _prune(root)
    except OSError:
        return


def _prune(root: Path) -> None:
    for abandoned in root.glob(".incoming-*"):  # a process killed while keeping an entry
        if time.time() - abandoned.stat().st_mtime > 3600:
            shutil.rmtree(abandoned, ignore_errors=True)
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[KEEP:]:
        shutil.rmtree(stale, ignore_errors=True)
