"""INT8 with explicit Q/DQ: FP32 graph + real calibration activations -> one INT8 graph that ONNX Runtime and
TensorRT (strongly typed) both run.

The quantizer is ONNX Runtime's (onnxruntime.quantization.quantize_static, QDQ format); we choose what it sees
and what it must leave alone, following TensorRT's explicit-quantization rules:
- symmetric INT8 activations and weights (zero point 0), per-channel weight scales (MatMul along its output
  axis 1, Conv/Gemm along axis 0), biases left in float (QuantizeBias=False: TensorRT's DequantizeLinear
  takes INT8 only, never an int32 bias);
- only Conv, MatMul and Gemm are quantized, and of MatMuls only those with a weight (an initializer): the
  activation-by-activation attention products (Q K^T and softmax V) stay float - quantizing them made the
  encoder slower than FP32 on a CPU and they are the outlier-prone part;
- fragile nodes stay float (shared with the FP16 converter, export/fp16.py): attention-score MatMul and its
  scaling, the position-embedding Add, the decoder's depth tail (last Conv when it has one output channel and
  everything after it); LayerNorm and Softmax are not in the quantized op types at all;
- SENSITIVE: node groups that the sensitivity sweep (benchmarks/int8_sensitivity.py) found to hurt depth most.
Calibration tensors of each stage come from real frame pairs pushed through the FP32 graphs, exactly as the
pipeline feeds them: encoder images (t-1 and t), adapter inputs (levels, previous levels, measured shift),
decoder inputs (the adapter's fused levels).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_path

from .frames import CalibrationPair

METHODS = ("minmax", "entropy", "percentile")
# benchmarks/int8_sensitivity.py --methods (70x98 decoder, random weights, 3 held-out NYUv2 pairs): drift from FP32
# minmax 74 mm, percentile 55, entropy 52 RMSE. entropy/percentile keep every activation of every calibration
# frame in memory (ONNX Runtime 1.32's CalibMaxIntermediateOutputs drops collected data instead of folding it),
# several GB per frame for the decoder at 480x640 on a 23 GB shared machine: minmax is the default, the others
# are for small sizes / few frames (--calibration-method).
DEFAULT_METHOD = "minmax"
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]
# node-name fragments kept in float after the sensitivity sweep (benchmarks/int8_sensitivity.py), per stage
SENSITIVE: dict[str, list[str]] = {"encoder": [], "adapter": [], "decoder": []}


class FeedsReader:
    """onnxruntime.quantization.CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = list(feeds)
        self._it = iter(self.feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.feeds)


def stage_feeds(fp32_graphs: dict[str, Path], pairs: list[CalibrationPair], min_confidence: float = 0.1,
                threads: int | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Each stage's inputs for each pair, through the FP32 graphs as the pipeline runs them (prime t-1, step t)."""
    from smoothdino.edge.motion import phase_shift, scene_cut, to_grey
    from smoothdino.edge.engines.onnxruntime_engine import OnnxRuntimeEngine

    if not pairs:
        raise UserError("INT8 calibration: no calibration frames could be read")
    engines = {s: OnnxRuntimeEngine(p, providers=["CPUExecutionProvider"], threads=threads) for s, p in fp32_graphs.items()}
    feeds: dict[str, list] = {s: [] for s in engines}
    for pair in pairs:
        images = [{"image": np.ascontiguousarray(pair.previous)[None]}, {"image": np.ascontiguousarray(pair.current)[None]}]
        feeds["encoder"] += images
        previous, levels = (engines["encoder"].run(f) for f in images)
        fused = levels
        if "adapter" in engines:
            shift, cut = scene_cut(phase_shift(to_grey(pair.previous), to_grey(pair.current)), min_confidence)
            adapter_in = {**levels, **{f"prev_{k}": v for k, v in (levels if cut else previous).items()},
                          "shift": shift.as_array()}
            feeds["adapter"].append(adapter_in)
            out = engines["adapter"].run(adapter_in)
            fused = {k[len("fused_"):]: v for k, v in out.items()}
        if "decoder" in engines:
            feeds["decoder"].append(fused)
    for engine in engines.values():
        engine.close()
    return feeds


# -- what stays float ------------------------------------------------------------------------------

def activation_matmuls(graph: onnx.GraphProto) -> list[str]:
    """MatMuls without a weight (both inputs computed): attention Q K^T and softmax V."""
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(x in constants for x in n.input)]


def float_nodes(graph: onnx.GraphProto, stage: str, extra: Iterable[str] = ()) -> list[str]:
    """Names of the nodes quantize_static must leave in float for a stage."""
    from smoothdino.export.fp16 import attention_score_nodes, constant_add_nodes, decoder_tail_nodes

    keep = attention_score_nodes(graph) + activation_matmuls(graph) + constant_add_nodes(graph)
    if stage == "decoder":
        keep += decoder_tail_nodes(graph)
    fragments = list(SENSITIVE.get(stage, [])) + list(extra)
    keep += [n.name for n in graph.node if any(f and f in n.name for f in fragments)]
    return sorted(set(keep))


def quantize_stage(src: Path, dst: Path, stage: str, feeds: list[dict[str, np.ndarray]],
                   method: str = DEFAULT_METHOD, exclude: Iterable[str] = (), only: Iterable[str] | None = None) -> Path:
    """Write the INT8 Q/DQ graph of a stage. `exclude`: extra node-name fragments kept float; `only`: quantize
    only nodes whose names contain one of these fragments (the sensitivity sweep). Returns dst."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise UserError(f"--calibration-method {method!r}: choose {', '.join(METHODS)}")
    if not feeds:
        raise UserError(f"INT8 calibration of the {stage}: no calibration tensors")
    model = onnx.load(str(src))
    graph = model.graph
    keep = float_nodes(graph, stage, exclude)
    if only is not None:
        only = list(only)
        keep += [n.name for n in graph.node if n.op_type in QUANTIZED_OPS and not any(f in n.name for f in only)]
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    extra = {
        "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        "CalibTensorRangeSymmetric": True,
    }
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    dst = Path(dst)
    with tempfile.TemporaryDirectory(prefix="smoothdino-int8-") as tmp, atomic_path(dst) as out, \
            _quiet_root_logger():
        # the calibrator writes an augmented copy of the model: keep it out of the export folder
        quantize_static(
            str(src), str(out), FeedsReader(feeds), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(set(keep)), calibrate_method=calibrate, extra_options=extra,
            calibration_providers=["CPUExecutionProvider"],
            **_tmp_dir_kw(tmp),
        )
    check_int8_graph(dst)
    return dst


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs "consider pre-processing" on the root logger at every call; our graphs are
    already shape-inferred and constant-folded, so the advice is noise in a user's console."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _tmp_dir_kw(tmp: str) -> dict:
    import inspect

    from onnxruntime.quantization import quantize_static

    params = inspect.signature(quantize_static).parameters
    return {"calibration_tmp_dir": tmp} if "calibration_tmp_dir" in params else {}


# -- what TensorRT's explicit quantization accepts --------------------------------------------------

def int8_summary(path: Path) -> dict:
    """Q/DQ counts, quantized compute nodes and what is not TensorRT-legal (empty `problems` = fine)."""
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute}
    tensors = {**consts, **inits}
    producers = {o: n for n in graph.node for o in n.output}
    problems, q, dq, quantized = [], 0, 0, []
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            q += node.op_type == "QuantizeLinear"
            dq += node.op_type == "DequantizeLinear"
            if len(node.input) > 2:
                zp = tensors.get(node.input[2])
                if zp is None:
                    problems.append(f"{node.name}: zero point not a constant")
                else:
                    if zp.data_type != onnx.TensorProto.INT8:
                        problems.append(f"{node.name}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)}")
                    if np.any(onnx.numpy_helper.to_array(zp) != 0):
                        problems.append(f"{node.name}: non-zero zero point")
            if node.op_type == "DequantizeLinear" and node.input[0] in tensors:
                x = tensors[node.input[0]]
                if x.data_type != onnx.TensorProto.INT8:
                    problems.append(f"{node.name}: dequantizes {onnx.TensorProto.DataType.Name(x.data_type)}")
        elif node.op_type in QUANTIZED_OPS:
            src = producers.get(node.input[0])
            if src is not None and src.op_type == "DequantizeLinear":
                quantized.append(node.name)
    return {"quantize": q, "dequantize": dq, "quantized_nodes": quantized, "problems": problems}


def check_int8_graph(path: Path) -> dict:
    summary = int8_summary(path)
    if summary["problems"]:
        raise UserError(f"{path}: not a TensorRT-legal Q/DQ graph: {'; '.join(summary['problems'][:3])}")
    if not summary["quantized_nodes"]:
        raise UserError(f"{path}: no node was quantized (calibration produced no ranges?)")
    return summary
