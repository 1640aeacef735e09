"""ROS 2 over Zenoh as rmw_zenoh speaks it (Jazzy and later; Tier 1 since Kilted), with the `eclipse-zenoh` wheel.

Read from rmw_zenoh's tagged sources (ros2/rmw_zenoh: docs/design.md, rmw_zenoh_cpp/src/detail/
attachment_helpers.cpp, liveliness_utils.cpp, rmw_publisher_data.cpp, qos.cpp). The releases whose wire format
this is: Jazzy 0.2.4 and later (2025-04-20), Rolling 0.6.0 and later (2025-04-18) and so every Kilted release.
Earlier releases (Jazzy 0.2.0-0.2.3, Rolling 0.3-0.5) wrote the attachment as key/value strings
("sequence_number", ...) and drop these samples: `apt upgrade` their ros-<distro>-rmw-zenoh-cpp. Humble's
rmw_zenoh (0.1.x) has no type hashes in its keys and is not spoken here (use DDS on Humble).

- data: a put on `<domain>/<topic without leading />/<pkg>::msg::dds_::<Name>_/<RIHS01 hash>`, the CDR bytes
  (with their 4-byte header) as payload and a 33-byte attachment: sequence number (int64 LE, from 1, one per
  publisher), source timestamp (int64 LE, ns since the UNIX epoch), 0x10 (the GID's length) and the 16-byte GID;
- discovery: liveliness tokens, the node's
  `@ros2_lv/<domain>/<session id>/<node id>/<node id>/NN/<enclave>/<namespace>/<node>` and one a publisher,
  `@ros2_lv/<domain>/<session id>/<node id>/<id>/MP/<enclave>/<namespace>/<node>/<topic>/<type>/<hash>/<qos>`,
  with `/` written `%` in names and the QoS as rmw_zenoh's compact text (differences from its default);
- the session: rmw_zenoh's default (peer, connects to the router at tcp/localhost:7447, listens on loopback,
  multicast scouting off) with BOUNDS on what a peer may hold, ZENOH_SESSION_CONFIG_URI and ZENOH_CONFIG_OVERRIDE
  read as rmw_zenoh reads them.
Zenoh reconnects to a router that went away on its own; a put never blocks (congestion control: drop).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time

from smoothdino.core.console import notice
from smoothdino.core.errors import UserError

from .topics import Graph, Qos, Topic, ros2_module

DEFAULT_ROUTER = "tcp/localhost:7447"  # rmw_zenoh's default: the router on this machine
ENCLAVE = "/"
NODE_ID = 0  # ids within our session: the node first, then its publishers
GID_SIZE = 16
# rmw_zenoh's default QoS (qos.cpp); its liveliness tokens write only what differs from it
DEFAULT_QOS = Qos(reliable=True, depth=42)
RELIABLE, BEST_EFFORT = 1, 2  # rmw's RMW_QOS_POLICY_RELIABILITY_* numbers
ROUTER_CHECK_S = 1.0  # how often the publisher thread looks whether the router is still there
_ENDPOINT = re.compile(r"(?P<protocol>[A-Za-z0-9_-]+)/(?P<address>[^?#]+)(\?[^#]*)?(#.*)?")
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+):(?P<port>\d+)")
IP_PROTOCOLS = ("tcp", "udp", "tls", "quic", "ws")
# What a peer may hold of this process (issue 37), Zenoh's own settings; ZENOH_CONFIG_OVERRIDE can change them, a
# ZENOH_SESSION_CONFIG_URI file replaces them as it replaces every default. Measured on loopback: a Zenoh session
# connected to ours costs this process 2-3 descriptors, so Zenoh's default of 1,000 sessions would pass the usual
# limit of 1,024; 256 leaves room for a robot's nodes (rmw_zenoh's peers connect to each other) and for our files.
# Ours publishes and subscribes to nothing: what it receives is control traffic, so a message is at most 16 MiB
# (Zenoh's default, 1 GiB, would let one peer make it reassemble a gigabyte).
MAX_SESSIONS = 256
MAX_RECEIVED_MESSAGE = 16 << 20
BOUNDS = {"transport/unicast/max_sessions": str(MAX_SESSIONS),
          "transport/link/rx/max_message_size": str(MAX_RECEIVED_MESSAGE)}


def check_endpoint(text: str) -> str:
    """A Zenoh locator `<protocol>/<address>` (tcp/192.168.1.10:7447, tcp/[::1]:7447); for IP protocols the
    address needs host:port. Refused in one line otherwise."""
    match = _ENDPOINT.fullmatch(text.strip())
    fix = "give <protocol>/<host>:<port>, e.g. tcp/localhost:7447 (the router `ros2 run rmw_zenoh_cpp rmw_zenohd` starts)"
    if match is None:
        raise UserError(f"--ros2-connect {text!r}: {fix}")
    if match["protocol"] in IP_PROTOCOLS:
        address = _HOST_PORT.fullmatch(match["address"])
        if address is None or not 0 < int(address["port"]) < 65536:
            raise UserError(f"--ros2-connect {text!r}: {fix}")
    return text.strip()


def mangle(name: str) -> str:
    """rmw_zenoh's mangle_name: every / becomes %."""
    return name.replace("/", "%")


def qos_text(qos: Qos) -> str:
    """rmw_zenoh's qos_to_keyexpr: reliability:durability:history,depth:deadline:lifespan:liveliness, each empty
    when it is the default (keep last, volatile, infinite durations, automatic liveliness)."""
    reliability = "" if qos.reliable == DEFAULT_QOS.reliable else str(RELIABLE if qos.reliable else BEST_EFFORT)
    depth = "" if qos.depth == DEFAULT_QOS.depth else str(qos.depth)
    return f"{reliability}::,{depth}:,:,:,,"


def data_key(graph: Graph, topic: Topic) -> str:
    """0/robot1/depth/image/sensor_msgs::msg::dds_::Image_/RIHS01_d31d..."""
    return f"{graph.domain}/{topic.name.strip('/')}/{topic.dds_type}/{graph.type_hash(topic.ros_type)}"


def node_token(graph: Graph, session_id: str) -> str:
    return (f"@ros2_lv/{graph.domain}/{session_id}/{NODE_ID}/{NODE_ID}/NN/{mangle(ENCLAVE)}/"
            f"{mangle(graph.namespace)}/{graph.node}")


def publisher_token(graph: Graph, session_id: str, entity_id: int, topic: Topic) -> str:
    return (f"@ros2_lv/{graph.domain}/{session_id}/{NODE_ID}/{entity_id}/MP/{mangle(ENCLAVE)}/"
            f"{mangle(graph.namespace)}/{graph.node}/{mangle(topic.name)}/{topic.dds_type}/"
            f"{graph.type_hash(topic.ros_type)}/{qos_text(topic.qos)}")


def attachment(sequence: int, timestamp_ns: int, gid: bytes) -> bytes:
    """rmw_zenoh's AttachmentData as zenoh-ext serializes it: int64, int64, then the GID as a sequence (LEB128
    length 16, then its bytes): 33 bytes."""
    return struct.pack("<qqB", sequence, timestamp_ns, len(gid)) + gid


def zenoh_reason(err) -> str:
    """Zenoh's error on one line, without the Rust source location it ends with."""
    return " ".join(str(err).split(" at /")[0].split())


def session_config(connect: str | None):
    """rmw_zenoh's session defaults, or ZENOH_SESSION_CONFIG_URI's file; then ZENOH_CONFIG_OVERRIDE
    (`key=value;key=value`); `connect` (when given) replaces the endpoints to connect to. What Zenoh refuses is
    one line naming where it came from."""
    zenoh = ros2_module("zenoh")
    path = os.environ.get("ZENOH_SESSION_CONFIG_URI")

    def refused(where: str, err) -> UserError:
        return UserError(f"{where}: Zenoh refuses it ({zenoh_reason(err)})")

    try:
        config = zenoh.Config.from_file(path) if path else zenoh.Config()
    except zenoh.ZError as err:
        raise refused(f"ZENOH_SESSION_CONFIG_URI={path}", err) from None
    if not path:
        for key, value in (("mode", '"peer"'), ("listen/endpoints", '["tcp/localhost:0"]'),
                           ("scouting/multicast/enabled", "false"), ("scouting/gossip/enabled", "true"),
                           *BOUNDS.items()):
            config.insert_json5(key, value)
        connect = connect or DEFAULT_ROUTER
    for item in filter(None, os.environ.get("ZENOH_CONFIG_OVERRIDE", "").split(";")):
        key, _, value = item.partition("=")
        try:
            config.insert_json5(key.strip(), value.strip())
        except zenoh.ZError as err:
            raise refused(f"ZENOH_CONFIG_OVERRIDE ({item.strip()})", err) from None
    if connect:
        try:
            config.insert_json5("connect/endpoints", json.dumps([connect]))
        except zenoh.ZError as err:
            raise refused(f"--ros2-connect {connect}", err) from None
    return config


class ZenohTransport:
    """One Zenoh session (the ROS 2 context): a publisher and a liveliness token per topic, the node's token."""

    name = "zenoh"

    def __init__(self, graph: Graph, connect: str | None = None):
        if not graph.has_type_hashes:
            raise UserError("--ros2 zenoh --ros2-distro humble: Humble's rmw_zenoh keys carry no type hash and are "
                            "not spoken here; use --ros2 dds on Humble")
        zenoh = self._zenoh = ros2_module("zenoh")
        self.graph = graph
        self.connect = connect or (None if os.environ.get("ZENOH_SESSION_CONFIG_URI") else DEFAULT_ROUTER)
        try:
            self.session = zenoh.open(session_config(connect))
        except zenoh.ZError as err:
            raise UserError(f"--ros2-connect {self.connect}: Zenoh cannot open a session with it "
                            f"({zenoh_reason(err)})") from None
        session_id = str(self.session.zid())
        liveliness = self.session.liveliness()
        self.tokens = [liveliness.declare_token(node_token(graph, session_id))]
        self.publishers, self.gids, self.sequence = {}, {}, {}
        for entity_id, topic in enumerate(graph.topics, start=NODE_ID + 1):
            token = publisher_token(graph, session_id, entity_id, topic)
            self.tokens.append(liveliness.declare_token(token))
            self.publishers[topic.key] = self.session.declare_publisher(
                data_key(graph, topic), congestion_control=zenoh.CongestionControl.DROP,
                reliability=zenoh.Reliability.RELIABLE if topic.qos.reliable else zenoh.Reliability.BEST_EFFORT)
            # rmw_zenoh hashes the token into the GID (XXH3-128); subscribers only hand it on as the publisher's id
            self.gids[topic.key] = hashlib.blake2b(token.encode(), digest_size=GID_SIZE).digest()
            self.sequence[topic.key] = 1
        self._router_seen = bool(list(self.session.info.routers_zid()))
        self._router_checked = time.monotonic()
        if not self._router_seen and self.connect:
            notice(f"--ros2 zenoh: no Zenoh router at {self.connect} yet; publishing reaches ROS 2 once one is up "
                   "(on the robot: ros2 run rmw_zenoh_cpp rmw_zenohd)")

    def publish(self, payloads: dict[str, bytes]) -> None:
        for key, cdr in payloads.items():
            self.publishers[key].put(cdr, attachment=attachment(self.sequence[key], time.time_ns(), self.gids[key]))
            self.sequence[key] += 1
        self._watch_router()

    def _watch_router(self) -> None:
        """Say when the router goes away and when Zenoh has reconnected to it (at most once a second)."""
        now = time.monotonic()
        if now - self._router_checked < ROUTER_CHECK_S:
            return
        self._router_checked = now
        seen = bool(list(self.session.info.routers_zid()))
        if seen != self._router_seen:
            notice(f"--ros2 zenoh: router at {self.connect} " + ("is back; publishing again" if seen else
                   "went away; the depth loop goes on and Zenoh reconnects when it returns"))
            self._router_seen = seen

    def status(self) -> str:
        return f"Zenoh session {self.session.zid()} -> {self.connect or 'ZENOH_SESSION_CONFIG_URI'}"

    def close(self) -> None:
        """Undeclare the tokens (the node leaves `ros2 node list` at once) and close the session."""
        session, self.session = getattr(self, "session", None), None
        if session is None:
            return
        for entity in [*self.tokens, *self.publishers.values()]:
            entity.undeclare()
        session.close()
