"""torch -> ONNX (three graphs) -> mixed precision -> TensorRT engines, gated, with a manifest."""

from .exporter import EXPORT_FORMATS, ensure_export, export_model
from .spec import EXPORT_BACKENDS, ExportSpec
from .graphs import AdapterGraph, DecoderGraph, EncoderGraph
from .onnx import OPSET, compare_with_torch, export_graph, relative_error
from .fp16 import convert_to_fp16, precision_summary
from .tensorrt import build_engine, require_tensorrt

__all__ = [
    "EXPORT_FORMATS", "EXPORT_BACKENDS", "ExportSpec", "ensure_export", "export_model", "AdapterGraph", "DecoderGraph", "EncoderGraph",
    "OPSET", "compare_with_torch", "export_graph", "relative_error", "convert_to_fp16", "precision_summary",
    "build_engine", "require_tensorrt",
]
