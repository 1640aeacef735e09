"""`WebView`: the browser view of a running stream, from the loop's side. The loop never waits for it: `write`
leaves the frame in a one-frame mailbox (a frame still there is replaced and counted as dropped for the viewers)
and returns; an encoder thread turns the newest frame into one `FrameMessage`, once, whatever the number of pages,
and only while someone watches; the server's event loop sends each page the newest message it has not seen
(viewers.py). The server outlives a stream: `process --serve` shows every sequence through one address; `stop()`
ends it.

Several cameras (`live --source A --source B`): `stream(source, camera="A")` once per camera, each written from its
camera's own thread. Each camera has its own one-frame mailbox (latest wins per camera: a fast camera never pushes
out a slow one's frame), its own rates, drops, recent frames and intrinsics; the one encoder thread takes the newest
frame of every camera that has one and encodes each once. The page shows a tile per camera. `camera=None` (the
default) is the single-camera view.

Off loopback the view needs its token. It is never printed (a robot's journal keeps what a service prints): the
address with the token goes into a file only its user may read (`token_file`, mode 0600, removed at stop), and the
printed line names that file."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.paths import smoothdino_home
from smoothdino.edge.sinks.foxglove import parse_address
from smoothdino.edge.sinks.view import DISPLAY_RANGE, side_by_side
from smoothdino.edge.sinks.window import WindowSink
from smoothdino.edge.sources.frame import Frame
from smoothdino.edge.sources.intrinsics import IntrinsicsChoice, IntrinsicsText

from .message import FrameMessage, encode_depth_png, encode_jpeg
from .server import ViewServer

RATE_WINDOW_S = 2.0  # the FPS and network rate the page shows are over the last 2 s of written frames
RECENT = 16  # frames kept (by reference) for the snapshot button: the page shows one of the last few
STOP_WAIT_S = 2.0


def parse_serve(text: str | None) -> tuple[str, int] | None:
    """`--serve [HOST:]PORT` -> (host, port), 127.0.0.1 unless a host is given; None when not asked for."""
    return parse_address(text, "--serve") if text is not None else None


@dataclass
class _Written:
    stream: WebStream
    frame: Frame
    depth: np.ndarray
    result: object  # FrameResult, or None for a frame read back from an earlier run
    canvas: np.ndarray | None
    wall_ms: float  # when the loop handed it over (epoch ms: the benchmark's frame-to-screen clock)


def rates(times: list[tuple[float, int | None]]) -> tuple[float, float]:
    """(output frames a second, network passes a second) over the last RATE_WINDOW_S of (time, keyframe id)
    pairs; a new keyframe id is a network pass, so async live counts the passes whose depth reached the output."""
    if len(times) < 2:
        return 0.0, 0.0
    last = times[-1][0]
    window = [(t, key) for t, key in times if t >= last - RATE_WINDOW_S]
    span = window[-1][0] - window[0][0]
    if len(window) < 2 or span <= 0:
        return 0.0, 0.0
    passes = sum(1 for (_, a), (_, b) in zip(window, window[1:]) if b is not None and b != a)
    return (len(window) - 1) / span, passes / span


def flicker_fields(flicker) -> dict:
    """FrameResult.flicker ((median, p90) of the depth's relative change against the previous output, carried by
    the camera's motion; None before there is one) as the page's `flicker` and `flicker_p90`."""
    def number(value) -> float | None:  # NaN is no JSON a browser parses
        return float(value) if value is not None and math.isfinite(value) else None

    if isinstance(flicker, (tuple, list)):
        median, p90 = (list(flicker) + [None, None])[:2]
        return {"flicker": number(median), "flicker_p90": number(p90)}
    return {"flicker": number(flicker), "flicker_p90": None}


def intrinsics_origin(explicit: IntrinsicsText | None, frame: Frame) -> str:
    """Where the 3-D point's intrinsics come from, as the page says it (IntrinsicsChoice's order)."""
    if explicit is not None:
        return "--intrinsics"
    return "camera info" if frame.meta.get("intrinsics") is not None else "NYUv2 Kinect, scaled"


class _SnapshotFolder:
    """The window's `s` key (WindowSink.save_snapshot) for the page's button: the same three PNGs, named alike,
    in the snapshots folder and nowhere else."""

    save_snapshot = WindowSink.save_snapshot

    def __init__(self, folder: Path, depth_range: tuple[float, float], random_weights: bool):
        self.snapshots, self.depth_range, self.random_weights = Path(folder), depth_range, random_weights


class WebStream:
    """The FrameSink one stream hands to the loop (StreamOutputs.sinks). Closing it ends the stream, not the
    server (WebView.stop does). `camera`: its name among several cameras (None: the only one); `write` may be
    called from any thread, several cameras' at once."""

    def __init__(self, view: WebView, source, camera: str | None = None, intrinsics: IntrinsicsText | None = None):
        self.view = view
        self.name = source.name
        self.camera = camera
        self.stats = getattr(source, "stats", None)
        self.explicit = intrinsics if intrinsics is not None else view.explicit
        # the single camera keeps the view's choice (its notice said once); each named camera its own
        self.intrinsics = view.intrinsics if camera is None and intrinsics is None else IntrinsicsChoice(
            self.explicit, f"browser view ({camera or source.name})")

    def write(self, frame: Frame, depth: np.ndarray, result, canvas: np.ndarray | None) -> None:
        self.view.write(self, frame, depth, result, canvas)

    def close(self) -> None:
        pass


class WebView:
    """Serve the browser view at `address` (host, port) until `stop()`. `url` is what to open (with the token
    when bound to another interface than loopback); `viewers` the pages and MJPEG clients connected now."""

    def __init__(self, address: tuple[str, int], *, snapshots: Path = Path("snapshots"),
                 depth_range: tuple[float, float] = DISPLAY_RANGE, random_weights: bool = False,
                 intrinsics: IntrinsicsText | None = None, jpeg_quality: int = 80, option: str = "--serve",
                 **server_options):
        self.depth_range = depth_range
        self.random_weights = random_weights
        self.explicit = intrinsics
        self.intrinsics = IntrinsicsChoice(intrinsics, "browser view")
        self.jpeg_quality = jpeg_quality
        self.snapshots = _SnapshotFolder(snapshots, depth_range, random_weights)
        self.cond = threading.Condition()  # guards _recent (the encoder's thread and the snapshot's)
        # the loops' side (one per camera, each on its own thread): a one-frame mailbox per camera, all under _wake
        self._wake = threading.Condition()
        self._mailboxes: dict[str | None, _Written] = {}
        self._closing = False
        self._refresh = False  # a viewer came: encode each camera's newest frame that no message holds yet
        self._times: dict[str | None, deque[tuple[float, int | None]]] = {}
        self._dropped: dict[str | None, int] = {}
        self._recent: dict[str | None, deque[tuple[int, _Written]]] = {}
        self.cameras: list[str] = []  # the named cameras, in the order their streams were made (the page's tiles)
        self.written = 0  # frames the loops handed over
        self.dropped = 0  # replaced in a mailbox before the encoder took them (a viewer's cost, never the loop's)
        self.encoded = 0
        self.encode_ms: deque[dict[str, float]] = deque(maxlen=1000)  # per encoded frame: view, jpeg, depth
        self._error: str | None = None
        self.option = option
        self.server = ViewServer(address, self, option, **server_options)
        self.token_file = self._write_token_file() if self.server.access.token else None
        self._encoder = threading.Thread(target=self._encode_until_closed, name="web-view-encoder", daemon=True)
        self._encoder.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def latest(self) -> FrameMessage | None:
        return self.server.latest

    @property
    def viewers(self) -> int:
        """Pages and MJPEG clients connected now."""
        return self.server.watching

    @property
    def address(self) -> str:
        """The view's address without its token (what is printed)."""
        host = self.server.host
        if host in ("0.0.0.0", "::", ""):  # every interface: the robot's own name (or any of its addresses)
            host = socket.gethostname()
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/"

    @property
    def url(self) -> str:
        """The address to open, with the token when the view has one (never printed: see `announce`)."""
        token = self.server.access.token
        return self.address + (f"?token={token}" if token else "")

    @property
    def announce(self) -> str:
        """What the command prints: the address, and off loopback the file that holds the address with its token."""
        if self.token_file is None:
            return self.address
        return f"{self.address} (needs its token: open the address in {self.token_file}, readable by you only)"

    def _write_token_file(self) -> Path:
        """<home>/view/<port>.url, mode 0600 from its creation (never readable by others, not even for a moment)."""
        folder = smoothdino_home() / "view"
        path = folder / f"{self.port}.url"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.unlink(missing_ok=True)  # an earlier run's, or someone else's planted file: never written through
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.url + "\n")
        except OSError as err:
            self.server.stop()
            raise UserError(f"{self.option} {self.server.host}:{self.port}: cannot write the view's token file {path} "
                            f"({err.strerror or err}); set SMOOTHDINO_HOME to a folder you can write") from None
        return path

    def stream(self, source, camera: str | None = None, *, intrinsics: IntrinsicsText | None = None) -> WebStream:
        """The sink for one stream. `camera`: its name when the view shows several cameras (one tile each; every
        camera's stream is made before its frames come, the tiles are in this order); None: the only camera.
        `intrinsics`: this camera's own `--intrinsics` (default: the view's)."""
        if camera is not None:
            camera = str(camera)
            with self._wake:
                if camera not in self.cameras:
                    self.cameras.append(camera)
        return WebStream(self, source, camera, intrinsics)

    # -- the loops' side ----------------------------------------------------------------------------

    def write(self, stream: WebStream, frame: Frame, depth: np.ndarray, result, canvas: np.ndarray | None) -> None:
        """Called by a loop for every frame, from its own thread (several cameras' loops at once): no encoding, no
        waiting (a lock held for a few assignments)."""
        key = frame.index - result.age_frames if result is not None else None
        item = _Written(stream, frame, depth, result, canvas, time.time() * 1000.0)
        camera = stream.camera
        with self._wake:
            self.written += 1
            times = self._times.get(camera)
            if times is None:
                times = self._times[camera] = deque(maxlen=512)
            times.append((time.perf_counter(), key))
            if camera in self._mailboxes:
                self.dropped += 1
                self._dropped[camera] = self._dropped.get(camera, 0) + 1
            self._mailboxes[camera] = item
            self._wake.notify()

    # -- the encoder thread ---------------------------------------------------------------------

    def refresh(self) -> None:
        """A viewer came (the server's thread): frames written while nobody watched were never encoded, so the
        encoder encodes each camera's newest one now (a camera that has stopped still gets its tile, marked old)."""
        with self._wake:
            self._refresh = True
            self._wake.notify()

    def _encode_until_closed(self) -> None:
        seq = 0
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._mailboxes or self._closing or self._refresh)
                items = list(self._mailboxes.values())  # the newest frame of each camera that has one
                self._mailboxes.clear()
                refresh, self._refresh = self._refresh, False
                times = {camera: list(t) for camera, t in self._times.items()}
            if not items and not refresh:
                return
            for item in items:
                seq += 1
                with self.cond:
                    recent = self._recent.get(item.stream.camera)
                    if recent is None:
                        recent = self._recent[item.stream.camera] = deque(maxlen=RECENT)
                    recent.append((seq, item))
                self._publish(seq, item, times)
            if refresh:  # each camera's newest frame that no message holds (written while nobody watched)
                with self.cond:
                    newest = [recent[-1] for recent in self._recent.values() if recent]
                for kept_seq, item in newest:
                    message = self.server.latest_by.get(item.stream.camera)
                    if message is None or message.seq < kept_seq:
                        self._publish(kept_seq, item, times)

    def _publish(self, seq: int, item: _Written, times: dict) -> None:
        """Frame `seq` encoded and handed to the server, while someone watches."""
        if self.server.watching == 0:
            return  # nobody watching: nothing is encoded (a page that connects gets the newest: refresh)
        try:
            message = self.encode(seq, item, times.get(item.stream.camera, []),
                                  self.server.depth_wanted_for(item.stream.camera))
        except Exception as err:  # noqa: BLE001 - a viewer problem must never end the depth loop
            if self._error is None:
                self._error = f"{type(err).__name__}: {err}"
                notice(f"browser view: encoding failed ({self._error}); the depth loop goes on")
            return
        self.server.publish(message)

    def encode(self, seq: int, item: _Written, times: list, depth_wanted: bool) -> FrameMessage:
        """The frame's message: the loop's RGB | depth canvas when it drew one (video, window), else one drawn
        here without overlay text (the page shows the figures beside the picture)."""
        start = time.perf_counter()
        canvas = item.canvas if item.canvas is not None else side_by_side(
            item.frame.rgb, item.depth, [], self.random_weights, self.depth_range)
        drawn = time.perf_counter()
        jpeg = encode_jpeg(canvas, self.jpeg_quality)
        jpegged = time.perf_counter()
        depth_png = encode_depth_png(item.depth) if depth_wanted else None
        done = time.perf_counter()
        self.encoded += 1
        self.encode_ms.append({"view": (drawn - start) * 1e3, "jpeg": (jpegged - drawn) * 1e3,
                               "depth": (done - jpegged) * 1e3 if depth_wanted else 0.0})
        return FrameMessage(seq, self.header(item, times), jpeg, depth_png)

    def header(self, item: _Written, times: list) -> dict:
        frame, result, stream = item.frame, item.result, item.stream
        stats = stream.stats
        height, width = item.depth.shape[:2]
        k = stream.intrinsics.for_frame(frame.meta, height, width)
        fps, network_fps = rates(times)
        header = {
            "camera": stream.camera, "cameras": list(self.cameras),
            "source": stream.name, "frame": frame.name, "index": frame.index, "width": width, "height": height,
            "written_ms": item.wall_ms, "fps": fps, "network_fps": network_fps,
            "intrinsics": {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy,
                           "from": intrinsics_origin(stream.explicit, frame)},
            "depth_range": list(self.depth_range), "random_weights": self.random_weights,
            "camera_dropped": getattr(stats, "dropped", 0), "skipped": getattr(stats, "skipped", 0),
            "viewer_dropped": self._dropped.get(stream.camera, 0), "resumed": result is None,
        }
        if result is not None:
            header.update(keyframe=bool(result.keyframe), age_frames=int(result.age_frames),
                          age_ms=float(result.age_ms),
                          carry=getattr(result, "carry", None), inliers=getattr(result, "inliers", None),
                          fallback=getattr(result, "fallback", "") or None, fused=bool(getattr(result, "fused", False)),
                          **flicker_fields(getattr(result, "flicker", None)),
                          stages_ms={k: v * 1000.0 for k, v in result.timings.items() if v})
        return header

    # -- the server's side ----------------------------------------------------------------------

    def recent(self, seq: int) -> _Written | None:
        with self.cond:
            return next((item for recent in self._recent.values() for s, item in recent if s == seq), None)

    def save_snapshot(self, seq: int) -> list[Path] | None:
        """The page's snapshot button: frame `seq` (one the page shows) into the snapshots folder; None when that
        frame is no longer kept. Its name is the frame's, made safe for a file name (after its camera's name, when
        the view shows several: `<time>-<camera>-<frame>_rgb.png`)."""
        item = self.recent(seq)
        if item is None:
            return None
        name = _file_name(item.frame.name, "frame")
        if item.stream.camera is not None:
            name = f"{_file_name(item.stream.camera, 'camera')}-{name}"
        return self.snapshots.save_snapshot(name, item.frame.rgb, item.depth)

    def save_snapshots(self, seqs: list[int]) -> list[Path] | None:
        """The snapshot button with several cameras: the frame each tile shows (one per camera, the first named
        for a camera wins), all into the snapshots folder; None when none of them is kept any more."""
        saved: list[Path] = []
        kept, cameras = 0, set()
        for seq in seqs:
            item = self.recent(seq)
            if item is None or item.stream.camera in cameras:
                continue
            cameras.add(item.stream.camera)
            kept += 1
            saved += self.save_snapshot(seq) or []
        return saved if kept else None

    def stop(self) -> None:
        """Stop encoding, say goodbye to every page (they show that the stream ended), close the server."""
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        self._encoder.join(timeout=STOP_WAIT_S)
        self.server.stop(STOP_WAIT_S)  # each page gets its close frame (it then says "stream ended")
        if self.token_file is not None:
            self.token_file.unlink(missing_ok=True)

    def __enter__(self) -> WebView:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _file_name(text: str, empty: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).lstrip(".") or empty


@contextlib.contextmanager
def serve_view(address: tuple[str, int] | None, **options) -> Iterator[WebView | None]:
    """`with serve_view(parse_serve(text), ...) as view:` the view while the block runs, or None when not asked."""
    if address is None:
        yield None
        return
    view = WebView(address, **options)
    try:
        yield view
    finally:
        view.stop()

