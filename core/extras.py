"""Optional parts of the install and the one line that says how to get one.

A plain install (`pip install .` in the clone) is the torch-free run-time (numpy, OpenCV, ONNX Runtime): it runs
exported graphs and engines. Export, training, --random-weights and the reference paths need the `torch`
extra; a missing optional module becomes a UserError naming the extra, never a traceback."""

from __future__ import annotations

from collections.abc import Callable

from .errors import UserError

def install_extra(extra: str) -> str:
    """The pip line that adds `extra` to this very install. smoothdino-edge is not on PyPI, so the line names what
    this copy was installed from (pip's direct_url.json): the clone (editable or not), the git URL, or the wheel."""
    import json
    from importlib import metadata

    origin = {}
    for found in metadata.distributions(name="smoothdino-edge"):  # an egg-info in the clone may come first
        try:
            origin = json.loads(found.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        if origin:
            break
    url = origin.get("url", "")
    if "vcs_info" in origin:
        return f"pip install 'smoothdino-edge[{extra}] @ {origin['vcs_info'].get('vcs', 'git')}+{url}'"
    if url.startswith("file://"):
        path = url[len("file://"):]
        editable = "-e " if origin.get("dir_info", {}).get("editable") else ""
        return f"pip install {editable}'{path}[{extra}]'"
    return f"pip install '.[{extra}]' in the smoothdino-edge folder"


def torch_install() -> str:
    return ("pip install torch==2.13.0 (CPU-only machines: add --index-url https://download.pytorch.org/whl/cpu) then "
            + install_extra("torch"))


# top-level module -> (extra that provides it, what a user is told to run)
EXTRAS: dict[str, tuple[str, Callable[[], str]]] = {
    "torch": ("torch", torch_install),
    "onnx": ("torch", torch_install),
    "onnxconverter_common": ("torch", torch_install),
    "matplotlib": ("bench", lambda: install_extra("bench")),
    "rosbags": ("robotics", lambda: install_extra("robotics")),
    "foxglove": ("robotics", lambda: install_extra("robotics")),
    "tensorrt": ("tensorrt", lambda: "JetPack's TensorRT, or " + install_extra("tensorrt")),
    "pycuda": ("tensorrt", lambda: install_extra("tensorrt") + " (built against the local CUDA)"),
    "ray": ("cluster", lambda: install_extra("cluster") + " on the driver and every node"),
}


def missing_extra(err: ModuleNotFoundError, what: str) -> UserError | None:
    """The one-line error for an optional module that is not installed, or None for any other module
    (a missing core dependency is a broken install, and its traceback is the useful report)."""
    top = (err.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    extra, how = EXTRAS[top]
    return UserError(f"{what} needs the '{extra}' extra ({top} is not installed in {_environment()}): {how()}")


def _environment() -> str:
    import sys

    return sys.prefix
