"""TensorRT back-end, both flavours with one code path: `tensorrt` (TensorRT 10.3 on JetPack 6, TensorRT 10/11
on x86) and `tensorrt-rtx` (TensorRT for RTX, on RTX-class GPUs), with pycuda.

Ownership is explicit, as in NVIDIA's samples: each engine allocates its device buffers once - one input
buffer per input (used when the caller passes a host array), `output_sets` buffers per output - plus
page-locked host staging buffers, and frees them in close(). All engines share one CUDA context (the
device's primary context) and one stream, so a DeviceTensor produced by one engine can be bound as another
engine's input with `set_tensor_address`: no host copy between stages (so FP16 stage I/O would save no
copy; the levels stay FP32 as in the ONNX graphs). `output_sets=2` gives the encoder ping-pong buffers, so
the previous frame's levels stay valid while the current frame is encoded.

Threads: pycuda keeps a context stack per thread. The primary context is pushed in the thread that first
needs CUDA, and every engine is used only from the thread that created it (run() refuses others in one
line); the pipeline's motion worker thread only does numpy/OpenCV work and never touches CUDA.

Runtime cache (`tensorrt-rtx` only): TensorRT for RTX compiles its kernels just in time, for the GPU it finds,
when the execution context is created and on the first frames - at every start, unless they are kept. Each engine
gets a runtime cache (engine.create_runtime_config() -> runtime_config.create_runtime_cache(), set with
set_runtime_cache, the context created with that runtime config) and a file beside it, `<engine>.runtime-cache`:
loaded when present (a cache TensorRT for RTX refuses - another version, GPU or CUDA, or a damaged file - gives
one notice and is rebuilt), saved atomically after the first frame and again at close when it has changed, so
later starts skip the compilation. The file is specific to this machine and is not in the manifest's records;
delete it to compile afresh. Plain TensorRT (10, 11) builds its kernels ahead of time and has no runtime cache.

Batch engines (`export --batch N`): every I/O tensor has a dynamic first axis and the engine one optimisation
profile 1..N. As in NVIDIA's dynamic-shape samples, the buffers are allocated once for the profile's largest
shapes (every input set to its max with `context.set_input_shape`, the outputs' sizes then read from
`context.get_tensor_shape`); each run sets the inputs' actual shapes with `set_input_shape` and returns views of
the output buffers with the shapes the context gives. A DeviceTensor view (`tensor[i:j]`, `view(shape)`) shares its
base's memory and owns nothing; `copy_levels` and `stack_inputs` copy device to device for the pipeline's batches
and per-camera states (edge/pipeline.py). Engines of static shapes run exactly as before.

Importable without TensorRT or a GPU: the imports happen when an engine is created.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .engine import TensorSpec
from smoothdino.edge.machine.environment import FLAVOUR_TITLES, import_tensorrt
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_bytes

_CUDA: dict[str, Any] = {}


def cuda_runtime():
    """(pycuda.driver, primary context, shared stream), created once per process, in the calling thread."""
    if not _CUDA:
        import pycuda.driver as cuda

        cuda.init()
        primary = cuda.Device(0).retain_primary_context()
        primary.push()
        owner = threading.get_ident()

        def pop_at_exit():
            # pycuda aborts at exit if a pushed context is still on the stack (pycuda.autoprimaryctx pops it
            # too); only the thread that pushed it can pop it.
            if threading.get_ident() == owner:
                primary.pop()

        atexit.register(pop_at_exit)
        _CUDA.update(cuda=cuda, context=primary, stream=cuda.Stream(), thread=owner)
    return _CUDA["cuda"], _CUDA["context"], _CUDA["stream"]


def shape_fits(shape: tuple, spec_shape: tuple, max_batch: int = 1) -> bool:
    """`shape` is one the engine takes: the spec's, where a dynamic (-1) first axis takes 1..max_batch."""
    shape, spec_shape = tuple(shape), tuple(spec_shape)
    if len(shape) != len(spec_shape):
        return False
    if spec_shape and spec_shape[0] < 0:
        return 1 <= shape[0] <= max_batch and shape[1:] == spec_shape[1:]
    return shape == spec_shape


def check_host_feed(where: str, name: str, spec: TensorSpec, array: np.ndarray, max_batch: int = 1) -> None:
    """A host array must have exactly the engine's shape and dtype (a batch engine: any batch up to its profile's
    max): a same-size NCHW array reshaped to NHWC would otherwise be read silently as the wrong image."""
    if not shape_fits(array.shape, spec.shape, max_batch) or array.dtype.name != spec.dtype:
        wants = tuple(spec.shape) if spec.shape[0] >= 0 else (f"1..{max_batch}",) + tuple(spec.shape[1:])
        raise ValueError(f"{where}: input {name} is {tuple(array.shape)} {array.dtype.name}, "
                         f"the engine wants {wants} {spec.dtype}")


_LOGGERS: dict[int, Any] = {}


def tensorrt_logger(trt):
    """One logger per TensorRT module and process (TensorRT keeps the first one registered and ignores later
    ones). It keeps the errors, so a failure is reported in one line, and prints warnings and errors."""
    if id(trt) not in _LOGGERS:
        from smoothdino.core.console import notice

        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []
                self.quiet: tuple[str, ...] = ()  # messages that are expected here (see export/tensorrt.py)

            def log(self, severity, msg):
                if any(q in msg for q in self.quiet):
                    return
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    self.errors.append(msg)
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR,
                                trt.ILogger.Severity.WARNING):
                    notice(f"TensorRT: {' '.join(str(msg).split())}")

        _LOGGERS[id(trt)] = Logger()
    return _LOGGERS[id(trt)]


RUNTIME_CACHE_SUFFIX = ".runtime-cache"


def runtime_cache_path(engine_path: Path) -> Path:
    """Where an engine's TensorRT-for-RTX runtime cache (its just-in-time kernels) is kept: beside the engine."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + RUNTIME_CACHE_SUFFIX)


class RuntimeCacheFile:
    """One engine's runtime cache (a TensorRT-for-RTX IRuntimeCache) and its file: loaded when present, written
    atomically when its contents have changed (a reader sees the old cache or the new one, never half of one)."""

    def __init__(self, engine_path: Path, runtime_cache):
        self.path, self.runtime_cache, self.saved = runtime_cache_path(engine_path), runtime_cache, b""
        if self.path.is_file():
            blob = self.path.read_bytes()
            if runtime_cache.deserialize(blob):
                self.saved = blob
            else:  # another TensorRT for RTX, GPU or CUDA, or a damaged file: compile afresh, replace it at save
                runtime_cache.reset()
                notice(f"{self.path}: runtime cache not usable here; compiling the kernels again (it will be replaced)")

    def save(self) -> None:
        memory = self.runtime_cache.serialize()
        blob = bytes(memory) if memory is not None else b""
        if not blob or blob == self.saved:
            return
        self.saved = blob  # also on failure: one notice, not one per save
        try:
            atomic_write_bytes(self.path, blob)
        except (OSError, UserError) as err:  # a read-only or full export folder: the run itself is unaffected
            notice(f"{self.path}: runtime cache not saved ({err}); the next start compiles the kernels again")


class DeviceTensor:
    """A device buffer with a shape and dtype. Owned by the engine that allocated it (or by a pipeline state that
    keeps a copy). A view (`tensor[i:j]` along the first axis, `tensor.view(shape)` of its first bytes) shares the
    memory of its base and owns none: valid while the base is, and never freed itself."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, *, base: "DeviceTensor | None" = None, offset: int = 0):
        cuda, _, _ = cuda_runtime()
        self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._base, self._offset = base, int(offset)
        if base is None:
            self.allocation = cuda.mem_alloc(max(self.nbytes, 1))
        else:
            if self._offset + self.nbytes > base.nbytes:
                raise ValueError(f"a {self.shape} view at byte {offset} overruns a {base.shape} buffer")
            self.allocation = None
        self._host = None  # page-locked mirror, allocated on the first to_host()
        self._views: dict[tuple, DeviceTensor] = {}  # made once, reused every pass (with their staging buffers)

    @property
    def ptr(self) -> int:
        return self._base.ptr + self._offset if self._base is not None else int(self.allocation)

    @property
    def is_view(self) -> bool:
        return self._base is not None

    def view(self, shape: tuple[int, ...]) -> "DeviceTensor":
        """The first bytes of this buffer as a tensor of `shape` (a batch engine's output of a smaller batch)."""
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return self
        if ("view", shape) not in self._views:
            self._views[("view", shape)] = DeviceTensor(shape, self.dtype, base=self, offset=0)
        return self._views[("view", shape)]

    def __getitem__(self, index: slice) -> "DeviceTensor":
        """Items start..stop of the first axis, as a view (what numpy's a[i:i+1] gives)."""
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a DeviceTensor slices its first axis only: tensor[start:stop]")
        start, stop, _ = index.indices(self.shape[0])
        if ("slice", start, stop) not in self._views:
            item = self.nbytes // max(self.shape[0], 1)
            self._views[("slice", start, stop)] = DeviceTensor((max(stop - start, 0),) + self.shape[1:], self.dtype,
                                                               base=self, offset=start * item)
        return self._views[("slice", start, stop)]

    def copy_from(self, source: "DeviceTensor") -> None:
        """Device to device, queued on the shared stream (same shape and dtype)."""
        if source.shape != self.shape or source.dtype != self.dtype:
            raise ValueError(f"copy of {source.shape} {source.dtype} into a {self.shape} {self.dtype} buffer")
        cuda, _, stream = cuda_runtime()
        cuda.memcpy_dtod_async(self.ptr, source.ptr, self.nbytes, stream)

    def upload(self, array: np.ndarray) -> None:
        """Host -> page-locked staging -> device, queued on the shared stream. The caller synchronizes the
        stream before the next upload into this buffer (TensorRTEngine.run does), so staging is never
        overwritten while a copy from it is in flight."""
        if array.shape != self.shape or array.dtype != self.dtype:
            raise ValueError(f"upload of {array.shape} {array.dtype} into a {self.shape} {self.dtype} buffer")
        cuda, _, stream = cuda_runtime()
        if self._host is None:
            self._host = cuda.pagelocked_empty(self.shape, self.dtype)
        np.copyto(self._host, array)
        cuda.memcpy_htod_async(self.ptr, self._host, stream)

    def to_host(self) -> np.ndarray:
        cuda, _, stream = cuda_runtime()
        if self._host is None:
            self._host = cuda.pagelocked_empty(self.shape, self.dtype)
        cuda.memcpy_dtoh_async(self._host, self.ptr, stream)
        stream.synchronize()
        return np.array(self._host)  # a copy: the staging buffer is reused next frame

    def free(self) -> None:
        if self.allocation is not None:
            self.allocation.free()
            self.allocation = None


class TensorRTEngine:
    """One serialized engine of either flavour; `backend` is the flavour ("tensorrt" or "tensorrt-rtx")."""

    def __init__(self, path: Path, output_sets: int = 1, flavour: str = "tensorrt"):
        try:
            trt = import_tensorrt(flavour)
        except UserError:
            raise  # already one line with its fix (e.g. TensorRT 8.6: which JetPack to use)
        except Exception as err:
            raise UserError(f"{path}: {FLAVOUR_TITLES[flavour]} is not importable here ({type(err).__name__}); "
                            "use --backend onnxruntime") from None
        self.backend = flavour
        self.path = Path(path)
        self.cuda, _, self.stream = cuda_runtime()
        self.thread = threading.get_ident()
        if self.thread != _CUDA["thread"]:  # pycuda's context is current only in the thread that pushed it
            raise UserError(f"{self.path}: create TensorRT engines in the thread that first used CUDA")
        self.logger = tensorrt_logger(trt)
        self.logger.errors.clear()
        self.logger.quiet = ()  # an RTX build in this process may have muted the "no driver" message
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            detail = " ".join(self.logger.errors[-1].split()) if self.logger.errors else "unknown reason"
            raise UserError(f"{self.path}: {FLAVOUR_TITLES[flavour]} cannot load this engine ({detail}); "
                            "re-export on this machine")
        self.runtime_config = self.runtime_cache = self.cache_file = None
        if flavour == "tensorrt-rtx":  # JIT kernels kept beside the engine (see the module docstring)
            self.runtime_config = self.engine.create_runtime_config()
            self.runtime_cache = self.runtime_config.create_runtime_cache()
            self.cache_file = RuntimeCacheFile(self.path, self.runtime_cache)
            if not self.runtime_config.set_runtime_cache(self.runtime_cache):
                notice(f"{self.cache_file.path}: TensorRT for RTX refused the runtime cache; kernels are compiled "
                       "at every start")
                self.cache_file = None
            self.context = self.engine.create_execution_context(self.runtime_config)
        else:  # plain TensorRT: kernels chosen at build time, no runtime cache (and no runtime config on 10.3)
            self.context = self.engine.create_execution_context()
        if self.context is None:  # out of device memory, or (RTX) a kernel compile failure
            detail = " ".join(self.logger.errors[-1].split()) if self.logger.errors else "unknown reason"
            raise UserError(f"{self.path}: no execution context ({detail}); free GPU memory or re-export")
        self.inputs: dict[str, TensorSpec] = {}
        self.outputs: dict[str, TensorSpec] = {}
        self.max_batch = 1  # a batch engine: its profile's max first dim
        largest: dict[str, tuple] = {}  # buffer shapes: the spec's, or (batch engines) the profile's max
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            try:
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name
            except TypeError:  # BF16 / FP8 have no numpy type
                dtype = None
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            batch_axis = bool(shape) and shape[0] < 0 and all(d >= 0 for d in shape[1:])
            if dtype is None or (any(d < 0 for d in shape) and not batch_axis):
                raise UserError(f"{self.path}: I/O tensor {name} is {self.engine.get_tensor_dtype(name)} {shape}; "
                                "smoothdino engines have static shapes (or a batch axis) and numpy dtypes - "
                                "re-export with smoothdino")
            if is_input and batch_axis:  # the profile's (min, opt, max) shapes; profile 0, the only one
                largest[name] = tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
                self.max_batch = max(self.max_batch, largest[name][0])
            spec = TensorSpec(shape, dtype)
            (self.inputs if is_input else self.outputs)[name] = spec
        self.dynamic = any(s.shape[0] < 0 for s in [*self.inputs.values(), *self.outputs.values()] if s.shape)
        if self.dynamic:  # as NVIDIA's samples do: set the max shapes, read the outputs' max shapes from the context
            for name in self.inputs:
                self._set_input_shape(name, largest.get(name, self.inputs[name].shape))
            for name in self.outputs:
                largest[name] = tuple(self.context.get_tensor_shape(name))
        shape_of = lambda n, s: largest.get(n, s.shape)  # noqa: E731
        self._input_buffers = {n: DeviceTensor(shape_of(n, s), s.dtype) for n, s in self.inputs.items()}
        self._output_sets = [
            {n: DeviceTensor(shape_of(n, s), s.dtype) for n, s in self.outputs.items()}
            for _ in range(max(1, output_sets))
        ]
        self._stacked: dict[str, DeviceTensor] = {}  # stack_inputs' buffers (input name -> max shape)
        self._next_set = 0
        self._cache_saved = False

    def _set_input_shape(self, name: str, shape: tuple) -> None:
        if not self.context.set_input_shape(name, tuple(int(d) for d in shape)):
            detail = " ".join(self.logger.errors[-1].split()) if self.logger.errors else "outside its profile"
            raise ValueError(f"{self.path.name}: input {name} cannot take shape {tuple(shape)} ({detail})")

    @property
    def output_set_count(self) -> int:
        return len(self._output_sets)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, DeviceTensor]:
        if threading.get_ident() != self.thread:
            raise RuntimeError(f"{self.path.name}: used from another thread than the one that created it "
                               "(its CUDA context is current there only)")
        for name, spec in self.inputs.items():
            value = feeds[name]
            if isinstance(value, DeviceTensor):
                if not shape_fits(value.shape, spec.shape, self.max_batch) or value.dtype.name != spec.dtype:
                    raise ValueError(f"{self.path.name}: input {name} is {value.shape} {value.dtype.name}, "
                                     f"the engine wants {spec.shape} {spec.dtype}")
                address = value.ptr
            else:
                array = np.asarray(value)
                check_host_feed(self.path.name, name, spec, array, self.max_batch)
                buffer = self._input_buffers[name].view(array.shape)
                buffer.upload(array)
                address = buffer.ptr
            if self.dynamic:  # this pass's shape (NVIDIA's samples: set_input_shape before every enqueue)
                self._set_input_shape(name, value.shape)
            self.context.set_tensor_address(name, address)
        outputs = self._output_sets[self._next_set]
        self._next_set = (self._next_set + 1) % len(self._output_sets)
        if self.dynamic:  # this pass's output shapes, from the context: views of the max-size buffers
            outputs = {name: tensor.view(tuple(self.context.get_tensor_shape(name))) for name, tensor in outputs.items()}
        for name, tensor in outputs.items():
            self.context.set_tensor_address(name, tensor.ptr)
        if not self.context.execute_async_v3(self.stream.handle):
            detail = " ".join(self.logger.errors[-1].split()) if self.logger.errors else "no message"
            raise RuntimeError(f"{self.path.name}: execute_async_v3 failed ({detail})")
        self.stream.synchronize()  # per-stage latency stays measurable; stages are serial anyway
        if self.cache_file is not None and not self._cache_saved:  # the first frame's kernels, even if killed later
            self._cache_saved = True
            self.cache_file.save()
        return dict(outputs)

    def stack_inputs(self, items: Mapping[str, list[DeviceTensor]], strip: str = "") -> dict[str, DeviceTensor]:
        """Several frames' tensors (each [1,...], e.g. every camera's previous levels) copied, device to device, into
        this engine's own buffers for those inputs as one [n,...] batch; keys without `strip`. The buffers are
        reused every pass (a batch's input is consumed by its run before the next stack)."""
        stacked = {}
        for name, tensors in items.items():
            spec = self.inputs[name]
            if name not in self._stacked:
                self._stacked[name] = DeviceTensor(self._input_buffers[name].shape, spec.dtype)
            batch = self._stacked[name].view((len(tensors),) + tuple(tensors[0].shape[1:]))
            for i, tensor in enumerate(tensors):
                batch[i:i + 1].copy_from(tensor)
            stacked[name[len(strip):] if strip and name.startswith(strip) else name] = batch
        return stacked

    def copy_levels(self, levels: Mapping[str, DeviceTensor], into: Mapping[str, DeviceTensor] | None = None
                    ) -> dict[str, DeviceTensor]:
        """Device copies of `levels` that no later run overwrites (a pipeline state's own), reusing the buffers of
        `into` (the state's previous copy) where their shapes match; finished on the stream before returning."""
        copies = {}
        for name, tensor in levels.items():
            target = (into or {}).get(name)
            if target is tensor:  # already the state's own
                copies[name] = tensor
                continue
            if not isinstance(target, DeviceTensor) or target.is_view or target.shape != tensor.shape \
                    or target.dtype != tensor.dtype:
                target = DeviceTensor(tensor.shape, tensor.dtype)
            target.copy_from(tensor)
            copies[name] = target
        self.stream.synchronize()
        return copies

    def close(self) -> None:
        if self.cache_file is not None:  # kernels compiled after the first frame (rewritten only if changed)
            self.cache_file.save()
        for buffer in [*self._input_buffers.values(), *self._stacked.values(),
                       *(t for s in self._output_sets for t in s.values())]:
            buffer.free()
        # the context goes before the runtime config and cache it was created with
        self.context = None
        self.cache_file = self.runtime_cache = self.runtime_config = None
        self.engine = self.runtime = None
