"""Live sources: USB cameras, /dev/videoN, Jetson CSI (GStreamer nvarguscamerasrc), any GStreamer pipeline, or a video
replayed in real time. A capture thread keeps only the newest frame, so the loop never falls behind the camera;
frames it overwrote unseen are counted as dropped. A camera that stops delivering is reopened with exponential
back-off (the capture thread decides when it is gone, however long a driver's read blocks), then the stream ends
cleanly."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError

from .frame import Frame, SourceStats


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
            from smoothdino.edge.machine.camera_checks import camera_open_failure

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
                ready = lambda: self._latest is not None or self._failed or self._stop.is_set()  # noqa: E731
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

    def interrupt(self) -> None:
        """End the stream now, from another thread (a run of several cameras stopping): a consumer waiting for a frame
        (the camera reconnecting, or its read blocked in the driver) gets the end of the stream at once instead of
        waiting for the camera; close() still releases the capture."""
        with self._fresh:
            self._stop.set()
            self._fresh.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)  # the reader releases the capture when it leaves its loop
