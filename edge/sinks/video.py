"""The side-by-side MP4: H.264 (yuv420p, moov first: +faststart) that web browsers, GitHub, Slack and slide decks
play, written under a temporary name and renamed into place only once it is whole.

The encoder, first that works (SMOOTHDINO_VIDEO_ENCODER=auto, the default):
    gstreamer  a Jetson's hardware H.264 (nvv4l2h264enc), when OpenCV has GStreamer and GStreamer has the element
    ffmpeg     imageio-ffmpeg's ffmpeg (a static build inside its wheel, with libx264): any PC, no system ffmpeg
    mp4v       OpenCV's MPEG-4 Part 2, the last resort: web browsers do not play it, and a notice says so
SMOOTHDINO_VIDEO_ENCODER=gstreamer|ffmpeg|mp4v names one (mp4v stays the fallback when it cannot open).
"""

from __future__ import annotations

import functools
import os
import select
import struct
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError
from smoothdino.core.files import DISK_FULL, DiskFull, durable_replace, temporary_path

ENCODER_VARIABLE = "SMOOTHDINO_VIDEO_ENCODER"
# ffmpeg that takes no frame data (or, once its input is closed, neither runs nor writes) for this long is stalled
# (stopped, hung): a frame's write unit holds the signals, so an unbounded wait would not even yield to Ctrl-C
STALL_SECONDS = 30.0
ENCODERS = ("auto", "gstreamer", "ffmpeg", "mp4v")
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
# NVIDIA's Jetson encoder (Accelerated GStreamer guide): BGR from OpenCV -> BGRx -> NVMM I420 -> nvv4l2h264enc;
# mp4mux's faststart writes the moov box first, as ffmpeg's +faststart does
JETSON_PIPELINE = ("appsrc ! video/x-raw,format=BGR ! queue ! videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! "
                   "video/x-raw(memory:NVMM),format=I420 ! nvv4l2h264enc ! h264parse ! mp4mux faststart=true ! "
                   "filesink location=\"{path}\"")


def chosen_encoder() -> str:
    value = os.environ.get(ENCODER_VARIABLE, "auto").strip().lower() or "auto"
    if value not in ENCODERS:
        raise UserError(f"{ENCODER_VARIABLE}={value}: choose one of {', '.join(ENCODERS)}")
    return value


@functools.lru_cache(maxsize=1)
def ffmpeg_with_x264() -> tuple[str | None, str]:
    """(imageio-ffmpeg's ffmpeg, '') when it has libx264, else (None, why not)."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except ImportError:
        return None, "imageio-ffmpeg is not installed"
    except RuntimeError as err:  # no binary in the wheel and none on the PATH
        return None, f"imageio-ffmpeg has no ffmpeg ({err})"
    try:
        encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30,
                                  check=False).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"{exe} does not run ({err})"
    return (exe, "") if "libx264" in encoders else (None, f"{exe} has no libx264")


@functools.lru_cache(maxsize=1)
def jetson_encoder() -> str | None:
    """Why the GStreamer hardware encoder cannot be used here, or None when it can."""
    from smoothdino.edge.machine.camera_checks import gst_inspect
    from smoothdino.edge.machine.environment import opencv_gstreamer

    if not opencv_gstreamer():
        return "this OpenCV has no GStreamer"
    found = gst_inspect(["nvv4l2h264enc"], timeout=15.0)
    if found is not None and found[0] != 0:
        return "GStreamer has no nvv4l2h264enc"
    return None  # the element is there (or gst-inspect-1.0 is not installed: opening the pipeline tells)


class _Ffmpeg:
    """Raw BGR frames piped into ffmpeg's stdin, one at a time (no frame list in memory). ffmpeg runs in its own
    session: a Ctrl-C at the terminal reaches only this process, whose loop then closes the video properly. Every
    wait on it is bounded (`stall_seconds` without progress): a stopped or hung ffmpeg is killed and named."""

    name = "H.264 (ffmpeg)"

    def __init__(self, exe: str, path: Path, size: tuple[int, int], fps: float, stall_seconds: float = STALL_SECONDS):
        self.path, self.stall_seconds, self.stalled = Path(path), stall_seconds, ""
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()/abort(); ffmpeg's messages: a file, so a chatty ffmpeg never blocks on a pipe
        args = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
                "-s", f"{size[0]}x{size[1]}", "-r", f"{fps:g}", "-i", "pipe:0", "-an", *X264, "-f", "mp4", str(path)]
        extra = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log, **extra)
        self.bounded = hasattr(select, "poll")  # POSIX: the pipe is written without blocking, waits are polls
        if self.bounded:
            os.set_blocking(self.process.stdin.fileno(), False)

    def write(self, frame: np.ndarray) -> bool:
        """False when ffmpeg ended early (a full disk, a bad argument) or stalled: finish() tells which."""
        data = memoryview(np.ascontiguousarray(frame)).cast("B")
        try:
            if not self.bounded:
                self.process.stdin.write(data)
                return True
            fd = self.process.stdin.fileno()
            pipe = select.poll()
            pipe.register(fd, select.POLLOUT)
            while data:
                try:
                    data = data[os.write(fd, data):]
                except BlockingIOError:  # the pipe is full: wait for ffmpeg to read, at most stall_seconds
                    if not pipe.poll(self.stall_seconds * 1000):
                        self._stall(f"took no frame data for {self.stall_seconds:g} s")
                        return False
            return True
        except (BrokenPipeError, OSError):
            return False

    def _stall(self, what: str) -> None:
        self.stalled = f"ffmpeg {what}: stopped or hung, killed"
        self.process.kill()  # also a stopped one
        self.process.wait()

    def _activity(self) -> tuple:
        """What changes while ffmpeg works on its last frames and the moov box: its CPU time (Linux), the file."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as f:
                ticks = sum(int(v) for v in f.read().rsplit(")", 1)[1].split()[11:13])
        except (OSError, ValueError):
            ticks = None
        try:
            size = self.path.stat().st_size
        except OSError:
            size = None
        return ticks, size

    def finish(self) -> str | None:
        """Wait for the file; the error (ffmpeg's last lines, or that it stalled) or None."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        seen = self._activity()
        while not self.stalled:
            try:
                code = self.process.wait(timeout=self.stall_seconds)
                break
            except subprocess.TimeoutExpired:
                now = self._activity()
                if now == seen:
                    self._stall(f"neither ran nor wrote for {self.stall_seconds:g} s after its last frame")
                seen = now
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip()
        self.log.close()
        if self.stalled:
            return self.stalled
        return None if code == 0 else (" ".join(text.splitlines()[-2:]) or f"ffmpeg exited with {code}")

    def abort(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log.close()


class _OpenCV:
    """cv2.VideoWriter: the Jetson's GStreamer pipeline or mp4v. It reports nothing when the disk fills up: the
    frame count read back from the file tells."""

    def __init__(self, writer, name: str):
        self.writer, self.name = writer, name

    def write(self, frame: np.ndarray) -> bool:
        self.writer.write(frame)
        return True

    def finish(self) -> str | None:
        self.writer.release()
        return None

    abort = finish


class VideoSink:
    """MP4 of side-by-side frames (H.264 where an encoder is found; see the module's notes), written under a
    temporary name (core.files.temporary_path: two runs into one folder never share it) and renamed into place,
    synced, only once it is whole: the encoder ended well and the file holds every frame (its MP4 boxes are read
    back). A file that did not come out whole is removed and named in one line (DiskFull when the disk is full);
    so is one whose ffmpeg stalled (`stall_seconds`). `discard()` drops the file (a run that failed)."""

    def __init__(self, path: Path, fps: float = 10.0, stall_seconds: float = STALL_SECONDS):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_path(self.path)
        self.stall_seconds = stall_seconds
        self.fps = float(fps) if fps and fps > 0 else 10.0
        self.encoder = chosen_encoder()
        self.writer = None
        self.size: tuple[int, int] | None = None  # (width, height) of the video
        self.frames = 0

    def write(self, canvas: np.ndarray) -> None:
        h, w = canvas.shape[:2]
        if h % 2 or w % 2:  # yuv420p halves both sides: pad (not scale) to even, repeating the last row/column once
            canvas = cv2.copyMakeBorder(canvas, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        if self.writer is None:
            self.size = (canvas.shape[1], canvas.shape[0])
            self.writer = self._open(*self.size) or False
        if not self.writer:
            return
        if (canvas.shape[1], canvas.shape[0]) != self.size:  # a camera that changed its size: the video keeps its own
            canvas = cv2.resize(canvas, self.size, interpolation=cv2.INTER_AREA)
        if not self.writer.write(canvas):
            self._failed(self.writer.finish())
        self.frames += 1

    def _open(self, width: int, height: int):
        """The first encoder that opens (gstreamer, ffmpeg, then mp4v), or None (a notice says why)."""
        why = []
        if self.encoder in ("auto", "gstreamer"):
            reason = jetson_encoder()
            if reason is None:
                location = str(self.tmp).replace("\\", "\\\\").replace('"', '\\"')  # quoted for gst-launch syntax
                writer = cv2.VideoWriter(JETSON_PIPELINE.format(path=location), cv2.CAP_GSTREAMER, 0, self.fps,
                                         (width, height), True)
                if writer.isOpened():
                    return _OpenCV(writer, "H.264 (Jetson nvv4l2h264enc)")
                reason = "the nvv4l2h264enc pipeline did not open"
            why.append(reason)
        if self.encoder in ("auto", "ffmpeg"):
            exe, reason = ffmpeg_with_x264()
            if exe is not None:
                return _Ffmpeg(exe, self.tmp, (width, height), self.fps, self.stall_seconds)
            why.append(reason)
        if self.encoder == "mp4v":
            why.append(f"{ENCODER_VARIABLE}=mp4v")
        writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
        if not writer.isOpened():
            notice(f"{self.path}: no encoder can write MP4 here ({'; '.join(why)}; OpenCV's mp4v neither); no video")
            return None
        hint = "" if self.encoder == "mp4v" else "; pip install imageio-ffmpeg for H.264"
        notice(f"{self.path}: MPEG-4 Part 2 (mp4v), which web browsers do not play ({'; '.join(why)}{hint})")
        return _OpenCV(writer, "mp4v")

    def _failed(self, error: str | None) -> None:
        """The encoder stopped before the file was whole: remove it and say so in one line."""
        self.writer = False
        self.tmp.unlink(missing_ok=True)
        if (error and "No space left" in error) or _disk_nearly_full(self.path.parent):
            raise DiskFull(self.path)
        raise UserError(f"{self.path}: the video encoder failed ({error or 'no reason given'}); the video was not "
                        "kept; pass --no-video to go without it")

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if not writer:
            return
        error = writer.finish()
        if error is not None:
            self._failed(error)
        if not self.frames:
            self.tmp.unlink(missing_ok=True)
            return
        readable = video_frame_count(self.tmp)
        if readable != self.frames:
            self.tmp.unlink(missing_ok=True)
            raise DiskFull(self.path) if _disk_nearly_full(self.path.parent) else UserError(
                f"{self.path}: the video came out with {readable} of {self.frames} frames and was not kept; "
                "check the disk, or pass --no-video")
        try:
            durable_replace(self.tmp, self.path)
        except OSError as err:  # its bytes did not fit on the disk after all (a delayed allocation)
            self.tmp.unlink(missing_ok=True)
            if err.errno in DISK_FULL:
                raise DiskFull(self.path, errno=err.errno) from None
            raise

    def discard(self) -> None:
        writer, self.writer = self.writer, None
        if writer:
            writer.abort()
        self.tmp.unlink(missing_ok=True)


# -- reading an MP4 back: its boxes, as a player finds them -----------------------------------------

def _tile(read, start: int, end: int) -> list[tuple[str, int, int]]:
    """Boxes (type, offset, size) that tile [start, end), their headers got by read(offset, 16); ValueError where
    they do not tile it exactly (a file cut short: a box runs past the end)."""
    boxes, at = [], start
    while at < end:
        header = read(at, min(16, end - at))
        if len(header) < 8:
            raise ValueError(f"{len(header)} stray bytes at {at}")
        size, kind = struct.unpack(">I4s", header[:8])
        if size == 1 and len(header) == 16:
            size = struct.unpack(">Q", header[8:16])[0]
        elif size == 0:
            size = end - at
        if size < 8 or at + size > end:
            raise ValueError(f"box {kind!r} at {at} runs past the end")
        boxes.append((kind.decode("latin-1"), at, size))
        at += size
    return boxes


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """The boxes in data[start:end] as (type, offset, size) (see _tile)."""
    return _tile(lambda at, n: data[at:at + n], start, len(data) if end is None else end)


def mp4_top_boxes(path: Path) -> list[tuple[str, int, int]]:
    """A file's top-level boxes (type, offset, size), read header by header (the file is not loaded); ValueError
    where they do not tile the file exactly (cut short) or it is no MP4."""
    with open(path, "rb") as f:
        boxes = _tile(lambda at, n: (f.seek(at), f.read(n))[1], 0, os.path.getsize(path))
    if not boxes or boxes[0][0] != "ftyp":
        raise ValueError("not an MP4 (no ftyp box first)")
    return boxes


def _children(data: bytes, box: tuple[str, int, int], kind: str) -> list[tuple[str, int, int]]:
    _, at, size = box
    return [b for b in mp4_boxes(data, at + 8, at + size) if b[0] == kind]


def mp4_video_frames(path: Path) -> int:
    """Samples of an MP4's first video track (its stsz box's count), read from the moov box alone; ValueError for a
    file that is not a whole MP4."""
    moov = [b for b in mp4_top_boxes(path) if b[0] == "moov"]
    if not moov:
        raise ValueError("no moov box")
    with open(path, "rb") as f:
        f.seek(moov[0][1])
        data = f.read(moov[0][2])
    root = ("moov", 0, len(data))
    for trak in _children(data, root, "trak"):
        for mdia in _children(data, trak, "mdia"):
            hdlr = _children(data, mdia, "hdlr")  # version/flags, pre_defined, then the handler type
            if not hdlr or data[hdlr[0][1] + 16:hdlr[0][1] + 20] != b"vide":
                continue
            for minf in _children(data, mdia, "minf"):
                for stbl in _children(data, minf, "stbl"):
                    for stsz in _children(data, stbl, "stsz"):  # version/flags, sample_size, sample_count
                        return struct.unpack(">I", data[stsz[1] + 16:stsz[1] + 20])[0]
    raise ValueError("no video track")


def video_frame_count(path: Path) -> int:
    """Frames a video file really holds, as a player would find them (0 if it is cut short or does not open): an
    MP4's video track read from its boxes (no decoder needed, whatever the codec); other containers through
    OpenCV."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            is_mp4 = f.read(8)[4:8] == b"ftyp"
        if is_mp4:
            return mp4_video_frames(path)
    except (OSError, ValueError, struct.error):
        return 0
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def _disk_nearly_full(folder: Path) -> bool:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize < (1 << 20)
