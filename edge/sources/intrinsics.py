"""Pinhole camera intrinsics: what turns metric depth into 3-D points (point clouds, CameraInfo).

Where they come from, in order: `--intrinsics fx,fy,cx,cy` (pixels of the input frames), the bag's
sensor_msgs/CameraInfo, else NYUv2's Kinect calibration scaled to the frame size (exact for NYUv2
folders; a stated assumption for anything else)."""

from __future__ import annotations

from dataclasses import dataclass

from smoothdino.core.console import notice
from smoothdino.core.errors import UserError


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int  # the image size these values belong to
    height: int

    def scaled(self, height: int, width: int) -> Intrinsics:
        """The same camera at another image size (a resize scales focal lengths and principal point alike,
        as ROS image_proc's resize does)."""
        if (height, width) == (self.height, self.width):
            return self
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    @property
    def k(self) -> list[float]:
        """Row-major 3x3 camera matrix (CameraInfo.k)."""
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    @property
    def p(self) -> list[float]:
        """Row-major 3x4 projection matrix of a monocular camera (CameraInfo.p)."""
        return [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]

    def text(self) -> str:
        return f"fx={self.fx:.2f} fy={self.fy:.2f} cx={self.cx:.2f} cy={self.cy:.2f} at {self.width}x{self.height}"


# NYUv2's Kinect RGB camera (the toolbox's camera_params.m), for its 640x480 frames.
NYU_KINECT = Intrinsics(fx=518.8579, fy=519.4696, cx=325.5824, cy=253.7362, width=640, height=480)


@dataclass(frozen=True)
class IntrinsicsText:
    """`--intrinsics fx,fy,cx,cy` as given: pixels of the input frames, whatever their size."""

    fx: float
    fy: float
    cx: float
    cy: float

    def at(self, height: int, width: int) -> Intrinsics:
        return Intrinsics(self.fx, self.fy, self.cx, self.cy, width, height)


def parse_intrinsics(text: str, option: str = "--intrinsics") -> IntrinsicsText:
    """'518.9,519.5,325.6,253.7' -> fx, fy, cx, cy (pixels of the input frames)."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
        if len(values) != 4 or values[0] <= 0 or values[1] <= 0:
            raise ValueError
    except ValueError:
        raise UserError(f"{option} {text!r}: give fx,fy,cx,cy in pixels of the input frames, "
                        "e.g. 518.86,519.47,325.58,253.74 (fx, fy > 0)") from None
    return IntrinsicsText(*values)


class IntrinsicsChoice:
    """Per frame: the explicit option, else the frame's own (a bag's CameraInfo in frame.meta), else NYUv2's
    Kinect scaled to the frame (said once, so nobody mistakes the assumption for a calibration)."""

    def __init__(self, explicit: IntrinsicsText | None = None, source_name: str = "", nyu: bool = False):
        self.explicit = explicit
        self.source_name = source_name
        self._assumed = nyu  # an NYUv2 folder: the Kinect calibration is its own, nothing to say

    def for_frame(self, meta: dict, height: int, width: int) -> Intrinsics:
        if self.explicit is not None:
            return self.explicit.at(height, width)
        own: Intrinsics | None = meta.get("intrinsics")
        if own is not None:
            return own.scaled(height, width)
        if not self._assumed:
            self._assumed = True
            notice(f"{self.source_name or 'frames'}: no camera calibration; point clouds use NYUv2's Kinect intrinsics "
                   f"scaled to {width}x{height} (pass --intrinsics fx,fy,cx,cy for your camera)")
        return NYU_KINECT.scaled(height, width)
