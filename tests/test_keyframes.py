"""Keyframes: the network on some frames, the keyframe's depth carried by the measured shift to the others."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.core.errors import UserError
from smoothdino.edge.carry import translate_depth
from smoothdino.edge.keyframes import KeyframePolicy, KeyframeSteps, parse_keyframes
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence

from .conftest import SMALL


def _frames(n: int, velocity=(2.0, 1.0)) -> list[np.ndarray]:
    scene = SyntheticScene(*SMALL, frames=n, velocity=velocity)
    canvases = scene.canvases()
    return [scene.frame(i, canvases)[0] for i in range(n)]


def test_translate_depth_matches_an_independent_shift_and_zeroes_the_uncovered_strip():
    rng = np.random.default_rng(3)
    depth = rng.uniform(1, 5, size=(20, 30)).astype(np.float32)
    for dx, dy in [(3.4, -2.6), (-5.0, 0.0), (0.2, 7.51), (-29.6, 1.0)]:
        sx, sy = round(dx), round(dy)
        expected = np.zeros_like(depth)
        for y in range(20):  # out(x) = depth(x - d), written out pixel by pixel
            for x in range(30):
                if 0 <= y - sy < 20 and 0 <= x - sx < 30:
                    expected[y, x] = depth[y - sy, x - sx]
        assert np.array_equal(translate_depth(depth, dx, dy), expected), (dx, dy)
    assert not translate_depth(depth, 40, 0).any()


def test_parse_keyframes_words_numbers_and_one_line_errors():
    assert parse_keyframes("every").mode == "every" and parse_keyframes("1").mode == "every"
    assert parse_keyframes("3") == KeyframePolicy(mode="n", n=3)
    assert parse_keyframes("AUTO").mode == "auto"
    for bad in ("0", "-2", "2.5", "sometimes"):
        with pytest.raises(UserError, match="--keyframes"):
            parse_keyframes(bad)


def test_propagated_frame_is_the_keyframe_depth_moved_by_the_measured_shift(small_export):
    """Frame 1 of a scene moving by a known velocity: its depth is keyframe 0's depth translated by the shift
    phase correlation measured between the two (close to the known one), and 0 on the strip it uncovers."""
    frames = _frames(3, velocity=(3.0, 2.0))
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, KeyframePolicy(mode="n", n=3))
        key = steps.step(frames[0])
        carried = steps.step(frames[1])
    assert key.keyframe and key.age_frames == 0
    assert not carried.keyframe and carried.age_frames == 1
    assert carried.shift.dx == pytest.approx(-3.0, abs=0.5) and carried.shift.dy == pytest.approx(-2.0, abs=0.5)
    sx, sy = round(carried.shift.dx), round(carried.shift.dy)  # -3, -2: content moves up-left
    h, w = SMALL
    assert np.array_equal(carried.depth[: h + sy, : w + sx], key.depth[-sy:, -sx:])  # covered: the keyframe's depth
    assert not carried.depth[h + sy:, :].any() and not carried.depth[:, w + sx:].any()  # uncovered strip: no depth
    assert carried.timings["encoder"] == 0 and carried.timings["decoder"] == 0


@pytest.mark.parametrize("n, frames", [(3, 10), (2, 7), (1, 4)])
def test_every_nth_frame_runs_the_encoder_ceil_n_over_N_times(small_export, n, frames):
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, parse_keyframes(str(n)))
        results = [steps.step(rgb) for rgb in _frames(frames)]
    assert pipeline.runs["encoder"] == math.ceil(frames / n) == sum(r.keyframe for r in results)
    assert [r.age_frames for r in results] == [i % n for i in range(frames)]


def test_auto_takes_a_keyframe_at_a_scene_cut_and_past_the_shift_budget(small_export):
    slow = _frames(8, velocity=(0.5, 0.0))
    other = np.ascontiguousarray(np.rot90(_frames(1, velocity=(0, 0))[0], 2))  # another view: a scene cut
    policy = KeyframePolicy(mode="auto", max_shift=0.04, max_age=100)  # 0.04 x 98 px = 3.9 px
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, policy)
        kinds = [steps.step(rgb).keyframe for rgb in slow]
        cut = steps.step(other)
    # 0.5 px a frame: the shift to the keyframe passes 3.9 px at the 8th frame after it, not before
    assert kinds == [True, False, False, False, False, False, False, False]
    assert cut.keyframe
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, policy)
        fast = [steps.step(rgb) for rgb in _frames(6, velocity=(3.0, 0.0))]
    assert [r.keyframe for r in fast] == [True, False, True, False, True, False]  # 6 px > 3.9: every other frame
    assert all(abs(r.shift.dx) < 3.9 for r in fast if not r.keyframe)


@pytest.mark.parametrize("policy", ["3", "auto"])
def test_resumed_process_with_keyframes_equals_the_uninterrupted_run_byte_for_byte(small_export, tmp_path, policy):
    sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=14, velocity=(2.5, 1.0)))
    common = ["--engines", str(small_export), "--backend", "onnxruntime", "--no-video", "--keyframes", policy]
    whole = CliRunner().invoke(app, ["process", str(sequence), "--out", str(tmp_path / "whole"), *common])
    assert whole.exit_code == 0, whole.output
    for limit in ("5", "9"):  # stopped after frame 5, then 9 (mid-way between keyframes), then to the end
        part = CliRunner().invoke(app, ["process", str(sequence), "--out", str(tmp_path / "parts"), "--limit", limit, *common])
        assert part.exit_code == 0, part.output
    rest = CliRunner().invoke(app, ["process", str(sequence), "--out", str(tmp_path / "parts"), *common])
    assert rest.exit_code == 0, rest.output
    names = sorted(p.name for p in (tmp_path / "whole" / "seq" / "depth").glob("*.png"))
    assert len(names) == 14
    for name in names:
        assert (tmp_path / "whole" / "seq" / "depth" / name).read_bytes() == \
               (tmp_path / "parts" / "seq" / "depth" / name).read_bytes(), name
    rows = {json.dumps([r["frame"], r["keyframe"], r["age_frames"]]) for r in
            json.loads((tmp_path / "whole" / "seq" / "metrics.json").read_text())["frames"]}
    resumed = {json.dumps([r["frame"], r["keyframe"], r["age_frames"]]) for r in
               json.loads((tmp_path / "parts" / "seq" / "metrics.json").read_text())["frames"]}
    assert rows == resumed
    keys = [r for r in json.loads((tmp_path / "whole" / "seq" / "metrics.json").read_text())["frames"] if r["keyframe"]]
    assert 1 < len(keys) < 14


def test_process_table_reports_keyframe_share_and_both_rates(small_export, tmp_path):
    sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=6))
    result = CliRunner().invoke(app, ["process", str(sequence), "--out", str(tmp_path / "out"), "--engines",
                                      str(small_export), "--backend", "onnxruntime", "--no-video", "--keyframes", "3"])
    assert result.exit_code == 0, result.output
    assert "keyframes" in result.output and "network FPS" in result.output and "33%" in result.output
    bad = CliRunner().invoke(app, ["process", str(sequence), "--out", str(tmp_path / "bad"), "--engines",
                                   str(small_export), "--keyframes", "0"])
    assert bad.exit_code == 2 and "--keyframes" in bad.output and not (tmp_path / "bad").exists()


# -- issue 28: exact carried depth ---------------------------------------------------------------------------------

def test_resized_carried_depth_never_invents_values_at_the_uncovered_border(small_export):
    """A 10 px pan: the carried frame has a 0 strip; resized to another size (live, the API, a smaller export), no
    pixel may lie below the keyframe's smallest depth (linear blending with 0 would), and the strip stays 0."""
    from smoothdino.core.images import resize_depth

    frames = _frames(2, velocity=(10.0, 0.0))
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, KeyframePolicy(mode="n", n=3))
        key, carried = steps.step(frames[0]), steps.step(frames[1])
    assert (carried.depth == 0).any()
    for size in [(140, 196), (35, 49), (71, 99), (1, 1), (3, 500)]:
        out = resize_depth(carried.depth, size)
        has = out > 0
        assert has.any() and (out[has] >= key.depth.min() - 1e-5).all() and (out[has] <= key.depth.max() + 1e-5).all()
        # holes where the nearest source pixel is a hole: the 0 strip keeps its share of the frame
        hole = cv2.resize((carried.depth == 0).astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(out == 0, hole.astype(bool))
    # a depth map without holes resizes exactly as before (plain linear)
    assert np.array_equal(resize_depth(key.depth, (140, 196)),
                          cv2.resize(key.depth, (196, 140), interpolation=cv2.INTER_LINEAR))


def test_a_caller_editing_returned_depth_never_changes_later_frames(small_export):
    frames = _frames(3, velocity=(2.0, 0.0))
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, KeyframePolicy(mode="n", n=3))
        key = steps.step(frames[0])
        clean = steps.step(frames[1]).depth.copy()
        steps.reset()
        key = steps.step(frames[0])
        key.depth[:] = 0  # the caller masks the keyframe's depth in place
        again = steps.step(frames[1])
        again.depth[:] = 0
        third = steps.step(frames[2])
    assert np.array_equal(steps._depth is not None and clean, clean) and (third.depth > 0).any()
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, KeyframePolicy(mode="n", n=3))
        steps.step(frames[0])
        assert np.array_equal(steps.step(frames[1]).depth, clean)


@pytest.mark.parametrize("policy", [KeyframePolicy(mode="n", n=5), KeyframePolicy(mode="auto", max_age=10, max_shift=1.0,
                                                                                 min_confidence=0.0)])
def test_a_scene_cut_makes_a_keyframe_under_every_policy(small_export, policy):
    """N and a lenient auto would carry frame 0's depth for frames 1-4; frame 2 is another scene: it must be a
    keyframe flagged as a cut, never the old scene's depth marked valid."""
    frames = _frames(5, velocity=(1.0, 0.0))
    other = cv2.GaussianBlur(np.random.default_rng(5).integers(0, 256, (*SMALL, 3), dtype=np.uint8), (3, 3), 0)
    frames[2:] = [np.ascontiguousarray(np.roll(other, i, axis=1)) for i in range(3)]  # another scene, panning
    with DepthPipeline.from_folder(small_export, backend="onnxruntime", min_confidence=0.1) as pipeline:
        steps = KeyframeSteps(pipeline, policy)
        results = [steps.step(rgb) for rgb in frames]
    assert results[2].keyframe and results[2].scene_cut and results[2].carry == "network"
    assert not results[1].keyframe and not results[3].keyframe  # the policy still carries otherwise


def test_auto_max_age_carries_exactly_that_many_frames(small_export):
    frames = _frames(9, velocity=(0.2, 0.0))
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, KeyframePolicy(mode="auto", max_age=3, max_shift=1.0, min_confidence=0.0))
        kinds = [steps.step(rgb).keyframe for rgb in frames]
    assert kinds == [True, False, False, False, True, False, False, False, True]  # 3 carried frames a keyframe


def test_the_schedule_without_the_network_is_what_the_steps_decide(small_export):
    from smoothdino.edge.keyframes import decide_keyframes

    frames = _frames(12, velocity=(2.5, 1.0))
    frames[7] = np.ascontiguousarray(np.random.default_rng(1).integers(0, 256, (*SMALL, 3), dtype=np.uint8))
    for policy in (parse_keyframes("3"), parse_keyframes("auto"), KeyframePolicy(mode="auto", max_shift=0.05)):
        with DepthPipeline.from_folder(small_export, backend="onnxruntime", min_confidence=0.2) as pipeline:
            steps = KeyframeSteps(pipeline, policy)
            decided = [steps.step(rgb).keyframe for rgb in frames]
        assert list(decide_keyframes(frames, policy, 1, cut_below=0.2)) == decided, policy
        assert decided[7] and 1 < sum(decided) < 12


class OverflowingPipeline(DepthPipeline):
    """The real pipeline whose encoder overflows (NaN levels, as an FP16 encoder can) on one particular frame,
    recognised by its pixels: so the fault repeats exactly when a resumed run primes or recomputes that frame."""

    poisoned: bytes = b""

    def _encode(self, rgb):
        levels = super()._encode(rgb)
        if rgb.tobytes() == self.poisoned:
            levels = {name: np.full_like(value, np.nan) for name, value in levels.items()}
        return levels


@pytest.mark.parametrize("resume_at", [5, 7])
def test_a_resume_primes_exactly_across_a_keyframe_whose_features_overflowed(small_export, resume_at):
    """Keyframe 3 overflows: the unbroken run gives it no depth and starts afresh at keyframe 6. A run resumed at 5 or
    7 must rebuild exactly that (priming with frame 3's levels would fuse keyframe 6 with NaN)."""
    frames = _frames(10, velocity=(1.5, 0.5))
    OverflowingPipeline.poisoned = frames[3].tobytes()
    policy = KeyframePolicy(mode="n", n=3)
    with OverflowingPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, policy)
        unbroken = [steps.step(rgb) for rgb in frames]
    assert unbroken[3].nonfinite == unbroken[3].depth.size and unbroken[6].keyframe and unbroken[6].nonfinite == 0
    with DepthPipeline.from_folder(small_export, backend="onnxruntime") as fresh:  # 6 starts afresh: fused with itself
        assert np.array_equal(unbroken[6].depth, fresh.step(frames[6]).depth)
    with OverflowingPipeline.from_folder(small_export, backend="onnxruntime") as pipeline:
        steps = KeyframeSteps(pipeline, policy)
        for rgb in frames[:resume_at]:
            steps.replay(rgb)
        resumed = [steps.step(rgb) for rgb in frames[resume_at:]]
    for index, (again, first) in enumerate(zip(resumed, unbroken[resume_at:]), start=resume_at):
        assert np.array_equal(again.depth, first.depth), index
