"""Frame sources: NYUv2 sequence folders, image folders, video files, cameras, and the synthetic scene.

Every source yields `Frame`s and keeps `stats` (read, skipped, dropped). Recorded sources (folders, videos)
deliver every frame; a missing or corrupt frame is skipped and counted, never raised. Live sources (cameras,
GStreamer pipelines) read in a capture thread that keeps only the newest frame, so the loop never falls
behind the camera; frames it overwrote unseen are counted as dropped. A camera that stops delivering is
reopened a few times, then the stream ends cleanly.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.images import parse_size

from .synthetic import SyntheticScene

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


@dataclass
class Frame:
    rgb: np.ndarray  # uint8 [H,W,3]
    index: int  # position in the stream, from 0
    name: str  # output name: the input file's stem, or a zero-padded index
    timestamp: float  # seconds (capture time for live sources, index / fps for recorded ones)
    depth_gt: np.ndarray | None = None  # float32 metres, 0 where unmeasured
    meta: dict = field(default_factory=dict)  # source-specific: e.g. a bag's header stamp, frame_id, intrinsics


@dataclass
class SourceStats:
    read: int = 0
    skipped: int = 0  # missing or corrupt frames
    dropped: int = 0  # live frames overwritten before the loop took them
    reconnects: int = 0  # times a lost camera came back
    reconnect_attempts: int = 0
    skipped_names: list[str] = field(default_factory=list)


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """Decode an image file; None if missing, truncated or undecodable.

    OpenCV decodes a truncated JPEG into a partly grey image with only a warning, so JPEGs are also
    required to start with SOI and end with EOI (trailing padding allowed)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return decode_image(data, path.suffix.lower() in (".jpg", ".jpeg"), flags)


def decode_image(data: bytes, jpeg: bool, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """Encoded image bytes (a file's, a bag message's) -> image; None if truncated or undecodable."""
    if jpeg and (not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def read_depth_png(path: Path) -> np.ndarray | None:
    """NYUv2 depth PNG -> metres. 16-bit: millimetres (official pipeline, our own output);
    8-bit: the DenseDepth/Kaggle export, value / 255 * 10. 0 stays 0 (no measurement)."""
    raw = read_image(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        return None
    if raw.ndim == 3:
        raw = raw[..., 0]
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) / 1000.0
    return raw.astype(np.float32) / 255.0 * 10.0


class FolderSource:
    """A folder of frames. NYUv2 layout when a stem has both .jpg (RGB) and .png (depth); otherwise every
    image is a frame. Numeric (natural) order: 2.jpg comes before 10.jpg."""

    live = False

    def __init__(self, folder: Path, fps: float = 10.0, start: int = 0, limit: int | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"{self.folder}: not a folder of frames (NYUv2 <i>.jpg/<i>.png or images)")
        files = sorted((p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
                       key=_natural_key)
        by_stem: dict[str, list[Path]] = {}
        for p in files:
            by_stem.setdefault(p.stem, []).append(p)
        def pick(paths, suffixes):
            return next((p for p in paths if p.suffix.lower() in suffixes), None)

        # NYUv2 layout when any frame has both <i>.jpg and <i>.png: then a PNG is depth, never a frame, and a
        # name whose JPEG is missing is a missing frame (skipped and counted), not its depth read as RGB.
        nyu = any(pick(p, (".jpg", ".jpeg")) and pick(p, (".png",)) for p in by_stem.values())
        self.frames: list[tuple[str, Path, Path | None]] = []
        for stem, paths in by_stem.items():
            rgb = pick(paths, (".jpg", ".jpeg"))
            if nyu:
                self.frames.append((stem, rgb or paths[0].with_suffix(".jpg"), pick(paths, (".png",))))
            else:
                self.frames.append((stem, paths[0], None))
        self.frames = self.frames[start:] if limit is None else self.frames[start:start + limit]
        if not self.frames:
            raise UserError(f"{self.folder}: no frames (expected <i>.jpg, optionally with <i>.png depth)")
        self.name = self.folder.name
        self.fps = fps
        self.stats = SourceStats()

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def names(self) -> list[str]:
        return [stem for stem, _, _ in self.frames]

    def load(self, position: int) -> Frame | None:
        stem, rgb_path, depth_path = self.frames[position]
        bgr = read_image(rgb_path)
        if bgr is None:
            return None
        gt = read_depth_png(depth_path) if depth_path else None
        return Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), position, stem, position / self.fps, gt)

    def __iter__(self) -> Iterator[Frame]:
        for position in range(len(self.frames)):
            frame = self.load(position)
            if frame is None:
                self.stats.skipped += 1
                self.stats.skipped_names.append(self.frames[position][1].name)
                notice(f"{self.frames[position][1]}: missing or corrupt frame, skipped")
                continue
            self.stats.read += 1
            yield frame

    def close(self) -> None:
        pass


class VideoSource:
    """A video file, every frame in order."""

    live = False

    def __init__(self, path: Path, limit: int | None = None):
        self.path = Path(path)
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise UserError(f"{self.path}: OpenCV cannot open this video (missing, or codec not supported)")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count = min(count, limit) if limit else count
        self.limit = limit
        self.name = self.path.stem
        self.stats = SourceStats()

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while self.limit is None or index < self.limit:
            ok, bgr = self.capture.read()
            if not ok:
                break
            self.stats.read += 1
            yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index, f"{index:06d}", index / self.fps)
            index += 1

    def close(self) -> None:
        self.capture.release()


def gstreamer_csi(sensor: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """Jetson CSI camera through nvarguscamerasrc, converted to BGR for OpenCV's appsink."""
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1"
    )


class CameraSource:
    """A live camera: USB index, /dev/videoN, csi://N (Jetson), or any GStreamer pipeline string.

    A capture thread reads continuously and keeps only the newest frame. A camera that stops delivering (a
    loose cable, a restarted driver) is reopened with exponential back-off: `retry_delay`, twice that, ...
    up to `max_retry_delay`, at most `retries` times in a row; a camera that comes back resumes the stream
    (counted in `stats.reconnects`), one that never does ends it with one line. The capture thread decides that
    the camera is gone: while it is blocked in a read (V4L2 gives up one after about 10 s) or backing off, the
    consumer keeps waiting; `read_timeout` only ends a stream whose capture thread is neither, and `hung_read`
    one whose single read has blocked that long (a driver that never returns)."""

    live = True

    def __init__(self, spec: str, retries: int = 6, retry_delay: float = 0.5, limit: int | None = None,
                 read_timeout: float = 5.0, pace: bool = False, max_retry_delay: float = 8.0, *,
                 hung_read: float = 60.0):
        self.spec = spec
        self.pace = pace  # a recorded video replayed as a camera: deliver at its own frame rate
        self.retries, self.retry_delay, self.read_timeout = retries, retry_delay, read_timeout
        self.max_retry_delay = max_retry_delay
        self.hung_read = hung_read
        self.limit = limit
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)[:40] or "camera"
        self.stats = SourceStats()
        self.fps = 30.0
        self._latest: tuple[np.ndarray, float] | None = None
        self._fresh = threading.Condition()
        self._stop = threading.Event()
        self._failed = False
        self._reconnecting = False  # the reader is backing off: silence is expected, not a hung camera
        self._reading_since: float | None = None  # when the read() the capture thread is blocked in began
        self.capture = self._open()
        self._thread = threading.Thread(target=self._reader, name="capture", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return self.limit or 0

    def _open(self) -> cv2.VideoCapture:
        spec = self.spec
        if spec.isdigit():
            capture = cv2.VideoCapture(int(spec))
        elif spec.startswith("csi://"):
            capture = cv2.VideoCapture(gstreamer_csi(int(spec[len("csi://"):] or 0)), cv2.CAP_GSTREAMER)
        elif "!" in spec:
            capture = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
        else:
            capture = cv2.VideoCapture(spec)
        if not capture.isOpened():
            # one line saying what is known: GStreamer missing, the element missing, Argus not answering, no device
            from smoothdino.edge.machine.doctor import camera_open_failure

            raise UserError(camera_open_failure(spec))
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        return capture

    def _reader(self) -> None:
        try:
            self._read_loop()
        except cv2.error as err:
            notice(f"{self.spec}: capture failed ({str(err).strip().splitlines()[-1]}), ending the stream")
        finally:
            self.capture.release()  # released here, never while read() may still block in this thread
            with self._fresh:
                self._failed = True
                self._fresh.notify_all()

    def backoff(self, attempt: int) -> float:
        """Seconds waited before reconnect try `attempt` (from 0): `retry_delay` doubling, at most `max_retry_delay`."""
        return min(self.retry_delay * 2 ** attempt, self.max_retry_delay)

    def _reconnect(self, attempt: int) -> int | None:
        """Reopen with back-off, counting on from `attempt` (attempts since the last delivered frame, so a camera
        that opens but never delivers still runs out of tries): the attempts used, or None to end the stream."""
        with self._fresh:
            self._reconnecting = True
        if attempt == 0 and self.retries > 0:
            notice(f"{self.spec}: the camera stopped delivering; reconnecting (up to {self.retries} tries, "
                   f"back-off {self.retry_delay:g} s to {self.max_retry_delay:g} s)")
        try:
            while attempt < self.retries:
                self.capture.release()
                self.stats.reconnect_attempts += 1
                if self._stop.wait(self.backoff(attempt)):
                    return None
                attempt += 1
                try:
                    self.capture = self._open()
                    return attempt
                except UserError:
                    continue
            notice(f"{self.spec}: no frames after {self.retries} reconnect attempts; the stream ended")
            return None
        finally:
            with self._fresh:
                self._reconnecting = False
                self._fresh.notify_all()

    def _read_loop(self) -> None:
        next_due = time.monotonic()
        attempts = 0  # reconnect attempts since the last frame; a reconnect counts once a frame arrives
        while not self._stop.is_set():
            if self.pace:
                next_due += 1.0 / self.fps
                time.sleep(max(0.0, next_due - time.monotonic()))
            self._reading_since = time.monotonic()  # a blocked read is the camera's to end, not the consumer's
            ok, bgr = self.capture.read()
            self._reading_since = None
            if not ok:
                attempts = self._reconnect(attempts)
                if attempts is None:
                    break
                continue
            if attempts:
                self.stats.reconnects += 1
                attempts = 0
            with self._fresh:
                if self._latest is not None:
                    self.stats.dropped += 1  # the loop never saw the frame we overwrite
                self._latest = (bgr, time.monotonic())
                self._fresh.notify()

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while self.limit is None or index < self.limit:
            with self._fresh:
                ready = lambda: self._latest is not None or self._failed  # noqa: E731
                told = False
                while not self._fresh.wait_for(ready, timeout=self.read_timeout):
                    if self._reconnecting:
                        continue
                    blocked = self._reading_since
                    if blocked is None:
                        notice(f"{self.spec}: no frame for {self.read_timeout:g} s, ending the stream")
                        return
                    if time.monotonic() - blocked >= self.hung_read:
                        notice(f"{self.spec}: a camera read has not returned for {self.hung_read:g} s, ending the stream")
                        return
                    if not told:  # the read fails by itself (then the capture thread reconnects) or delivers
                        notice(f"{self.spec}: no frame for {self.read_timeout:g} s; waiting for the camera read to return")
                        told = True
                if self._latest is None:
                    return  # the reader gave up after its retries (and said so)
                bgr, stamp = self._latest
                self._latest = None
            self.stats.read += 1
            yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index, f"{index:06d}", stamp)
            index += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)  # the reader releases the capture when it leaves its loop


class SyntheticSource:
    """The synthetic moving scene (known depth), generated in memory. With `total` beyond the scene's frames it
    sweeps back and forth (the camera reverses at each end), so a soak test can run for days on a small canvas."""

    def __init__(self, scene: SyntheticScene, total: int | None = None, live: bool = False):
        self.scene = scene
        self.total = total or scene.frames
        self.live = live  # True: the loop treats it as a camera (no resume), as `live` would
        self.name = f"synthetic_{scene.height}x{scene.width}"
        self.fps = 10.0
        self.stats = SourceStats()

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[Frame]:
        canvases = self.scene.canvases()
        period = max(1, 2 * (self.scene.frames - 1))
        for i in range(self.total):
            k = i % period
            rgb, depth = self.scene.frame(k if k < self.scene.frames else period - k, canvases)
            self.stats.read += 1
            yield Frame(rgb, i, f"{i + 1}", i / self.fps, depth)

    def close(self) -> None:
        pass


def open_source(spec: str, *, live: bool = False, limit: int | None = None, **kwargs):
    """A frame source from a command-line string.

    folder -> FolderSource; video file -> VideoSource (as a live-style stream with --live); digit,
    /dev/videoN, csi://N, rtsp://..., or a GStreamer pipeline -> CameraSource; synthetic[:HxW[:N]] ->
    SyntheticSource."""
    path = Path(spec).expanduser()
    if spec.startswith("synthetic") and not path.exists():
        parts = spec.split(":")
        h, w = parse_size(parts[1], "synthetic:") if len(parts) > 1 else (480, 640)
        n = int(parts[2]) if len(parts) > 2 else (limit or 30)
        return SyntheticSource(SyntheticScene(h, w, n))
    if path.is_dir():
        return FolderSource(path, limit=limit)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        if live:  # replay as a camera: real-time pacing, newest-frame-only, drops counted
            return CameraSource(str(path), retries=0, limit=limit, pace=True, **kwargs)
        return VideoSource(path, limit=limit)
    if spec.isdigit() or spec.startswith(("/dev/video", "csi://", "rtsp://", "http://", "https://")) or "!" in spec:
        return CameraSource(spec, limit=limit, **kwargs)
    if path.suffix.lower() in VIDEO_SUFFIXES or os.sep in spec:
        raise UserError(f"{spec}: no such file or folder")
    raise UserError(f"{spec}: not a folder, video, camera (0, /dev/video0, csi://0) or GStreamer pipeline")
