"""A live camera whose read() blocks: a USB camera unplugged mid-read blocks V4L2's read for about 10 s before it
fails. The camera here is a real OpenCV capture (FFmpeg backend) on a named pipe fed with YUV4MPEG2 frames by a
writer that goes silent with the pipe open (the capture's read() blocks in the kernel), then closes it (read()
fails) and comes back (the reopen succeeds). No stand-in: the blocking is the kernel's."""

from __future__ import annotations

import errno
import inspect
import os
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from smoothdino.edge.sources import CameraSource

H, W = 70, 98
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes"),
    pytest.mark.skipif(cv2.CAP_FFMPEG not in cv2.videoio_registry.getBackends(), reason="OpenCV without FFmpeg"),
]


class FifoCamera:
    """A camera on a named pipe. `sessions`: (frames, grey level, seconds of silence before the writer closes);
    each session is a new pipe at the same path and waits for the capture to (re)open it."""

    def __init__(self, path: Path, sessions: list[tuple[int, int, float]]):
        os.mkfifo(path)
        self.path, self.sessions = path, sessions
        self.done = threading.Event()  # set by the test: stop waiting, close the pipe
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self) -> int | None:
        # polled non-blocking open: a writer never hangs the test when no capture opens the pipe any more
        while not self.done.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(0.01)
                continue
            os.set_blocking(fd, True)
            return fd
        return None

    def _run(self) -> None:
        for session, (frames, grey, silence) in enumerate(self.sessions):
            if session:  # replugged: a new device node (a new pipe), as udev makes a new /dev/videoN
                fresh = self.path.with_name(self.path.name + ".new")
                os.mkfifo(fresh)
                os.replace(fresh, self.path)  # the capture still reading the old pipe sees its end, not this one
            fd = self._open()
            if fd is None:
                return
            try:
                os.write(fd, f"YUV4MPEG2 W{W} H{H} F30:1 Ip A1:1 C420jpeg\n".encode())
                yuv = cv2.cvtColor(np.full((H, W, 3), grey, np.uint8), cv2.COLOR_BGR2YUV_I420).tobytes()
                for _ in range(frames):
                    os.write(fd, b"FRAME\n" + yuv)
                    time.sleep(0.01)
                self.done.wait(silence)  # the pipe stays open and silent: the capture's read() blocks
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)


def test_a_read_blocked_past_the_consumers_wait_is_reconnected_not_ended(tmp_path):
    # 10 frames, then a read() that blocks 1.5 s (5x the consumer's wait) and fails; the camera comes back
    camera = FifoCamera(tmp_path / "cam.y4m", [(10, 60, 1.5), (10, 200, 60.0)])
    source = CameraSource(str(camera.path), retries=3, retry_delay=0.05, read_timeout=0.3)
    greys = []
    start = time.monotonic()
    try:
        for frame in source:
            greys.append(float(frame.rgb.mean()))
            if greys[-1] > 150 or time.monotonic() - start > 30:
                break
    finally:
        camera.done.set()  # the writer closes: the capture's last read() fails and its thread leaves
        source.close()
        camera.thread.join(timeout=5)
    assert greys and greys[0] < 100, "no frame from the first session"
    assert greys[-1] > 150, "the stream ended while the capture thread was still blocked in read()"
    assert source.stats.reconnects == 1 and source.stats.reconnect_attempts == 1
    assert not source._thread.is_alive()


def test_reconnect_defaults_are_the_documented_ones(tmp_path):
    """docs/running-for-days.md: 0.5 s doubling to 8 s, 6 tries in a row; from CameraSource's own defaults and
    the back-off it waits between its tries."""
    readme = (ROOT / "docs" / "running-for-days.md").read_text()
    assert re.search(r"exponential back-off \(0\.5 s doubling to 8 s,\s+6 tries in a\s+row\)", readme)
    defaults = inspect.signature(CameraSource.__init__).parameters
    assert (defaults["retries"].default, defaults["retry_delay"].default, defaults["max_retry_delay"].default) == (6, 0.5, 8.0)
    camera = FifoCamera(tmp_path / "cam.y4m", [(1, 60, 60.0)])
    source = CameraSource(str(camera.path))  # every default, as `live --source /dev/video0` builds it
    try:
        assert [source.backoff(attempt) for attempt in range(source.retries)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    finally:
        camera.done.set()
        source.close()
        camera.thread.join(timeout=5)
