"""Where frames come from. Every source yields `Frame`s (frame.py) and keeps `stats`: recorded sequences (folders,
videos: recorded.py), cameras and GStreamer pipelines (camera.py), ROS 2 bags (bag.py), the synthetic scene with known
depth and shift (synthetic.py), and `open_source` for a command-line string (factory.py). intrinsics.py holds the
camera model a source comes with.

Add a camera type or input format here: a class with `name`, `live`, `stats`, `__iter__` -> Frame and `close()`, and
one branch in factory.open_source. Sources import nothing from the frame method, the engines or the sinks."""

from .camera import CameraSource, gstreamer_csi
from .factory import open_source
from .frame import (
           IMAGE_SUFFIXES,
           VIDEO_SUFFIXES,
           Frame,
           SourceStats,
           decode_image,
           read_depth_png,
           read_image,
)
from .intrinsics import NYU_KINECT, Intrinsics, IntrinsicsChoice, parse_intrinsics
from .recorded import FolderSource, VideoSource
from .synthetic import SyntheticScene, SyntheticSource, write_sequence

__all__ = ["IMAGE_SUFFIXES", "NYU_KINECT", "VIDEO_SUFFIXES", "CameraSource", "FolderSource", "Frame", "Intrinsics",
           "IntrinsicsChoice", "SourceStats", "SyntheticScene", "SyntheticSource", "VideoSource", "decode_image",
           "gstreamer_csi", "open_source", "parse_intrinsics", "read_depth_png", "read_image", "write_sequence"]
# ROS bags: `from smoothdino.edge.sources.bag import BagSource` (needs the robotics extra, loaded on use)
