"""Temporal fusion (edge.fusion) on the ray-cast room: known depth, known camera motion, a simulated network.

The network is the room's true depth under a per-frame scale and pixel noise (benchmarks.stability.SimulatedNetwork
looks it up instead of computing it), stepped through the product's own KeyframeSteps with the pose carry, so what is
tested is what `process` and `live` run. Independent references: the room's ray-cast depth, numpy medians."""

from __future__ import annotations

import numpy as np
import pytest
from smoothdino.benchmarks.stability import SimulatedNetwork
from smoothdino.edge.asynchronous import AsyncPipeline
from smoothdino.edge.fusion import fuse_depth, fusion_enabled, parse_fusion
from smoothdino.edge.keyframes import KeyframeSteps, parse_keyframes
from smoothdino.edge.sources.room import SyntheticRoom
from smoothdino.core.errors import UserError

ROOM = SyntheticRoom(96, 128, frames=16, step=0.04, turn=0.012)


@pytest.fixture(scope="module")
def room():
    return [frame for frame in ROOM]


def _noisy(depths, seed=0, scale=0.08, noise=0.03):
    rng = np.random.default_rng(seed)
    return [(d * np.float32(np.exp(rng.normal(0, scale))) * (1 + noise * rng.standard_normal(d.shape))).astype(np.float32)
            for d in depths]


def _run(frames, network, fusion=True, keyframes="every", pipeline=None):
    sim = pipeline or SimulatedNetwork(frames[0][0].shape[:2])
    sim.depths.update({id(rgb): depth for (rgb, _), depth in zip(frames, network)})
    steps = KeyframeSteps(sim, parse_keyframes(keyframes, carry="pose"), "pose", ROOM.intrinsics, fusion=fusion)
    return [steps.step(rgb) for rgb, _ in frames]


def _relative_error(depth, truth):
    mask = (depth > 0) & (truth > 0)
    return float(np.median(np.abs(depth[mask] - truth[mask]) / truth[mask]))


def test_fusion_of_a_noisy_network_converges_to_the_truth_on_static_surfaces(room):
    network = _noisy([d for _, d in room])
    raw = _run(room, network, fusion=False)
    fused = _run(room, network)
    later = range(6, len(room))  # after a few keyframes the kept scale has averaged several frames
    raw_error = np.median([_relative_error(raw[i].depth, room[i][1]) for i in later])
    fused_error = np.median([_relative_error(fused[i].depth, room[i][1]) for i in later])
    assert fused_error < 0.6 * raw_error, (fused_error, raw_error)
    # and steadier: the output's scale moves less from frame to frame than the network's
    def scale_steps(results):
        scales = [np.median(r.depth[d > 0] / d[d > 0]) for r, (_, d) in zip(results, room)]
        return np.abs(np.diff(np.log(scales)))
    assert np.median(scale_steps(fused)) < 0.5 * np.median(scale_steps(raw))
    assert all(r.fused for r in fused) and not any(r.fused for r in raw)
    assert fused[0].fusion.restarted and not any(r.fusion.restarted for r in fused[1:])


def test_a_perfect_network_is_left_alone(room):
    truth = [d for _, d in room]
    fused = _run(room, truth)
    errors = [np.sqrt(np.mean((r.depth[d > 0] - d[d > 0]) ** 2)) for r, d in zip(fused, truth)]
    assert np.median(errors) < 0.01  # metres: the fusion adds under a centimetre to a perfect network


def test_a_moving_object_leaves_no_ghost_after_one_frame(room):
    """A box 1 m away crosses the view: in frame 8 it is on the left, in frame 9 on the right. Where it was, frame
    9's output is the wall the network sees again, not the box carried over; where it came, the box."""
    network = _noisy([d for _, d in room], seed=1)
    h, w = network[0].shape
    left, right = (slice(30, 60), slice(10, 40)), (slice(30, 60), slice(85, 115))
    network[8] = network[8].copy()
    network[8][left] = 1.0
    network[9] = network[9].copy()
    network[9][right] = 1.0
    fused = _run(room, network)
    after = fused[9].depth
    ratio = after / network[9]  # the fusion rescales the whole view (its kept scale); a ghost is a local departure
    overall = np.median(ratio)
    assert np.median(np.abs(ratio[left] / overall - 1)) < 0.02  # the wall again, as the network sees it now
    assert np.median(np.abs(ratio[right] / overall - 1)) < 0.02  # the box where it came
    assert np.median(after[left]) > 1.5 and np.median(after[right]) < 1.3


def test_a_scene_cut_restarts_the_fusion_under_every_policy():
    other = SyntheticRoom(96, 128, frames=8, step=0.04, turn=0.012, seed=7)
    first, second = list(SyntheticRoom(96, 128, frames=6, step=0.04, turn=0.012)), list(other)
    # the second room seen from a turned camera: no overlap with the first's last view
    second = [(np.ascontiguousarray(np.rot90(rgb, 2)), np.ascontiguousarray(np.rot90(d, 2))) for rgb, d in second[:4]]
    frames = first + second
    network = _noisy([d for _, d in frames], seed=2)
    for keyframes in ("every", "3", "auto"):
        results = _run(frames, network, keyframes=keyframes)
        cut = results[len(first)]
        assert cut.scene_cut and cut.keyframe, keyframes
        assert cut.fusion.restarted
        np.testing.assert_array_equal(cut.depth, network[len(first)])  # the new scene's depth as the network gave it
        assert not any(r.scene_cut for r in results[1:len(first)] + results[len(first) + 1:]), keyframes


def test_a_fast_pan_is_not_a_scene_cut():
    """Consecutive frames of a fast turn (6 degrees a frame): the view against a keyframe 4 frames back hardly
    overlaps, but no two consecutive frames are a cut, so a slow network's carried depth never blanks."""
    pan = SyntheticRoom(96, 128, frames=8, step=0.0, turn=0.1)
    frames = list(pan)
    results = _run(frames, [d for _, d in frames], fusion=False, keyframes="5")
    assert not any(r.scene_cut for r in results)
    assert all(np.count_nonzero(r.depth) > 0 for r in results)


def test_fusion_words_and_their_defaults():
    assert parse_fusion(" AUTO ") == "auto"
    assert fusion_enabled("auto", "pose") and not fusion_enabled("auto", "shift")
    assert fusion_enabled("on", "shift") and not fusion_enabled("off", "pose")
    with pytest.raises(UserError, match="--fusion 'smooth'"):
        parse_fusion("smooth")


def test_fuse_depth_keeps_no_depth_where_the_network_has_none():
    rng = np.random.default_rng(0)
    network = (2 + rng.random((40, 50))).astype(np.float32)
    network[:5] = 0.0
    carried = network * np.float32(1.04)
    fused = fuse_depth(network, carried)
    assert not fused.restarted and np.all(fused.depth[:5] == 0) and np.all(fused.depth[5:] > 0)
    # nothing carried: the network's own depth, bit for bit
    np.testing.assert_array_equal(fuse_depth(network, None).depth, network)
    np.testing.assert_array_equal(fuse_depth(network, np.zeros_like(network)).depth, network)


def test_async_fuses_the_keyframes_it_gets_with_what_their_frames_were_shown(room):
    network = _noisy([d for _, d in room], seed=3)
    sim = SimulatedNetwork(room[0][0].shape[:2])
    frames = [np.ascontiguousarray(rgb) for rgb, _ in room]
    sim.depths = {id(rgb): d for rgb, d in zip(frames, network)}
    results = []
    with AsyncPipeline(lambda: sim, carry="pose", intrinsics=ROOM.intrinsics, fusion=True) as pipeline:
        for rgb in frames:
            passes = pipeline.passes
            results.append(pipeline.step(rgb))
            deadline = 200
            while pipeline.passes == passes and deadline:  # the simulated network is quick: let it finish
                deadline -= 1
                import time
                time.sleep(0.005)
    shown = [r for r in results if r is not None]
    assert shown and all(r.fused for r in shown)
    assert pipeline.passes >= len(frames) // 2
    later = [i for i in range(8, len(room)) if results[i] is not None]
    raw_error = np.median([_relative_error(network[i], room[i][1]) for i in later])
    fused_error = np.median([_relative_error(results[i].depth, room[i][1]) for i in later])
    assert fused_error < raw_error, (fused_error, raw_error)


def test_live_on_a_replayed_nyu_sequence_keeps_depth_on_every_frame(nyu_scene):
    """A continuous shot replayed at 15 FPS to a network that takes 0.4 s a pass (async, as `live` runs it): the
    keyframe is often 6 frames and a fast pan behind, yet no frame after the first keyframe goes without depth (a
    scene cut is judged between consecutive frames, never against the old keyframe)."""
    import time

    from smoothdino.core.images import resize_depth, resize_rgb
    from smoothdino.edge.sources import NYU_KINECT, FolderSource

    size = (120, 160)
    frames = [(resize_rgb(f.rgb, size), resize_depth(f.depth_gt, size, ground_truth=True))
              for f in FolderSource(nyu_scene, limit=60)]
    sim = SimulatedNetwork(size, seconds=0.4)
    sim.depths = {id(rgb): np.maximum(d, np.float32(0.0)) for rgb, d in frames}
    shown, blank = 0, []
    with AsyncPipeline(lambda: sim, carry="pose", intrinsics=NYU_KINECT, fusion=True) as pipeline:
        start = time.perf_counter()
        for i, (rgb, _) in enumerate(frames):
            time.sleep(max(0.0, start + i / 15 - time.perf_counter()))
            result = pipeline.step(rgb, timestamp=start + i / 15)
            if result is None:
                continue
            shown += 1
            if result.carry == "none" or result.scene_cut:
                blank.append(i)
        passes = pipeline.passes
    assert shown >= len(frames) - 15 and 3 <= passes < len(frames) // 2
    assert blank == []
