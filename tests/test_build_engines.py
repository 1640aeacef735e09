"""`smoothdino build`: TensorRT engines from an ONNX export copied to the target, with no PyTorch there (the
Jetson path: export on a PC, build on the Jetson, where engines must be built). TensorRT for RTX (the dev
extra) is the real builder here, in a process where `import torch` fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.edge.engines.manifest import Manifest
from smoothdino.core.files import sha256_of

NO_TORCH = "import sys; sys.modules['torch'] = None; from smoothdino.cli import app; app()"


@pytest.fixture()
def onnx_export(small_export, tmp_path) -> Path:
    copy = tmp_path / "copied-from-pc"
    shutil.copytree(small_export, copy)
    assert not list(copy.glob("*.engine"))
    return copy


def test_build_makes_engines_without_torch(onnx_export, tmp_path):
    from smoothdino.edge.machine.environment import import_tensorrt

    try:
        import_tensorrt("tensorrt-rtx")
    except Exception as err:
        pytest.skip(f"TensorRT for RTX not importable ({type(err).__name__})")
    done = subprocess.run([sys.executable, "-c", NO_TORCH, "build", "--engines", str(onnx_export), "--backend",
                           "tensorrt-rtx", "--compute-capability", "8.6", "--calibration-frames", "2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = Manifest.load(onnx_export)
    assert manifest.tensorrt["flavour"] == "tensorrt-rtx" and manifest.tensorrt["compute_capabilities"] == ["8.6"]
    for stage in ("encoder", "adapter", "decoder"):
        engine = manifest.engine_path(stage)  # exists, and matches its fresh record
        assert engine.name == f"{stage}.fp16.engine" and engine.stat().st_size > 100_000
        assert manifest.files[engine.name]["sha256"] == sha256_of(engine)
    gate = json.loads((onnx_export / "gate.json").read_text())
    assert gate["passed"] and "onnxruntime" in manifest.gate["measured_on"]  # no GPU here: said, not hidden
    assert "using ONNX Runtime" in done.stderr


@pytest.mark.parametrize("args, says", [
    (["--backend", "tensorrt"], "TensorRT is not importable"),
    (["--backend", "onnxruntime"], "build makes TensorRT engines"),
    (["--backend", "tensorrt-rtx", "--compute-capability", "9.9"], "--compute-capability 9.9"),
])
def test_build_refusals_are_one_line_and_change_nothing(onnx_export, args, says):
    before = {p.name: p.read_bytes() for p in onnx_export.iterdir()}
    if args[1] == "tensorrt":
        from smoothdino.edge.machine.environment import import_tensorrt

        try:
            import_tensorrt("tensorrt")
            pytest.skip("TensorRT itself is installed here")
        except Exception:
            pass
    result = CliRunner().invoke(app, ["build", "--engines", str(onnx_export), *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.output
    assert {p.name: p.read_bytes() for p in onnx_export.iterdir()} == before
