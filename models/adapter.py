"""Temporal adapters: fuse frame t-1's feature levels into frame t's before the depth decoder.

Every adapter: forward(current_levels, previous_levels, shift) -> 4 fused levels of the same shapes.
`shift` is float [B,3]: dx, dy in input-frame pixels as cv2.phaseCorrelate(previous, current) returns
them (current(x) ~ previous(x - d)), and the phase-correlation response (confidence, 0..1).

- `none`: identity.
- `paper`: the published SmoothDINOv2 adapter, computation for computation. Its hidden layers live in
  a plain Python list (never registered, never trained, never saved) and are all zero, so the output is
  current + output-layer bias: a learned constant per channel and level. `static_offsets()` returns it
  so export can fold it into the decoder.
- `temporal`: the method as intended. The previous patch map is aligned by the measured shift (d/14
  patches, bilinear, out-of-frame cells filled from the current map), fused by a small conv block whose
  output layer alone starts at zero (identity at start, every layer trains), and gated by the
  phase-correlation confidence: at confidence 0 (what the run-time passes on a scene cut, see
  edge.motion.scene_cut and --min-confidence) the adapter is exactly the identity.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from smoothdino.core.console import random_weights_notice
from smoothdino.core.errors import UserError

from .archs import PATCH_SIZE, get_arch
from .checkpoints import CheckpointError, load_strict, read_checkpoint, weights_id
from .vit import FeatureLevels

ADAPTER_KINDS = ("none", "paper", "temporal")
NUM_LEVELS = 4


class IdentityAdapter(nn.Module):
    kind = "none"

    def forward(self, current: FeatureLevels, previous: FeatureLevels, shift: torch.Tensor) -> FeatureLevels:
        return list(current)


def _planes(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B,k] scalars -> [B,k,h,w] constant planes shaped like a patch map."""
    return values[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


class PaperAdapter(nn.Module):
    """The published adapter. Checkpoint keys: conv_out.{0..3}.weight [C,C+2,3,3], conv_out.{0..3}.bias [C],
    fc_out.{0..3}.weight [C,C+2], fc_out.{0..3}.bias [C]."""

    kind = "paper"

    def __init__(self, dim: int):
        super().__init__()
        self.conv_out = nn.ModuleList(nn.Conv2d(dim + 2, dim, 3, padding=1) for _ in range(NUM_LEVELS))
        self.fc_out = nn.ModuleList(nn.Linear(dim + 2, dim) for _ in range(NUM_LEVELS))
        # As published: hidden layers in a plain list, zero-initialised. Not parameters, not in
        # state_dict(), never updated: ReLU(0) = 0, so the output weights never see a gradient either.
        self.conv_hidden = [nn.Conv2d(dim + 2, dim + 2, 3, padding=1) for _ in range(NUM_LEVELS)]
        self.fc_hidden = [nn.Linear(dim + 2, dim + 2) for _ in range(NUM_LEVELS)]
        for layer in [*self.conv_out, *self.fc_out, *self.conv_hidden, *self.fc_hidden]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, current: FeatureLevels, previous: FeatureLevels, shift: torch.Tensor) -> FeatureLevels:
        dxdy = shift[:, :2].to(current[0][0].dtype)
        for layer in [*self.conv_hidden, *self.fc_hidden]:  # unregistered: .to(device) never reached them
            layer.to(dxdy.device)
        fused = []
        for i, ((patch, cls), (prev_patch, prev_cls)) in enumerate(zip(current, previous)):
            x = torch.cat((prev_patch, _planes(dxdy, prev_patch)), dim=1)
            x = self.conv_out[i](F.relu(self.conv_hidden[i](x)))
            c = torch.cat((prev_cls, dxdy), dim=1)
            c = self.fc_out[i](F.relu(self.fc_hidden[i](c)))
            fused.append((patch + x, cls + c))
        return fused

    def static_offsets(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level (patch offset [C], class-token offset [C]): what the adapter adds, whatever the input.

        Exact because the hidden layers are zero: the output layers then see only zeros and return their
        bias at every position (zero padding of a zero map is still zero)."""
        if any(bool(layer.weight.any() or layer.bias.any()) for layer in [*self.conv_hidden, *self.fc_hidden]):
            raise RuntimeError("hidden layers are not zero: the paper adapter is no longer a constant offset")
        return [(conv.bias.detach().clone(), fc.bias.detach().clone()) for conv, fc in zip(self.conv_out, self.fc_out)]


def align_previous(previous: torch.Tensor, current: torch.Tensor, shift_px: torch.Tensor):
    """Resample the previous patch map so it lines up with the current one.

    shift_px [B,2] (dx, dy) in frame pixels; patch maps move by d/14 cells. aligned(x) = previous(x - d),
    bilinear; cells whose source lies outside the previous map take the current value, so their
    difference is zero instead of a fabricated border. Returns (aligned, valid [B,1,h,w] in 0..1).
    """
    b, _, h, w = previous.shape
    like = {"dtype": previous.dtype, "device": previous.device}
    ys = (torch.arange(h, **like) * 2 + 1) / h - 1  # cell centres, align_corners=False
    xs = (torch.arange(w, **like) * 2 + 1) / w - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).unsqueeze(0)  # [1,h,w,2] (x, y)
    offset = shift_px / PATCH_SIZE * torch.tensor([2.0 / w, 2.0 / h], **like)
    grid = base - offset.to(previous.dtype)[:, None, None, :]
    warped = F.grid_sample(previous, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones(b, 1, h, w, dtype=previous.dtype, device=previous.device)
    valid = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped + (1.0 - valid) * current, valid


LEGACY_GATE_KEY = "min_confidence"  # a buffer of older temporal adapters, now gone from the graph


class ConfidenceGate(nn.Module):
    """sigmoid(slope * (confidence - centre)), and exactly 0 at confidence <= 0.

    The graph has no threshold of its own: the run-time's scene-cut rule (edge.motion.scene_cut, set by
    --min-confidence) is the only one, and it hands the adapter confidence 0 on a cut. A threshold here
    (it once was 0.1) would silently override a --min-confidence below it."""

    def __init__(self):
        super().__init__()
        self.slope = nn.Parameter(torch.tensor(10.0))
        self.centre = nn.Parameter(torch.tensor(0.2))

    def forward(self, confidence: torch.Tensor) -> torch.Tensor:  # [B] -> [B]
        on = (confidence > 0).to(confidence.dtype)
        return torch.sigmoid(self.slope * (confidence - self.centre)) * on

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + LEGACY_GATE_KEY, None)  # checkpoints saved with the old fixed threshold
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def drop_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A temporal adapter state dict without the old gates' threshold buffers (levels.N.gate.min_confidence),
    so checkpoints trained before the threshold left the graph still load strictly."""
    return {k: v for k, v in state.items() if not k.endswith(f".gate.{LEGACY_GATE_KEY}")}


class TemporalLevel(nn.Module):
    """One level: patch map via 1x1 -> 3x3 -> 1x1 convs, class token via a 2-layer MLP; both residual."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        extra = 4  # dx, dy (in patches), confidence, valid
        self.patch_in = nn.Conv2d(3 * dim + extra, hidden, 1)
        self.patch_mid = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.patch_out = nn.Conv2d(hidden, dim, 1)
        self.cls_in = nn.Linear(3 * dim + 3, hidden)
        self.cls_out = nn.Linear(hidden, dim)
        self.gate = ConfidenceGate()
        for layer in (self.patch_out, self.cls_out):  # identity at start; the layers before still train
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, patch, cls, prev_patch, prev_cls, shift):
        dxdy = shift[:, :2]
        confidence = shift[:, 2:3]
        aligned, valid = align_previous(prev_patch, patch, dxdy)
        scalars = torch.cat((dxdy / PATCH_SIZE, confidence), dim=1)
        x = torch.cat((patch, aligned, patch - aligned, _planes(scalars, patch), valid), dim=1)
        x = self.patch_out(F.gelu(self.patch_mid(F.gelu(self.patch_in(x)))))
        c = torch.cat((cls, prev_cls, cls - prev_cls, scalars), dim=1)
        c = self.cls_out(F.gelu(self.cls_in(c)))
        g = self.gate(confidence[:, 0])
        return patch + g[:, None, None, None] * x, cls + g[:, None] * c


class TemporalAdapter(nn.Module):
    kind = "temporal"

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.hidden = hidden
        self.levels = nn.ModuleList(TemporalLevel(dim, hidden) for _ in range(NUM_LEVELS))

    def forward(self, current: FeatureLevels, previous: FeatureLevels, shift: torch.Tensor) -> FeatureLevels:
        shift = shift.to(current[0][0].dtype)
        return [
            level(patch, cls, prev_patch, prev_cls, shift)
            for level, (patch, cls), (prev_patch, prev_cls) in zip(self.levels, current, previous)
        ]


def build_adapter(kind: str, arch: str, hidden: int = 64) -> nn.Module:
    dim = get_arch(arch).embed_dim
    if kind == "none":
        return IdentityAdapter()
    if kind == "paper":
        return PaperAdapter(dim)
    if kind == "temporal":
        return TemporalAdapter(dim, hidden)
    raise UserError(f"--adapter {kind!r}: choose one of {', '.join(ADAPTER_KINDS)}")


def init_random_adapter_(adapter: nn.Module, seed: int) -> None:
    """Seeded weights for a trained-looking adapter: every registered tensor small and non-zero.

    For `paper` only the output biases matter (as after real training); for `temporal` the zero output
    layers get small values too, so an untrained random adapter is not an identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if name.endswith(("slope", "centre")):
                continue
            p.normal_(0.0, 0.02 if p.ndim > 1 else 0.05, generator=gen)


def _hidden_width(state: dict[str, torch.Tensor]) -> int:
    key = "levels.0.patch_in.weight"
    return int(state[key].shape[0]) if key in state else 64


def load_adapter(
    kind: str,
    arch: str,
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    hidden: int = 64,
) -> nn.Module:
    """An adapter: trained weights (a bare state dict, or a `smoothdino train` checkpoint with an
    'adapter' entry), seeded random weights, or - with neither - its initial state (identity)."""
    if kind not in ADAPTER_KINDS:
        raise UserError(f"--adapter {kind!r}: choose one of {', '.join(ADAPTER_KINDS)}")
    state = None
    if weights is not None and kind != "none":
        path = Path(weights)
        checkpoint = read_checkpoint(path)
        state = checkpoint.get("adapter", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: no adapter state dict inside")
        hidden = _hidden_width(state)
    adapter = build_adapter(kind, arch, hidden)
    adapter.weights_id = "initial"
    if state is not None:
        load_strict(adapter, drop_legacy_keys(state), path, f"{kind} adapter for {arch}")
        adapter.weights_id = weights_id(path)
    elif random_weights and kind != "none":
        init_random_adapter_(adapter, seed)
        adapter.weights_id = f"random-weights(seed={seed})"
        random_weights_notice()
    return adapter.eval()
