"""The run-time pipeline against the PyTorch FP32 reference (encoder -> adapter -> decoder), frame by frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from smoothdino.edge.engines.manifest import Manifest
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.edge.sources.synthetic import SyntheticScene
from smoothdino.models import TorchPipeline

from .conftest import SMALL


def _frames(kind, nyu_root=None, n=5):
    if kind == "synthetic":
        return [rgb for rgb, _ in SyntheticScene(SMALL[0], SMALL[1], frames=n)]
    scene = nyu_root / "basement_0001a_out"
    out = []
    for i in range(1, n + 1):
        rgb = cv2.cvtColor(cv2.imread(str(scene / f"{i}.jpg")), cv2.COLOR_BGR2RGB)
        out.append(cv2.resize(rgb, SMALL[::-1], interpolation=cv2.INTER_AREA))
    return out


def TorchReference(min_confidence=0.1):
    """The same method in PyTorch FP32 (models.TorchPipeline), with the adapter-free decoder beside it."""
    return _WithUnfused(TorchPipeline("vits14", "temporal", size=SMALL, random_weights=True,
                                      min_confidence=min_confidence, keep_outputs=True))


class _WithUnfused:
    def __init__(self, pipeline):
        self.pipeline = pipeline

    def step(self, rgb):
        result = self.pipeline.step(rgb)
        levels = [tuple(torch.from_numpy(result.outputs[f"{kind}{k}"]) for kind in ("patch", "cls")) for k in range(4)]
        with torch.no_grad():
            unfused = self.pipeline.decoder(levels, SMALL)[0, 0].numpy()
        return result.depth, unfused


@pytest.mark.parametrize("kind", ["synthetic", "nyu"])
def test_pipeline_matches_torch_frame_by_frame(kind, small_export_fp32, request):
    nyu_root = request.getfixturevalue("nyu_root") if kind == "nyu" else None
    frames = _frames(kind, nyu_root)
    reference = TorchReference()
    with DepthPipeline.from_folder(small_export_fp32, backend="onnxruntime") as pipeline:
        for i, rgb in enumerate(frames):
            result = pipeline.step(rgb)
            expected, unfused = reference.step(rgb)
            rel = np.abs(result.depth - expected).max() / np.abs(expected).max()
            assert rel <= 1e-4, (i, rel)
            if i == 0:  # first frame: the gate is closed, the adapter is the identity
                assert result.shift.confidence == 0.0
                assert np.abs(result.depth - unfused).max() / np.abs(unfused).max() <= 1e-4
            else:
                assert result.shift.confidence > 0.1
                assert np.abs(expected - unfused).max() > 1e-3  # the adapter really changed this frame
        assert pipeline.runs["encoder"] == len(frames)  # once per frame: frame t-1 is never re-encoded
        assert pipeline.runs["adapter"] == pipeline.runs["decoder"] == len(frames)


def test_scene_cut_resets_fusion(small_export_fp32):
    a = [rgb for rgb, _ in SyntheticScene(SMALL[0], SMALL[1], frames=2, seed=1)]
    noise = np.random.default_rng(5).integers(0, 256, (SMALL[0], SMALL[1], 3), dtype=np.uint8)
    reference = TorchReference(min_confidence=0.5)
    with DepthPipeline.from_folder(small_export_fp32, backend="onnxruntime", min_confidence=0.5) as pipeline:
        for rgb in a:
            pipeline.step(rgb), reference.step(rgb)
        cut = pipeline.step(noise)
        expected, unfused = reference.step(noise)
    assert cut.scene_cut and cut.shift.confidence == 0.0
    assert np.abs(cut.depth - unfused).max() / np.abs(unfused).max() <= 1e-4
    assert np.abs(expected - unfused).max() == 0.0


def test_fp16_pipeline_runs_and_reports_stage_timings(small_export):
    frames = _frames("synthetic")
    with DepthPipeline.from_folder(small_export, backend="auto") as pipeline:
        assert pipeline.backend == "onnxruntime" and pipeline.precision == "fp16"
        results = [pipeline.step(rgb) for rgb in frames]
    assert all(np.isfinite(r.depth).all() and r.depth.shape == SMALL for r in results)
    t = results[-1].timings
    assert t["encoder"] > 0 and t["adapter"] > 0 and t["decoder"] > 0 and t["motion"] > 0


def test_wrong_frame_size_is_one_line(small_export):
    from smoothdino.core.errors import UserError

    with DepthPipeline(Manifest.load(small_export), backend="onnxruntime") as pipeline:
        with pytest.raises(UserError) as err:
            pipeline.step(np.zeros((480, 640, 3), np.uint8))
    assert "480x640" in str(err.value) and "70x98" in str(err.value) and "\n" not in str(err.value)
