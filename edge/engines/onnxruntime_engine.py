"""ONNX Runtime back-end: its CUDA execution provider where ONNX Runtime has it (onnxruntime-gpu), else the CPU.
(ONNX Runtime's own TensorRT provider is not used: TensorRT is the `tensorrt` back-end, with engines built once.)"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from smoothdino.core.console import notice_once

from .engine import TensorSpec

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
             "tensor(int64)": "int64", "tensor(int32)": "int32"}
CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"


def session_providers(available: Sequence[str]) -> list[str]:
    """The providers a session asks for, from onnxruntime.get_available_providers(): CUDA first where it is there,
    then the CPU (which also runs what CUDA cannot)."""
    return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]


def _preload_cuda(ort) -> None:
    """CUDA and cuDNN from NVIDIA's wheels (onnxruntime-gpu[cuda,cudnn]) loaded before a CUDA session, as ONNX
    Runtime documents; what it prints about missing libraries goes to stderr, with the other diagnostics."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.redirect_stdout(sys.stderr):
            preload()


class OnnxRuntimeEngine:
    """Named inputs -> named outputs, host numpy arrays both ways."""

    backend = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("SMOOTHDINO_THREADS", 0)) or 0
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = list(providers or session_providers(ort.get_available_providers()))
        if CUDA_PROVIDER in wanted:
            _preload_cuda(ort)
        self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        self.providers = self.session.get_providers()
        if CUDA_PROVIDER in wanted and CUDA_PROVIDER not in self.providers:
            notice_once("cuda-provider", f"{self.path}: ONNX Runtime's CUDA provider did not start (no GPU, or CUDA / "
                        "cuDNN libraries missing: pip install 'onnxruntime-gpu[cuda,cudnn]'); running on the CPU")
        self.inputs = {i.name: TensorSpec(tuple(i.shape), ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()}
        self.outputs = {o.name: TensorSpec(tuple(o.shape), ORT_TYPES.get(o.type, o.type)) for o in self.session.get_outputs()}
        self._output_names = list(self.outputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self._output_names, {name: feeds[name] for name in self.inputs})
        return dict(zip(self._output_names, results))

    def close(self) -> None:
        self.session = None
