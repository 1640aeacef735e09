"""The phase correlation runs beside the encoder, not after it.

Both are slowed by a fixed 0.3 s (sleeps release the GIL, as OpenCV and ONNX Runtime do), as on a Jetson
at full size where the encoder is the long stage: the frame total must stay below encoder + motion, which
a pipeline that runs them one after the other can never do (both are inside the total). The same frames
with the motion submitted synchronously must miss the bound, which shows that the bound can fail.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

from smoothdino.edge import pipeline as pipeline_module
from smoothdino.edge.motion import Shift
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.edge.sources.synthetic import SyntheticScene

from .conftest import SMALL

SLOWDOWN = 0.3  # seconds added to the phase correlation and to the encoder
FIXED_SHIFT = Shift(1.5, -0.5, 0.9)  # confident: the adapter runs on it


def _slow_phase_shift(previous_grey, grey, downscale=1):
    time.sleep(SLOWDOWN)
    return FIXED_SHIFT


class _SerialExecutor:
    """submit() runs the job at once, on the caller's thread: what a pipeline without overlap does."""

    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True):
        pass


def _second_frame_timings(export, serial: bool) -> dict[str, float]:
    frames = [rgb for rgb, _ in SyntheticScene(SMALL[0], SMALL[1], frames=3)]
    with DepthPipeline.from_folder(export, backend="onnxruntime") as pipeline:
        encode = pipeline._encode

        def slow_encode(rgb):
            time.sleep(SLOWDOWN)
            return encode(rgb)

        pipeline._encode = slow_encode
        if serial:
            pipeline._motion.shutdown()
            pipeline._motion = _SerialExecutor()
        results = [pipeline.step(rgb) for rgb in frames]
    assert [r.shift for r in results[1:]] == [FIXED_SHIFT] * 2  # the slowed motion really was used
    return min((r.timings for r in results[1:]), key=lambda t: t["total"])


def test_motion_runs_beside_the_encoder(small_export, monkeypatch):
    monkeypatch.setattr(pipeline_module, "phase_shift", _slow_phase_shift)
    t = _second_frame_timings(small_export, serial=False)
    assert t["motion"] >= SLOWDOWN and t["encoder"] >= SLOWDOWN
    assert t["adapter"] > 0 and t["decoder"] > 0  # the whole frame ran, adapter included
    assert t["total"] < t["encoder"] + t["motion"], t


def test_a_serial_pipeline_misses_the_bound(small_export, monkeypatch):
    monkeypatch.setattr(pipeline_module, "phase_shift", _slow_phase_shift)
    t = _second_frame_timings(small_export, serial=True)
    assert t["motion"] >= SLOWDOWN and t["encoder"] >= SLOWDOWN
    assert t["total"] >= t["encoder"] + t["motion"], t
