"""ONNX Runtime back-end: CPU by default, the CUDA or TensorRT execution providers when present."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .engine import TensorSpec

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
             "tensor(int64)": "int64", "tensor(int32)": "int32"}


def default_providers(graph: Path) -> list:
    """Best available first: TensorRT execution provider (engines cached beside the graph, precision taken
    from the graph), CUDA, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers: list = []
    if "TensorrtExecutionProvider" in available:
        cache = Path(graph).parent / "ort_trt_cache"
        providers.append(("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                        "trt_engine_cache_path": str(cache)}))
    providers += [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return providers


class OnnxRuntimeEngine:
    """Named inputs -> named outputs, host numpy arrays both ways."""

    backend = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("SMOOTHDINO_THREADS", 0)) or 0
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), options, providers=providers or default_providers(self.path))
        self.providers = self.session.get_providers()
        self.inputs = {i.name: TensorSpec(tuple(i.shape), ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()}
        self.outputs = {o.name: TensorSpec(tuple(o.shape), ORT_TYPES.get(o.type, o.type)) for o in self.session.get_outputs()}
        self._output_names = list(self.outputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self._output_names, {name: feeds[name] for name in self.inputs})
        return dict(zip(self._output_names, results))

    def close(self) -> None:
        self.session = None
