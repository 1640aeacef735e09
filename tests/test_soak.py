"""The soak benchmark: its figures recomputed from what the run left (PNGs, metrics.csv, the samples), and its
verdict held to the README's goals (RSS growth after warm-up <= 16 MiB, constant descriptors, no frame lost)."""

from __future__ import annotations

import csv
import json
import resource

import cv2
import numpy as np
import pytest

from smoothdino.benchmarks import soak
from smoothdino.core.errors import UserError
from smoothdino.edge.sinks import DepthPngSink

from .conftest import SMALL

FRAMES, WARMUP, SAMPLE_EVERY, WINDOW = 45, 10, 10, 20  # 45: the last frame is sampled on its own
RSS_GOAL_MIB = 16.0  # README, "Soak"


def _soak(export, out, *extra):
    return soak.main(["--frames", str(FRAMES), "--size", f"{SMALL[0]}x{SMALL[1]}", "--engines", str(export),
                      "--out", str(out), "--warmup", str(WARMUP), "--sample-every", str(SAMPLE_EVERY),
                      "--window", str(WINDOW), "--threads", "1", *extra])


def _expected_verdict(saved: dict) -> dict:
    """The goals, computed here from the recorded samples and the files."""
    rss_after = [mib for frame, mib in saved["rss_mib"] if frame >= WARMUP]
    fds_after = [n for frame, n in saved["open_fds"] if frame >= WARMUP]
    growth = max(rss_after) - rss_after[0]
    lost = saved["frames_written"] != FRAMES or bool(saved["errors"])
    return {"rss_growth_mib": round(growth, 2), "rss_growth_ok": growth <= RSS_GOAL_MIB,
            "fds_constant": len(set(fds_after)) == 1, "no_frame_lost": not lost,
            "goals_met": growth <= RSS_GOAL_MIB and len(set(fds_after)) == 1 and not lost}


def test_short_soak_figures_match_the_files_and_the_samples(small_export, tmp_path):
    out = tmp_path / "soak"
    result = _soak(small_export, out)
    saved = json.loads((out / "soak.json").read_text())
    assert result["verdict"] == saved["verdict"] and saved["random_weights"] is True

    # frames: requested == computed == written == the PNGs on disk, every frame's PNG whole, none missing
    pngs = sorted((out / "run" / "depth").glob("*.png"), key=lambda p: int(p.stem))
    assert [p.stem for p in pngs] == [str(i) for i in range(1, FRAMES + 1)]
    assert saved["frames"] == saved["frames_computed"] == saved["frames_written"] == saved["pngs_in_folder"] == FRAMES
    for p in pngs:
        depth = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert depth is not None and depth.dtype == np.uint16 and depth.shape == SMALL and depth.any()
    with open(out / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["frame"] for r in rows] == [str(i) for i in range(1, FRAMES + 1)]  # one row a frame, in order

    # samples: every SAMPLE_EVERY frames and at the first and last; real readings of this process
    sampled = [1] + list(range(SAMPLE_EVERY, FRAMES + 1, SAMPLE_EVERY)) + [FRAMES]
    assert [f for f, _ in saved["rss_mib"]] == sampled and [f for f, _ in saved["open_fds"]] == sampled
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    assert all(50 < mib <= peak_mib + 0.01 for _, mib in saved["rss_mib"])  # onnxruntime alone is > 50 MiB
    assert all(n > 2 for _, n in saved["open_fds"])

    # latency windows: p50/p99 of each window's per-frame totals, recomputed from metrics.csv
    totals = np.array([float(r["total_ms"]) for r in rows])
    assert [w["frames"] for w in saved["latency_windows"]] == [[1, 20], [21, 40], [41, FRAMES]]
    for w in saved["latency_windows"]:
        part = totals[w["frames"][0] - 1: w["frames"][1]]
        assert w["p50_ms"] == pytest.approx(np.percentile(part, 50), abs=0.011)
        assert w["p99_ms"] == pytest.approx(np.percentile(part, 99), abs=0.011)
    assert saved["wall_seconds"] >= totals.sum() / 1000.0 - 0.05  # the frames' own time fits in the run's

    # the verdict is the goals applied to these samples
    verdict = saved["verdict"]
    assert {k: verdict[k] for k in _expected_verdict(saved)} == _expected_verdict(saved)
    assert verdict["no_frame_lost"] and saved["errors"] == []
    assert verdict["fds_min_max"] == [min(n for f, n in saved["open_fds"] if f >= WARMUP),
                                      max(n for f, n in saved["open_fds"] if f >= WARMUP)]


def test_a_lost_frame_fails_the_verdict(small_export, tmp_path, monkeypatch):
    """One depth PNG silently not written: the soak must say a frame was lost."""
    real_write = DepthPngSink.write

    def losing_write(self, name, depth):
        if name != "7":
            real_write(self, name, depth)

    monkeypatch.setattr(DepthPngSink, "write", losing_write)
    out = tmp_path / "soak"
    result = _soak(small_export, out)
    assert result["frames_computed"] == FRAMES and result["frames_written"] == FRAMES - 1
    assert not (out / "run" / "depth" / "7.png").exists()
    assert result["verdict"]["no_frame_lost"] is False and result["verdict"]["goals_met"] is False


def test_pngs_of_an_earlier_run_never_count_as_written(small_export, tmp_path, monkeypatch):
    """An --out holding an earlier run's PNGs: they must not pass for this run's frames. Here this run writes
    nothing at all; counting the folder's PNGs would report every frame written and none lost."""
    depth = tmp_path / "soak" / "run" / "depth"
    depth.mkdir(parents=True)
    for i in range(1, FRAMES + 1):
        cv2.imwrite(str(depth / f"{i}.png"), np.full(SMALL, 1000, np.uint16))
    monkeypatch.setattr(DepthPngSink, "write", lambda self, name, d: None)  # this run loses every frame
    with pytest.raises(UserError, match="depth PNGs from an earlier run"):
        result = _soak(small_export, tmp_path / "soak")
        assert not result["verdict"]["no_frame_lost"], "an earlier run's PNGs were counted as this run's"
    assert len(list(depth.glob("*.png"))) == FRAMES  # the earlier files are left alone
    assert not (tmp_path / "soak" / "soak.json").exists()


@pytest.mark.parametrize("rss, fds, written, errors, broken", [
    ([[1, 300.0], [10, 310.0], [20, 310.0 + RSS_GOAL_MIB + 0.5], [40, 320.0]], [[1, 9], [10, 9], [20, 9], [40, 9]],
     FRAMES, [], "rss_growth_ok"),
    ([[1, 300.0], [10, 310.0], [20, 312.0], [40, 311.0]], [[1, 9], [10, 9], [20, 10], [40, 10]], FRAMES, [],
     "fds_constant"),
    ([[1, 300.0], [10, 310.0], [20, 312.0], [40, 311.0]], [[1, 9], [10, 9], [20, 9], [40, 9]], FRAMES, ["boom"],
     "no_frame_lost"),
    ([[1, 300.0], [10, 310.0], [20, 312.0], [40, 311.0]], [[1, 8], [10, 9], [20, 9], [40, 9]], FRAMES, [], None),
])
def test_verdict_applies_each_goal(rss, fds, written, errors, broken):
    """Growth is measured from the first sample at or after warm-up (frame 1's lower RSS and descriptor count
    are warm-up), and each goal missed on its own turns the verdict."""
    record = {"frames": FRAMES, "frames_computed": FRAMES, "frames_written": written, "pngs_in_folder": written,
              "rss_mib": rss, "open_fds": fds, "latency_windows": [], "errors": errors}
    verdict = soak.verdict(record, WARMUP)
    assert {k: verdict[k] for k in _expected_verdict(record)} == _expected_verdict(record)
    for goal in ("rss_growth_ok", "fds_constant", "no_frame_lost"):
        assert verdict[goal] is (goal != broken)
    assert verdict["goals_met"] is (broken is None)
