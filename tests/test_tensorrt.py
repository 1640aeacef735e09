"""The TensorRT path. It cannot run on machines without NVIDIA's libraries and a GPU, so:
- every TensorRT name our code uses is checked against the compiled bindings of the tensorrt-cu13-bindings
  wheel (TensorRT 11; its module cannot import here, but its names are readable in it);
- the build and the engine wiring are exercised where TensorRT, pycuda and a GPU exist, and skipped elsewhere.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TRT_MODULES = [ROOT / "export" / "tensorrt.py", ROOT / "edge" / "tensorrt_engine.py"]
# Variables that hold TensorRT objects in those modules (builder, network, parser error, engine, ...).
TRT_OBJECTS = {"trt", "builder", "network", "parser", "config", "e", "engine", "context", "runtime", "cache",
               "serialized", "logger"}
NOT_TENSORRT = {"read_bytes", "write_bytes", "is_file", "append", "errors"}  # pathlib / our own attributes


def tensorrt_names_used() -> set[str]:
    names = set()
    for path in TRT_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value
            while isinstance(base, ast.Attribute) and not (isinstance(base.value, ast.Name) and base.value.id == "self"):
                base = base.value
            root = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if root in TRT_OBJECTS and node.attr not in NOT_TENSORRT:
                names.add(node.attr)
    return names


def bindings_text() -> tuple[bytes, str]:
    try:
        files = importlib.metadata.files("tensorrt-cu13-bindings") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorrt-cu13-bindings is not installed (pip install -e .[dev] on Linux x86_64)")
    so = next(f for f in files if f.name.startswith("tensorrt") and f.name.endswith(".so"))
    init = next(f for f in files if f.name == "__init__.py" and f.parent.name == "tensorrt_bindings")
    return Path(so.locate()).read_bytes(), Path(init.locate()).read_text()


def test_every_tensorrt_name_exists_in_tensorrt_11_bindings():
    compiled, python = bindings_text()
    used = tensorrt_names_used()
    # The names we rely on are all seen by the scan (a guard against the scan silently missing them).
    assert {"STRONGLY_TYPED", "set_memory_pool_limit", "create_timing_cache", "build_serialized_network",
            "deserialize_cuda_engine", "set_tensor_address", "execute_async_v3", "get_tensor_mode",
            "nptype", "TensorIOMode", "INPUT", "parse_from_file", "get_error"} <= used
    missing = []
    for name in sorted(used):
        # pybind11 registers names as NUL-terminated strings; the linker may merge one into the tail of a
        # longer string (INPUT inside CONDITIONAL_INPUT), so match the tail. Python-level helpers such as
        # nptype live in the package's __init__.py.
        in_compiled = re.search(re.escape(name.encode()) + rb"\x00", compiled) is not None
        in_python = re.search(rf"\b(def|class)\s+{re.escape(name)}\b|\b{re.escape(name)}\s*=", python) is not None
        if not (in_compiled or in_python):
            missing.append(name)
    assert not missing, f"not in the TensorRT 11 bindings: {missing}"


def test_removed_apis_are_not_used():
    """TensorRT 11 dropped the precision builder flags, the INT8 calibrators and implicit-batch APIs."""
    source = "\n".join(p.read_text() for p in TRT_MODULES)
    for gone in ("BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8", "EXPLICIT_BATCH", "execute_v2",
                 "get_binding_index", "build_engine(network"):
        assert gone not in source, gone


def test_modules_import_without_tensorrt():
    import smoothdino.edge.tensorrt_engine  # noqa: F401
    import smoothdino.export.tensorrt as t
    from smoothdino.core.errors import UserError

    try:
        import tensorrt  # noqa: F401
    except Exception:
        with pytest.raises(UserError, match="TensorRT is not importable"):
            t.require_tensorrt()


def _gpu_tensorrt():
    trt = pytest.importorskip("tensorrt")
    cuda = pytest.importorskip("pycuda.driver")
    try:
        cuda.init()
        assert cuda.Device.count() > 0
    except Exception:
        pytest.skip("no CUDA device")
    return trt


def test_engines_build_and_match_onnxruntime(small_export, tmp_path):
    _gpu_tensorrt()
    import shutil

    from smoothdino.edge.manifest import Manifest
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.edge.synthetic import SyntheticScene
    from smoothdino.export.tensorrt import build_engine

    folder = tmp_path / "trt"
    shutil.copytree(small_export, folder)
    manifest = Manifest.load(folder)
    for stage in manifest.stage_names:
        path = build_engine(manifest.onnx_path(stage, "fp16"), folder / f"{stage}.fp16.engine",
                            timing_cache=folder / "timing.cache")
        manifest.stages[stage].engine = path.name
    from smoothdino.edge.environment import gpu, tensorrt_version

    manifest.versions["tensorrt"], manifest.gpu = tensorrt_version(), gpu()
    manifest.save(folder)
    frames = [rgb for rgb, _ in SyntheticScene(70, 98, 4)]
    with DepthPipeline.from_folder(folder, backend="tensorrt") as trt_pipe, \
            DepthPipeline.from_folder(folder, backend="onnxruntime") as ort_pipe:
        assert trt_pipe.backend == "tensorrt"
        for rgb in frames:
            a, b = trt_pipe.step(rgb).depth, ort_pipe.step(rgb).depth
            assert np.isfinite(a).all() and np.sqrt(np.mean((a - b) ** 2)) < 0.02
        assert trt_pipe.runs["encoder"] == len(frames)
