"""`smoothdino inspect`: feature PCA, aligned frame-to-frame stability, the files a user opens, bad input."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from smoothdino.cli import app
from smoothdino.edge.inspection.grid import FeatureGrid
from smoothdino.edge.inspection.pca import FeaturePCA
from smoothdino.edge.inspection.stability import (
    aligned_depth_change_mm,
    aligned_feature_similarity,
)
from typer.testing import CliRunner

runner = CliRunner()


# -- PCA --------------------------------------------------------------------------------------------

def _three_component_maps(rng, frames=4, channels=32, h=18, w=24, stds=(6.0, 3.0, 1.5), noise=0.05):
    """Patch maps whose cells are mean + sum_k z_k u_k + small noise: a known 3-D subspace and its variances."""
    basis, _ = np.linalg.qr(rng.normal(size=(channels, 3)))  # orthonormal u_0, u_1, u_2
    mean = rng.normal(size=channels)
    maps, latents = [], []
    for _ in range(frames):
        z = rng.normal(size=(h * w, 3)) * np.array(stds)
        cells = mean + z @ basis.T + noise * rng.normal(size=(h * w, channels))
        maps.append(cells.T.reshape(channels, h, w).astype(np.float32))
        latents.append(z)
    return maps, basis, np.concatenate(latents), np.array(stds)


def test_pca_recovers_a_known_three_component_structure():
    rng = np.random.default_rng(3)
    maps, basis, latents, stds = _three_component_maps(rng)
    pca = FeaturePCA.fit(maps, sample_cells=1500, seed=1)

    # the fitted subspace is the true one: every principal angle ~0 (cosines = singular values of U^T V)
    cosines = np.linalg.svd(basis.T @ pca.components.T.astype(np.float64), compute_uv=False)
    assert np.degrees(np.arccos(np.clip(cosines.min(), -1, 1))) < 1.0
    # distinct variances: each component is its own direction (up to sign), in order of variance
    assert np.all(np.abs(np.sum(basis * pca.components.T, axis=0)) > 0.99)
    total = (stds ** 2).sum() + 0.05 ** 2 * basis.shape[0]
    np.testing.assert_allclose(pca.explained_variance_ratio, stds ** 2 / total, rtol=0.1)

    # the colour channels follow the latent factors, and the 8-bit scaling uses the whole range
    colours = np.concatenate([pca.to_uint8(m).reshape(-1, 3) for m in maps]).astype(np.float64)
    for k in range(3):
        assert abs(np.corrcoef(colours[:, k], latents[:, k])[0, 1]) > 0.95
        assert colours[:, k].min() == 0 and colours[:, k].max() == 255
    # one fixed scaling: a cell's colour depends on its feature vector only, not on the other cells of its map
    # (a map whose right half is one repeated cell has a much narrower spread: a per-map scaling would recolour it)
    mixed = maps[0].copy()
    mixed[:, :, 12:] = maps[0][:, :1, :1]
    colours = pca.to_uint8(mixed)
    np.testing.assert_array_equal(colours[:, :12], pca.to_uint8(maps[0])[:, :12])
    assert (colours[:, 12:] == pca.to_uint8(maps[0])[0, 0]).all()
    # and the colour is the documented map: (projection - low) / (high - low) * 255, clipped, by hand
    cell = maps[1][:, 4, 7].astype(np.float64)
    by_hand = (cell - pca.mean) @ pca.components.T.astype(np.float64)
    expected = np.round(np.clip((by_hand - pca.low) / (pca.high - pca.low), 0, 1) * 255)
    np.testing.assert_allclose(pca.to_uint8(maps[1])[4, 7], expected, atol=1)


def test_pca_image_is_frame_sized_with_the_padding_cropped():
    grid = FeatureGrid((70, 100), (5, 8))  # 100 px -> 112 padded: 6 px of padding left and right
    assert grid.padding == (0, 6)
    cells = np.zeros((3, 5, 8), np.float32)
    cells[0, :, 1] = 1.0  # one column of cells stands out
    cells[1, 2, :] = -1.0
    pca = FeaturePCA.fit([cells + 0.01 * np.random.default_rng(0).normal(size=cells.shape).astype(np.float32)])
    image = pca.image(cells, grid)
    assert image.shape == (70, 100, 3) and image.dtype == np.uint8
    # cell column 1 covers padded x 14..27 = frame x 8..21: the block edges sit there, not at multiples of 14
    columns = np.abs(np.diff(image.astype(int), axis=1)).sum(axis=(0, 2))
    assert set(np.flatnonzero(columns)) == {7, 21}


class _FeaturePipeline:
    """A stand-in FramePipeline whose patch maps (before and after the adapter) are chosen by the test: few
    channels, so a colour can be traced back to its feature vector. Values are multiples of 1/8 (float16-exact,
    as inspect keeps them)."""

    frame_size = (70, 98)  # a 5 x 7 grid, no padding
    keep_outputs = True
    random_weights = False
    has_adapter = True

    def __init__(self, before: list[np.ndarray], after: list[np.ndarray], level: int):
        self.before, self.after, self.level, self.index = before, after, level, 0

    def reset(self):
        self.index = 0

    def step(self, rgb):
        from smoothdino.edge.motion import Shift
        from smoothdino.edge.pipeline import FrameResult

        k, self.index = self.index, self.index + 1
        return FrameResult(outputs={f"patch{self.level}": self.before[k][None], f"fused_patch{self.level}": self.after[k][None]},
                           shift=Shift(0.0, 0.0, 1.0), scene_cut=False, timings={},
                           depth=np.full(self.frame_size, 2.0, np.float32))


def test_inspect_colours_one_basis_and_one_scaling_for_the_whole_sequence(tmp_path):
    """The README: "One basis ... and one 8-bit scaling per sequence, so a colour means the same in every frame,
    before and after". Frames whose features spread along different channels and with different strengths: the
    same feature vector gets the same colour in every PNG, and every PNG's colours are one affine function of the
    features (what a single projection and scaling give), which a per-frame or per-map fit would not be."""
    from smoothdino.edge.inspection.sequence import inspect_sequence
    from smoothdino.edge.sources import SyntheticSource
    from smoothdino.edge.sources.synthetic import SyntheticScene

    rng = np.random.default_rng(11)
    frames, channels, (h, w) = 4, 6, (5, 7)
    spread = [np.array(v) for v in ([4, 1, 1, 2, 1, 1], [1, 4, 2, 1, 1, 1], [1, 1, 1, 1, 4, 2], [2, 2, 4, 1, 1, 3])]
    before = [(rng.integers(-16, 17, (channels, h, w)) * spread[k][:, None, None] * (k + 1)).astype(np.float32) / 8
              for k in range(frames)]
    after = [(rng.integers(-16, 17, (channels, h, w)) * spread[(k + 2) % frames][:, None, None]).astype(np.float32) / 8
             for k in range(frames)]
    shared = np.array([3, -2, 1, 0, 2, -1], np.float32) / 8  # near the centre: unsaturated colours
    placed = [("pca", 0, (0, 0)), ("pca", 2, (3, 5)), ("pca_fused", 1, (2, 2)), ("pca_fused", 3, (4, 6))]
    for sub, k, (y, x) in placed:
        (before if sub == "pca" else after)[k][:, y, x] = shared

    source = SyntheticSource(SyntheticScene(70, 98, frames=frames))
    folder = tmp_path / "inspect"
    inspect_sequence(_FeaturePipeline(before, after, level=2), source, folder, 2)

    def cell_colours(sub, k):  # RGB at each 14x14 block's centre
        image = cv2.cvtColor(cv2.imread(str(folder / sub / f"{k + 1}.png")), cv2.COLOR_BGR2RGB)
        assert image.shape == (70, 98, 3)
        return image[7::14, 7::14].astype(np.float64)  # [5, 7, 3]

    colours = {(sub, k): cell_colours(sub, k) for sub in ("pca", "pca_fused") for k in range(frames)}
    same = [colours[(sub, k)][y, x] for sub, k, (y, x) in placed]
    assert all(np.array_equal(c, same[0]) for c in same), same
    assert ((same[0] > 0) & (same[0] < 255)).all()  # not a saturated colour that any scaling would give

    features = np.concatenate([m.reshape(channels, -1).T for m in before + after]).astype(np.float64)
    rgb = np.concatenate([colours[(sub, k)].reshape(-1, 3) for sub in ("pca", "pca_fused") for k in range(frames)])
    design = np.column_stack([features, np.ones(len(features))])
    for c in range(3):
        inside = (rgb[:, c] > 0) & (rgb[:, c] < 255)  # the clipped ends carry no information
        assert inside.sum() > 0.8 * len(rgb)
        fit, *_ = np.linalg.lstsq(design[inside], rgb[inside, c], rcond=None)
        assert np.abs(design[inside] @ fit - rgb[inside, c]).max() <= 0.75  # 8-bit rounding, nothing more
        assert np.abs(fit[:channels]).max() > 1.0  # the colour really follows the features


# -- stability ---------------------------------------------------------------------------------------

def _moving_fields(rng, shift_cells, channels=32, h=20, w=30):
    """Smooth analytic feature fields at t-1 and t = the same content moved by `shift_cells` (dx, dy)."""
    a, b = (rng.uniform(0.2, 0.6, channels) * rng.choice([-1, 1], channels) for _ in range(2))
    phase = rng.uniform(0, 2 * np.pi, channels)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)

    def field(ox, oy):
        return np.sin(a[:, None, None] * (x - ox) + b[:, None, None] * (y - oy) + phase[:, None, None])

    return field(0.0, 0.0).astype(np.float32), field(*shift_cells).astype(np.float32)


def test_aligned_similarity_is_one_with_the_true_shift_and_lower_without():
    rng = np.random.default_rng(5)
    shift_cells = (1.3, -0.7)
    previous, current = _moving_fields(rng, shift_cells)
    grid = FeatureGrid((280, 420), (20, 30))  # no padding
    shift_px = (shift_cells[0] * 14, shift_cells[1] * 14)
    aligned, valid = aligned_feature_similarity(current, previous, shift_px, grid)
    unaligned, _ = aligned_feature_similarity(current, previous, (0.0, 0.0), grid)
    assert aligned > 0.995
    assert unaligned < aligned - 0.1
    # valid cells: their source x - d lies inside the previous grid (bilinear needs both neighbours)
    xs, ys = np.arange(30) - shift_cells[0], np.arange(20) - shift_cells[1]
    assert valid == ((xs >= 0) & (xs <= 29)).sum() * ((ys >= 0) & (ys <= 19)).sum() == 28 * 19


def test_padding_cells_are_left_out_of_the_similarity():
    rng = np.random.default_rng(6)
    previous, current = _moving_fields(rng, (1.0, 0.0), h=5, w=8)
    grid = FeatureGrid((70, 100), (5, 8))  # cell columns 0 and 7 reach into the centre padding
    current[:, :, 0] = rng.normal(size=current[:, :, 0].shape)  # the pad border: nothing to do with the scene
    current[:, :, 7] = rng.normal(size=current[:, :, 7].shape)
    similarity, valid = aligned_feature_similarity(current, previous, (14.0, 0.0), grid)
    assert valid == 5 * 5  # columns 2..6: inside the frame and shifted from a column inside it
    assert similarity > 0.995


def test_aligned_depth_change_in_millimetres():
    rng = np.random.default_rng(7)
    previous = cv2.resize(rng.uniform(1, 5, (6, 8)).astype(np.float32), (80, 60), interpolation=cv2.INTER_CUBIC)
    current = np.roll(previous, 3, axis=1) + 0.002  # moved 3 px right, 2 mm further away
    current[:, :3] = 0.0  # no depth where new content entered
    assert aligned_depth_change_mm(current, previous, (3.0, 0.0)) == pytest.approx(2.0, abs=0.01)
    assert aligned_depth_change_mm(current, previous, (0.0, 0.0)) > 20.0


def test_real_encoder_features_of_the_synthetic_scene_align(small_export):
    """ViT features move with whole-patch camera shifts: aligned ~1, unaligned clearly lower."""
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.edge.sources.synthetic import SyntheticScene

    scene = SyntheticScene(70, 98, frames=2, velocity=(14.0, 0.0))  # one cell per frame
    with DepthPipeline.from_folder(small_export, keep_outputs=True, threads=1) as pipeline:
        results = [pipeline.step(rgb) for rgb, _ in scene]
    grid = FeatureGrid((70, 98), results[0].outputs["patch0"].shape[2:])
    measured = (results[1].shift.dx, results[1].shift.dy)
    assert measured == pytest.approx(scene.true_shift(), abs=0.3)
    for level in (0, 3):
        before, now = results[0].outputs[f"patch{level}"], results[1].outputs[f"patch{level}"]
        aligned, _ = aligned_feature_similarity(now, before, scene.true_shift(), grid)
        with_measured, _ = aligned_feature_similarity(now, before, measured, grid)
        unaligned, _ = aligned_feature_similarity(now, before, (0.0, 0.0), grid)
        assert aligned > 0.97 and with_measured > 0.95
        assert unaligned < aligned - 0.2


# -- the command -------------------------------------------------------------------------------------

def _table_row(output: str, sequence: str) -> list[str]:
    line = next(line for line in output.splitlines() if sequence in line and "│" in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def _check_stability_json(folder, frames: int, has_after: bool) -> dict:
    payload = json.loads((folder / "stability.json").read_text())
    rows = payload["rows"]
    assert len(rows) == frames and rows[0]["features_before"] is None  # frame 0 has no previous frame
    for key in ("features_before", "features_before_unaligned", "depth_change_mm") + (("features_after",) if has_after else ()):
        values = [r[key] for r in rows[1:]]
        assert all(v is not None and np.isfinite(v) for v in values)
        assert payload["summary"][key] == pytest.approx(np.mean(values), rel=1e-6)
    if not has_after:
        assert payload["summary"]["features_after"] is None and all(r["features_after"] is None for r in rows)
    assert payload["run"]["random_weights"] and "RANDOM WEIGHTS" in payload["run"]["warning"]
    return payload


def test_inspect_writes_pca_images_video_and_stability(small_export, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["inspect", "synthetic:70x98:4", "--engines", str(small_export), "--random-weights",
                                 "--level", "1", "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    folder = out / "synthetic_70x98"
    for sub in ("pca", "pca_fused"):
        pngs = sorted((folder / sub).glob("*.png"))
        assert [p.stem for p in pngs] == ["1", "2", "3", "4"]
        for p in pngs:
            image = cv2.imread(str(p))
            assert image is not None and image.shape == (70, 98, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 5
    video = cv2.VideoCapture(str(folder / "inspect.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 4 * 98
    plot = cv2.imread(str(folder / "stability.png"))
    assert plot is not None and plot.shape[0] >= 400 and plot.shape[1] >= 600
    assert (plot < 128).any(axis=2).mean() > 0.01  # axes, lines and text drawn, not a blank canvas

    payload = _check_stability_json(folder, 4, has_after=True)
    assert payload["level"] == 1 and payload["has_fused_features"]
    s = payload["summary"]
    row = _table_row(result.output, "synthetic_70x98")  # the terminal table shows the file's numbers
    assert row == ["synthetic_70x98", "1", "3", f"{s['features_before']:.4f}", f"{s['features_after']:.4f}",
                   f"{s['features_before_unaligned']:.4f}", f"{s['depth_change_mm']:.1f}", "0"]
    assert "RANDOM WEIGHTS" in result.output and "show that the tool works" in result.output


def test_inspect_exports_on_the_fly_and_says_when_there_are_no_fused_features(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["inspect", "synthetic:70x98:3", "--random-weights", "--adapter", "paper",
                                 "--precision", "fp32", "--backend", "onnxruntime", "--level", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "engines" / "manifest.json").is_file()
    folder = out / "synthetic_70x98"
    assert len(list((folder / "pca").glob("*.png"))) == 3 and not (folder / "pca_fused").exists()
    assert re.search(r"adapter 'paper' has no adapter stage", result.output)
    _check_stability_json(folder, 3, has_after=False)
    assert _table_row(result.output, "synthetic_70x98")[4] == "-"
    video = cv2.VideoCapture(str(folder / "inspect.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 3 * 98  # RGB | PCA | depth


@pytest.mark.parametrize("args, message", [
    (["--level", "4"], "--level 4: choose a feature level from 0 to 3"),
    (["--level", "-1"], "--level -1: choose a feature level from 0 to 3"),
    (["--frames", "0"], "--frames 0: give at least 1"),
])
def test_inspect_refuses_bad_options_in_one_line(small_export, tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["inspect", "synthetic:70x98:3", "--engines", str(small_export), "--out", str(out), *args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # refused before anything was written


def test_inspect_refuses_a_missing_sequence(small_export, tmp_path):
    missing = tmp_path / "no_such_scene"
    result = runner.invoke(app, ["inspect", str(missing), "--engines", str(small_export), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"{missing}: no such folder or video" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_inspect_on_nyu_frames_resized_to_the_engines(small_export, nyu_scene, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["inspect", str(nyu_scene), "--engines", str(small_export), "--frames", "5",
                                 "--level", "0", "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    folder = out / nyu_scene.name
    names = sorted(p.stem for p in (folder / "pca_fused").glob("*.png"))
    assert len(names) == 5
    image = cv2.imread(str(folder / "pca" / f"{names[0]}.png"))
    assert image.shape == (480, 640, 3)  # written at the input frames' size
    payload = _check_stability_json(folder, 5, has_after=True)
    assert all(r["confidence"] > 0 for r in payload["rows"][1:])  # phase correlation found the motion


def test_inspect_with_keyframes_looks_at_the_frames_the_network_ran_on(small_export, tmp_path):
    """--keyframes 3 over 7 frames: features of frames 1, 4, 7 only, each compared with the previous keyframe, by the
    shift phase correlation measures between the two keyframes (3 frames of motion apart)."""
    from smoothdino.edge.motion import phase_shift, to_grey
    from smoothdino.edge.sources.synthetic import SyntheticScene

    out = tmp_path / "out"
    result = runner.invoke(app, ["inspect", "synthetic:70x98:7", "--engines", str(small_export), "--keyframes", "3",
                                 "--level", "3", "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    folder = out / "synthetic_70x98"
    assert sorted(int(p.stem) for p in (folder / "pca").glob("*.png")) == [1, 4, 7]
    payload = json.loads((folder / "stability.json").read_text())
    frames = payload["rows"]
    assert payload["frames"] == 3 and [f["frame"] for f in frames] == ["1", "4", "7"]
    scene = SyntheticScene(70, 98, 7)
    canvases = scene.canvases()
    expected = phase_shift(to_grey(scene.frame(0, canvases)[0]), to_grey(scene.frame(3, canvases)[0]))
    assert frames[1]["dx"] == pytest.approx(expected.dx, abs=1e-3)  # keyframe 4 against keyframe 1
    assert abs(expected.dx) > 6  # three frames of motion, not one
