"""The back-end words, one list for every command (export, process, live, bench, calibrate).

    auto          TensorRT where it can run, else ONNX Runtime (with a one-line notice)
    onnxruntime   ONNX Runtime on the graphs (CPU; CUDA / TensorRT execution providers when present)
    tensorrt      TensorRT 10/11 engines (Jetson, x86 GPUs)
    tensorrt-rtx  TensorRT for RTX engines (RTX desktop GPUs; buildable on any machine)
`onnx` is accepted for `onnxruntime` (export writes ONNX graphs for it).
"""

from __future__ import annotations

from .errors import UserError

BACKENDS = ("auto", "onnxruntime", "tensorrt", "tensorrt-rtx")
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "trt": "tensorrt"}


def backend_word(text: str, option: str = "--backend", extra: tuple[str, ...] = ()) -> str:
    word = ALIASES.get(text.strip().lower(), text.strip().lower())
    if word not in BACKENDS + extra:
        raise UserError(f"{option} {text!r}: choose one of {', '.join(BACKENDS + extra)}")
    return word
