"""`--ros2`: depth as ROS 2 topics over DDS and Zenoh. No ROS here, so the subscriber side is built in this file,
independently of the publisher code: for DDS, Cyclone DDS readers whose IDL types are written below from the ROS
message definitions, plus Cyclone's own discovery data (DCPSPublication); for Zenoh, a session that decodes
rmw_zenoh's documented attachment layout (docs/design.md) and the payload with rosbags, and reads the liveliness
tokens as they are declared. Loopback only: a Cyclone configuration naming `lo` with peer 127.0.0.1 and no multicast, a Zenoh router
(a child process) on 127.0.0.1 with scouting off. Subscribers and routers are child processes, killed for real.

The subscribers run this file: `python -m tests.test_ros2 dds|zenoh ...` (see main() at the end); the router and
the loopback set-up are smoothdino.benchmarks.ros2_loopback's, shared with the ROS 2 benchmark.
No `from __future__ import annotations` here: cyclonedds reads the IDL classes' annotations as objects."""

import json
import os
import random
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("zenoh")
pytest.importorskip("rosbags")

from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl import types as t  # noqa: E402
from smoothdino.benchmarks import ros2_loopback  # noqa: E402
from smoothdino.benchmarks.ros2_loopback import Child, free_port, zenoh_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "/robot1"


# -- the ROS messages as DDS IDL, written from their .msg definitions (ROS 2 Jazzy) -----------------------------

@dataclass
class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: t.int32
    nanosec: t.uint32


@dataclass
class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time_
    frame_id: str


@dataclass
class Image_(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header_
    height: t.uint32
    width: t.uint32
    encoding: str
    is_bigendian: t.uint8
    step: t.uint32
    data: t.sequence[t.uint8]


@dataclass
class RegionOfInterest_(IdlStruct, typename="sensor_msgs::msg::dds_::RegionOfInterest_"):
    x_offset: t.uint32
    y_offset: t.uint32
    height: t.uint32
    width: t.uint32
    do_rectify: bool


@dataclass
class CameraInfo_(IdlStruct, typename="sensor_msgs::msg::dds_::CameraInfo_"):
    header: Header_
    height: t.uint32
    width: t.uint32
    distortion_model: str
    d: t.sequence[t.float64]
    k: t.array[t.float64, 9]
    r: t.array[t.float64, 9]
    p: t.array[t.float64, 12]
    binning_x: t.uint32
    binning_y: t.uint32
    roi: RegionOfInterest_


@dataclass
class PointField_(IdlStruct, typename="sensor_msgs::msg::dds_::PointField_"):
    name: str
    offset: t.uint32
    datatype: t.uint8
    count: t.uint32


@dataclass
class PointCloud2_(IdlStruct, typename="sensor_msgs::msg::dds_::PointCloud2_"):
    header: Header_
    height: t.uint32
    width: t.uint32
    fields: t.sequence[PointField_]
    is_bigendian: bool
    point_step: t.uint32
    row_step: t.uint32
    data: t.sequence[t.uint8]
    is_dense: bool


def _discovery_type(gid_bytes: int):
    """rmw_dds_common's ParticipantEntitiesInfo with GIDs of char[gid_bytes]."""

    @dataclass
    class Gid_(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
        data: t.array[t.uint8, gid_bytes]

    @dataclass
    class NodeEntitiesInfo_(IdlStruct, typename="rmw_dds_common::msg::dds_::NodeEntitiesInfo_"):
        node_namespace: t.bounded_str[256]
        node_name: t.bounded_str[256]
        reader_gid_seq: t.sequence[Gid_]
        writer_gid_seq: t.sequence[Gid_]

    @dataclass
    class ParticipantEntitiesInfo_(IdlStruct, typename="rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"):
        gid: Gid_
        node_entities_info_seq: t.sequence[NodeEntitiesInfo_]

    return ParticipantEntitiesInfo_


ParticipantEntitiesInfo_ = _discovery_type(16)  # char[16] since Iron
HumbleParticipantEntitiesInfo_ = _discovery_type(24)  # char[24] on Humble


DDS_TOPICS = {"depth": ("depth/image", Image_), "info": ("depth/camera_info", CameraInfo_),
              "points": ("depth/points", PointCloud2_)}
ROS_TYPES = {"depth": "sensor_msgs/msg/Image", "info": "sensor_msgs/msg/CameraInfo",
             "points": "sensor_msgs/msg/PointCloud2", "tf": "tf2_msgs/msg/TFMessage"}


def _jazzy():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def _stamp(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# -- subscribers (child processes) --------------------------------------------------------------------------------

def _dds_subscriber(out: Path, domain: int, namespace: str, count: int, timeout: float) -> None:
    """Readers on rt/<ns>/depth/{image,camera_info,points}, ros_discovery_info and DCPSPublication until `count`
    depth images came; each message a line in out/log.jsonl, each depth map an .npy file."""
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
    from cyclonedds.core import Qos as CQos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.qos import Policy
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    participant = DomainParticipant(domain)
    sensor = CQos(Policy.Reliability.BestEffort, Policy.History.KeepLast(50), Policy.Durability.Volatile)
    readers = {key: DataReader(participant, Topic(participant, f"rt{namespace}/{name}", cls), qos=sensor)
               for key, (name, cls) in DDS_TOPICS.items()}
    discovery = DataReader(participant, Topic(participant, "ros_discovery_info", ParticipantEntitiesInfo_), qos=CQos(
        Policy.Reliability.Reliable(0), Policy.History.KeepLast(1), Policy.Durability.TransientLocal))
    publications = BuiltinDataReader(participant, BuiltinTopicDcpsPublication)
    log = (out / "log.jsonl").open("w")
    print("ready", flush=True)
    depths, deadline = 0, time.monotonic() + timeout
    while depths < count and time.monotonic() < deadline:
        for key, reader in readers.items():
            for msg in reader.take(N=50):
                row = {"key": key, "stamp": _stamp(msg.header), "frame_id": msg.header.frame_id,
                       "width": msg.width, "height": msg.height}
                if key == "depth":
                    row.update(encoding=msg.encoding, step=msg.step, bigendian=msg.is_bigendian)
                    np.save(out / f"depth_{row['stamp']}.npy",
                            np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width))
                    depths += 1
                elif key == "info":
                    row.update(k=list(msg.k), model=msg.distortion_model)
                else:
                    row.update(point_step=msg.point_step, fields=[(f.name, f.offset, f.datatype) for f in msg.fields])
                log.write(json.dumps(row) + "\n")
        for msg in discovery.take(N=10):
            log.write(json.dumps({"key": "discovery", "participant": bytes(msg.gid.data).hex(),
                                  "nodes": [{"ns": n.node_namespace, "name": n.node_name,
                                             "writers": [bytes(g.data).hex() for g in n.writer_gid_seq]}
                                            for n in msg.node_entities_info_seq]}) + "\n")
        for p in publications.take(N=50):
            user_data = next((q.data for q in p.qos if type(q).__name__ == "Userdata"), b"")
            reliability = next((repr(q) for q in p.qos if q.__scope__ == "Reliability"), "")
            log.write(json.dumps({"key": "publication", "topic": p.topic_name, "type": p.type_name,
                                  "guid": p.key.bytes.hex(), "participant": p.participant_key.bytes.hex(),
                                  "user_data": user_data.decode(errors="replace"),
                                  "reliability": reliability}) + "\n")
        log.flush()
        time.sleep(0.01)
    log.close()


def zenoh_key(domain: int, topic: str, ros_type: str) -> str:
    """rmw_zenoh's key expression, from its design.md: <domain>/<topic>/<pkg>::msg::dds_::<Name>_/<RIHS01 hash>."""
    package, kind, name = ros_type.split("/")
    return f"{domain}/{topic.strip('/')}/{package}::{kind}::dds_::{name}_/{_jazzy().hash_rihs01(ros_type)}"


def _zenoh_subscriber(out: Path, endpoint: str, domain: int, namespace: str, count: int, timeout: float) -> None:
    """Subscriptions on the depth, camera_info, points and /tf keys until `count` depth images came; decodes the
    33-byte attachment and the CDR payload (rosbags); and the liveliness tokens declared (the ROS 2 graph)."""
    import zenoh

    store = _jazzy()
    topics = {"depth": f"{namespace}/depth/image", "info": f"{namespace}/depth/camera_info",
              "points": f"{namespace}/depth/points", "tf": "/tf"}
    keys = {zenoh_key(domain, topic, ROS_TYPES[k]): k for k, topic in topics.items()}
    session = zenoh.open(zenoh_config(endpoint))
    log = (out / "log.jsonl").open("w")
    lock = threading.Lock()
    depths = []

    def on_sample(sample) -> None:
        key = keys.get(str(sample.key_expr), "other")
        raw = sample.attachment.to_bytes() if sample.attachment is not None else b""
        row = {"key": key, "zkey": str(sample.key_expr), "attachment_size": len(raw)}
        if len(raw) == 33:
            sequence, source_ns, gid_size, gid = struct.unpack("<qqB16s", raw)
            row.update(sequence=sequence, source_ns=source_ns, gid_size=gid_size, gid=gid.hex())
        payload = sample.payload.to_bytes()
        if key != "other":
            msg = store.deserialize_cdr(payload, ROS_TYPES[key])
            if key == "tf":
                tf = msg.transforms[0]
                row.update(stamp=_stamp(tf.header), parent=tf.header.frame_id, child=tf.child_frame_id,
                           xyz=[tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z],
                           xyzw=[tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z,
                                 tf.transform.rotation.w])
            else:
                row.update(stamp=_stamp(msg.header), frame_id=msg.header.frame_id, width=msg.width,
                           height=msg.height, cdr_header=payload[:4].hex())
            if key == "depth":
                row.update(encoding=msg.encoding)
                np.save(out / f"depth_{row['stamp']}.npy",
                        np.frombuffer(msg.data.tobytes(), "<f4").reshape(msg.height, msg.width))
        with lock:
            log.write(json.dumps(row) + "\n")
            log.flush()
            if key == "depth":
                depths.append(row)

    # the graph: every liveliness token declared while we listen (history: those declared before too), so a
    # publisher that has finished and left by the time we look is still seen
    tokens: list[str] = []

    def on_token(sample) -> None:
        if sample.kind == zenoh.SampleKind.PUT:
            with lock:
                tokens.append(str(sample.key_expr))

    subscribers = [session.declare_subscriber(f"{domain}/**", on_sample),
                   session.liveliness().declare_subscriber(f"@ros2_lv/{domain}/**", on_token, history=True)]
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            got = len(depths)
        if got >= count:
            break
        time.sleep(0.02)
    with lock:
        log.write(json.dumps({"key": "liveliness", "tokens": sorted(set(tokens))}) + "\n")
        log.flush()
    for s in subscribers:
        s.undeclare()
    session.close()
    log.close()


def main(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "dds":
        out, domain, namespace, count, timeout = args
        _dds_subscriber(Path(out), int(domain), namespace, int(count), float(timeout))
    else:
        out, endpoint, domain, namespace, count, timeout = args
        _zenoh_subscriber(Path(out), endpoint, int(domain), namespace, int(count), float(timeout))


# -- helpers of the tests --------------------------------------------------------------------------------------

def _subscriber(*args, env: dict | None = None) -> Child:
    """A subscriber of this file in a child process (main() below), listening once it returns."""
    return Child("-m", "tests.test_ros2", *args, env=env, cwd=ROOT)


def _domain() -> int:
    """A domain of our own: other runs on this machine (and their DDS traffic) stay out of ours."""
    return random.Random(os.getpid() ^ time.time_ns()).randrange(120, 230)


def _log(folder: Path) -> list[dict]:
    path = folder / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture()
def cyclone_loopback() -> dict:
    """CYCLONEDDS_URI naming lo, peer 127.0.0.1, multicast off: for the children and for the publisher here."""
    with ros2_loopback.cyclone_loopback() as env:
        yield env


def _bag(tmp_path: Path, frames: int = 3) -> tuple[Path, list[int]]:
    from smoothdino.edge.sources.synthetic import SyntheticScene

    from .test_bags import write_bag

    stamps = write_bag(tmp_path / "run_bag", [rgb for rgb, _ in SyntheticScene(70, 98, frames)])
    return tmp_path / "run_bag", stamps


def _process(args: list[str]):
    from smoothdino.cli import app
    from typer.testing import CliRunner

    return CliRunner().invoke(app, ["process", *map(str, args)])


def _same_as_pngs(received: dict[int, np.ndarray], stamps: list[int], pngs: Path) -> None:
    """Each depth received equals the PNG `process` wrote for that frame (mm, 0 = none) within 1 mm; NaN = none."""
    assert received, "no depth image arrived"
    for stamp, metres in received.items():
        png = cv2.imread(str(pngs / f"{stamps.index(stamp):06d}.png"), cv2.IMREAD_UNCHANGED)
        assert metres.shape == png.shape and metres.dtype == np.float32
        assert np.array_equal(np.isnan(metres), png == 0)
        assert np.nanmax(np.abs(metres[png > 0] * 1000.0 - png[png > 0])) <= 1.0


# -- the tests ------------------------------------------------------------------------------------------------

def test_process_publishes_ros2_topics_over_dds(small_export, tmp_path, cyclone_loopback):
    bag, stamps = _bag(tmp_path)
    domain, got = _domain(), tmp_path / "dds"
    got.mkdir()
    subscriber = _subscriber("dds", got, domain, NAMESPACE, len(stamps), 40, env=cyclone_loopback)
    result = _process([bag, "--engines", small_export, "--out", tmp_path / "out", "--no-video", "--ros2",
                       "--ros2-domain", domain, "--ros2-namespace", NAMESPACE.strip("/")])
    assert result.exit_code == 0, result.output
    assert f"ros2 dds: {len(stamps)} frames published to {NAMESPACE}" in result.output
    subscriber.finish(10)
    rows = _log(got)
    # ROS 2's mapping: rt/<ns>/<name>, <pkg>::msg::dds_::<Name>_, Jazzy's type hash in USER_DATA, best effort
    store = _jazzy()
    ours = {p["topic"]: p for p in rows if p["key"] == "publication" and p["topic"].startswith(f"rt{NAMESPACE}/")}
    for key, (name, cls) in DDS_TOPICS.items():
        publication = ours[f"rt{NAMESPACE}/{name}"]
        assert publication["type"] == cls.__idl_typename__
        assert publication["user_data"] == f"typehash={store.hash_rihs01(ROS_TYPES[key])};"
        assert "BestEffort" in publication["reliability"]
    # the node: ros_discovery_info names it in our namespace, with exactly our writers' GUIDs as GIDs
    node = next(n for d in rows if d["key"] == "discovery" for n in d["nodes"] if n["name"] == "smoothdino")
    assert node["ns"] == NAMESPACE
    assert {p["guid"] for p in ours.values()} <= set(node["writers"])
    # the frames arrived on every topic, stamped with the bag's header stamps, and each depth is the PNG's (best
    # effort: a frame sent before discovery finished may be lost, as ROS 2 would lose it; here at most the first)
    for key in DDS_TOPICS:
        received = sorted(r["stamp"] for r in rows if r["key"] == key)
        assert received == stamps[len(stamps) - len(received):] and len(received) >= len(stamps) - 1, key
    image = next(r for r in rows if r["key"] == "depth")
    assert (image["encoding"], image["width"], image["height"], image["step"], image["bigendian"]) == \
        ("32FC1", 98, 70, 392, 0)
    assert image["frame_id"] == "cam_color_optical"
    info = next(r for r in rows if r["key"] == "info")
    assert info["k"] == [80.0, 0.0, 47.0, 0.0, 82.0, 36.0, 0.0, 0.0, 1.0]  # the bag's own CameraInfo
    cloud = next(r for r in rows if r["key"] == "points")
    assert cloud["point_step"] == 16 and [f[0] for f in cloud["fields"]] == ["x", "y", "z", "rgb"]
    received = {int(p.stem.split("_")[1]): np.load(p) for p in got.glob("depth_*.npy")}
    _same_as_pngs(received, stamps, tmp_path / "out" / "run_bag" / "depth")


def test_process_publishes_ros2_topics_over_zenoh(small_export, tmp_path):
    bag, stamps = _bag(tmp_path)
    domain, endpoint, got = _domain(), f"tcp/127.0.0.1:{free_port()}", tmp_path / "zenoh"
    got.mkdir()
    router = Child.router(endpoint)
    try:
        subscriber = _subscriber("zenoh", got, endpoint, domain, NAMESPACE, len(stamps), 40)
        time.sleep(0.5)  # the router tells the subscriber's interest to the publisher when it joins
        result = _process([bag, "--engines", small_export, "--out", tmp_path / "out", "--no-video",
                           "--keyframes", "2", "--carry", "pose",  # /tf: the camera in its keyframe's frame
                           "--ros2", "zenoh", "--ros2-connect", endpoint, "--ros2-domain", domain,
                           "--ros2-namespace", NAMESPACE])
        assert result.exit_code == 0, result.output
        subscriber.finish(10)
    finally:
        router.kill()
    rows = _log(got)
    by_key = {k: [r for r in rows if r["key"] == k] for k in ("depth", "info", "points")}
    for key, received in by_key.items():
        assert len(received) >= len(stamps) - 1, key  # at most the first lost, before the route was up
        # rmw_zenoh's attachment: 33 bytes, sequence numbers from 1 rising by one: the n-th frame's is n
        assert [r["sequence"] for r in received] == [stamps.index(r["stamp"]) + 1 for r in received], key
        assert [r["sequence"] for r in received] == list(range(received[0]["sequence"], len(stamps) + 1)), key
        assert {r["attachment_size"] for r in received} == {33} and {r["gid_size"] for r in received} == {16}
        assert len({r["gid"] for r in received}) == 1
        assert all(abs(r["source_ns"] - time.time_ns()) < 120e9 for r in received)  # wall-clock ns
        assert {r["cdr_header"] for r in received} == {"00010000"}  # CDR little-endian
    assert len({by_key[k][0]["gid"] for k in by_key}) == 3  # one GID a publisher
    assert not [r for r in rows if r["key"] == "other"]  # nothing under another key of our domain
    _same_as_pngs({r["stamp"]: np.load(got / f"depth_{r['stamp']}.npy") for r in by_key["depth"]}, stamps,
                  tmp_path / "out" / "run_bag" / "depth")
    # /tf: on each keyframe (frames 0 and 2) the camera is its keyframe, between them the pose carry's motion if it
    # found one; from the camera's frame to `<frame>_keyframe`, as tf2 reads it
    transforms = {r["stamp"]: r for r in rows if r["key"] == "tf"}
    assert {stamps[0], stamps[2]} <= set(transforms) <= set(stamps)
    for stamp, tf in transforms.items():
        assert (tf["parent"], tf["child"]) == ("cam_color_optical_keyframe", "cam_color_optical")
        assert np.isclose(np.linalg.norm(tf["xyzw"]), 1.0)
        if stamp != stamps[1]:
            assert tf["xyz"] == [0.0, 0.0, 0.0] and tf["xyzw"] == [0.0, 0.0, 0.0, 1.0]
    # the graph: the node's token and one publisher token a topic, as rmw_zenoh's design.md writes them
    tokens = next(r["tokens"] for r in rows if r["key"] == "liveliness")
    node = [k for k in tokens if k.split("/")[5] == "NN"]
    assert len(node) == 1 and node[0].split("/")[6:] == ["%", "%robot1", "smoothdino"]
    session = node[0].split("/")[2]
    publishers = {tuple(k.split("/")[9:12]): k for k in tokens if k.split("/")[5] == "MP"}
    for key, topic in (("depth", "%robot1%depth%image"), ("info", "%robot1%depth%camera_info"),
                       ("points", "%robot1%depth%points")):
        zkey = zenoh_key(domain, topic.replace("%", "/"), ROS_TYPES[key])
        _, _, type_name, type_hash = zkey.rsplit("/", 3)
        token = publishers[(topic, type_name, type_hash)]
        assert token.startswith(f"@ros2_lv/{domain}/{session}/") and token.endswith("/2::,5:,:,:,,")  # best effort, depth 5


def test_live_goes_on_when_the_subscriber_and_the_router_die(small_export, tmp_path):
    """Zenoh: one subscriber and then the router are SIGKILLed mid-run. The loop writes every output file, the
    publisher and the other subscriber reconnect to a new router on their own (frames flow again, the publisher's
    sequence numbers further on), and `live` ends normally."""
    from smoothdino.cli import app
    from typer.testing import CliRunner

    from .test_faults import write_video

    video = write_video(tmp_path / "walk.mp4", 300)  # 10 s in real time at 30 fps
    domain, endpoint = _domain(), f"tcp/127.0.0.1:{free_port()}"
    killed, survivor = tmp_path / "killed", tmp_path / "survivor"
    killed.mkdir()
    survivor.mkdir()
    router = Child.router(endpoint)
    subscribers = [_subscriber("zenoh", folder, endpoint, domain, NAMESPACE, 100_000, 60) for folder in (killed, survivor)]
    outcome = {}
    live = threading.Thread(target=lambda: outcome.update(result=CliRunner().invoke(app, [
        "live", "--source", str(video), "--engines", str(small_export), "--headless", "--out", str(tmp_path / "out"),
        "--threads", "1", "--ros2", "zenoh", "--ros2-connect", endpoint, "--ros2-domain", str(domain),
        "--ros2-namespace", NAMESPACE])))

    def sequences(folder: Path) -> list[int]:
        return [r["sequence"] for r in _log(folder) if r["key"] == "depth"]

    def wait_for(condition, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline and live.is_alive():
            time.sleep(0.05)

    live.start()
    try:
        wait_for(lambda: len(sequences(killed)) >= 3 and len(sequences(survivor)) >= 3, 40)
        subscribers[0].kill()
        router.kill()
        before = max(sequences(survivor))
        pngs_then = len(list((tmp_path / "out" / "depth").glob("*.png")))
        router = Child.router(endpoint)
        wait_for(lambda: len([n for n in sequences(survivor) if n > before + 1]) >= 3, 20)
    finally:
        live.join(60)
        for child in (*subscribers, router):
            child.kill()
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert "went away" in result.output and "is back" in result.output, result.output
    after = [n for n in sequences(survivor) if n > before + 1]
    assert len(after) >= 3 and after == sorted(after), (sequences(survivor), before, result.output)
    # every frame the loop output has its PNG and its metrics row, before and after the deaths
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    rows = (tmp_path / "out" / "metrics.csv").read_text().splitlines()[1:]
    pngs = sorted(p.stem for p in (tmp_path / "out" / "depth").glob("*.png"))
    assert len(pngs) > pngs_then and pngs == sorted(r.split(",")[0] for r in rows)
    assert metrics["summary"]["frames"] == len(pngs)
    assert "frames published" in result.output


def test_bad_ros2_options_are_one_line_and_exit_2(small_export, tmp_path, monkeypatch):
    from smoothdino.cli import app
    from typer.testing import CliRunner

    from .test_faults import write_video

    video = write_video(tmp_path / "walk.mp4", 3)
    base = ["live", "--source", str(video), "--engines", str(small_export), "--headless"]
    cases = {
        ("--ros2", "zenoh", "--ros2-connect", "localhost"): "--ros2-connect 'localhost': give <protocol>/<host>:<port>",
        ("--ros2", "zenoh", "--ros2-connect", "tcp/localhost"): "--ros2-connect 'tcp/localhost': give",
        ("--ros2", "zenoh", "--ros2-connect", "tcp/localhost:99999"): "--ros2-connect 'tcp/localhost:99999': give",
        ("--ros2", "zenoh", "--ros2-connect", "carrier-pigeon/coop:1"): "--ros2-connect carrier-pigeon/coop:1: Zenoh cannot",
        ("--ros2", "--ros2-connect", "tcp/localhost:7447"): "is for --ros2 zenoh",
        ("--ros2", "--ros2-domain", "300"): "--ros2-domain 300: ROS 2 domains are 0 to 232",
        ("--ros2", "--ros2-namespace", "/robot/1st"): "--ros2-namespace '/robot/1st': give ROS name tokens",
        ("--ros2", "zenoh", "--ros2-distro", "humble"): "--ros2 zenoh on Humble",
        ("--ros2-namespace", "/robot1"): "--ros2-namespace applies to ROS 2 topics: add --ros2",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(app, [*base, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
    from smoothdino.core.errors import UserError
    from smoothdino.edge.api import Ros2Publisher

    with pytest.raises(UserError, match="--ros2 mqtt: give dds"):
        Ros2Publisher("mqtt")
    # DDS has no endpoint of ours; its own configuration can be as wrong: an interface that is not there
    bad = '<CycloneDDS><Domain Id="any"><General><Interfaces><NetworkInterface name="nosuch0"/></Interfaces>' \
          '</General></Domain></CycloneDDS>'
    monkeypatch.setenv("CYCLONEDDS_URI", bad)
    result = CliRunner().invoke(app, [*base, "--ros2", "--ros2-domain", "5"])
    assert result.exit_code == 2 and "--ros2 dds: Cyclone DDS cannot start on domain 5; check CYCLONEDDS_URI=" \
        in result.output and "Traceback" not in result.output, result.output


def test_the_jetson_image_installs_the_ros2_extra():
    """deploy/jetson/requirements-ros2.txt is pyproject's `ros2` extra, and the Dockerfile builds Cyclone DDS's C
    library at a tag of the major the Python binding needs before installing it."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ros2"]
    listed = [line.strip() for line in (ROOT / "deploy/jetson/requirements-ros2.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(extra)
    dockerfile = (ROOT / "deploy/jetson/Dockerfile").read_text()
    tag = re.search(r"ARG CYCLONEDDS_VERSION=(\d+)\.", dockerfile)
    binding = re.search(r"cyclonedds>=(\d+)\.[^,]*,<(\d+)", " ".join(extra))
    assert tag and binding and binding[1] == tag[1] and int(binding[2]) == int(tag[1]) + 1
    install = dockerfile[dockerfile.index("ARG CYCLONEDDS_VERSION"):]
    assert "CYCLONEDDS_HOME=/usr/local pip3 install --no-binary=cyclonedds -r deploy/jetson/requirements-ros2.txt" \
        in install.replace("\\\n", " ")


def test_humble_gets_its_own_gids_and_no_type_hash(cyclone_loopback):
    """--ros2-distro humble over DDS: ros_discovery_info with Humble's 24-byte GIDs (the GUID, zero-padded) and
    writers without the `typehash=` USER_DATA that Humble predates. One process: Cyclone delivers locally, through
    the same CDR and type matching."""
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
    from cyclonedds.core import Qos as CQos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.qos import Policy
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from smoothdino.edge.api import Ros2Publisher

    domain = _domain()
    with Ros2Publisher("dds", domain=domain, distro="humble", namespace="/old") as publisher:
        participant = DomainParticipant(domain)
        discovery = DataReader(participant, Topic(participant, "ros_discovery_info", HumbleParticipantEntitiesInfo_),
                               qos=CQos(Policy.Reliability.Reliable(0), Policy.History.KeepLast(1),
                                        Policy.Durability.TransientLocal))
        publications = BuiltinDataReader(participant, BuiltinTopicDcpsPublication)
        infos, seen, deadline = [], {}, time.monotonic() + 10
        while (not infos or len(seen) < 4) and time.monotonic() < deadline:
            infos += discovery.take(N=5)
            seen.update({p.topic_name: p for p in publications.take(N=50) if p.topic_name.startswith("rt/")})
            time.sleep(0.02)
        writers = {name: p.key.bytes for name, p in seen.items()}
        user_data = {name: [q for q in p.qos if type(q).__name__ == "Userdata"] for name, p in seen.items()}
        participant_guid = publisher.transport.participant.guid.bytes
        participant.__del__()
    node = infos[-1].node_entities_info_seq[0]
    assert (node.node_namespace, node.node_name) == ("/old", "smoothdino")
    assert bytes(infos[-1].gid.data) == participant_guid + bytes(8)
    gids = {bytes(g.data) for g in node.writer_gid_seq}
    assert {guid + bytes(8) for guid in writers.values()} <= gids and len(writers) == 4, writers
    assert all(not found or not found[0].data for found in user_data.values()), user_data


class SlowTransport:
    """A transport whose sends take 0.3 s (a congested link, a slow serializer): what the loop must not feel."""

    name = "slow"

    def __init__(self):
        from smoothdino.edge.ros2.topics import Graph

        self.graph = Graph.of("/slow", domain=0, distro="jazzy")
        self.sent: list[dict] = []
        self.closed = False

    def publish(self, payloads: dict) -> None:
        time.sleep(0.3)
        self.sent.append(payloads)

    def status(self) -> str:
        return "slow"

    def close(self) -> None:
        self.closed = True


def test_a_slow_transport_never_holds_the_caller():
    """publish() returns at once however slow the sends are; frames not yet sent are replaced (counted), and
    close() sends the last one. The Python API's publisher, with the API's DepthFrame-like input."""
    from smoothdino.edge.api import Ros2Publisher

    transport = SlowTransport()
    publisher = Ros2Publisher(transport, intrinsics=(80.0, 82.0, 47.0, 36.0))
    depth = np.full((70, 98), 2.0, np.float32)
    waits = []
    for i in range(10):
        start = time.perf_counter()
        publisher.publish(depth + i, stamp_ns=1_700_000_000_000_000_000 + i)
        waits.append(time.perf_counter() - start)
        time.sleep(0.02)
    publisher.close()
    assert max(waits) < 0.1  # each send takes 0.3 s
    assert publisher.published + publisher.dropped == 10 and publisher.dropped >= 7
    assert transport.closed and len(transport.sent) == publisher.published
    last = _jazzy().deserialize_cdr(transport.sent[-1]["depth"], "sensor_msgs/msg/Image")
    assert _stamp(last.header) == 1_700_000_000_000_000_009  # the newest frame is the one that went out last
    assert np.frombuffer(last.data.tobytes(), "<f4")[0] == 11.0
    with pytest.raises(RuntimeError, match="closed"):
        publisher.publish(depth)


def test_api_publisher_sends_tf_from_the_camera_pose(tmp_path):
    """/tf from a pose (smoothdino.DepthFrame.camera_in_keyframe): parent `<frame>_keyframe`, child `<frame>`, the
    4x4's translation and rotation, read back by a Zenoh subscriber."""
    from smoothdino.edge.api import Ros2Publisher

    domain, endpoint, got = _domain(), f"tcp/127.0.0.1:{free_port()}", tmp_path / "tf"
    got.mkdir()
    angle = 0.3
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(np.array([0.0, angle, 0.0]))[0]
    pose[:3, 3] = [0.1, -0.02, 0.35]
    router = Child.router(endpoint)
    try:
        subscriber = _subscriber("zenoh", got, endpoint, domain, NAMESPACE, 3, 30)
        with Ros2Publisher("zenoh", connect=endpoint, domain=domain, namespace=NAMESPACE, frame_id="front",
                           intrinsics=(80.0, 82.0, 47.0, 36.0)) as publisher:
            time.sleep(0.5)
            for i in range(3):
                publisher.publish(np.full((70, 98), 1.5, np.float32), camera_in_keyframe=pose,
                                  stamp_ns=1_700_000_000_000_000_000 + i)
                time.sleep(0.2)
        subscriber.finish(10)
    finally:
        router.kill()
    transforms = [r for r in _log(got) if r["key"] == "tf"]
    assert transforms, _log(got)
    tf = transforms[-1]
    assert (tf["parent"], tf["child"]) == ("front_keyframe", "front")
    assert np.allclose(tf["xyz"], pose[:3, 3])
    x, y, z, w = tf["xyzw"]
    assert np.allclose([x, y, z, w], [0.0, np.sin(angle / 2), 0.0, np.cos(angle / 2)], atol=1e-9)


if __name__ == "__main__":
    main(sys.argv[1:])
