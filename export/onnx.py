"""torch -> ONNX for the three graphs: static shapes, opset 17, constants folded, checked, and compared
with the PyTorch FP32 modules through ONNX Runtime.

A batch export (`export --batch N`) gives every input and output a dynamic first axis named "batch" (1..N
frames a pass) and keeps every other axis static: the graph is traced on two different frames, so nothing
specialises on a batch of one, and the non-batch dims of the outputs are written back from the stage's shapes
(the tracer would leave them as symbols, e.g. after the decoder's Resize).

Opset 17 with the TorchScript exporter: LayerNorm becomes one LayerNormalization op (TensorRT >= 8.6 maps
it to its normalization layer, which keeps FP16 statistics from overflowing); the dynamo exporter emits
opset >= 18 only, which older JetPack TensorRT parsers reject.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from smoothdino.edge.engines.graph_io import IO
from smoothdino.core.files import atomic_path

OPSET = 17


BATCH_AXIS = "batch"


def export_graph(module: torch.nn.Module, stage: str, example: tuple[torch.Tensor, ...], path: Path,
                 shapes: dict[str, list[int]] | None = None) -> Path:
    """Export one graph with the stage's I/O names; onnx.checker must pass. `shapes` (name -> shape, the first dim
    -1) makes the first axis of every input and output a dynamic batch axis and fixes the others to `shapes`."""
    inputs, outputs = IO[stage]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {name: {0: BATCH_AXIS} for name in inputs + outputs} if shapes else None
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), example, str(tmp), input_names=inputs, output_names=outputs,
            opset_version=OPSET, do_constant_folding=True, dynamo=False, dynamic_axes=dynamic,
        )
        if shapes:
            model = onnx.load(str(tmp))
            _fix_io_dims(model, shapes)
            onnx.save(model, str(tmp))
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)  # a graph under its final name passed it
    return path


def _fix_io_dims(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> None:
    """Every graph input/output: first dim the symbolic batch axis, the others the static values of `shapes`."""
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        for k, size in enumerate(shapes[value.name]):
            if k == 0:
                dims[k].dim_param = BATCH_AXIS
            else:
                dims[k].dim_value = int(size)


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One CPU ONNX Runtime run (used to check graphs; the run-time uses edge.engines)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|: scale-free, and blind to nothing (a max, not a mean)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-12))


def compare_with_torch(path: Path, module: torch.nn.Module, stage: str, example: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Relative error of every output of the ONNX graph against the torch module on the same inputs."""
    inputs, outputs = IO[stage]
    with torch.no_grad():
        expected = module(*example)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = run_onnx(path, {name: t.numpy() for name, t in zip(inputs, example)})
    return {name: relative_error(got[name], e.numpy()) for name, e in zip(outputs, expected)}
