"""ROS 2 over DDS (RTPS), the default of every ROS 2 since Humble (Fast DDS, or Cyclone DDS with
RMW_IMPLEMENTATION=rmw_cyclonedds_cpp: they interoperate on the wire), with the `cyclonedds` wheel and no ROS.

What makes a plain DDS writer a ROS 2 publisher (ros2/rmw_cyclonedds, ros2/rmw_dds_common):
- topic `rt/<namespace>/<name>`, type `<pkg>::msg::dds_::<Name>_`, CDR little-endian (XCDR1: the only data
  representation rmw_cyclonedds and rmw_fastrtps offer);
- Jazzy and later: the writer's USER_DATA holds `typehash=RIHS01_<hex>;` (rmw_dds_common's
  encode_type_hash_for_user_data_qos), so `ros2 topic info -v` shows the type hash;
- the node: a message on `ros_discovery_info` (rmw_dds_common/ParticipantEntitiesInfo; reliable, transient local,
  keep last 1) naming the node, its namespace and its writers' GIDs (the 16-byte DDS GUID; Humble's GID is 24
  bytes, zero-padded), and the participant's USER_DATA `enclave=/;`. That is what `ros2 node list` reads.
The DDS types are made from the distribution's message definitions (rosbags), so a reader that compares type
information (XTypes) sees the same structure as ROS's own. The payload is the CDR rosbags wrote, handed to
Cyclone as is. CYCLONEDDS_URI configures Cyclone as it does for ROS 2 (interfaces, peers, multicast).
What a peer can do to this process over DDS, and what is bounded: docs/robots.md ("What a peer on the network can
hold"); here, Cyclone prints no warning for the malformed packets anyone can send (quiet_network_warnings).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from smoothdino.core.errors import UserError

from .topics import Graph, Qos, Topic, dds_type_name, ros2_module

DISCOVERY_TOPIC = "ros_discovery_info"  # rmw_dds_common: not a ROS name, so no rt/ prefix
DISCOVERY_TYPE = "rmw_dds_common/msg/ParticipantEntitiesInfo"
ENCLAVE = "/"  # rcl's default security enclave


def _cyclonedds():
    ros2_module("cyclonedds")
    from cyclonedds import core, domain, pub, qos, topic, util
    from cyclonedds._clayer import ddspy_write
    from cyclonedds.idl import make_idl_struct, types

    return {"core": core, "domain": domain, "pub": pub, "qos": qos, "topic": topic, "util": util,
            "write": ddspy_write, "make_struct": make_idl_struct, "types": types}


@lru_cache(maxsize=None)
def idl_type(distro: str, ros_type: str):
    """The cyclonedds IDL class of a ROS message, field for field from the distribution's definition."""
    from .topics import typestore

    cdds = _cyclonedds()
    t = cdds["types"]
    base = {"bool": bool, "byte": t.byte, "char": t.uint8, "int8": t.int8, "uint8": t.uint8, "int16": t.int16,
            "uint16": t.uint16, "int32": t.int32, "uint32": t.uint32, "int64": t.int64, "uint64": t.uint64,
            "float32": t.float32, "float64": t.float64}

    def field_type(node):
        kind, detail = node
        if kind.name == "BASE":
            name, bound = detail
            if name == "string":
                return t.bounded_str[bound] if bound else str
            return base[name]
        if kind.name == "NAME":
            return idl_type(distro, detail)
        element, count = detail
        inner = field_type(element)
        if kind.name == "ARRAY":
            return t.array[inner, count]
        return t.sequence[inner, count] if count else t.sequence[inner]

    _, fields = typestore(distro).fielddefs[ros_type]
    class_name = dds_type_name(ros_type).split("::")[-1]
    return cdds["make_struct"](class_name, dds_type_name(ros_type), {n: field_type(f) for n, f in fields})


def writer_qos(topic_qos: Qos, user_data: bytes = b""):
    """ROS 2's QoS profile as DDS QoS: keep last N, volatile, best effort or reliable, XCDR1."""
    cdds = _cyclonedds()
    policy, duration = cdds["qos"].Policy, cdds["util"].duration
    reliability = policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)) if topic_qos.reliable \
        else policy.Reliability.BestEffort
    policies = [reliability, policy.History.KeepLast(topic_qos.depth), policy.Durability.Volatile,
                policy.DataRepresentation(use_cdrv0_representation=True)]
    if user_data:
        policies.append(policy.Userdata(user_data))
    return cdds["qos"].Qos(*policies)


def type_hash_user_data(graph: Graph, topic: Topic) -> bytes:
    """rmw_dds_common's USER_DATA for a writer: `typehash=RIHS01_<hex>;` (nothing on Humble)."""
    type_hash = graph.type_hash(topic.ros_type)
    return f"typehash={type_hash};".encode() if type_hash else b""


LOG_FATAL, LOG_ERROR = 1, 2  # Cyclone's DDS_LC_FATAL, DDS_LC_ERROR (its default mask adds DDS_LC_WARNING)


def quiet_network_warnings() -> None:
    """From here on Cyclone prints errors only, not warnings: it writes a 375-byte warning to stderr for every
    malformed packet that reaches its ports (anyone on the network can send them: 4,000 packets printed 1.5 MB, a
    journal's flood). Called once the participant is up, so what Cyclone says about its configuration still shows.
    The mask is Cyclone's, for the whole process."""
    from cyclonedds.internal import load_cyclonedds

    load_cyclonedds().dds_set_log_mask(LOG_FATAL | LOG_ERROR)


class DdsTransport:
    """One DDS participant (the ROS 2 context) with a writer per topic and the node announced on
    ros_discovery_info. `publish` writes each message's CDR bytes as they are."""

    name = "dds"

    def __init__(self, graph: Graph):
        cdds = self._cdds = _cyclonedds()
        self.graph = graph
        policy = cdds["qos"].Policy
        try:
            self.participant = cdds["domain"].DomainParticipant(
                graph.domain, qos=cdds["qos"].Qos(policy.Userdata(f"enclave={ENCLAVE};".encode())))
        except cdds["core"].DDSException:
            config = os.environ.get("CYCLONEDDS_URI")
            raise UserError(f"--ros2 dds: Cyclone DDS cannot start on domain {graph.domain}"
                            + (f"; check CYCLONEDDS_URI={config[:120]} (Cyclone's line above says what it refused)"
                               if config else "")) from None
        quiet_network_warnings()
        self.writers = {}
        for topic in graph.topics:
            dds_topic = cdds["topic"].Topic(self.participant, topic.dds_topic, idl_type(graph.distro, topic.ros_type))
            self.writers[topic.key] = cdds["pub"].DataWriter(
                self.participant, dds_topic, qos=writer_qos(topic.qos, type_hash_user_data(graph, topic)))
        self._discovery = self._announce_node()

    def _gid(self, entity) -> np.ndarray:
        """rmw_cyclonedds' GID of an entity: its 16-byte DDS GUID, zero-padded to the distribution's Gid (24 bytes
        on Humble)."""
        _, [(_, (_, (_, size)))] = self.graph.typestore.fielddefs["rmw_dds_common/msg/Gid"]  # data: char[size]
        return np.frombuffer(entity.guid.bytes.ljust(size, b"\0"), np.uint8)

    def _announce_node(self):
        """ros_discovery_info: this participant hosts node <namespace>/<node> with our writers (`ros2 node list`)."""
        cdds, store = self._cdds, self.graph.typestore
        t = store.types
        discovery = cdds["topic"].Topic(self.participant, DISCOVERY_TOPIC, idl_type(self.graph.distro, DISCOVERY_TYPE))
        writer = cdds["pub"].DataWriter(self.participant, discovery, qos=cdds["qos"].Qos(
            cdds["qos"].Policy.Reliability.Reliable(max_blocking_time=cdds["util"].duration(milliseconds=100)),
            cdds["qos"].Policy.History.KeepLast(1), cdds["qos"].Policy.Durability.TransientLocal,
            cdds["qos"].Policy.DataRepresentation(use_cdrv0_representation=True)))
        gid = t["rmw_dds_common/msg/Gid"]
        node = t["rmw_dds_common/msg/NodeEntitiesInfo"](
            node_namespace=self.graph.namespace, node_name=self.graph.node, reader_gid_seq=[],
            writer_gid_seq=[gid(data=self._gid(w)) for w in self.writers.values()])
        info = t[DISCOVERY_TYPE](gid=gid(data=self._gid(self.participant)), node_entities_info_seq=[node])
        self._write(writer, bytes(store.serialize_cdr(info, DISCOVERY_TYPE)))
        return writer

    def _write(self, writer, cdr: bytes) -> None:
        # Cyclone takes the serialized sample as is; like its own writer, padded to a multiple of 4 bytes
        padded = cdr + b"\0" * (-len(cdr) % 4)
        if self._cdds["write"](writer._ref, padded) < 0:
            raise RuntimeError(f"DDS write failed on {writer.topic.name}")

    def publish(self, payloads: dict[str, bytes]) -> None:
        for key, cdr in payloads.items():
            self._write(self.writers[key], cdr)

    def status(self) -> str:
        return f"DDS domain {self.graph.domain}"

    def close(self) -> None:
        """Delete the participant: its writers and the node leave the ROS graph at once (not at garbage collection)."""
        participant, self.participant = getattr(self, "participant", None), None
        if participant is None:
            return
        for entity in [*self.writers.values(), self._discovery]:
            entity.__del__()  # cyclonedds' own delete path: dds_delete, and forgotten so it is never deleted twice
        participant.__del__()
