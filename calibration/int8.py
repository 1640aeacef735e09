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


# -- MinMax ranges in one pass over the stages ---------------------------------------------------------

def _session(path: Path, threads: int | None = None, arena: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = arena  # off for the range graphs: their extra consumers keep big tensors alive
    if not arena:  # and their reductions run as soon as their tensor exists (measured: -0.3 GB on the decoder)
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def give_back_memory() -> None:
    """Hand the heap that closed ONNX Runtime sessions freed back to the OS (glibc keeps it otherwise, and the
    export's peak memory is the sum of its steps' leftovers). A no-op where there is no glibc."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RangeGraph:
    """A stage's FP32 graph with ONNX Runtime's own MinMax calibrator's ReduceMin/ReduceMax outputs added on the
    tensors quantize_static calibrates (`MinMaxCalibrater.augment_graph`), run with graph optimisations on (the
    calibrator runs it with every optimisation off: ~1.5x slower) and without the memory arena. One run gives the
    stage's own outputs (the next stage's inputs) and its ranges, so one pass over the frames calibrates every
    stage and feeds the next; `ranges()` is the calibrator's own `compute_data`, i.e. what quantize_static would
    have computed from the same frames."""

    def __init__(self, src: Path, stage: str, tmp: str, threads: int | None = None):
        self.calibrator = _calibrator(Path(src), stage, str(Path(tmp) / "ranges.onnx"))
        self.calibrator.augment_graph()
        self.calibrator.model = None  # the augmented copy is on disk; free the protobuf
        self.session = _session(self.calibrator.augmented_model_path, threads, arena=False)
        self.calibrator.infer_session = self.session  # compute_data reads its output names
        self.names = [o.name for o in self.session.get_outputs()]
        self.own = set(self.calibrator.model_original_outputs)
        self.frames = 0

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(None, feed)
        self.calibrator.intermediate_outputs.append([None if n in self.own else v for n, v in zip(self.names, values)])
        self.frames += 1
        return {n: v for n, v in zip(self.names, values) if n in self.own}

    def ranges(self):
        return self.calibrator.compute_data()


def _calibrator(src: Path, stage: str, augmented: str):
    """ONNX Runtime's MinMax calibrator of a stage, on the tensors of the nodes quantize_stage quantizes only: it
    would otherwise also take the ranges of the nodes kept in float (attention scores: 60 MB a head-block at
    480x640), which no Q/DQ node uses, and hold those tensors until their reductions ran."""
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    class StageCalibrater(MinMaxCalibrater):
        def select_tensors_to_calibrate(self, model):
            tensors, value_infos = super().select_tensors_to_calibrate(model)
            skip = set(float_nodes(model.graph, stage))
            used = {t for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name not in skip
                    for t in (*n.input, *n.output)}
            return tensors & used, value_infos

    return StageCalibrater(Path(src), QUANTIZED_OPS, augmented_model_path=augmented,
                           symmetric=True)  # = CalibTensorRangeSymmetric below


def stage_ranges(fp32_graphs: dict[str, Path], pairs: list[CalibrationPair], stages: Iterable[str],
                 min_confidence: float = 0.1, threads: int | None = None, progress=None) -> dict:
    """{stage: TensorsData}: MinMax ranges of `stages` over the pairs, the pairs pushed through the FP32 graphs as
    the pipeline runs them (prime t-1, step t), stage after stage, one graph open at a time; a stage upstream of a
    calibrated one runs plain, only to feed it. `progress(stage)` after each graph run."""
    from smoothdino.edge.motion import phase_shift, scene_cut, to_grey

    stages = [s for s in fp32_graphs if s in set(stages)]
    if not pairs:
        raise UserError("INT8 calibration: no calibration frames could be read")
    if not stages:
        return {}
    order = list(fp32_graphs)[: list(fp32_graphs).index(stages[-1]) + 1]
    ranges: dict = {}
    levels: list[tuple[dict, dict]] = []  # per pair: (previous, current) encoder outputs
    fused: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="smoothdino-ranges-") as tmp:
        for stage in order:
            graph = RangeGraph(fp32_graphs[stage], stage, tmp, threads) if stage in stages else None
            session = None if graph else _session(fp32_graphs[stage], threads)
            names = None if graph else [o.name for o in session.get_outputs()]

            def run(feed):
                out = graph.run(feed) if graph else dict(zip(names, session.run(None, feed)))
                if progress:
                    progress(stage)
                return out

            if stage == "encoder":
                for pair in pairs:
                    levels.append(tuple(run({"image": np.ascontiguousarray(image)[None]})
                                        for image in (pair.previous, pair.current)))
                fused = [current for _, current in levels]
            elif stage == "adapter":
                fused = []
                for pair, (previous, current) in zip(pairs, levels):
                    shift, cut = scene_cut(phase_shift(to_grey(pair.previous), to_grey(pair.current)), min_confidence)
                    out = run({**current, **{f"prev_{k}": v for k, v in (current if cut else previous).items()},
                               "shift": shift.as_array()})
                    fused.append({k[len("fused_"):]: v for k, v in out.items()})
            elif stage == "decoder":
                for feed in fused:
                    run(feed)
            if graph:
                ranges[stage] = graph.ranges()
            del graph, session
            give_back_memory()
    return ranges


def placeholder_ranges(src: Path, stage: str):
    """Ranges of +-1 on every tensor `stage_ranges` calibrates: an INT8 graph with exactly the calibrated graph's
    Q/DQ structure, hence its speed, without running a frame. For timing only: never gated or kept."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    with tempfile.TemporaryDirectory(prefix="smoothdino-probe-") as tmp:
        calibrator = _calibrator(Path(src), stage, str(Path(tmp) / "unused.onnx"))
        tensors, _ = calibrator.select_tensors_to_calibrate(calibrator.model)
    one = np.array([1.0], dtype=np.float32)
    return TensorsData(CalibrationMethod.MinMax, {t: (-one, one) for t in sorted(tensors)})


def quantize_stage(src: Path, dst: Path, stage: str, feeds: list[dict[str, np.ndarray]] | None = None,
                   method: str = DEFAULT_METHOD, exclude: Iterable[str] = (), only: Iterable[str] | None = None,
                   ranges=None) -> Path:
    """Write the INT8 Q/DQ graph of a stage, its activation ranges from `ranges` (MinMax TensorsData, from
    `stage_ranges`) or else calibrated by quantize_static on `feeds`. `exclude`: extra node-name fragments kept
    float; `only`: quantize only nodes whose names contain one of these fragments (the sensitivity sweep).
    Returns dst."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise UserError(f"--calibration-method {method!r}: choose {', '.join(METHODS)}")
    if ranges is not None and method != "minmax":
        raise ValueError("precomputed ranges are MinMax ranges")
    if not feeds and ranges is None:
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
    del model, graph
    options = dict(quant_format=QuantFormat.QDQ, op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
                   activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=sorted(set(keep)),
                   calibrate_method=calibrate, extra_options=extra)
    with tempfile.TemporaryDirectory(prefix="smoothdino-int8-") as tmp, atomic_path(dst) as out, \
            _quiet_root_logger():
        if ranges is not None:
            _quantize_with_ranges(src, out, ranges, Path(tmp), options)
        else:  # the calibrator writes an augmented copy of the model: keep it out of the export folder
            quantize_static(str(src), str(out), FeedsReader(feeds), calibration_providers=["CPUExecutionProvider"],
                            **options, **_tmp_dir_kw(tmp))
    check_int8_graph(dst)
    return dst


def _quantize_with_ranges(src: Path, out: Path, ranges, tmp: Path, options: dict) -> None:
    """quantize_static with ranges already computed: through its calibration cache where this ONNX Runtime has
    one (1.32+), else through the QDQ quantizer it would have called."""
    import inspect

    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        from onnxruntime.quantization.calibrate import save_tensors_data

        save_tensors_data(ranges, tmp / "ranges.json")
        quantize_static(str(src), str(out), None, calibration_cache_path=str(tmp / "ranges.json"), **options)
        return
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    quantizer = QDQQuantizer(load_model_with_shape_infer(Path(src)), options["per_channel"], False,
                             options["weight_type"], options["activation_type"], ranges, [],
                             options["nodes_to_exclude"], options["op_types_to_quantize"], options["extra_options"])
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(out), False)


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
