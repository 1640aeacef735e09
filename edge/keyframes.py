"""Keyframes: the output rate is not the network's rate.

The network runs on keyframes only; every other frame gets the last keyframe's depth carried to it by the
camera shift between the two (phase correlation on grey frames, ~0.5 ms, then a whole-pixel translation).
Measured on NYUv2 ground truth (DESIGN.md, `python -m smoothdino.benchmarks.keyframes`), a translated keyframe
stays close to the truth for a few frames, and holding it untranslated does not.

    policy      network runs on
    every       every frame (exact: benchmarks, papers)
    N           frames 0, N, 2N, ... of the sequence
    auto        the first frame, then whenever the shift to the keyframe exceeds `max_shift` (a fraction of
                the frame width), its phase-correlation confidence falls below `min_confidence` (the views no
                longer overlap well: a scene cut among them), or the keyframe is `max_age` frames old

The shift is always measured from the keyframe itself, never chained frame to frame, so nothing drifts. Pixels
the translation uncovers get 0 (= no depth, as everywhere). The temporal adapter's previous frame is the
previous keyframe (only keyframes pass through FramePipeline.step), with the shift between the two keyframes.

Decisions depend on the frames alone (no clock), so a resumed `process` replays them on the frames an earlier
run wrote (phase correlation only, no network) and continues exactly where the uninterrupted run would be.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from smoothdino.core.errors import UserError

from .motion import Shift, phase_shift, to_grey
from .pipeline import STAGE_TIMINGS, FramePipeline, FrameResult


@dataclass(frozen=True)
class KeyframePolicy:
    """When the network runs. `every` is N = 1. `auto` uses the three limits (defaults from the NYUv2 figures in
    benchmarks/README.md: a quarter of the median ground-truth error of 2 frames apart, and the fast-motion tail
    cut off)."""

    mode: str = "every"  # every | n | auto
    n: int = 1
    max_shift: float = 0.04  # auto: |shift to the keyframe| above this fraction of the frame width
    min_confidence: float = 0.25  # auto: phase-correlation response to the keyframe below this
    max_age: int = 4  # auto: at most this many frames carried from one keyframe

    @property
    def label(self) -> str:
        return {"every": "every", "n": str(self.n), "auto": "auto"}[self.mode]

    def wants_keyframe(self, age: int, shift: Shift | None, width: int) -> bool:
        """age: frames since the keyframe (this frame would be `age` old); shift: this frame against the keyframe."""
        if self.mode == "every" or shift is None:
            return True
        if self.mode == "n":
            return age >= self.n
        return (age >= self.max_age or shift.confidence < self.min_confidence
                or math.hypot(shift.dx, shift.dy) > self.max_shift * width)


EVERY_FRAME = KeyframePolicy()


def parse_keyframes(text: str | int | KeyframePolicy, option: str = "--keyframes") -> KeyframePolicy:
    """'every' | 'auto' | N (a whole number >= 1) -> a policy; anything else is one line naming the option."""
    if isinstance(text, KeyframePolicy):
        return text
    word = str(text).strip().lower()
    if word == "every":
        return EVERY_FRAME
    if word == "auto":
        return KeyframePolicy(mode="auto")
    if word.isdigit() and int(word) >= 1:
        return EVERY_FRAME if int(word) == 1 else KeyframePolicy(mode="n", n=int(word))
    raise UserError(f"{option} {text!r}: use every, auto, or a whole number N >= 1 (the network on every N-th frame)")


def translate_depth(depth: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """depth carried by the camera shift: out(x) = depth(x - d), d rounded to whole pixels (nearest: depth edges
    and holes stay sharp, no blend of near and far), 0 where x - d falls outside the frame."""
    h, w = depth.shape
    sx, sy = int(round(dx)), int(round(dy))
    out = np.zeros_like(depth)
    if abs(sx) >= w or abs(sy) >= h:
        return out
    out[max(sy, 0): h + min(sy, 0), max(sx, 0): w + min(sx, 0)] = depth[max(-sy, 0): h - max(sy, 0),
                                                                         max(-sx, 0): w - max(sx, 0)]
    return out


class KeyframeSteps:
    """FramePipeline.step behind a keyframe policy: step(rgb) -> FrameResult for every frame, the network only on
    keyframes. `replay(rgb)` advances the policy over a frame an earlier run wrote (no network); a later step
    rebuilds what it needs from the replayed keyframes, so a resumed run continues exactly."""

    def __init__(self, pipeline: FramePipeline, policy: KeyframePolicy = EVERY_FRAME):
        self.pipeline = pipeline
        self.policy = policy
        self.reset()

    def reset(self) -> None:
        """A new sequence: the next frame is a keyframe with no previous frame."""
        self.pipeline.reset()
        self._rgb: np.ndarray | None = None  # the keyframe's RGB (to rebuild after a replay)
        self._previous_rgb: np.ndarray | None = None  # the keyframe before it (the adapter's previous frame)
        self._grey: np.ndarray | None = None  # the keyframe's grey frame: every shift is measured from it
        self._depth: np.ndarray | None = None  # its depth; None while it was only replayed
        self._synced = True  # the pipeline's previous frame is the keyframe
        self._age = 0  # frames since the keyframe
        self._timestamp: float | None = None
        self._ready_at = 0.0  # perf_counter when its depth was ready

    def _to_grey(self, rgb: np.ndarray) -> np.ndarray | None:
        return None if self.policy.mode == "every" else to_grey(rgb, self.pipeline.motion_downscale)

    def _decide(self, grey: np.ndarray | None) -> tuple[bool, Shift | None, float]:
        """(keyframe?, shift from the keyframe, seconds spent measuring it)."""
        if self._rgb is None or self.policy.mode == "every":
            return True, None, 0.0
        if self.policy.mode == "n" and self._age + 1 >= self.policy.n:
            return True, None, 0.0  # no shift needed to decide, and none used: the network runs
        start = time.perf_counter()
        shift = phase_shift(self._grey, grey, self.pipeline.motion_downscale)
        keyframe = self.policy.wants_keyframe(self._age + 1, shift, self.pipeline.frame_size[1])
        return keyframe, shift, time.perf_counter() - start

    def _new_keyframe(self, rgb, grey, depth, timestamp) -> None:
        self._previous_rgb, self._rgb, self._grey, self._depth = self._rgb, rgb, grey, depth
        self._age, self._timestamp, self._ready_at = 0, timestamp, time.perf_counter()

    def replay(self, rgb: np.ndarray, timestamp: float | None = None) -> int:
        """A frame whose output an earlier run wrote: the same decision as then, without the network. Returns
        its age in frames (0: it was a keyframe)."""
        grey = self._to_grey(rgb)
        keyframe, _, _ = self._decide(grey)
        if keyframe:
            self._new_keyframe(rgb, grey, None, timestamp)
            self._synced = False
        else:
            self._age += 1
        return self._age

    def _sync(self, rgb: np.ndarray | None) -> None:
        """The pipeline's previous frame := `rgb` (levels only), or none."""
        if rgb is None:
            self.pipeline.reset()
        else:
            self.pipeline.prime(rgb)

    def step(self, rgb: np.ndarray, timestamp: float | None = None) -> FrameResult:
        """One frame (uint8 RGB at the pipeline's size) -> FrameResult; `keyframe`, `age_frames` and `age_ms` say
        where its depth comes from. `timestamp` (seconds, the frame's capture time) gives the age in ms; without
        it, the time since the keyframe's depth was ready."""
        start = time.perf_counter()
        grey = self._to_grey(rgb)
        keyframe, shift, motion = self._decide(grey)
        if keyframe:
            if not self._synced:  # after a replay: the adapter's previous frame is the replayed keyframe
                self._sync(self._rgb)
                self._synced = True
            result = self.pipeline.step(rgb)
            if motion:  # the decision's own phase correlation (every and N measure none)
                result.timings["motion"] += motion
            self._new_keyframe(rgb, grey, result.depth, timestamp)
            return result
        if self._depth is None:  # the keyframe was replayed: compute it again, exactly as the first run did
            self._sync(self._previous_rgb)
            self._depth = self.pipeline.step(self._rgb).depth
            self._synced = True
        self._age += 1
        mark = time.perf_counter()
        depth = translate_depth(self._depth, shift.dx, shift.dy)
        timings = dict.fromkeys(STAGE_TIMINGS, 0.0)
        timings["motion"] = motion
        timings["propagate"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - start
        if timestamp is not None and self._timestamp is not None:
            age_ms = (timestamp - self._timestamp) * 1000.0
        else:
            age_ms = (time.perf_counter() - self._ready_at) * 1000.0
        return FrameResult(depth=depth, shift=shift, scene_cut=False, timings=timings, keyframe=False,
                           age_frames=self._age, age_ms=age_ms)
