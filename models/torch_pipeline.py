"""The method in eager PyTorch FP32: the reference every exported back-end is held to.

Same interface and same per-frame method as the run-time's DepthPipeline (both are edge.FramePipeline:
reset / prime / step -> FrameResult, encoder once per frame, the one scene-cut rule, phase correlation beside
the encoder); only the stages differ. The bench's `torch` runner, the tests' reference and the training-pair
checks use it. A `paper` adapter runs as a module here (the exports fold it into the decoder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from smoothdino.edge.engines.graph_io import level_names
from smoothdino.edge.motion import Shift
from smoothdino.edge.pipeline import FramePipeline

from .adapter import load_adapter
from .decoder import load_decoder
from .preprocess import preprocess
from .vit import load_encoder


class TorchPipeline(FramePipeline):
    backend = "torch"

    def __init__(
        self,
        arch: str = "vits14",
        adapter: str = "none",
        head: str = "dpt",
        size: tuple[int, int] = (480, 640),
        *,
        weights_dir: Path | None = None,
        adapter_weights: Path | None = None,
        random_weights: bool = False,
        seed: int = 0,
        min_confidence: float = 0.1,
        motion_downscale: int = 1,
        keep_outputs: bool = False,
        device: str | None = None,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        kw = {"random_weights": random_weights, "seed": seed}
        weights_dir = None if random_weights else weights_dir
        self.encoder = load_encoder(arch, weights_dir, **kw).to(self.device).eval()
        self.decoder = load_decoder(arch, head, weights_dir, **kw).to(self.device).eval()
        self.adapter = load_adapter(adapter, arch, adapter_weights if adapter != "none" else None,
                                    **kw).to(self.device).eval()
        self.arch, self.adapter_kind, self.head = arch, adapter, head
        self.has_adapter = adapter != "none"
        self._weights = {"encoder": self.encoder.weights_id, "decoder": self.decoder.weights_id}
        if self.has_adapter:
            self._weights["adapter"] = self.adapter.weights_id
        self._init_frame_state(size, min_confidence, motion_downscale, keep_outputs)

    @property
    def name(self) -> str:
        return self.arch if self.adapter_kind == "none" else f"{self.arch}+{self.adapter_kind}"

    @property
    def description(self) -> str:
        return f"{self.name} fp32 {self.frame_size[0]}x{self.frame_size[1]} eager on torch[{self.device.type}]"

    @property
    def weights(self) -> dict[str, str]:
        return dict(self._weights)

    @property
    def identity(self) -> str:
        weights = ",".join(f"{k}={v}" for k, v in sorted(self.weights.items()))
        return f"{self.name}/{self.head}/fp32/{self.frame_size[0]}x{self.frame_size[1]}/{weights}"

    def _sync(self) -> None:
        if self.device.type == "cuda":  # per-stage timings must include the kernels, not just their launch
            torch.cuda.synchronize()

    @torch.inference_mode()
    def _encode(self, rgb: np.ndarray):
        levels = self.encoder(preprocess(rgb).to(self.device))
        self._sync()
        return levels

    @torch.inference_mode()
    def _adapt(self, levels, previous, shift: Shift):
        shift = shift.as_array() if isinstance(shift, Shift) else shift  # [N,3] in a batch
        fused = self.adapter(levels, previous, torch.from_numpy(shift).to(self.device))
        self._sync()
        return fused

    @torch.inference_mode()
    def _decode(self, levels):
        depth = self.decoder(levels, self.frame_size)
        self._sync()
        return depth

    def _depth_to_host(self, depth) -> np.ndarray:
        return depth[0, 0].float().cpu().numpy()

    max_batch = None  # eager: any number of frames a pass

    @torch.inference_mode()
    def _encode_batch(self, rgbs: np.ndarray):
        levels = self.encoder(preprocess(rgbs).to(self.device))
        self._sync()
        return levels

    def _stack_levels(self, items: list):
        return [tuple(torch.cat([it[k][j] for it in items]) for j in range(2)) for k in range(len(items[0]))]

    def _split_levels(self, levels, n: int) -> list:
        return [[(patch[i:i + 1], cls[i:i + 1]) for patch, cls in levels] for i in range(n)]

    def _depths_to_host(self, depth, n: int) -> list[np.ndarray]:
        host = depth.float().cpu().numpy()
        return [host[i, 0] for i in range(n)]

    def _levels_to_host(self, levels, prefix: str = "") -> dict[str, np.ndarray]:
        flat = [t for pair in levels for t in pair]
        return {f"{prefix}{name}": t.float().cpu().numpy() for name, t in zip(level_names(), flat)}
