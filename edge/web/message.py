"""One frame as the page gets it, encoded once whatever the number of pages: the RGB | depth view as a JPEG (the
same picture as the window and the video, colour bar in metres included), the depth as a 16-bit PNG in millimetres
(the file `process` writes for the frame, so what the page reads under the cursor is that file's value) only when a
page asked for it, and a JSON header with what the page shows beside the picture.

The WebSocket message: 4 bytes (big-endian) header length, the header (UTF-8 JSON), the JPEG, then the PNG;
the header gives both sizes (`jpeg_bytes`, `depth_bytes`, 0 when the depth was not asked for), and `stale_s` when
the frame is a page's first of its camera and was written more than a second before (viewers.FRESH_S).

Several cameras (issue 39): each message is one camera's frame. The header's `camera` names it (null: the view has
one camera, as before) and `cameras` lists every camera's name in the order of the page's tiles ([] with one
camera); `seq` counts the frames of all cameras together, so it stays unique; `fps`, `network_fps`,
`viewer_dropped`, the intrinsics and `stale_s` are that camera's own. The page's commands: `{"ack": seq}` per
message, and `{"depth": true|false}` (every camera) or `{"depth": ["front", ...]}` (those cameras only: the depth
PNG is encoded only for a camera some page asked it of)."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import cv2
import numpy as np
from smoothdino.edge.sinks.png import to_millimetres

# fast and small for a depth map: zlib level 1 with PNG's "up" filter (8 ms and 75 KB at 480x640 where OpenCV's
# default adaptive filters take 13 ms for 91 KB); OpenCV before 4.11 has no filter option and uses its default
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1] + (
    [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP] if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {bgr.dtype} {bgr.shape} picture as JPEG")
    return data.tobytes()


def encode_depth_png(depth: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", to_millimetres(depth), PNG_PARAMS)
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {depth.shape} depth map as a 16-bit PNG")
    return data.tobytes()


def _json_default(value):
    """numpy scalars (and anything else odd in a FrameResult) as plain JSON."""
    return _finite(value.item()) if hasattr(value, "item") else str(value)


def _finite(value):
    """NaN and infinities as null, at any depth: JSON has none, and the page's JSON.parse would refuse the frame."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class FrameMessage:
    seq: int  # counts the frames the view encoded; the page acknowledges and snapshots by it
    header: dict
    jpeg: bytes
    depth_png: bytes | None = None
    _payloads: dict = field(default_factory=dict, repr=False)

    @property
    def camera(self) -> str | None:
        """The camera this frame is from (None: the view's only camera)."""
        return self.header.get("camera")

    def payload(self, with_depth: bool) -> bytes:
        """The WebSocket message, with the depth PNG or without (built once each, shared by every page)."""
        with_depth = with_depth and self.depth_png is not None
        if with_depth not in self._payloads:
            header = {**self.header, "seq": self.seq, "jpeg_bytes": len(self.jpeg),
                      "depth_bytes": len(self.depth_png) if with_depth else 0}
            text = json.dumps(_finite(header), default=_json_default, separators=(",", ":")).encode()
            self._payloads[with_depth] = b"".join(
                [struct.pack("!I", len(text)), text, self.jpeg, self.depth_png if with_depth else b""])
        return self._payloads[with_depth]

    def aged(self, age_s: float) -> FrameMessage:
        """This message for a page whose first frame it is, marked with its age (`stale_s`): not shown as live."""
        return FrameMessage(self.seq, {**self.header, "stale_s": round(age_s, 1)}, self.jpeg, self.depth_png)
