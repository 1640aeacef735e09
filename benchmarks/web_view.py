"""What the browser view (`live --serve`) costs the loop, and how late a frame reaches the screen, per transport:
the page's WebSocket (JPEG + 16-bit depth PNG while the cursor is on the picture) and MJPEG (`/stream.mjpg`).

    python -m smoothdino.benchmarks.web_view --size 480x640 --fps 30 --seconds 4 --screenshot docs/web_view.png

No network runs here: a thread plays the live loop at --fps on the synthetic scene, doing what `live --async` does
for every frame between keyframes (a phase correlation against the previous frame) and handing each frame to the
view's sink, its true depth standing in for the network's (a "keyframe" every 5th frame, so the page's age and
rate figures move). Timed per frame on that thread: its busy time (phase correlation + the sink's `write`) and
`write` alone. Timed on the view's encoder thread, per encoded frame: drawing the RGB | depth view, the JPEG, the
depth PNG. Frame to screen, in Chromium (Debian's, through Playwright): the page records the animation frame in
which it drew each frame into its canvas; for MJPEG, each frame carries its number as a 12-bit barcode in its
top-left corner and a requestAnimationFrame loop reads it off the <img>, keeping when each number first appeared.
Latency = that time - the time the loop handed the frame over (one clock: same machine). The page's own decode
time (JPEG, and PNG when asked) is read from the page.
Configurations: no viewer, 1 and 3 pages, 1 page with the cursor on the depth (PNG on), MJPEG with 1 and 3
clients; the first second of each is warm-up.
Results: <out>/web_view.json and .md; --record writes benchmarks/results/web_view.json for the docs.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from smoothdino.core.files import atomic_write_text
from smoothdino.core.images import parse_size
from smoothdino.edge.motion import phase_shift, to_grey
from smoothdino.edge.pipeline import FrameResult
from smoothdino.edge.sinks import json_dumps
from smoothdino.edge.sources import Frame, SourceStats
from smoothdino.edge.sources.synthetic import SyntheticScene
from smoothdino.edge.web import WebView

from .record import Record, Table, add_record_option, command_line, load_note, write_record
from .report import markdown_table

CHROMIUM_NAMES = ("chromium-headless-shell", "chromium", "chromium-browser")
# headless, no sandbox (root in CI), nothing fetched from the internet (updates, component downloads, field trials)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
BITS = 12  # the barcode: a white block, 12 bit blocks, a black block, 16x16 pixels each, from (8, 8)
BLOCK = 16
KEYFRAME_EVERY = 5


def find_chromium() -> str | None:
    """The system's Chromium (Debian: chromium-headless-shell or chromium); None when there is none."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def launch_chromium(playwright, executable: str | None = None):
    """Chromium through Playwright with no browser download: the system's own binary."""
    executable = executable or find_chromium()
    if executable is None:
        raise SystemExit("no Chromium here: apt-get install chromium-headless-shell (or chromium)")
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def interrupt(process: subprocess.Popen, timeout: float = 30.0) -> int | None:
    """Ctrl-C to a `live` child, as a user stops it; killed if it has not ended within `timeout`. Its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_for(page, expression: str, timeout: float = 20.0, every: float = 0.05):
    """Poll `expression` in the page until it is truthy (Playwright's wait_for_function evaluates strings, which
    the view's Content-Security-Policy forbids, rightly); its value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression!r} still false after {timeout:g} s")
        time.sleep(every)


def paint_barcode(rgb: np.ndarray, number: int) -> np.ndarray:
    out = rgb.copy()
    blocks = [1] + [(number >> i) & 1 for i in range(BITS)] + [0]
    for i, bit in enumerate(blocks):
        out[8:8 + BLOCK, 8 + BLOCK * i:8 + BLOCK * (i + 1)] = 255 if bit else 0
    return out


# run in the page: what is on screen, read at every animation frame
PROBE = """([selector, bits, block]) => {
  const shown = document.querySelector(selector);
  const probe = document.createElement("canvas");
  probe.width = 8 + block * (bits + 2); probe.height = 8 + block;
  const g = probe.getContext("2d", {willReadFrequently: true});
  window.__seen = []; let last = -1;
  const tick = () => {
    if (shown.width || shown.naturalWidth) {
      g.drawImage(shown, 0, 0, probe.width, probe.height, 0, 0, probe.width, probe.height);
      const d = g.getImageData(0, 0, probe.width, probe.height).data;
      const at = (i) => d[((8 + block / 2) * probe.width + 8 + block * i + block / 2) * 4 + 1] > 128;
      if (at(0) && !at(bits + 1)) {
        let n = 0;
        for (let i = 0; i < bits; i++) if (at(i + 1)) n |= 1 << i;
        if (n !== last) { window.__seen.push([n, performance.timeOrigin + performance.now()]); last = n; }
      }
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


class PacedLoop:
    """The live loop's stand-in (see the module's docstring), on its own thread at `fps`."""

    def __init__(self, view: WebView, size: tuple[int, int], fps: float):
        scene = SyntheticScene(*size, frames=30, velocity=(4.0, 2.0))
        self.frames = list(scene)
        self.greys = [to_grey(rgb, 2) for rgb, _ in self.frames]
        self.stream = view.stream(SimpleNamespace(name=f"synthetic_{size[0]}x{size[1]}", stats=SourceStats()))
        self.fps = fps
        self.written_ms: dict[int, float] = {}
        self.busy: list[float] = []
        self.write: list[float] = []
        self.count = 0
        self.barcode = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.fps
        next_at = time.perf_counter()
        keyframe_ms = 0.0
        while not self._stop.is_set():
            i = self.count
            k = i % (2 * len(self.frames) - 2)
            k = k if k < len(self.frames) else 2 * len(self.frames) - 2 - k  # back and forth
            rgb = self.frames[k][0]
            if self.barcode:  # outside the clock: only the MJPEG measurement needs it
                rgb = paint_barcode(rgb, i % (1 << BITS))
            start = time.perf_counter()
            shift = phase_shift(self.greys[k - 1 if k else 1], self.greys[k], 2)
            motion = time.perf_counter() - start
            age = i % KEYFRAME_EVERY
            keyframe_ms = time.time() * 1000.0 if age == 0 else keyframe_ms
            result = FrameResult(depth=self.frames[k][1], shift=shift, scene_cut=False,
                                 timings={"motion": motion, "total": motion}, keyframe=age == 0, age_frames=age,
                                 age_ms=time.time() * 1000.0 - keyframe_ms, carry="network" if age == 0 else "shift")
            frame = Frame(rgb, i, f"{i:06d}", i / self.fps)
            self.written_ms[i % (1 << BITS)] = time.time() * 1000.0
            before = time.perf_counter()
            self.stream.write(frame, self.frames[k][1], result, None)
            done = time.perf_counter()
            self.busy.append(done - start)
            self.write.append(done - before)
            self.count += 1
            # a camera's pace: the ticks a late frame missed are skipped, never made up for by a burst
            next_at += period
            late = time.perf_counter() - next_at
            if late > 0:
                next_at += math.ceil(late / period) * period
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def mark(self) -> tuple[int, int]:
        return len(self.busy), self.count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _p(values: list[float], scale: float = 1000.0) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    a = np.asarray(values, np.float64) * scale
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3)}


def run_config(browser, view: WebView, loop: PacedLoop, transport: str, pages: int, hover: bool, seconds: float,
               screenshot: Path | None = None) -> dict:
    opened = []
    loop.barcode = transport == "mjpeg"
    try:
        for n in range(pages):
            page = browser.new_page(viewport={"width": 1600, "height": 760})
            if transport == "websocket":
                page.goto(f"http://127.0.0.1:{view.port}/")
                wait_for(page, "window.smoothdinoView && smoothdinoView.drawn > 0")
                selector = "#view"
            else:
                page.goto(f"http://127.0.0.1:{view.port}/stream.mjpg", wait_until="commit")
                wait_for(page, "document.querySelector('img') && document.querySelector('img').naturalWidth")
                selector = "img"
            if n == 0 and hover:  # a pinned point and the cursor on the depth: every frame carries its depth PNG
                box = page.locator("#view").bounding_box()
                page.mouse.click(box["x"] + box["width"] * 0.62, box["y"] + box["height"] * 0.55)
                page.mouse.move(box["x"] + box["width"] * 0.80, box["y"] + box["height"] * 0.35)
            if n == 0 and transport == "mjpeg":  # the page records its own frames; an <img> needs the barcode
                page.evaluate(PROBE, [selector, BITS, BLOCK])
            opened.append(page)
        time.sleep(1.0)  # warm-up
        view.encode_ms.clear()
        first_busy, first_count = loop.mark()
        start = time.perf_counter()
        since = time.time() * 1000.0
        opened[0].evaluate("window.__seen = []")
        time.sleep(seconds)
        last_busy, last_count = loop.mark()
        elapsed = time.perf_counter() - start
        decode_ms = None
        if transport == "websocket":  # (seq, handed over, drawn): the animation frame the canvas was drawn in
            decode_ms = opened[0].evaluate(f"smoothdinoView.decodeMs.slice(-{int(seconds * loop.fps)})")
            seen = [(written, shown) for _, written, shown in opened[0].evaluate("smoothdinoView.shownAt")
                    if shown >= since]
        else:
            seen = [(loop.written_ms[n], shown) for n, shown in opened[0].evaluate("window.__seen")
                    if n in loop.written_ms]
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            opened[0].screenshot(path=str(screenshot))
    finally:
        for page in opened:
            page.close()
    latencies = [(shown - written) / 1000.0 for written, shown in seen]
    written = last_count - first_count
    encoded = list(view.encode_ms)
    message = view.latest
    return {
        "transport": transport, "pages": pages, "depth_png": hover, "seconds": round(elapsed, 2),
        "loop_fps": round(written / elapsed, 2),
        "loop_busy_ms": _p(loop.busy[first_busy:last_busy]), "write_us": _p(loop.write[first_busy:last_busy], 1e6),
        "encoded_per_s": round(len(encoded) / elapsed, 2),
        "encode_ms": {part: _p([e[part] for e in encoded], 1.0) for part in ("view", "jpeg", "depth")},
        "message_kb": round(len(message.payload(hover)) / 1024, 1) if message is not None else None,
        "shown_per_s": round(len(seen) / elapsed, 2), "shown_of_written": round(len(seen) / max(written, 1), 3),
        "latency_ms": _p(latencies), "page_decode_ms": _p(decode_ms, 1.0) if decode_ms else None,
    }


def encode_alone(size: tuple[int, int], frames: int = 30) -> dict:
    """The encoder's three parts on this thread alone, nothing else running here: ms per frame."""
    from smoothdino.edge.sinks.view import side_by_side
    from smoothdino.edge.web.message import encode_depth_png, encode_jpeg

    scene = list(SyntheticScene(*size, frames=frames))
    times = {"view": [], "jpeg": [], "depth": []}
    for rgb, depth in [scene[0]] + scene:  # the first one again: warm-up, left out
        start = time.perf_counter()
        canvas = side_by_side(rgb, depth, [])
        drawn = time.perf_counter()
        encode_jpeg(canvas, 80)
        jpegged = time.perf_counter()
        encode_depth_png(depth)
        done = time.perf_counter()
        for part, value in zip(times, (drawn - start, jpegged - drawn, done - jpegged)):
            times[part].append(value)
    return {part: _p(values[1:]) for part, values in times.items()}


def run(size: tuple[int, int], fps: float, seconds: float, screenshot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    results = {"size": f"{size[0]}x{size[1]}", "fps": fps, "chromium": find_chromium(), "configs": [],
               "encode_alone_ms": encode_alone(size)}
    with WebView(("127.0.0.1", 0), snapshots=Path("/nonexistent-no-snapshots-here")) as view, sync_playwright() as p:
        browser = launch_chromium(p)
        results["chromium_version"] = browser.version
        loop = PacedLoop(view, size, fps)
        try:
            plan = [("none", 0, False), ("websocket", 1, False), ("websocket", 3, False), ("websocket", 1, True),
                    ("mjpeg", 1, False), ("mjpeg", 3, False)]
            for transport, pages, hover in plan:
                if transport == "none":
                    time.sleep(1.0)
                    first_busy, first_count = loop.mark()
                    start = time.perf_counter()
                    time.sleep(seconds)
                    last_busy, last_count = loop.mark()
                    elapsed = time.perf_counter() - start
                    results["configs"].append({"transport": "none", "pages": 0, "depth_png": False,
                                               "loop_fps": round((last_count - first_count) / elapsed, 2),
                                               "loop_busy_ms": _p(loop.busy[first_busy:last_busy]),
                                               "write_us": _p(loop.write[first_busy:last_busy], 1e6)})
                    continue
                shot = screenshot if (transport, pages, hover) == ("websocket", 1, True) else None
                results["configs"].append(run_config(browser, view, loop, transport, pages, hover, seconds, shot))
        finally:
            loop.stop()
            browser.close()
    return results


def table(results: dict) -> Table:
    """One row per configuration: the loop's rate and busy time, the encoder's, the page's, frame to screen."""
    rows = []
    for c in results["configs"]:
        enc = c.get("encode_ms")
        lat = c.get("latency_ms")
        rows.append([
            c["transport"] + (" + depth PNG" if c["depth_png"] else ""), c["pages"], c["loop_fps"],
            f"{c['loop_busy_ms']['p50']} ({c['loop_busy_ms']['p95']})", c["write_us"]["p50"],
            f"{enc['view']['p50']} + {enc['jpeg']['p50']} + {enc['depth']['p50']}" if enc else None,
            c.get("message_kb"), c.get("shown_per_s"),
            f"{c['page_decode_ms']['p50']} ({c['page_decode_ms']['p95']})" if c.get("page_decode_ms") else None,
            f"{lat['p50']} ({lat['p95']})" if lat and lat["p50"] is not None else None,
        ])
    alone = results["encode_alone_ms"]
    caption = (f"Browser view at {results['size']}, loop paced at {results['fps']:g} FPS, Chromium "
               f"{results.get('chromium_version', '?')} headless (times: p50 (p95)). Encoding alone, ms per frame: "
               + ", ".join(f"{part} {v['p50']} ({v['p95']})" for part, v in alone.items()))
    return Table(caption, ["transport", "viewers", "loop FPS", "loop busy ms", "write us",
                           "encode ms (view + JPEG + PNG)", "KB / frame", "shown / s", "page decode ms",
                           "frame to screen ms"], rows)


def markdown(results: dict) -> str:
    t = table(results)
    return t.caption + "\n\n" + "\n".join(markdown_table(t.columns, t.rows)) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="480x640")
    p.add_argument("--fps", type=float, default=30.0, help="the loop's pace (a camera's rate)")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per configuration")
    p.add_argument("--screenshot", type=Path, default=None, help="save the page (1 page, cursor on the depth) here")
    p.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    add_record_option(p, "web_view")
    a = p.parse_args(argv)
    load_before = os.getloadavg()
    a.out.mkdir(parents=True, exist_ok=True)
    results = run(parse_size(a.size), a.fps, a.seconds, a.screenshot)
    atomic_write_text(a.out / "web_view.json", json_dumps(results))
    atomic_write_text(a.out / "web_view.md", markdown(results))
    print(markdown(results))
    if a.record:
        write_record(Record("web_view", "What does the browser view cost the loop, and how late is a frame on screen?",
                            [table(results)], random_weights=None,
                            notes=["No network runs: a thread paces the loop at the camera's rate on the synthetic "
                                   "scene, its true depth standing in for the network's; the browser runs on the same "
                                   f"{os.cpu_count()} CPUs as the loop (on a robot it would be a laptop's).",
                                   "loop busy: phase correlation + the sink's write a frame; write: the sink's write "
                                   "alone (the loop's whole cost of the view); the first second of each configuration "
                                   "is left out.", load_note(load_before)]),
                     a.record, command_line("smoothdino.benchmarks.web_view", argv))
    return results


if __name__ == "__main__":
    main()
