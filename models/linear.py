"""DINOv2's linear4 NYUv2 depth head (mmcv BNHead, classify=True): 256 uniform bins, 'linear' norm.

[patch, cls] per level, each resized to 4x (bilinear, half-pixel), concatenated, a 1x1 conv to 256 bin
logits, relu + 0.1, normalised, expectation over bins. The bins are 0.001..10 m for NYU (the hub's linear
depther hard-codes 80 m; that is a bug we do not copy). The einsum is written as a multiply-and-sum,
which TensorRT takes without an Einsum layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vit import FeatureLevels


class LinearDepthHead(nn.Module):
    def __init__(self, embed_dim: int, num_levels: int = 4, n_bins: int = 256, min_depth=0.001, max_depth=10.0):
        super().__init__()
        self.conv_depth = nn.Conv2d(embed_dim * num_levels * 2, n_bins, kernel_size=1)
        self.register_buffer("bins", torch.linspace(min_depth, max_depth, n_bins), persistent=False)
        self.upsample = 4

    def features(self, levels: FeatureLevels) -> torch.Tensor:
        maps = [torch.cat((p, c[:, :, None, None].expand_as(p)), dim=1) for p, c in levels]
        size = [s * self.upsample for s in maps[0].shape[2:]]
        maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        return torch.cat(maps, dim=1)

    def forward(self, levels: FeatureLevels) -> torch.Tensor:
        p = F.relu(self.conv_depth(self.features(levels))) + 0.1
        p = p / p.sum(dim=1, keepdim=True)
        return (p * self.bins.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
