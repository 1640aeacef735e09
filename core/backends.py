"""The back-end words, one list for every command (export, process, live, bench, calibrate).

    auto              TensorRT where its engines can run, else ONNX Runtime's CUDA provider where ONNX Runtime has
                      it, else ONNX Runtime on the CPU; one notice says which and why (edge.engines.factory)
    onnxruntime       ONNX Runtime on the graphs (its CUDA provider when onnxruntime-gpu is installed, else the CPU)
    onnxruntime-cuda  ONNX Runtime's CUDA execution provider (the `gpu` extra: onnxruntime-gpu): NVIDIA GPUs without
                      TensorRT; where ONNX Runtime has no CUDA provider, the CPU with a notice saying so
    tensorrt          TensorRT 10/11 engines (Jetson, x86 GPUs)
    tensorrt-rtx      TensorRT for RTX engines (RTX desktop GPUs; buildable on any machine)
`onnx` is accepted for `onnxruntime` (export writes ONNX graphs for it).
"""

from __future__ import annotations

from .errors import UserError

BACKENDS = ("auto", "onnxruntime", "onnxruntime-cuda", "tensorrt", "tensorrt-rtx")
ONNXRUNTIME_BACKENDS = ("onnxruntime", "onnxruntime-cuda")  # the words ONNX Runtime runs: ONNX graphs, no engines
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "trt": "tensorrt"}


def backend_word(text: str, option: str = "--backend", extra: tuple[str, ...] = ()) -> str:
    word = ALIASES.get(text.strip().lower(), text.strip().lower())
    if word not in BACKENDS + extra:
        raise UserError(f"{option} {text!r}: choose one of {', '.join(BACKENDS + extra)}")
    return word
