"""What an export is: one object, built once by the CLI, that every command hands to `ensure_export`.

Its `fingerprint()` is the staleness rule: an export folder is reused only when the fingerprint recorded in
its manifest.json equals the wanted one (model, head, adapter and its weights, precision, frame size, weight
files or random seed, tool versions). It is torch-free, so the run-time can read and compare it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from smoothdino.core.backends import BACKENDS, backend_word
from smoothdino.core.errors import UserError

from .stage_precision import is_auto

MAX_BATCH = 16  # --batch: more cameras than this on one network is not a robot this project serves
EXPORT_BACKENDS = BACKENDS  # onnxruntime: ONNX graphs only; tensorrt / tensorrt-rtx: engines as well


@dataclass
class ExportSpec:
    arch: str = "vits14"
    head: str = "dpt"
    adapter: str = "temporal"
    size: tuple[int, int] = (480, 640)
    precision: str = "fp16"
    backend: str = "auto"  # auto | onnxruntime (alias onnx) | onnxruntime-cuda (graphs) | tensorrt | tensorrt-rtx
    compute_capabilities: list[str] = field(default_factory=list)  # TensorRT for RTX targets, e.g. ["8.6"]
    weights_dir: Path | None = None
    adapter_weights: Path | None = None
    random_weights: bool = False
    seed: int = 0
    calibration: list[Path] = field(default_factory=list)
    calibration_frames: int = 8
    calibration_method: str = "minmax"  # INT8 activation ranges: minmax | entropy | percentile
    tolerance_mm: float | None = None
    force: bool = False
    workspace_mib: int = 1024
    batch: int = 1  # frames a pass: the graphs take 1..batch (a dynamic batch axis; TensorRT profile 1/N/N)

    def __post_init__(self):
        self.backend = backend_word(self.backend)
        self.size = tuple(int(v) for v in self.size)
        self.batch = int(self.batch)
        if not 1 <= self.batch <= MAX_BATCH:
            raise UserError(f"--batch {self.batch}: choose 1 (one frame a pass) to {MAX_BATCH}")

    def fingerprint(self) -> dict:
        """Everything that changes the exported numbers (not where files go, not the gate's options)."""
        from smoothdino.edge.machine.environment import versions

        tools = versions()
        return {
            "arch": self.arch, "head": self.head, "adapter": self.adapter, "size": list(self.size),
            "precision": self.precision, "backend": self.backend,
            "compute_capabilities": sorted(self.compute_capabilities),
            "weights": f"random(seed={self.seed})" if self.random_weights else _files_id(self.weights_dir, self.arch),
            "adapter_weights": _file_id(self.adapter_weights) if self.adapter_weights else None,
            # INT8 scales come from these frames (auto on the CPU may choose INT8 stages)
            "calibration": ({"method": self.calibration_method, "frames": self.calibration_frames,
                             "sequences": sorted(Path(c).name for c in self.calibration)}
                            if "int8" in self.precision or is_auto(self.precision) else None),
            "tools": {k: tools.get(k) for k in ("smoothdino", "torch", "onnx", "onnxruntime", "tensorrt")},
            # only a batch export names it, so the one-frame exports made before batching stay current
            **({"batch": self.batch} if self.batch > 1 else {}),
        }


def _file_id(path: Path) -> str:
    """name, size and content hash of a (small) file: a retrained adapter under the same name is another file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not a file; give a `smoothdino train` checkpoint or adapter state dict")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{path.name}@{digest}"


def _files_id(weights_dir: Path | None, arch: str) -> str:
    """The official files the export would load: their pinned hashes when verified, else name+size+mtime."""
    from smoothdino.models.checkpoints import OFFICIAL_FILES, find_local, pinned_hash

    ids = []
    for f in (f for f in OFFICIAL_FILES if f.arch == arch):
        path = find_local(f, weights_dir)
        if path is not None:
            stat = path.stat()
            ids.append(f"{f.name}@{(pinned_hash(path) or f'{stat.st_size}:{stat.st_mtime_ns}')[:16]}")
    return ",".join(ids) or "none"
