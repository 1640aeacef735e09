"""`live --foxglove`: a WebSocket client on loopback subscribes like Foxglove does and decodes what it gets;
a client that stops reading (or vanishes) never holds the depth loop back."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import time

import cv2
import numpy as np
import pytest
from smoothdino.benchmarks.robotics_overhead import LoopbackViewer
from smoothdino.cli import app
from smoothdino.core.errors import UserError
from smoothdino.edge.sinks.foxglove import TOPICS, FoxgloveSink, parse_address
from smoothdino.edge.sources.intrinsics import NYU_KINECT
from smoothdino.edge.sources import Frame
from smoothdino.edge.sources.synthetic import SyntheticScene
from typer.testing import CliRunner

pytest.importorskip("foxglove")
pytest.importorskip("websockets")

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_address_binds_loopback_unless_told():
    assert parse_address("8765") == ("127.0.0.1", 8765)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:9001") == ("::1", 9001)
    for bad in ("port", "70000", "host:"):
        with pytest.raises(UserError, match=r"\[HOST:\]PORT"):
            parse_address(bad)


def _video(path, frames: int):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (98, 70))
    for rgb, _ in SyntheticScene(70, 98, frames=frames):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_live_refuses_bad_address_and_busy_port_in_one_line(small_export, tmp_path):
    video = _video(tmp_path / "walk.mp4", 3)
    result = runner.invoke(app, ["live", "--source", str(video), "--engines", str(small_export), "--headless",
                                 "--foxglove", "localhost:http"])
    assert result.exit_code == 2 and "--foxglove 'localhost:http': give [HOST:]PORT" in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["live", "--source", str(video), "--engines", str(small_export), "--headless",
                                     "--foxglove", str(port)])
    assert result.exit_code == 2 and f"--foxglove 127.0.0.1:{port}: cannot serve" in result.output
    assert "Traceback" not in result.output


def _listening(port: int) -> list[str]:
    """The local addresses of the TCP sockets listening on `port`, from the kernel's own tables."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            local, _, state = row.split()[1:4]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # IPv4 is one little-endian word; IPv6 four of them
                words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]
                found.append(str(ipaddress.ip_address(b"".join(words))))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's /proc/net/tcp")
def test_foxglove_port_alone_listens_on_loopback_only(small_export, tmp_path):
    """README: `--foxglove PORT` binds 127.0.0.1 only; a robot's Wi-Fi never sees the port unless a host is given."""
    video = _video(tmp_path / "walk.mp4", 45)  # 3 s in real time: the server is up for that long
    port = _free_port()
    outcome, seen = {}, []
    live = threading.Thread(target=lambda: outcome.update(result=runner.invoke(app, [
        "live", "--source", str(video), "--engines", str(small_export), "--headless", "--foxglove", str(port)])))
    live.start()
    deadline = time.monotonic() + 60
    while not seen and live.is_alive() and time.monotonic() < deadline:
        seen = _listening(port)
        time.sleep(0.02)
    live.join(timeout=60)
    assert outcome["result"].exit_code == 0, outcome["result"].output
    assert seen == ["127.0.0.1"]  # not 0.0.0.0, not ::, nothing else


def test_live_foxglove_serves_every_channel(small_export, tmp_path):
    video = _video(tmp_path / "walk.mp4", 75)
    port, record = _free_port(), tmp_path / "run.mcap"
    outcome = {}
    live = threading.Thread(target=lambda: outcome.update(result=runner.invoke(app, [
        "live", "--source", str(video), "--engines", str(small_export), "--headless", "--foxglove", str(port),
        "--record", str(record), "--no-async"])))
    live.start()
    try:
        viewer = LoopbackViewer(port)
        got = viewer.receive(until=time.monotonic() + 30)
    finally:
        live.join(timeout=60)
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert f"ws://127.0.0.1:{port}" in result.output and "frames published" in result.output
    by_topic: dict[str, list[bytes]] = {}
    for topic, payload in got:
        by_topic.setdefault(topic, []).append(payload)
    assert set(by_topic) == set(TOPICS.values())

    raw = viewer.decoder(TOPICS["depth"])
    cloud_type = viewer.decoder(TOPICS["points"])
    depths = {(m.timestamp.seconds, m.timestamp.nanos): m for m in map(raw.FromString, by_topic[TOPICS["depth"]])}
    clouds = [cloud_type.FromString(p) for p in by_topic[TOPICS["points"]]]
    depth_msg = next(iter(depths.values()))
    assert (depth_msg.width, depth_msg.height, depth_msg.encoding, depth_msg.step) == (98, 70, "32FC1", 392)
    metres = np.frombuffer(depth_msg.data, "<f4").reshape(70, 98)
    assert np.nanmin(metres) > 0 and np.nanmax(metres) <= 10.0
    # the same frame's cloud, checked by hand: NYUv2 Kinect intrinsics scaled to 98x70, every 4th pixel
    cloud = next(c for c in clouds if (c.timestamp.seconds, c.timestamp.nanos) in depths)
    z = np.frombuffer(depths[(cloud.timestamp.seconds, cloud.timestamp.nanos)].data, "<f4").reshape(70, 98)
    assert cloud.point_stride == 16 and [f.name for f in cloud.fields] == ["x", "y", "z", "blue", "green", "red", "alpha"]
    points = np.frombuffer(cloud.data, np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("bgra", "u1", 4)]))
    assert len(points) == 18 * 25
    k = NYU_KINECT.scaled(70, 98)
    v, u = 68, 96  # the last grid pixel
    np.testing.assert_allclose([points["x"][-1], points["y"][-1], points["z"][-1]],
                               [(u - k.cx) * z[v, u] / k.fx, (v - k.cy) * z[v, u] / k.fy, z[v, u]], rtol=1e-5)
    jpeg = viewer.decoder(TOPICS["depth_colour"]).FromString(by_topic[TOPICS["depth_colour"]][0])
    assert jpeg.format == "jpeg" and cv2.imdecode(np.frombuffer(jpeg.data, np.uint8), 1).shape == (70, 98, 3)
    latency = json.loads(by_topic[TOPICS["latency"]][-1])
    assert latency["total_ms"] > 0 and latency["encoder_ms"] > 0 and "RANDOM WEIGHTS" in latency["warning"]
    assert latency["keyframe"] is True and latency["age_frames"] == 0  # --no-async, every frame: the depth is fresh
    assert latency["carry"] == "network" and latency["inliers"] == 0  # how it got here: the network itself
    calibration = viewer.decoder(TOPICS["calibration"]).FromString(by_topic[TOPICS["calibration"]][0])
    assert calibration.K[0] == pytest.approx(k.fx)
    viewer.close()

    data = record.read_bytes()  # the recording: a whole MCAP file (magic at both ends) with the same channels
    assert data[:8] == b"\x89MCAP0\r\n" and data[-8:] == b"\x89MCAP0\r\n"
    assert all(topic.encode() in data for topic in TOPICS.values())
    assert not list(tmp_path.glob(".run*"))


@pytest.mark.alone
def test_a_stalled_or_vanished_viewer_never_holds_the_loop():
    """480x640 with every pixel in the cloud (~6 MB a frame): a client that subscribes and never reads would
    fill any socket buffer within a frame or two if the server waited for it."""
    sink = FoxgloveSink(("127.0.0.1", 0), cloud_stride=1)
    stalled, vanished = LoopbackViewer(sink.port), LoopbackViewer(sink.port)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 8.0, (480, 640)).astype(np.float32)
    write_seconds = []
    try:
        for i in range(40):
            if i == 10:
                vanished.ws.socket.close()  # gone without a goodbye
            start = time.perf_counter()
            sink.write(Frame(rgb, i, f"{i:06d}", i / 30), depth, None, None)
            write_seconds.append(time.perf_counter() - start)
            time.sleep(1 / 30)  # a 30 FPS loop
        start = time.perf_counter()
        sink.close()
        close_seconds = time.perf_counter() - start
    finally:
        sink.close()
        stalled.close()
    # the loop only leaves the frame in the mailbox; building and logging it takes ~20-40 ms at this size
    assert float(np.median(write_seconds)) < 0.002 and max(write_seconds) < 0.02
    assert close_seconds < 5.0  # the publisher was never stuck on a socket
    assert sink.published + sink.dropped == 40 and sink.published >= 5 and sink._error is None


class SlowPublisher(FoxgloveSink):
    """Stand-in for a publisher on a starved CPU: the colour-depth JPEG (the second channel of a frame) takes
    `pause` s, so a publish is in progress that long: the RGB JPEG is logged, the other five channels are not yet.
    (A real frame that slow would need gigabytes: 1080p with every pixel in the cloud takes 0.4 s here.)"""

    def __init__(self, *args, pause: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.pause, self.encoded, self.publishing = pause, 0, threading.Event()

    def _jpeg(self, bgr):
        self.encoded += 1
        if self.encoded == 2:
            self.publishing.set()
            time.sleep(self.pause)
        return super()._jpeg(bgr)


def test_close_during_a_slow_publish_leaves_a_whole_recording(tmp_path):
    mcap_reader = pytest.importorskip("mcap.reader")
    record = tmp_path / "run.mcap"
    # 11 s: longer than close() ever waited before handing the recording's close to no one (10 s)
    sink = SlowPublisher(None, record, cloud_stride=1, pause=11.0)
    rgb, depth = SyntheticScene(70, 98, frames=1).frame(0)
    sink.write(Frame(rgb, 0, "000000", 0.0), depth, None, None)
    assert sink.publishing.wait(10)
    sink.close()  # mid-publish
    assert sink.published == 1 and sink._error is None and sink._mailbox.join(0)  # its thread has ended
    with open(record, "rb") as f:  # whole: every record read in order, chunk CRCs checked, footer and magic
        messages = list(mcap_reader.NonSeekingReader(f, validate_crcs=True).iter_messages())
    with open(record, "rb") as f:
        summary = mcap_reader.make_reader(f).get_summary()
    assert summary is not None and summary.statistics.message_count == len(messages) == len(TOPICS)
    assert all(schema is not None and schema.data for schema, _, _ in messages)  # every message has its schema
    assert sorted(channel.topic for _, channel, _ in messages) == sorted(TOPICS.values())  # the whole frame
    points = next(m for _, c, m in messages if c.topic == TOPICS["points"])
    assert len(points.data) > 70 * 98 * 16  # every pixel's point (16 bytes each) made it in
    assert not list(tmp_path.glob(".run*"))
