"""Live depth from a webcam (or a video file) with OpenCV, through smoothdino's Python API.

    python examples/webcam.py --engines engines/vits14-temporal            # camera 0, a window; q quits
    python examples/webcam.py --engines engines/vits14-temporal --source run.mp4 --frames 100 --headless

Frames go in as OpenCV gives them (BGR, any size: declared with colour="bgr"); depth comes back in metres at the
frame's size. With --async the network runs in its own thread and the window never waits for it.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

import smoothdino


def colour_depth(depth: np.ndarray, near: float = 0.5, far: float = 6.0) -> np.ndarray:
    """Metres -> BGR, near = warm; 0 (no depth) is black."""
    scaled = np.clip((far - depth) / (far - near), 0.0, 1.0)
    picture = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    picture[depth <= 0] = 0
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="engines/vits14-temporal", help="export folder (manifest.json)")
    parser.add_argument("--source", default="0", help="camera index or a video file")
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: never)")
    parser.add_argument("--headless", action="store_true", help="no window: print one line a frame")
    parser.add_argument("--async", dest="asynchronous", action="store_true", help="the network in its own thread")
    parser.add_argument("--keyframes", default="every", help="every, N or auto (without --async)")
    args = parser.parse_args()

    capture = cv2.VideoCapture(int(args.source) if args.source.isdigit() else args.source)
    if not capture.isOpened():
        raise SystemExit(f"cannot open {args.source}")
    frames = 0
    with smoothdino.open(args.engines, colour="bgr", asynchronous=args.asynchronous,
                         keyframes="every" if args.asynchronous else args.keyframes) as model:
        print(model.description)
        while not args.frames or frames < args.frames:
            ok, frame = capture.read()  # BGR, the camera's size
            if not ok:
                break
            frames += 1
            out = model.step(frame, timestamp=time.monotonic())
            if out is None:  # --async: no keyframe yet
                continue
            centre = out.depth[out.depth.shape[0] // 2, out.depth.shape[1] // 2]
            line = (f"frame {frames}: {out.depth.shape[1]}x{out.depth.shape[0]} centre {centre:.2f} m "
                    f"{'keyframe' if out.keyframe else f'age {out.age_frames}'} {out.timings['total'] * 1000:.0f} ms")
            if args.headless:
                print(line, flush=True)
                continue
            cv2.imshow("smoothdino", np.hstack([frame, colour_depth(out.depth)]))
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                break
    capture.release()
    if not args.headless:
        cv2.destroyAllWindows()


if __name__ == "__main__":
    main()
