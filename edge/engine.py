"""One small interface for every back-end: named inputs -> named outputs.

    engine.inputs / engine.outputs: {name: TensorSpec(shape, dtype)}
    engine.run(feeds) -> {name: value}

Values are numpy arrays for ONNX Runtime. The TensorRT engine returns device tensors it owns, and takes
either numpy arrays or device tensors as inputs, so the pipeline wires engine to engine with no host copy;
`to_host` is called only on what leaves the pipeline (the depth map).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from smoothdino.core.backends import backend_word
from smoothdino.core.console import notice
from .environment import tensorrt_usable

TENSORRT_BACKENDS = ("tensorrt", "tensorrt-rtx")  # the engine flavours (edge/environment.py)


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple
    dtype: str


class Engine(Protocol):
    backend: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


def to_host(value: Any) -> np.ndarray:
    """numpy as is; a device tensor copied back to the host."""
    return value if isinstance(value, np.ndarray) else value.to_host()


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
