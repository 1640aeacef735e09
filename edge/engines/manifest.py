"""manifest.json: everything the run-time needs to wire the stages, and what it must refuse.

Written by `smoothdino export` beside the graphs/engines; the run-time reads nothing else. It refuses, in one
line, TensorRT engines built by another TensorRT version or for another GPU (serialized engines are not
portable) and frames of another size than the graphs were exported for (unless asked to resize). Every graph
and engine it lists must have a size/SHA-256 record (`files`), taken by whoever wrote the file (export, build):
a file without one is refused, never used unchecked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smoothdino.core.console import untrained_adapter
from smoothdino.core.errors import UserError
from .graph_io import IO, STAGES
from smoothdino.core.files import atomic_write_text, sha256_of

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class StageFiles:
    onnx: dict[str, str]  # precision -> file name ("fp32", "fp16", "int8")
    engine: str | None = None  # serialized TensorRT engine (of the stage's precision)
    inputs: dict[str, dict] = field(default_factory=dict)  # name -> {"shape": [...], "dtype": "float32"}
    outputs: dict[str, dict] = field(default_factory=dict)
    # the precision this stage runs at (key of `onnx`): per-stage plans (export/stage_precision.py) such as
    # encoder=int8,adapter=fp32,decoder=int8. None in manifests written before them: the manifest's precision.
    precision: str | None = None


@dataclass
class Manifest:
    arch: str
    head: str
    adapter: str  # none | paper | temporal
    adapter_folded: bool  # paper offsets folded into the decoder: no adapter stage at run time
    frame_size: tuple[int, int]  # (height, width)
    grid: tuple[int, int]
    embed_dim: int
    precision: str  # fp32 | fp16 | int8 | encoder=..,adapter=..,decoder=.. (each stage's: StageFiles.precision)
    weights: dict[str, str]  # stage -> file@sha256 or random-weights(seed=N)
    stages: dict[str, StageFiles]
    versions: dict[str, str | None] = field(default_factory=dict)
    gpu: dict | None = None
    # The engines' TensorRT: {"flavour": "tensorrt" | "tensorrt-rtx", "version": "...", "compute_capabilities":
    # [...] (RTX targets; [] for plain TensorRT, which builds for `gpu`)}. Absent in manifests written before
    # TensorRT for RTX: those engines are plain TensorRT of versions["tensorrt"].
    tensorrt: dict | None = None
    gate: dict | None = None
    export_seconds: dict[str, float] = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)  # the ExportSpec that made it: the staleness rule
    # file name -> {"bytes": n, "sha256": hex} of every graph and engine, recorded when first saved: a truncated
    # copy (a full SD card, an interrupted scp) is refused in one line before ONNX Runtime or TensorRT sees it
    files: dict[str, dict] = field(default_factory=dict)
    # the graphs' batch axis (export --batch N): every graph takes 1..batch frames a pass, and its stage shapes
    # record the batch dimension as -1; TensorRT engines have one optimisation profile min 1 / opt N / max N.
    # 1 (and manifests written before batching): static graphs of one frame.
    batch: int = 1
    # what export measured about batching here, for edge/batching.py choose_batch ({"backend": ..., "per_frame_ms":
    # {"1": ms, "2": ms, ...}, "measured_on": ...}); None: not measured
    batch_timing: dict | None = None
    format: int = FORMAT_VERSION
    folder: Path | None = None  # where it was read from (not saved)

    @property
    def random_weights(self) -> bool:
        return any(w.startswith("random-weights") for w in self.weights.values())

    @property
    def untrained_adapter(self) -> bool:
        """Exported without --adapter-weights: weights["adapter"] is "initial", and the adapter is the identity."""
        return untrained_adapter(self.weights)

    @property
    def has_adapter_stage(self) -> bool:
        return "adapter" in self.stages

    @property
    def stage_names(self) -> list[str]:
        return [s for s in STAGES if s in self.stages]

    def onnx_path(self, stage: str, precision: str | None = None) -> Path:
        """The stage's graph at `precision` (the FP32 reference asks for "fp32"), else at the stage's own."""
        files = self.stages[stage].onnx
        precision = precision or self.stage_precision(stage)
        if precision not in files:
            raise UserError(f"{self._where()}: no {precision} graph for {stage}; re-export with --precision {precision}")
        return self._file(files[precision])

    def stage_precision(self, stage: str) -> str:
        return self.stages[stage].precision or self.precision

    @property
    def stage_precisions(self) -> dict[str, str]:
        """stage -> the precision it runs at (what `bench` and `info` show per stage)."""
        return {s: self.stage_precision(s) for s in self.stage_names}

    def engine_path(self, stage: str) -> Path | None:
        name = self.stages[stage].engine
        return self._file(name) if name else None

    def _file(self, name: str) -> Path:
        path = (self.folder or Path(".")) / name
        if not path.is_file():
            raise UserError(f"{path}: listed in {self._where()} but missing; re-run smoothdino export")
        self._verify(name, path)
        return path

    def _listed_files(self) -> list[str]:
        return sorted({n for files in self.stages.values() for n in [*files.onnx.values(), files.engine] if n})

    def _verify(self, name: str, path: Path) -> None:
        """Size, then SHA-256 (once per file and process), against what export recorded."""
        record = self.files.get(name)
        verified = self.__dict__.setdefault("_verified", set())
        if name in verified:
            return
        if record is None:  # nothing to check it against: a hand-made manifest, or one written before records
            engine = name in {files.engine for files in self.stages.values()}
            fix = "re-run smoothdino build (or smoothdino export)" if engine else "re-run smoothdino export"
            raise UserError(f"{path}: listed in {self._where()} without a size/SHA-256 record, so it cannot be "
                            f"checked; {fix}")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise UserError(f"{path}: {size} bytes, but {record['bytes']} when exported (truncated or replaced); "
                            "copy the export folder again or re-run smoothdino export")
        if sha256_of(path) != record["sha256"]:
            raise UserError(f"{path}: contents differ from the export (SHA-256 mismatch: corrupted or replaced); "
                            "copy the export folder again or re-run smoothdino export")
        verified.add(name)

    def record_files(self, folder: Path | None = None) -> None:
        """Record size and SHA-256 of every listed file that has no record yet: the files the caller has just
        written. Existing records are kept, so a later save (a gate verdict) never blesses a corrupt file."""
        folder = Path(folder or self.folder or ".")
        for name in self._listed_files():
            if name not in self.files and (folder / name).is_file():
                self.files[name] = {"bytes": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}

    def _where(self) -> str:
        return str((self.folder or Path(".")) / MANIFEST)

    # -- what the run-time refuses ---------------------------------------------------------------

    @property
    def tensorrt_flavour(self) -> str | None:
        """The flavour the engines were built with ("tensorrt" | "tensorrt-rtx"), None without engines."""
        if self.tensorrt:
            return self.tensorrt.get("flavour")
        return "tensorrt" if self.versions.get("tensorrt") else None

    def check_tensorrt(self, tensorrt_version: str | None, gpu: dict | None, flavour: str = "tensorrt") -> None:
        """Engines only run under the TensorRT flavour and version they were built with, and on the GPU (plain
        TensorRT) or a GPU of the compute capabilities (TensorRT for RTX) they were built for."""
        titles = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT for RTX"}
        built_flavour = self.tensorrt_flavour
        built = (self.tensorrt or {}).get("version") or self.versions.get("tensorrt")
        redo = f"re-export here with --backend {flavour} (or run with --backend onnxruntime)"
        if built_flavour and built_flavour != flavour:
            raise UserError(
                f"{self._where()}: engines built with {titles.get(built_flavour, built_flavour)} {built}, this run "
                f"uses {titles.get(flavour, flavour)}; run with --backend {built_flavour} or {redo}"
            )
        if built and tensorrt_version and built != tensorrt_version:
            raise UserError(
                f"{self._where()}: engines built with {titles.get(flavour, flavour)} {built}, this machine has "
                f"{tensorrt_version}; {redo}"
            )
        if flavour == "tensorrt-rtx":
            targets = (self.tensorrt or {}).get("compute_capabilities") or []
            here = (gpu or {}).get("compute_capability")
            if gpu and targets and here not in targets:
                raise UserError(
                    f"{self._where()}: engines built for sm {', '.join(targets)}, this GPU is {gpu.get('name')} "
                    f"(sm {here}); re-export with --backend tensorrt-rtx --compute-capability {here}"
                )
            return
        if self.gpu and gpu and (self.gpu.get("name"), self.gpu.get("compute_capability")) != (
            gpu.get("name"), gpu.get("compute_capability")
        ):
            raise UserError(
                f"{self._where()}: engines built for {self.gpu.get('name')} (sm {self.gpu.get('compute_capability')}), "
                f"this GPU is {gpu.get('name')} (sm {gpu.get('compute_capability')}); re-export on this machine"
            )

    @property
    def max_batch(self) -> int:
        """The most frames one pass of these graphs/engines takes (export --batch N)."""
        return max(1, int(self.batch or 1))

    def check_batch(self, n: int, source: str = "batch") -> None:
        """Refuse, in one line, a pass of more frames than the export's batch axis takes."""
        if n > self.max_batch:
            raise UserError(f"{source}: {n} frames a pass, but {self._where()} was exported for at most "
                            f"{self.max_batch}; export with --batch {n} (or batch at most {self.max_batch})")

    def check_frame_size(self, height: int, width: int, source: str) -> None:
        if (height, width) != tuple(self.frame_size):
            h, w = self.frame_size
            raise UserError(
                f"{source}: frames are {height}x{width} but {self._where()} was exported for {h}x{w}; "
                f"pass --resize or export with --size {height}x{width}"
            )

    # -- file I/O -------------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        self.record_files(folder)
        data = asdict(self)
        data.pop("folder")
        atomic_write_text(folder / MANIFEST, json.dumps(data, indent=2) + "\n")
        self.folder = folder
        return folder / MANIFEST

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        folder = Path(folder)
        path = folder / MANIFEST if folder.is_dir() else folder
        if not path.is_file():
            raise UserError(f"{path}: no manifest; create one with `smoothdino export --out {folder}`")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT_VERSION:
                raise UserError(
                    f"{path}: manifest format {data.get('format')} (this smoothdino reads {FORMAT_VERSION}); re-export"
                )
            data["stages"] = {k: StageFiles(**v) for k, v in data["stages"].items()}
            data["frame_size"] = tuple(data["frame_size"])
            data["grid"] = tuple(data["grid"])
            manifest = cls(**data)
        except UserError:
            raise
        except (ValueError, TypeError, KeyError) as err:
            raise UserError(f"{path}: not a smoothdino manifest ({type(err).__name__}: {err}); re-export") from None
        for stage, files in manifest.stages.items():
            if stage not in IO:
                raise UserError(f"{path}: unknown stage {stage!r}; re-export")
        manifest.folder = path.parent
        return manifest
