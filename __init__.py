"""SmoothDINO Edge: live metric depth from a moving camera (DINOv2 + temporal adapter, TensorRT / ONNX Runtime).

The repository root is the `smoothdino` package: `models/`, `export/`, `calibration/`, `edge/`, `benchmarks/`
and `cli.py` install as `smoothdino.models`, ..., `smoothdino.cli`, so they never collide with a user's own.
"""

__version__ = "0.2.0"
