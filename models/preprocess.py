"""Official DINOv2 depth pre-processing: RGB on the 0-255 scale, ImageNet mean/std, then centre padding.

The padding is applied after normalisation, with zeros, so the border is the mean colour (not black),
exactly as the depthers' forward pre-hook does. The same function is traced into the encoder ONNX graph.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .archs import center_padding

MEAN_255 = (123.675, 116.28, 103.53)
STD_255 = (58.395, 57.12, 57.375)


def normalize_and_pad(rgb_nhwc: torch.Tensor) -> torch.Tensor:
    """uint8 or float RGB [B,H,W,3] (0-255) -> normalised, centre-padded float32 [B,3,H',W']."""
    # Cast first, then permute: TensorRT accepts a UINT8 network input only as the input of a Cast.
    # (Converting uint8 to float32 is exact, so the order changes no number.)
    x = rgb_nhwc.float().permute(0, 3, 1, 2)
    mean = torch.tensor(MEAN_255, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD_255, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x - mean) / std
    # int(): the tracer must see constants here; traced shape arithmetic would turn the ceil
    # (-(-n // 14)) into an ONNX integer Div, which truncates instead of flooring.
    top, bottom = center_padding(int(x.shape[2]))
    left, right = center_padding(int(x.shape[3]))
    return F.pad(x, (left, right, top, bottom))


def preprocess(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB uint8 [H,W,3] (or a batch [B,H,W,3]) -> encoder input [B,3,H',W'], H' and W' multiples of 14."""
    x = torch.as_tensor(np.ascontiguousarray(rgb)) if isinstance(rgb, np.ndarray) else rgb
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB [H,W,3] or [B,H,W,3], got shape {tuple(x.shape)}")
    return normalize_and_pad(x)
