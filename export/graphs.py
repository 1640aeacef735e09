"""The three exported graphs as torch modules with flat, named I/O (see edge/graph_io.py).

Each is fixed to one frame size: the position embedding is resized once, here, in FP32 exactly as the
official code does, and enters the graph as a constant, so no bicubic Resize and no shape arithmetic is
traced (the two things that break DINOv2 ONNX exports at other sizes).
"""

from __future__ import annotations

import torch
from torch import nn

from smoothdino.models.archs import patch_grid
from smoothdino.models.decoder import DepthDecoder
from smoothdino.models.preprocess import normalize_and_pad
from smoothdino.models.vit import DinoVisionTransformer


def pack(levels) -> tuple[torch.Tensor, ...]:
    return tuple(t for pair in levels for t in pair)


def unpack(flat) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(flat[2 * k], flat[2 * k + 1]) for k in range(len(flat) // 2)]


class EncoderGraph(nn.Module):
    """image uint8 [1,H,W,3] RGB -> patch0, cls0, ..., patch3, cls3 (normalisation and padding inside)."""

    def __init__(self, encoder: DinoVisionTransformer, size: tuple[int, int]):
        super().__init__()
        self.encoder = encoder
        with torch.no_grad():
            self.register_buffer("pos_embed", encoder.pos_embed_for(*patch_grid(*size)).detach().clone())

    def forward(self, image: torch.Tensor):
        return pack(self.encoder(normalize_and_pad(image), pos_embed=self.pos_embed))


class AdapterGraph(nn.Module):
    """patch/cls levels, prev_ levels, shift [1,3] -> fused levels."""

    def __init__(self, adapter: nn.Module):
        super().__init__()
        self.adapter = adapter

    def forward(self, *tensors: torch.Tensor):
        current, previous, shift = unpack(tensors[:8]), unpack(tensors[8:16]), tensors[16]
        return pack(self.adapter(current, previous, shift))


class DecoderGraph(nn.Module):
    """patch/cls levels -> depth [1,1,H,W] in metres."""

    def __init__(self, decoder: DepthDecoder, size: tuple[int, int]):
        super().__init__()
        self.decoder, self.size = decoder, tuple(size)

    def forward(self, *tensors: torch.Tensor):
        return self.decoder(unpack(tensors), self.size)
