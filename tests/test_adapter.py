"""Adapters: the published flaw, reproduced and caught; the corrected adapter learns what it should."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smoothdino.models import build_adapter, load_adapter
from smoothdino.models.adapter import PaperAdapter, TemporalAdapter


def _levels(dim=32, h=5, w=7, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, dim, h, w, generator=gen), torch.randn(batch, dim, generator=gen)) for _ in range(4)]


def _two_steps(adapter):
    """Two Adam steps on a simple target; returns the set of parameter names with a non-zero gradient per step."""
    current, previous = _levels(seed=1), _levels(seed=2)
    target = _levels(seed=3)
    shift = torch.tensor([[5.0, -3.0, 0.9], [-2.0, 1.0, 0.8]])
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    seen = []
    for _ in range(2):
        out = adapter(current, previous, shift)
        loss = sum(F.mse_loss(p, tp) + F.mse_loss(c, tc) for (p, c), (tp, tc) in zip(out, target))
        opt.zero_grad()
        loss.backward()
        seen.append({n for n, p in adapter.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0})
        opt.step()
    return seen


def test_temporal_every_parameter_learns_within_two_steps():
    adapter = TemporalAdapter(32, hidden=16)
    step1, step2 = _two_steps(adapter)
    names = {n for n, _ in adapter.named_parameters()}
    assert {n for n in names if "_out." in n} <= step1  # the zero-initialised output layers first
    assert not {n for n in names if "_in." in n or "_mid." in n} & step1  # no gradient through zero output weights
    assert step1 | step2 == names  # every parameter, by step 2


def test_paper_design_leaves_hidden_layers_and_output_weights_dead():
    adapter = PaperAdapter(32)
    registered = {n for n, _ in adapter.named_parameters()}
    assert registered == {f"{k}.{i}.{p}" for k in ("conv_out", "fc_out") for i in range(4) for p in ("weight", "bias")}
    assert all(not any(p is q for q in adapter.parameters()) for layer in adapter.conv_hidden for p in layer.parameters())
    step1, step2 = _two_steps(adapter)
    assert step1 == step2 == {n for n in registered if n.endswith("bias")}  # only the output biases ever learn
    assert all(float(layer.weight.detach().abs().sum()) == 0 for layer in adapter.conv_hidden)
    assert all(float(layer.weight.detach().abs().sum()) == 0 for layer in adapter.conv_out)


def _conv2d_numpy(x, w, b):
    """x [C,H,W], w [O,C,3,3], zero padding 1 -> [O,H,W] (direct sum, float64)."""
    c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], h, wd))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("oc,chw->ohw", w[:, :, dy, dx], xp[:, dy:dy + h, dx:dx + wd])
    return out + b[:, None, None]


def test_paper_checkpoint_equals_published_formula(tmp_path):
    dim = 384
    gen = torch.Generator().manual_seed(0)
    state = {}
    for i in range(4):  # the published file: output layers only, [C, C+2] inputs
        state[f"conv_out.{i}.weight"] = torch.randn(dim, dim + 2, 3, 3, generator=gen) * 0.01
        state[f"conv_out.{i}.bias"] = torch.randn(dim, generator=gen) * 0.1
        state[f"fc_out.{i}.weight"] = torch.randn(dim, dim + 2, generator=gen) * 0.01
        state[f"fc_out.{i}.bias"] = torch.randn(dim, generator=gen) * 0.1
    torch.save(state, tmp_path / "smoothdinov2_adapter.pth")
    adapter = load_adapter("paper", "vits14", tmp_path / "smoothdinov2_adapter.pth")
    current, previous = _levels(dim, 4, 5, batch=1, seed=4), _levels(dim, 4, 5, batch=1, seed=5)
    dx, dy = 7.5, -2.25
    with torch.no_grad():
        out = adapter(current, previous, torch.tensor([[dx, dy, 0.9]]))
    for i, ((p, c), (pp, pc), (op, oc)) in enumerate(zip(current, previous, out)):
        # published: hidden = relu(conv_hidden([prev; dx; dy])) with all-zero hidden weights, then conv_out, + current
        x = np.concatenate([pp[0].double().numpy(), np.full((1, 4, 5), dx), np.full((1, 4, 5), dy)])
        hidden = np.maximum(_conv2d_numpy(x, np.zeros((dim + 2, dim + 2, 3, 3)), np.zeros(dim + 2)), 0)
        ref_p = p[0].double().numpy() + _conv2d_numpy(hidden, state[f"conv_out.{i}.weight"].double().numpy(),
                                                       state[f"conv_out.{i}.bias"].double().numpy())
        h_cls = np.maximum(np.zeros((dim + 2, dim + 2)) @ np.concatenate([pc[0].double().numpy(), [dx, dy]]), 0)
        ref_c = c[0].double().numpy() + state[f"fc_out.{i}.weight"].double().numpy() @ h_cls + state[f"fc_out.{i}.bias"].double().numpy()
        np.testing.assert_allclose(op[0].double().numpy(), ref_p, atol=1e-5)
        np.testing.assert_allclose(oc[0].double().numpy(), ref_c, atol=1e-5)
    offsets = adapter.static_offsets()
    assert torch.equal(offsets[2][0], state["conv_out.2.bias"]) and torch.equal(offsets[1][1], state["fc_out.1.bias"])


def test_temporal_identity_at_start_and_gate_switches_off():
    adapter = build_adapter("temporal", "vits14")
    current, previous = _levels(384, seed=6), _levels(384, seed=7)
    out = adapter(current, previous, torch.tensor([[3.0, 1.0, 0.9], [0, 0, 0.5]]))
    assert all(torch.equal(o[0], c[0]) and torch.equal(o[1], c[1]) for o, c in zip(out, current))
    trained = load_adapter("temporal", "vits14", random_weights=True)
    with torch.no_grad():
        on = trained(current, previous, torch.tensor([[3.0, 1.0, 0.9], [3.0, 1.0, 0.9]]))
        off = trained(current, previous, torch.tensor([[3.0, 1.0, 0.0], [-2.0, 5.0, 0.0]]))  # a scene cut: 0
    assert all((o[0] - c[0]).abs().max() > 1e-3 for o, c in zip(on, current))
    assert all(torch.equal(o[0], c[0]) and torch.equal(o[1], c[1]) for o, c in zip(off, current))


@pytest.mark.parametrize("confidence", [0.01, 0.05, 0.07, 0.099])
def test_gate_has_no_threshold_of_its_own(confidence):
    """Below the old fixed 0.1 the gate is open: only the run-time's --min-confidence decides a cut."""
    trained = load_adapter("temporal", "vits14", random_weights=True)  # non-zero output layers
    current, previous = _levels(384, batch=1, seed=6), _levels(384, batch=1, seed=7)
    with torch.no_grad():
        out = trained(current, previous, torch.tensor([[3.0, 1.0, confidence]]))
    assert all((o[0] - c[0]).abs().max() > 1e-4 for o, c in zip(out, current)), confidence


def test_old_checkpoints_with_the_gate_threshold_still_load(tmp_path):
    """Temporal adapters saved while the gate held a `min_confidence` buffer load, strictly, both ways."""
    trained = load_adapter("temporal", "vits14", random_weights=True, seed=3)
    old = dict(trained.state_dict())
    old.update({f"levels.{i}.gate.min_confidence": torch.tensor(0.1) for i in range(4)})
    torch.save({"adapter": old, "kind": "temporal", "arch": "vits14", "hidden": 64}, tmp_path / "adapter.pt")
    loaded = load_adapter("temporal", "vits14", tmp_path / "adapter.pt")  # export / process path
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in trained.state_dict().items())
    resumed = build_adapter("temporal", "vits14")
    resumed.load_state_dict(old)  # train --resume path: strict load_state_dict
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in trained.state_dict().items())
    with pytest.raises(RuntimeError, match="Unexpected"):  # still strict about anything else
        build_adapter("temporal", "vits14").load_state_dict({**old, "levels.0.gate.other": torch.tensor(1.0)})


def _confident_shift(monkeypatch, confidence):
    from smoothdino.edge import pipeline as pipeline_module
    from smoothdino.edge.motion import Shift

    monkeypatch.setattr(pipeline_module, "phase_shift", lambda *a, **k: Shift(3.0, -1.0, confidence))


def _second_frames(pipeline, frames, thresholds):
    """The second frame's result for each --min-confidence, one sequence per threshold on one pipeline."""
    out = []
    with pipeline:
        for min_confidence in thresholds:
            pipeline.reset()
            pipeline.min_confidence = min_confidence
            out.append([pipeline.step(rgb) for rgb in frames][1])
    return out


def test_min_confidence_below_0_1_takes_effect_in_torch_pipeline(monkeypatch, textured_rgb):
    """--min-confidence 0.05 fuses a frame whose confidence is 0.07; 0.1 treats it as a scene cut."""
    from smoothdino.models import TorchPipeline

    _confident_shift(monkeypatch, 0.07)
    frames = [textured_rgb, np.roll(textured_rgb, 3, axis=1)]
    pipeline = TorchPipeline("vits14", "temporal", size=textured_rgb.shape[:2], random_weights=True)
    low, default = _second_frames(pipeline, frames, (0.05, 0.1))
    assert not low.scene_cut and low.shift.confidence == pytest.approx(0.07)
    assert default.scene_cut and default.shift.confidence == 0.0
    assert np.abs(low.depth - default.depth).max() > 1e-3


def test_min_confidence_below_0_1_takes_effect_in_exported_pipeline(monkeypatch, small_export_fp32):
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.edge.sources.synthetic import SyntheticScene

    _confident_shift(monkeypatch, 0.07)
    frames = [rgb for rgb, _ in SyntheticScene(70, 98, frames=2)]

    pipeline = DepthPipeline.from_folder(small_export_fp32, backend="onnxruntime")
    low, default = _second_frames(pipeline, frames, (0.05, 0.1))
    assert not low.scene_cut and default.scene_cut
    assert np.abs(low.depth - default.depth).max() > 1e-3
