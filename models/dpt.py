"""DINOv2's DPT depth head (mmcv DPTHead), top to bottom, with the official module names.

Keys load strictly from `dinov2_{arch}_nyu_dpt_head.pth` once the `decode_head.` prefix is stripped.
Every ConvModule of mmcv is a module with a `.conv` inside; that level is kept so the keys line up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vit import FeatureLevels


class ConvModule(nn.Module):
    """mmcv ConvModule without norm: conv (+ ReLU after it, or a pre-activation ReLU before it)."""

    def __init__(self, cin, cout, kernel_size, padding=0, bias=True, act=False, preact=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding, bias=bias)
        self.act, self.preact = act, preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            x = F.relu(x)
        x = self.conv(x)
        return F.relu(x) if self.act else x


class ReassembleBlocks(nn.Module):
    """Readout 'project' ([patch, cls] -> Linear -> GELU), 1x1 projection, then resize to 4x, 2x, 1x, 1/2x."""

    def __init__(self, embed_dim: int, out_channels: list[int]):
        super().__init__()
        self.projects = nn.ModuleList(ConvModule(embed_dim, c, 1) for c in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.readout_projects = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU()) for _ in out_channels
        )

    def forward(self, levels: FeatureLevels) -> list[torch.Tensor]:
        out = []
        for i, (patch, cls) in enumerate(levels):
            b, c, h, w = patch.shape
            tokens = patch.flatten(2).transpose(1, 2)  # [B, h*w, C]
            readout = cls.unsqueeze(1).expand_as(tokens)
            x = self.readout_projects[i](torch.cat((tokens, readout), dim=-1))
            x = x.transpose(1, 2).reshape(b, c, h, w)
            out.append(self.resize_layers[i](self.projects[i](x)))
        return out


class PreActResidualConvUnit(nn.Module):
    """conv2(relu(conv1(relu(x)))) + x; the residual adds the input before its ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3, padding=1, bias=False, preact=True)
        self.conv2 = ConvModule(channels, channels, 3, padding=1, bias=False, preact=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + x


class FeatureFusionBlock(nn.Module):
    def __init__(self, channels: int, with_skip: bool = True):
        super().__init__()
        self.project = ConvModule(channels, channels, 1)
        self.res_conv_unit1 = PreActResidualConvUnit(channels) if with_skip else None
        self.res_conv_unit2 = PreActResidualConvUnit(channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            if skip.shape != x.shape:  # odd grids: the skip (never the path) is resized, half-pixel
                skip = F.interpolate(skip, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class HeadDepth(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        # Indices 1 (upsample) and 3 (ReLU) hold no weights but keep the official key numbering.
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(channels // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class DPTHead(nn.Module):
    """4 feature levels -> depth in metres on the padded canvas x 16/14 (576x736 for 480x640)."""

    def __init__(self, embed_dim: int, post_channels: list[int], channels: int = 256, min_depth: float = 0.001):
        super().__init__()
        self.min_depth = min_depth
        self.reassemble_blocks = ReassembleBlocks(embed_dim, post_channels)
        self.convs = nn.ModuleList(ConvModule(c, channels, 3, padding=1, bias=False) for c in post_channels)
        self.fusion_blocks = nn.ModuleList(FeatureFusionBlock(channels, with_skip=i > 0) for i in range(4))
        self.project = ConvModule(channels, channels, 3, padding=1, act=True)
        self.conv_depth = HeadDepth(channels)

    def forward(self, levels: FeatureLevels) -> torch.Tensor:
        x = [conv(f) for conv, f in zip(self.convs, self.reassemble_blocks(levels))]
        out = self.fusion_blocks[0](x[3])
        for i in range(1, 4):
            out = self.fusion_blocks[i](out, x[3 - i])
        out = self.project(out)
        return F.relu(self.conv_depth(out)) + self.min_depth
