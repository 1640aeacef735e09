"""Which engine opens a graph or engine file: the back-end word resolved against what this machine can run, then
the engine class for it. Apart from the engines themselves, so that they and their interface (engine.py) never
import each other."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from smoothdino.core.backends import ONNXRUNTIME_BACKENDS, backend_word
from smoothdino.core.console import notice
from smoothdino.edge.machine import environment
from smoothdino.edge.machine.environment import tensorrt_usable

from .engine import TENSORRT_BACKENDS, Engine
from .onnxruntime_engine import CUDA_PROVIDER

# What makes ONNX Runtime's CUDA provider appear: the `gpu` extra's package, alone (PyPI's onnxruntime and
# onnxruntime-gpu share one module, and whichever was installed last owns it), with NVIDIA's CUDA and cuDNN wheels.
GPU_EXTRA_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]'"
TITLES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT for RTX"}


def choose_backend(requested: str, *, providers: Sequence[str], tensorrt: tuple[bool, str], have_engines: bool,
                   engine_flavour: str | None = None, gpu: str | None = None) -> tuple[str, str | None]:
    """(the back-end a run gets, the one notice that says which and why; None when it is the one asked for).

    auto: TensorRT (the engines' flavour, manifest.tensorrt_flavour) where it runs (`tensorrt`: tensorrt_usable's
    answer for that flavour) and the export has engines; else ONNX Runtime's CUDA provider where `providers`
    (onnxruntime.get_available_providers()) has it; else ONNX Runtime on the CPU, naming the package that would use
    `gpu` (the NVIDIA GPU seen here, if any). A word asked for by name falls back the same way, said once."""
    requested = backend_word(requested)
    cuda = CUDA_PROVIDER in providers
    if requested == "onnxruntime":
        return "onnxruntime", None
    if requested == "onnxruntime-cuda":
        if cuda:
            return requested, None
        where = f" ({gpu})" if gpu else ""
        return "onnxruntime", (f"ONNX Runtime here has no {CUDA_PROVIDER}; using ONNX Runtime on the CPU (for the "
                               f"GPU{where}: {GPU_EXTRA_FIX})")
    flavour = tensorrt_flavour(requested, engine_flavour)
    usable, why = tensorrt
    if usable and have_engines:
        return flavour, f"--backend auto: {TITLES[flavour]} (its engines run here)" if requested == "auto" else None
    reason = why if not usable else f"the export has no {TITLES[flavour]} engines (export with --backend {flavour})"
    prefix = "--backend auto: " if requested == "auto" else ""
    if cuda:
        return "onnxruntime-cuda", (f"{prefix}{TITLES[flavour]} unavailable ({reason}); using ONNX Runtime's CUDA "
                                    "provider")
    unused = f" ({gpu} unused: {GPU_EXTRA_FIX} for ONNX Runtime's CUDA provider)" if gpu else ""
    return "onnxruntime", f"{prefix}{TITLES[flavour]} unavailable ({reason}); using ONNX Runtime on the CPU{unused}"


def tensorrt_flavour(requested: str, engine_flavour: str | None) -> str:
    """The TensorRT flavour `auto` or a TensorRT word means for an export whose engines are `engine_flavour`."""
    return requested if requested in TENSORRT_BACKENDS else (engine_flavour or "tensorrt")


def resolve_backend(requested: str, have_engines: bool, engine_flavour: str | None = None) -> str:
    """choose_backend with this machine's facts (ONNX Runtime's providers, TensorRT, the GPU); prints its notice."""
    requested = backend_word(requested)
    if requested == "onnxruntime":
        return requested
    providers = environment.onnxruntime_providers()
    tensorrt = (False, "not asked for") if requested in ONNXRUNTIME_BACKENDS else \
        tensorrt_usable(tensorrt_flavour(requested, engine_flavour))
    gpu = None if CUDA_PROVIDER in providers else (environment.gpu() or {}).get("name")
    word, said = choose_backend(requested, providers=providers, tensorrt=tensorrt, have_engines=have_engines,
                                engine_flavour=engine_flavour, gpu=gpu)
    if said:
        notice(said)
    return word


def cuda_provider_state(providers: Sequence[str], gpu: str | None) -> tuple[bool, str]:
    """(whether ONNX Runtime runs graphs on an NVIDIA GPU here, the line `info` and `doctor` print)."""
    if CUDA_PROVIDER in providers:
        return True, f"{CUDA_PROVIDER}: --backend onnxruntime-cuda runs the graphs on the GPU (no TensorRT needed)"
    if gpu:
        return False, f"no {CUDA_PROVIDER}, so without TensorRT {gpu} is unused: {GPU_EXTRA_FIX}"
    return False, f"no {CUDA_PROVIDER} (and no NVIDIA GPU seen): the graphs run on the CPU"


def open_engine(path: Path, backend: str, **kwargs) -> Engine:
    if backend in TENSORRT_BACKENDS:
        from .tensorrt_engine import TensorRTEngine

        return TensorRTEngine(path, flavour=backend, **kwargs)
    from .onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, **{k: v for k, v in kwargs.items() if k in ("providers", "threads")})
