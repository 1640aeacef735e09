"""The graph cache (export/graph_cache.py): an export of the same stage, weights and code copies the FP32 graph an
earlier one traced, byte for byte, and checks it against PyTorch like a traced one; anything else traces again."""

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


def _graphs(spec, out, stages=None):
    """The export's first step only (load, trace or copy), of `stages` (all by default): its context."""
    from smoothdino.export.exporter import build_context, export_onnx

    out.mkdir(parents=True)
    ctx = build_context(spec, out)
    ctx.modules = {s: m for s, m in ctx.modules.items() if s in (stages or ctx.modules)}
    export_onnx(ctx)
    return ctx


def _entries(home):
    return sorted(p.name for p in (home / "graphs").iterdir() if not p.name.startswith(".")) \
        if (home / "graphs").is_dir() else []


def test_the_same_model_copies_the_graphs_byte_for_byte_and_a_kept_file_that_changed_is_never_used(home, tmp_path):
    traced = _graphs(_spec(), tmp_path / "a")
    assert {"encoder.onnx", "adapter.onnx", "decoder.onnx"} <= set(traced.seconds)
    assert len(_entries(home)) == 3  # a stage an entry

    copied = _graphs(_spec(precision="fp16"), tmp_path / "b")  # another precision: the same FP32 graphs
    assert {"encoder.onnx.cached", "adapter.onnx.cached", "decoder.onnx.cached"} <= set(copied.seconds)
    assert not {"encoder.onnx", "adapter.onnx", "decoder.onnx"} & set(copied.seconds)
    assert copied.onnx_errors == traced.onnx_errors  # compared with PyTorch again, on the same frame
    for stage in ("encoder", "adapter", "decoder"):
        assert (tmp_path / "b" / f"{stage}.onnx").read_bytes() == (tmp_path / "a" / f"{stage}.onnx").read_bytes()

    other = _graphs(_spec(adapter="none"), tmp_path / "d")  # no adapter: the encoder is the same graph
    assert "encoder.onnx.cached" in other.seconds and "decoder.onnx" in other.seconds  # decoder: other weights
    assert len(_entries(home)) == 4

    from smoothdino.core.files import sha256_of
    from smoothdino.export.graph_cache import graph_key

    entry = home / "graphs" / graph_key(_spec(), traced.weights, "decoder")
    kept = bytearray((entry / "graph.onnx").read_bytes())
    kept[len(kept) // 2] ^= 0xFF  # a disk error, or a hand edit
    (entry / "graph.onnx").write_bytes(bytes(kept))
    again = _graphs(_spec(), tmp_path / "c")
    assert "decoder.onnx" in again.seconds and "encoder.onnx.cached" in again.seconds  # traced again, that one only
    assert (tmp_path / "c" / "decoder.onnx").read_bytes() == (tmp_path / "a" / "decoder.onnx").read_bytes()
    record = json.loads((entry / "graph.json").read_text())  # kept anew, whole
    assert record["sha256"] == sha256_of(entry / "graph.onnx") == sha256_of(tmp_path / "a" / "decoder.onnx")


def test_other_weights_another_size_or_a_batch_axis_is_another_key():
    from smoothdino.export.graph_cache import graph_key

    weights = {"encoder": "random-weights(seed=0)", "decoder": "random-weights(seed=0)",
               "adapter": "random-weights(seed=0)"}
    for stage in ("encoder", "adapter", "decoder"):
        base = graph_key(_spec(), weights, stage)
        assert graph_key(_spec(precision="int8"), weights, stage) == base  # the precision is not in it
        others = [graph_key(_spec(size=(84, 112)), weights, stage), graph_key(_spec(batch=2), weights, stage),
                  graph_key(_spec(arch="vitb14"), weights, stage),
                  graph_key(_spec(), {**weights, stage: "x.pth@sha256:00"}, stage)]
        assert base not in others and len(set(others)) == len(others), stage
    # the encoder is the same graph whatever the adapter and head; a paper decoder holds its adapter's offsets
    assert graph_key(_spec(adapter="paper"), weights, "encoder") == graph_key(_spec(), weights, "encoder")
    assert graph_key(_spec(), {**weights, "adapter": "paper.pt@sha256:01"}, "decoder") != \
        graph_key(_spec(), weights, "decoder")


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
    ctx = _graphs(_spec(), tmp_path / "a", ["adapter"])  # the smallest graph
    assert "adapter.onnx" in ctx.seconds and not (home / "graphs").exists()
    monkeypatch.setenv("SMOOTHDINO_GRAPH_CACHE", "1")
    assert "adapter.onnx" in _graphs(_spec(), tmp_path / "b", ["adapter"]).seconds  # nothing was kept to copy


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
        ctx = _graphs(_spec(), tmp_path / "a", ["adapter"])
        assert "adapter.onnx" in ctx.seconds and (tmp_path / "a" / "adapter.onnx").stat().st_size > 2 << 20
        assert list((home / "graphs").iterdir()) == []
    finally:
        subprocess.run(["umount", str(home / "graphs")], check=True)
