"""Optional parts of the install and the one line that says how to get one.

A plain `pip install smoothdino-edge` is the torch-free run-time (numpy, OpenCV, ONNX Runtime): it runs
exported graphs and engines. Export, training, --random-weights and the reference paths need the `torch`
extra; a missing optional module becomes a UserError naming the extra, never a traceback."""

from __future__ import annotations

from .errors import UserError

# top-level module -> (extra that provides it, what a user is told to run)
TORCH_INSTALL = "pip install torch==2.13.0 (CPU; or your platform's build) then pip install 'smoothdino-edge[torch]'"
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", TORCH_INSTALL),
    "onnx": ("torch", TORCH_INSTALL),
    "onnxconverter_common": ("torch", TORCH_INSTALL),
    "matplotlib": ("bench", "pip install 'smoothdino-edge[bench]'"),
    "rosbags": ("robotics", "pip install 'smoothdino-edge[robotics]'"),
    "foxglove": ("robotics", "pip install 'smoothdino-edge[robotics]'"),
    "tensorrt": ("tensorrt", "JetPack's TensorRT, or pip install 'smoothdino-edge[tensorrt]'"),
    "pycuda": ("tensorrt", "pip install 'smoothdino-edge[tensorrt]' (built against the local CUDA)"),
    "ray": ("cluster", "pip install 'smoothdino-edge[cluster]' on the driver and every node"),
}


def missing_extra(err: ModuleNotFoundError, what: str) -> UserError | None:
    """The one-line error for an optional module that is not installed, or None for any other module
    (a missing core dependency is a broken install, and its traceback is the useful report)."""
    top = (err.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    extra, how = EXTRAS[top]
    return UserError(f"{what} needs the '{extra}' extra ({top} is not installed in {_environment()}): {how}")


def _environment() -> str:
    import sys

    return sys.prefix
