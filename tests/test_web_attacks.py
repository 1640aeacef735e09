"""The browser view under the attacks of issue 37, each on loopback, bounded in connections and seconds, against a
real server on 127.0.0.1 (no mocks): a view fed 70x98 frames at 30 FPS by a thread that plays the depth loop and
times its own `write` calls (the loop's figures: its rate and its slowest write). The same attacks against a real
`live --serve`, with the loop's passes a second, are benchmarks/web_attacks.py; one of them runs here against `live`
too (the last test). EMFILE on a write, produced for real in a child process with a lowered RLIMIT_NOFILE, ends a
run like a full disk."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from smoothdino.benchmarks import web_attacks as attacks
from smoothdino.cli import app
from smoothdino.core.errors import UserError
from smoothdino.edge.sources import Frame, SourceStats
from smoothdino.edge.web import WebView
from smoothdino.edge.web import server as web_server
from typer.testing import CliRunner
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

HOST = "127.0.0.1"
FPS = 30.0


class PlayedLoop:
    """The depth loop's side: a thread writing a 70x98 frame to the view every 1/FPS s, timing each write."""

    def __init__(self, view: WebView):
        self.view = view
        self.stream = view.stream(SimpleNamespace(name="synthetic_70x98", stats=SourceStats()))
        self.writes: list[tuple[float, float]] = []  # (when, how long)
        self.paused = threading.Event()
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
            if not self.paused.is_set():
                frame = Frame(self.rgb, index, f"{index:06d}", index / FPS)
                start = time.perf_counter()
                self.view.write(self.stream, frame, self.depth, None, None)
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


@pytest.fixture()
def served(tmp_path):
    view = WebView((HOST, 0), snapshots=tmp_path / "snaps", max_connections=16, head_deadline_s=1.0)
    loop = PlayedLoop(view)
    yield SimpleNamespace(view=view, port=view.port, loop=loop, server=view.server, snaps=tmp_path / "snaps")
    loop.stop()
    view.stop()


def _page(port: int):
    return connect(f"ws://{HOST}:{port}/ws", open_timeout=5, close_timeout=1)


def _header(message: bytes) -> dict:
    return json.loads(message[4:4 + struct.unpack("!I", message[:4])[0]])


def _read_all(s: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def test_the_connection_cap_answers_503_with_its_figure_and_frees_at_the_head_deadline(served):
    shown = re.sub(r"[\s│]+", " ", CliRunner().invoke(app, ["live", "--help"], env={"COLUMNS": "200"}).output)
    assert f"At most {web_server.MAX_CONNECTIONS} connections at once (the next are answered 503)" in shown
    start = time.monotonic()
    held = [socket.create_connection((HOST, served.port), timeout=5) for _ in range(16)]
    time.sleep(0.2)  # accepted: the cap is full of connections that never send a byte
    refused = []
    for _ in range(40):
        with socket.create_connection((HOST, served.port), timeout=5) as s:
            refused.append(_read_all(s))
    assert all(r.startswith(b"HTTP/1.1 503") and b"16 connections open" in r for r in refused), refused[0]
    assert served.server.open <= 16
    # the idle ones are cut at the head's deadline (1 s here), then pages load again
    for s in held:
        s.settimeout(3)
        assert _read_all(s) == b""
        s.close()
    assert time.monotonic() - start < 4
    assert attacks.get(served.port)[0] == 200
    assert served.server.counters.busy >= 40 and served.server.counters.slow_heads == 16


def test_a_slow_head_is_cut_at_its_deadline_not_kept_alive_by_each_byte(served):
    head = f"GET / HTTP/1.1\r\nHost: {HOST}:{served.port}\r\nX-Slow: {'a' * 50}\r\n\r\n".encode()
    with socket.create_connection((HOST, served.port), timeout=5) as s:
        start = time.monotonic()
        cut = None
        for i in range(len(head) - 1):  # one byte every 0.1 s: 7 s for the whole head
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
            except OSError:  # cut with a byte of ours still unread there: a reset, not an orderly close
                cut = time.monotonic() - start
                break
    assert cut is not None and 0.9 <= cut <= 2.0, cut


def test_a_big_head_is_refused_and_never_held(served):
    line = b"X-Big: " + b"a" * (64 << 10) + b"\r\n"
    statuses = []
    for _ in range(10):
        with socket.create_connection((HOST, served.port), timeout=5) as s:
            try:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}:{served.port}\r\n".encode() + line * 4 + b"\r\n")
                statuses.append(attacks._status(_read_all(s)))
            except OSError as err:  # closed while we were still sending: reset
                statuses.append(type(err).__name__)
    assert set(statuses) <= {431, 400, "ConnectionResetError", "BrokenPipeError"}, statuses
    assert served.server.counters.big_heads + statuses.count(400) >= 10
    assert attacks.get(served.port)[0] == 200


@pytest.mark.alone
def test_an_ack_flood_closes_that_page_only_and_the_loop_never_pays(served):
    time.sleep(0.5)
    quiet_rate, _ = served.loop.figures(time.monotonic() - 0.5)
    flood: dict = {}
    with _page(served.port) as calm:
        first = _header(calm.recv(timeout=5))
        calm.send(json.dumps({"ack": first["seq"]}))
        since = time.monotonic()
        flooding = threading.Thread(target=lambda: flood.update(attacks.ack_flood(served.port, 1.5, clients=4)))
        flooding.start()
        received = 0
        while flooding.is_alive() and time.monotonic() - since < 15:  # the calm page acks as a page does
            try:
                message = calm.recv(timeout=0.2)
            except TimeoutError:
                continue
            calm.send(json.dumps({"ack": _header(message)["seq"]}))
            received += 1
        flooding.join()
        rate, slowest_ms = served.loop.figures(since)
    assert served.server.counters.flooded_pages >= 4, (flood, served.server.counters.as_dict())  # each page closed
    assert received >= 20, f"the calm page got {received} frames while the others flooded"
    assert rate >= 0.9 * min(quiet_rate, FPS) and slowest_ms < 20, (rate, quiet_rate, slowest_ms)


def test_websocket_frames_are_checked_strictly(served):
    cases = {  # what the page may not send -> the close code it gets
        "unmasked": (attacks._masked(0x1, b'{"ack": 1}', masked=False), 1002),
        "reserved bit": (attacks._masked(0x1, b'{"ack": 1}', rsv=0x40), 1002),
        "reserved opcode": (attacks._masked(0x3, b"x"), 1002),
        "64 KiB ping": (attacks._masked(0x9, b"p" * (64 << 10)), 1009),
        "60,000 [": (attacks._masked(0x1, b"[" * 60000), 1009),
    }
    for name, (data, code) in cases.items():
        s = attacks.raw_websocket(served.port)
        s.sendall(data)
        assert attacks.close_code(s) == code, name
        s.close()
    with _page(served.port) as page:  # deep nesting within the size limit: ignored, the page stays
        page.send("[" * 200)
        page.send('{"depth": ' * 100)
        assert page.recv(timeout=5)
    with socket.create_connection((HOST, served.port), timeout=5) as s:  # a malformed key: no upgrade
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: {HOST}:{served.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: not-a-key\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert attacks._status(_read_all(s)) == 400


def test_a_request_body_is_never_read_as_a_second_request(served):
    smuggled = f"GET /static/app.js HTTP/1.1\r\nHost: {HOST}:{served.port}\r\n\r\n".encode()
    with socket.create_connection((HOST, served.port), timeout=5) as s:
        s.sendall(f"POST /snapshot?seq=1 HTTP/1.1\r\nHost: {HOST}:{served.port}\r\nContent-Length: {len(smuggled)}"
                  "\r\n\r\n".encode() + smuggled)
        data = _read_all(s)
    # a request with a body is closed unanswered: never a second answer, never the smuggled file
    assert data == b"", data[:200]
    with socket.create_connection((HOST, served.port), timeout=5) as s:  # nor bytes after a head
        s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}:{served.port}\r\n\r\n".encode() + smuggled)
        assert _read_all(s) == b""
    # every response is one whole write that closes its connection (nothing waits on Nagle's algorithm)
    with socket.create_connection((HOST, served.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        s.sendall(f"GET /static/style.css HTTP/1.1\r\nHost: {HOST}:{served.port}\r\n\r\n".encode())
        data = _read_all(s)
        took = time.monotonic() - start
    assert data.count(b"HTTP/1.1 200") == 1 and b"\r\nServer: smoothdino-view\r\n" in data and took < 0.04, took


def test_resets_and_broken_frames_print_nothing(served, capfd):
    with _page(served.port) as page:
        page.recv(timeout=5)  # the view's own notice (no camera calibration) comes with its first frame
    time.sleep(0.2)
    capfd.readouterr()
    got = attacks.resets(served.port, count=40)
    assert got["deep_text_close_code"] == 1009
    time.sleep(0.3)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out[-500:], err[-500:])
    assert attacks.get(served.port)[0] == 200


def test_snapshots_are_rate_limited_kept_within_a_budget_and_answered_without_the_folder(served):
    with _page(served.port) as page:
        seq = _header(page.recv(timeout=5))["seq"]
        page.send(json.dumps({"ack": seq}))

        def snapshot() -> tuple[int, dict]:
            with socket.create_connection((HOST, served.port), timeout=10) as s:
                s.sendall(f"POST /snapshot?seq={seq} HTTP/1.1\r\nHost: {HOST}:{served.port}\r\nContent-Length: 0"
                          "\r\n\r\n".encode())
                data = _read_all(s)
            return attacks._status(data), json.loads(data.split(b"\r\n\r\n", 1)[1])

        answers = [snapshot() for _ in range(6)]
    assert [status for status, _ in answers] == [200, 200, 200, 429, 429, 429], answers
    saved = answers[0][1]["saved"]
    assert all(p.startswith("snaps/") and str(served.snaps.parent) not in p for p in saved), saved
    assert {p.name for p in served.snaps.iterdir()} >= {Path(p).name for p in saved}
    served.server.snapshot_budget = served.server.snapshot_bytes  # the folder is now at its budget
    time.sleep(1.1)
    with _page(served.port) as page:
        seq = _header(page.recv(timeout=5))["seq"]
        status, body = snapshot()
    assert status == 507 and "budget" in body["error"], body


def test_two_hundred_page_loads_at_once_are_all_answered(tmp_path):
    with WebView((HOST, 0), snapshots=tmp_path / "snaps") as view:
        got = attacks.concurrent_loads(view.port, count=200, timeout=20)
    assert got["statuses"] == {"200": 200} and got["last_answer_s"] < 10, got


def test_a_first_frame_is_current_or_says_how_old_it_is(served):
    with _page(served.port) as page:
        header = _header(page.recv(timeout=5))
        assert "stale_s" not in header and time.time() * 1000 - header["written_ms"] < 1000
    served.loop.paused.set()  # the stream stops: the newest message gets old
    time.sleep(1.6)
    with _page(served.port) as page:
        start = time.monotonic()
        header = _header(page.recv(timeout=5))
        assert header["stale_s"] >= 1.5 and time.monotonic() - start >= 0.9, header  # a newer one was awaited
    served.loop.paused.clear()
    with _page(served.port) as page:  # the stream again: the first frame is a new one
        header = _header(page.recv(timeout=5))
        assert "stale_s" not in header and time.time() * 1000 - header["written_ms"] < 1000, header


def test_off_loopback_the_token_is_in_a_private_file_and_no_cookie_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOOTHDINO_HOME", str(tmp_path / "home"))
    with WebView(("0.0.0.0", 0), snapshots=tmp_path / "snaps") as view:
        token = view.server.access.token
        assert token not in view.announce and str(view.token_file) in view.announce
        assert view.token_file.read_text().strip().endswith(f"?token={token}")
        assert view.token_file.stat().st_mode & 0o777 == 0o600
        assert attacks.get(view.port)[0] == 403
        status, data = attacks.get(view.port, f"/?token={token}")
        assert status == 200 and b"Set-Cookie" not in data and b"\r\nServer: smoothdino-view\r\n" in data
        assert f'/static/app.js?token={token}"'.encode() in data  # the page's scripts carry it, no cookie does
        assert attacks.get(view.port, f"/static/app.js?token={token}")[0] == 200
        with pytest.raises(InvalidStatus, match="403"):
            connect(f"ws://{HOST}:{view.port}/ws?token=wrong", open_timeout=5)
    assert not view.token_file.exists()


# -- EMFILE on a write: a full disk's ending ------------------------------------------------------------------

EMFILE_CHILD = textwrap.dedent("""
    import os, resource, sys
    from pathlib import Path
    from smoothdino.core.files import DiskFull, atomic_write_bytes, SpaceReserve
    out = Path(sys.argv[1])
    reserve = SpaceReserve(out, 1 << 16)
    atomic_write_bytes(out / "before.png", b"kept")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))  # every descriptor the limit allows, as a flood would
    except OSError as err:
        print("exhausted:", err.errno, flush=True)
    try:
        atomic_write_bytes(out / "frame.png", b"x" * 100)
    except DiskFull as err:
        print("DiskFull:", err, flush=True)
        reserve.release()  # the loop's first step after a DiskFull: the spare descriptors come back
        atomic_write_bytes(out / "metrics.json", b"{}")
        print("metrics written", flush=True)
""")


def test_running_out_of_descriptors_on_a_write_ends_like_a_full_disk(tmp_path):
    result = subprocess.run([sys.executable, "-c", EMFILE_CHILD, str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0] == f"exhausted: {__import__('errno').EMFILE}"
    assert re.fullmatch(r"DiskFull: .*frame\.png: too many open files in this process; close what holds them "
                        r"\(connections to its servers\) or raise its limit \(ulimit -n\) \(files already written "
                        r"are kept\)", lines[1]), lines[1]
    assert lines[2] == "metrics written"
    assert (tmp_path / "before.png").read_bytes() == b"kept" and not (tmp_path / "frame.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_mjpeg_streams_jpegs_and_refuses_another_sites_page(served):
    with socket.create_connection((HOST, served.port), timeout=5) as s:
        s.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: {HOST}:{served.port}\r\n\r\n".encode())
        data = b""
        while data.count(b"\xff\xd9") < 3:  # three whole JPEGs
            data += s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=smoothdino-frame")
    assert data.count(b"--smoothdino-frame\r\nContent-Type: image/jpeg\r\n") >= 3
    status, _ = attacks.get(served.port, "/stream.mjpg", head=b"Origin: http://evil.example\r\n")
    assert status == 403


PROCESS_UNDER_EMFILE = textwrap.dedent("""
    import os, resource, sys, threading, time
    from pathlib import Path
    from smoothdino.cli import app
    sequence, engines, out = sys.argv[1:4]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # this child's own limit, as a robot's 1,024 would be
    held = []

    def flood():  # a flood of connections holding every descriptor, once some frames are written
        depth = Path(out) / Path(sequence).name / "depth"
        while len(list(depth.glob("*.png"))) < 8:
            time.sleep(0.01)
        said = False
        while True:  # and every one the run lets go of, as an accept loop does: again a second after EMFILE
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as err:
                if not said:
                    print(f"flood: {len(held)} descriptors held ({err.strerror})", file=sys.stderr, flush=True)
                    said = True
                time.sleep(1.0)

    threading.Thread(target=flood, daemon=True).start()
    app(["process", sequence, "--engines", engines, "--out", out, "--no-video", "--threads", "1"])
""")


def test_descriptors_running_out_during_process_end_it_like_a_full_disk_and_it_resumes(small_export, tmp_path):
    from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence

    sequence = write_sequence(tmp_path / "walk", SyntheticScene(70, 98, frames=40, velocity=(1.0, 0.5)))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", PROCESS_UNDER_EMFILE, str(sequence), str(small_export), str(out)],
                            capture_output=True, text=True, timeout=120)
    printed = result.stdout + result.stderr
    errors = [line for line in printed.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, printed[-3000:]
    assert "too many open files in this process" in errors[0] and "the same command resumes" in errors[0], errors
    assert "Traceback" not in printed
    folder = out / "walk"
    assert not [p for p in folder.rglob("*") if ".tmp" in p.name or ".smoothdino-reserve" in p.name]
    pngs = {p.name for p in (folder / "depth").glob("*.png")}
    assert (folder / "metrics.json").is_file(), printed[-3000:]
    metrics = json.loads((folder / "metrics.json").read_text())  # written: the reserve's spare descriptors
    assert {f"{row['frame']}.png" for row in metrics["frames"]} == pngs and 8 <= len(pngs) < 40
    # the descriptors back: the same command finishes the job
    done = CliRunner().invoke(app, ["process", str(sequence), "--engines", str(small_export), "--out", str(out),
                                    "--no-video", "--threads", "1"])
    assert done.exit_code == 0, done.output
    assert len(list((folder / "depth").glob("*.png"))) == 40
    assert len(json.loads((folder / "metrics.json").read_text())["frames"]) == 40


def test_a_token_file_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("a file where the folder should be")
    monkeypatch.setenv("SMOOTHDINO_HOME", str(tmp_path / "home"))
    with pytest.raises(UserError, match=r"--serve 0\.0\.0\.0:\d+: cannot write the view's token file .*SMOOTHDINO_HOME"):
        WebView(("0.0.0.0", 0), snapshots=tmp_path / "snaps")


def test_the_frame_message_carries_the_flicker_the_loop_measured(tmp_path):
    with WebView((HOST, 0), snapshots=tmp_path / "snaps") as view, _page(view.port) as page:
        loop = PlayedLoop(view)
        loop.paused.set()
        time.sleep(0.1)
        result = SimpleNamespace(keyframe=True, age_frames=0, age_ms=0.0, carry="network", inliers=0, fallback="",
                                 timings={"total": 0.01, "decoder": float("inf")}, flicker=(0.021, float("nan")),
                                 fused=True)
        view.write(loop.stream, Frame(loop.rgb, 0, "000000", 0.0), loop.depth, result, None)
        header = {}
        while "flicker" not in header:  # frames the loop wrote before it paused come first
            header = _header(page.recv(timeout=5))
            page.send(json.dumps({"ack": header["seq"]}))
        loop.stop()
    assert header["flicker"] == 0.021 and header["flicker_p90"] is None  # NaN is sent as null (valid JSON)
    assert header["fused"] is True
    assert header["stages_ms"]["decoder"] is None
