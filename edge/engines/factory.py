"""Which engine opens a graph or engine file: the back-end word resolved against what this machine can run, then
the engine class for it. Apart from the engines themselves, so that they and their interface (engine.py) never
import each other."""

from __future__ import annotations

from pathlib import Path

from smoothdino.core.backends import backend_word
from smoothdino.core.console import notice
from smoothdino.edge.machine.environment import tensorrt_usable

from .engine import TENSORRT_BACKENDS, Engine


def resolve_backend(requested: str, have_engines: bool, engine_flavour: str | None = None) -> str:
    """auto -> the engines' TensorRT flavour (manifest.tensorrt_flavour) where it can run and engines exist,
    else onnxruntime, with a one-line notice. An explicit flavour falls back the same way."""
    requested = backend_word(requested)
    if requested == "onnxruntime":
        return "onnxruntime"
    flavour = requested if requested in TENSORRT_BACKENDS else (engine_flavour or "tensorrt")
    usable, why = tensorrt_usable(flavour)
    if usable and have_engines:
        return flavour
    title = "TensorRT for RTX" if flavour == "tensorrt-rtx" else "TensorRT"
    reason = why if not usable else f"the export has no TensorRT engines (export with --backend {flavour})"
    notice(f"{title} unavailable ({reason}); using ONNX Runtime")
    return "onnxruntime"


def open_engine(path: Path, backend: str, **kwargs) -> Engine:
    if backend in TENSORRT_BACKENDS:
        from .tensorrt_engine import TensorRTEngine

        return TensorRTEngine(path, flavour=backend, **kwargs)
    from .onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, **{k: v for k, v in kwargs.items() if k in ("providers", "threads")})
