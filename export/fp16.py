"""Precision lives in the graph: FP32 ONNX -> mixed FP16 ONNX that ONNX Runtime and TensorRT run alike.

TensorRT 11 removed the FP16/INT8 builder flags; a strongly typed network takes each tensor's type from the
graph. ONNX Runtime's float16 converter (onnxruntime.transformers.float16, the maintained descendant of
onnxconverter-common's) does the conversion; we only choose what stays FP32
(behind Cast nodes), which are the parts known to break DINOv2 in FP16:
- LayerNormalization (its statistics overflow), Softmax and the attention-score MatMul feeding it
  (QK^T sums 64 products of large outlier activations);
- the position-embedding Add (the embedding is an FP32 constant resized in FP32, added once);
- the decoder's tail: everything downstream of its last convolution producing a single channel or the
  depth bins (ReLU + min_depth, bin expectation, clamp, the final resize), because FP16 has a 4-8 mm
  step at 5-10 m, above the precision gate's 5 mm budget on its own;
- GridSample in the temporal adapter (ONNX Runtime's CPU kernel is FP32; it is tiny anyway).
Graph inputs and outputs keep their types, so the stages wire the same way at any precision.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import onnx
from onnxruntime.transformers import float16
from onnxruntime.transformers.onnx_model import OnnxModel
from smoothdino.core.files import atomic_path

KEEP_FP32_OPS = ["LayerNormalization", "Softmax", "GridSample", "ReduceMean", "Pow", "Sqrt"]


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def attention_score_nodes(graph: onnx.GraphProto) -> list[str]:
    """The MatMul (and the scaling between it and Softmax) whose output feeds each Softmax."""
    producers = _producers(graph)
    names = []
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        tensor = node.input[0]
        while tensor in producers:
            prev = producers[tensor]
            names.append(prev.name)
            if prev.op_type == "MatMul":
                break
            if prev.op_type not in ("Mul", "Div", "Add"):
                break
            tensor = prev.input[0]
    return names


def constant_add_nodes(graph: onnx.GraphProto, min_elements: int = 10_000) -> list[str]:
    """Adds of a large constant: the position embedding (resized in FP32, a graph initializer)."""
    sizes = {i.name: math.prod(i.dims) for i in graph.initializer}
    return [
        n.name for n in graph.node
        if n.op_type == "Add" and any(sizes.get(x, 0) >= min_elements for x in n.input)
    ]


def decoder_tail_nodes(graph: onnx.GraphProto) -> list[str]:
    """Every node downstream of the last Conv of the graph (the depth activation and post-processing).

    The Conv itself stays FP16 unless it has a single output channel (DPT's 32->1), which is cheap and
    sets the depth directly."""
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if not convs:
        return []
    last = convs[-1]
    weights = {i.name: list(i.dims) for i in graph.initializer}
    tail = [last.name] if weights.get(last.input[1], [0])[0] == 1 else []
    consumers = _consumers(graph)
    frontier, seen = list(last.output), set()
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.name not in seen:
                seen.add(node.name)
                tail.append(node.name)
                frontier.extend(node.output)
    return tail


def convert_to_fp16(src: Path, dst: Path, stage: str) -> Path:
    """Write the mixed-precision graph of a stage next to the FP32 one. Returns dst."""
    model = onnx.load(str(src))
    graph = model.graph
    keep = attention_score_nodes(graph) + constant_add_nodes(graph)
    if stage == "decoder":
        keep += decoder_tail_nodes(graph)
    with warnings.catch_warnings():  # one warning per weight below FP16's smallest normal: noise
        warnings.simplefilter("ignore")
        mixed = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + KEEP_FP32_OPS,
            node_block_list=keep,
        )
    OnnxModel(mixed).topological_sort()  # the converter appends its Cast nodes at the end
    onnx.checker.check_model(mixed)
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        onnx.save(mixed, str(tmp))
    return dst


def precision_summary(path: Path) -> dict[str, int]:
    """How many nodes compute in FP16 vs FP32 (by output type after shape inference) - for the manifest."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    counts = {"fp16": 0, "fp32": 0, "other": 0}
    for node in model.graph.node:
        if node.op_type == "Cast" or not node.output:
            continue
        t = types.get(node.output[0])
        key = "fp16" if t == onnx.TensorProto.FLOAT16 else "fp32" if t == onnx.TensorProto.FLOAT else "other"
        counts[key] += 1
    return counts
