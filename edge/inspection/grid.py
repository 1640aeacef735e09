"""Where the encoder's patch cells lie in the frame (torch-free, for the run-time's feature tools).

The encoder centre-pads the frame to the next multiple of the 14-pixel patch (inside the graph, as the
official pre-processing does: models/preprocess.py, models/archs.center_padding), then cuts it into cells:
cell (i, j) covers padded pixels [14 i, 14 i + 14) x [14 j, 14 j + 14), i.e. frame pixels shifted by the
top/left padding. A camera shift of d pixels moves the content by d / 14 cells; cells that reach into the
padding see the pad colour, not the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from smoothdino.core.errors import UserError

PATCH_SIZE = 14  # DINOv2's patch (models.archs.PATCH_SIZE; the run-time never imports the torch side)


@dataclass(frozen=True)
class FeatureGrid:
    frame_size: tuple[int, int]  # (height, width) of the frames the encoder takes
    grid: tuple[int, int]  # (h, w) patch cells
    patch: int = PATCH_SIZE

    def __post_init__(self):
        expected = tuple(-(-n // self.patch) for n in self.frame_size)
        if tuple(self.grid) != expected:
            raise UserError(f"a {self.grid[0]}x{self.grid[1]} patch grid does not fit {self.frame_size[0]}x"
                            f"{self.frame_size[1]} frames with {self.patch}-pixel patches (expected {expected[0]}x"
                            f"{expected[1]}); re-export the engines")

    @property
    def padding(self) -> tuple[int, int]:
        """(top, left) pixels of centre padding: the smaller half goes before, as in models.archs.center_padding."""
        return tuple((g * self.patch - n) // 2 for g, n in zip(self.grid, self.frame_size))

    def content_mask(self) -> np.ndarray:
        """bool [h,w]: cells wholly inside the frame (no padding in them)."""
        masks = []
        for g, n, before in zip(self.grid, self.frame_size, self.padding):
            start = np.arange(g) * self.patch - before  # first frame pixel of each cell
            masks.append((start >= 0) & (start + self.patch <= n))
        return masks[0][:, None] & masks[1][None, :]

    def to_cells(self, dx_px: float, dy_px: float) -> tuple[float, float]:
        """A shift in frame pixels -> the same shift in cells."""
        return dx_px / self.patch, dy_px / self.patch

    def to_frame(self, cells: np.ndarray) -> np.ndarray:
        """A per-cell image [h,w(,k)] -> the frame size: each cell a patch-sized block, the padding cropped."""
        h, w = self.grid
        blocks = cv2.resize(cells, (w * self.patch, h * self.patch), interpolation=cv2.INTER_NEAREST)
        top, left = self.padding
        return blocks[top:top + self.frame_size[0], left:left + self.frame_size[1]]
