"""What a ROS 2 graph sees of us, whatever the transport: one node, its topics (ROS names under the namespace, ROS
types, their DDS names and RIHS01 type hashes), the QoS of each, the ROS domain and the distribution we speak to.

ROS 2's own mappings, which both transports share:
- a relative topic name resolves under the node's namespace (`depth/image` in `/robot1` is `/robot1/depth/image`);
  `/tf` is absolute, as tf2 expects it; several cameras in one run are one node whose topics are each camera's
  under its name (`front/depth/image` in `/robot1` is `/robot1/front/depth/image`), with one `/tf`;
- a ROS type `pkg/msg/Name` is the DDS type `pkg::msg::dds_::Name_`, serialized as CDR little-endian (XCDR1);
- Jazzy and later identify a type by its RIHS01 hash (REP 2016); Humble has none. The hashes and the message
  definitions come from `rosbags`' typestore of the distribution (Humble's `rmw_dds_common/Gid` is 24 bytes,
  16 from Iron on: the one definition that differs between the distributions for what we send).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

from smoothdino.core.errors import UserError
from smoothdino.core.extras import install_extra
from smoothdino.edge.sources.bag import CAMERA_INFO, IMAGE, POINTCLOUD2

from smoothdino.edge.sinks.ros_messages import TF_MESSAGE

TRANSPORTS = ("dds", "zenoh")
DISTROS = ("humble", "jazzy", "kilted", "rolling")
DEFAULT_DISTRO = "jazzy"  # the LTS release that rmw_zenoh and type hashes both exist for
DEFAULT_NODE = "smoothdino"
MAX_DOMAIN = 232  # ROS 2's domain IDs: 0-232 (above it the DDS port numbers overflow 16 bits)
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # one ROS name token (rcl's rule: no leading digit)


@dataclass(frozen=True)
class Qos:
    """History is always keep-last and durability volatile: late joiners get the next frame, not old ones."""

    reliable: bool
    depth: int


SENSOR_DATA = Qos(reliable=False, depth=5)  # rclcpp::SensorDataQoS: what `ros2 topic hz`, RViz and image_transport take
TF_QOS = Qos(reliable=True, depth=100)  # tf2_ros::DynamicBroadcasterQoS: tf2 listeners subscribe reliably


@dataclass(frozen=True)
class Topic:
    key: str  # what the frame's message is: depth, info, points, color, tf
    name: str  # fully qualified ROS name, e.g. /robot1/depth/image
    ros_type: str  # e.g. sensor_msgs/msg/Image
    qos: Qos

    @property
    def dds_type(self) -> str:
        return dds_type_name(self.ros_type)

    @property
    def dds_topic(self) -> str:
        """ROS topics are DDS topics with an `rt` prefix: /robot1/depth/image -> rt/robot1/depth/image."""
        return "rt" + self.name


def dds_type_name(ros_type: str) -> str:
    """sensor_msgs/msg/Image -> sensor_msgs::msg::dds_::Image_ (rosidl's DDS type names)."""
    package, kind, name = ros_type.split("/")
    return f"{package}::{kind}::dds_::{name}_"


def check_namespace(text: str) -> str:
    """'robot1/front' or '/robot1/front/' -> '/robot1/front'; '' -> '/'. Refused in one line unless every token
    is a ROS name token (letters, digits, underscores, not starting with a digit)."""
    tokens = [t for t in text.strip().strip("/").split("/")] if text.strip().strip("/") else []
    if any(not _TOKEN.fullmatch(t) for t in tokens):
        raise UserError(f"--ros2-namespace {text!r}: give ROS name tokens separated by /, each of letters, digits "
                        "and underscores not starting with a digit, e.g. /robot1/front")
    return "/" + "/".join(tokens)


def check_camera(name: str) -> str:
    """A camera's name is a namespace token of its topics (edge.cameras makes them so)."""
    if not _TOKEN.fullmatch(name):
        raise UserError(f"camera name {name!r}: letters, digits and underscores, not starting with a digit")
    return name


def camera_key(camera: str | None, key: str) -> str:
    """A topic's key in a graph: `depth` with one camera, `front/depth` for camera front of several (/tf: `tf`)."""
    return key if camera is None or key == "tf" else f"{camera}/{key}"


def check_node(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise UserError(f"ROS 2 node name {name!r}: letters, digits and underscores, not starting with a digit")
    return name


def resolve_domain(domain: int | None) -> int:
    """The ROS domain: as given, else ROS_DOMAIN_ID, else 0 (what every ROS 2 node does)."""
    where = "--ros2-domain"
    if domain is None:
        text = os.environ.get("ROS_DOMAIN_ID", "").strip()
        if not text:
            return 0
        where = "ROS_DOMAIN_ID"
        try:
            domain = int(text)
        except ValueError:
            raise UserError(f"ROS_DOMAIN_ID={text!r}: give a number from 0 to {MAX_DOMAIN} (or unset it for 0)") \
                from None
    if not 0 <= int(domain) <= MAX_DOMAIN:
        raise UserError(f"{where} {domain}: ROS 2 domains are 0 to {MAX_DOMAIN} (0 to 101 are safe on every "
                        "Linux, whatever its ephemeral port range)")
    return int(domain)


def resolve_distro(distro: str | None) -> str:
    """The robot's ROS 2: as given, else ROS_DISTRO when it names one we speak to, else Jazzy."""
    if distro is None:
        env = os.environ.get("ROS_DISTRO", "").strip().lower()
        return env if env in DISTROS else DEFAULT_DISTRO
    word = distro.strip().lower()
    if word not in DISTROS:
        raise UserError(f"--ros2-distro {distro}: give {', '.join(DISTROS)} (the ROS 2 the robot runs)")
    return word


def ros2_module(name: str):
    """Import one of the ros2 extra's libraries (rosbags, cyclonedds, zenoh); one line naming the extra if absent."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        top = (err.name or name).split(".")[0]
        raise UserError(f"ROS 2 topics need the 'ros2' extra ({top} is not installed in {sys.prefix}): "
                        f"{install_extra('ros2')}") \
            from None


@lru_cache(maxsize=None)
def typestore(distro: str):
    """rosbags' message definitions for a distribution (Rolling: its latest)."""
    typesys = ros2_module("rosbags.typesys")
    store = {"humble": typesys.Stores.ROS2_HUMBLE, "jazzy": typesys.Stores.ROS2_JAZZY,
             "kilted": typesys.Stores.ROS2_KILTED, "rolling": typesys.Stores.LATEST}[distro]
    return typesys.get_typestore(store)


@dataclass(frozen=True)
class Graph:
    """Our node and its topics, as one distribution on one domain sees them."""

    node: str
    namespace: str  # fully qualified: "/" or "/robot1/front"
    domain: int
    distro: str
    topics: tuple[Topic, ...]
    cameras: tuple[str, ...] = ()  # several cameras: each one's topics under <namespace>/<camera>/

    @classmethod
    def of(cls, namespace: str = "", *, node: str = DEFAULT_NODE, domain: int | None = None,
           distro: str | None = None, color: bool = False, tf: bool = True, cameras: tuple[str, ...] = ()) -> Graph:
        """The node in `namespace` with depth/image, depth/camera_info, depth/points, color/image with `color`,
        and /tf with `tf` (published for frames whose camera motion is known: keyframes and pose carries).
        `cameras` (several in one run): those topics once per camera under `<namespace>/<camera>/`, keyed
        `<camera>/<key>` (camera_key), and one /tf for all."""
        ns = check_namespace(namespace)
        prefix = "" if ns == "/" else ns
        topics = []
        for camera in cameras or (None,):
            where = prefix if camera is None else f"{prefix}/{check_camera(camera)}"
            topics += [Topic(camera_key(camera, "depth"), f"{where}/depth/image", IMAGE, SENSOR_DATA),
                       Topic(camera_key(camera, "info"), f"{where}/depth/camera_info", CAMERA_INFO, SENSOR_DATA),
                       Topic(camera_key(camera, "points"), f"{where}/depth/points", POINTCLOUD2, SENSOR_DATA)]
            if color:
                topics.append(Topic(camera_key(camera, "color"), f"{where}/color/image", IMAGE, SENSOR_DATA))
        if tf:
            topics.append(Topic("tf", "/tf", TF_MESSAGE, TF_QOS))
        return cls(check_node(node), ns, resolve_domain(domain), resolve_distro(distro), tuple(topics),
                   tuple(cameras))

    @property
    def typestore(self):
        return typestore(self.distro)

    @property
    def has_type_hashes(self) -> bool:
        """Jazzy and later announce RIHS01 type hashes; Humble predates them."""
        return self.distro != "humble"

    def type_hash(self, ros_type: str) -> str | None:
        """RIHS01_<sha256 hex> of the type's description (REP 2016), None on Humble."""
        return self.typestore.hash_rihs01(ros_type) if self.has_type_hashes else None

    def topic(self, key: str) -> Topic | None:
        return next((t for t in self.topics if t.key == key), None)
