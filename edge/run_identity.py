"""A run's identity: everything that changes its output, recorded beside the output, so that a resumed `process`
or a `--ray` chunk never mixes the frames of two runs.

    export            model, weights, precision, size (FramePipeline.identity); precision and size also alone, so
                      the refusal names the option (--precision, --size)
    keyframes         the policy (every | N | auto, or async) and each of its limits (edge.keyframes.KeyframePolicy)
    min_confidence    the pipeline's scene-cut threshold (--min-confidence)
    motion_downscale  phase correlation on frames shrunk by this factor (--motion-downscale)
    resize            frames of another size resized (--resize) or refused (--no-resize)
    carry             how a keyframe's depth is carried to the frames after it
    fusion            keyframes fused with the previous output (edge.fusion), and the fusion's settings

`claim_run_folder` records it as JSON in <folder>/depth/.smoothdino-run before the first frame is written and
refuses a folder that another identity wrote, in one line naming the folder and the options that differ (an
earlier version's <folder>/depth/.smoothdino-export recorded the export only: it counts as another identity).
The commands offer `--overwrite`, which removes the earlier run's outputs first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_text

from .fusion import DEFAULT_FUSION
from .keyframes import KeyframePolicy

RECORD = ".smoothdino-run"  # in <folder>/depth/, beside the PNGs it speaks for
LEGACY_RECORD = ".smoothdino-export"  # the export identity alone, as plain text (before the run identity)


@dataclass(frozen=True)
class RunIdentity:
    export: str
    precision: str
    size: str  # HEIGHTxWIDTH of the export
    keyframes: str  # every | N | auto | async
    keyframe_limits: dict  # the policy's limits (KeyframePolicy's fields beyond mode and N)
    min_confidence: float
    motion_downscale: int
    resize: bool
    carry: str = "shift"
    fusion: dict | None = None  # None: off; else the settings (edge.fusion.FusionSettings)

    @classmethod
    def of(cls, pipeline, policy: KeyframePolicy, resize: bool, *, asynchronous: bool = False,
           carry: str = "shift", fusion: bool = False) -> RunIdentity:
        """`pipeline`: anything with identity, precision, frame_size, min_confidence and motion_downscale (a
        FramePipeline, or what a --ray worker reported of its own)."""
        height, width = pipeline.frame_size
        return cls(export=pipeline.identity, precision=str(getattr(pipeline, "precision", "fp32")),
                   size=f"{height}x{width}", keyframes="async" if asynchronous else policy.label,
                   keyframe_limits={k: v for k, v in asdict(policy).items() if k not in ("mode", "n")},
                   min_confidence=float(pipeline.min_confidence),
                   motion_downscale=int(pipeline.motion_downscale), resize=bool(resize), carry=carry,
                   fusion=DEFAULT_FUSION.describe() if fusion else None)

    def record(self) -> dict:
        return asdict(self)


# field -> how the user names it (the refusal says which options to change back)
OPTION_NAMES = {
    "export": "the export (--engines, or the model options)", "precision": "--precision", "size": "--size",
    "keyframes": "--keyframes", "min_confidence": "--min-confidence", "motion_downscale": "--motion-downscale",
    "resize": "--resize/--no-resize", "carry": "--carry", "fusion": "--fusion",
}
DEFAULTS = {"fusion": None}  # fields an earlier version did not record, as it ran them


def describe_difference(earlier: dict | str | None, now: RunIdentity) -> str:
    """'' when `earlier` (a recorded identity) is `now`; else the options that differ, '<option> X there, Y now',
    joined by '; '. A record that is no run identity (an earlier version's: the export alone) says so."""
    if not isinstance(earlier, dict):
        if not str(earlier or "").strip():
            return "no record of the options that change depth there"
        return (f"an earlier version recorded only the export there ({str(earlier).strip()[:120]}), not the other "
                "options that change depth")
    differ = []
    for name, value in now.record().items():
        was = earlier.get(name, DEFAULTS.get(name, "unrecorded"))
        if name == "keyframe_limits":  # each limit on its own
            was = was if isinstance(was, dict) else {}
            differ += [f"the keyframe limit {k} {_word(was.get(k, 'unrecorded'))} there, {_word(v)} now"
                       for k, v in value.items() if was.get(k, "unrecorded") != v]
        elif name == "fusion" and was != value:
            differ.append(f"--fusion {_fusion_word(was)} there, {_fusion_word(value)} now")
        elif was != value:
            differ.append(f"{OPTION_NAMES[name]} {_word(was)} there, {_word(value)} now")
    return "; ".join(differ)


def _fusion_word(settings: dict | None) -> str:
    return "off" if settings is None else "on" if settings == DEFAULT_FUSION.describe() else f"on with {settings}"


def _word(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def read_record(depth_folder: Path) -> dict | str | None:
    """The identity recorded in a depth folder: a dict, the legacy export text, or None when there is none."""
    try:
        text = (Path(depth_folder) / RECORD).read_text()
    except FileNotFoundError:
        legacy = Path(depth_folder) / LEGACY_RECORD
        return legacy.read_text() if legacy.is_file() else None
    try:
        record = json.loads(text)
    except ValueError:
        return text  # torn or foreign: not this identity
    return record if isinstance(record, dict) else text


def claim_run_folder(folder: Path, identity: RunIdentity) -> None:
    """<folder>/depth is this run's: recorded when new, refused in one line when another identity wrote it."""
    depth = Path(folder) / "depth"
    earlier = read_record(depth)
    if earlier is None and depth.is_dir() and any(depth.glob("*.png")):
        raise UserError(f"{folder}: holds depth PNGs with no record of the run that wrote them; pass --overwrite to "
                        "redo it whole, or choose another --out")
    if earlier is None:
        depth.mkdir(parents=True, exist_ok=True)
        atomic_write_text(depth / RECORD, json.dumps(identity.record(), sort_keys=True) + "\n")
        return
    difference = describe_difference(earlier, identity)
    if difference:
        raise UserError(f"{folder}: holds a run with other options ({difference}); pass --overwrite to redo it "
                        "whole, or choose another --out")
