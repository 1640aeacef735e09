"""Depth decoders against float64 functional re-computations of the spec, and the post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smoothdino.models import load_decoder, load_encoder, preprocess

from .reference import dpt_reference, linear4_reference
from .spec_keys import official_keys, save_official, trivial_tensors, write_official


def _levels(dim, h, w, seed=0, batch=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, dim, h, w, generator=gen), torch.randn(batch, dim, generator=gen)) for _ in range(4)]


def _head_file(folder, head: str, source: str, seed: int):
    """An official-layout head file (mmcv checkpoint, decode_head. prefix): our seeded random init or the
    spec's key table filled independently of our module code. Returns (path, the unprefixed state)."""
    path = folder / f"dinov2_vits14_nyu_{head}_head.pth"
    if source == "random-weights":
        state = load_decoder("vits14", head, random_weights=True, seed=seed).head.state_dict()
        assert set(state) == set(official_keys("vits14", head))
        write_official(path, head, state)
    else:
        state = save_official(path, "vits14", head, seed=seed)
    assert trivial_tensors(state) == []  # a dropped bias must change the output
    return path, state


@pytest.mark.parametrize("source", ["random-weights", "spec-keys"])
@pytest.mark.parametrize("grid", [(5, 7), (6, 8)])  # odd and even grids take different fusion paths
def test_dpt_head_matches_reference(grid, source, tmp_path):
    path, state = _head_file(tmp_path, "dpt", source, seed=4)
    dec = load_decoder("vits14", "dpt", path)  # strict load of the release layout
    levels = _levels(384, *grid, batch=2)
    with torch.no_grad():
        ours = dec.head(levels)
    ref = dpt_reference(state, levels)
    r = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
    assert ours.shape == (2, 1, 32 * r[0], 32 * r[1])
    assert (ref > 0.01).float().mean() > 0.2  # not all on the ReLU floor, so the comparison means something
    assert (ours.double() - ref).abs().max() / ref.abs().max() < 1e-4


@pytest.mark.parametrize("source", ["random-weights", "spec-keys"])
def test_linear4_head_matches_reference(source, tmp_path):
    path, state = _head_file(tmp_path, "linear4", source, seed=2)
    dec = load_decoder("vits14", "linear4", path)
    levels = _levels(384, 5, 7)
    with torch.no_grad():
        ours = dec.head(levels)
    ref = linear4_reference(state, levels)
    assert ours.shape == (1, 1, 20, 28)
    assert (ours.double() - ref).abs().max() < 1e-4
    assert 0.001 <= ref.min() and ref.max() <= 10.0  # NYU bins, not the hub's 80 m


def test_post_processing_clamps_then_resizes_whole_canvas():
    dec = load_decoder("vits14", "dpt", random_weights=True)
    levels = _levels(384, 5, 7)
    with torch.no_grad():
        raw = dec.head(levels)
        depth = dec(levels, (66, 90))
    expected = F.interpolate(raw.clamp(0.001, 10.0), size=(66, 90), mode="bilinear", align_corners=False)
    assert torch.allclose(depth, expected)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["dpt", "linear4"])
def test_decoder_480x640_finite_in_range(head):
    enc = load_encoder("vits14", random_weights=True)
    dec = load_decoder("vits14", head, random_weights=True)
    rgb = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with torch.no_grad():
        depth = dec(enc(preprocess(rgb)), (480, 640))
    assert depth.shape == (1, 1, 480, 640)
    assert torch.isfinite(depth).all()
    assert depth.min() >= 0.001 and depth.max() <= 10.0
    assert depth.std() > 0  # not clamped flat
