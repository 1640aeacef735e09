"""The run-time: engines (TensorRT via pycuda, ONNX Runtime), the three-stage pipeline, phase correlation,
sources, sinks and the loop. It never imports torch: a Jetson runs it with numpy, OpenCV and TensorRT."""

from smoothdino.core.backends import BACKENDS

from .engine import Engine, TensorSpec, open_engine, resolve_backend, to_host
from smoothdino.core.errors import UserError
from .graph_io import IO, level_names
from .loop import StreamOutputs, StreamReport, run_stream
from .manifest import Manifest, StageFiles
from .metrics import depth_metrics, temporal_error
from .motion import NO_SHIFT, Shift, phase_shift, scene_cut, to_grey
from .pipeline import DepthPipeline, FramePipeline, FrameResult
from .sinks import DepthPngSink, MetricsSink, VideoSink, WindowSink
from .sources import CameraSource, FolderSource, Frame, SyntheticSource, VideoSource, open_source
from .synthetic import SyntheticScene, write_sequence
from .grid import FeatureGrid
from .pca import FeaturePCA
from .stability import StabilityTracker, aligned_depth_change_mm, aligned_feature_similarity
from .lineplot import Panel, Series, line_plot
from .inspect import inspect_sequence, stability_table
# robots (rosbags / foxglove-sdk are imported only when a bag or a live view is opened)
from .intrinsics import NYU_KINECT, Intrinsics, IntrinsicsChoice, parse_intrinsics
from .pointcloud import PlySink, PointCloud, depth_to_points, ply_bytes
from .bags import BagSink, BagSource, is_bag
from .foxglove_live import FoxgloveSink
# the machine: can a window open here, and which Jetson is this
from .display import window_unavailable_reason
from .jetson import jetson_info

__all__ = [
    "BACKENDS", "Engine", "TensorSpec", "open_engine", "resolve_backend", "to_host", "UserError", "IO",
    "level_names", "StreamOutputs", "StreamReport", "run_stream", "Manifest", "StageFiles", "depth_metrics",
    "temporal_error", "NO_SHIFT", "Shift", "phase_shift", "scene_cut", "to_grey", "DepthPipeline", "FramePipeline", "FrameResult",
    "DepthPngSink", "MetricsSink", "VideoSink", "WindowSink", "CameraSource", "FolderSource", "Frame",
    "SyntheticSource", "VideoSource", "open_source", "SyntheticScene", "write_sequence",
    "FeatureGrid", "FeaturePCA", "StabilityTracker", "aligned_depth_change_mm", "aligned_feature_similarity",
    "Panel", "Series", "line_plot", "inspect_sequence", "stability_table",
    "NYU_KINECT", "Intrinsics", "IntrinsicsChoice", "parse_intrinsics", "PlySink", "PointCloud", "depth_to_points",
    "ply_bytes", "BagSink", "BagSource", "is_bag", "FoxgloveSink",
    "window_unavailable_reason", "jetson_info",
]
