"""The browser view with several cameras (issue 39, item 4): one `WebView`, one `stream(source, camera=NAME)` per
camera, each written from its loop's thread (here three cameras from two threads, as the depth loops would). On
loopback only, against the real server (no mocks): a WebSocket client gets every camera's frames with the right
`camera` and its own depth (checked at pixels against the depth the loop wrote, a formula of the camera, the frame
and the pixel, decoded with OpenCV, not the view's own code), latest wins per camera (a camera that wrote once is
never pushed out by a fast one), the first-frame rule is per camera, what a page holds unacknowledged is bounded,
MJPEG takes `?camera=`, and the snapshot saves one set per camera within the same rate limit. In Chromium (Debian's
headless shell through Playwright, as tests/test_web_view.py): one tile per camera, the depth under the cursor in
the second tile, per-tile figures and stale marking, and the snapshot button."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from smoothdino.benchmarks.web_view import find_chromium, launch_chromium, wait_for
from smoothdino.edge.sources import Frame, SourceStats
from smoothdino.edge.web import WebView
from smoothdino.edge.web import viewers as web_viewers
from websockets.sync.client import connect

HOST = "127.0.0.1"
# name, (height, width), RGB colour of its frames; the depth is truth_mm(...) below
CAMERAS = {"front": ((70, 98), (200, 40, 40)), "back": ((56, 80), (40, 200, 40)), "wrist": ((70, 98), (40, 40, 200))}
NAMES = list(CAMERAS)
FPS = 20.0
CHROMIUM = find_chromium()


def truth_mm(camera: str, index: int) -> np.ndarray:
    """The depth the loop writes for `camera`'s frame `index`, in whole millimetres: different in every camera,
    pixel and frame (within 200 frames), so a value read back names where it came from."""
    (height, width), _ = CAMERAS[camera]
    y, x = np.mgrid[0:height, 0:width]
    return 500 + 1000 * NAMES.index(camera) + 20 * x + 10 * y + index % 200


def result(camera: str, index: int) -> SimpleNamespace:
    """What the loop's FrameResult says of the frame: a keyframe every 5th, its age, and a flicker of its own per
    camera (1 %, 2 %, 3 %) that the camera's tile must show."""
    age = index % 5
    return SimpleNamespace(keyframe=age == 0, age_frames=age, age_ms=50.0 * age, carry="network" if age == 0 else
                           "shift", inliers=None, fallback="", timings={"total": 0.01}, fused=age == 0,
                           flicker=(0.01 * (NAMES.index(camera) + 1), 0.05))


class Cameras:
    """The depth loops' side: each thread writes its cameras' frames in turn at FPS, timing every `write`. A camera
    can be paused (it stops writing, as an unplugged one would) or written only `limit` times."""

    def __init__(self, view: WebView, groups: list[list[str]], limit: dict[str, int] | None = None):
        self.view = view
        self.streams = {name: view.stream(SimpleNamespace(name=f"{name}.mp4", stats=SourceStats()), camera=name)
                        for group in groups for name in group}
        self.limit = limit or {}
        self.counts = {name: 0 for name in self.streams}
        self.paused: set[str] = set()
        self.slowest_write_s = 0.0
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(group,), daemon=True) for group in groups]
        for thread in self.threads:
            thread.start()

    def _run(self, names: list[str]) -> None:
        next_at = time.monotonic()
        while not self.stopped.is_set():
            next_at += 1.0 / FPS
            for name in names:
                if name in self.paused or self.counts[name] >= self.limit.get(name, 1 << 30):
                    continue
                index = self.counts[name]
                (height, width), colour = CAMERAS[name]
                rgb = np.empty((height, width, 3), np.uint8)
                rgb[:] = colour
                depth = (truth_mm(name, index) / 1000.0).astype(np.float32)
                start = time.perf_counter()
                self.view.write(self.streams[name], Frame(rgb, index, f"{index:06d}", index / FPS), depth,
                                result(name, index), None)
                self.slowest_write_s = max(self.slowest_write_s, time.perf_counter() - start)
                self.counts[name] += 1
            time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()


@pytest.fixture()
def view(tmp_path):
    with WebView((HOST, 0), snapshots=tmp_path / "snaps") as served:
        yield served


def _split(message: bytes) -> tuple[dict, bytes, bytes]:
    length = struct.unpack("!I", message[:4])[0]
    header = json.loads(message[4:4 + length])
    jpeg_at = 4 + length
    return (header, message[jpeg_at:jpeg_at + header["jpeg_bytes"]],
            message[jpeg_at + header["jpeg_bytes"]:jpeg_at + header["jpeg_bytes"] + header["depth_bytes"]])


def _page(port: int):
    return connect(f"ws://{HOST}:{port}/ws", open_timeout=5, close_timeout=1)


def _receive(page, seconds: float, ack: bool = True) -> list[tuple[dict, bytes, bytes]]:
    got, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            message = page.recv(timeout=max(0.01, end - time.monotonic()))
        except TimeoutError:
            break
        got.append(_split(message))
        if ack:
            page.send(json.dumps({"ack": got[-1][0]["seq"]}))
    return got


def _check_picture(camera: str, header: dict, jpeg: bytes) -> None:
    """The message's picture is this camera's: its size and, on the RGB half, its colour (JPEG: within 12)."""
    (height, width), colour = CAMERAS[camera]
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert (header["height"], header["width"]) == (height, width) and picture.shape[1] == 2 * width, header
    middle = picture[height // 2, width // 4][::-1].astype(int)  # BGR -> RGB
    assert np.abs(middle - colour).max() <= 12, (camera, middle, colour)


def _check_depth(camera: str, header: dict, png: bytes) -> None:
    """The depth PNG is the depth the loop wrote for that camera's frame, at every pixel (OpenCV decodes it)."""
    depth = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and np.array_equal(depth, truth_mm(camera, header["index"])), (camera, header)


@pytest.mark.alone
def test_every_camera_reaches_a_page_with_its_name_picture_and_depth(view):
    cameras = Cameras(view, [["front", "back"], ["wrist"]])  # three cameras, two loop threads
    try:
        with _page(view.port) as page:
            page.send(json.dumps({"depth": ["back"]}))  # the cursor on the second tile only
            got = _receive(page, 2.0)
            page.send(json.dumps({"depth": True}))
            time.sleep(0.2)
            got_all = _receive(page, 1.5)
    finally:
        cameras.stop()
    by_camera = {name: [m for m in got if m[0]["camera"] == name] for name in NAMES}
    assert {m[0]["camera"] for m in got} == set(NAMES)
    assert all(len(messages) >= 5 for messages in by_camera.values()), {k: len(v) for k, v in by_camera.items()}
    for name, messages in by_camera.items():
        for header, jpeg, png in messages:
            assert header["cameras"] == NAMES and header["source"] == f"{name}.mp4"
            _check_picture(name, header, jpeg)
            if name == "back" and header["depth_bytes"]:
                _check_depth(name, header, png)
        # only the camera asked for carries its depth (after the first frames, encoded before the page asked)
        assert any(h["depth_bytes"] for h, _, _ in messages) == (name == "back"), name
        indices = [h["index"] for h, _, _ in messages]
        assert indices == sorted(indices), (name, indices)  # never an older frame of a camera after a newer one
        last = messages[-1][0]  # its own figures: 20 frames/s, a keyframe every 5th, its flicker
        assert 10 <= last["fps"] <= 30 and 2 <= last["network_fps"] <= 6, last
        assert last["flicker"] == pytest.approx(0.01 * (NAMES.index(name) + 1)) and last["age_frames"] == \
            last["index"] % 5, last
    seqs = [m[0]["seq"] for m in got]
    assert len(set(seqs)) == len(seqs)  # one numbering over every camera
    with_depth = [(h, png) for h, _, png in got_all if h["depth_bytes"]]
    assert {h["camera"] for h, _ in with_depth} == set(NAMES)
    for header, png in with_depth:
        _check_depth(header["camera"], header, png)
    assert cameras.slowest_write_s < 0.02, cameras.slowest_write_s  # the loops never pay


def test_latest_wins_per_camera_and_the_first_frame_rule_is_per_camera(view):
    """A camera that wrote one frame 1.5 s ago (then stalled) is neither pushed out by the others' frames nor holds
    them back: the page gets the live cameras at once, and the stalled one's frame a second later, with its age."""
    cameras = Cameras(view, [["front", "back"], ["wrist"]], limit={"wrist": 1})
    try:
        time.sleep(1.6)
        assert cameras.counts["wrist"] == 1 and cameras.counts["front"] > 20
        with _page(view.port) as page:
            start = time.monotonic()
            got, arrived = [], {}
            while "wrist" not in arrived and time.monotonic() - start < 5:
                message = _split(page.recv(timeout=5))
                got.append(message)
                arrived.setdefault(message[0]["camera"], time.monotonic() - start)
                page.send(json.dumps({"ack": message[0]["seq"]}))
    finally:
        cameras.stop()
    assert arrived["front"] < 0.8 and arrived["back"] < 0.8, arrived  # not held back by the stalled camera
    wrist = [h for h, _, _ in got if h["camera"] == "wrist"]
    assert len(wrist) == 1 and wrist[0]["index"] == 0 and wrist[0]["stale_s"] >= 1.5, wrist
    assert 0.9 <= arrived["wrist"] < 2.0, arrived  # held back a second for a newer frame that never came
    assert all("stale_s" not in h for h, _, _ in got if h["camera"] != "wrist")


def test_what_a_page_holds_unacknowledged_is_bounded_whatever_the_cameras_send(view):
    cameras = Cameras(view, [["front", "back"], ["wrist"]])
    try:
        with _page(view.port) as page:
            got = _receive(page, 1.5, ack=False)  # a page that never acknowledges
            assert len(got) == web_viewers.IN_FLIGHT + len(NAMES) - 1, len(got)
            page.send(json.dumps({"ack": got[0][0]["seq"]}))  # one ack: one more message, no more
            assert len(_receive(page, 0.7, ack=False)) == 1
    finally:
        cameras.stop()


def _mjpeg(port: int, query: str, count: int = 2) -> tuple[bytes, list[bytes]]:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(f"GET /stream.mjpg{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        data = b""
        while data.count(b"\xff\xd9") < count and not data.startswith(b"HTTP/1.1 404"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    jpegs = [part[part.index(b"\xff\xd8"):part.rindex(b"\xff\xd9") + 2]
             for part in body.split(b"--smoothdino-frame")[1:] if b"\xff\xd9" in part]
    return head, jpegs


def test_mjpeg_serves_the_camera_asked_for_else_the_first(view):
    cameras = Cameras(view, [["front", "back"], ["wrist"]])
    try:
        for query, camera in (("?camera=back", "back"), ("", "front"), ("?camera=wrist", "wrist")):
            head, jpegs = _mjpeg(view.port, query)
            assert head.startswith(b"HTTP/1.1 200") and len(jpegs) >= 2, (query, head)
            for jpeg in jpegs:
                _check_picture(camera, {"height": CAMERAS[camera][0][0], "width": CAMERAS[camera][0][1]}, jpeg)
        head, _ = _mjpeg(view.port, "?camera=nope")
        assert head.startswith(b"HTTP/1.1 404"), head
    finally:
        cameras.stop()


def _post(port: int, path: str) -> tuple[int, dict]:
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: 0\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), (json.loads(body) if body.startswith(b"{") else {"text": body.decode()})


SNAPSHOT_NAME = re.compile(r"\d{8}-\d{6}-(?P<camera>\w+)-(?P<frame>\d{6})_(?P<kind>rgb|depth_mm|depth_color)\.png")


def _check_snapshot(folder: Path, saved: list[str]) -> dict[str, int]:
    """The saved files: three per camera, named with the camera; each depth_mm is that camera's frame's depth."""
    files = [SNAPSHOT_NAME.fullmatch(Path(p).name) for p in saved]
    assert all(files) and all(p.startswith(f"{folder.name}/") for p in saved), saved
    per_camera = {name: sorted(f["kind"] for f in files if f["camera"] == name) for name in NAMES}
    assert per_camera == {name: ["depth_color", "depth_mm", "rgb"] for name in NAMES}, saved
    frames = {}
    for path, found in zip(saved, files):
        if found["kind"] == "depth_mm":
            index = int(found["frame"])
            depth = cv2.imread(str(folder.parent / path), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(depth, truth_mm(found["camera"], index)), path
            frames[found["camera"]] = index
    return frames


def test_the_snapshot_saves_one_set_per_camera_within_the_same_rate_limit(view, tmp_path):
    cameras = Cameras(view, [["front", "back"], ["wrist"]])
    try:
        with _page(view.port) as page:
            shown: dict[str, int] = {}
            for header, _, _ in _receive(page, 1.0):
                shown[header["camera"]] = header["seq"]  # the frame each tile shows
        query = "&".join(f"seq={shown[name]}" for name in NAMES)
        answers = [_post(view.port, f"/snapshot?{query}") for _ in range(4)]
        too_many = _post(view.port, f"/snapshot?{query}&seq={shown['front']}")
    finally:
        cameras.stop()
    assert [status for status, _ in answers] == [200, 200, 200, 429], answers  # one request, one snapshot
    frames = _check_snapshot(tmp_path / "snaps", answers[0][1]["saved"])
    assert set(frames) == set(NAMES)
    assert too_many[0] == 400  # more frames than cameras


# -- in Chromium ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium: `make test` installs Debian's chromium-headless-shell (as root, with apt-get)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with playwright_api.sync_playwright() as p:
        chromium = launch_chromium(p, CHROMIUM)
        yield chromium
        chromium.close()


TILES_SHOWN = """(() => { const v = window.smoothdinoView;
    return v && v.multi && v.tiles.size === 3 && [...v.tiles.values()].every((t) => t.shown) &&
        document.querySelectorAll('#tiles .tile [data-tile-stat=fps]').length === 3; })()"""

# where pixel (x, y) of a tile's depth is on the screen, from its canvas' size now
TILE_PIXEL = """([camera, x, y]) => { const t = smoothdinoView.tiles.get(camera), r = t.canvas.getBoundingClientRect();
    const column = x + t.shown.header.width;
    return [r.left + (column + 0.5) * r.width / t.canvas.width, r.top + (y + 0.5) * r.height / t.canvas.height]; }"""

READOUT = """(() => { const d = document.getElementById('readout').dataset;
    return +d.depthMm > 0 && {camera: d.camera, frame: d.frame, x: +d.x, y: +d.y, mm: +d.depthMm,
        depth: document.getElementById('readout-depth').textContent}; })()"""


def test_the_page_shows_a_tile_per_camera_with_depth_under_the_cursor_in_each(browser, view, tmp_path):
    cameras = Cameras(view, [["front", "back"], ["wrist"]])
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        assert page.goto(view.url).status == 200
        wait_for(page, TILES_SHOWN, timeout=30)
        tiles = page.eval_on_selector_all("#tiles .tile", "(ts) => ts.map((t) => t.dataset.camera)")
        names = page.eval_on_selector_all("#tiles .tile-name", "(ns) => ns.map((n) => n.textContent)")
        assert tiles == NAMES and names == NAMES and page.is_hidden("#view")
        for i, name in enumerate(NAMES):  # each tile's own figures
            stat = lambda what: page.inner_text(f".tile[data-camera={name}] [data-tile-stat={what}]")  # noqa: E731
            assert re.fullmatch(r"\d+\.\d FPS", stat("fps")) and re.fullmatch(r"\d\.\d\d passes/s", stat("network"))
            assert re.fullmatch(r"age: (keyframe|\d fr, \d+ ms)", stat("age")) and stat("fusion") in ("fused",
                                                                                                   "not fused")
            assert stat("flicker") == f"flicker {i + 1}.0 %", (name, stat("flicker"))
            assert page.inner_text(f".tile[data-camera={name}] .tile-status") == "live"
        # the depth under the cursor, in the second tile (another size than the first), and then the third
        for camera, (x, y) in (("back", (30, 20)), ("wrist", (60, 40))):
            page.mouse.move(*page.evaluate(TILE_PIXEL, [camera, x, y]))
            shown = wait_for(page, f"(() => {{ const r = {READOUT.strip()}; "
                                   f"return r && r.camera === '{camera}' && r; }})()")
            assert (shown["x"], shown["y"]) == (x, y), shown
            assert shown["mm"] == truth_mm(camera, int(shown["frame"]))[y, x], shown
            assert shown["depth"] == f"{shown['mm'] / 1000:.3f} m"
            assert page.inner_text("#readout-camera") == camera
            assert view.server.depth_wanted_for(camera) and not view.server.depth_wanted_for("front")
            assert page.inner_text("[data-stat=camera]").startswith(f"{camera} ({camera}.mp4, ")  # the panel
        # a click pins the point: its distance over time, one value a frame of that camera
        page.mouse.click(*page.evaluate(TILE_PIXEL, ["back", 30, 20]))
        wait_for(page, "smoothdinoView.pins.length === 1 && smoothdinoView.pins[0].camera === 'back' && "
                       "smoothdinoView.pins[0].series.filter((v) => v !== null).length >= 5", timeout=20)
        assert page.inner_text("#pin-list li").startswith("back (30, 20) ")
        # the snapshot button: every tile's frame, three files a camera, named with the camera
        page.click("#snapshot")
        saved = wait_for(page, "document.getElementById('snapshot-result').dataset.saved", timeout=20).split("\n")
        assert _check_snapshot(tmp_path / "snaps", saved).keys() == set(NAMES)
        assert "3 cameras" in page.inner_text("#snapshot-result")
        # a camera that stops sending: its tile says so, the others stay live
        cameras.paused.add("wrist")
        wait_for(page, "document.querySelector('.tile[data-camera=wrist] .tile-status').dataset.state === 'stale'",
                 timeout=10)
        assert "no new frame" in page.inner_text(".tile[data-camera=wrist] .tile-status")
        assert [page.inner_text(f".tile[data-camera={n}] .tile-status") for n in ("front", "back")] == ["live"] * 2
        assert page.inner_text("#status") == "live"
        cameras.paused.discard("wrist")
        wait_for(page, "document.querySelector('.tile[data-camera=wrist] .tile-status').dataset.state === 'live'",
                 timeout=10)
    finally:
        page.close()
        cameras.stop()
