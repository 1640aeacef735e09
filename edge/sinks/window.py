"""The live window: the RGB | depth view pixel for pixel, keys q/Esc (quit) and s (snapshot)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from smoothdino.core.console import notice
from smoothdino.edge.machine.display import window_unavailable_reason

from .png import atomic_imwrite, to_millimetres
from .view import DISPLAY_RANGE, colorize, with_depth_legend


class WindowSink:
    """The live window: the RGB | depth view, pixel for pixel. Keys: q or Esc quits, s saves a snapshot (RGB,
    16-bit depth in millimetres, colour depth) into `snapshots`; closing the window quits too. Where no window
    can open (headless OpenCV, no X server) the loop goes on without one, after a notice. `depth_range`: the metres
    the snapshot's colour depth spans (its colour bar says so)."""

    def __init__(self, title: str = "smoothdino", snapshots: Path = Path("snapshots"), random_weights: bool = False,
                 depth_range: tuple[float, float] = DISPLAY_RANGE):
        self.title = title
        self.depth_range = depth_range
        self.snapshots = Path(snapshots)
        self.random_weights = random_weights
        self.quit = False
        self.opened = False
        self.visible_when_open: float | None = None  # visibility read after the first frame; -1: cannot tell
        why = window_unavailable_reason()  # asked first: OpenCV's Qt build aborts the process without a display
        self.enabled = why is None
        if why:
            notice(f"no window: {why}; continuing without one (pass --headless to silence this)")

    def show(self, canvas: np.ndarray, rgb: np.ndarray | None = None, depth: np.ndarray | None = None,
             name: str = "frame") -> None:
        """Draw `canvas`; `rgb` (RGB uint8) and `depth` (metres) are what `s` saves."""
        if not self.enabled:
            return
        if self.opened and self._closed():
            self.quit = True  # closed with the mouse: the user ends the run as with q
            return
        try:
            if not self.opened:  # no Qt toolbar or status bar: the window shows the canvas and nothing else
                cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
                self.opened = True
            cv2.imshow(self.title, canvas)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            notice("no display available (headless OpenCV or no $DISPLAY); continuing without a window")
            self.enabled = False
            return
        if key in (ord("q"), 27):
            self.quit = True
        elif key == ord("s") and rgb is not None and depth is not None:
            self.save_snapshot(name, rgb, depth)

    def _closed(self) -> bool:
        """The window was closed since the last frame (Qt forgets it; GTK reports it invisible). Backends that
        cannot tell (visibility -1 while open) are never taken for closed."""
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            return True
        if self.visible_when_open is None:
            self.visible_when_open = visible
        return self.visible_when_open == 1 and visible < 1

    def save_snapshot(self, name: str, rgb: np.ndarray, depth: np.ndarray) -> list[Path]:
        """<snapshots>/<time>-<frame>_rgb.png, _depth_mm.png (uint16), _depth_color.png (the colour depth with its
        colour bar below it, in metres); a failure (a full disk) is one notice, never the end of a live run."""
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        height, width = depth.shape[:2]
        colour = with_depth_legend(colorize(depth, self.depth_range), 0, width, height, self.depth_range)
        images = {f"{stem}_rgb.png": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), f"{stem}_depth_mm.png": to_millimetres(depth),
                  f"{stem}_depth_color.png": colour}
        paths = [self.snapshots / file_name for file_name in images]
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
            for path, image in zip(paths, images.values()):
                atomic_imwrite(path, image)
        except OSError as err:
            notice(f"snapshot not saved: {err}")
            return []
        notice("snapshot: " + ", ".join(str(p) for p in paths)
               + (" (random weights: the depth is not metric)" if self.random_weights else ""))
        return paths

    def close(self) -> None:
        if self.enabled and self.opened:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)  # lets the GUI thread actually take the window down
            except cv2.error:
                pass
