"""ONNX -> serialized TensorRT engine, for both flavours with one code path:

- `tensorrt`: TensorRT 10.3 (JetPack 6) and TensorRT 10/11 on x86; builds for the GPU it runs on.
- `tensorrt-rtx`: TensorRT for RTX; builds ahead of time, without a GPU, for the compute capabilities asked
  for (`config.num_compute_capabilities` / `set_compute_capability`, an RTX-only API).

Common to both:
- Strongly typed network: every tensor's precision comes from the ONNX graph (TensorRT 11 and RTX have no
  FP16/INT8 builder flags; TensorRT 10 honours the graph's types the same way with this flag).
- The parsed network's I/O names, shapes and dtypes are checked against the manifest's before building.
- A workspace cap (`set_memory_pool_limit`) so builds fit small Jetsons.
- A timing cache shared by the builds (and kept on disk), so rebuilding is fast.
- A graph the parser refuses gives one line naming the node and its op.
- A batch export (`export --batch N`: a dynamic first axis on every input) gets one optimisation profile, the
  same for every input: min 1, opt N, max N frames (`builder.create_optimization_profile`, `set_shape`,
  `config.add_optimization_profile`); the run-time sets each pass's shapes (edge/engines/tensorrt_engine.py).
Importable without either flavour: `require_tensorrt()` says in one line what is missing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_bytes
from smoothdino.edge.machine.environment import (FLAVOUR_MODULES, FLAVOUR_TITLES, RTX_COMPUTE_CAPABILITIES, gpu,
                                         import_tensorrt, rtx_runs_on)
from smoothdino.edge.engines.tensorrt_engine import tensorrt_logger

# What a `tensorrt-rtx` export targets when no GPU here says otherwise: every architecture RTX supports.
# Turing (7.5) has no FP32 GEMM in TensorRT for RTX ("FP32 GEMM is not supported" for SM75), so FP32
# graphs (and the FP32 adapter/decoder parts) cannot target it: FP16 exports only.
PORTABLE_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0")
NO_FP32_GEMM = ("7.5",)
# Logged by TensorRT for RTX when it probes for a GPU on a machine without a driver; an ahead-of-time build
# does not need one, so it is not an error here.
_NO_DRIVER_MESSAGE = "CUDA driver version is insufficient"


def require_tensorrt(flavour: str = "tensorrt"):
    try:
        return import_tensorrt(flavour)
    except UserError:
        raise  # already one line with its fix (e.g. TensorRT 8.6: which JetPack to use)
    except Exception as err:
        hint = ("pip install tensorrt-rtx-cu12-libs tensorrt-rtx-cu12-bindings" if flavour == "tensorrt-rtx"
                else "install it from NVIDIA (JetPack ships it)")
        raise UserError(
            f"{FLAVOUR_TITLES[flavour]} is not importable as {' or '.join(FLAVOUR_MODULES[flavour])} "
            f"({type(err).__name__}): {hint}, or export with --backend onnx"
        ) from None


def resolve_compute_capabilities(flavour: str, requested: Iterable[str] = (), precision: str = "fp16") -> list[str]:
    """TensorRT for RTX targets: those asked for, else this machine's RTX GPU, else the portable set (less
    Turing for FP32). Plain TensorRT builds for the local GPU only: no targets."""
    if flavour != "tensorrt-rtx":
        if list(requested):
            raise UserError("--compute-capability applies to --backend tensorrt-rtx only (TensorRT builds for "
                            "the GPU it runs on)")
        return []
    wanted = [str(cc).strip() for cc in requested if str(cc).strip()]
    for cc in wanted:
        if cc not in RTX_COMPUTE_CAPABILITIES:
            raise UserError(f"--compute-capability {cc}: TensorRT for RTX builds for "
                            f"{', '.join(RTX_COMPUTE_CAPABILITIES)}")
    if precision == "fp32" and any(cc in NO_FP32_GEMM for cc in wanted):
        raise UserError(f"--compute-capability {', '.join(NO_FP32_GEMM)}: TensorRT for RTX has no FP32 matrix "
                        "multiply on Turing; export with --precision fp16 for it")
    if wanted:
        return sorted(set(wanted), key=wanted.index)
    local = (gpu() or {}).get("compute_capability")
    if rtx_runs_on(local):
        return [local]
    return [cc for cc in PORTABLE_COMPUTE_CAPABILITIES if not (precision == "fp32" and cc in NO_FP32_GEMM)]


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        # node_name/node_operator: TensorRT >= 8.6 and RTX; the node index otherwise.
        node = error.node_name() if hasattr(error, "node_name") else error.node()
        op = error.node_operator() if hasattr(error, "node_operator") else "?"
        lines.append(f"node {node} ({op}): {_one_line(error.desc())}")
    return "; ".join(lines) or "unknown parser error"


def parse_onnx(onnx_path: Path, flavour: str = "tensorrt"):
    """(trt module, logger, builder, strongly typed network, parser) for one ONNX graph, or a one-line
    UserError naming the node the parser refused and its op."""
    trt = require_tensorrt(flavour)
    logger = tensorrt_logger(trt)  # shared with the run-time: TensorRT keeps the first logger registered
    logger.errors.clear()
    logger.quiet = (_NO_DRIVER_MESSAGE,) if flavour == "tensorrt-rtx" else ()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise UserError(f"{onnx_path}: {FLAVOUR_TITLES[flavour]} cannot parse it: {_parser_errors(parser)}")
    return trt, logger, builder, network, parser


def network_io(trt, network) -> dict[str, dict[str, dict]]:
    """{"inputs"|"outputs": {name: {"shape": [...], "dtype": "float32"}}} in the manifest's terms."""

    def describe(tensor) -> dict:
        return {"shape": [int(d) for d in tensor.shape], "dtype": np.dtype(trt.nptype(tensor.dtype)).name}

    return {
        "inputs": {t.name: describe(t) for t in (network.get_input(i) for i in range(network.num_inputs))},
        "outputs": {t.name: describe(t) for t in (network.get_output(i) for i in range(network.num_outputs))},
    }


def _check_io(onnx_path: Path, found: dict, expected: Mapping[str, Mapping[str, dict]]) -> None:
    for side in ("inputs", "outputs"):
        want = {name: {"shape": list(v["shape"]), "dtype": v["dtype"]} for name, v in expected[side].items()}
        if found[side] != want:
            names = sorted(set(found[side]) | set(want))
            diff = [f"{n}: {found[side].get(n)} != {want.get(n)}" for n in names if found[side].get(n) != want.get(n)]
            raise UserError(f"{onnx_path}: the network's {side} differ from the manifest's: {'; '.join(diff)}; "
                            "re-export the graphs")


def batch_profile(trt, builder, network, onnx_path: Path, batch: int):
    """The one optimisation profile of a network with a dynamic batch axis: for every input min 1, opt `batch`,
    max `batch` frames (the other dims are static); None for a network of static shapes."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in inputs if any(int(d) < 0 for d in t.shape)]
    if not dynamic:
        return None
    for tensor in dynamic:
        if any(int(d) < 0 for d in list(tensor.shape)[1:]):
            raise UserError(f"{onnx_path}: input {tensor.name} {list(tensor.shape)} has a dynamic axis other than the "
                            "first (batch) one; re-export the graphs")
    if batch < 1:
        raise UserError(f"{onnx_path}: the graph has a batch axis; give the batch size (export --batch N)")
    profile = builder.create_optimization_profile()
    for tensor in inputs:
        dims = [int(d) for d in tensor.shape]
        shapes = [tuple([n if k == 0 and d < 0 else d for k, d in enumerate(dims)]) for n in (1, batch, batch)]
        profile.set_shape(tensor.name, *shapes)
    return profile


def build_engine(onnx_path: Path, engine_path: Path, *, flavour: str = "tensorrt",
                 compute_capabilities: Iterable[str] = (), expected_io: Mapping | None = None,
                 workspace_mib: int = 1024, timing_cache: Path | None = None, fp32_exact: bool = False,
                 batch: int = 1) -> Path:
    """Build and serialize one engine. fp32_exact turns TF32 off so an FP32 graph stays FP32.
    expected_io: the manifest's {"inputs", "outputs"} for this stage; the network must match it exactly.
    batch: the most frames a pass of a graph with a batch axis takes (its optimisation profile is 1 / N / N)."""
    trt, logger, builder, network, _parser = parse_onnx(onnx_path, flavour)
    if expected_io is not None:
        _check_io(onnx_path, network_io(trt, network), expected_io)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    profile = batch_profile(trt, builder, network, onnx_path, batch)
    if profile is not None:
        config.add_optimization_profile(profile)
    if fp32_exact and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    targets = resolve_compute_capabilities(flavour, compute_capabilities, "fp32" if fp32_exact else "fp16")
    if targets:  # TensorRT for RTX only: ahead-of-time targets, no GPU needed
        config.num_compute_capabilities = len(targets)
        for index, cc in enumerate(targets):
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), index)
    if flavour == "tensorrt-rtx":
        timing_cache = None  # TensorRT for RTX does not autotune: it has no usable timing cache
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False) and cache_bytes:  # from another GPU or TensorRT version
        notice(f"{timing_cache}: timing cache not usable here; starting a fresh one")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = _one_line(logger.errors[-1]) if logger.errors else "see the log above"
        hint = "try a larger --workspace-mib" if "memory" in detail.lower() or not logger.errors else (
            "please report this graph" + (f" (targets: {', '.join(targets)})" if targets else ""))
        raise UserError(f"{onnx_path}: {FLAVOUR_TITLES[flavour]} build failed ({detail}); {hint}")
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing_cache:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return engine_path


def build_stage_engines(folder: Path, stages: Mapping, precisions: Mapping[str, str], *, flavour: str,
                        compute_capabilities: Iterable[str] = (), workspace_mib: int = 1024,
                        onnx_path=None, batch: int = 1) -> dict[str, float]:
    """An engine per stage from its ONNX graph at the stage's precision (`stages`: stage -> StageFiles, whose
    `engine` is set), each checked against the stage's recorded I/O. Used by `export` and by `build` (engines
    from a copied ONNX export, on the target, without PyTorch). batch: the manifest's (export --batch N).
    Returns build seconds per stage."""
    folder = Path(folder)
    seconds = {}
    for stage, files in stages.items():
        precision = precisions[stage]
        src = onnx_path(stage, precision) if onnx_path else folder / files.onnx[precision]
        start = time.perf_counter()
        path = build_engine(src, folder / f"{stage}.{precision}.engine", flavour=flavour,
                            compute_capabilities=compute_capabilities,
                            expected_io={"inputs": files.inputs, "outputs": files.outputs},
                            workspace_mib=workspace_mib, timing_cache=folder / "timing.cache",
                            fp32_exact=precision == "fp32", batch=batch)
        seconds[f"{stage}.engine"] = time.perf_counter() - start
        files.engine = path.name
    return seconds


def engines_record(flavour: str, compute_capabilities: Iterable[str], precisions: Iterable[str]) -> dict:
    """manifest.tensorrt: the engines' flavour, version and (RTX) target compute capabilities."""
    from smoothdino.edge.machine.environment import tensorrt_version

    precision = "fp32" if "fp32" in set(precisions) else "fp16"  # an FP32 stage leaves Turing out (NO_FP32_GEMM)
    return {"flavour": flavour, "version": tensorrt_version(flavour),
            "compute_capabilities": resolve_compute_capabilities(flavour, compute_capabilities, precision)}
