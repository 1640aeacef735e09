"""Every key and shape of the official files, transcribed from ../shared/DINOV2_SPEC.md (sections 1.2,
2.3, 2.5) and independent of our module code: a renamed or reshaped module fails the strict loads."""

from __future__ import annotations

import torch

DIMS = {"vits14": 384, "vitb14": 768}


def backbone_keys(arch: str) -> dict[str, tuple[int, ...]]:
    c = DIMS[arch]
    keys = {
        "cls_token": (1, 1, c),
        "pos_embed": (1, 1370, c),
        "mask_token": (1, c),
        "patch_embed.proj.weight": (c, 3, 14, 14),
        "patch_embed.proj.bias": (c,),
        "norm.weight": (c,),
        "norm.bias": (c,),
    }
    for i in range(12):
        p = f"blocks.{i}."
        keys.update({
            p + "norm1.weight": (c,), p + "norm1.bias": (c,),
            p + "attn.qkv.weight": (3 * c, c), p + "attn.qkv.bias": (3 * c,),
            p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
            p + "ls1.gamma": (c,),
            p + "norm2.weight": (c,), p + "norm2.bias": (c,),
            p + "mlp.fc1.weight": (4 * c, c), p + "mlp.fc1.bias": (4 * c,),
            p + "mlp.fc2.weight": (c, 4 * c), p + "mlp.fc2.bias": (c,),
            p + "ls2.gamma": (c,),
        })
    return keys


def dpt_keys(arch: str) -> dict[str, tuple[int, ...]]:
    c = DIMS[arch]
    post = [c // 8, c // 4, c // 2, c]
    r = "reassemble_blocks."
    keys = {}
    for i in range(4):
        keys[f"{r}readout_projects.{i}.0.weight"] = (c, 2 * c)
        keys[f"{r}readout_projects.{i}.0.bias"] = (c,)
        keys[f"{r}projects.{i}.conv.weight"] = (post[i], c, 1, 1)
        keys[f"{r}projects.{i}.conv.bias"] = (post[i],)
        keys[f"convs.{i}.conv.weight"] = (256, post[i], 3, 3)
        keys[f"fusion_blocks.{i}.project.conv.weight"] = (256, 256, 1, 1)
        keys[f"fusion_blocks.{i}.project.conv.bias"] = (256,)
        keys[f"fusion_blocks.{i}.res_conv_unit2.conv1.conv.weight"] = (256, 256, 3, 3)
        keys[f"fusion_blocks.{i}.res_conv_unit2.conv2.conv.weight"] = (256, 256, 3, 3)
        if i > 0:
            keys[f"fusion_blocks.{i}.res_conv_unit1.conv1.conv.weight"] = (256, 256, 3, 3)
            keys[f"fusion_blocks.{i}.res_conv_unit1.conv2.conv.weight"] = (256, 256, 3, 3)
    keys.update({
        f"{r}resize_layers.0.weight": (post[0], post[0], 4, 4), f"{r}resize_layers.0.bias": (post[0],),
        f"{r}resize_layers.1.weight": (post[1], post[1], 2, 2), f"{r}resize_layers.1.bias": (post[1],),
        f"{r}resize_layers.3.weight": (post[3], post[3], 3, 3), f"{r}resize_layers.3.bias": (post[3],),
        "project.conv.weight": (256, 256, 3, 3), "project.conv.bias": (256,),
        "conv_depth.head.0.weight": (128, 256, 3, 3), "conv_depth.head.0.bias": (128,),
        "conv_depth.head.2.weight": (32, 128, 3, 3), "conv_depth.head.2.bias": (32,),
        "conv_depth.head.4.weight": (1, 32, 1, 1), "conv_depth.head.4.bias": (1,),
    })
    return keys


def linear4_keys(arch: str) -> dict[str, tuple[int, ...]]:
    c = DIMS[arch]
    return {"conv_depth.weight": (256, 8 * c, 1, 1), "conv_depth.bias": (256,)}


def random_state(keys: dict[str, tuple[int, ...]], seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Random tensors for a key table, shaped like trained weights rather than a fresh init: biases
    non-zero, LayerNorm weights around 1 (each its own), LayerScale gammas in 0.2..1. A reference test on
    such a file sees a dropped bias, swapped norms or a missing LayerScale; one on zero biases, unit norms
    and unit gammas cannot."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in keys.items():
        t = torch.randn(shape, generator=gen)
        if k.endswith("gamma"):
            t = 0.2 + 0.8 * torch.rand(shape, generator=gen)
        elif "norm" in k and k.endswith("weight"):
            t = 1.0 + 0.1 * t
        elif k.endswith("bias"):
            t = 0.05 * t
        elif k.endswith("weight") and len(shape) >= 2:  # fan-in scaled: activations stay O(1) through the head
            t = t / (shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)) ** 0.5
        else:
            t = std * t
        state[k] = t
    return state


def official_keys(arch: str, kind: str) -> dict[str, tuple[int, ...]]:
    return {"backbone": backbone_keys, "dpt": dpt_keys, "linear4": linear4_keys}[kind](arch)


def write_official(path, kind: str, state: dict[str, torch.Tensor]) -> None:
    """Write an (unprefixed) state dict laid out as the release file of that kind."""
    if kind == "backbone":
        torch.save(state, path)  # a bare state dict
    else:  # an mmcv training checkpoint: weights under state_dict, prefixed decode_head.
        torch.save({"meta": {"epoch": 1, "iter": 38400}, "state_dict": {f"decode_head.{k}": v for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": []}}, path)


def save_official(path, arch: str, kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a file laid out as the release file of that kind; returns the state it holds (unprefixed)."""
    state = random_state(official_keys(arch, kind), seed)
    write_official(path, kind, state)
    return state


def trivial_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Keys whose values a reference test cannot check: biases all 0, norm weights or gammas all 1, or a
    norm weight/gamma equal to its partner in the same block (norm1 = norm2, ls1 = ls2)."""
    bad = [k for k, v in state.items() if k.endswith("bias") and not v.any()]
    bad += [k for k, v in state.items() if (k.endswith("gamma") or ("norm" in k and k.endswith("weight")))
            and bool((v == 1).all())]
    for k, v in state.items():
        for a, b in (("norm1.", "norm2."), ("ls1.", "ls2.")):
            if a in k and torch.equal(v, state[k.replace(a, b)]):
                bad.append(k)
    return bad
