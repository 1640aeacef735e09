"""Nothing lost, nothing unchecked (issue 19): every file of an export is checked against its manifest record, a
graph whose FP16 numerics overflow is refused by the precision gate with its NaN/Inf count, and TensorRT for RTX
keeps its just-in-time kernels in a runtime cache beside each engine."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.core.errors import UserError
from smoothdino.core.files import sha256_of
from smoothdino.edge.engines.manifest import Manifest

from .test_tensorrt import BINDINGS, bindings_text, names_missing

ROOT = Path(__file__).resolve().parents[1]


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# -- 1. a file without a size/SHA-256 record is refused ---------------------------------------------

def test_export_records_every_file_it_lists(small_export):
    """What `export` writes is recorded, and the records are the files' real sizes and hashes."""
    manifest = Manifest.load(small_export)
    listed = {n for s in manifest.stages.values() for n in [*s.onnx.values(), s.engine] if n}
    assert listed and listed <= set(manifest.files)
    for name in listed:
        path = small_export / name
        assert manifest.files[name] == {"bytes": path.stat().st_size, "sha256": sha256_of(path)}, name


def test_unrecorded_graph_is_refused_in_one_line(small_export, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(small_export, copy)
    data = json.loads((copy / "manifest.json").read_text())
    del data["files"]["decoder.fp16.onnx"]  # e.g. a manifest edited by hand, or written before records existed
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError) as err:
        Manifest.load(copy).onnx_path("decoder")
    message = str(err.value)
    assert str(copy / "decoder.fp16.onnx") in message and "re-run smoothdino export" in message
    assert "\n" not in message
    # the command line: exit 2, one line, before any frame is computed (no gate.json is written)
    result = CliRunner().invoke(app, ["calibrate", "--engines", str(copy), "--frames", "1"])
    assert result.exit_code == 2, result.output
    errors = _error_lines(result.output)
    assert len(errors) == 1 and "decoder.fp16.onnx" in errors[0], result.output
    assert (copy / "gate.json").read_bytes() == (small_export / "gate.json").read_bytes()


def test_unrecorded_engine_names_smoothdino_build(small_export, tmp_path):
    copy = tmp_path / "export"
    shutil.copytree(small_export, copy)
    engine = copy / "encoder.fp16.engine"
    engine.write_bytes(os.urandom(4096))  # stands in for a serialized engine dropped into the folder by hand
    data = json.loads((copy / "manifest.json").read_text())
    data["stages"]["encoder"]["engine"] = engine.name  # listed, never recorded
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError) as err:
        Manifest.load(copy).engine_path("encoder")
    assert str(engine) in str(err.value) and "smoothdino build" in str(err.value) and "\n" not in str(err.value)


# -- 3. the gate counts the NaN/Inf the pipeline replaced with 0 -------------------------------------

def _overflowing_copy(src: Path, dst: Path) -> str:
    """The FP16 export with one decoder convolution's weights scaled by 1e6: the largest overflow FP16 (to +-Inf)
    and ONNX Runtime's FP16 arithmetic makes NaN of them (Inf x 0). Activations that merely overflow are clipped to
    the maximum depth by the decoder's last Clip, which NaN passes. The file's record is taken again (manifest API):
    only the numerics are wrong."""
    shutil.copytree(src, dst)
    path = dst / "decoder.fp16.onnx"
    model = onnx.load(str(path))
    weights = next(i for i in model.graph.initializer if i.name == "decoder.head.convs.3.conv.weight")
    array = numpy_helper.to_array(weights)
    assert array.dtype == np.float16  # an FP16 weight: the overflow is FP16's
    with np.errstate(over="ignore"):
        weights.CopyFrom(numpy_helper.from_array((array.astype(np.float32) * 1e6).astype(np.float16), weights.name))
    onnx.save(model, str(path))
    manifest = Manifest.load(dst)
    manifest.files.pop(path.name)  # a deliberate edit: save() records a listed file that has no record
    manifest.save(dst)
    return path.name


def _nonfinite_depth_pixels(folder: Path, decoder: Path, frames: int) -> int:
    """Independent count: the broken FP16 decoder run directly in ONNX Runtime on the fused levels of the same
    calibration pairs, its raw output counted with numpy."""
    import onnxruntime as ort

    from smoothdino.calibration import calibration_pairs
    from smoothdino.edge.pipeline import DepthPipeline

    session = ort.InferenceSession(str(decoder), providers=["CPUExecutionProvider"])
    manifest = Manifest.load(folder)
    count = 0
    with DepthPipeline(manifest, backend="onnxruntime", keep_outputs=True) as pipeline:
        for pair in calibration_pairs([], frames, manifest.frame_size):
            pipeline.reset()
            pipeline.prime(pair.previous)
            outputs = pipeline.step(pair.current).outputs
            feeds = {k[len("fused_"):]: v for k, v in outputs.items() if k.startswith("fused_")}
            (depth,) = session.run(["depth"], feeds)
            count += int((~np.isfinite(depth)).sum())
    return count


def test_gate_refuses_a_real_fp16_overflow_and_counts_it(small_export, tmp_path):
    broken = tmp_path / "overflow"
    name = _overflowing_copy(small_export, broken)
    expected = _nonfinite_depth_pixels(broken, broken / name, 2)
    assert expected > 0  # a genuine overflow, not a simulated one
    result = CliRunner().invoke(app, ["calibrate", "--engines", str(broken), "--calibration-frames", "2"])
    assert result.exit_code == 2, result.output
    gate = json.loads((broken / "gate.json").read_text())
    assert not gate["passed"]
    assert gate["outputs"]["depth"]["nan_inf"] == expected
    assert f"{expected} NaN/Inf values" in gate["reasons"]
    assert f"NaN/Inf {expected}" in " ".join(result.output.split())


# -- 4. TensorRT for RTX runtime cache --------------------------------------------------------------

ENGINE_MODULE = ROOT / "edge" / "engines" / "tensorrt_engine.py"
# The runtime-cache calls: on the engine (create_runtime_config, create_execution_context(runtime_config)), the
# runtime config (create_runtime_cache, set_runtime_cache) and the cache (serialize, deserialize, reset).
RUNTIME_CACHE_API = {"create_runtime_config", "create_runtime_cache", "set_runtime_cache", "create_execution_context",
                     "serialize", "deserialize", "reset"}
RTX_ONLY_CACHE = {"create_runtime_cache", "set_runtime_cache", "deserialize"}  # plain TensorRT: no IRuntimeCache
CACHE_OBJECTS = {"runtime_config", "runtime_cache"}  # the variables/attributes holding those objects


def _names_on_cache_objects() -> set[str]:
    """Every attribute the engine module reads on a runtime config or cache (as `x.y` or `self.x.y`)."""
    names = set()
    for node in ast.walk(ast.parse(ENGINE_MODULE.read_text())):
        if isinstance(node, ast.Attribute):
            base = node.value
            holder = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
            if holder in CACHE_OBJECTS:
                names.add(node.attr)
    return names


def test_runtime_cache_names_exist_in_the_rtx_bindings_only_where_used_for_rtx():
    source = ENGINE_MODULE.read_text()
    used = {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)}
    assert RUNTIME_CACHE_API <= used, RUNTIME_CACHE_API - used
    on_cache = _names_on_cache_objects()
    assert {"create_runtime_cache", "set_runtime_cache", "serialize", "deserialize", "reset"} <= on_cache
    rtx, rtx_python = bindings_text(*BINDINGS["TensorRT for RTX"])
    assert not names_missing(rtx, rtx_python, RUNTIME_CACHE_API | on_cache), "not in the TensorRT for RTX bindings"
    trt11, trt11_python = bindings_text(*BINDINGS["TensorRT 11"])
    # plain TensorRT lacks the cache API: the module may only touch it behind its tensorrt-rtx flavour check
    assert names_missing(trt11, trt11_python, RTX_ONLY_CACHE) == RTX_ONLY_CACHE
    assert 'flavour == "tensorrt-rtx"' in source


class StandInRuntimeCache:
    """Stands in for tensorrt_rtx.IRuntimeCache (whose names the test above checks against the real bindings):
    serialize() -> its bytes; deserialize(blob) -> False for bytes it did not write, like a cache from another
    TensorRT for RTX; reset() empties it. A real one needs an engine, and an engine needs an RTX GPU."""

    MAGIC = b"RTXC"

    def __init__(self, kernels: bytes = b""):
        self.kernels, self.received = kernels, []

    def serialize(self) -> memoryview:
        return memoryview(self.MAGIC + self.kernels)  # IHostMemory: a buffer, not bytes

    def deserialize(self, blob: bytes) -> bool:
        self.received.append(bytes(blob))
        if not bytes(blob).startswith(self.MAGIC):
            return False
        self.kernels = bytes(blob)[len(self.MAGIC):]
        return True

    def reset(self) -> bool:
        self.kernels = b""
        return True


def test_runtime_cache_file_beside_the_engine_is_loaded_and_saved_atomically(tmp_path, capsys):
    from smoothdino.edge.engines.tensorrt_engine import RuntimeCacheFile, runtime_cache_path

    engine = tmp_path / "decoder.fp16.engine"
    engine.write_bytes(b"engine")
    path = runtime_cache_path(engine)
    assert path == tmp_path / "decoder.fp16.engine.runtime-cache"

    first = StandInRuntimeCache()
    cache_file = RuntimeCacheFile(engine, first)  # first start: nothing to load, nothing written yet
    assert first.received == [] and not path.exists()
    first.kernels = b"jit kernels of the first frames"
    cache_file.save()
    assert path.read_bytes() == b"RTXC" + first.kernels
    assert sorted(p.name for p in tmp_path.iterdir()) == [engine.name, path.name]  # no temporary left behind
    written = path.stat().st_mtime_ns
    cache_file.save()  # at close, nothing new compiled: the file is not rewritten
    assert path.stat().st_mtime_ns == written

    second = StandInRuntimeCache()
    RuntimeCacheFile(engine, second)  # a later start gets the kernels back: no JIT
    assert second.received == [path.read_bytes()] and second.kernels == first.kernels

    path.write_bytes(b"from another TensorRT for RTX")
    capsys.readouterr()
    third = StandInRuntimeCache(b"half-loaded")
    refused = RuntimeCacheFile(engine, third)
    notices = [line for line in capsys.readouterr().err.splitlines() if "notice" in line]
    assert len(notices) == 1 and path.name in notices[0]
    assert third.kernels == b""  # reset: no half-loaded state is used
    third.kernels = b"recompiled"
    refused.save()  # the unusable file is replaced by this run's kernels
    assert path.read_bytes() == b"RTXC" + b"recompiled"
