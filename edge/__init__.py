"""The run-time: live metric depth from frames, with no PyTorch (numpy, OpenCV, ONNX Runtime, TensorRT + pycuda).

The frame method lives at the top of this folder; each room below it has one concern (ARCHITECTURE.md):

    pipeline.py     FramePipeline / DepthPipeline: encoder -> adapter -> decoder, phase correlation beside it
    motion.py       phase_shift, the scene-cut rule
    keyframes.py    the network on keyframes, their depth carried to the frames between
    asynchronous.py live --async: the network in its own thread, every frame out at once
    api.py          the Python API (`smoothdino.open`): one object per camera stream, any-size frames in
    loop.py         run_stream: frames from a source, through the pipeline, into the sinks (resumable)
    metrics.py      depth metrics against ground truth
    engines/        ONNX Runtime and TensorRT engines, the factory, the graphs' I/O and manifest.json
    sources/        where frames come from: folders, videos, cameras, ROS bags, the synthetic scene
    sinks/          where depth goes: PNGs, metrics, video, window, ROS bags, point clouds, Foxglove
    inspection/     what `smoothdino inspect` computes
    machine/        what this machine is and can run; `smoothdino doctor`
    commands/       what the `process`, `live` and `inspect` commands do, from one options object each

Importing this package is cheap: the names below load their module on first use.
"""

from __future__ import annotations

import importlib

# name -> module (relative to this package) that defines it: what a user of the run-time imports
_PUBLIC = {
    "DepthPipeline": "pipeline", "FramePipeline": "pipeline", "FrameResult": "pipeline",
    "KeyframePolicy": "keyframes", "KeyframeSteps": "keyframes", "parse_keyframes": "keyframes",
    "translate_depth": "carry", "warp_depth": "carry", "CameraPose": "carry", "decide_keyframes": "keyframes",
    "AsyncPipeline": "asynchronous",
    "run_stream": "loop", "StreamOutputs": "loop", "StreamReport": "loop", "ResumableSteps": "loop",
    "Shift": "motion", "phase_shift": "motion", "scene_cut": "motion",
    "depth_metrics": "metrics", "temporal_error": "metrics",
    "Manifest": "engines", "open_engine": "engines",
    "Frame": "sources", "open_source": "sources", "SyntheticScene": "sources",
    "Intrinsics": "sources", "depth_to_points": "sinks",
    "open_depth": "api", "DepthSession": "api", "AsyncDepthSession": "api", "DepthFrame": "api",
    "as_intrinsics": "api", "open_cameras": "api", "CameraSessions": "api",
    "SharedNetwork": "shared_network", "NetworkLane": "shared_network",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
