"""Several cameras in the robot outputs (issue 39, item 4): `live --source A --source B` with `--foxglove` /
`--record x.mcap` (one server, one recording, each camera's channels under `/<camera>/`) and `--ros2` (one node,
each camera's topics under `<namespace>/<camera>/`, one /tf). What arrives is read back independently: the MCAP
with the `mcap` reader and the protobuf schemas the file carries, the ROS 2 topics by tests/test_ros2.py's Zenoh
subscriber (a child process decoding rmw_zenoh's layout with rosbags), the Foxglove server by a WebSocket client.
Each camera's depth is checked against its own depth PNGs under --out."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.edge.sources import Frame
from smoothdino.edge.sources.synthetic import SyntheticScene

pytest.importorskip("foxglove")

SIZES = {"front": (70, 98), "back": (56, 84)}
COMMON = ["--headless", "--no-async", "--backend", "onnxruntime", "--threads", "1", "--fusion", "off"]


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((folder / "depth").glob("*.png"))}


def _png_of(metres: np.ndarray, pngs: dict[str, np.ndarray]) -> str | None:
    """The name of the PNG (mm, 0 = none) this depth (metres, NaN or 0 = none) is, within 1 mm; None if none is."""
    got = np.nan_to_num(metres, nan=0.0)
    for name, png in pngs.items():
        if png.shape == got.shape and np.array_equal(got > 0, png > 0) and \
                np.max(np.abs(got[png > 0] * 1000.0 - png[png > 0]), initial=0.0) <= 1.0:
            return name
    return None


def _protobuf_class(schema):
    """The protobuf class of an MCAP schema record (a FileDescriptorSet), built with google.protobuf alone."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pending = list(descriptor_pb2.FileDescriptorSet.FromString(schema.data).file)
    pool = descriptor_pool.DescriptorPool()
    while pending:  # dependencies first
        for f in list(pending):
            try:
                pool.Add(f)
                pending.remove(f)
            except TypeError:
                continue
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))


def test_two_cameras_record_one_mcap_with_each_cameras_channels(small_export_fp32, tmp_path):
    """One recording (and one Foxglove port) for the run: every camera's six channels under /<camera>/, each
    message with the camera's own frame_id, size and depth (its own PNGs, in order), its latency rows naming its
    own frames; no per-camera video is written for an .mcap."""
    from mcap.reader import make_reader

    from smoothdino.edge.sinks.foxglove import TOPICS, camera_topics

    record, out = tmp_path / "run.mcap", tmp_path / "out"
    result = CliRunner().invoke(app, ["live", "--engines", str(small_export_fp32), "--source", "synthetic:70x98:5",
                                      "--source", "synthetic:56x84:5", "--name", "front", "--name", "back",
                                      "--out", str(out), "--record", str(record), "--foxglove", "0", *COMMON])
    assert result.exit_code == 0, result.output
    assert result.output.count("Foxglove -> open connection ws://127.0.0.1:") == 1  # one server
    # published/dropped per camera: every frame is either (a frame replaced before its publisher took it is dropped)
    counts = re.search(r"foxglove: \d+ frames published, \d+ dropped for the viewer \(front (\d+)/(\d+), back (\d+)/(\d+)\)",
                       result.output)
    assert counts is not None, result.output
    published = {"front": int(counts[1]), "back": int(counts[3])}
    assert int(counts[1]) + int(counts[2]) == 5 and int(counts[3]) + int(counts[4]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run.mcap"]  # no run-front.mp4, no temporary

    messages: dict[str, list] = {}
    with open(record, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            messages.setdefault(channel.topic, []).append((schema, message))
    assert set(messages) == {topic for camera in SIZES for topic in camera_topics(camera).values()}
    assert not set(messages) & set(TOPICS.values())  # no channel outside a camera's
    for camera, (height, width) in SIZES.items():
        topics, pngs = camera_topics(camera), _pngs(out / camera)
        assert len(pngs) == 5
        raw = _protobuf_class(messages[topics["depth"]][0][0])
        seen = []
        for _, message in messages[topics["depth"]]:
            image = raw.FromString(message.data)
            assert (image.frame_id, image.width, image.height, image.encoding) == \
                (f"{camera}_optical_frame", width, height, "32FC1")
            seen.append(_png_of(np.frombuffer(image.data, "<f4").reshape(height, width), pngs))
        # each its own camera's frame, in order, the last one among them (closing publishes it); the viewer's
        # drops are the only frames missing (none, unless this machine stalled the publisher a whole frame)
        assert None not in seen and seen == sorted(set(seen)) and seen[-1] == max(pngs), (camera, seen)
        assert len(seen) == published[camera]
        calibration = _protobuf_class(messages[topics["calibration"]][0][0]).FromString(
            messages[topics["calibration"]][0][1].data)
        assert (calibration.frame_id, calibration.width, calibration.height) == (f"{camera}_optical_frame", width, height)
        cloud = _protobuf_class(messages[topics["points"]][0][0]).FromString(messages[topics["points"]][-1][1].data)
        assert cloud.frame_id == f"{camera}_optical_frame"
        rows = [json.loads(m.data) for _, m in messages[topics["latency"]]]
        assert [r["frame"] for r in rows] == seen and all(r["keyframe"] for r in rows)


def test_one_foxglove_server_serves_every_camera_from_its_own_thread():
    """FoxgloveSink(per_camera=True): one port; a viewer sees both cameras' channels, each camera's frames (written
    from its own thread, never waiting) with its own frame_id and size; the sink itself takes no frames."""
    from smoothdino.benchmarks.robotics_overhead import LoopbackViewer
    from smoothdino.edge.sinks.foxglove import FoxgloveSink, camera_topics

    pytest.importorskip("websockets")
    sink = FoxgloveSink(("127.0.0.1", 0), per_camera=True)
    streams = {camera: sink.stream(camera) for camera in SIZES}
    viewer = LoopbackViewer(sink.port, channels=12)
    waits: list[float] = []

    def camera_thread(camera: str) -> None:
        for i, (rgb, depth) in enumerate(SyntheticScene(*SIZES[camera], frames=8)):
            start = time.perf_counter()
            streams[camera].write(Frame(rgb, i, f"{i:06d}", i / 30), depth, None, None)
            waits.append(time.perf_counter() - start)
            time.sleep(1 / 30)

    try:
        with pytest.raises(RuntimeError, match="stream"):
            sink.write(Frame(np.zeros((2, 2, 3), np.uint8), 0, "x", 0.0), np.ones((2, 2), np.float32), None, None)
        threads = [threading.Thread(target=camera_thread, args=(c,)) for c in SIZES]
        for t in threads:
            t.start()
        got = viewer.receive(until=time.monotonic() + 3)
        for t in threads:
            t.join(30)
    finally:
        sink.close()
        viewer.close()
    assert max(waits) < 0.05
    topics = {t for t, _ in got}
    for camera, (height, width) in SIZES.items():
        mine = camera_topics(camera)
        assert set(mine.values()) <= topics, camera
        raw = viewer.decoder(mine["depth"])
        images = [raw.FromString(p) for t, p in got if t == mine["depth"]]
        assert {(m.frame_id, m.width, m.height) for m in images} == {(f"{camera}_optical_frame", width, height)}
        assert streams[camera].published + streams[camera].dropped == 8


def _video(path: Path, size: tuple[int, int], frames: int, seed: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size[1], size[0]))
    for rgb, _ in SyntheticScene(*size, frames=frames, seed=seed):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_two_cameras_publish_ros2_topics_under_their_namespaces_with_one_tf_tree(small_export_fp32, tmp_path):
    """--ros2 zenoh with two cameras: one node; a subscriber per camera namespace gets /robot1/<camera>/depth/image,
    camera_info and points with the camera's frame_id, size and depth (its own PNGs); /tf carries both cameras,
    each `<camera>_keyframe` a child of `<camera>_optical_frame` (the identity on keyframes)."""
    pytest.importorskip("zenoh")
    pytest.importorskip("rosbags")
    from smoothdino.benchmarks.ros2_loopback import Child, free_port

    from .test_ros2 import _domain, _log, _subscriber

    sources = [_video(tmp_path / f"{camera}.mp4", size, 30, seed) for (camera, size), seed in zip(SIZES.items(), (1, 2))]
    domain, endpoint = _domain(), f"tcp/127.0.0.1:{free_port()}"
    got = {camera: tmp_path / f"got_{camera}" for camera in SIZES}
    router = Child.router(endpoint)
    try:
        subscribers = []
        for camera, folder in got.items():
            folder.mkdir()
            # until 3 depth images came (a live camera drops frames on a slow machine: at most 30 in 3 s)
            subscribers.append(_subscriber("zenoh", folder, endpoint, domain, f"/robot1/{camera}", 3, 40))
        time.sleep(0.5)  # the router tells the subscribers' interest to the publisher when it joins
        result = CliRunner().invoke(app, ["live", "--engines", str(small_export_fp32), "--source", str(sources[0]),
                                          "--source", str(sources[1]), "--name", "front", "--name", "back",
                                          "--out", str(tmp_path / "out"), "--ros2", "zenoh", "--ros2-connect", endpoint,
                                          "--ros2-domain", str(domain), "--ros2-namespace", "/robot1", *COMMON])
        assert result.exit_code == 0, result.output
        for subscriber in subscribers:
            subscriber.finish(15)
    finally:
        router.kill()
    assert "ros2 zenoh:" in result.output and "published to /robot1 (front" in result.output
    transforms = []
    for camera, (height, width) in SIZES.items():
        rows, pngs = _log(got[camera]), _pngs(tmp_path / "out" / camera)
        run = json.loads((tmp_path / "out" / camera / "metrics.json").read_text())["run"]
        assert run["ros2"]["namespace"] == f"/robot1/{camera}" and run["ros2"]["published"] >= 1
        for key in ("depth", "info", "points"):
            received = [r for r in rows if r["key"] == key]
            assert len(received) >= 3, (camera, key)
            assert {r["frame_id"] for r in received} == {f"{camera}_optical_frame"}
        assert {(r["width"], r["height"]) for r in rows if r["key"] in ("depth", "info")} == {(width, height)}
        depths = [np.load(got[camera] / f"depth_{r['stamp']}.npy") for r in rows if r["key"] == "depth"]
        assert all(_png_of(d, pngs) is not None for d in depths), camera  # its own camera's depth, not the other's
        transforms += [r for r in rows if r["key"] == "tf"]
        # the graph: one node /robot1/smoothdino, publishing both cameras' topics
        tokens = next(r["tokens"] for r in rows if r["key"] == "liveliness")
        nodes = {k.split("/")[2] + "/" + "/".join(k.split("/")[6:]) for k in tokens if k.split("/")[5] == "NN"}
        assert len(nodes) == 1 and next(iter(nodes)).endswith("/%/%robot1/smoothdino")
        published = {k.split("/")[9] for k in tokens if k.split("/")[5] == "MP"}
        assert {f"%robot1%{c}%depth%{t}" for c in SIZES for t in ("image", "camera_info", "points")} | {"%tf"} \
            == published
    # one /tf for the run (each subscriber listens to it): every camera's keyframe under its optical frame, the
    # identity on keyframes (--no-async: every frame)
    assert {(r["parent"], r["child"]) for r in transforms} == {(f"{c}_optical_frame", f"{c}_keyframe") for c in SIZES}
    assert all(r["xyz"] == [0.0, 0.0, 0.0] and r["xyzw"] == [0.0, 0.0, 0.0, 1.0] for r in transforms)


class _Recorder:
    """A transport that keeps what it is handed (the publisher's own transport interface)."""

    name = "recorder"

    def __init__(self, graph):
        self.graph, self.sent, self.closed = graph, [], False

    def publish(self, payloads: dict) -> None:
        self.sent.append(payloads)

    def status(self) -> str:
        return "recorder"

    def close(self) -> None:
        self.closed = True


def test_each_cameras_tf_hangs_its_keyframe_under_its_optical_frame():
    """Graph.of(cameras=...): each camera's topics under <namespace>/<camera>/, one /tf; a camera stream's /tf
    is the camera's keyframe seen from the camera (the inverse of the pose carry's camera-in-keyframe), parent
    `<camera>_optical_frame`; a one-camera graph's topics are as before."""
    pytest.importorskip("rosbags")
    from rosbags.typesys import Stores, get_typestore

    from smoothdino.edge.ros2 import Ros2Publisher
    from smoothdino.edge.ros2.payloads import camera_pose
    from smoothdino.edge.ros2.topics import Graph

    assert [t.name for t in Graph.of("/robot1", distro="jazzy", domain=0).topics] == \
        ["/robot1/depth/image", "/robot1/depth/camera_info", "/robot1/depth/points", "/tf"]
    graph = Graph.of("/robot1", distro="jazzy", domain=0, cameras=("front", "back"), color=True)
    assert [t.name for t in graph.topics] == [f"/robot1/{c}/{n}" for c in ("front", "back") for n in
                                              ("depth/image", "depth/camera_info", "depth/points", "color/image")] + ["/tf"]
    transport = _Recorder(graph)
    publisher = Ros2Publisher(transport, intrinsics=(80.0, 82.0, 47.0, 36.0))
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(np.array([0.1, 0.3, -0.2]))[0]
    pose[:3, 3] = [0.1, -0.02, 0.35]
    result = SimpleNamespace(carry="pose", pose=camera_pose(pose))
    front, back = publisher.stream("front"), publisher.stream("back")
    rgb = np.zeros((70, 98, 3), np.uint8)
    front.write(Frame(rgb, 0, "000000", 0.0, meta={"stamp_ns": 1}), np.full((70, 98), 2.0, np.float32), result, None)
    front.close()
    back.write(Frame(rgb[:56, :84], 0, "000000", 0.0, meta={"stamp_ns": 2}), np.full((56, 84), 3.0, np.float32),
               SimpleNamespace(carry="network", pose=None), None)
    publisher.close()
    with pytest.raises(RuntimeError, match="stream"):
        publisher.write(Frame(rgb, 0, "x", 0.0), np.ones((70, 98), np.float32), None, None)
    assert transport.closed and len(transport.sent) == 2
    assert publisher.summary().startswith("ros2 recorder: 2 frames published to /robot1 (front 1, back 1)")
    store = get_typestore(Stores.ROS2_JAZZY)
    (sent_front,), (sent_back,) = ([p for p in transport.sent if f"{c}/depth" in p] for c in ("front", "back"))
    assert set(sent_front) == {"front/depth", "front/info", "front/points", "front/color", "tf"}
    image = store.deserialize_cdr(sent_back["back/depth"], "sensor_msgs/msg/Image")
    assert (image.header.frame_id, image.width, image.height) == ("back_optical_frame", 84, 56)
    tf = store.deserialize_cdr(sent_front["tf"], "tf2_msgs/msg/TFMessage").transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("front_optical_frame", "front_keyframe")
    q = tf.transform.rotation
    keyframe_in_camera = np.eye(4)
    keyframe_in_camera[:3, :3] = _rotation(q.x, q.y, q.z, q.w)
    keyframe_in_camera[:3, 3] = [tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z]
    np.testing.assert_allclose(keyframe_in_camera @ pose, np.eye(4), atol=1e-9)  # the inverse of the pose
    tf = store.deserialize_cdr(sent_back["tf"], "tf2_msgs/msg/TFMessage").transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("back_optical_frame", "back_keyframe")
    assert (tf.transform.rotation.w, tf.transform.translation.z) == (1.0, 0.0)


def _rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    """A unit quaternion's rotation matrix, via OpenCV's Rodrigues (independently of the code under test)."""
    angle = 2.0 * np.arctan2(np.linalg.norm([x, y, z]), w)
    axis = np.array([x, y, z]) / max(np.linalg.norm([x, y, z]), 1e-300)
    return cv2.Rodrigues(axis * angle)[0]


def test_two_cameras_are_one_dds_node_with_each_cameras_topics(small_export_fp32, tmp_path):
    """--ros2 dds with two cameras: one participant announcing one node /robot1/smoothdino whose writers are both
    cameras' topics and /tf (ros_discovery_info, DCPSPublication); a reader of /robot1/back gets back's frames."""
    pytest.importorskip("cyclonedds")
    pytest.importorskip("rosbags")
    from smoothdino.benchmarks import ros2_loopback

    from .test_ros2 import _domain, _log, _subscriber

    domain, got = _domain(), tmp_path / "dds"
    got.mkdir()
    with ros2_loopback.cyclone_loopback() as env:
        subscriber = _subscriber("dds", got, domain, "/robot1/back", 3, 40, env=env)
        result = CliRunner().invoke(app, ["live", "--engines", str(small_export_fp32), "--source", "synthetic:70x98:6",
                                          "--source", "synthetic:56x84:6", "--name", "front", "--name", "back",
                                          "--ros2", "--ros2-domain", str(domain), "--ros2-namespace", "robot1", *COMMON])
        assert result.exit_code == 0, result.output
        subscriber.finish(15)
    assert "ros2 dds:" in result.output and "frames published to /robot1 (front " in result.output
    rows = _log(got)
    for key in ("depth", "info", "points"):
        received = [r for r in rows if r["key"] == key]
        assert len(received) >= 3 and {r["frame_id"] for r in received} == {"back_optical_frame"}, key
    assert {(r["width"], r["height"]) for r in rows if r["key"] == "depth"} == {(84, 56)}
    ours = {p["topic"]: p["guid"] for p in rows if p["key"] == "publication"
            and (p["topic"].startswith("rt/robot1/") or p["topic"] == "rt/tf")}
    assert set(ours) == {f"rt/robot1/{c}/depth/{t}" for c in ("front", "back") for t in ("image", "camera_info", "points")} \
        | {"rt/tf"}
    nodes = [n for d in rows if d["key"] == "discovery" for n in d["nodes"]]
    assert {(n["ns"], n["name"]) for n in nodes} == {("/robot1", "smoothdino")}
    assert set(ours.values()) <= set(nodes[-1]["writers"])  # every camera's writers are the one node's
