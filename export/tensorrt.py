"""ONNX -> serialized TensorRT engine, for TensorRT 10 (JetPack 6) and TensorRT 11 alike.

- Strongly typed network: every tensor's precision comes from the ONNX graph (TensorRT 11 has no FP16/INT8
  builder flags; TensorRT 10 honours the graph's types the same way with this flag).
- A workspace cap (`set_memory_pool_limit`) so builds fit small Jetsons.
- A timing cache shared by the builds (and kept on disk), so rebuilding is fast.
- Parser errors name the ONNX node that failed.
Importable without TensorRT: `require_tensorrt()` says in one line what is missing.
"""

from __future__ import annotations

from pathlib import Path

from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_bytes


def require_tensorrt():
    try:
        import tensorrt as trt
    except Exception as err:
        raise UserError(
            f"TensorRT is not importable ({type(err).__name__}): install it from NVIDIA (JetPack ships it) "
            "or export with --backend onnx"
        ) from None
    return trt


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = e.node_name() if hasattr(e, "node_name") else e.node()
        op = e.node_operator() if hasattr(e, "node_operator") else "?"
        lines.append(f"node {node} ({op}): {e.desc()}")
    return "; ".join(lines) or "unknown parser error"


def build_engine(onnx_path: Path, engine_path: Path, *, workspace_mib: int = 1024,
                 timing_cache: Path | None = None, fp32_exact: bool = False) -> Path:
    """Build and serialize one engine. fp32_exact turns TF32 off so an FP32 graph stays FP32."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise UserError(f"{onnx_path}: TensorRT cannot parse it: {_parser_errors(parser)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if fp32_exact and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False) and cache_bytes:  # from another GPU or TensorRT version
        notice(f"{timing_cache}: timing cache not usable here; starting a fresh one")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"{onnx_path}: TensorRT build failed (see the log above); try a larger --workspace-mib")
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, bytes(serialized))
    if timing_cache:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return engine_path
