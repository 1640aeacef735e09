"""What the bench needs beside the pipelines: configurations, and the measuring conditions.

A configuration is `arch[+adapter]`: vits14, vits14+paper, vits14+temporal, vitb14, ... Back-ends: `torch`
(models.TorchPipeline, eager FP32, on CUDA when present) and the edge pipeline on an export (onnxruntime,
tensorrt, tensorrt-rtx).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smoothdino.edge.engines.graph_io import STAGES

BENCH_BACKENDS = ("torch", "onnxruntime", "tensorrt", "tensorrt-rtx")


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


def weight_mib(pipeline) -> float:
    """What a runner holds as weights: the bytes of the graph/engine files it loaded, or of the torch
    parameters (per runner, unlike the process RSS, which mixes every runner and the exports)."""
    files = getattr(pipeline, "files", None)  # DepthPipeline: what it opened
    if files is not None:
        return sum(Path(f).stat().st_size for f in files.values()) / 2**20
    modules = [m for m in (getattr(pipeline, n, None) for n in STAGES) if m is not None]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters()) / 2**20


def physical_cores() -> int:
    """Physical cores (not hyper-threads): the thread count that times stably on a CPU."""
    try:
        cores, block = set(), {}
        for line in open("/proc/cpuinfo").read().splitlines() + [""]:
            if not line.strip():
                if "core id" in block:
                    cores.add((block.get("physical id"), block["core id"]))
                block = {}
            elif ":" in line:
                k, v = line.split(":", 1)
                block[k.strip()] = v.strip()
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_used_mib() -> float | None:
    """GPU memory in use on device 0 (MiB), None without a GPU. Through torch when it has CUDA, else pycuda."""
    from smoothdino.edge.machine.environment import gpu

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
        from smoothdino.edge.engines.tensorrt_engine import cuda_runtime

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
