"""Recorded sources: NYUv2 sequence folders (<i>.jpg + <i>.png depth), image folders and video files. They deliver
every frame; a missing or corrupt frame is skipped and counted, never raised."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
from smoothdino.core.console import notice
from smoothdino.core.errors import UserError

from .frame import (
    IMAGE_SUFFIXES,
    Frame,
    SourceStats,
    _natural_key,
    read_depth_png,
    read_image,
)


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

    def load(self, position: int, depth: bool = True) -> Frame | None:
        """The frame at `position`, None when it is missing or corrupt; `depth=False` leaves the ground truth
        undecoded (depth_gt None: what only reads the RGB, e.g. a keyframe schedule)."""
        stem, rgb_path, depth_path = self.frames[position]
        bgr = read_image(rgb_path)
        if bgr is None:
            return None
        gt = read_depth_png(depth_path) if depth_path and depth else None
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
    """A video file, every frame in order. Frames are named by their index, zero-padded (000000, 000001, ...: as a
    camera's frames), so a resumed `process` finds the PNGs of the frames it wrote. Read strictly in order (no
    seeking: OpenCV's frame seeking is not exact on every codec)."""

    live = False

    def __init__(self, path: Path, limit: int | None = None):
        self.path = Path(path)
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise UserError(f"{self.path}: OpenCV cannot open this video (missing, or codec not supported)")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        count = max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))  # the container's word: progress only
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
