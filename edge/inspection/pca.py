"""Feature PCA images: the first three principal components of patch features as colour, the way DINOv2
features are usually looked at.

One basis per sequence, fitted on a random subsample of cells from every frame (numpy SVD), and one fixed
8-bit scaling per component (robust percentiles of the fitted cells), so a colour means the same feature
direction in every frame, before and after the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .grid import FeatureGrid

COMPONENTS = 3
DEFAULT_SAMPLE_CELLS = 20000  # SVD of 20000 x 384 takes well under a second on a small CPU
ROBUST_PERCENTILES = (1.0, 99.0)  # outlier cells saturate instead of squeezing every other colour


def cells_of(patch_map: np.ndarray) -> np.ndarray:
    """A patch map [C,h,w] (or [1,C,h,w]) -> its cells as rows [h*w, C] (float32)."""
    patch_map = np.asarray(patch_map)
    if patch_map.ndim == 4:
        patch_map = patch_map[0]
    if patch_map.ndim != 3:
        raise ValueError(f"expected a patch map [C,h,w], got shape {patch_map.shape}")
    return patch_map.reshape(patch_map.shape[0], -1).T.astype(np.float32)


@dataclass
class FeaturePCA:
    mean: np.ndarray  # [C]
    components: np.ndarray  # [3,C], orthonormal rows, the largest loading of each positive (a fixed sign)
    low: np.ndarray  # [3] projection mapped to 0
    high: np.ndarray  # [3] projection mapped to 255
    explained_variance_ratio: np.ndarray  # [3] of the fitted cells' total variance
    fitted_cells: int

    @classmethod
    def fit(cls, patch_maps, sample_cells: int = DEFAULT_SAMPLE_CELLS, seed: int = 0,
            mask: np.ndarray | None = None) -> FeaturePCA:
        """One basis over many patch maps [C,h,w] (all frames, before and after the adapter): an equal share
        of randomly chosen cells from each map, so no frame dominates the colours. `mask` (bool [h,w]) limits
        the fit to some cells: FeatureGrid.content_mask(), so the encoder's padding does not take a component."""
        maps = list(patch_maps)
        if not maps:
            raise ValueError("no patch maps to fit a PCA on")
        rng = np.random.default_rng(seed)
        per_map = max(1, sample_cells // len(maps))
        rows = []
        for patch_map in maps:
            cells = cells_of(patch_map)
            if mask is not None and mask.any():
                cells = cells[np.asarray(mask, bool).reshape(-1)]
            pick = rng.choice(len(cells), size=min(per_map, len(cells)), replace=False)
            rows.append(cells[np.sort(pick)])
        sample = np.concatenate(rows).astype(np.float64)
        if sample.shape[1] < COMPONENTS:
            raise ValueError(f"features have {sample.shape[1]} channels; PCA colour needs at least {COMPONENTS}")
        mean = sample.mean(axis=0)
        centred = sample - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        components = vt[:COMPONENTS]
        # SVD's signs are arbitrary: fix them so the same features give the same colours on every machine
        signs = np.sign(components[np.arange(COMPONENTS), np.abs(components).argmax(axis=1)])
        components = components * np.where(signs == 0, 1.0, signs)[:, None]
        variance = singular ** 2
        ratio = variance[:COMPONENTS] / variance.sum() if variance.sum() > 0 else np.zeros(COMPONENTS)
        projected = centred @ components.T
        low, high = np.percentile(projected, ROBUST_PERCENTILES, axis=0)
        high = np.where(high > low, high, low + 1e-6)  # a flat component is mid-grey, not a division by zero
        return cls(mean.astype(np.float32), components.astype(np.float32), low.astype(np.float32),
                   high.astype(np.float32), ratio.astype(np.float32), len(sample))

    def project(self, patch_map: np.ndarray) -> np.ndarray:
        """Patch map [C,h,w] -> the three component scores [h,w,3] (float32, unscaled)."""
        patch_map = np.asarray(patch_map)
        if patch_map.ndim == 4:
            patch_map = patch_map[0]
        h, w = patch_map.shape[1:]
        return ((cells_of(patch_map) - self.mean) @ self.components.T).reshape(h, w, COMPONENTS)

    def to_uint8(self, patch_map: np.ndarray) -> np.ndarray:
        """Patch map -> RGB uint8 [h,w,3] on the grid: component k is channel k, scaled by the fitted range."""
        scaled = (self.project(patch_map) - self.low) / (self.high - self.low)
        return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)

    def image(self, patch_map: np.ndarray, grid: FeatureGrid) -> np.ndarray:
        """Patch map -> BGR uint8 at the frame size (each cell a 14x14 block, the padding cropped away),
        ready for cv2.imwrite."""
        return cv2.cvtColor(grid.to_frame(self.to_uint8(patch_map)), cv2.COLOR_RGB2BGR)
