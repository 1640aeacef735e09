"""The graph cache (export/graph_cache.py): an export of the same model, weights and code copies the FP32 graphs an
earlier one traced, byte for byte, with their recorded ONNX-vs-PyTorch errors; anything else traces again."""

from __future__ import annotations

import json
import os
import time

import pytest

from .conftest import SMALL


def _spec(**kw):
    from smoothdino.export import ExportSpec

    return ExportSpec(**{"arch": "vits14", "adapter": "temporal", "size": SMALL, "precision": "fp32",
                         "backend": "onnx", "random_weights": True, "calibration_frames": 2, **kw})


def _graphs(spec, out):
    """The export's first step only (load, trace or copy): its context."""
    from smoothdino.export.exporter import build_context, export_onnx

    out.mkdir(parents=True)
    ctx = build_context(spec, out)
    export_onnx(ctx)
    return ctx


def _entries(home):
    return sorted(p.name for p in (home / "graphs").iterdir() if not p.name.startswith(".")) \
        if (home / "graphs").is_dir() else []


def test_the_same_model_copies_the_graphs_byte_for_byte_and_a_kept_file_that_changed_is_never_used(home, tmp_path):
    traced = _graphs(_spec(), tmp_path / "a")
    assert "encoder.onnx" in traced.seconds and "onnx.from_cache" not in traced.seconds
    assert len(_entries(home)) == 1

    copied = _graphs(_spec(precision="fp16"), tmp_path / "b")  # another precision: the same FP32 graphs
    assert "onnx.from_cache" in copied.seconds and "encoder.onnx" not in copied.seconds
    assert copied.onnx_errors == traced.onnx_errors
    for stage in ("encoder", "adapter", "decoder"):
        assert (tmp_path / "b" / f"{stage}.onnx").read_bytes() == (tmp_path / "a" / f"{stage}.onnx").read_bytes()

    entry = home / "graphs" / _entries(home)[0]
    kept = bytearray((entry / "decoder.onnx").read_bytes())
    kept[len(kept) // 2] ^= 0xFF  # a disk error, or a hand edit
    (entry / "decoder.onnx").write_bytes(bytes(kept))
    again = _graphs(_spec(), tmp_path / "c")
    assert "encoder.onnx" in again.seconds  # traced again, not the changed file
    assert (tmp_path / "c" / "decoder.onnx").read_bytes() == (tmp_path / "a" / "decoder.onnx").read_bytes()
    record = json.loads((entry / "graphs.json").read_text())  # kept anew, whole
    from smoothdino.core.files import sha256_of

    assert record["sha256"]["decoder"] == sha256_of(entry / "decoder.onnx") == sha256_of(tmp_path / "a" / "decoder.onnx")


def test_other_weights_another_size_or_a_batch_axis_is_another_key():
    from smoothdino.export.graph_cache import graph_key

    weights = {"encoder": "random-weights(seed=0)", "decoder": "random-weights(seed=0)"}
    example = bytes(70 * 98 * 3)
    base = graph_key(_spec(), weights, example, ["encoder", "decoder"])
    assert graph_key(_spec(precision="int8"), weights, example, ["encoder", "decoder"]) == base  # precision is not
    others = [graph_key(_spec(size=(84, 112)), weights, example, ["encoder", "decoder"]),
              graph_key(_spec(batch=2), weights, example, ["encoder", "decoder"]),
              graph_key(_spec(adapter="paper"), weights, example, ["encoder", "decoder"]),
              graph_key(_spec(), {**weights, "encoder": "x.pth@sha256:00"}, example, ["encoder", "decoder"]),
              graph_key(_spec(), weights, bytes([1]) + example[1:], ["encoder", "decoder"])]
    assert base not in others and len(set(others)) == len(others)


def test_any_change_to_the_source_is_another_key(tmp_path):
    from smoothdino.export.graph_cache import source_hash

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vit.py").write_text("WIDTH = 384\n")
    (tmp_path / "cli.py").write_text("")
    before = source_hash.__wrapped__(tmp_path)
    (tmp_path / "models" / "vit.py").write_text("WIDTH = 385\n")
    assert source_hash.__wrapped__(tmp_path) != before
    (tmp_path / "models" / "vit.py").write_text("WIDTH = 384\n")
    assert source_hash.__wrapped__(tmp_path) == before
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "onnx.py").write_text("OPSET = 17\n")  # a new file counts too
    assert source_hash.__wrapped__(tmp_path) != before


def test_the_least_recently_used_entries_go_past_keep(home):
    from smoothdino.export import graph_cache

    root = home / "graphs"
    for i in range(graph_cache.KEEP + 2):
        (root / f"entry{i}").mkdir(parents=True)
        os.utime(root / f"entry{i}", (time.time() - 100 + i, time.time() - 100 + i))  # entry0 the oldest
    (root / ".incoming-dead").mkdir()
    os.utime(root / ".incoming-dead", (time.time() - 7200, time.time() - 7200))  # a killed export's, 2 h old
    graph_cache._prune(root)
    assert _entries(home) == sorted(f"entry{i}" for i in range(2, graph_cache.KEEP + 2))
    assert not (root / ".incoming-dead").exists()


def test_smoothdino_graph_cache_0_keeps_nothing(home, tmp_path, monkeypatch):
    monkeypatch.setenv("SMOOTHDINO_GRAPH_CACHE", "0")
    ctx = _graphs(_spec(adapter="none"), tmp_path / "a")
    assert "encoder.onnx" in ctx.seconds and not (home / "graphs").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
def test_a_full_disk_only_skips_keeping(home, tmp_path):
    """The cache on a 2 MB tmpfs: nothing fits, the export goes on with its traced graphs, nothing half-kept."""
    import subprocess

    (home / "graphs").mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(home / "graphs")],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount refused: {mounted.stderr.strip()}")
    try:
        ctx = _graphs(_spec(adapter="none"), tmp_path / "a")
        assert "encoder.onnx" in ctx.seconds and (tmp_path / "a" / "encoder.onnx").stat().st_size > 2 << 20
        assert list((home / "graphs").iterdir()) == []
    finally:
        subprocess.run(["umount", str(home / "graphs")], check=True)
