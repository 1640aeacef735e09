"""Independent references written from ../shared/DINOV2_SPEC.md, not from our modules.

- The ViT encoder and the position-embedding resize in numpy float64 (PyTorch's bicubic kernel with
  scale-factor coordinate mapping, A = -0.75, clamped border taps).
- The DPT head and the linear4 head as float64 functional re-computations straight from a state dict.
They read weights by their official key names, so they also check that our module names mean what the
release means by them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import erf

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def np_preprocess(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [H,W,3] -> normalised, centre-padded float64 [3,H',W']."""
    x = (rgb.astype(np.float64) - MEAN) / STD
    h, w = rgb.shape[:2]
    ph, pw = -(-h // 14) * 14 - h, -(-w // 14) * 14 - w
    x = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    return x.transpose(2, 0, 1)


def _cubic_weights(t: float, a: float = -0.75) -> np.ndarray:
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.array([far(t + 1), near(t), near(1 - t), far(2 - t)])


def bicubic_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """[n_out, n_in] matrix of F.interpolate(mode='bicubic', align_corners=False, scale_factor=scale)
    along one axis: src = (dst + 0.5) / scale - 0.5, taps clamped to the border."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = (o + 0.5) / scale - 0.5
        i0 = int(np.floor(src))
        for k, wt in zip(range(i0 - 1, i0 + 3), _cubic_weights(src - i0)):
            m[o, min(max(k, 0), n_in - 1)] += wt
    return m


def np_pos_embed(pos_embed: np.ndarray, h: int, w: int) -> np.ndarray:
    """[1, 1+37*37, C] -> [1, 1+h*w, C] with the official +0.1 scale factors."""
    n = pos_embed.shape[1] - 1
    m = int(round(np.sqrt(n)))
    if n == h * w and h == w:
        return pos_embed
    grid = pos_embed[0, 1:].reshape(m, m, -1)
    rows = bicubic_matrix(m, h, (h + 0.1) / m)
    cols = bicubic_matrix(m, w, (w + 0.1) / m)
    out = np.einsum("hi,ijc,wj->hwc", rows, grid, cols).reshape(1, h * w, -1)
    return np.concatenate([pos_embed[:, :1], out], axis=1)


def _layer_norm(x, weight, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def _gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def np_encoder(state: dict[str, np.ndarray], image: np.ndarray, heads: int, out_indices) -> list:
    """Official backbone in float64. image: normalised, padded [3,H,W]. Returns [(patch [C,h,w], cls [C])]."""
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    c = sd["cls_token"].shape[-1]
    _, height, width = image.shape
    h, w = height // 14, width // 14
    # Patch embedding: a 14x14 stride-14 conv is a matmul over non-overlapping patches (row-major).
    patches = image.reshape(3, h, 14, w, 14).transpose(1, 3, 0, 2, 4).reshape(h * w, 3 * 14 * 14)
    x = patches @ sd["patch_embed.proj.weight"].reshape(c, -1).T + sd["patch_embed.proj.bias"]
    x = np.concatenate([sd["cls_token"][0], x], axis=0) + np_pos_embed(sd["pos_embed"], h, w)[0]
    levels = []
    hd = c // heads
    for i in range(max(out_indices) + 1):
        p = f"blocks.{i}."
        y = _layer_norm(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        qkv = y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]  # [N, 3C]: (3, heads, 64)
        qkv = qkv.reshape(-1, 3, heads, hd).transpose(1, 2, 0, 3)  # [3, heads, N, hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        s = q @ k.transpose(0, 2, 1) * hd ** -0.5
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v  # [heads, N, hd]
        a = a.transpose(1, 0, 2).reshape(-1, c) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + a * sd[p + "ls1.gamma"]
        y = _layer_norm(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        y = _gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        y = y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        x = x + y * sd[p + "ls2.gamma"]
        if i in out_indices:
            levels.append((x[1:].reshape(h, w, c).transpose(2, 0, 1), x[0]))
    return levels


def dpt_reference(sd: dict[str, torch.Tensor], levels, min_depth=0.001) -> torch.Tensor:
    """DPT head, spec section 2.4 steps 1-9, float64, functional. levels: [(patch [B,C,h,w], cls [B,C])]."""
    sd = {k: v.double() for k, v in sd.items()}
    r = "reassemble_blocks."
    feats = []
    for i, (patch, cls) in enumerate(levels):
        b, c, h, w = patch.shape
        tokens = patch.double().flatten(2).transpose(1, 2)
        cat = torch.cat([tokens, cls.double()[:, None, :].expand(-1, h * w, -1)], dim=-1)
        x = F.gelu(cat @ sd[f"{r}readout_projects.{i}.0.weight"].T + sd[f"{r}readout_projects.{i}.0.bias"])
        x = x.transpose(1, 2).reshape(b, c, h, w)
        x = F.conv2d(x, sd[f"{r}projects.{i}.conv.weight"], sd[f"{r}projects.{i}.conv.bias"])
        if i == 0:
            x = F.conv_transpose2d(x, sd[f"{r}resize_layers.0.weight"], sd[f"{r}resize_layers.0.bias"], stride=4)
        elif i == 1:
            x = F.conv_transpose2d(x, sd[f"{r}resize_layers.1.weight"], sd[f"{r}resize_layers.1.bias"], stride=2)
        elif i == 3:
            x = F.conv2d(x, sd[f"{r}resize_layers.3.weight"], sd[f"{r}resize_layers.3.bias"], stride=2, padding=1)
        feats.append(F.conv2d(x, sd[f"convs.{i}.conv.weight"], padding=1))

    def rcu(x, p):
        y = F.conv2d(F.relu(x), sd[p + "conv1.conv.weight"], padding=1)
        return F.conv2d(F.relu(y), sd[p + "conv2.conv.weight"], padding=1) + x

    def fusion(k, x, skip=None):
        p = f"fusion_blocks.{k}."
        if skip is not None:
            if skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = x + rcu(skip, p + "res_conv_unit1.")
        x = rcu(x, p + "res_conv_unit2.")
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return F.conv2d(x, sd[p + "project.conv.weight"], sd[p + "project.conv.bias"])

    out = fusion(0, feats[3])
    for k in range(1, 4):
        out = fusion(k, out, feats[3 - k])
    out = F.relu(F.conv2d(out, sd["project.conv.weight"], sd["project.conv.bias"], padding=1))
    out = F.conv2d(out, sd["conv_depth.head.0.weight"], sd["conv_depth.head.0.bias"], padding=1)
    out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
    out = F.relu(F.conv2d(out, sd["conv_depth.head.2.weight"], sd["conv_depth.head.2.bias"], padding=1))
    out = F.conv2d(out, sd["conv_depth.head.4.weight"], sd["conv_depth.head.4.bias"])
    return F.relu(out) + min_depth


def linear4_reference(sd: dict[str, torch.Tensor], levels, min_depth=0.001, max_depth=10.0) -> torch.Tensor:
    """Linear4 head, spec section 2.6 steps 1-5, float64."""
    maps = []
    for patch, cls in levels:
        patch, cls = patch.double(), cls.double()
        maps.append(torch.cat([patch, cls[:, :, None, None].expand_as(patch)], dim=1))
    size = (maps[0].shape[2] * 4, maps[0].shape[3] * 4)
    feat = torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1)
    logits = F.conv2d(feat, sd["conv_depth.weight"].double(), sd["conv_depth.bias"].double())
    p = F.relu(logits) + 0.1
    p = p / p.sum(dim=1, keepdim=True)
    bins = torch.linspace(min_depth, max_depth, 256, dtype=torch.float64)
    return torch.einsum("ikmn,k->imn", p, bins).unsqueeze(1)
