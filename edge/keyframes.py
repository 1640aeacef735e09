"""Keyframes: the output rate is not the network's rate.

The network runs on keyframes only; every other frame gets the last keyframe's depth carried to it (edge.carry): by
the camera shift (phase correlation, a translation) or by the camera's pose (corners tracked from the keyframe, PnP,
a z-buffered splat). Measured on NYUv2 ground truth (`python -m smoothdino.benchmarks.keyframes --floor`), a carried
keyframe stays close to the truth for a few frames, the pose carry about twice as long as the shift.

    policy      network runs on
    every       every frame (exact: benchmarks, papers)
    N           every N-th frame: a keyframe when the last one is N frames old
    auto        the first frame, then whenever the keyframe is more than `max_age` frames old, the shift to it
                exceeds `max_shift` (a fraction of the frame width), its phase-correlation confidence falls below
                `min_confidence`, or (pose carry) the corners followed from it cover less than `min_coverage` of the
                frame, or stray from the best homography by more than `max_parallax` of the width (what a rotation
                cannot explain: translation past surfaces at different depths, where a carry uncovers what it
                cannot know)
Under every policy a scene cut makes the frame a keyframe: the old scene's depth is never carried into a new one. A
cut is a break between *consecutive* frames (their phase-correlation response at CUT_WIDTH below the pipeline's
`min_confidence`), never judged against an old keyframe: a fast pan on a slow network is not a cut.

With fusion (edge.fusion), every keyframe's network depth is fused with the previous output carried into its view
(the same carry a frame between keyframes gets), and that fused depth is what later frames carry.

Motion is always measured from the keyframe itself (the shift directly, the corners frame to frame from it), never
chained across keyframes, so nothing drifts. Pixels the carry does not reach get 0 (= no depth). The temporal
adapter's previous frame is the previous keyframe (only keyframes pass through FramePipeline.step).

`KeyframePolicy.wants_keyframe` is the only decision, and it reads frames alone (the shift, the corner tracks, the
age; never depth, never a clock), so a resumed `process` replays decisions on the frames an earlier run wrote, and
`decide_keyframes` computes a whole sequence's schedule without the network (`process --ray` hands it to chunks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
from smoothdino.core.errors import UserError

from .carry import CARRIES, NETWORK, Carried, camera_matrix, carry_depth, solve_pose
from .fusion import DEFAULT_FUSION, FusionSettings, fuse_depth
from .motion import NO_SHIFT, Shift, cut_grey, phase_shift, to_grey
from .pipeline import STAGE_TIMINGS, FramePipeline, FrameResult
from .sources.intrinsics import Intrinsics
from .tracking import KeyframeTracks, TrackState, tracking_grey


class Motion:
    """A frame against the keyframe, from the frames alone. `shift` (phase correlation to the keyframe, full-frame
    pixels) is measured when first asked for: a fused keyframe whose pose solves never needs it (4 ms at 480x640)."""

    def __init__(self, shift: Shift | Callable[[], Shift], cut: bool, tracks: TrackState | None = None):
        self._shift = shift
        self.cut = cut  # a scene cut between the frame before and this one (edge.motion.consecutive_cut)
        self.tracks = tracks  # corners followed from the keyframe (pose carry only)

    @property
    def shift(self) -> Shift:
        if callable(self._shift):
            self._shift = self._shift()
        return self._shift


@dataclass(frozen=True)
class KeyframePolicy:
    """When the network runs. `every` is N = 1. `auto` uses the limits (defaults from the NYUv2 ground-truth sweep
    in docs/keyframes.md (the keyframes_sweep record), `python -m smoothdino.benchmarks.keyframes --sweep`; `auto_policy(carry)` gives each
    carry its own)."""

    mode: str = "every"  # every | n | auto
    n: int = 1
    max_shift: float = 0.04  # auto: |shift to the keyframe| above this fraction of the frame width
    min_confidence: float = 0.25  # auto: phase-correlation response to the keyframe below this
    max_age: int = 4  # auto: at most this many frames carried from one keyframe
    min_coverage: float = 0.0  # auto, pose carry: tracked corners in fewer than this share of the frame's cells
    max_parallax: float = 1.0  # auto, pose carry: corners off the best homography by more than this share of the width

    @property
    def label(self) -> str:
        return {"every": "every", "n": str(self.n), "auto": "auto"}[self.mode]

    def wants_keyframe(self, age: int, motion: Motion | None, width: int) -> bool:
        """age: how old the keyframe's depth would be on this frame, in frames; motion: this frame against the
        keyframe (None: there is no keyframe yet)."""
        if self.mode == "every" or motion is None or motion.cut:
            return True
        if self.mode == "n":
            return age >= self.n
        shift = motion.shift
        tracks = motion.tracks
        return (age > self.max_age or shift.confidence < self.min_confidence
                or math.hypot(shift.dx, shift.dy) > self.max_shift * width
                or (tracks is not None and (tracks.coverage < self.min_coverage or tracks.parallax > self.max_parallax)))


EVERY_FRAME = KeyframePolicy()
# auto's limits for each carry, from the ground-truth sweep (docs/keyframes.md, the keyframes_sweep record)
AUTO_LIMITS = {
    "shift": dict(max_shift=0.04, min_confidence=0.25, max_age=3),
    # parallax, age 5: tuned on two sample sequences (basement, bathroom), checked on the third (bedroom); see
    # docs/keyframes.md. Parallax is scale-free and read from the frames alone (resume and --ray stay exact)
    "pose": dict(max_shift=0.2, min_confidence=0.1, max_age=5, min_coverage=0.5, max_parallax=0.003),
}


def auto_policy(carry: str = "shift") -> KeyframePolicy:
    return KeyframePolicy(mode="auto", **AUTO_LIMITS[carry])


def parse_keyframes(text: str | int | KeyframePolicy, option: str = "--keyframes", carry: str = "shift") -> KeyframePolicy:
    """'every' | 'auto' | N (a whole number >= 1) -> a policy; anything else is one line naming the option. `auto`
    takes the limits chosen for the carry."""
    if isinstance(text, KeyframePolicy):
        return text
    word = str(text).strip().lower()
    if word == "every":
        return EVERY_FRAME
    if word == "auto":
        return auto_policy(carry)
    if word.isdigit() and int(word) >= 1:
        return EVERY_FRAME if int(word) == 1 else KeyframePolicy(mode="n", n=int(word))
    raise UserError(f"{option} {text!r}: use every, auto, or a whole number N >= 1 (the network on every N-th frame)")


def parse_carry(text: str, option: str = "--carry") -> str:
    word = str(text).strip().lower()
    if word not in CARRIES:
        raise UserError(f"{option} {text!r}: use shift (a translation by the phase-correlation shift) or pose (the "
                        "camera's 3-D motion; needs intrinsics)")
    return word


@dataclass(frozen=True)
class FrameGreys:
    """What motion is measured on, computed once per frame: the grey frame phase correlation takes (float32, shrunk by
    the motion downscale) and, for the pose carry, the one corners are tracked on (uint8, edge.tracking)."""

    phase: np.ndarray
    track: np.ndarray | None
    width: int  # the frame's width (pixels of the export's frame size)
    cut: np.ndarray | None = None  # the small grey frame the scene-cut test compares with the frame before


def frame_greys(rgb: np.ndarray, downscale: int, track: bool) -> FrameGreys:
    phase = to_grey(rgb, downscale)
    return FrameGreys(phase, tracking_grey(rgb) if track else None, rgb.shape[1], cut_grey(rgb, phase, downscale))


class KeyframeMotion:
    """The motion of later frames against one keyframe, from frames alone: the phase-correlation shift to the
    keyframe's grey frame and, for the pose carry, its corners followed frame to frame. `measure(greys)` takes every
    frame after the keyframe, in order (the corners are tracked from the frame before)."""

    def __init__(self, keyframe: FrameGreys, downscale: int, cut_below: float):
        self.downscale, self.cut_below = downscale, cut_below
        self.grey = keyframe.phase
        self.previous = keyframe.cut  # the frame before the next one measured (the cut test's reference)
        self.tracks = KeyframeTracks(keyframe.track, keyframe.width) if keyframe.track is not None else None

    def measure(self, greys: FrameGreys) -> Motion:
        tracks = self.tracks.update(greys.track) if self.tracks is not None else None
        cut = consecutive_cut(self.previous, greys.cut, self.cut_below)
        self.previous = greys.cut
        return Motion(partial(phase_shift, self.grey, greys.phase, self.downscale), cut, tracks)


def consecutive_cut(previous: np.ndarray, current: np.ndarray, cut_below: float) -> bool:
    """A scene cut between two consecutive frames' cut greys (edge.motion.cut_grey): their phase-correlation response
    below `cut_below`. On the NYUv2 sample at 320x240, consecutive frames of a shot respond >= 0.19 and frames of
    different scenes <= 0.11 (at full size some consecutive pairs of a fast pan fall to 0.02: hence the small size)."""
    return phase_shift(previous, current).confidence < cut_below


def decide_keyframes(frames: Iterable[np.ndarray], policy: KeyframePolicy, motion_downscale: int = 1,
                     cut_below: float = 0.1, carry: str = "shift") -> Iterator[bool]:
    """A sequence's keyframe schedule without the network: one decision per frame (uint8 RGB at the export's frame
    size, the readable frames in order), exactly what KeyframeSteps decides on them."""
    key: KeyframeMotion | None = None
    age = 0
    for rgb in frames:
        if policy.mode == "every":
            yield True
            continue
        greys = frame_greys(rgb, motion_downscale, carry == "pose")
        motion = key.measure(greys) if key is not None else None
        keyframe = policy.wants_keyframe(age + 1, motion, rgb.shape[1])
        if keyframe:
            key, age = KeyframeMotion(greys, motion_downscale, cut_below), 0
        else:
            age += 1
        yield keyframe


def pose_intrinsics(carry: str, intrinsics: Intrinsics | None, frame_size: tuple[int, int]) -> np.ndarray | None:
    """The camera matrix at the network's frame size for the pose carry (None for the shift carry)."""
    if carry != "pose":
        return None
    if intrinsics is None:
        raise UserError("--carry pose: the camera's intrinsics are unknown; give --intrinsics fx,fy,cx,cy (pixels of "
                        "the input frames) or use --carry shift")
    at = intrinsics.scaled(*frame_size)
    return camera_matrix(at.fx, at.fy, at.cx, at.cy)


def carried_result(carried: Carried, motion: Motion, timings: dict[str, float], age_frames: int,
                   age_ms: float) -> FrameResult:
    """A FrameResult for a carried frame (synchronous and asynchronous alike)."""
    return FrameResult(depth=carried.depth, shift=motion.shift, scene_cut=False, timings=timings, keyframe=False,
                       age_frames=age_frames, age_ms=age_ms, carry=carried.carry, pose=carried.pose,
                       tracked=motion.tracks.tracked if motion.tracks is not None else 0, fallback=carried.fallback)


def carry_to(depth: np.ndarray, motion: Motion, k: np.ndarray | None, tracks: KeyframeTracks | None) -> Carried:
    """The keyframe's depth carried to the frame `motion` describes: by its pose when the carry is `pose` and the
    pose solves, else by the shift (saying why)."""
    pose, why = None, ""
    if k is not None and tracks is not None:
        pose, why = solve_pose(*tracks.correspondences(), depth, k)
    return carry_depth(depth, motion.shift if pose is None else NO_SHIFT, pose, k, fallback=why and f"pose: {why}")


def fused_result(result: FrameResult, carried: Carried | None, age: int, state: np.ndarray | None,
                 settings: FusionSettings) -> FrameResult:
    """A keyframe's FrameResult with its depth fused with the previous output carried into its view (`carried`: None
    restarts the fusion: the first frame, a scene cut) and the previous fusion's state. Synchronous and asynchronous
    alike; `result.fusion.state` is what the next one starts from."""
    start = time.perf_counter()
    fused = fuse_depth(result.depth, None if carried is None else carried.depth,
                       "pose" if carried is None else carried.carry, age, state, settings)
    result.depth = fused.depth
    result.fusion, result.fused = fused, True
    result.timings["fusion"] = time.perf_counter() - start
    return result


class KeyframeSteps:
    """FramePipeline.step behind a keyframe policy: step(rgb) -> FrameResult for every frame, the network only on
    keyframes. `replay(rgb)` advances the policy over a frame an earlier run wrote (no network); a later step
    rebuilds what it needs from the replayed keyframes, so a resumed run continues exactly. Both take
    `keyframe=True/False` to follow a schedule computed beforehand (decide_keyframes) instead of deciding.
    `fusion`: every keyframe's depth fused with the previous output (edge.fusion); after a replay the replayed
    keyframe's output cannot be computed again from its frame, so the caller restores it (`restore_keyframe`)."""

    def __init__(self, pipeline: FramePipeline, policy: KeyframePolicy = EVERY_FRAME, carry: str = "shift",
                 intrinsics: Intrinsics | None = None, fusion: bool = False,
                 fusion_settings: FusionSettings = DEFAULT_FUSION):
        self.pipeline = pipeline
        self.policy = policy
        self.carry = parse_carry(carry)
        self.fusion = bool(fusion)
        self.fusion_settings = fusion_settings
        self.k: np.ndarray | None = None  # the camera matrix at the frame size (pose carry)
        if intrinsics is not None:
            self.set_intrinsics(intrinsics)
        self.reset()

    def set_intrinsics(self, intrinsics: Intrinsics | None) -> None:
        """The camera's intrinsics (any image size: scaled to the network's); the pose carry needs them."""
        self.k = pose_intrinsics(self.carry, intrinsics, self.pipeline.frame_size)

    def reset(self) -> None:
        """A new sequence: the next frame is a keyframe with no previous frame."""
        self.pipeline.reset()
        self._rgb: np.ndarray | None = None  # the keyframe's RGB (to rebuild after a replay)
        self._previous_rgb: np.ndarray | None = None  # the keyframe before it (the adapter's previous frame)
        self._motion: KeyframeMotion | None = None  # motion measured from the keyframe
        self._depth: np.ndarray | None = None  # its depth (read-only, ours); None while it was only replayed
        self._fusion_state: np.ndarray | None = None  # its fusion's state (edge.fusion), with its depth
        self._synced = True  # the pipeline's previous frame is the keyframe
        self._age = 0  # frames since the keyframe
        self._timestamp: float | None = None
        self._ready_at = 0.0  # perf_counter when its depth was ready

    @property
    def measuring(self) -> bool:
        """Whether frames are measured against the keyframe: to decide (N, auto) or to fuse (every frame too)."""
        return self.policy.mode != "every" or self.fusion

    @property
    def needs_keyframe(self) -> bool:
        """After a replay with fusion: the replayed keyframe's output must be restored before the next step."""
        return self.fusion and self._depth is None and self._rgb is not None

    def restore_keyframe(self, depth: np.ndarray, state: np.ndarray | None) -> None:
        """The output an earlier run wrote for the last replayed keyframe (at the frame size, exactly as computed)
        and its fusion's state (keyframe_state)."""
        if depth.shape != tuple(self.pipeline.frame_size):
            raise ValueError(f"a keyframe output of {depth.shape}, not {self.pipeline.frame_size}")
        self._depth = np.array(depth, np.float32)
        self._depth.flags.writeable = False
        self._fusion_state = None if state is None else np.array(state, np.float64)

    def keyframe_state(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(the last keyframe's output, its fusion state): what restore_keyframe takes back (None before one)."""
        return None if self._depth is None else (self._depth, self._fusion_state)

    def _measure(self, rgb: np.ndarray) -> tuple[FrameGreys | None, Motion | None, float]:
        if not self.measuring:
            return None, None, 0.0
        start = time.perf_counter()
        greys = frame_greys(rgb, self.pipeline.motion_downscale, self.carry == "pose")
        motion = self._motion.measure(greys) if self._motion is not None else None
        return greys, motion, time.perf_counter() - start

    def _decide(self, motion: Motion | None, forced: bool | None) -> bool:
        if forced is not None:
            if not forced and self._motion is None and self.policy.mode != "every":
                raise ValueError("a schedule that does not start with a keyframe")
            return forced
        return self.policy.wants_keyframe(self._age + 1, motion, self.pipeline.frame_size[1])

    def _new_keyframe(self, rgb, greys: FrameGreys | None, depth, timestamp) -> None:
        if depth is not None:  # ours to keep: a caller that edits the result's depth must not change later frames
            depth = depth.copy()
            depth.flags.writeable = False
        self._previous_rgb, self._rgb, self._depth = self._rgb, rgb, depth
        if greys is not None:
            self._motion = KeyframeMotion(greys, self.pipeline.motion_downscale, self.pipeline.min_confidence)
        self._age, self._timestamp, self._ready_at = 0, timestamp, time.perf_counter()

    def replay(self, rgb: np.ndarray, timestamp: float | None = None, keyframe: bool | None = None) -> int:
        """A frame whose output an earlier run wrote: the same decision as then, without the network. Returns
        its age in frames (0: it was a keyframe)."""
        greys, motion, _ = self._measure(rgb)
        if self._decide(motion, keyframe):
            self._new_keyframe(rgb, greys, None, timestamp)
            self._synced = False
        else:
            self._age += 1
        return self._age

    def _carry(self, motion: Motion) -> Carried:
        """The keyframe's depth (the last output of the network, fused) carried to the frame `motion` describes."""
        if self.carry == "pose" and self.k is None:
            pose_intrinsics(self.carry, None, self.pipeline.frame_size)  # raises: one line naming the fix
        return carry_to(self._depth, motion, self.k, self._motion.tracks)

    def _keyframe_depth(self) -> None:
        """After a replay: the replayed keyframe's depth, computed again exactly as the first run did (without
        fusion; with it, the caller restored it)."""
        if self._depth is not None:
            return
        if self.fusion:
            raise RuntimeError("a fused keyframe that was replayed must be restored (restore_keyframe) before a step")
        self.pipeline.reset() if self._previous_rgb is None else self.pipeline.prime(self._previous_rgb)
        depth = self.pipeline.step(self._rgb).depth
        depth.flags.writeable = False
        self._depth, self._synced = depth, True

    def step(self, rgb: np.ndarray, timestamp: float | None = None, keyframe: bool | None = None) -> FrameResult:
        """One frame (uint8 RGB at the pipeline's size) -> FrameResult; `keyframe`, `carry`, `age_frames` and
        `age_ms` say where its depth comes from. `timestamp` (seconds, the frame's capture time) gives the age in ms;
        without it, the time since the keyframe's depth was ready."""
        start = time.perf_counter()
        greys, motion, measured = self._measure(rgb)
        if self._decide(motion, keyframe):
            prior, carrying = None, 0.0
            if self.fusion and motion is not None and not motion.cut and self._rgb is not None:
                self._keyframe_depth()
                mark = time.perf_counter()
                prior = self._carry(motion)  # the output this frame would have had: what the fusion starts from
                carrying = time.perf_counter() - mark
            if not self._synced:  # after a replay: the adapter's previous frame is the replayed keyframe
                self.pipeline.reset() if self._rgb is None else self.pipeline.prime(self._rgb)
                self._synced = True
            result = self.pipeline.step(rgb)
            result.timings["motion"] = result.timings.get("motion", 0.0) + measured  # the decision's own measurement (every measures none)
            if motion is not None:  # a cut is decided between consecutive frames, not against the last keyframe
                result.scene_cut = motion.cut
            if self.fusion:
                result = fused_result(result, prior, self._age + 1, self._fusion_state, self.fusion_settings)
                self._fusion_state = result.fusion.state
                result.timings["propagate"] = carrying
                result.timings["total"] += carrying + result.timings["fusion"]
            self._new_keyframe(rgb, greys, result.depth, timestamp)
            return result
        self._keyframe_depth()
        self._age += 1
        mark = time.perf_counter()
        carried = self._carry(motion)
        timings = dict.fromkeys(STAGE_TIMINGS, 0.0)
        timings["motion"] = measured
        timings["propagate"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - start
        if timestamp is not None and self._timestamp is not None:
            age_ms = (timestamp - self._timestamp) * 1000.0
        else:
            age_ms = (time.perf_counter() - self._ready_at) * 1000.0
        result = carried_result(carried, motion, timings, self._age, age_ms)
        result.fused = self.fusion
        return result
