"""`smoothdino bench` on a few frames: numbers checked against an independent recomputation from the files."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from smoothdino.cli import app

from .conftest import NYU

CONFIGS = "vits14,vits14+paper,vits14+temporal,vitb14"
BENCH_WALL_SECONDS: dict = {}  # out folder -> the bench_run command's wall time, measured here


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """NYUv2 bathroom + a synthetic sequence; the synthetic one alone where the NYUv2 sample is absent."""
    out = tmp_path_factory.mktemp("bench")
    data = [str(NYU / "bathroom_0028_out")] if NYU.is_dir() else []
    args = ["bench", *data, "synthetic:70x98", "--frames", "3", "--size", "70x98", "--configs", CONFIGS,
            "--backends", "torch,onnxruntime,tensorrt", "--warmup", "1", "--threads", "1", "--random-weights",
            "--out", str(out)]
    start = time.perf_counter()
    result = CliRunner().invoke(app, args)
    BENCH_WALL_SECONDS[out] = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    return out, args, result


def _folders(out):
    folders = {"synthetic_70x98": out / "data" / "synthetic_70x98"}
    if NYU.is_dir():
        folders["bathroom_0028_out"] = NYU / "bathroom_0028_out"
    return folders


def _gt(path):
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return raw.astype(np.float64) / (1000.0 if raw.dtype == np.uint16 else 25.5)


def test_mse_matches_numpy_recomputation_from_written_maps(bench_run):
    out, _, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    assert results["random_weights"] and "RANDOM" in results["warning"]
    folders = _folders(out)
    for key, row in results["rows"].items():
        per_frame_paper, per_frame_valid = [], []
        for seq, gt_folder in folders.items():
            for i in (1, 2, 3):
                depth = cv2.imread(str(out / "depth" / key.replace("@", "_at_").replace("/", "_") / seq / f"{i}.png"), cv2.IMREAD_UNCHANGED)
                assert depth.dtype == np.uint16
                pred, gt = depth.astype(np.float64) / 1000.0, _gt(gt_folder / f"{i}.png")
                assert pred.shape == gt.shape  # written at the input frame's size
                per_frame_paper.append(np.mean((pred - gt) ** 2))
                valid = (gt > 0.001) & (gt <= 10)
                per_frame_valid.append(np.mean((np.clip(pred[valid], 0.001, 10) - gt[valid]) ** 2))
        assert row["accuracy"]["mse_paper"] == pytest.approx(np.mean(per_frame_paper), rel=1e-6), key
        assert row["accuracy"]["mse"] == pytest.approx(np.mean(per_frame_valid), rel=1e-6), key


def test_latency_rows_for_every_runner_that_ran(bench_run):
    out, _, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    ran = set(results["rows"])
    assert {f"{c}@{b}/fp32" for c in CONFIGS.split(",") for b in ("torch", "onnxruntime")} <= ran
    tensorrt = {f"{c}@tensorrt/fp32" for c in CONFIGS.split(",")}
    assert tensorrt <= ran | set(results["skipped"])  # ran, or said why not
    for key, row in results["rows"].items():
        lat = row["latency"]
        assert row["timed_frames"] == 3 * len(_folders(out)) - 1  # 3 frames a sequence, less one warm-up frame
        assert (row["gate"] is None) == (row["backend"] == "torch")  # every export row carries its verdict
        for stage in ("encoder", "decoder", "total"):
            assert 0 < lat[stage]["p50_ms"] <= lat[stage]["p95_ms"] <= lat[stage]["max_ms"], (key, stage)
        runs_adapter = row["adapter"] == "temporal" or (row["adapter"] == "paper" and row["backend"] == "torch")
        assert (lat["adapter"]["p50_ms"] > 0) == runs_adapter, key  # paper is folded away in the export
        assert row["fps"] == pytest.approx(1000.0 / lat["total"]["p50_ms"])
    _check_latency_against_frame_records(out, results)
    ratios = {r["small"] for r in results["small_vs_base"]}
    assert "vits14+temporal@onnxruntime/fp32" in ratios and "vits14+paper@torch/fp32" in ratios
    assert results["threads"] == 1 and results["cpu_model"] and len(results["load_average_before"]) == 3
    md = (out / "results.md").read_text()
    assert "vits14+temporal" in md and "-23.8" in md and "RANDOM WEIGHTS" in md and "1 thread pinned" in md


def _check_latency_against_frame_records(out, results):
    """Latency figures recomputed from frames.jsonl (one record per computed frame, seconds per stage) and
    bounded by the wall time of the run: per-stage times add up to each frame's total, the frame counts are
    the frames computed, the percentiles are those of the timed frames, and all the frames' time fits in the run."""
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines() if line.strip()]
    per_sequence = 3
    for key, row in results["rows"].items():
        mine = [r for r in records if r["runner"] == key and r["identity"] == f"{key}|{row['identity']}"]
        assert len(mine) == row["frames"] == per_sequence * len(_folders(out)), key  # every frame, computed once
        assert [r["warmup"] for r in mine] == [True] + [False] * (len(mine) - 1), key  # --warmup 1: the first
        timed = [r["timings"] for r in mine if not r["warmup"]]
        assert len(timed) == row["timed_frames"]
        for stage, figures in row["latency"].items():
            ms = np.array([t[stage] for t in timed]) * 1000.0
            assert figures["p50_ms"] == pytest.approx(np.percentile(ms, 50), rel=1e-9, abs=1e-9), (key, stage)
            assert figures["p95_ms"] == pytest.approx(np.percentile(ms, 95), rel=1e-9, abs=1e-9), (key, stage)
            assert figures["max_ms"] == pytest.approx(ms.max(), rel=1e-9, abs=1e-9), (key, stage)
        for r in mine:
            t = r["timings"]
            # motion runs beside the encoder on another thread; every other stage is a consecutive slice of total
            serial = t["pre"] + t["encoder"] + t["adapter"] + t["decoder"] + t["post"] + t["propagate"] + t["fusion"]
            assert serial <= t["total"] + 1e-6, (key, t)
            assert t["total"] - serial <= t["motion"] + 0.005 + 0.05 * t["total"], (key, t)  # waiting on motion
    # a fused row shares its network pass with the unfused one (bench.SharedNetwork): the passes are counted once
    frames_time = sum(r["timings"]["total"] for r in records if r["identity"] in
                      {f"{k}|{row['identity']}" for k, row in results["rows"].items() if row["fusion"] == "off"})
    assert frames_time <= results["wall_seconds"] <= BENCH_WALL_SECONDS.get(out, float("inf"))
    assert frames_time >= 0.5 * results["wall_seconds"]  # the loop's time is mostly the frames' own


def test_plot_is_a_png(bench_run):
    out, _, _ = bench_run
    path = out / "accuracy_vs_latency.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 300


def test_bench_resumes_without_recomputing(bench_run):
    out, args, _ = bench_run
    before = (out / "frames.jsonl").read_text()
    results_before = json.loads((out / "results.json").read_text())
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "frames.jsonl").read_text() == before
    after = json.loads((out / "results.json").read_text())
    assert {k: r["accuracy"] for k, r in after["rows"].items()} == {k: r["accuracy"] for k, r in results_before["rows"].items()}


def test_other_weights_reexport_and_recompute(bench_run):
    """A bench re-run with another random seed must not reuse the export or the frame records of the first."""
    out, args, _ = bench_run
    # list options accumulate when repeated: the first run's --configs and --backends are taken out, not overridden
    dropped = ("--configs", CONFIGS, "--backends", "torch,onnxruntime,tensorrt")
    args = [a for a in args if a not in dropped] + ["--configs", "vits14", "--backends", "onnxruntime", "--seed", "3"]
    before = (out / "frames.jsonl").read_text().splitlines()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "exporting vits14+none fp32 (weights changed)" in again.output.replace("\n", " ")
    new = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()[len(before):]]
    runners = {r["runner"] for r in new}  # with the NYUv2 sample, also the fused row (--fusion off,auto)
    assert runners <= {"vits14@onnxruntime/fp32", "vits14@onnxruntime/fp32/fusion=auto"}
    assert len(new) == 3 * len(_folders(out)) * len(runners)  # every frame computed again
    assert all("random-weights(seed=3)" in r["identity"] for r in new)
    manifest = json.loads((out / "engines" / "vits14-fp32-70x98-onnxruntime" / "manifest.json").read_text())
    assert manifest["fingerprint"]["weights"] == "random(seed=3)"


def test_failed_gate_is_flagged(bench_run):
    from smoothdino.benchmarks.report import write_markdown

    out, _, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    key = next(k for k, r in results["rows"].items() if r["gate"] is not None)
    results["rows"][key]["gate"] = {"passed": False, "reasons": ["depth RMSE change 12.0 mm > 5.0 mm"]}
    write_markdown(results, out / "flagged.md")
    md = (out / "flagged.md").read_text()
    assert "FAILED their precision gate" in md and f"- {key}: depth RMSE change 12.0 mm" in md


def test_precision_axis_rows_carry_stage_precision_and_gate(tmp_path):
    """--precisions fp32,int8: one row per precision, the INT8 row runs the INT8 graphs, each says its gate."""
    out = tmp_path / "bench"
    # 6 frames: the gate holds out 2 pairs, INT8 calibrates on what is left
    result = CliRunner().invoke(app, ["bench", "--data", "synthetic:70x98", "--frames", "6", "--configs",
                                      "vits14+temporal", "--backends", "onnxruntime", "--precisions", "fp32,int8",
                                      "--warmup", "1", "--threads", "1", "--random-weights", "--out", str(out),
                                      "--fusion", "off"])
    assert result.exit_code == 0, result.output
    assert "--data is now a positional argument" in result.output  # the old name still works, with a notice
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert set(rows) == {"vits14+temporal@onnxruntime/fp32", "vits14+temporal@onnxruntime/int8"}
    fp32, int8 = rows["vits14+temporal@onnxruntime/fp32"], rows["vits14+temporal@onnxruntime/int8"]
    assert fp32["gate"]["passed"] and "decoder=int8" in int8["description"]
    assert int8["memory"]["weights_mib"] < 0.5 * fp32["memory"]["weights_mib"]  # INT8 graphs, not the FP32 ones
    assert int8["accuracy"]["rmse"] != fp32["accuracy"]["rmse"]
    md = (out / "results.md").read_text()
    assert ("FAILED their precision gate" in md) == (not int8["gate"]["passed"])


def test_int8_without_frames_left_for_calibration_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["bench", "synthetic:70x98", "--frames", "3", "--configs", "vits14",
                                      "--backends", "onnxruntime", "--precisions", "int8", "--random-weights",
                                      "--out", str(tmp_path / "bench")])
    assert result.exit_code == 2
    error = result.output[result.output.index("error:"):].strip()
    assert "synthetic_70x98: no frame pair left for INT8 calibration" in " ".join(error.split())
    assert "--calibration" in error


def test_torn_last_frame_record_is_recomputed_and_a_corrupt_one_refused(tmp_path):
    """A bench killed mid-write leaves half a line at the end of frames.jsonl: the next bench drops it (one notice),
    computes that frame again and ends with the same results. A damaged line before the end is one error line."""
    out = tmp_path / "bench"
    args = ["bench", "synthetic:70x98", "--frames", "3", "--configs", "vits14", "--backends", "onnxruntime",
            "--warmup", "1", "--threads", "1", "--random-weights", "--out", str(out), "--fusion", "off"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    frames = out / "frames.jsonl"
    lines = frames.read_text().splitlines(keepends=True)
    assert len(lines) == 3 and all(line.endswith("\n") for line in lines)
    results = json.loads((out / "results.json").read_text())
    torn = json.loads(lines[-1])
    frames.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed halfway through the write

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and again.exception is None, again.output
    assert "Traceback" not in again.output
    said = " ".join(again.output.split())
    assert said.count("frames.jsonl") == 1 and "torn" in said
    records = [json.loads(line) for line in frames.read_text().splitlines()]
    assert len(records) == 3 and frames.read_text().endswith("\n")
    assert [json.loads(line) for line in lines[:-1]] == records[:2]  # the whole records are kept as they were
    assert (records[2]["sequence"], records[2]["frame"]) == (torn["sequence"], torn["frame"])  # computed again
    after = json.loads((out / "results.json").read_text())
    assert {k: r["accuracy"] for k, r in after["rows"].items()} == {k: r["accuracy"] for k, r in results["rows"].items()}

    damaged = frames.read_text().splitlines(keepends=True)
    frames.write_text(damaged[0] + damaged[1][:20] + "\n" + damaged[2])  # a damaged record that is not the last
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    errors = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{frames}:2" in " ".join(refused.output.split()), refused.output


def test_keyframes_axis_adds_a_row_per_policy_with_its_share_and_rate(tmp_path):
    """--keyframes every,3: a second row whose network ran on frames 1, 4, 7 of 9; only frame 1 equals the every
    row (later keyframes fuse the previous keyframe, not the previous frame; the others are carried)."""
    import cv2

    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "synthetic:70x98", "--frames", "9", "--configs",
                                      "vits14+temporal", "--backends", "onnxruntime", "--keyframes", "every,3",
                                      "--warmup", "0", "--threads", "1", "--random-weights", "--out", str(out),
                                      "--fusion", "off"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    every, third = rows["vits14+temporal@onnxruntime/fp32"], rows["vits14+temporal@onnxruntime/fp32/keyframes=3"]
    assert every["keyframe_share"] == 1.0 and abs(third["keyframe_share"] - 3 / 9) < 1e-9
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["runner"].endswith("keyframes=3")]
    assert [r["keyframe"] for r in sorted(mine, key=lambda r: int(r["frame"]))] == [True, False, False] * 3
    folder = {k: out / "depth" / k.replace("@", "_at_").replace("/", "_") / "synthetic_70x98" for k in rows}
    for frame in range(1, 10):
        a, b = (cv2.imread(str(folder[k] / f"{frame}.png"), cv2.IMREAD_UNCHANGED) for k in rows)
        assert np.array_equal(a, b) == (frame == 1), frame
    mean_ms = 1000 * np.mean([r["timings"]["total"] for r in mine])
    assert abs(third["fps"] - 1000 / mean_ms) < 1e-6 * third["fps"]  # the rate of a bimodal stream: 1 / mean
    assert "keyframes 3: 33%" in (out / "results.md").read_text()


def test_fused_rows_share_the_network_pass_and_every_row_has_flicker(bench_run):
    """--fusion off,auto (the default): where the camera is known (the NYUv2 sequence) every configuration gets a fused
    row beside its own, computed from the same network pass (the stage timings are that pass's); every row's flicker
    is the one edge.flicker measures from its written PNGs, through one motion per pair lifted by the ground truth."""
    from smoothdino.core.images import resize_depth
    from smoothdino.edge.carry import camera_matrix
    from smoothdino.edge.flicker import flicker, pair_motion, sampled, sampled_camera, sampling_step
    from smoothdino.edge.sources import NYU_KINECT, FolderSource

    out, _, _ = bench_run
    if not NYU.is_dir():
        pytest.skip("needs ../shared/data/nyu2_sample (to check flicker against its ground truth)")
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    fused = {k: r for k, r in rows.items() if r["fusion"] == "auto"}
    assert fused and {k.removesuffix("/fusion=auto") for k in fused} == {k for k, r in rows.items() if r["fusion"] == "off"}
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    by = {(r["runner"], r["sequence"], r["frame"]): r for r in records}
    for key, row in fused.items():
        assert row["fused"] and "fused" in (out / "results.md").read_text()
        raw = key.removesuffix("/fusion=auto")
        for (runner, sequence, frame), record in by.items():
            if runner == key:
                for stage in ("encoder", "decoder"):
                    assert record["timings"][stage] == by[(raw, sequence, frame)]["timings"][stage], (key, frame)
                assert record["fused"]  # both sequences' cameras are known (the synthetic one is written as NYUv2)
    source = FolderSource(NYU / "bathroom_0028_out", limit=3)
    frames = [source.load(i) for i in range(3)]
    h, w = frames[0].rgb.shape[:2]
    at = NYU_KINECT.scaled(h, w)
    step = sampling_step(w)
    k = sampled_camera(camera_matrix(at.fx, at.fy, at.cx, at.cy), step)
    for key, row in rows.items():
        assert row["flicker"]["pairs"] >= 2, key  # both sequences' later frames
        folder = out / "depth" / key.replace("@", "_at_").replace("/", "_") / "bathroom_0028_out"
        pngs = [cv2.imread(str(folder / f"{i}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000 for i in (1, 2, 3)]
        for i in (1, 2):
            motion = pair_motion(sampled(frames[i - 1].rgb, step), sampled(frames[i].rgb, step),
                                 sampled(resize_depth(frames[i - 1].depth_gt, (h, w), ground_truth=True), step), k)
            expected = flicker(sampled(pngs[i - 1], step), sampled(pngs[i], step), motion)[0]
            assert by[(key, "bathroom_0028_out", str(i + 1))]["flicker"] == pytest.approx(expected, rel=1e-6), key
