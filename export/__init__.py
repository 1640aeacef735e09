"""torch -> ONNX (three graphs) -> mixed precision -> TensorRT engines, gated, with a manifest.

Names load on first use (PEP 562): `smoothdino.export.tensorrt` and `.stage_precision` need no PyTorch, so
`smoothdino build` and `calibrate` run on a Jetson's torch-free install; the graph export needs the torch extra."""

from __future__ import annotations

import importlib

_WHERE = {
    "EXPORT_FORMATS": "exporter", "ensure_export": "exporter", "export_model": "exporter",
    "EXPORT_BACKENDS": "spec", "ExportSpec": "spec",
    "AdapterGraph": "graphs", "DecoderGraph": "graphs", "EncoderGraph": "graphs",
    "OPSET": "onnx", "compare_with_torch": "onnx", "export_graph": "onnx", "relative_error": "onnx",
    "convert_to_fp16": "fp16", "precision_summary": "fp16",
    "build_engine": "tensorrt", "build_stage_engines": "tensorrt", "require_tensorrt": "tensorrt",
}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
