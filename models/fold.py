"""Fold the `paper` adapter's constant offsets into the decoder's first layers: same depth, zero cost.

The published adapter adds a constant per channel and level to the features (its hidden layers are
zero). Every head consumes the features through an affine first layer, so the constant becomes bias:
- DPT: readout Linear on [patch + a, cls + b]: bias += W[:, :C] a + W[:, C:] b.
- linear4: [patch + a, cls + b] per level is bilinearly resized (a constant stays itself) and then a
  1x1 conv: bias += W [a0, b0, a1, b1, ...].
"""

from __future__ import annotations

import copy

import torch

from .decoder import DepthDecoder
from .dpt import DPTHead
from .linear import LinearDepthHead


def fold_offsets_into_decoder(decoder: DepthDecoder, offsets: list[tuple[torch.Tensor, torch.Tensor]]) -> DepthDecoder:
    folded = copy.deepcopy(decoder)
    head = folded.head
    with torch.no_grad():
        if isinstance(head, DPTHead):
            for (a, b), project in zip(offsets, head.reassemble_blocks.readout_projects):
                linear = project[0]
                c = a.numel()
                linear.bias += linear.weight[:, :c] @ a.to(linear.weight.dtype) + linear.weight[:, c:] @ b.to(linear.weight.dtype)
        elif isinstance(head, LinearDepthHead):
            shift = torch.cat([torch.cat((a, b)) for a, b in offsets]).to(head.conv_depth.weight.dtype)
            head.conv_depth.bias += head.conv_depth.weight[:, :, 0, 0] @ shift
        else:
            raise TypeError(f"cannot fold offsets into {type(head).__name__}")
    folded.weights_id = decoder.weights_id + "+paper-adapter-folded"
    return folded
