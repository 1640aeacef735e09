from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NYU = ROOT.parent / "shared" / "data" / "nyu2_sample"

os.environ.setdefault("SMOOTHDINO_HOME", str(ROOT / ".pytest_cache" / "smoothdino_home"))


def pytest_configure(config):
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def nyu_root() -> Path:
    if not NYU.is_dir():
        pytest.skip(f"{NYU} is absent (shared NYUv2 sample)")
    return NYU


@pytest.fixture(scope="session")
def nyu_scene(nyu_root) -> Path:
    return nyu_root / "basement_0001a_out"


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """An empty weights cache for one test."""
    monkeypatch.setenv("SMOOTHDINO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def textured_rgb() -> np.ndarray:
    """A deterministic textured 70x98 RGB frame (uint8)."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, size=(14, 20, 3)).astype(np.float32)
    import cv2

    return cv2.resize(base, (98, 70), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


SMALL = (70, 98)


def _export(out: Path, **kw):
    from smoothdino.export import ExportSpec, export_model

    spec = ExportSpec(**{"arch": "vits14", "adapter": "temporal", "size": SMALL, "precision": "fp16",
                         "backend": "onnx", "random_weights": True, "calibration_frames": 2, **kw})
    manifest, report = export_model(spec, out)
    return out


@pytest.fixture(scope="session")
def small_export(tmp_path_factory) -> Path:
    """vits14 + temporal adapter, FP16 and FP32 graphs at 70x98, random weights (synthetic calibration)."""
    return _export(tmp_path_factory.mktemp("export") / "temporal")


@pytest.fixture(scope="session")
def small_export_fp32(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("export") / "temporal32", precision="fp32")
