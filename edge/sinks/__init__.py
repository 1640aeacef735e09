"""Where depth goes. Each sink takes every frame's depth: 16-bit PNGs (png.py), metrics.json/csv (metrics_files.py),
the side-by-side MP4 (video.py), the live window (window.py) and the RGB | depth picture they share (view.py); for
robots, ROS 2 bags (bag.py) and the sensor_msgs fields they share with the live ROS 2 topics (ros_messages.py; the
topics themselves are a room of their own, edge/ros2/), point clouds and PLY files (pointcloud.py) and the Foxglove
live view (foxglove.py). Every file is written atomically, so an interrupted run never leaves half of one.

Add an output format here: a class with `write(frame, depth, result, canvas)` and `close()` (loop.FrameSink), handed to
the loop in StreamOutputs.sinks. Sinks read sources' Frame and intrinsics, never the engines or the frame method."""

from .metrics_files import MetricsSink, json_dumps
from .png import DepthPngSink, atomic_imwrite, to_millimetres
from .pointcloud import PlySink, PointCloud, depth_to_points, ply_bytes
from .video import VideoSink, video_frame_count
from .view import DISPLAY_RANGE, colorize, side_by_side
from .window import WindowSink

__all__ = ["DISPLAY_RANGE", "DepthPngSink", "MetricsSink", "PlySink", "PointCloud", "VideoSink", "WindowSink",
           "atomic_imwrite", "colorize", "depth_to_points", "json_dumps", "ply_bytes", "side_by_side",
           "to_millimetres", "video_frame_count"]
# ROS bags, Foxglove: `from smoothdino.edge.sinks.bag import BagSink`, `...sinks.foxglove import FoxgloveSink` (their
# libraries load only when one is used); live ROS 2 topics: `from smoothdino.edge.ros2 import Ros2Publisher`
