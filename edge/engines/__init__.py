"""The engines and the manifest that wires them: one interface for every back-end (engine.py), the ONNX Runtime and
TensorRT engines, the factory that picks one for a back-end word, the three graphs' I/O contract and manifest.json.

Add a back-end here: a class with `inputs`, `outputs`, `run(feeds)` and `close()` (engine.Engine), and one branch
in factory.open_engine. Nothing in this room imports the frame method, the sources or the sinks."""

from .engine import TENSORRT_BACKENDS, Engine, TensorSpec, to_host
from .factory import open_engine, resolve_backend
from .graph_io import IO, NUM_LEVELS, STAGES, level_names
from .manifest import Manifest, StageFiles

__all__ = ["IO", "NUM_LEVELS", "STAGES", "TENSORRT_BACKENDS", "Engine", "Manifest", "StageFiles", "TensorSpec",
           "level_names", "open_engine", "resolve_backend", "to_host"]
