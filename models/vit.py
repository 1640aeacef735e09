"""DINOv2 vision transformer, with the module names of the official release so its files load strictly.

Only what the NYUv2 depth heads use is here: the intermediate blocks they read, without the final norm.
Attention is written as explicit matmul-softmax (no xformers) so that it exports to ONNX and so that
the FP16 converter can keep the score matmul and the softmax in FP32 by node name.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from smoothdino.core.console import random_weights_notice

from .archs import PATCH_SIZE, POS_GRID, Arch, get_arch
from .checkpoints import load_strict, official_file, read_checkpoint, resolve, weights_id

FeatureLevels = list[tuple[torch.Tensor, torch.Tensor]]  # 4 x (patch_map [B,C,h,w], class_token [B,C])


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, h*w, C], row-major


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFNFused(nn.Module):
    """ViT-g's FFN: hidden width 2/3 of 4C rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        dim = arch.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, arch.num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim) if arch.ffn == "mlp" else SwiGLUFFNFused(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def interpolate_pos_embed(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resize the 37x37 position grid to h x w exactly as the official code does.

    The official code passes scale_factor=((h + 0.1) / 37, (w + 0.1) / 37), not size=(h, w); PyTorch then
    maps coordinates with that scale, which gives a different embedding than size= (2-4 % of its range).
    """
    n = pos_embed.shape[1] - 1
    if n == h * w and h == w:
        return pos_embed
    dtype = pos_embed.dtype
    pos_embed = pos_embed.float()
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]
    m = int(math.sqrt(n))
    grid = grid.reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic", antialias=False
    )
    assert grid.shape[-2:] == (h, w), grid.shape
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
    return torch.cat((cls_pos, grid), dim=1).to(dtype)


class DinoVisionTransformer(nn.Module):
    """DINOv2 backbone. forward(image) -> the 4 feature levels the NYUv2 depth heads consume."""

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        dim = arch.embed_dim
        self.embed_dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, POS_GRID * POS_GRID + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference, in every release file
        self.patch_embed = PatchEmbed(dim)
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # the depth heads do not use it; kept for strict loading
        self.weights_id = "unset"

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        return interpolate_pos_embed(self.pos_embed, h, w)

    def forward(self, image: torch.Tensor, pos_embed: torch.Tensor | None = None) -> FeatureLevels:
        """image: normalised [B,3,H,W], H and W multiples of 14 (see preprocess).

        pos_embed: an already resized embedding (export passes a constant so no bicubic Resize enters
        the graph); None resizes the trained one for this input.
        """
        b, _, height, width = image.shape
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(f"input {height}x{width} is not a multiple of {PATCH_SIZE}: pad it with preprocess()")
        h, w = height // PATCH_SIZE, width // PATCH_SIZE
        x = self.patch_embed(image)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = x + (self.pos_embed_for(h, w) if pos_embed is None else pos_embed)
        levels: FeatureLevels = []
        for i, block in enumerate(self.blocks[: max(self.arch.out_indices) + 1]):
            x = block(x)
            if i in self.arch.out_indices:
                patch = x[:, 1:].reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
                levels.append((patch, x[:, 0]))
        return levels


def init_random_encoder_(model: DinoVisionTransformer, seed: int) -> None:
    """Seeded init shaped like trained weights, not like a fresh model: trunc-normal(0.02) linears, tiny cls
    token, and - unlike the official init (biases 0, norms 1, LayerScale 1) - non-trivial biases, norm
    weights around 1 and LayerScale gammas in 0.2..1, all distinct per tensor. A fresh-looking init hides
    a dropped bias, swapped norm1/norm2 or a missing LayerScale from every test that runs random weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # trained DINOv2 LayerScales are well below 1
                p.uniform_(0.2, 1.0, generator=gen)
            elif name == "cls_token":
                p.normal_(0.0, 1e-6, generator=gen)
            elif name == "mask_token":
                p.zero_()
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1, generator=gen)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05, generator=gen)
            else:  # pos_embed, patch embedding and linear weights
                p.normal_(0.0, 0.02, generator=gen).clamp_(-0.04, 0.04)


def build_encoder(arch: str) -> DinoVisionTransformer:
    return DinoVisionTransformer(get_arch(arch))


def load_encoder(
    arch: str,
    weights: str | Path | None = None,
    *,
    random_weights: bool = False,
    seed: int = 0,
) -> DinoVisionTransformer:
    """The DINOv2 backbone: official `dinov2_{arch}_pretrain.pth` (strict) or seeded random weights.

    weights: the file, a folder that holds it, or None for the cache ($SMOOTHDINO_HOME/weights).
    """
    model = build_encoder(arch)
    if random_weights:
        init_random_encoder_(model, seed)
        model.weights_id = f"random-weights(seed={seed})"
        random_weights_notice()
    else:
        f = official_file(arch, "backbone")
        path = resolve(f, weights)
        load_strict(model, read_checkpoint(path), path, f"dinov2_{arch} backbone")
        model.weights_id = weights_id(path)
    return model.eval()
