"""NYUv2 depth decoder: a DINOv2 depth head plus the official encode_decode post-processing.

Post-processing as the official DepthEncoderDecoder: clamp to the head's range, then resize the whole
prediction (padded canvas included, nothing cropped) bilinearly, half-pixel, to the frame size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from smoothdino.core.console import random_weights_notice
from smoothdino.core.errors import UserError

from .archs import NYU_DEPTH_RANGE, get_arch
from .checkpoints import head_state_dict, load_strict, official_file, read_checkpoint, resolve, weights_id
from .dpt import DPTHead
from .linear import LinearDepthHead
from .vit import FeatureLevels


def build_head(arch: str, head: str = "dpt") -> nn.Module:
    a = get_arch(arch)
    if head == "dpt":
        return DPTHead(a.embed_dim, a.dpt_channels, min_depth=NYU_DEPTH_RANGE[0])
    if head == "linear4":
        return LinearDepthHead(a.embed_dim, 4, min_depth=NYU_DEPTH_RANGE[0], max_depth=NYU_DEPTH_RANGE[1])
    raise UserError(f"--head {head!r}: choose dpt or linear4")


class DepthDecoder(nn.Module):
    """forward(levels, image_size) -> metric depth [B,1,H,W] in metres."""

    def __init__(self, head: nn.Module, arch: str, head_kind: str):
        super().__init__()
        self.head = head
        self.arch, self.head_kind = arch, head_kind
        self.min_depth, self.max_depth = NYU_DEPTH_RANGE
        self.weights_id = "unset"

    def forward(self, levels: FeatureLevels, image_size: tuple[int, int]) -> torch.Tensor:
        depth = self.head(levels).clamp(self.min_depth, self.max_depth)
        return F.interpolate(depth, size=tuple(image_size), mode="bilinear", align_corners=False)


def init_random_head_(head: nn.Module, seed: int) -> None:
    """Seeded init in the spirit of the official one (MSRA fan-out convs, small linears), scaled so that
    random features give depths inside the NYU range rather than a head clamped flat at min_depth.
    Biases are small but non-zero (as after training), so a test on random weights sees a dropped bias."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.05, generator=gen)
            elif p.ndim == 4:  # conv / transposed conv: MSRA, fan-out
                fan_out = p.shape[0] * p.shape[2] * p.shape[3]
                p.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
            else:
                p.normal_(0.0, 0.02, generator=gen)
        if isinstance(head, DPTHead):
            _center_dpt_output_(head, gen)


def _center_dpt_output_(head: DPTHead, gen: torch.Generator, depth=2.5, spread=0.5) -> None:
    """Random features through random fusion blocks give outputs of arbitrary scale. Rescale the last 1x1
    conv on a seeded probe input so random-weight depths sit near an indoor depth (mean 2.5 m, std 0.5 m)
    instead of being clamped flat; deterministic for a seed, independent of the frames that follow."""
    dim = head.reassemble_blocks.readout_projects[0][0].out_features
    probe = [(torch.randn(1, dim, 6, 8, generator=gen) * 0.5, torch.randn(1, dim, generator=gen) * 0.5)] * 4
    last = head.conv_depth.head[4]
    last.weight.sub_(last.weight.mean())
    captured = {}
    hook = last.register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out))
    head(probe)
    hook.remove()
    out = captured["out"] - last.bias.view(1, -1, 1, 1)
    scale = spread / float(out.std().clamp_min(1e-6))
    last.weight.mul_(scale)
    last.bias.fill_(depth - float(out.mean()) * scale)


def load_decoder(
    arch: str,
    head: str = "dpt",
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
) -> DepthDecoder:
    """The NYUv2 depth decoder for an arch: official head file (strict) or seeded random weights."""
    module = build_head(arch, head)
    decoder = DepthDecoder(module, arch, head)
    if random_weights:
        init_random_head_(module, seed)
        decoder.weights_id = f"random-weights(seed={seed})"
        random_weights_notice()
    else:
        f = official_file(arch, head)
        path = resolve(f, weights)
        load_strict(module, head_state_dict(read_checkpoint(path), path), path, f"dinov2_{arch} NYU {head} head")
        decoder.weights_id = weights_id(path)
    return decoder.eval()
