"""The TensorRT run-time and the names it relies on, for both flavours (`tensorrt`, `tensorrt-rtx`):
- every TensorRT name export/tensorrt.py and edge/engines/tensorrt_engine.py use is checked against the compiled
  bindings of TensorRT 11 (tensorrt-cu13-bindings: its module cannot import here, but its names are readable
  in it) and of TensorRT for RTX (tensorrt-rtx-cu12-bindings), with the RTX-only ones listed;
- the manifest's refusals, the back-end choice and the host-feed check run here;
- the engines themselves (ping-pong buffers, agreement with ONNX Runtime) run where TensorRT, pycuda and a
  GPU exist, and skip elsewhere (see docs/benchmarks.md).
Builds without a GPU: tests/test_tensorrt_build.py.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

from smoothdino.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TRT_MODULES = [ROOT / "export" / "tensorrt.py", ROOT / "edge" / "engines" / "tensorrt_engine.py"]
# Variables that hold TensorRT objects in those modules (builder, network, parser error, engine, ...).
TRT_OBJECTS = {"trt", "builder", "network", "parser", "config", "error", "engine", "context", "runtime", "cache",
               "serialized", "logger", "tensor"}
# pathlib, numpy and our own attributes on those variables (DeviceTensor.ptr, the logger's kept errors).
NOT_TENSORRT = {"read_bytes", "write_bytes", "is_file", "append", "errors", "clear", "quiet", "ptr"}
BINDINGS = {  # title: (distribution, package directory)
    "TensorRT 11": ("tensorrt-cu13-bindings", "tensorrt_bindings"),
    "TensorRT for RTX": ("tensorrt-rtx-cu12-bindings", "tensorrt_rtx_bindings"),
}
# The ahead-of-time target API exists only in TensorRT for RTX; export/tensorrt.py touches it only for the
# tensorrt-rtx flavour (resolve_compute_capabilities gives plain TensorRT no targets).
RTX_ONLY = {"num_compute_capabilities", "set_compute_capability", "ComputeCapability"}


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


def bindings_text(distribution: str, package: str) -> tuple[bytes, str]:
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed (pip install -e .[dev] on Linux x86_64)")
    so = next(f for f in files if f.name.startswith("tensorrt") and f.name.endswith(".so"))
    init = next(f for f in files if f.name == "__init__.py" and f.parent.name == package)
    return Path(so.locate()).read_bytes(), Path(init.locate()).read_text()


def names_missing(compiled: bytes, python: str, names: set[str]) -> set[str]:
    missing = set()
    for name in names:
        # pybind11 registers names as NUL-terminated strings; the linker may merge one into the tail of a
        # longer string (INPUT inside CONDITIONAL_INPUT), so match the tail. Python-level helpers such as
        # nptype live in the package's __init__.py.
        in_compiled = re.search(re.escape(name.encode()) + rb"\x00", compiled) is not None
        in_python = re.search(rf"\b(def|class)\s+{re.escape(name)}\b|\b{re.escape(name)}\s*=", python) is not None
        if not (in_compiled or in_python):
            missing.add(name)
    return missing


def test_the_scan_sees_the_names_we_rely_on():
    """A guard against the scan silently missing names (a renamed variable would hide its attributes)."""
    assert {"STRONGLY_TYPED", "set_memory_pool_limit", "create_timing_cache", "build_serialized_network",
            "deserialize_cuda_engine", "set_tensor_address", "execute_async_v3", "get_tensor_mode", "nptype",
            "TensorIOMode", "INPUT", "parse_from_file", "get_error", "node_name", "node_operator", "get_input",
            "num_outputs", "dtype", "ILogger", "Severity"} | RTX_ONLY <= tensorrt_names_used()


@pytest.mark.parametrize("title", list(BINDINGS))
def test_every_tensorrt_name_exists_in_the_bindings(title):
    compiled, python = bindings_text(*BINDINGS[title])
    used = tensorrt_names_used()
    if title == "TensorRT for RTX":
        assert not names_missing(compiled, python, used), f"not in the {title} bindings"
    else:
        assert not names_missing(compiled, python, used - RTX_ONLY), f"not in the {title} bindings"
        # The exemption is real: plain TensorRT has no ahead-of-time target API.
        assert names_missing(compiled, python, RTX_ONLY) == RTX_ONLY


def test_removed_apis_are_not_used():
    """TensorRT 11 and RTX dropped the precision builder flags, the INT8 calibrators and implicit-batch APIs."""
    source = "\n".join(p.read_text() for p in TRT_MODULES)
    for gone in ("BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8", "EXPLICIT_BATCH", "execute_v2",
                 "get_binding_index", "build_engine(network"):
        assert gone not in source, gone
    # One code path for both flavours: the module comes from edge.environment.import_tensorrt(flavour).
    assert not re.search(r"^\s*(import|from) tensorrt(_rtx)?\b", source, re.M)


def test_modules_import_without_tensorrt():
    import smoothdino.edge.engines.tensorrt_engine  # noqa: F401
    import smoothdino.export.tensorrt as t
    from smoothdino.edge.machine.environment import import_tensorrt

    try:
        import_tensorrt("tensorrt")
    except Exception:
        with pytest.raises(UserError, match="TensorRT is not importable as tensorrt"):
            t.require_tensorrt("tensorrt")


def test_host_feed_must_have_the_exact_shape_and_dtype():
    """A same-size NCHW array must not be reshaped into an NHWC input (it was, silently)."""
    from smoothdino.edge.engines.engine import TensorSpec
    from smoothdino.edge.engines.tensorrt_engine import check_host_feed

    spec = TensorSpec((1, 70, 98, 3), "uint8")
    check_host_feed("encoder.engine", "image", spec, np.zeros((1, 70, 98, 3), np.uint8))
    for wrong in (np.zeros((1, 3, 70, 98), np.uint8), np.zeros((70, 98, 3), np.uint8),
                  np.zeros((1, 70, 98, 3), np.float32)):
        with pytest.raises(ValueError) as err:
            check_host_feed("encoder.engine", "image", spec, wrong)
        assert "\n" not in str(err.value) and "(1, 70, 98, 3) uint8" in str(err.value)


def test_environment_reports_both_flavours():
    from smoothdino.edge.machine.environment import tensorrt_flavours, tensorrt_usable, tensorrt_version

    rows = {r["flavour"]: r for r in tensorrt_flavours()}
    assert set(rows) == {"tensorrt", "tensorrt-rtx"}
    for flavour, row in rows.items():
        assert row["usable"] == tensorrt_usable(flavour)[0] and (row["usable"] or row["why"])
        assert row["version"] == tensorrt_version(flavour)
    if rows["tensorrt-rtx"]["version"]:  # TensorRT for RTX builds without a GPU
        assert rows["tensorrt-rtx"]["can_build"]


def test_rtx_runs_on_rtx_class_gpus_only():
    from smoothdino.edge.machine import environment as env
    assert env.rtx_runs_on("8.6") and env.rtx_runs_on("12.0") and env.rtx_runs_on("7.5")
    assert not env.rtx_runs_on("8.7") and not env.rtx_runs_on("9.0") and not env.rtx_runs_on(None)


def test_backend_falls_back_in_one_notice(monkeypatch, capsys):
    from smoothdino.edge.engines import factory as engine
    monkeypatch.setattr(engine, "tensorrt_usable", lambda flavour="tensorrt": (False, f"no {flavour} here"))
    assert engine.resolve_backend("auto", True, "tensorrt-rtx") == "onnxruntime"
    assert engine.resolve_backend("tensorrt-rtx", True) == "onnxruntime"
    monkeypatch.setattr(engine, "tensorrt_usable", lambda flavour="tensorrt": (flavour == "tensorrt-rtx", ""))
    assert engine.resolve_backend("auto", True, "tensorrt-rtx") == "tensorrt-rtx"
    assert engine.resolve_backend("auto", True, None) == "onnxruntime"  # plain TensorRT engines, no TensorRT
    with pytest.raises(UserError):
        engine.resolve_backend("cuda", True)


def test_manifest_refuses_another_flavour_version_or_gpu(small_export, tmp_path):
    import json
    import shutil

    from smoothdino.edge.engines.manifest import Manifest

    folder = tmp_path / "m"
    shutil.copytree(small_export, folder)
    manifest = Manifest.load(folder)
    manifest.tensorrt = {"flavour": "tensorrt-rtx", "version": "1.7.1.116", "compute_capabilities": ["8.6", "8.9"]}
    manifest.save(folder)
    manifest = Manifest.load(folder)
    rtx_gpu = {"name": "NVIDIA GeForce RTX 4070", "compute_capability": "8.9"}
    manifest.check_tensorrt("1.7.1.116", rtx_gpu, flavour="tensorrt-rtx")  # accepted
    refusals = [
        (("10.3.0", {"name": "Orin", "compute_capability": "8.7"}, "tensorrt"), "--backend tensorrt-rtx"),
        (("1.8.0", rtx_gpu, "tensorrt-rtx"), "1.7.1.116"),
        (("1.7.1.116", {"name": "NVIDIA GeForce RTX 5090", "compute_capability": "12.0"}, "tensorrt-rtx"),
         "--compute-capability 12.0"),
    ]
    for (version, gpu, flavour), hint in refusals:
        with pytest.raises(UserError) as err:
            manifest.check_tensorrt(version, gpu, flavour=flavour)
        assert "manifest.json" in str(err.value) and hint in str(err.value) and "\n" not in str(err.value)
    # A manifest written before the flavour was recorded: plain TensorRT of versions["tensorrt"].
    data = json.loads((folder / "manifest.json").read_text())
    data.pop("tensorrt")
    data["versions"]["tensorrt"] = "10.3.0"
    (folder / "manifest.json").write_text(json.dumps(data))
    old = Manifest.load(folder)
    assert old.tensorrt_flavour == "tensorrt"
    old.check_tensorrt("10.3.0", None)
    with pytest.raises(UserError, match="TensorRT for RTX"):
        old.check_tensorrt("1.7.1.116", None, flavour="tensorrt-rtx")


# -- on a machine with TensorRT (or TensorRT for RTX on an RTX GPU), pycuda and a GPU ---------------

def _gpu_tensorrt(flavour: str):
    from smoothdino.edge.machine.environment import tensorrt_usable

    usable, why = tensorrt_usable(flavour)
    if not usable:
        pytest.skip(f"{flavour} engines cannot run here: {why}")


@pytest.mark.parametrize("flavour", ["tensorrt", "tensorrt-rtx"])
def test_engines_ping_pong_and_match_onnxruntime(small_export, tmp_path, flavour):
    """FP32 engines (TF32 off) against ONNX Runtime FP32 within 1 mm: feeding the current levels as the
    previous ones (a ping-pong bug) costs ~10 mm, so this tolerance catches it; and the encoder's outputs
    alternate between two buffer sets, frame t-1's surviving frame t's encoding bit for bit."""
    _gpu_tensorrt(flavour)
    import shutil

    from smoothdino.edge.machine.environment import gpu, tensorrt_version
    from smoothdino.edge.engines.manifest import Manifest
    from smoothdino.edge.engines.onnxruntime_engine import OnnxRuntimeEngine
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.edge.sources.synthetic import SyntheticScene
    from smoothdino.edge.engines.tensorrt_engine import TensorRTEngine
    from smoothdino.export.tensorrt import build_engine, resolve_compute_capabilities

    folder = tmp_path / "trt"
    shutil.copytree(small_export, folder)
    manifest = Manifest.load(folder)
    manifest.precision = "fp32"
    for stage in manifest.stage_names:
        files = manifest.stages[stage]
        files.precision = "fp32"  # the ONNX Runtime reference must open the FP32 graphs, as the engines are
        files.engine = build_engine(manifest.onnx_path(stage, "fp32"), folder / f"{stage}.fp32.engine",
                                    flavour=flavour, expected_io={"inputs": files.inputs, "outputs": files.outputs},
                                    timing_cache=folder / "timing.cache", fp32_exact=True).name
    manifest.tensorrt = {"flavour": flavour, "version": tensorrt_version(flavour),
                         "compute_capabilities": resolve_compute_capabilities(flavour, [], "fp32")}
    manifest.versions["tensorrt"] = tensorrt_version("tensorrt") if flavour == "tensorrt" else None
    manifest.gpu = gpu()
    manifest.save(folder)
    frames = [rgb for rgb, _ in SyntheticScene(*manifest.frame_size, 4)]

    encoder = TensorRTEngine(manifest.engine_path("encoder"), output_sets=2, flavour=flavour)
    reference = OnnxRuntimeEngine(manifest.onnx_path("encoder", "fp32"))
    try:
        first = encoder.run({"image": frames[0][None]})
        first_host = {n: t.to_host() for n, t in first.items()}
        second = encoder.run({"image": frames[1][None]})
        third = encoder.run({"image": frames[2][None]})
        wanted = reference.run({"image": frames[0][None]})
        for name in first:
            assert first[name].ptr != second[name].ptr and third[name].ptr == first[name].ptr, name
            assert not np.array_equal(second[name].to_host(), first_host[name]), name  # frames differ
            scale = np.abs(wanted[name]).max()
            assert np.abs(first_host[name] - wanted[name]).max() < 1e-3 * scale, name
        with pytest.raises(ValueError, match="wants"):  # NCHW data of the same size is refused
            encoder.run({"image": np.ascontiguousarray(frames[0][None].transpose(0, 3, 1, 2))})
    finally:
        encoder.close()
        reference.close()

    with DepthPipeline.from_folder(folder, backend=flavour) as trt_pipe, \
            DepthPipeline.from_folder(folder, backend="onnxruntime") as ort_pipe:
        assert trt_pipe.backend == flavour
        for rgb in frames:
            a, b = trt_pipe.step(rgb).depth, ort_pipe.step(rgb).depth
            assert np.isfinite(a).all() and np.sqrt(np.mean((a - b) ** 2)) < 0.001
        assert trt_pipe.runs["encoder"] == len(frames)
