"""Our encoder against a float64 numpy re-computation written from the spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smoothdino.models import interpolate_pos_embed, load_encoder, patch_grid, preprocess

from .reference import np_encoder, np_pos_embed, np_preprocess
from .spec_keys import official_keys, save_official, trivial_tensors, write_official


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("grid", [(35, 46), (5, 7), (36, 36), (40, 53)])
def test_pos_embed_resize_matches_direct_bicubic(grid):
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 1370, 16, generator=gen)
    ours = interpolate_pos_embed(pos, *grid).numpy()
    ref = np_pos_embed(pos.double().numpy(), *grid)
    assert ours.shape == (1, 1 + grid[0] * grid[1], 16)
    assert _rel(ours, ref) < 1e-5
    # size= instead of the official scale factors gives a different embedding: the test can tell.
    wrong = F.interpolate(pos[:, 1:].reshape(1, 37, 37, 16).permute(0, 3, 1, 2), size=grid, mode="bicubic")
    assert _rel(wrong.permute(0, 2, 3, 1).reshape(1, -1, 16).numpy(), ref[:, 1:]) > 1e-3


def test_pos_embed_fast_path_only_at_518():
    pos = torch.randn(1, 1370, 8)
    assert interpolate_pos_embed(pos, 37, 37) is pos


def test_preprocess_centre_pads_with_the_mean_colour(textured_rgb):
    x = preprocess(textured_rgb)
    assert x.shape == (1, 3, 70, 98)  # already multiples of 14: no padding
    rgb = np.full((480, 640, 3), (124, 116, 104), np.uint8)
    x = preprocess(rgb)
    assert x.shape == (1, 3, 490, 644)
    assert torch.all(x[:, :, :5] == 0) and torch.all(x[:, :, -5:] == 0)
    assert torch.all(x[:, :, :, :2] == 0) and torch.all(x[:, :, :, -2:] == 0)
    np.testing.assert_allclose(x[0].numpy(), np_preprocess(rgb), rtol=0, atol=1e-5)


def _backbone_file(folder, source: str):
    """An official-layout backbone file: our seeded random init (what every --random-weights run uses) or
    the spec's key table filled independently of our module code. Returns (path, the state it holds)."""
    path = folder / "dinov2_vits14_pretrain.pth"
    if source == "random-weights":
        state = load_encoder("vits14", random_weights=True, seed=3).state_dict()
        assert set(state) == set(official_keys("vits14", "backbone"))
        write_official(path, "backbone", state)
    else:
        state = save_official(path, "vits14", "backbone", seed=3)
    # Non-trivial biases, norms and LayerScales, or the reference comparison below could not see them.
    assert trivial_tensors(state) == []
    return path, state


@pytest.mark.parametrize("source", ["random-weights", "spec-keys"])
@pytest.mark.parametrize("size", [(70, 98), (60, 90)])
def test_encoder_matches_numpy_reference(size, source, textured_rgb, tmp_path):
    import cv2

    path, state = _backbone_file(tmp_path, source)
    enc = load_encoder("vits14", path)  # strict load of the release layout
    rgb = cv2.resize(textured_rgb, size[::-1])
    with torch.no_grad():
        levels = enc(preprocess(rgb))
    ref = np_encoder({k: v.numpy() for k, v in state.items()}, np_preprocess(rgb), heads=6, out_indices=(2, 5, 8, 11))
    h, w = patch_grid(*size)
    for (patch, cls), (rp, rc) in zip(levels, ref):
        assert patch.shape == (1, 384, h, w) and cls.shape == (1, 384)
        assert _rel(patch[0].numpy(), rp) < 1e-4
        assert _rel(cls[0].numpy(), rc) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("arch,dim", [("vits14", 384), ("vitb14", 768)])
def test_encoder_shapes_at_480x640(arch, dim):
    enc = load_encoder(arch, random_weights=True)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with torch.no_grad():
        levels = enc(preprocess(rgb))
    assert [tuple(p.shape) for p, _ in levels] == [(1, dim, 35, 46)] * 4
    assert [tuple(c.shape) for _, c in levels] == [(1, dim)] * 4
    assert all(torch.isfinite(p).all() and torch.isfinite(c).all() for p, c in levels)


def test_encoder_rejects_unpadded_input():
    enc = load_encoder("vits14", random_weights=True)
    with pytest.raises(ValueError, match="multiple of 14"):
        enc(torch.zeros(1, 3, 30, 30))


def test_random_weights_are_seeded():
    a = load_encoder("vits14", random_weights=True, seed=1).state_dict()
    b = load_encoder("vits14", random_weights=True, seed=1).state_dict()
    c = load_encoder("vits14", random_weights=True, seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])
