"""What this machine is and can run: package versions, GPU and usable back-ends (environment), the Jetson module,
JetPack, power mode and clocks (jetson), whether a window can open (display), and `smoothdino doctor`, which
checks all of it with one line per problem (doctor). Imports nothing heavy up front; everything else may read it."""

from .display import window_unavailable_reason
from .environment import (
           device_description,
           gpu,
           onnxruntime_providers,
           tensorrt_usable,
           tensorrt_version,
           versions,
)
from .jetson import jetson_info

__all__ = ["device_description", "gpu", "jetson_info", "onnxruntime_providers", "tensorrt_usable",
           "tensorrt_version", "versions", "window_unavailable_reason"]
