"""Keyframes against the network on every frame: `python -m smoothdino.benchmarks.keyframes [--data SEQ ...]`.

For each policy (every, 2, 3, 4, auto) over the same frames, with one pipeline (ONNX Runtime CPU):
- mean ms per output frame and the output rate; network passes;
- drift: depth RMSE against the `every` output of the same run (what carrying a keyframe costs);
- depth against ground truth (RMSE, delta1) on the pixels that have depth, and that coverage;
- the propagation floor: the keyframe's ground truth carried by the same measured shift to frame t, against
  frame t's ground truth (the error the method adds with a perfect network), median and p90;
- flicker: the temporal metric (edge.metrics.temporal_error), lower is steadier.
Then `--async`: the frames replayed at 30 FPS through edge.asynchronous.AsyncPipeline, as `live` runs them:
frames output, frames the output path dropped, the output path's ms per frame (p50, p95), the depth's age.

Writes keyframes.json and keyframes.md into --out. Random weights (no download here): rates, drift and the
floor are real; accuracy against ground truth is not metric.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from smoothdino.core.images import parse_size, resize_depth, resize_rgb

from .record import Record, Table, add_record_option, command_line, write_record
from .report import markdown_table

NYU = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyu2_sample"


def load_frames(sequence: Path, count: int, size) -> list[tuple[np.ndarray, np.ndarray | None]]:
    from smoothdino.edge.sources import FolderSource

    frames = []
    for frame in FolderSource(sequence, limit=count):
        gt = resize_depth(frame.depth_gt, size, ground_truth=True) if frame.depth_gt is not None else None
        frames.append((resize_rgb(frame.rgb, size), gt))
    return frames


def rmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[mask] - b[mask]) ** 2))) if mask.any() else float("nan")


def run_policies(open_pipeline, frames, words: list[str], carry: str = "shift", camera=None) -> dict[str, dict]:
    """Every policy over the same frames, each with its own pipeline (its own temporal state), interleaved frame by
    frame in a rotating order, so other load on the machine hits every policy alike. `camera`: the Intrinsics the pose
    carry needs."""
    from smoothdino.edge.keyframes import KeyframeSteps, parse_keyframes

    pipelines = {w: open_pipeline() for w in words}
    steps = {w: KeyframeSteps(pipelines[w], parse_keyframes(w, carry=carry), carry, camera) for w in words}
    runs = {w: {"depth": [], "ms": [], "keyframe": [], "key_index": [], "shift": []} for w in words}
    keys = dict.fromkeys(words, 0)
    try:
        for i, (rgb, _) in enumerate(frames):
            for w in words[i % len(words):] + words[: i % len(words)]:
                start = time.perf_counter()
                result = steps[w].step(rgb)
                out = runs[w]
                out["ms"].append(1000 * (time.perf_counter() - start))
                keys[w] = i if result.keyframe else keys[w]
                for name, value in (("depth", result.depth), ("keyframe", result.keyframe), ("key_index", keys[w]),
                                    ("shift", (result.shift.dx, result.shift.dy))):
                    out[name].append(value)
    finally:
        for pipeline in pipelines.values():
            pipeline.close()
    return runs


def policy_figures(run: dict, every: dict, frames, floor: dict | None = None) -> dict:
    """`floor`: the policy's propagation floor on these frames' ground truth (floor_policy), when they have it."""
    from smoothdino.edge.metrics import temporal_error

    drift, gt_rmse, delta1, coverage, flicker = [], [], [], [], []
    for i, (depth, (_, gt)) in enumerate(zip(run["depth"], frames)):
        has = depth > 0
        drift.append(1000 * rmse(depth, every["depth"][i], has))
        if gt is None:
            continue
        valid = gt > 0.001
        coverage.append(float((has & valid).sum() / max(valid.sum(), 1)))
        both = has & valid
        gt_rmse.append(rmse(depth, gt, both))
        ratio = np.maximum(depth[both] / gt[both], gt[both] / np.maximum(depth[both], 1e-3))
        delta1.append(float(np.mean(ratio < 1.25)) if both.any() else float("nan"))
        if i > 0 and frames[i - 1][1] is not None:
            flicker.append(temporal_error(depth, run["depth"][i - 1], gt, frames[i - 1][1]))
    ms = float(np.mean(run["ms"]))

    def stat(values, fn=np.nanmean):
        return round(float(fn(values)), 4) if len(values) else None

    return {"ms_per_frame": round(ms, 2), "output_fps": round(1000 / ms, 2), "network_passes": int(sum(run["keyframe"])),
            "frames": len(run["ms"]), "drift_mm": stat(drift), "rmse_m": stat(gt_rmse), "delta1": stat(delta1),
            "coverage": stat(coverage), "flicker_m": stat(flicker),
            "floor_median_m": floor["median_m"] if floor else None, "floor_p90_m": floor["p90_m"] if floor else None,
            "floor_frames": floor["carried_frames"] if floor else 0}


def sequence_camera(sequence: Path, size) -> np.ndarray:
    """The camera matrix of an NYUv2-layout folder at `size` (the Kinect's calibration, as `process` assumes)."""
    from smoothdino.edge.keyframes import pose_intrinsics
    from smoothdino.edge.sources import NYU_KINECT

    return pose_intrinsics("pose", NYU_KINECT, size)


def _carry_error(carried: np.ndarray, gt: np.ndarray) -> float | None:
    mask = (carried > 0.001) & (gt > 0.001)
    return rmse(carried, gt, mask) if mask.sum() > 0.01 * mask.size else None  # almost no measured depth: no figure


def floor_policy(scenes, size, policy, carry: str, cut_below: float = 0.1) -> dict:
    """The propagation floor of one policy and carry, on ground truth alone (no network): each frame's decision as
    `process` makes it (edge.keyframes), the keyframe's GT depth carried to the frames after it by the same carry
    (edge.keyframes.carry_to), RMSE against each carried frame's GT. Returns median_m, p90_m, keyframe_share."""
    from smoothdino.edge.keyframes import KeyframeMotion, carry_to, frame_greys

    errors, keys, total, fallbacks = [], 0, 0, 0
    for frames, k in scenes:
        key: KeyframeMotion | None = None
        key_gt, age = None, 0
        for rgb, gt in frames:
            total += 1
            greys = frame_greys(rgb, 1, carry == "pose")
            motion = key.measure(greys) if key is not None else None
            if policy.wants_keyframe(age + 1, motion, size[1]):
                key, key_gt, age, keys = KeyframeMotion(greys, 1, cut_below), gt, 0, keys + 1
                continue
            age += 1
            carried = carry_to(key_gt, motion, k if carry == "pose" else None, key.tracks)
            fallbacks += bool(carried.fallback)
            error = _carry_error(carried.depth, gt)
            if error is not None:
                errors.append(error)
    return {"median_m": round(float(np.median(errors)), 4), "p90_m": round(float(np.percentile(errors, 90)), 4),
            "keyframe_share": round(keys / total, 4), "carried_frames": len(errors), "frames": total,
            "pose_fallbacks": fallbacks}


def floor_gaps(scenes, size, gaps=(1, 2, 3, 4, 6), stride: int = 3) -> dict:
    """Both carries at fixed gaps: for every `stride`-th frame t, keyframe k = t - gap, the corners followed through
    the frames between (as the run-time follows them), GT of k carried to t."""
    from smoothdino.edge.keyframes import KeyframeMotion, carry_to, frame_greys

    out = {}
    for carry in ("shift", "pose"):
        out[carry] = {}
        for gap in gaps:
            errors, fallbacks = [], 0
            for frames, k in scenes:
                greys = [frame_greys(rgb, 1, carry == "pose") for rgb, _ in frames]
                for t in range(max(gaps), len(frames), stride):
                    key = KeyframeMotion(greys[t - gap], 1, 0.0)
                    for j in range(t - gap + 1, t + 1):
                        motion = key.measure(greys[j])
                    carried = carry_to(frames[t - gap][1], motion, k if carry == "pose" else None, key.tracks)
                    fallbacks += bool(carried.fallback)
                    error = _carry_error(carried.depth, frames[t][1])
                    if error is not None:
                        errors.append(error)
            out[carry][str(gap)] = {"median_m": round(float(np.median(errors)), 4),
                                    "p90_m": round(float(np.percentile(errors, 90)), 4), "pairs": len(errors),
                                    "pose_fallbacks": fallbacks}
    return out


def carry_cost(sequence: Path, sizes, frames: int = 40) -> dict:
    """Milliseconds a carried frame costs at each size (median over `frames`, keyframe every 4th): the motion
    measurement (phase correlation + corner tracking) and the carry (PnP + splat, or the translation)."""
    from smoothdino.edge.keyframes import KeyframeMotion, carry_to, frame_greys

    out = {}
    for size in sizes:
        loaded = load_frames(sequence, frames, size)
        k = sequence_camera(sequence, size)
        for carry in ("shift", "pose"):
            measure_ms, carry_ms = [], []
            key, key_gt = None, None
            for i, (rgb, gt) in enumerate(loaded):
                a = time.perf_counter()
                greys = frame_greys(rgb, 1, carry == "pose")
                motion = key.measure(greys) if key is not None else None
                b = time.perf_counter()
                if i % 4 == 0:
                    key, key_gt = KeyframeMotion(greys, 1, 0.0), gt
                    continue
                carry_to(key_gt, motion, k if carry == "pose" else None, key.tracks)
                measure_ms.append(1000 * (b - a))
                carry_ms.append(1000 * (time.perf_counter() - b))
            total = np.array(measure_ms) + np.array(carry_ms)
            out[f"{size[0]}x{size[1]} {carry}"] = {"measure_ms_p50": round(float(np.median(measure_ms)), 2),
                                                   "carry_ms_p50": round(float(np.median(carry_ms)), 2),
                                                   "total_ms_p50": round(float(np.median(total)), 2),
                                                   "total_ms_p90": round(float(np.percentile(total, 90)), 2)}
    return out


def load_scenes(sequences, size) -> list:
    return [(load_frames(s, 100_000, size), sequence_camera(s, size)) for s in sequences]


def sweep_policies(carry: str) -> list:
    from smoothdino.edge.keyframes import KeyframePolicy

    if carry == "shift":
        return [KeyframePolicy(mode="auto", max_shift=s, min_confidence=c, max_age=a)
                for s in (0.02, 0.04, 0.06) for c in (0.25, 0.4) for a in (3, 4)]
    # the carry error barely follows the motion on NYUv2 (Spearman < 0.2 with the shift, the corners' displacement or
    # the tracked count, docs/keyframes.md): the age is the main limit, the others catch large motions and cuts
    # parallax (edge.tracking: corners off the best homography) is scale-free, unlike metres of error
    return [KeyframePolicy(mode="auto", max_shift=0.2, min_confidence=0.1, max_age=a, min_coverage=0.5, max_parallax=p)
            for a in (4, 5) for p in (0.002, 0.003, 0.004, 1.0)]


def replay_async(open_pipeline, frames, fps: float = 30.0) -> dict:
    """The frames at `fps` as a camera delivers them; the output path steps each one it has time for."""
    from smoothdino.edge.asynchronous import AsyncPipeline

    period = 1.0 / fps
    path_ms, ages_frames, ages_ms = [], [], []
    dropped = waiting = 0
    with AsyncPipeline(open_pipeline) as pipeline:
        start = time.perf_counter()
        i = 0
        while i < len(frames):
            due = start + i * period
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            elif now > due + period:  # a camera keeps only the newest frame: the late ones are gone
                late = min(int((now - due) / period), len(frames) - 1 - i)
                dropped += late
                i += late
            mark = time.perf_counter()
            result = pipeline.step(frames[i][0], timestamp=start + i * period)
            if result is None:
                waiting += 1
            else:
                path_ms.append(1000 * (time.perf_counter() - mark))
                ages_frames.append(result.age_frames)
                ages_ms.append(result.age_ms)
            i += 1
        passes = pipeline.passes
    if not path_ms:
        raise SystemExit(f"no keyframe finished within {len(frames) / fps:.1f} s of frames: give more --async-frames")
    return {"frames_in": len(frames), "output": len(path_ms), "waiting_for_first_keyframe": waiting,
            "dropped_by_output_path": dropped, "dropped_share": round(dropped / len(frames), 4),
            "output_path_ms_p50": round(float(np.median(path_ms)), 2),
            "output_path_ms_p95": round(float(np.percentile(path_ms, 95)), 2),
            "network_passes": passes, "age_frames_p50": float(np.median(ages_frames)),
            "age_ms_p50": round(float(np.median(ages_ms)), 1)}


def report_limits(carry: str) -> dict:
    from smoothdino.edge.keyframes import auto_policy

    return {k: v for k, v in vars(auto_policy(carry)).items() if k not in ("mode", "n") and v is not None}


def ground_truth_report(args, sequences) -> dict:
    """--floor, --sweep, --carry-cost: ground truth and timings only (no export, no network)."""
    from smoothdino.edge.keyframes import parse_keyframes

    size = parse_size(args.size)
    report: dict = {"size": args.size, "sequences": [str(s) for s in sequences]}
    lines: list[str] = []
    tables: list[Table] = []
    sweep_tables: list[Table] = []
    scenes = load_scenes(sequences, size) if args.floor or args.sweep else []
    if args.floor:
        gaps = floor_gaps(scenes, size)
        report["gaps"] = gaps
        tables.append(Table(
            f"Propagation floor at fixed gaps, {args.size}, {len(sequences)} NYUv2 sequences: the keyframe's ground "
            "truth carried to frame t against frame t's (median / p90 RMSE, m)",
            ["frames back", "shift", "pose", "pose fell back"],
            [[g, f"{gaps['shift'][g]['median_m']:.3f} / {gaps['shift'][g]['p90_m']:.3f}",
              f"{gaps['pose'][g]['median_m']:.3f} / {gaps['pose'][g]['p90_m']:.3f}",
              f"{gaps['pose'][g]['pose_fallbacks']}/{gaps['pose'][g]['pairs']}"] for g in gaps["pose"]]))
        lines += [tables[-1].caption, "", *markdown_table(tables[-1].columns, tables[-1].rows)]
        policies = {carry: {w: floor_policy(scenes, size, parse_keyframes(w, carry=carry), carry)
                            for w in ("2", "3", "4", "auto")} for carry in ("shift", "pose")}
        report["policies"] = policies
        tables.append(Table(
            f"Propagation floor per keyframe policy, {args.size}, ground truth (median / p90 RMSE, m; share of frames "
            "that are keyframes)",
            ["--keyframes", "shift carry", "keyframes", "pose carry", "keyframes"],
            [[w, f"{policies['shift'][w]['median_m']:.3f} / {policies['shift'][w]['p90_m']:.3f}",
              f"{100 * policies['shift'][w]['keyframe_share']:.0f} %",
              f"{policies['pose'][w]['median_m']:.3f} / {policies['pose'][w]['p90_m']:.3f}",
              f"{100 * policies['pose'][w]['keyframe_share']:.0f} %"] for w in policies["pose"]]))
        lines += ["", tables[-1].caption, "", *markdown_table(tables[-1].columns, tables[-1].rows)]
        # auto per sequence: the pose carry's limits were swept on basement and bathroom; bedroom was left out
        per_sequence = {s.name: {carry: floor_policy([scene], size, parse_keyframes("auto", carry=carry), carry)
                                 for carry in ("shift", "pose")} for s, scene in zip(sequences, scenes)}
        report["auto_per_sequence"] = per_sequence
        tables.append(Table(
            f"auto per sequence, {args.size}, ground truth (median / p90 RMSE, m; share of frames that are keyframes). "
            "The pose carry's limits were swept on basement and bathroom only",
            ["sequence", "auto, shift carry", "keyframes", "auto, pose carry", "keyframes"],
            [[name, f"{f['shift']['median_m']:.3f} / {f['shift']['p90_m']:.3f}",
              f"{100 * f['shift']['keyframe_share']:.0f} %", f"{f['pose']['median_m']:.3f} / {f['pose']['p90_m']:.3f}",
              f"{100 * f['pose']['keyframe_share']:.0f} %"] for name, f in per_sequence.items()]))
        lines += ["", tables[-1].caption, "", *markdown_table(tables[-1].columns, tables[-1].rows)]
        report["auto_limits"] = {c: report_limits(c) for c in ("shift", "pose")}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(policies, indent=1) + "\n")
    if args.sweep:
        report["sweep"] = {}
        for carry in args.sweep_carries.split(","):
            rows = []
            for policy in sweep_policies(carry):
                figures = floor_policy(scenes, size, policy, carry)
                limits = f"shift {policy.max_shift:g}, conf {policy.min_confidence:g}, age {policy.max_age}" + \
                    (f", coverage {policy.min_coverage:g}, parallax {policy.max_parallax:g}" if carry == "pose" else "")
                rows.append({"carry": carry, "auto": limits, **figures})
                print(json.dumps(rows[-1]), flush=True)
            report["sweep"][carry] = rows
            sweep_tables.append(Table(f"auto's limits, {carry} carry, {args.size}, ground truth",
                                      ["limits", "keyframe share", "floor median (m)", "floor p90 (m)"],
                                      [[r["auto"], r["keyframe_share"], r["median_m"], r["p90_m"]] for r in rows]))
            lines += ["", sweep_tables[-1].caption, "", *markdown_table(sweep_tables[-1].columns, sweep_tables[-1].rows)]
    if args.carry_cost:
        cost = carry_cost(sequences[0], [parse_size("224x294"), parse_size("480x640")])
        report["carry_cost"] = cost
        tables.append(Table(
            f"The carry's cost a carried frame, ms ({sequences[0].name}, {os.cpu_count()} CPUs): measuring the "
            "motion (phase correlation, corner tracking) and moving the keyframe's depth",
            ["size, carry", "measure p50", "carry p50", "total p50", "total p90"],
            [[k, v["measure_ms_p50"], v["carry_ms_p50"], v["total_ms_p50"], v["total_ms_p90"]]
             for k, v in cost.items()]))
        lines += ["", tables[-1].caption, "", *markdown_table(tables[-1].columns, tables[-1].rows)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "keyframes_ground_truth.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(lines))
    if args.record and args.floor:
        write_record(Record("keyframes_floor", "How far is depth carried from a keyframe off, with a perfect "
                            "network (ground truth in, ground truth out)?", tables[:3], random_weights=None,
                            notes=["The error is the carry's alone: ground truth in, ground truth out."]),
                     args.record, command_line(__spec__.name, args.argv))
    if args.record and args.sweep:
        limits = "; ".join(f"{c}: " + ", ".join(f"{k} {v:g}" for k, v in report_limits(c).items()) for c in ("shift", "pose"))
        write_record(Record("keyframes_sweep", "Which limits should `auto` start a keyframe at, for each carry?",
                            sweep_tables, random_weights=None,
                            notes=[f"The limits shipped (edge/keyframes.py AUTO_LIMITS): {limits}.",
                                   "Ground truth carried: no network runs."]),
                     args.record, command_line(__spec__.name, args.argv))
    if args.record and args.carry_cost:
        write_record(Record("carry_cost", "What does carrying depth to a frame between keyframes cost?",
                            tables[-1:], random_weights=None, notes=[]),
                     args.record, command_line(__spec__.name, args.argv))
    return report


def main(argv=None) -> dict:
    from smoothdino.edge.keyframes import parse_keyframes
    from smoothdino.edge.pipeline import DepthPipeline

    from .int8_speed import export

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append", help="NYUv2 sequence folders (default: the shared sample)")
    ap.add_argument("--frames", type=int, default=60, help="frames per sequence")
    ap.add_argument("--size", default="224x294")
    ap.add_argument("--precision", default="int8", help="fp32 or int8 (the INT8 plan, --force past its gate)")
    ap.add_argument("--policies", default="every,2,3,4,auto")
    ap.add_argument("--carry", default="pose", choices=("pose", "shift"), help="how carried frames get depth")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--async", dest="asynchronous", action="store_true", help="also replay at 30 FPS through live --async")
    ap.add_argument("--async-size", default="480x640")
    ap.add_argument("--async-precision", default="fp32")
    ap.add_argument("--async-frames", type=int, default=600, help="frames replayed at 30 FPS (600: 20 s)")
    ap.add_argument("--async-threads", default="1,2", help="network threads to try in async mode")
    ap.add_argument("--async-only", action="store_true", help="only the --async replay")
    ap.add_argument("--sweep", action="store_true", help="only the ground-truth sweep behind auto's defaults (no network)")
    ap.add_argument("--floor", action="store_true",
                    help="only the propagation floor per carry, policy and gap, on ground truth (no export, no network)")
    ap.add_argument("--sweep-carries", default="shift,pose", help="--sweep: the carries to sweep auto's limits for")
    ap.add_argument("--carry-cost", action="store_true", help="only the carry's milliseconds a frame at 224x294 and 480x640")
    ap.add_argument("--json", type=Path, help="--floor: also write {carry: {policy: {median_m, p90_m, keyframe_share}}}")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "smoothdino-keyframes")
    add_record_option(ap, "keyframes_rate (keyframes_floor with --floor, keyframes_sweep with --sweep, carry_cost "
                          "with --carry-cost)")
    args = ap.parse_args(argv)
    args.argv = argv  # the record's command
    sequences = args.data or sorted(p for p in NYU.iterdir() if p.is_dir())
    if args.floor or args.sweep or args.carry_cost:
        return ground_truth_report(args, sequences)
    size = parse_size(args.size)
    if args.async_only:
        args.asynchronous, args.policies = True, ""
    manifest = None if args.async_only else export("vits14", "temporal", size, args.precision, args.out / f"engines_{args.size}_{args.precision}",
                      sequences, 3)
    report = {"size": args.size, "precision": manifest.precision if manifest else None, "threads": args.threads, "random_weights": True,
              "frames_per_sequence": args.frames, "sequences": [s.name for s in sequences], "policies": {}}
    per_policy: dict[str, list[dict]] = {}
    words = [parse_keyframes(w).label for w in args.policies.split(",") if w]
    if words and "every" not in words:
        words.insert(0, "every")  # the reference for drift and speed
    from smoothdino.edge.sources import NYU_KINECT

    report["carry"] = args.carry
    for sequence in sequences if words else []:
        frames = load_frames(sequence, args.frames, size)
        runs = run_policies(lambda: DepthPipeline(manifest, backend="onnxruntime", threads=args.threads), frames, words,
                            args.carry, NYU_KINECT)
        for word, run in runs.items():
            has_gt = all(gt is not None for _, gt in frames)
            floor = floor_policy([(frames, sequence_camera(sequence, size))], size,
                                 parse_keyframes(word, carry=args.carry), args.carry) if has_gt and word != "every" else None
            figures = policy_figures(run, runs["every"], frames, floor)
            per_policy.setdefault(word, []).append(figures)
            print(json.dumps({"sequence": sequence.name, "keyframes": word, **figures}), flush=True)
    for word, rows in per_policy.items():  # frame-weighted means over the sequences
        keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
        report["policies"][word] = {k: round(float(np.nanmean([r[k] for r in rows if r[k] is not None])), 4)
                                    for k in keys if any(r[k] is not None for r in rows)}
        report["policies"][word]["network_passes"] = sum(r["network_passes"] for r in rows)
        report["policies"][word]["frames"] = sum(r["frames"] for r in rows)
    every_fps = report["policies"]["every"]["output_fps"] if words else 1.0
    for word in report["policies"]:
        report["policies"][word]["speed_vs_every"] = round(report["policies"][word]["output_fps"] / every_fps, 2)

    if args.asynchronous:
        async_size = parse_size(args.async_size)
        async_manifest = export("vits14", "temporal", async_size, args.async_precision,
                                args.out / f"engines_{args.async_size}_{args.async_precision}", sequences, 3)
        frames = load_frames(sequences[0], args.async_frames, async_size)
        while len(frames) < args.async_frames:  # a longer replay than the sequence: the camera sweeps back and forth
            frames += frames[::-1][: args.async_frames - len(frames)]
        report["async"] = {"size": args.async_size, "precision": async_manifest.precision, "sequence": sequences[0].name,
                           "runs": {}}
        for threads in [int(t) for t in args.async_threads.split(",")]:
            figures = replay_async(lambda threads=threads: DepthPipeline(async_manifest, backend="onnxruntime",
                                                                         threads=threads, motion_downscale=2),
                                   frames)
            report["async"]["runs"][str(threads)] = figures
            print(json.dumps({"async_threads": threads, **figures}), flush=True)

    rate = Table(
        f"Per keyframe policy ({args.carry} carry), vits14+temporal {report['precision']} {args.size}, ONNX Runtime CPU "
        f"{args.threads} threads, {len(sequences)} NYUv2 sequences x {args.frames} frames",
        ["--keyframes", "ms / output frame", "output FPS", "x every", "network passes", "drift vs every (mm)",
         "flicker (m)", "floor median (m)", "floor p90 (m)"],
        [[w, p["ms_per_frame"], p["output_fps"], p["speed_vs_every"], p["network_passes"], p.get("drift_mm"),
          p.get("flicker_m"), p.get("floor_median_m"), p.get("floor_p90_m")] for w, p in report["policies"].items()])
    lines = [rate.caption + ", random weights", "", *markdown_table(rate.columns, rate.rows)]
    if "async" in report:
        a = report["async"]
        lines += ["", f"live --async replay at 30 FPS, {a['size']} {a['precision']}, {a['sequence']}", ""]
        lines += markdown_table(
            ["network threads", "frames in", "output", "before 1st keyframe", "dropped by output path",
             "output path p50 ms", "p95 ms", "network passes", "age p50 (frames)", "age p50 (ms)"],
            [[t, r["frames_in"], r["output"], r["waiting_for_first_keyframe"], f"{r['dropped_by_output_path']} "
              f"({100 * r['dropped_share']:.1f} %)", r["output_path_ms_p50"], r["output_path_ms_p95"],
              r["network_passes"], r["age_frames_p50"], r["age_ms_p50"]] for t, r in a["runs"].items()])
    if args.record and words:
        write_record(Record("keyframes_rate", "What do keyframes buy (output rate) and cost (drift from running the "
                            "network on every frame)?", [rate],
                            notes=["Drift is against `every` in the same run; the floor is the carry's error on "
                                   "ground truth (no network)."]),
                     args.record, command_line(__spec__.name, args.argv))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "keyframes.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "keyframes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
