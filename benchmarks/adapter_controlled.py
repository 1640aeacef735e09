"""The controlled task that separates the published adapter from the corrected one.

Current levels = the clean map + fresh, frame-independent noise; previous levels = the clean map of frame
t-1, which moved by a known whole-patch shift. Target: the clean current levels. `none` keeps the noise;
`paper` can only learn a constant per channel (its hidden layers are dead), which cannot remove zero-mean
noise; `temporal` can align the previous map by the shift and use it.

    python -m smoothdino.benchmarks.adapter_controlled
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from smoothdino.models.adapter import PaperAdapter, TemporalAdapter


def controlled_task(kind: str, steps: int = 300, dim: int = 16, seed: int = 0, noise: float = 0.8) -> float:
    """Test MSE (interior cells) of an adapter of this kind after `steps` Adam steps."""
    rng = torch.Generator().manual_seed(seed)
    h, w = 6, 8

    def batch(n=8):
        clean_prev = torch.randn(n, dim, h, w, generator=rng)
        moves = torch.randint(-1, 2, (n, 2), generator=rng).float()  # whole cells
        clean = torch.stack([torch.roll(clean_prev[i], shifts=(int(my), int(mx)), dims=(1, 2))
                             for i, (mx, my) in enumerate(moves.tolist())])
        noisy = clean + noise * torch.randn(clean.shape, generator=rng)
        cls_prev = torch.randn(n, dim, generator=rng)
        shift = torch.cat([moves * 14, torch.full((n, 1), 0.9)], dim=1)
        current = [(noisy, cls_prev + noise * torch.randn(n, dim, generator=rng))] * 4
        previous = [(clean_prev, cls_prev)] * 4
        return current, previous, shift, clean, cls_prev

    adapter = {"none": lambda: None, "paper": lambda: PaperAdapter(dim),
               "temporal": lambda: TemporalAdapter(dim, hidden=32)}[kind]()
    if adapter is not None:
        opt = torch.optim.Adam(adapter.parameters(), lr=3e-3)
        for _ in range(steps):
            current, previous, shift, clean, cls = batch()
            out = adapter(current, previous, shift)
            loss = F.mse_loss(out[0][0][:, :, 1:-1, 1:-1], clean[:, :, 1:-1, 1:-1]) + F.mse_loss(out[0][1], cls)
            opt.zero_grad()
            loss.backward()
            opt.step()
    current, previous, shift, clean, _ = batch(64)
    with torch.no_grad():
        out = current if adapter is None else adapter(current, previous, shift)
    return float(F.mse_loss(out[0][0][:, :, 1:-1, 1:-1], clean[:, :, 1:-1, 1:-1]))  # borders are unknowable


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args(argv)
    result = {k: [controlled_task(k, a.steps, seed=s) for s in range(a.seeds)] for k in ("none", "paper", "temporal")}
    print(json.dumps({k: {"mean_mse": sum(v) / len(v), "per_seed": v} for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
