"""benchmarks/multi_camera.py on a tiny setting: two cameras (2-second clips of the synthetic scene at 70x98) in one
`live`, and every figure it reports checked against the run's own files (network.json, each camera's metrics and
depth PNGs). No figure is hard-coded and nothing is timed: a loaded machine makes the figures worse, not wrong."""

from __future__ import annotations

import csv
import json

import pytest

from smoothdino.benchmarks import multi_camera


def test_clips_are_the_cameras_own(tmp_path):
    import cv2

    clips = multi_camera.make_clips(tmp_path, (70, 98), 2, 0.5)
    assert [c.name for c in clips] == ["cam0.avi", "cam1.avi"]
    firsts = []
    for clip in clips:
        capture = cv2.VideoCapture(str(clip))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 15
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(multi_camera.FPS)
        ok, first = capture.read()
        capture.release()
        assert ok and first.shape == (70, 98, 3)
        firsts.append(first)
    assert (firsts[0] != firsts[1]).any()  # each camera its own scene
    stamp = clips[0].stat().st_mtime_ns
    assert multi_camera.make_clips(tmp_path, (70, 98), 2, 0.5) == clips and clips[0].stat().st_mtime_ns == stamp


def test_figures_agree_with_the_runs_files(small_export_fp32, tmp_path):
    seconds = 2.0
    clips = multi_camera.make_clips(tmp_path / "clips", (70, 98), 2, seconds)
    run = multi_camera.run_live(small_export_fp32, clips, tmp_path / "one", separate=False, batch="off")

    network = json.loads((tmp_path / "one" / "network.json").read_text())
    assert run["network"] == network and run["processes"] == 1 and set(run["cameras"]) == {"cam0", "cam1"}
    assert set(network["lanes"]) == {"cam0", "cam1"}
    assert network["passes"] == sum(lane["passes"] for lane in network["lanes"].values())  # batch off: one a pass
    rates = []
    for name, camera in run["cameras"].items():
        folder = tmp_path / "one" / name
        info = json.loads((folder / "metrics.json").read_text())["run"]
        with open(folder / "metrics.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert camera["frames_written"] == len(rows) == len(list((folder / "depth").glob("*.png")))
        assert camera["dropped"] == info["dropped_frames"] and camera["waiting_frames"] == info["waiting_frames"]
        assert camera["frames_read"] == len(rows) + info["waiting_frames"]
        assert camera["frames_read"] + camera["dropped"] == round(seconds * multi_camera.FPS)  # the whole clip
        assert camera["drop_pct"] == pytest.approx(100 * camera["dropped"] / (camera["frames_read"] + camera["dropped"]),
                                                   abs=0.01)
        keys = {int(r["frame"]) - int(float(r["age_frames"])) for r in rows}
        assert camera["passes_seen"] == len(keys) >= 1  # the network's passes whose depth reached an output...
        assert camera["passes_seen"] <= network["lanes"][name]["passes"]  # ...of those the network made for it
        if camera["passes_seen"] > 1:
            assert camera["keyframe_rate"] > 0 and camera["interval_mean_ms"] > 0
            assert camera["interval_mean_ms"] <= camera["interval_max_ms"] >= camera["interval_p95_ms"]
            assert camera["keyframe_rate"] == pytest.approx(1000 / camera["interval_mean_ms"], rel=0.01)
        rates.append(camera["keyframe_rate"] or 0.0)
        if camera["frames_written"] > 1:
            assert camera["output_fps"] > 0
        assert camera["first_depth_s"] is None or 0 < camera["first_depth_s"] <= run["wall_s"]
    assert run["total_passes_per_s"] == pytest.approx(sum(rates), abs=0.002)
    assert run["max_drop_pct"] == max(c["drop_pct"] for c in run["cameras"].values())
    assert run["peak_rss_mib"] > 0 and run["peak_pss_mib"] > 0
    assert run["peak_rss_mib"] == pytest.approx(sum(run["per_process_rss_mib"]), abs=0.2)


def test_plan_runs_one_camera_once_and_batches_only_with_a_batch_export():
    assert multi_camera.plan([1, 2], batched=False) == [(1, False, None), (2, False, "off"), (2, True, None)]
    assert (4, False, "4") in multi_camera.plan([1, 4], batched=True)
