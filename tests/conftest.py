from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NYU = ROOT.parent / "shared" / "data" / "nyu2_sample"

os.environ.setdefault("SMOOTHDINO_HOME", str(ROOT / ".pytest_cache" / "smoothdino_home"))

# pytest keeps each test module as rewritten for its asserts in tests/__pycache__, unless bytecode writing is off
# (PYTHONDONTWRITEBYTECODE, set on this machine): then every pytest process rewrites all of them again (collection 10 s, not
# 4.5 s). On for this process only; the processes a test starts keep their environment.
sys.dont_write_bytecode = False


# -- two phases (`make test`) -------------------------------------------------------------------------------------
# Phase 1 runs every test not marked `alone` on all cores with pytest-xdist, a module (or all the Ray modules) a
# worker at a time, so module fixtures are built once; the modules that take longest go first. Each worker computes
# with one thread (ONNX Runtime, torch, and the processes a test starts), so workers never fight over threads.
# Phase 2 runs the `alone` tests one at a time on an otherwise idle machine: they compare rates or latencies (a loop
# under attack against the same loop quiet, a window painted in time), which a neighbour's load would falsify.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    os.environ.setdefault("SMOOTHDINO_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1 if WORKER else 2)


def pytest_sessionstart(session):
    if not WORKER:  # the `alone` tests time the live loop: what ran before (gigabytes of graphs) on disk first,
        os.sync()   # not in the middle of one of their fsyncs


@pytest.fixture(scope="session")
def nyu_root() -> Path:
    if not NYU.is_dir():
        pytest.skip(f"{NYU} is absent (shared NYUv2 sample)")
    return NYU


@pytest.fixture(scope="session")
def nyu_scene(nyu_root) -> Path:
    return nyu_root / "basement_0001a_out"


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """An empty weights cache for one test."""
    monkeypatch.setenv("SMOOTHDINO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def textured_rgb() -> np.ndarray:
    """A deterministic textured 70x98 RGB frame (uint8)."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, size=(14, 20, 3)).astype(np.float32)
    import cv2

    return cv2.resize(base, (98, 70), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


SMALL = (70, 98)


def _spec(**kw):
    from smoothdino.export import ExportSpec

    return ExportSpec(**{"arch": "vits14", "adapter": "temporal", "size": SMALL, "precision": "fp16",
                         "backend": "onnx", "random_weights": True, "calibration_frames": 2, **kw})


def _export(out: Path, **kw):
    from smoothdino.export import export_model

    export_model(_spec(**kw), out)
    return out


def _shared_export(name: str, **kw) -> Path:
    """An export every process of the suite shares (the xdist workers and the `alone` phase): built once, under a
    lock, in .pytest_cache/test-exports/<key>/<name> (ensure_export: rebuilt where its spec changed), <key> a hash
    of the package's source and the versions that make a graph; a folder of another key (older code) is removed.
    Its tests only read it."""
    import hashlib
    import shutil

    import onnx
    import onnxruntime
    import torch
    from filelock import FileLock

    from smoothdino.export.exporter import ensure_export
    from smoothdino.export.graph_cache import source_hash

    key = hashlib.sha256(f"{source_hash()} {torch.__version__} {onnx.__version__} {onnxruntime.__version__}".encode())
    root = ROOT / ".pytest_cache" / "test-exports"
    folder = root / key.hexdigest()[:16] / name
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        for stale in root.iterdir():
            if stale.is_dir() and stale.name != folder.parent.name:
                shutil.rmtree(stale, ignore_errors=True)
        ensure_export(_spec(**kw), folder)  # reused as built by another process of this run, or an earlier run
    return folder


@pytest.fixture(scope="session")
def small_export() -> Path:
    """vits14 + temporal adapter, FP16 and FP32 graphs at 70x98, random weights (synthetic calibration)."""
    return _shared_export("temporal")


@pytest.fixture(scope="session")
def small_export_fp32() -> Path:
    return _shared_export("temporal32", precision="fp32")


# -- one local Ray instance for the suite ------------------------------------------------------------------------
# Starting Ray costs 10-20 s on 2 cores, and three modules need it (test_cluster, test_leftovers, test_first_hour).
# They share one session instance: pytest_collection_modifyitems runs those modules one after another (the one
# with the most tests that need no Ray last, its Ray tests first) and pytest_runtest_teardown shuts Ray down right
# after the last test that uses it, so no Ray process idles through the rest of the suite.

RAY_FIXTURE = "ray_cluster"
_last_ray_test: list = []  # [the last item that uses Ray]


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance with 2 CPUs; its GCS address (HOST:PORT). Shut down after the last test that uses it."""
    ray = pytest.importorskip("ray")
    # Ray starts its workers at nice 15, below every test beside them: on a busy machine (the other xdist workers)
    # its chunks crawled, 19 s -> 110 s for one test. Here they run at the tests' own priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        _shutdown_ray()


def _shutdown_ray() -> None:
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _uses_ray(item) -> bool:
    return RAY_FIXTURE in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(session, config, items):
    _order_for_ray(items)
    if WORKER:
        _longest_first(items)
    _last_ray_test[:] = [item for item in items if _uses_ray(item)][-1:]


def _longest_first(items) -> None:
    """The modules marked `slow` and the Ray modules first, so that no long unit of work starts last (the scheduler
    below keeps the collection's order, given --no-loadscope-reorder)."""
    first = {item.path for item in items if _uses_ray(item) or item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in first)  # stable: the order within a module is kept


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook
def pytest_xdist_auto_num_workers(config):
    """`-n auto` (make test): one worker more than the CPUs this process may run on (its affinity: a container's
    share, not the host's count), since a worker waiting on Ray, a child process or a socket leaves its CPU to the
    others (on 2 CPUs, 3 workers took 4 % less time than 2); at most one per 3 GB of memory (an export at 480x640
    peaks at 2.2 GB)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(cpus + 1, int(memory_gb // 3)))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with one change: the modules that use the Ray fixture are one unit of work, so the suite
    starts one Ray instance. (`--dist loadgroup` would do it with marks, but pytest 9's node ids ignore the group
    suffix xdist 3.8 adds, so its groups are not kept together.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = config.rootpath

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "ray" if _module_uses_ray(root / module) else module

    return ModuleScheduling(config, log)


@functools.cache
def _module_uses_ray(path: Path) -> bool:
    return path.name != "conftest.py" and RAY_FIXTURE in path.read_text()


def _order_for_ray(items) -> None:
    modules: dict = {}  # module path -> its items, in collection order
    for item in items:
        modules.setdefault(item.path, []).append(item)
    ray_modules = [path for path, its in modules.items() if any(map(_uses_ray, its))]
    if ray_modules:
        first, rest = ray_modules[0], sorted(ray_modules[1:], key=lambda p: sum(not _uses_ray(i) for i in modules[p]))
        group = list(modules[first])
        for path in rest:
            its = modules[path]
            if path == rest[-1]:  # the last module: its Ray tests first, so Ray stops before its others run
                its = [i for i in its if _uses_ray(i)] + [i for i in its if not _uses_ray(i)]
            group += its
        grouped = set(ray_modules)
        reordered = []
        for path, its in modules.items():
            if path == first:
                reordered += group
            elif path not in grouped:
                reordered += its
        items[:] = reordered


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if _last_ray_test and item is _last_ray_test[0]:
        _shutdown_ray()

