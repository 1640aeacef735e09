"""One small interface for every back-end: named inputs -> named outputs.

    engine.inputs / engine.outputs: {name: TensorSpec(shape, dtype)}
    engine.run(feeds) -> {name: value}

Values are numpy arrays for ONNX Runtime. The TensorRT engine returns device tensors it owns, and takes
either numpy arrays or device tensors as inputs, so the pipeline wires engine to engine with no host copy;
`to_host` is called only on what leaves the pipeline (the depth map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


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
