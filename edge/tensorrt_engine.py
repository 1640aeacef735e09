"""TensorRT back-end (TensorRT 10 on JetPack 6, and TensorRT 11) with pycuda.

Ownership is explicit, as in NVIDIA's samples: each engine allocates its device buffers once - one input
buffer per input (used when the caller passes a host array), `output_sets` buffers per output - plus
page-locked host staging buffers, and frees them in close(). All engines share one CUDA context (the
device's primary context) and one stream, so a DeviceTensor produced by one engine can be bound as another
engine's input with `set_tensor_address`: no host copy between stages. `output_sets=2` gives the encoder
ping-pong buffers, so the previous frame's levels stay valid while the current frame is encoded.

Importable without TensorRT or a GPU: the imports happen when an engine is created.
"""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .engine import TensorSpec
from smoothdino.core.errors import UserError

_CUDA: dict[str, Any] = {}


def cuda_runtime():
    """(pycuda.driver, primary context, shared stream), created once per process."""
    if not _CUDA:
        import pycuda.driver as cuda

        cuda.init()
        primary = cuda.Device(0).retain_primary_context()
        primary.push()
        # pycuda aborts at exit if a pushed context is still on the stack (pycuda.autoprimaryctx does this too).
        # The context is current in this thread only: engines are used from the thread that made them.
        atexit.register(primary.pop)
        _CUDA.update(cuda=cuda, context=primary, stream=cuda.Stream())
    return _CUDA["cuda"], _CUDA["context"], _CUDA["stream"]


class DeviceTensor:
    """A device buffer with a shape and dtype. Owned by the engine that allocated it."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        cuda, _, _ = cuda_runtime()
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.allocation = cuda.mem_alloc(max(self.nbytes, 1))
        self._host = None  # page-locked mirror, allocated on the first to_host()

    @property
    def ptr(self) -> int:
        return int(self.allocation)

    def upload(self, array: np.ndarray) -> None:
        cuda, _, stream = cuda_runtime()
        if self._host is None:
            self._host = cuda.pagelocked_empty(self.shape, self.dtype)
        np.copyto(self._host, array.reshape(self.shape), casting="same_kind")
        cuda.memcpy_htod_async(self.allocation, self._host, stream)

    def to_host(self) -> np.ndarray:
        cuda, _, stream = cuda_runtime()
        if self._host is None:
            self._host = cuda.pagelocked_empty(self.shape, self.dtype)
        cuda.memcpy_dtoh_async(self._host, self.allocation, stream)
        stream.synchronize()
        return np.array(self._host)  # a copy: the staging buffer is reused next frame

    def free(self) -> None:
        if self.allocation is not None:
            self.allocation.free()
            self.allocation = None


class _Logger:
    """A TensorRT logger that keeps the errors so they can be reported in one line."""

    def __new__(cls, trt):
        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    self.errors.append(msg)

        return Logger()


class TensorRTEngine:
    backend = "tensorrt"

    def __init__(self, path: Path, output_sets: int = 1):
        try:
            import tensorrt as trt
        except Exception as err:
            raise UserError(f"{path}: TensorRT is not importable here ({type(err).__name__}); use --backend onnxruntime") from None
        self.path = Path(path)
        self.cuda, _, self.stream = cuda_runtime()
        self.logger = _Logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            detail = self.logger.errors[-1] if self.logger.errors else "unknown reason"
            raise UserError(f"{self.path}: TensorRT cannot load this engine ({detail}); re-export on this machine")
        self.context = self.engine.create_execution_context()
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: dict[str, TensorSpec] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            spec = TensorSpec(tuple(self.engine.get_tensor_shape(name)),
                              np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs)[name] = spec
        self._input_buffers = {n: DeviceTensor(s.shape, s.dtype) for n, s in self.inputs.items()}
        self._output_sets = [
            {n: DeviceTensor(s.shape, s.dtype) for n, s in self.outputs.items()} for _ in range(max(1, output_sets))
        ]
        self._next_set = 0

    def run(self, feeds: Mapping[str, Any]) -> dict[str, DeviceTensor]:
        for name, spec in self.inputs.items():
            value = feeds[name]
            if isinstance(value, DeviceTensor):
                if value.shape != spec.shape or value.dtype.name != spec.dtype:
                    raise ValueError(f"{self.path.name}: input {name} is {value.shape} {value.dtype}, wants {spec}")
                address = value.ptr
            else:
                buffer = self._input_buffers[name]
                buffer.upload(np.asarray(value))
                address = buffer.ptr
            self.context.set_tensor_address(name, address)
        outputs = self._output_sets[self._next_set]
        self._next_set = (self._next_set + 1) % len(self._output_sets)
        for name, tensor in outputs.items():
            self.context.set_tensor_address(name, tensor.ptr)
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"{self.path.name}: execute_async_v3 failed: {self.logger.errors[-1:]}")
        self.stream.synchronize()  # per-stage latency stays measurable; stages are serial anyway
        return dict(outputs)

    def close(self) -> None:
        for buffer in list(self._input_buffers.values()) + [t for s in self._output_sets for t in s.values()]:
            buffer.free()
        self.context = self.engine = self.runtime = None
