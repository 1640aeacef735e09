"""A ROS 2 node: live metric depth from a camera topic, written against smoothdino's Python API.

    in   <image>                        sensor_msgs/Image (rgb8, bgr8 or mono8)
         <camera_info>                  sensor_msgs/CameraInfo: the intrinsics for the point cloud (optional)
    out  <namespace>/depth              sensor_msgs/Image 32FC1, metres, NaN = no depth (REP 118)
         <namespace>/depth/camera_info  sensor_msgs/CameraInfo at the depth image's size
         <namespace>/depth/points       sensor_msgs/PointCloud2 (x, y, z float32 + packed rgb; camera optical frame)

    python3 examples/ros2/depth_node.py --ros-args -p export:=engines/vits14-temporal \
        -p image:=/camera/color/image_raw

Parameters: `export` (the export folder), `image`, `camera_info` ('' = <image's namespace>/camera_info),
`namespace` ('' = the image's namespace, so /camera/color/image_raw gives /camera/color/depth), `backend`,
`keyframes`, `asynchronous` (true: the callback never waits for the network, as `smoothdino live`), `cloud_stride`
(every N-th pixel each way in the point cloud) and `intrinsics` ([fx, fy, cx, cy] in pixels of the image; all zero:
use CameraInfo, else NYUv2's Kinect scaled to the image, said once in the log).

The message fields come from smoothdino.edge.sinks.ros_messages, the module the bag writer (`process` on a bag)
builds its messages with; the image decoding from smoothdino.edge.sources.bag, the bag reader's. Not run against
ROS 2 here (see examples/README.md for what was checked instead).
"""

from __future__ import annotations

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

import smoothdino
from smoothdino.edge.sinks.ros_messages import (
    camera_info_fields,
    depth_image_fields,
    for_rclpy,
    point_fields,
    pointcloud2_fields,
)
from smoothdino.edge.sources.bag import IMAGE, camera_namespace, decode_image_message, intrinsics_from_camera_info
from smoothdino.edge.sources.intrinsics import NYU_KINECT, Intrinsics


class DepthNode(Node):
    def __init__(self) -> None:
        super().__init__("smoothdino_depth")
        export = self.declare_parameter("export", "engines/vits14-temporal").value
        image = self.declare_parameter("image", "/camera/color/image_raw").value
        info = self.declare_parameter("camera_info", "").value or f"{camera_namespace(image)}/camera_info"
        namespace = (self.declare_parameter("namespace", "").value or camera_namespace(image)).rstrip("/")
        backend = self.declare_parameter("backend", "auto").value
        keyframes = self.declare_parameter("keyframes", "every").value
        asynchronous = self.declare_parameter("asynchronous", True).value
        self.cloud_stride = self.declare_parameter("cloud_stride", 4).value
        fx, fy, cx, cy = self.declare_parameter("intrinsics", [0.0, 0.0, 0.0, 0.0]).value
        self.given = (fx, fy, cx, cy) if fx > 0 and fy > 0 else None  # pixels of the input image
        self.camera: Intrinsics | None = None  # from CameraInfo

        # decode_image_message gives RGB whatever the encoding, so the frames are declared "rgb"
        self.model = smoothdino.open(export, colour="rgb", backend=backend, keyframes=keyframes,
                                     asynchronous=asynchronous)
        if self.model.random_weights:
            self.get_logger().warning("the export has RANDOM WEIGHTS: depth values are not metric")
        self.depth_out = self.create_publisher(Image, f"{namespace}/depth", 10)
        self.info_out = self.create_publisher(CameraInfo, f"{namespace}/depth/camera_info", 10)
        self.points_out = self.create_publisher(PointCloud2, f"{namespace}/depth/points", 10)
        self.create_subscription(CameraInfo, info, self.on_camera_info, 10)
        self.create_subscription(Image, image, self.on_image, 1)  # depth 1: a slow callback drops old frames
        self.get_logger().info(f"{self.model.description}: {image} -> {namespace}/depth")

    def on_camera_info(self, msg: CameraInfo) -> None:
        self.camera = intrinsics_from_camera_info(msg) or self.camera

    def intrinsics(self, height: int, width: int, frame_height: int, frame_width: int) -> Intrinsics:
        """The camera at the depth image's size: the parameter, else CameraInfo, else NYUv2's Kinect."""
        if self.given is not None:
            return Intrinsics(*self.given, width=frame_width, height=frame_height).scaled(height, width)
        if self.camera is not None:
            return self.camera.scaled(height, width)
        self.get_logger().warning("no CameraInfo and no intrinsics parameter: point clouds use NYUv2's Kinect "
                                  "intrinsics scaled to the image", once=True)
        return NYU_KINECT.scaled(height, width)

    def on_image(self, msg: Image) -> None:
        rgb = decode_image_message(msg, IMAGE)
        if rgb is None:
            self.get_logger().warning(f"image encoding {msg.encoding!r} skipped (rgb8, bgr8, mono8)", once=True)
            return
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        out = self.model.step(rgb, timestamp=stamp)
        if out is None:  # asynchronous: the first keyframe is not ready yet
            return
        height, width = out.depth.shape
        camera = self.intrinsics(height, width, *rgb.shape[:2])
        self.depth_out.publish(Image(header=msg.header, **for_rclpy(depth_image_fields(out.depth))))
        self.info_out.publish(CameraInfo(header=msg.header, **for_rclpy(camera_info_fields(camera, height, width))))
        cloud = self.model.to_points(out.depth, camera, stride=self.cloud_stride, frame=rgb)
        self.points_out.publish(PointCloud2(header=msg.header, fields=[PointField(**f) for f in point_fields()],
                                            **for_rclpy(pointcloud2_fields(cloud))))

    def destroy_node(self) -> None:
        self.model.close()  # the engines (and the network thread) go with the node
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = DepthNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
