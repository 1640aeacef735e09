"""The four DINOv2 backbones and what the NYUv2 depth heads read from them (official hub settings)."""

from __future__ import annotations

from dataclasses import dataclass

from smoothdino.core.errors import UserError
from smoothdino.core.images import NYU_DEPTH_RANGE  # noqa: F401  (re-exported: one value for heads and metrics)

PATCH_SIZE = 14
POS_GRID = 37  # pos_embed is trained for 518x518 = 37x37 patches


@dataclass(frozen=True)
class Arch:
    name: str  # vits14, ...
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str  # "mlp" (GELU MLP, 4x) or "swiglu" (SwiGLUFFNFused)
    out_indices: tuple[int, int, int, int]  # blocks the depth heads read (0-based, no final norm)

    @property
    def dpt_channels(self) -> list[int]:
        """DPT post-process channels: C/8, C/4, C/2, C."""
        return [self.embed_dim // 2 ** (3 - i) for i in range(4)]


ARCHS: dict[str, Arch] = {
    "vits14": Arch("vits14", 384, 12, 6, "mlp", (2, 5, 8, 11)),
    "vitb14": Arch("vitb14", 768, 12, 12, "mlp", (2, 5, 8, 11)),
    "vitl14": Arch("vitl14", 1024, 24, 16, "mlp", (4, 11, 17, 23)),
    "vitg14": Arch("vitg14", 1536, 40, 24, "swiglu", (9, 19, 29, 39)),
}

DEPTH_HEADS = ("dpt", "linear4")


def get_arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise UserError(f"--arch {name!r}: choose one of {', '.join(ARCHS)}") from None


def padded_size(n: int, multiple: int = PATCH_SIZE) -> int:
    return -(-n // multiple) * multiple


def center_padding(n: int, multiple: int = PATCH_SIZE) -> tuple[int, int]:
    """(before, after) zero padding that centres n in the next multiple, as the official pre-hook does."""
    total = padded_size(n, multiple) - n
    return total // 2, total - total // 2


def patch_grid(height: int, width: int) -> tuple[int, int]:
    """Feature-map size for a frame: 480x640 -> 35x46."""
    return padded_size(height) // PATCH_SIZE, padded_size(width) // PATCH_SIZE
