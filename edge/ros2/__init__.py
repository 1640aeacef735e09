"""Depth as live ROS 2 topics with no ROS install (`live --ros2`, `process --ros2`, the Python API's publisher): a
room of its own. publisher.py is the front (Ros2Publisher: a FrameSink and the API's `publish`, a latest-wins
mailbox and a publisher thread, so the depth loop never waits for ROS; Ros2Options: the command-line options and
their one-line refusals); topics.py the ROS 2 graph (names, types, QoS, domains, distributions); payloads.py one
frame's messages as CDR bytes (the sensor_msgs fields a bag holds too: edge/sinks/ros_messages.py); dds.py and
zenoh.py the two wire formats (rmw_cyclonedds' DDS, rmw_zenoh's Zenoh). Cyclone DDS, Zenoh and rosbags load only
when a transport opens.

Add a transport here: a class with `name`, `graph`, `publish(payloads)`, `status()` and `close()`, one word in
topics.TRANSPORTS and one branch in Ros2Publisher._open. This room reads sources' Frame and intrinsics, the sinks'
message fields and point clouds, and the camera pose of the frame method; never the engines."""

from .dds import DdsTransport
from .payloads import FrameSnapshot, MessageBuilder, camera_pose, ros_time_ns
from .publisher import Ros2Options, Ros2Publisher
from .topics import DEFAULT_NODE, DISTROS, TRANSPORTS, Graph, Qos, Topic
from .zenoh import ZenohTransport, check_endpoint

__all__ = ["DEFAULT_NODE", "DISTROS", "TRANSPORTS", "DdsTransport", "FrameSnapshot", "Graph", "MessageBuilder", "Qos",
           "Ros2Options", "Ros2Publisher", "Topic", "ZenohTransport", "camera_pose", "check_endpoint",
           "ros_time_ns"]
