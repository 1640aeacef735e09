"""The soak benchmark's record: a short run writes soak.json with every series the closing note reads."""

from __future__ import annotations

import json

from smoothdino.benchmarks import soak

from .conftest import SMALL


def test_short_soak_writes_its_record(small_export, tmp_path):
    out = tmp_path / "soak"
    result = soak.main(["--frames", "120", "--size", f"{SMALL[0]}x{SMALL[1]}", "--engines", str(small_export),
                        "--out", str(out), "--warmup", "50", "--threads", "1"])
    saved = json.loads((out / "soak.json").read_text())
    assert saved["frames"] == 120 and saved["frames_written"] == 120 and saved["errors"] == []
    assert len(list((out / "run" / "depth").glob("*.png"))) == 120
    assert [f for f, _ in saved["rss_mib"]] == [1, 50, 100, 120]  # sampled every 50 frames, and at the end
    assert all(mib > 50 for _, mib in saved["rss_mib"])  # a real reading of this process (onnxruntime alone is more)
    assert [f for f, _ in saved["open_fds"]] == [1, 50, 100, 120] and all(n > 2 for _, n in saved["open_fds"])
    (window,) = saved["latency_windows"]
    assert window["frames"] == [1, 120] and 0 < window["p50_ms"] <= window["p99_ms"]
    verdict = saved["verdict"]
    assert verdict["no_frame_lost"] and verdict["fds_constant"]
    assert verdict["rss_growth_mib"] == round(max(m for f, m in saved["rss_mib"] if f >= 50) - saved["rss_mib"][1][1], 2)
    assert result["verdict"] == verdict and saved["random_weights"] is True
