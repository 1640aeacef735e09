"""Several cameras in one run (`live --source A --source B ...`): each camera's name, intrinsics and source, and a
source the run can stop from another thread.

A camera's name is what its outputs are called by: its run folder under `--out`, its video, its ROS 2 namespace, its
Foxglove channels and its tile in the browser view. It is a ROS name token (letters, digits, `_`; not starting with a
digit) so that it is valid everywhere: by default from the source (a file's stem, `video0` for /dev/video0 or 0,
`csi0` for csi://0, `synthetic0`, `camera<i>` for anything else), or `--name` per source."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smoothdino.core.errors import UserError

from .sources import Frame

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CameraSpec:
    source: str  # as --source takes it
    name: str  # its outputs' name (a ROS name token)
    intrinsics: str | None = None  # fx,fy,cx,cy of its frames, or None


def optical_frame(name: str) -> str:
    """A camera's frame_id in the Foxglove channels and ROS 2 topics of a run with several cameras (REP 103's
    camera optical frame: z forward, x right, y down)."""
    return f"{name}_optical_frame"


def default_name(source: str, index: int) -> str:
    """A camera's name from its source (see the module's docstring)."""
    spec = source.strip()
    if spec.isdigit():
        return f"video{int(spec)}"
    if match := re.fullmatch(r"/dev/video(\d+)", spec):
        return f"video{match.group(1)}"
    if match := re.fullmatch(r"csi://(\d+)", spec):
        return f"csi{match.group(1)}"
    if spec.startswith("synthetic"):
        return f"synthetic{index}"
    if "!" in spec or "://" in spec:  # a GStreamer pipeline, a stream URL
        return f"camera{index}"
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(spec).stem) or f"camera{index}"
    return stem if _TOKEN.fullmatch(stem) else f"cam_{stem}"


def camera_specs(sources: list[str], names: list[str] | None = None,
                 intrinsics: list[str] | None = None) -> list[CameraSpec]:
    """The cameras of a run, checked: `names` none or one per source (each a ROS name token, all different);
    `intrinsics` none, one for every camera, or one per source. Two sources named alike get -> name, name_2, ..."""
    names, intrinsics = list(names or []), list(intrinsics or [])
    if names and len(names) != len(sources):
        raise UserError(f"--name given {len(names)} times for {len(sources)} sources; give one --name per --source, "
                        "in the same order (or none: names come from the sources)")
    if len(intrinsics) not in (0, 1, len(sources)):
        raise UserError(f"--intrinsics given {len(intrinsics)} times for {len(sources)} sources; give it once (every "
                        "camera alike) or once per --source, in the same order")
    for name in names:
        if not _TOKEN.fullmatch(name):
            raise UserError(f"--name {name!r}: a camera's name is a ROS name token (letters, digits and _, not "
                            "starting with a digit), e.g. front or wrist_left")
    if len(set(names)) != len(names):
        raise UserError(f"--name: {sorted(n for n in names if names.count(n) > 1)[0]!r} is given twice; each camera "
                        "needs its own name")
    chosen = list(names)
    if not chosen:
        for i, source in enumerate(sources):
            base, k = default_name(source, i), 2
            name = base
            while name in chosen:
                name, k = f"{base}_{k}", k + 1
            chosen.append(name)
    each = intrinsics * len(sources) if len(intrinsics) == 1 else intrinsics or [None] * len(sources)
    return [CameraSpec(source, name, fx) for source, name, fx in zip(sources, chosen, each)]


def camera_path(path: Path, name: str) -> Path:
    """A file output per camera: run.mp4 -> run-front.mp4."""
    path = Path(path)
    return path.with_name(f"{path.stem}-{name}{path.suffix}")


class StoppableSource:
    """A source that ends, between two frames, once `stop` is set (another camera failed, Ctrl-C, the window's q):
    that camera's loop then flushes its outputs as at the end of its stream. Everything else is the source's."""

    def __init__(self, source, stop: threading.Event):
        self._source = source
        self._stop = stop
        self.stopped = False  # ended by `stop`, not by the source

    def __getattr__(self, name: str):  # name, live, stats, fps, close, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._source, name)

    def halt(self) -> None:
        """Called by the run's main thread: set the stop and wake a camera that waits for frames (CameraSource), so a
        dead camera's loop ends too."""
        self._stop.set()
        interrupt = getattr(self._source, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._source:
            if self._stop.is_set():
                self.stopped = True
                return
            yield frame
        self.stopped = self._stop.is_set()
