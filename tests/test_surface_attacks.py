"""The other network surfaces under attack (issue 37, item 7), each on loopback, bounded in connections and seconds:
the Foxglove server (`--foxglove`, behind edge/sinks/foxglove_gate.py) and live ROS 2 (`--ros2 zenoh|dds`). A
thread plays the depth loop (70x98 frames at 30 FPS into the sink, each write timed) and a legitimate viewer keeps
watching; each test checks the bound holds, the viewer still gets frames and the loop's rate holds. The same attacks
against a real `live`, with the network's passes a second, are in benchmarks/web_attacks.py."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from smoothdino.benchmarks import web_attacks as attacks
from smoothdino.cli import app
from smoothdino.edge.sources import Frame
from typer.testing import CliRunner

pytest.importorskip("foxglove")
pytest.importorskip("websockets")
from smoothdino.benchmarks.robotics_overhead import LoopbackViewer  # noqa: E402
from smoothdino.edge.sinks import foxglove_gate as gate_module  # noqa: E402
from smoothdino.edge.sinks.foxglove import FoxgloveSink  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

HOST = "127.0.0.1"
FPS = 30.0


class PlayedLoop:
    """The depth loop's side: a thread writing a 70x98 frame to a sink every 1/FPS s, timing each write."""

    def __init__(self, sink):
        self.sink = sink
        self.writes: list[tuple[float, float]] = []  # (when, how long)
        self.stopped = threading.Event()
        rng = np.random.default_rng(1)
        self.rgb = rng.integers(0, 255, (70, 98, 3), dtype=np.uint8)
        self.depth = rng.uniform(0.5, 5.0, (70, 98)).astype(np.float32)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        index, next_at = 0, time.monotonic()
        while not self.stopped.is_set():
            next_at += 1.0 / FPS
            start = time.perf_counter()
            self.sink.write(Frame(self.rgb, index, f"{index:06d}", index / FPS), self.depth, None, None)
            self.writes.append((time.monotonic(), time.perf_counter() - start))
            index += 1
            time.sleep(max(0.0, next_at - time.monotonic()))

    def figures(self, since: float) -> tuple[float, float]:
        """(writes a second, slowest write in ms) since `since`."""
        window = [(t, d) for t, d in self.writes if t >= since]
        span = max(time.monotonic() - since, 1e-6)
        return len(window) / span, max((d for _, d in window), default=0.0) * 1e3

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


# -- Foxglove ----------------------------------------------------------------------------------------------

CAP = 8


@pytest.fixture()
def foxglove():
    sink = FoxgloveSink((HOST, 0), gate_options={"max_connections": CAP, "head_deadline_s": 1.0, "ping_s": 1.0})
    loop = PlayedLoop(sink)
    viewer = LoopbackViewer(sink.port)  # a legitimate Foxglove client, subscribed to every channel, reading
    viewer.drain()
    yield SimpleNamespace(sink=sink, port=sink.port, gate=sink.gate, loop=loop, viewer=viewer)
    loop.stop()
    sink.close()
    viewer.close()


def _read_all(s: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def _still_watching(viewer: LoopbackViewer, seconds: float = 1.0) -> int:
    """Messages the legitimate viewer got in the next `seconds`."""
    before = viewer.received
    time.sleep(seconds)
    return viewer.received - before


def _foxglove_client(port: int, **options):
    return connect(f"ws://{HOST}:{port}", subprotocols=["foxglove.sdk.v1"], open_timeout=5, close_timeout=1,
                   max_size=None, **options)


def _close_code(ws) -> int | None:
    """Read until the server closes: its close code."""
    try:
        while True:
            ws.recv(timeout=5)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    except TimeoutError:
        return None


def test_the_foxglove_cap_answers_503_with_its_figure_and_idle_connections_go_at_the_deadline(foxglove):
    shown = re.sub(r"[\s│]+", " ", CliRunner().invoke(app, ["live", "--help"], env={"COLUMNS": "200"}).output)
    assert (f"At most {gate_module.MAX_CONNECTIONS} connections at once (the next are answered 503), each handshake "
            f"within {gate_module.HEAD_DEADLINE_S:g} s, each client at most {gate_module.MESSAGES_PER_S:g} messages "
            "a second") in shown
    attacks.raise_descriptor_limit(600)
    start = time.monotonic()
    held = [socket.create_connection((HOST, foxglove.port), timeout=5) for _ in range(300)]  # never send a byte
    time.sleep(0.3)
    assert foxglove.gate.open <= CAP  # the viewer's one and the first idle ones; the rest answered at once
    refused = [_read_all(s) for s in held[CAP - 1:CAP + 20]]
    assert all(r.startswith(b"HTTP/1.1 503") and b"8 connections open" in r for r in refused), refused[0]
    assert _still_watching(foxglove.viewer) > 0  # the legitimate viewer never noticed
    for s in held[:CAP - 1]:  # the idle ones admitted are cut at the handshake's deadline (1 s here)
        s.settimeout(3)
        assert _read_all(s) == b""
    for s in held:
        s.close()
    assert time.monotonic() - start < 5
    assert foxglove.gate.counters.busy >= 300 - CAP and foxglove.gate.counters.slow_heads >= CAP - 1
    with _foxglove_client(foxglove.port) as ws:  # room again: a new viewer is served
        assert json.loads(ws.recv(timeout=5))["op"] == "serverInfo"


def test_a_slow_handshake_is_cut_at_its_deadline_not_kept_alive_by_each_byte(foxglove):
    head = (f"GET / HTTP/1.1\r\nHost: {HOST}:{foxglove.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    with socket.create_connection((HOST, foxglove.port), timeout=5) as s:
        start, cut = time.monotonic(), None
        for i in range(len(head) - 1):  # one byte every 0.1 s: 16 s for the whole head
            try:
                s.sendall(head[i:i + 1])
            except OSError:
                cut = time.monotonic() - start
                break
            s.settimeout(0.1)
            try:
                if s.recv(1) == b"":
                    cut = time.monotonic() - start
                    break
            except socket.timeout:
                pass
    assert cut is not None and 0.9 <= cut <= 2.0, cut


def test_a_big_handshake_head_is_refused_and_never_held(foxglove):
    line = b"X-Big: " + b"a" * (64 << 10) + b"\r\n"
    rss_before = attacks_rss()
    statuses = []
    for _ in range(20):
        with socket.create_connection((HOST, foxglove.port), timeout=5) as s:
            try:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}:{foxglove.port}\r\n".encode() + line * 98 + b"\r\n")
                statuses.append(attacks._status(_read_all(s)))
            except OSError as err:  # closed while we were still sending: reset
                statuses.append(type(err).__name__)
    assert set(statuses) <= {431, "ConnectionResetError", "BrokenPipeError"}, statuses
    assert foxglove.gate.counters.big_heads == 20
    assert attacks_rss() - rss_before < 50  # MB: 20 x 6 MB heads were never held
    assert _still_watching(foxglove.viewer) > 0


def attacks_rss() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


@pytest.mark.alone
def test_a_message_flood_closes_that_client_only_and_the_loop_never_pays(foxglove):
    time.sleep(0.5)
    quiet_rate, _ = foxglove.loop.figures(time.monotonic() - 0.5)
    since = time.monotonic()
    codes, sent = [], 0
    for _ in range(4):  # four clients flooding unsubscribes, one after another
        with _foxglove_client(foxglove.port) as ws:
            try:
                for _ in range(2000):
                    ws.send('{"op":"unsubscribe","subscriptionIds":[1]}')
                    sent += 1
            except ConnectionClosed:
                pass
            codes.append(_close_code(ws))
    watching = _still_watching(foxglove.viewer)
    rate, slowest_ms = foxglove.loop.figures(since)
    assert codes == [1008] * 4 and foxglove.gate.counters.flooded == 4
    assert watching > 0, "the legitimate viewer stopped getting frames"
    assert rate >= 0.9 * min(quiet_rate, FPS) and slowest_ms < 20, (rate, quiet_rate, slowest_ms)


def test_a_big_message_closes_that_client(foxglove):
    with _foxglove_client(foxglove.port) as ws:
        ws.send("x" * (gate_module.MAX_MESSAGE + 1))
        assert _close_code(ws) == 1009
    assert _still_watching(foxglove.viewer) > 0


def test_a_client_that_never_reads_is_closed_by_the_keepalive(foxglove):
    """Subscribes to every channel, then reads nothing: the gate holds one message for it, the SDK drops the rest,
    and the keepalive (1 s here) closes it."""
    stalled = LoopbackViewer(foxglove.port)
    stalled.ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    start = time.monotonic()
    while foxglove.gate.counters.relayed and time.monotonic() - start < 10:
        if foxglove.gate.open == 1:  # only the legitimate viewer is left
            break
        time.sleep(0.1)
    assert foxglove.gate.open == 1 and time.monotonic() - start < 8
    assert _still_watching(foxglove.viewer) > 0
    stalled.ws.socket.close()


def test_broken_handshakes_and_resets_print_nothing(foxglove, capfd):
    time.sleep(0.3)
    capfd.readouterr()
    with pytest.raises(InvalidStatus, match="400"):  # a subprotocol the SDK does not speak: refused by the SDK
        connect(f"ws://{HOST}:{foxglove.port}", subprotocols=["foxglove.websocket.v0"], open_timeout=5).close()
    for i in range(40):  # reset mid-head and mid-session
        s = socket.create_connection((HOST, foxglove.port), timeout=5)
        if i % 2:
            ws = _foxglove_client(foxglove.port)
            s.close()
            s = ws.socket
        else:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n".encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # an RST, not a FIN
    time.sleep(1.0)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out[-500:], err[-500:])  # the SDK alone printed a line per failed handshake
    assert _still_watching(foxglove.viewer) > 0


# -- ROS 2 over Zenoh --------------------------------------------------------------------------------------

def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.alone
def test_zenoh_caps_the_sessions_a_peer_opens_and_the_loop_never_pays(monkeypatch):
    """rmw_zenoh's session listens on loopback (tcp/localhost): peers on this machine connect to it. Zenoh's own
    max_sessions caps them (256 by default here, 4 for this test); the next is refused, the loop writes on."""
    zenoh = pytest.importorskip("zenoh")
    from smoothdino.benchmarks.ros2_loopback import free_port
    from smoothdino.edge.ros2 import Ros2Publisher
    from smoothdino.edge.ros2 import zenoh as zenoh_transport

    config = zenoh_transport.session_config("tcp/127.0.0.1:1")
    assert json.loads(config.get_json("transport/unicast/max_sessions")) == zenoh_transport.MAX_SESSIONS == 256
    assert json.loads(config.get_json("transport/link/rx/max_message_size")) == 16 << 20
    port = free_port()
    monkeypatch.setenv("ZENOH_CONFIG_OVERRIDE", f'listen/endpoints=["tcp/127.0.0.1:{port}"];'
                                                "transport/unicast/max_sessions=4")
    publisher = Ros2Publisher("zenoh", namespace="/attacked", connect="tcp/127.0.0.1:1", live=True)
    loop = PlayedLoop(publisher)
    sessions = []
    try:
        time.sleep(0.5)
        quiet_rate, _ = loop.figures(time.monotonic() - 0.5)
        since, refused = time.monotonic(), 0
        before = _fds()
        for _ in range(10):
            c = zenoh.Config()
            for key, value in (("mode", '"client"'), ("scouting/multicast/enabled", "false"),
                               ("connect/endpoints", json.dumps([f"tcp/127.0.0.1:{port}"])),
                               ("connect/timeout_ms", "1000")):  # a refused session waits this long
                c.insert_json5(key, value)
            try:
                sessions.append(zenoh.open(c))
            except zenoh.ZError:
                refused += 1
        held = _fds() - before  # both ends are in this process: the attacker's and the publisher's
        rate, slowest_ms = loop.figures(since)
        assert len(sessions) == 4 and refused == 6
        assert held < 4 * 8, held
        assert rate >= 0.9 * min(quiet_rate, FPS) and slowest_ms < 20, (rate, quiet_rate, slowest_ms)
        assert publisher.published > 0 and publisher.failed == 0
    finally:
        for s in sessions:
            s.close()
        loop.stop()
        publisher.close()


# -- ROS 2 over DDS ----------------------------------------------------------------------------------------

@pytest.mark.alone
def test_dds_garbage_on_its_ports_costs_the_loop_nothing_and_prints_nothing(capfd):
    """Cyclone DDS's ports take datagrams from anyone who can reach them: 20,000 datagrams of garbage and of broken
    RTPS (a valid header, nonsense after it) at every port of the domain are dropped by Cyclone's receive threads
    (C, no Python); the loop writes on, the publisher publishes, nothing is printed."""
    pytest.importorskip("cyclonedds")
    from smoothdino.benchmarks.ros2_loopback import cyclone_loopback
    from smoothdino.edge.ros2 import Ros2Publisher

    domain = 200 + os.getpid() % 30
    with cyclone_loopback():
        publisher = Ros2Publisher("dds", namespace="/attacked", domain=domain, live=True)
        loop = PlayedLoop(publisher)
        try:
            time.sleep(0.5)
            capfd.readouterr()
            quiet_rate, _ = loop.figures(time.monotonic() - 0.5)
            since, published = time.monotonic(), publisher.published
            base = 7400 + 250 * domain  # RTPS's port mapping: discovery and user traffic, participant indices 0-9
            ports = [base + offset + 2 * index for index in range(10) for offset in (0, 1, 10, 11)]
            rtps = b"RTPS\x02\x01\x01\x0f" + os.urandom(12)  # header: protocol, version, vendor, GUID prefix
            rng = np.random.default_rng(0)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(20_000):
                    body = rng.bytes(int(rng.integers(1, 1400)))
                    s.sendto(rtps + body if i % 2 else body, (HOST, ports[i % len(ports)]))
            time.sleep(0.5)
            rate, slowest_ms = loop.figures(since)
            out, err = capfd.readouterr()
            assert rate >= 0.9 * min(quiet_rate, FPS) and slowest_ms < 20, (rate, quiet_rate, slowest_ms)
            assert publisher.published > published and publisher.failed == 0
            assert out == "" and err == "", (out[-500:], err[-500:])
        finally:
            loop.stop()
            publisher.close()
