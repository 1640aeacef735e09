"""`live --serve` / `process --serve`: the browser view, driven in a real browser (Debian's headless Chromium through
Playwright, no browser download) against the real command on a recorded 70x98 video or sequence: the page loads
with every request on 127.0.0.1, the picture moves, the depth under the cursor is the one the run writes for that
frame, the snapshot button writes into the snapshots folder only, three pages leave the loop's rate alone, a browser
killed mid-stream leaves the loop running, and a view bound to another interface refuses requests without its token.
One `live` run serves the first checks in order (a module fixture); `process` gets its own."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from smoothdino.benchmarks.web_view import CHROMIUM_ARGS, find_chromium, interrupt, launch_chromium, wait_for
from smoothdino.cli import app
from smoothdino.core.errors import UserError
from smoothdino.edge.sources.intrinsics import NYU_KINECT
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence
from smoothdino.edge.web import Access, parse_serve, rates
from typer.testing import CliRunner

SMOOTHDINO = [str(Path(sys.executable).with_name("smoothdino"))]  # the console script, as a user runs it
START_TIMEOUT = 90.0  # seconds to load the export and start serving (2 shared cores)
CHROMIUM = find_chromium()
NO_CHROMIUM = "no Chromium: `make test` installs Debian's chromium-headless-shell (as root, with apt-get)"
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)

runner = CliRunner()


# -- the parts, without a browser ---------------------------------------------------------------------

def test_serve_binds_loopback_unless_told_and_refuses_bad_addresses(small_export, tmp_path):
    assert parse_serve("8080") == ("127.0.0.1", 8080)
    assert parse_serve("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_serve(None) is None
    assert Access.for_bind("127.0.0.1", 1).token is None and Access.for_bind("localhost", 1).token is None
    assert len(Access.for_bind("0.0.0.0", 1).token) >= 24
    with pytest.raises(UserError, match=r"--serve 'x': give \[HOST:\]PORT"):
        parse_serve("x")
    result = runner.invoke(app, ["live", "--source", "synthetic:70x98:3", "--engines", str(small_export), "--headless",
                                 "--serve", "host:port"])
    assert result.exit_code == 2 and "--serve 'host:port': give [HOST:]PORT" in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["live", "--source", "synthetic:70x98:3", "--engines", str(small_export),
                                     "--headless", "--serve", str(port)])
    assert result.exit_code == 2 and f"--serve 127.0.0.1:{port}: cannot serve" in result.output
    assert "Traceback" not in result.output


def test_rates_count_output_frames_and_network_passes():
    # 21 frames over 2 s, a new keyframe every 5th: 10 frames/s and 2 passes/s
    times = [(i * 0.1, (i // 5) * 5) for i in range(21)]
    fps, network = rates(times)
    assert fps == pytest.approx(10.0) and network == pytest.approx(2.0)


# -- one `live --serve` run, in a real browser ------------------------------------------------------------

class Run:
    """A command started as a user starts it, its output drained (a full pipe would block it), its view's URL."""

    def __init__(self, args: list[str], cwd: Path):
        self.process = subprocess.Popen([*SMOOTHDINO, *args], cwd=cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.url: str | None = None
        self._url_seen = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._url_seen.wait(START_TIMEOUT):
            self.stop()
            pytest.fail("no browser view URL printed:\n" + "".join(self.lines))

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            found = re.search(r"browser view -> (\S+)", line)
            if found:  # off loopback the token is in a file only its user reads; the line names the file
                self.token_file = re.search(r"open the address in (\S+),", line)
                self.url = (Path(self.token_file.group(1)).read_text().strip() if self.token_file
                            else found.group(1))
                self.printed = line
                self._url_seen.set()
        self._url_seen.set()

    @property
    def port(self) -> int:
        return int(re.search(r":(\d+)/", self.url).group(1))

    def local_url(self, query: str = "") -> str:
        """The view on 127.0.0.1 (a bind to every interface prints this machine's name instead)."""
        token = re.search(r"token=([\w-]+)", self.url)
        return f"http://127.0.0.1:{self.port}/" + (query or (f"?token={token.group(1)}" if token else ""))

    def stop(self) -> int | None:
        return interrupt(self.process)


def _video(path: Path, frames: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (98, 70))
    scene = list(SyntheticScene(70, 98, frames=40, velocity=(1.5, 0.75)))
    for i in range(frames):  # back and forth: the picture keeps moving
        k = i % 78
        writer.write(cv2.cvtColor(scene[k if k < 40 else 78 - k][0], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with playwright_api.sync_playwright() as p:
        chromium = launch_chromium(p, CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live_view(small_export, tmp_path_factory):
    """`smoothdino live --serve 0` on a 24 FPS video replayed as a camera, with --out (depth PNGs, metrics.csv
    appended as frames come) and --snapshots; stopped with Ctrl-C at the end."""
    root = tmp_path_factory.mktemp("live_view")
    video = _video(root / "walk.mp4", 24 * 90, 24.0)  # 90 s: longer than every check below
    run = Run(["live", "--source", str(video), "--engines", str(small_export), "--headless", "--serve", "0",
               "--out", "out", "--snapshots", "snaps", "--threads", "1"], root)
    yield SimpleNamespace(run=run, root=root, out=root / "out", snaps=root / "snaps")
    run.stop()


def _open(browser, url: str, *, requests: list | None = None):
    """A page on `url`, its picture drawn at least once; `requests` gets every URL it asked for (any request off
    127.0.0.1 is also refused, so a page that needs the internet fails here)."""
    page = browser.new_page()
    if requests is not None:
        def route(r):
            requests.append(r.request.url)
            r.continue_() if r.request.url.startswith("http://127.0.0.1:") else r.abort()
        page.route("**/*", route)
        page.on("websocket", lambda ws: requests.append(ws.url))
    response = page.goto(url)
    assert response.status == 200, response.status
    wait_for(page, "window.smoothdinoView && smoothdinoView.drawn > 0", timeout=60)
    wait_for(page, "document.querySelector('[data-stat=output]')")  # the figures (and banner) are laid out
    return page


def _pixel_on_screen(page, x: int, y: int, half: str = "depth") -> tuple[float, float]:
    """Where pixel (x, y) of the frame (or of its depth) is on the screen, from the canvas' size now."""
    box = page.evaluate("""() => { const r = view.getBoundingClientRect();
        return [r.left, r.top, r.width, r.height, view.width, view.height, smoothdinoView.shown.header.width]; }""")
    left, top, width, height, canvas_w, canvas_h, frame_w = box
    column = x + (frame_w if half == "depth" else 0)
    return left + (column + 0.5) * width / canvas_w, top + (y + 0.5) * height / canvas_h


# the readout under the cursor, read in one go (a new frame may come between two reads), once it has a depth
READOUT = """(() => { const d = document.getElementById('readout').dataset;
    return +d.depthMm > 0 && {frame: d.frame, x: +d.x, y: +d.y, mm: +d.depthMm,
        depth: document.getElementById('readout-depth').textContent,
        point: document.getElementById('readout-point').textContent}; })()"""


def _metric_rows(out: Path) -> int:
    path = out / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


@needs_browser
def test_page_loads_offline_with_every_request_on_loopback(browser, live_view):
    requests: list[str] = []
    page = _open(browser, live_view.run.url, requests=requests)
    try:
        port = live_view.run.port
        assert requests, "the page asked for nothing?"
        assert [u for u in requests if not re.match(rf"(http|ws)://127\.0\.0\.1:{port}/", u)] == []
        assert {f"http://127.0.0.1:{port}/static/{n}" for n in ("app.js", "png16.js", "style.css")} <= set(requests)
        assert f"ws://127.0.0.1:{port}/ws" in requests
        wait_for(page, "document.querySelector('[data-stat=output]')")
        assert re.fullmatch(r"\d+\.\d FPS", page.inner_text("[data-stat=output]"))
        assert page.inner_text("#status") == "live"
        assert page.is_visible("#banner")  # random weights: said on the page too
    finally:
        page.close()


# a hash of the canvas at every animation frame, for `seconds`: how many times the picture on screen changed
COUNT_CHANGES = """async (seconds) => {
  const g = view.getContext("2d");
  let last = null, changes = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    await new Promise(requestAnimationFrame);
    const d = g.getImageData(0, 0, view.width, view.height).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
    if (last !== null && h !== last) changes++;
    last = h;
  }
  return changes;
}"""


@pytest.mark.alone
@needs_browser
def test_the_picture_changes_at_least_ten_times_in_two_seconds(browser, live_view):
    page = _open(browser, live_view.run.url)
    try:
        changes = page.evaluate(COUNT_CHANGES, 2.0)
        assert changes >= 10, f"the picture changed {changes} times in 2 s (the camera gives 48 frames)"
    finally:
        page.close()


@needs_browser
def test_hover_shows_the_depth_written_for_the_frame_shown_and_its_3d_point(browser, live_view):
    page = _open(browser, live_view.run.url)
    try:
        x, y = 49, 35  # the middle: a carried depth has no depth on the border the camera shift uncovered
        for half in ("depth", "rgb"):  # the same pixel, on the depth or on the frame
            page.mouse.move(*_pixel_on_screen(page, x, y, half))
            shown = wait_for(page, READOUT)
            assert (shown["x"], shown["y"]) == (x, y), shown
            written = cv2.imread(str(live_view.out / "depth" / f"{shown['frame']}.png"), cv2.IMREAD_UNCHANGED)
            assert written is not None, f"no PNG written for frame {shown['frame']}"
            assert abs(int(written[y, x]) - shown["mm"]) <= 10, (int(written[y, x]), shown)  # 1 cm
            z = written[y, x] / 1000.0
            assert shown["depth"] == f"{shown['mm'] / 1000:.3f} m"
            k = NYU_KINECT.scaled(70, 98)  # no --intrinsics, no camera info: NYUv2's Kinect, as the point clouds
            point = [float(v) for v in shown["point"].removesuffix(" m").split(",")]
            assert point == pytest.approx([(x - k.cx) * z / k.fx, (y - k.cy) * z / k.fy, z], abs=0.011)
        # a click pins the point: its distance over time, one value a frame
        page.mouse.click(*_pixel_on_screen(page, x, y))
        wait_for(page, "smoothdinoView.pins.length === 1 && "
                       "smoothdinoView.pins[0].series.filter((v) => v !== null).length >= 5", timeout=20)
        assert re.match(r"\(49, 35\) (\d+\.\d{3} m away|no depth in this frame)", page.inner_text("#pin-list li"))
    finally:
        page.close()


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@needs_browser
def test_snapshot_button_saves_the_frame_shown_into_the_snapshots_folder_only(browser, live_view):
    page = _open(browser, live_view.run.url)
    try:
        before = _files(live_view.root)
        page.click("#snapshot")
        saved = wait_for(page, "document.getElementById('snapshot-result').dataset.saved", timeout=20).split("\n")
        made = _files(live_view.root) - before
        # the loop keeps writing its own outputs into out/; the button wrote the three PNGs and nothing else
        assert {p for p in made if not p.is_relative_to(live_view.out)} == {live_view.root / p for p in saved}
        assert sorted(p.split("_", 1)[1] for p in (Path(s).name for s in saved)) == \
            ["depth_color.png", "depth_mm.png", "rgb.png"]
        depth_mm = next(live_view.root / s for s in saved if s.endswith("_depth_mm.png"))
        frame = re.fullmatch(r"\d{8}-\d{6}-(.+)_depth_mm\.png", depth_mm.name).group(1)
        assert np.array_equal(cv2.imread(str(depth_mm), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(live_view.out / "depth" / f"{frame}.png"), cv2.IMREAD_UNCHANGED))
    finally:
        page.close()


@pytest.mark.alone
@needs_browser
def test_three_pages_leave_the_loop_rate_within_ten_percent(browser, live_view):
    def loop_rate(seconds: float = 3.0) -> float:
        first, start = _metric_rows(live_view.out), time.monotonic()
        time.sleep(seconds)
        return (_metric_rows(live_view.out) - first) / (time.monotonic() - start)

    alone = loop_rate()
    pages = [_open(browser, live_view.run.url) for _ in range(3)]
    try:
        drawn = [p.evaluate("smoothdinoView.drawn") for p in pages]
        watched = loop_rate()
        moved = [p.evaluate("smoothdinoView.drawn") - d for p, d in zip(pages, drawn)]
    finally:
        for p in pages:
            p.close()
    assert min(moved) >= 10, f"the pages drew {moved} frames in 3 s: they were not watching"
    assert watched >= 0.9 * alone, f"{watched:.1f} frames/s with three pages against {alone:.1f} without"


@needs_browser
def test_a_browser_killed_mid_stream_leaves_the_loop_running(browser, live_view, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        debug_port = s.getsockname()[1]
    doomed = subprocess.Popen([CHROMIUM, *CHROMIUM_ARGS, f"--remote-debugging-port={debug_port}",
                               f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # a browser of its own (its process is ours to kill), driven over its debugging port
            try:
                remote = browser.browser_type.connect_over_cdp(f"http://127.0.0.1:{debug_port}")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        page = _open(remote, live_view.run.url)
        wait_for(page, "smoothdinoView.drawn > 5")
        os.killpg(doomed.pid, signal.SIGKILL)  # the browser and its renderers, mid-stream, no goodbye
        doomed.wait()
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait()
    rows = _metric_rows(live_view.out)
    time.sleep(2.0)
    assert live_view.run.process.poll() is None, "live ended:\n" + "".join(live_view.run.lines[-20:])
    assert _metric_rows(live_view.out) > rows + 10, "the loop stopped writing frames"
    page = _open(browser, live_view.run.url)  # and the view still serves the next page
    page.close()


ATTACKER = """
import json, os, sys, threading
from smoothdino.benchmarks import web_attacks as a
os.nice(19)  # on a robot the attacker is another machine: the cores go to the run first
port, seconds = int(sys.argv[1]), float(sys.argv[2])
got = {}
slow = threading.Thread(target=lambda: got.update(idle=a.idle_descriptors(port, seconds, count=300)))
slow.start()
got["flood"] = a.ack_flood(port, seconds, clients=4)
slow.join()
print(json.dumps(got))
"""


@pytest.mark.alone
@needs_browser
def test_slowloris_and_an_ack_flood_leave_the_live_loop_its_rate(browser, live_view):
    """Issue 37's first and third attacks at once against `live --serve`, from a niced child process: the loop keeps
    its rate, the run prints nothing, and pages load again once the attack ends."""
    def loop_rate(seconds: float = 2.0) -> float:
        first, start = _metric_rows(live_view.out), time.monotonic()
        time.sleep(seconds)
        return (_metric_rows(live_view.out) - first) / (time.monotonic() - start)

    alone = loop_rate()
    printed = len(live_view.run.lines)
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, str(live_view.run.port), "3"],
                                stdout=subprocess.PIPE, text=True)
    time.sleep(0.7)  # the child has started and connected
    attacked = loop_rate()
    got = json.loads(attacker.communicate(timeout=60)[0])
    assert got["idle"]["answered_503"] > 0 and got["flood"]["connections"] + got["flood"]["refused"] >= 4, got
    assert attacked >= 0.9 * alone, f"{attacked:.1f} frames/s under attack against {alone:.1f} without"
    assert live_view.run.process.poll() is None and live_view.run.lines[printed:] == []
    page = _open(browser, live_view.run.url)
    page.close()


# -- `process --serve` on every interface: the token, and the depth `process` writes --------------------------

@needs_browser
def test_process_serve_off_loopback_needs_its_token_and_shows_the_depth_process_writes(browser, small_export,
                                                                                       tmp_path):
    sequence = write_sequence(tmp_path / "walk", SyntheticScene(70, 98, frames=60, velocity=(1.0, 0.5)))
    run = Run(["process", str(sequence), "--engines", str(small_export), "--out", "out", "--no-video",
               "--serve", "0.0.0.0:0", "--threads", "1"], tmp_path)
    try:
        assert re.search(r"/\?token=[\w-]{24,}$", run.url), run.url
        token = run.url.split("token=")[1]
        assert token not in run.printed and token not in "".join(run.lines)  # not where a journal keeps it
        assert oct(Path(run.token_file.group(1)).stat().st_mode & 0o777) == "0o600"
        page = browser.new_page()
        for refused in ("", "?token=wrong", "static/app.js", "ws", "stream.mjpg"):
            response = page.goto(f"http://127.0.0.1:{run.port}/{refused}")
            assert response.status == 403, (refused, response.status)
        page.close()
        page = _open(browser, run.local_url())
        assert "token" not in page.url  # out of the address bar (and the history) once loaded
        assert page.context.cookies() == []  # no cookie that other services on this host name would receive
        x, y = 40, 33
        page.mouse.move(*_pixel_on_screen(page, x, y))
        shown = wait_for(page, READOUT)
        page.close()
        assert run.process.poll() is None, "process ended before the page showed a frame: make the sequence longer"
    finally:
        run.stop()  # Ctrl-C: the PNGs written so far stay, the shown frame's among them (written before it is sent)
    written = cv2.imread(str(tmp_path / "out" / "walk" / "depth" / f"{shown['frame']}.png"), cv2.IMREAD_UNCHANGED)
    assert (shown["x"], shown["y"]) == (x, y)
    assert abs(int(written[y, x]) - shown["mm"]) <= 10, (int(written[y, x]), shown)

