"""The browser view under attack: what each attack of issue 37 costs the depth loop, against `live --serve` on the
synthetic scene, on loopback only (127.0.0.1; nothing leaves the machine).

    python -m smoothdino.benchmarks.web_attacks --seconds 8 [--fps 60] [--engines EXPORT] [--record]

One `live --serve 0 --out <out>/run --headless` run on the synthetic scene written as a --fps video and replayed
as a camera (`synthetic:` itself is not a camera: its metrics come only at the end). The attacks take turns against
its view, each for --seconds after a quiet phase as long, and each is compared with the quiet phase just before it
(other load on the machine drifts over minutes). Per phase, from the run's own metrics.csv (appended as frames
come): output frames a second, the network's passes a second (where the frame a depth came from changes) and the
frames the camera dropped (gaps in the frame numbers); from /proc: the run's CPU, its peak resident memory and open
descriptors, and the CPU of its view's server thread alone (what serving the attack cost it); the bytes it printed (a journal's flood); and what the attack itself got back (503s, 431s, closes).
Every attack is bounded in connections and time:

    idle_descriptors   1,000 connections that send a request head one byte every 2 s (slowloris), reopened when cut
    big_headers        150 connections each sending 98 header lines of 64 KB
    ack_flood          8 WebSocket pages sending acks as fast as they can, reconnecting when closed
    concurrent_loads   200 page loads at once (each must be answered within 20 s)
    resets             100 connections reset mid-request (RST), and a text frame of 60,000 `[`
    snapshot_flood     snapshot requests as fast as the view answers them

The attacker runs on the same machine here, where on a robot it would be elsewhere on the network: it runs at nice
19 so that the cores go to the run first, and the run's own CPU time is reported per phase (what serving the attack
cost it). An attack with a fixed count runs once, and its phase lasts --seconds all the same. `--surface foxglove`
attacks `live --foxglove 0` instead (behind edge/sinks/foxglove_gate.py): the same idle connections and big heads,
and 8 clients flooding messages while a legitimate viewer counts what it still gets. The run's descriptors are
limited to 1,024, a robot's usual limit. Results: <out>/web_attacks.json
and .md; --record writes benchmarks/results/web_attacks.json (web_attacks_<surface>.json for another surface) for the docs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from smoothdino.core.files import atomic_write_text

from .record import Record, Table, add_record_option, command_line, write_record
from .report import markdown_table
from .web_view import interrupt

HOST = "127.0.0.1"  # every attack stays on loopback


# -- the attacks (each returns what it got back; each bounded in connections and seconds) ---------------------

def _status(data: bytes) -> int | None:
    found = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(found.group(1)) if found else None


def raise_descriptor_limit(wanted: int) -> None:
    """This process's own soft limit on descriptors up to `wanted` (the attacker's, never the view's)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def get(port: int, path: str = "/", timeout: float = 20.0, head: bytes = b"") -> tuple[int | None, bytes]:
    """One GET on its own connection: (status, whole response)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode() + head + b"\r\n")
        data = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                data += chunk
    return _status(data), data


def idle_descriptors(port: int, seconds: float, count: int = 1000, every_s: float = 2.0) -> dict:
    """`count` connections that each send their request head one byte every `every_s` seconds, reopened when cut
    (at most once a second each); a page is asked for halfway through."""
    raise_descriptor_limit(count + 256)
    head = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Slow: {'a' * 200}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    slots: dict[int, dict] = {}
    got = {"connections": 0, "answered_503": 0, "cut": 0, "page_status_during": None}

    def open_slot(i: int) -> None:
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError, OSError):
            s.connect((HOST, port))
        slots[i] = {"sock": s, "sent": 0, "next": time.monotonic() + 0.05, "opened": time.monotonic()}
        sel.register(s, selectors.EVENT_READ, i)
        got["connections"] += 1

    def close_slot(i: int) -> None:
        slot = slots.pop(i)
        sel.unregister(slot["sock"])
        slot["sock"].close()

    end = time.monotonic() + seconds
    for i in range(count):
        open_slot(i)
    asked = False
    reopen: dict[int, float] = {}
    try:
        while time.monotonic() < end:
            for key, _ in sel.select(timeout=0.05):
                i, sock = key.data, key.fileobj
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if data and _status(data) == 503:
                    got["answered_503"] += 1
                elif not data:
                    got["cut"] += 1
                close_slot(i)
                reopen[i] = slots.get(i, {}).get("opened", time.monotonic()) + 1.0
            now = time.monotonic()
            for i, slot in list(slots.items()):
                if now >= slot["next"] and slot["sent"] < len(head) - 1:
                    with contextlib.suppress(OSError):
                        slot["sock"].send(head[slot["sent"]:slot["sent"] + 1])
                    slot["sent"] += 1
                    slot["next"] = now + every_s
            for i, at in list(reopen.items()):
                if now >= at:
                    del reopen[i]
                    open_slot(i)
            if not asked and now > end - seconds / 2:
                asked = True
                try:
                    got["page_status_during"] = get(port, timeout=5)[0]
                except OSError as err:
                    got["page_status_during"] = type(err).__name__
    finally:
        for i in list(slots):
            close_slot(i)
        sel.close()
    return got


def big_headers(port: int, count: int = 150, lines: int = 98, line_bytes: int = 64 << 10,
                seconds: float = 20.0) -> dict:
    """`count` connections each sending a request head of `lines` header lines of `line_bytes` each, all at once."""
    raise_descriptor_limit(count + 256)
    got = {"connections": count, "statuses": {}, "bytes_sent_max": 0}
    line = b"X-Big: " + b"a" * (line_bytes - 9) + b"\r\n"
    lock = threading.Lock()

    def one() -> None:
        sent, status = 0, None
        try:
            with socket.create_connection((HOST, port), timeout=seconds) as s:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode())
                for _ in range(lines):
                    s.sendall(line)
                    sent += len(line)
                s.sendall(b"\r\n")
                status = _status(s.recv(4096))
        except OSError as err:
            status = type(err).__name__
        with lock:
            got["statuses"][str(status)] = got["statuses"].get(str(status), 0) + 1
            got["bytes_sent_max"] = max(got["bytes_sent_max"], sent)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds)
    return got


def ack_flood(port: int, seconds: float, clients: int = 8, query: str = "") -> dict:
    """`clients` WebSocket pages sending {"ack": 1} as fast as they can, reconnecting (after 0.1 s) when closed."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    import logging

    logging.getLogger("websockets.client").setLevel(logging.CRITICAL)  # the attacker's own log: its closes expected
    got = {"clients": clients, "messages": 0, "closed": 0, "closed_1008": 0, "connections": 0, "refused": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def one() -> None:
        while time.monotonic() < end:
            try:
                with connect(f"ws://{HOST}:{port}/ws{query}", open_timeout=5, close_timeout=1) as ws:
                    with lock:
                        got["connections"] += 1
                    sent = 0
                    try:
                        while time.monotonic() < end:
                            ws.send('{"ack": 1}')
                            sent += 1
                    except (ConnectionClosed, OSError) as err:  # the view closed it (1008, or reset at once)
                        rcvd = getattr(err, "rcvd", None)
                        with lock:
                            got["closed"] += 1
                            got["closed_1008"] += int(rcvd is not None and rcvd.code == 1008)
                    with lock:
                        got["messages"] += sent
            except (OSError, InvalidStatus, ConnectionClosed, TimeoutError):
                with lock:
                    got["refused"] += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 10)
    return got


def concurrent_loads(port: int, count: int = 200, timeout: float = 20.0, path: str = "/") -> dict:
    """`count` page loads started at once on as many connections; how many were answered 200, and how late."""
    raise_descriptor_limit(count + 256)
    sel = selectors.DefaultSelector()
    start = time.monotonic()
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    state = {}
    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError, OSError):
            s.connect((HOST, port))
        state[s] = {"data": b"", "sent": False}
        sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)
    done: dict[str, int] = {}
    latest = 0.0
    while state and time.monotonic() - start < timeout:
        for key, events in sel.select(timeout=0.1):
            s, entry = key.fileobj, state[key.fileobj]
            if events & selectors.EVENT_WRITE and not entry["sent"]:
                try:
                    s.send(request)
                except OSError:
                    continue
                entry["sent"] = True
                sel.modify(s, selectors.EVENT_READ)
                continue
            if events & selectors.EVENT_READ:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    chunk = b""
                if chunk:
                    entry["data"] += chunk
                    continue
                status = str(_status(entry["data"]))
                done[status] = done.get(status, 0) + 1
                latest = time.monotonic() - start
                sel.unregister(s)
                s.close()
                del state[s]
    for s in state:
        s.close()
    sel.close()
    return {"loads": count, "statuses": done, "unanswered": len(state), "last_answer_s": round(latest, 2)}


def _masked(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One client frame, as a browser would send it (or broken on purpose)."""
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_websocket(port: int, query: str = "", timeout: float = 5.0) -> socket.socket:
    """A WebSocket opened by hand (to send what no client library would); the 101's head read."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.sendall(f"GET /ws{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if _status(head) != 101:
        raise ConnectionError(f"not upgraded: {head[:60]!r}")
    return s


def close_code(s: socket.socket, timeout: float = 5.0) -> int | None:
    """Read server frames until its close frame: its code (None when the connection ends without one)."""
    s.settimeout(timeout)
    buffer = b""
    with contextlib.suppress(OSError):
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 2:
                opcode, length, at = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
                if length == 126:
                    if len(buffer) < 4:
                        break
                    length, at = struct.unpack_from("!H", buffer, 2)[0], 4
                elif length == 127:
                    if len(buffer) < 10:
                        break
                    length, at = struct.unpack_from("!Q", buffer, 2)[0], 10
                if len(buffer) < at + length:
                    break
                payload, buffer = buffer[at:at + length], buffer[at + length:]
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


def resets(port: int, count: int = 100, query: str = "") -> dict:
    """`count` connections reset (RST) mid-request and mid-WebSocket, then a text frame of 60,000 `[`."""
    for i in range(count):
        with contextlib.suppress(OSError):
            s = raw_websocket(port, query) if i % 2 else socket.create_connection((HOST, port), timeout=5)
            if not i % 2:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode())  # half a head
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # an RST, not a FIN
    code = None
    with contextlib.suppress(OSError):
        s = raw_websocket(port, query)
        s.sendall(_masked(0x1, b"[" * 60000))
        code = close_code(s)
        s.close()
    return {"reset": count, "deep_text_close_code": code}


def snapshot_flood(port: int, seconds: float, query: str = "") -> dict:
    """POST /snapshot for the newest frame, as fast as the view answers, for `seconds`."""
    from websockets.sync.client import connect

    got: dict[str, int] = {}
    end = time.monotonic() + seconds
    with connect(f"ws://{HOST}:{port}/ws{query}", open_timeout=5, close_timeout=1) as ws:
        while time.monotonic() < end:
            message = ws.recv(timeout=5)
            seq = json.loads(message[4:4 + struct.unpack("!I", message[:4])[0]])["seq"]
            ws.send(json.dumps({"ack": seq}))
            with socket.create_connection((HOST, port), timeout=10) as s:
                s.sendall(f"POST /snapshot?seq={seq}{query.replace('?', '&')} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                          "Content-Length: 0\r\n\r\n".encode())
                data = b""
                with contextlib.suppress(OSError):
                    while chunk := s.recv(65536):
                        data += chunk
            status = str(_status(data))
            got[status] = got.get(status, 0) + 1
    return {"statuses": got}


# -- the run under attack ------------------------------------------------------------------------------------

class LiveRun:
    """`smoothdino live --serve 0` on a synthetic source, its output drained, its figures read from its files."""

    def __init__(self, engines: Path, folder: Path, video: Path, threads: int, surface: str = "serve"):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.out = folder / "out"
        self.thread_name = SURFACES[surface][2]
        smoothdino = Path(sys.executable).with_name("smoothdino")
        self.process = subprocess.Popen(
            [str(smoothdino), "live", "--source", str(video), "--engines", str(engines),
             "--headless", *SURFACES[surface][0], "--out", "out", "--threads", str(threads)],
            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))  # a robot's usual limit
        self.printed = 0
        self.lines: list[bytes] = []
        self.port: int | None = None
        seen = threading.Event()

        def drain() -> None:
            for line in self.process.stdout:
                self.printed += len(line)
                self.lines.append(line)
                found = re.search(SURFACES[surface][1], line)
                if found:
                    self.port = int(found.group(1))
                    seen.set()
            seen.set()

        threading.Thread(target=drain, daemon=True).start()
        try:
            if not seen.wait(180) or self.port is None:
                raise SystemExit("live did not start serving:\n" + b"".join(self.lines).decode(errors="replace"))
            self.wait_rows(30)
        except BaseException:
            self.stop()
            raise

    def rows(self) -> list[dict]:
        path = self.out / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("frame")]

    def wait_rows(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.rows()) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("live wrote no frames:\n" + b"".join(self.lines).decode(errors="replace"))
            time.sleep(0.2)

    def cpu_s(self) -> float:
        """The run's CPU time so far (user + system, every thread), in seconds."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def view_cpu_s(self) -> float:
        """CPU time of the view's server thread (named by edge/web/server.py), in seconds."""
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            try:
                if (task / "comm").read_text().strip() == self.thread_name:
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                continue
        return float("nan")

    def proc(self) -> dict:
        """Resident memory (MB) and open descriptors now."""
        pid = self.process.pid
        try:
            rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, AttributeError):
            return {"rss_mb": None, "fds": None}
        return {"rss_mb": rss, "fds": fds}

    def stop(self) -> None:
        interrupt(self.process)


def phase(run: LiveRun, name: str, attack) -> dict:
    """The loop's figures while `attack()` runs (and what it returned), memory and descriptors sampled meanwhile."""
    peak = {"rss_mb": 0.0, "fds": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = run.proc()
            for key in peak:
                if now[key] is not None:
                    peak[key] = max(peak[key], now[key])
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    before_rows, before_printed, before_lines = run.rows(), run.printed, len(run.lines)
    cpu, view_cpu, start = run.cpu_s(), run.view_cpu_s(), time.monotonic()
    sampler.start()
    got = attack()
    elapsed = time.monotonic() - start
    cpu = (run.cpu_s() - cpu) / elapsed
    view_cpu = (run.view_cpu_s() - view_cpu) / elapsed
    stop.set()
    sampler.join()
    rows = run.rows()[len(before_rows):]
    numbers = [int(r["frame"]) for r in rows if r["frame"].isdigit()]
    gaps = sum(b - a - 1 for a, b in zip(numbers, numbers[1:]) if b > a + 1)
    # a network pass reached the output where the frame its depth came from (frame - age) changes (view.rates)
    keys = [int(r["frame"]) - int(r["age_frames"]) for r in rows if r["frame"].isdigit() and r.get("age_frames")]
    passes = sum(1 for a, b in zip(keys, keys[1:]) if b != a)
    return {"phase": name, "seconds": round(elapsed, 2), "fps": len(rows) / elapsed, "passes_per_s": passes / elapsed,
            "dropped": gaps, "cpu_percent": 100 * cpu, "view_cpu_percent": 100 * view_cpu, "rss_mb_peak": peak["rss_mb"], "fds_peak": peak["fds"],
            "printed_bytes": run.printed - before_printed,
            "printed": b"".join(run.lines[before_lines:]).decode(errors="replace")[:400], "alive": run.process.poll() is None, "attack": got}


def quiet(seconds: float):
    return lambda: (time.sleep(seconds), {})[1]


def padded(attack, seconds: float):
    """A fixed-count attack once, then the rest of the phase's `seconds` to see what it left behind."""
    def run() -> dict:
        end = time.monotonic() + seconds
        got = attack()
        time.sleep(max(0.0, end - time.monotonic()))
        return got
    return run


def attacks(port: int, seconds: float) -> list[tuple[str, object]]:
    return [
        ("idle descriptors (1,000 slowloris)", lambda: idle_descriptors(port, seconds)),
        ("big headers (150 x 98 x 64 KB)", padded(lambda: big_headers(port), seconds)),
        ("ack flood (8 pages)", lambda: ack_flood(port, seconds)),
        ("200 concurrent loads", padded(lambda: concurrent_loads(port), seconds)),
        ("resets + deep JSON", padded(lambda: resets(port), seconds)),
        ("snapshot flood", lambda: snapshot_flood(port, seconds)),
    ]


def foxglove_flood(port: int, seconds: float, clients: int = 8) -> dict:
    """`clients` Foxglove clients sending unsubscribes as fast as they can, reconnecting (after 0.1 s) when closed,
    while one legitimate viewer subscribed to every channel counts the messages it still gets."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    from .robotics_overhead import LoopbackViewer

    got = {"clients": clients, "messages": 0, "closed_1008": 0, "refused": 0, "viewer_messages": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds
    viewer = LoopbackViewer(port, wait=10)

    def one() -> None:
        while time.monotonic() < end:
            try:
                with connect(f"ws://{HOST}:{port}", subprotocols=["foxglove.sdk.v1"], open_timeout=5,
                             close_timeout=1, max_size=None) as ws:
                    sent = 0
                    try:
                        while time.monotonic() < end:
                            ws.send('{"op":"unsubscribe","subscriptionIds":[1]}')
                            sent += 1
                    except (ConnectionClosed, OSError) as err:
                        rcvd = getattr(err, "rcvd", None)
                        with lock:
                            got["closed_1008"] += int(rcvd is not None and rcvd.code == 1008)
                    with lock:
                        got["messages"] += sent
            except (OSError, InvalidStatus, ConnectionClosed, TimeoutError):
                with lock:
                    got["refused"] += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    got["viewer_messages"] = len(viewer.receive(until=end))
    for t in threads:
        t.join(timeout=seconds + 10)
    viewer.close()
    return got


def foxglove_attacks(port: int, seconds: float) -> list[tuple[str, object]]:
    return [
        ("foxglove: idle descriptors (1,000 slowloris)", lambda: idle_descriptors(port, seconds)),
        ("foxglove: big headers (150 x 98 x 64 KB)", padded(lambda: big_headers(port), seconds)),
        ("foxglove: message flood (8 clients) + 1 viewer", lambda: foxglove_flood(port, seconds)),
    ]


# surface -> (live's options, the line that names its port, the serving thread's name, the attacks)
SURFACES = {
    "serve": (["--serve", "0", "--snapshots", "snaps"], rb"browser view -> http://[^:]+:(\d+)/", "smoothdino-view",
              attacks),
    "foxglove": (["--foxglove", "0"], rb"Foxglove -> open connection ws://[^:]+:(\d+)", "smoothdino-fox",
                 foxglove_attacks),
}


def synthetic_video(path: Path, size: tuple[int, int], fps: float, seconds: float) -> Path:
    """The synthetic scene, back and forth, as an MP4 of `seconds` at `fps` (the camera the run replays)."""
    import cv2
    from smoothdino.edge.sources.synthetic import SyntheticScene

    height, width = size
    scene = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) for rgb, _ in SyntheticScene(height, width, frames=40,
                                                                              velocity=(1.5, 0.75))]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(int(fps * seconds)):
        k = i % 78
        writer.write(scene[k if k < 40 else 78 - k])
    writer.release()
    return path


def export_for(size: str, folder: Path) -> Path:
    """A small export (random weights) when none is given: vits14 + temporal adapter, FP32, ONNX Runtime."""
    from smoothdino.core.images import parse_size
    from smoothdino.export import ExportSpec, export_model

    out = folder / f"export_{size}"
    if not (out / "manifest.json").is_file():
        export_model(ExportSpec(arch="vits14", adapter="temporal", size=parse_size(size, "--size"), precision="fp32",
                                backend="onnx", random_weights=True, calibration_frames=2), out)
    return out


def summary(result: dict) -> str:
    return json.dumps(result["attack"], separators=(",", ":"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=Path, help="an export folder (default: a small random-weights export made here)")
    ap.add_argument("--size", default="70x98", help="the synthetic frames (and the export made when none is given)")
    ap.add_argument("--fps", type=float, default=60.0, help="the replayed camera's frame rate")
    ap.add_argument("--seconds", type=float, default=8.0, help="how long each timed attack and quiet phase lasts")
    ap.add_argument("--threads", type=int, default=1, help="the network's threads (live --threads)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "smoothdino-web-attacks")
    ap.add_argument("--surface", choices=sorted(SURFACES), default="serve",
                    help="what is attacked: the browser view (live --serve) or the Foxglove server (live --foxglove)")
    add_record_option(ap, "web_attacks")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    engines = args.engines or export_for(args.size, args.out)
    from smoothdino.core.images import parse_size

    plan = SURFACES[args.surface][3]
    phases = plan(0, args.seconds)
    video = synthetic_video(args.out / "synthetic.mp4", parse_size(args.size, "--size"), args.fps,
                            len(phases) * (2 * args.seconds + 30) + 120)  # longer than every phase together
    shutil.rmtree(args.out / "run", ignore_errors=True)  # the last run's outputs and snapshots: this run's own
    run = LiveRun(engines, args.out / "run", video, args.threads, args.surface)
    os.nice(19)  # the attacker yields the cores to the run (on a robot it would be on another machine)
    results = []
    try:
        for name, attack in plan(run.port, args.seconds):
            # each attack against the quiet phase just before it: the machine's other load changes over minutes
            calm = phase(run, "quiet", quiet(args.seconds))
            results.append({**phase(run, name, attack), "quiet": calm})
            r = results[-1]
            print(f"{name}: {r['passes_per_s']:.2f} passes/s (quiet {calm['passes_per_s']:.2f}), {r['fps']:.1f} FPS "
                  f"(quiet {calm['fps']:.1f}), {r['dropped']} dropped (quiet {calm['dropped']}), live "
                  f"{r['cpu_percent']:.0f} % CPU (quiet {calm['cpu_percent']:.0f}), its view's thread "
                  f"{r['view_cpu_percent']:.1f} % (quiet {calm['view_cpu_percent']:.1f}), RSS {r['rss_mb_peak']:.0f} MB, "
                  f"{r['fds_peak']} fds; {summary(r)}", flush=True)
            time.sleep(1.0)  # what one attack left behind is gone before the next
    finally:
        run.stop()
    columns = ["attack", "passes/s quiet", "passes/s attacked", "x quiet", "FPS quiet", "FPS attacked",
               "dropped quiet", "dropped attacked", "live CPU % quiet", "live CPU % attacked",
               "view thread CPU % quiet", "view thread CPU % attacked", "peak RSS MB",
               "peak fds", "printed bytes", "the attack got"]
    rows = [[r["phase"], f"{r['quiet']['passes_per_s']:.2f}", f"{r['passes_per_s']:.2f}",
             f"{r['passes_per_s'] / (r['quiet']['passes_per_s'] or float('nan')):.2f}", f"{r['quiet']['fps']:.1f}",
             f"{r['fps']:.1f}", r["quiet"]["dropped"], r["dropped"], f"{r['quiet']['cpu_percent']:.0f}",
             f"{r['cpu_percent']:.0f}", f"{r['quiet']['view_cpu_percent']:.1f}", f"{r['view_cpu_percent']:.1f}",
             f"{r['rss_mb_peak']:.0f}", r["fds_peak"], r["printed_bytes"], summary(r)]
            for r in results]
    caption = (f"`live {SURFACES[args.surface][0][0]}` on the synthetic scene at {args.size}, replayed as a {args.fps:g} FPS camera, attacked "
               f"on loopback; {os.cpu_count()} CPUs shared by the run and the attacker")
    lines = [caption, "", *markdown_table(columns, rows)]
    print("\n".join(lines))
    out = {"surface": args.surface, "size": args.size, "fps": args.fps, "seconds": args.seconds, "phases": results}
    atomic_write_text(args.out / "web_attacks.json", json.dumps(out, indent=1))
    atomic_write_text(args.out / "web_attacks.md", "\n".join(lines) + "\n")
    if args.record:
        name = "web_attacks" if args.surface == "serve" else f"web_attacks_{args.surface}"  # a record per surface
        what = "the browser view" if args.surface == "serve" else f"the {args.surface} server"
        write_record(Record(name, f"What does each attack on {what} cost the depth loop?",
                            [Table(caption, columns, rows)],
                            notes=["The attacker shares the machine's cores with the run: on a robot it would be "
                                   "elsewhere on the network, so these figures overstate what it takes."]),
                     args.record, command_line(__spec__.name, argv))
    return out


if __name__ == "__main__":
    main()
