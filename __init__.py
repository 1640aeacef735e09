"""SmoothDINO Edge: live metric depth from a moving camera (DINOv2 + temporal adapter, TensorRT / ONNX Runtime).

The repository root is the `smoothdino` package: `models/`, `export/`, `calibration/`, `edge/`, `benchmarks/`
and `cli.py` install as `smoothdino.models`, ..., `smoothdino.cli`, so they never collide with a user's own.

From Python (README, "Use it from Python"; no PyTorch):

    import smoothdino

    with smoothdino.open("engines/vits14-temporal", colour="bgr") as model:
        depth = model.step(frame).depth   # float32 metres at the frame's size

`import smoothdino` stays cheap: `open` and the names below load smoothdino.edge.api on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# name here -> name in smoothdino.edge.api (loaded on first use: importing the package loads no OpenCV or engines)
_API = {"open": "open_depth", "DepthSession": "DepthSession", "AsyncDepthSession": "AsyncDepthSession",
        "DepthFrame": "DepthFrame", "open_cameras": "open_cameras", "CameraSessions": "CameraSessions"}


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module("smoothdino.edge.api"), _API[name])
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
