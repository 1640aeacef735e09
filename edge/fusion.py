"""Temporal fusion in depth space: steady depth without training, on every network frame.

Per-frame monocular depth flickers, mostly in its scale (the SmoothDINOv2 paper puts most of its gain there). At every
keyframe the previous *output*, carried into the new view (edge.carry: by the camera's pose, else the shift), meets the
network's new depth:

    1. align   r = log(network / carried) on the pixels both have. Its median over the whole view (the scale) and over
               a coarse grid of blocks (a smooth field, FIELD_GRID, bilinear between block centres, each within
               `agree` of the scale: a moving object is not a trend) say how the network changed its mind since the
               last output. How much of that change to take is a one-number Kalman filter: the carried output's error
               is what it had plus what a carry adds (`carry_scale` a step, more for an older carry or a 2-D shift);
               the network's jitter is learned from the changes themselves (an average, `memory`, capped at
               MAX_NOISE). A jittery network is averaged over several keyframes; a steady one is followed at once; a
               change past MIN_OUTLIER (and OUTLIER sigmas) is a failed carry or a new view: the network is followed.
    2. blend   where the aligned network and the carried output agree (|log ratio| < `agree`), a weighted mean in log
               depth, the weight again from a Kalman step (per-pixel jitter learned from the median squared change,
               `carry_pixel` a carry), lowered smoothly as the disagreement grows, and 0 next to a depth edge of the
               carried map (where a carry's errors live).
    3. else    the network's depth alone: where they disagree (a person walking in, a door opening) the output
               follows the network at once, so a moving object leaves no ghost after one frame.

The fusion restarts (the network's depth as it comes) at a scene cut, on the first frame, and when less than
`min_overlap` of the view is seen by both. Its whole state is the previous output and four numbers (Fused.state), so a
resumed run that restores both continues exactly (edge.loop keeps them in <run>/.fusion/). A perfect network is left
alone: its changes are small, so it is taken at once. `python -m smoothdino.benchmarks.stability` measures all of this
without a network (a simulated one: NYUv2 ground truth under an error model) and chose the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from smoothdino.core.errors import UserError

FUSIONS = ("auto", "on", "off")  # what --fusion accepts; auto: on where the camera is known (the pose carry)
FIELD_GRID = (3, 4)  # rows x columns of blocks the smooth part of the alignment is measured on
OUTLIER = 3.0  # an innovation beyond this many of its expected sigmas is not noise: the carry failed or the scene changed
MIN_OUTLIER = 0.25  # ... and beyond this (log depth, about 28 %), whatever was expected
MAX_NOISE = 0.1  # the network's per-frame noise is believed up to this sigma (log depth): a carry that drifts
# for many frames would otherwise teach the filter that the network is noise, and the drift would stay
MIN_BLOCK = 0.2  # a block whose co-visible share is below this takes the global scale instead of its own median
STATS_WIDTH = 160  # the medians are taken on every s-th pixel, at most this many wide
_TINY = np.float32(1e-6)


@dataclass(frozen=True)
class FusionSettings:
    """The fusion's knobs (defaults from benchmarks/stability.py's sweep, tuned on two NYUv2 sample sequences)."""

    carry_scale: float = 0.02  # relative scale error one pose carry adds (sigma): how far the carried output is trusted
    carry_pixel: float = 0.01  # relative per-pixel error one pose carry adds (sigma), away from depth edges
    shift_factor: float = 3.0  # a 2-D shift carry errs this many times more than a pose carry
    memory: float = 0.7  # the network's noise is estimated by an average that keeps this share of its last value
    agree: float = 0.1  # |log(aligned network / carried)| at and beyond which a pixel is the network's alone
    edge: float = 0.15  # a carried pixel whose 3x3 neighbourhood spans more than this log depth sits on a depth edge
    min_overlap: float = 0.1  # restart when fewer pixels than this share have depth in both

    def describe(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


DEFAULT_FUSION = FusionSettings()
FRESH = np.array([1.0, 0.0, 1.0, 0.0])  # (scale P, scale noise, pixel P, pixel noise) of a restart: P large, no noise seen


@dataclass(frozen=True)
class Fused:
    """One keyframe's fusion: the output depth and what happened."""

    depth: np.ndarray  # float32 [H, W] metres, 0 where the network has no depth
    restarted: bool  # the network's depth as it came (first frame, scene cut, too little overlap)
    state: np.ndarray = field(default_factory=FRESH.copy)  # what the next fusion starts from besides the depth
    overlap: float = 0.0  # share of pixels with depth in both
    blended: float = 0.0  # share of pixels that took some of the carried depth
    scale: float = 1.0  # the network's scale against the carried output (exp of the median log ratio)
    kept: float = 0.0  # the share of the carried output's scale kept (1 - the Kalman gain)


def parse_fusion(text: str, option: str = "--fusion") -> str:
    word = str(text).strip().lower()
    if word not in FUSIONS:
        raise UserError(f"{option} {text!r}: use auto (fuse where the camera is known), on (always) or off (the "
                        "network's depth as it comes, as the paper evaluates it)")
    return word


def fusion_enabled(word: str, carry: str) -> bool:
    """--fusion auto|on|off and the carry -> whether keyframes are fused (auto: with the pose carry)."""
    word = parse_fusion(word)
    return word == "on" or (word == "auto" and carry == "pose")


def fusion_info(enabled: bool, settings: FusionSettings = DEFAULT_FUSION) -> dict:
    """What metrics.json's run info says of the fusion: {"fusion": "off"} or its settings."""
    return {"fusion": settings.describe() if enabled else "off"}


def _block_field(r: np.ndarray, both: np.ndarray, overall: float, bound: float) -> np.ndarray:
    """Median of r per block of FIELD_GRID over the co-visible pixels that agree with the whole view's `overall`
    within 3 x `bound` (a moving object is not a trend), each block within `bound` of `overall` (a block seeing
    too little: `overall`): a small [rows, cols] float32 image whose pixel centres are the block centres."""
    rows, cols = FIELD_GRID
    h, w = r.shape
    both = both & (np.abs(r - np.float32(overall)) < 3 * bound)
    field = np.full((rows, cols), overall, np.float32)
    ys = np.linspace(0, h, rows + 1).astype(int)
    xs = np.linspace(0, w, cols + 1).astype(int)
    for i in range(rows):
        for j in range(cols):
            mask = both[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
            if np.count_nonzero(mask) >= MIN_BLOCK * mask.size:
                field[i, j] = np.median(r[ys[i]:ys[i + 1], xs[j]:xs[j + 1]][mask])
    return np.clip(field, overall - bound, overall + bound)


def _kalman(p: float, noise: float, q: float, innovation_sq: float, memory: float) -> tuple[float, float, float]:
    """One scalar Kalman step on a log quantity whose observation noise is learned: (share of the carried value kept,
    the new P, the new noise estimate). The carried value's variance is P + q; the innovation's is P + q + R, so R
    is estimated as the running average of the innovation's square less P + q."""
    prior = p + q
    # the carry failed, or the scene changed: far beyond what was expected, and beyond any network's usual jitter
    outlier = innovation_sq > max(OUTLIER ** 2 * (prior + noise), MIN_OUTLIER ** 2)
    noise = min(memory * noise + (1.0 - memory) * max(innovation_sq - prior, 0.0), MAX_NOISE ** 2)
    if outlier:  # follow the network this once (and learn that it may jump this far)
        return 0.0, noise, noise
    kept = noise / (noise + prior)
    return kept, kept * prior, noise


def fuse_depth(network: np.ndarray, carried: np.ndarray | None, carry: str = "pose", age: int = 1,
               state: np.ndarray | None = None, settings: FusionSettings = DEFAULT_FUSION) -> Fused:
    """The network's depth of a keyframe, the previous output carried into its view (None: no previous output, or a
    scene cut) and the previous fusion's `state` -> the fused depth. Pure: the same inputs always give the same bits.
    Whole-map passes are plain arithmetic (no np.where: ~3 ms each at 480x640); the medians are taken on every s-th
    pixel (at most STATS_WIDTH wide: a median of 20k samples, not 300k)."""
    network = np.asarray(network, np.float32)
    h, w = network.shape
    if carried is None:
        return Fused(network, True)
    net_has = network > 0
    both = net_has & (carried > 0)
    overlap = float(np.count_nonzero(both)) / both.size
    if overlap < settings.min_overlap:
        return Fused(network, True, overlap=overlap)
    p_scale, r_scale, p_pixel, r_pixel = FRESH if state is None else state
    factor = age * (settings.shift_factor ** 2 if carry == "shift" else 1.0)  # the carry's error grows with both
    log_net = cv2.log(np.maximum(network, _TINY))  # no depth: a very small one, never used where it matters
    log_carried = cv2.log(np.maximum(np.asarray(carried, np.float32), _TINY))
    r = log_net - log_carried
    step = max(1, -(-w // STATS_WIDTH))
    r_small, both_small = r[::step, ::step], both[::step, ::step]
    overall = float(np.median(r_small[both_small]))
    kept, p_scale, r_scale = _kalman(p_scale, r_scale, factor * settings.carry_scale ** 2, overall ** 2, settings.memory)
    field_ = cv2.resize(_block_field(r_small, both_small, overall, settings.agree), (w, h),
                        interpolation=cv2.INTER_LINEAR)
    aligned = log_net - np.float32(kept) * field_
    difference = aligned - log_carried
    # a depth edge of the carried map: a carry's errors (a pixel too far across the edge) are largest there (a hole's
    # border too: no depth is a far smaller log)
    span = cv2.dilate(log_carried, _SQUARE) - cv2.erode(log_carried, _SQUARE)
    usable = both & (span < settings.edge)
    usable_small = usable[::step, ::step]
    spread = float(np.median(np.square(difference[::step, ::step][usable_small]))) if usable_small.any() else 0.0
    weight, p_pixel, r_pixel = _kalman(p_pixel, r_pixel, factor * settings.carry_pixel ** 2, spread, settings.memory)
    closeness = 1.0 - np.square(difference * np.float32(1.0 / settings.agree))  # 1 where equal, <= 0 from `agree` on
    weights = np.maximum(closeness, 0.0) * usable.astype(np.float32) * np.float32(weight)
    fused = cv2.exp(aligned - weights * difference) * net_has.astype(np.float32)
    return Fused(fused, False, np.array([p_scale, r_scale, p_pixel, r_pixel]), overlap,
                 float(np.count_nonzero(weights)) / weights.size, float(np.exp(overall)), kept)


_SQUARE = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
