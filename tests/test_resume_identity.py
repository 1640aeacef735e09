"""A run's identity (edge.run_identity): a resumed `process` under other options is refused in one line naming the
folder and the option, `--overwrite` redoes it whole (equal to a clean run), and an earlier version's record (the
export only) counts as another identity. Never a folder that mixes two runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from smoothdino.cli import app
from smoothdino.edge.keyframes import parse_keyframes
from smoothdino.edge.run_identity import LEGACY_RECORD, RECORD, RunIdentity, describe_difference
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence
from typer.testing import CliRunner

from .conftest import SMALL

# what a row read back from disk cannot know (edge.loop carry_fields): how its depth was carried, the scene cut
UNKNOWN_ON_RESUME = {"scene_cut", "carry", "inliers", "tracked", "tx_m", "ty_m", "tz_m", "qx", "qy", "qz", "qw",
                     "fallback", "fusion", "fusion_scale_kept", "fusion_blended"}

runner = CliRunner()


@pytest.fixture()
def sequence(tmp_path) -> Path:
    """Five frames of a camera moving 2.5 px a frame: keyframes and carried frames differ from `every`."""
    return write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=5, velocity=(2.5, 1.0)))


def _process(sequence, out, engines, *extra):
    return runner.invoke(app, ["process", str(sequence), "--engines", str(engines), "--backend", "onnxruntime",
                               "--out", str(out), "--no-video", *extra])


def _outputs(folder: Path, resumed: bool = False) -> tuple[dict, list]:
    """The PNGs' bytes and the metrics rows without timings: what must equal a clean run (`resumed`: without what a
    frame read back from disk does not know)."""
    pngs = {p.name: p.read_bytes() for p in sorted((folder / "depth").glob("*.png"))}
    rows = json.loads((folder / "metrics.json").read_text())["frames"]
    return pngs, [{k: v for k, v in r.items() if not k.endswith("_ms") and not (resumed and k in UNKNOWN_ON_RESUME)}
                  for r in rows]


def _error(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.mark.parametrize("before, after, option", [
    (["--keyframes", "3"], ["--keyframes", "every"], "--keyframes 3 there, every now"),
    (["--min-confidence", "0.1"], ["--min-confidence", "0.6"], "--min-confidence 0.1 there, 0.6 now"),
    (["--motion-downscale", "1"], ["--motion-downscale", "2"], "--motion-downscale 1 there, 2 now"),
])
def test_a_resume_under_other_options_is_refused_and_overwrite_redoes_it_whole(sequence, small_export, tmp_path,
                                                                                before, after, option):
    out, clean = tmp_path / "out", tmp_path / "clean"
    first = _process(sequence, out, small_export, *before, "--limit", "3")  # an interrupted run: 3 of 5 frames
    assert first.exit_code == 0, first.output
    refused = _process(sequence, out, small_export, *after)
    assert refused.exit_code == 2
    line = _error(refused.output)
    assert str(out / "seq") in line and option in line and "--overwrite" in line
    assert len(list((out / "seq" / "depth").glob("*.png"))) == 3  # nothing written by the refused run

    again = _process(sequence, out, small_export, *after, "--overwrite")
    assert again.exit_code == 0, again.output
    assert _process(sequence, clean, small_export, *after).exit_code == 0
    assert _outputs(out / "seq") == _outputs(clean / "seq")
    resumed = _process(sequence, out, small_export, *after)  # the same options again: resumed, nothing computed
    assert resumed.exit_code == 0 and _outputs(out / "seq", True) == _outputs(clean / "seq", True)


def test_an_earlier_versions_record_is_another_identity(sequence, small_export, tmp_path):
    out = tmp_path / "out"
    assert _process(sequence, out, small_export).exit_code == 0
    depth = out / "seq" / "depth"
    (depth / RECORD).unlink()  # what an earlier version left: the export's identity alone, as text
    (depth / LEGACY_RECORD).write_text("vits14+temporal/dpt/fp16/70x98/encoder=random-weights(seed=0)\n")
    refused = _process(sequence, out, small_export)
    assert refused.exit_code == 2
    line = _error(refused.output)
    assert str(out / "seq") in line and "recorded only the export" in line
    assert _process(sequence, out, small_export, "--overwrite").exit_code == 0
    assert not (depth / LEGACY_RECORD).exists() and json.loads((depth / RECORD).read_text())["keyframes"] == "every"


def test_depth_pngs_without_a_record_are_not_reused(sequence, small_export, tmp_path):
    out = tmp_path / "out"
    assert _process(sequence, out, small_export).exit_code == 0
    (out / "seq" / "depth" / RECORD).unlink()
    refused = _process(sequence, out, small_export)
    assert refused.exit_code == 2 and "no record of the run" in _error(refused.output)


def test_the_difference_names_every_option_that_changes_depth():
    pipeline = type("P", (), {"identity": "vits14+temporal/dpt/fp16/70x98/w", "precision": "fp16",
                              "frame_size": (70, 98), "min_confidence": 0.1, "motion_downscale": 1})()
    now = RunIdentity.of(pipeline, parse_keyframes("auto"), True)
    assert describe_difference(now.record(), now) == ""
    limits = now.record()["keyframe_limits"]
    earlier = {**now.record(), "keyframe_limits": {**limits, "max_age": 6}, "resize": False, "carry": "pose",
               "precision": "int8"}
    said = describe_difference(earlier, now)
    assert said == (f"--precision int8 there, fp16 now; the keyframe limit max_age 6 there, {limits['max_age']} now; "
                    "--resize/--no-resize no there, yes now; --carry pose there, shift now")
