"""One model configuration on one back-end, stepped frame by frame with per-stage timings.

A configuration is `arch[+adapter]`: vits14, vits14+paper, vits14+temporal, vitb14, ...
Back-ends: `torch` (eager FP32 reference, on CUDA when present), `onnxruntime` and `tensorrt` (the edge
pipeline on an export of that configuration). Every runner keeps its own previous-frame state, so runners
can be interleaved frame by frame on the same frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smoothdino.edge.motion import phase_shift, to_grey
from smoothdino.edge.pipeline import STAGE_TIMINGS, DepthPipeline

BENCH_BACKENDS = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class Config:
    arch: str
    adapter: str  # none | paper | temporal

    @classmethod
    def parse(cls, text: str) -> "Config":
        arch, _, adapter = text.strip().partition("+")
        return cls(arch, adapter or "none")

    @property
    def name(self) -> str:
        return self.arch if self.adapter == "none" else f"{self.arch}+{self.adapter}"


class TorchRunner:
    """The method in eager PyTorch FP32: same stages, same scene-cut rule, sequential (no overlap)."""

    backend = "torch"

    def __init__(self, config: Config, size, head="dpt", weights_dir=None, adapter_weights=None,
                 random_weights=False, min_confidence=0.1):
        import torch

        from smoothdino.models import load_adapter, load_decoder, load_encoder

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        kw = {"random_weights": random_weights}
        wd = None if random_weights else weights_dir
        self.encoder = load_encoder(config.arch, wd, **kw).to(self.device)
        self.decoder = load_decoder(config.arch, head, wd, **kw).to(self.device)
        self.adapter = load_adapter(config.adapter, config.arch,
                                    adapter_weights if config.adapter != "none" else None, **kw).to(self.device)
        self.weights = {"encoder": self.encoder.weights_id, "decoder": self.decoder.weights_id,
                        "adapter": getattr(self.adapter, "weights_id", "none")}
        self.size, self.min_confidence = tuple(size), min_confidence
        self.has_adapter = config.adapter != "none"
        self.description = f"{config.name} fp32 eager on torch[{self.device.type}]"
        self.previous = None

    def reset(self):
        self.previous = None

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _levels(self, rgb):
        from smoothdino.models import preprocess

        return self.encoder(preprocess(rgb).to(self.device))

    def prime(self, rgb):
        with self.torch.no_grad():
            self.previous = (self._levels(rgb), to_grey(rgb))

    def step(self, rgb):
        from smoothdino.models import preprocess

        torch = self.torch
        t = dict.fromkeys(STAGE_TIMINGS, 0.0)
        start = time.perf_counter()
        with torch.no_grad():
            x = preprocess(rgb).to(self.device)
            grey = to_grey(rgb)
            t["pre"] = time.perf_counter() - start
            mark = time.perf_counter()
            levels = self.encoder(x)
            self._sync()
            t["encoder"] = time.perf_counter() - mark
            shift, previous = torch.zeros(1, 3, device=self.device), levels
            if self.previous is not None:
                mark = time.perf_counter()
                s = phase_shift(self.previous[1], grey)
                t["motion"] = time.perf_counter() - mark
                if s.confidence >= self.min_confidence:
                    shift = torch.tensor([[s.dx, s.dy, s.confidence]], device=self.device)
                    previous = self.previous[0]
            fused = levels
            if self.has_adapter:
                mark = time.perf_counter()
                fused = self.adapter(levels, previous, shift)
                self._sync()
                t["adapter"] = time.perf_counter() - mark
            mark = time.perf_counter()
            depth = self.decoder(fused, self.size)
            self._sync()
            t["decoder"] = time.perf_counter() - mark
            mark = time.perf_counter()
            depth = depth[0, 0].float().cpu().numpy()
            t["post"] = time.perf_counter() - mark
        self.previous = (levels, grey)
        t["total"] = time.perf_counter() - start
        return depth, t

    def close(self):
        pass


class EngineRunner:
    """The edge pipeline on an export (ONNX Runtime or TensorRT)."""

    def __init__(self, engines: Path, backend: str, min_confidence=0.1):
        self.pipeline = DepthPipeline.from_folder(engines, backend=backend, min_confidence=min_confidence)
        self.backend = self.pipeline.backend
        self.description = self.pipeline.description
        self.weights = dict(self.pipeline.manifest.weights)

    def reset(self):
        self.pipeline.reset()

    def prime(self, rgb):
        self.pipeline.prime(rgb)

    def step(self, rgb):
        result = self.pipeline.step(rgb)
        return result.depth, result.timings

    def close(self):
        self.pipeline.close()


def rss_mib() -> float:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def device_used_mib() -> float | None:
    """GPU memory in use on device 0 (MiB), None without a GPU. Through torch when it has CUDA, else pycuda."""
    from smoothdino.edge.environment import gpu

    if gpu() is None:
        return None
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            return (total - free) / 2**20
    except ImportError:
        pass
    try:
        from smoothdino.edge.tensorrt_engine import cuda_runtime

        cuda, _, _ = cuda_runtime()
        free, total = cuda.mem_get_info()
        return (total - free) / 2**20
    except Exception:
        return None


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64) * 1000.0
    if a.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max())}
