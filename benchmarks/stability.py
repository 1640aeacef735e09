"""How steady and how right is the fused depth, without a network? `python -m smoothdino.benchmarks.stability --data DIR`

No trained adapter and no real weights exist here, so the network is simulated on NYUv2 ground truth with a documented
error model (the one the design card's sketch used):

    network(t) = GT(t) (holes inpainted) x bias x exp(N(0, scale)) x field(t) x (1 + N(0, noise) per pixel)
    bias       a smooth log-field of sigma `--bias`, fixed per sequence (a network's persistent error)
    scale      a global log-scale of sigma `--scale`, drawn per frame (the flicker the paper attributes its gain to)
    field      a smooth log-field of sigma `--field`, drawn per frame

The product's own code runs it: edge.keyframes.KeyframeSteps with the pose carry (NYUv2's Kinect camera) under
`--keyframes`, with and without fusion (edge.fusion), and once more with fusion fed the ground truth itself (holes
filled) as the network (`perfect`: what the fusion adds to a perfect network). For every output frame, carried ones
included: RMSE against the ground truth on the pixels that have both (median and p90 over frames), and flicker
(edge.flicker: one pose per pair of frames, lifted by the ground truth, shared by every variant).

Writes {"raw"|"fused"|"perfect"|"ground_truth": {rmse_median_m, rmse_p90_m, flicker_median, flicker_p90, ...}} to
--json; --record writes benchmarks/results/stability.json (the docs' figures). `--set keep=0.7,blend=0.4` tries other
fusion settings (edge.fusion.FusionSettings) and `--cost` times carry + fusion at 480x640.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from smoothdino.core.images import parse_size

from .record import Record, Table, add_record_option, command_line, write_record
from .report import markdown_table

NYU = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyu2_sample"
VARIANTS = ("raw", "fused", "perfect")


class SimulatedNetwork:
    """What KeyframeSteps needs of a FramePipeline, with depth looked up instead of computed: `depths[id(rgb)]`."""

    motion_downscale = 1
    min_confidence = 0.1
    random_weights = False

    def __init__(self, frame_size: tuple[int, int], seconds: float = 0.0):
        self.frame_size = tuple(frame_size)
        self.depths: dict[int, np.ndarray] = {}
        self.passes = 0
        self.seconds = seconds  # how long a pass takes (a slow network, for live replays)

    def reset(self) -> None:
        pass

    def prime(self, rgb: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass

    def step(self, rgb: np.ndarray):
        from smoothdino.edge.motion import NO_SHIFT
        from smoothdino.edge.pipeline import STAGE_TIMINGS, FrameResult

        self.passes += 1
        if self.seconds:
            time.sleep(self.seconds)
        return FrameResult(depth=self.depths[id(rgb)].copy(), shift=NO_SHIFT, scene_cut=False,
                           timings=dict.fromkeys(STAGE_TIMINGS, 0.0))


def sequences_in(folders: list[Path]) -> list[Path]:
    """A folder of NYUv2 sequences (<scene>_out/) or a sequence folder itself."""
    out = []
    for folder in folders:
        inner = sorted(p for p in Path(folder).iterdir() if p.is_dir() and p.name.endswith("_out"))
        out += inner or [Path(folder)]
    return out


def load_sequence(folder: Path, size: tuple[int, int], stride: int = 1, limit: int | None = None):
    """[(rgb, gt, gt with its holes filled)] at `size`."""
    from smoothdino.core.images import resize_depth, resize_rgb
    from smoothdino.edge.sources import FolderSource

    frames = []
    for i, frame in enumerate(FolderSource(folder, limit=limit)):
        if i % stride or frame.depth_gt is None:
            continue
        gt = resize_depth(frame.depth_gt, size, ground_truth=True).astype(np.float32)
        holes = (gt <= 0).astype(np.uint8)
        filled = gt
        if holes.any():
            millimetres = np.clip(gt * 1000, 0, 65535).astype(np.uint16)
            filled = cv2.inpaint(millimetres, holes, 3, cv2.INPAINT_TELEA).astype(np.float32) / 1000
        frames.append((resize_rgb(frame.rgb, size), gt, np.maximum(filled, np.float32(0.05))))
    return frames


class ErrorModel:
    def __init__(self, size, scale: float, field: float, bias: float, noise: float, seed: int):
        self.size, self.sigma = size, dict(scale=scale, field=field, bias=bias, noise=noise)
        self.rng = np.random.default_rng(seed)

    def smooth_field(self, sigma: float) -> np.ndarray:
        h, w = self.size
        f = cv2.resize(self.rng.standard_normal((4, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        return np.exp(sigma * f / (f.std() + 1e-6)).astype(np.float32)

    def sequence(self, filled: list[np.ndarray]) -> list[np.ndarray]:
        s = self.sigma
        bias = self.smooth_field(s["bias"])
        return [(depth * bias * np.float32(np.exp(self.rng.normal(0, s["scale"]))) * self.smooth_field(s["field"])
                 * (1 + s["noise"] * self.rng.standard_normal(depth.shape)).astype(np.float32)).astype(np.float32)
                for depth in filled]


def rmse(out: np.ndarray, gt: np.ndarray) -> float | None:
    mask = (out > 0) & (gt > 0.001)
    return float(np.sqrt(np.mean((out[mask] - gt[mask]) ** 2))) if mask.sum() > 0.01 * mask.size else None


def run_sequence(frames, network: list[np.ndarray], policy, settings, size, k) -> dict[str, dict]:
    """Every variant over one sequence, through KeyframeSteps; per-frame RMSE and flicker."""
    from smoothdino.edge.flicker import flicker, pair_motion, sampled, sampled_camera, sampling_step
    from smoothdino.edge.keyframes import KeyframeSteps
    from smoothdino.edge.sources import NYU_KINECT

    feeds = {"raw": network, "fused": network, "perfect": [f for _, _, f in frames]}
    steps, sims = {}, {}
    for name in VARIANTS:
        sims[name] = SimulatedNetwork(size)
        sims[name].depths = {id(rgb): depth for (rgb, _, _), depth in zip(frames, feeds[name])}
        steps[name] = KeyframeSteps(sims[name], policy, "pose", NYU_KINECT, fusion=name != "raw",
                                    fusion_settings=settings)
    out = {name: {"rmse": [], "flicker": [], "flicker_p90": [], "ms": [], "keyframes": 0}
           for name in (*VARIANTS, "ground_truth")}
    previous: dict[str, np.ndarray] = {}
    step = sampling_step(size[1])
    k_small = sampled_camera(k, step)
    for i, (rgb, gt, _) in enumerate(frames):
        outputs = {"ground_truth": gt}
        for name in VARIANTS:
            result = steps[name].step(rgb)
            outputs[name] = result.depth
            out[name]["keyframes"] += int(result.keyframe)
            if result.keyframe and result.fusion is not None and not result.fusion.restarted:
                out[name]["ms"].append(1000 * (result.timings["propagate"] + result.timings["fusion"]))
        motion = pair_motion(sampled(frames[i - 1][0], step), sampled(rgb, step), sampled(frames[i - 1][1], step),
                             k_small) if i else None  # one motion per pair, lifted by the ground truth: judged alike
        for name, depth in outputs.items():
            error = rmse(depth, gt)
            if error is not None:
                out[name]["rmse"].append(error)
            if motion is not None:
                median, p90 = flicker(sampled(previous[name], step), sampled(depth, step), motion)
                if np.isfinite(median):
                    out[name]["flicker"].append(median)
                    out[name]["flicker_p90"].append(p90)
        previous = outputs
    return out


def summarise(runs: list[dict], frames: int) -> dict[str, dict]:
    report = {}
    for name in (*VARIANTS, "ground_truth"):
        rmse_all = np.concatenate([r[name]["rmse"] for r in runs])
        flicker_all = np.concatenate([r[name]["flicker"] for r in runs])
        p90_all = np.concatenate([r[name]["flicker_p90"] for r in runs])
        report[name] = {"rmse_median_m": round(float(np.median(rmse_all)), 4),
                        "rmse_p90_m": round(float(np.percentile(rmse_all, 90)), 4),
                        "flicker_median": round(float(np.median(flicker_all)), 4),
                        "flicker_p90": round(float(np.median(p90_all)), 4),
                        "flicker_pairs": int(flicker_all.size)}
        if name in VARIANTS:
            report[name]["keyframe_share"] = round(sum(r[name]["keyframes"] for r in runs) / frames, 4)
    ms = np.concatenate([r["fused"]["ms"] for r in runs])
    if ms.size:
        report["fused"]["carry_fusion_ms_p50"] = round(float(np.median(ms)), 2)
    return report


def parse_settings(text: str | None):
    from smoothdino.edge.fusion import DEFAULT_FUSION

    if not text:
        return DEFAULT_FUSION
    pairs = dict(item.split("=") for item in text.split(","))
    return dataclasses.replace(DEFAULT_FUSION, **{k: float(v) for k, v in pairs.items()})


def carry_and_fusion_cost(sequence: Path, frames: int = 40, downscale: int = 1) -> dict:
    """Milliseconds a fused keyframe costs at 480x640 (every frame a keyframe, pose carry): measuring the motion
    (cut test, corner tracking; the phase correlation only if the pose fails), carrying the previous output (PnP +
    splat) and the fusion. `downscale`: the motion downscale (process 1, live 2)."""
    from smoothdino.edge.keyframes import KeyframeSteps
    from smoothdino.edge.sources import NYU_KINECT

    size = (480, 640)
    loaded = load_sequence(sequence, size, limit=frames)
    sim = SimulatedNetwork(size)
    sim.motion_downscale = downscale
    sim.depths = {id(rgb): filled for rgb, _, filled in loaded}
    steps = KeyframeSteps(sim, parse_keyframes_word("every"), "pose", NYU_KINECT, fusion=True)
    parts = {"motion": [], "propagate": [], "fusion": []}
    for rgb, _, _ in loaded:
        result = steps.step(rgb)
        if result.fusion is not None and not result.fusion.restarted:
            for part in parts:
                parts[part].append(1000 * result.timings[part])
    total = np.sum([parts[p] for p in parts], axis=0)
    return {"motion_downscale": downscale, **{f"{p}_ms_p50": round(float(np.median(v)), 2) for p, v in parts.items()},
            "total_ms_p50": round(float(np.median(total)), 2), "total_ms_p90": round(float(np.percentile(total, 90)), 2),
            "frames": int(total.size), "cpus": os.cpu_count()}


def live_replay(sequence: Path, size=(240, 320), fps: float = 15.0, seconds: float = 0.4, limit: int | None = None) -> dict:
    """`live` on a replayed sequence (edge.asynchronous, fusion on, pose carry) with a network taking `seconds` a pass:
    frames shown without depth after the first keyframe (a false cut blanks them), and the frames the old rule (a cut
    judged against the keyframe: its phase-correlation response below the threshold) would have blanked."""
    from smoothdino.edge.asynchronous import AsyncPipeline
    from smoothdino.edge.sources import NYU_KINECT

    frames = load_sequence(sequence, size, limit=limit)
    sim = SimulatedNetwork(size, seconds=seconds)
    sim.depths = {id(rgb): filled for rgb, _, filled in frames}
    shown = blank = against_keyframe = 0
    with AsyncPipeline(lambda: sim, carry="pose", intrinsics=NYU_KINECT, fusion=True) as pipeline:
        start = time.perf_counter()
        for i, (rgb, _, _) in enumerate(frames):
            time.sleep(max(0.0, start + i / fps - time.perf_counter()))
            result = pipeline.step(rgb, timestamp=start + i / fps)
            if result is None:
                continue
            shown += 1
            blank += int(result.carry == "none" or not np.any(result.depth > 0))
            against_keyframe += int(result.shift.confidence < sim.min_confidence)
        passes = pipeline.passes
    return {"frames": len(frames), "shown": shown, "without_depth": blank, "old_rule_cuts": against_keyframe,
            "network_passes": passes}


def parse_keyframes_word(word: str):
    from smoothdino.edge.keyframes import parse_keyframes

    return parse_keyframes(word, carry="pose")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append", help="NYUv2 sequence folders, or a folder of them "
                    "(default: the shared sample)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--scale", type=float, default=0.06, help="per-frame global log-scale sigma")
    ap.add_argument("--field", type=float, default=0.04, help="per-frame smooth log-field sigma")
    ap.add_argument("--bias", type=float, default=0.08, help="persistent per-sequence smooth log-field sigma")
    ap.add_argument("--noise", type=float, default=0.02, help="pixel noise (relative sigma)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keyframes", default="every", help="every | N | auto (flicker over every output frame)")
    ap.add_argument("--size", default="240x320")
    ap.add_argument("--stride", type=int, default=1, help="every n-th frame of the sequences")
    ap.add_argument("--set", dest="settings", help="fusion settings, e.g. keep=0.8,blend=0.5")
    ap.add_argument("--cost", action="store_true", help="also time carry + fusion a keyframe at 480x640")
    ap.add_argument("--live", action="store_true", help="also replay each sequence at 15 FPS through live's async loop "
                    "with a network taking 0.4 s a pass: frames without depth after the first keyframe")
    add_record_option(ap, "stability")
    args = ap.parse_args(argv)
    from smoothdino.edge.keyframes import pose_intrinsics
    from smoothdino.edge.sources import NYU_KINECT

    size = parse_size(args.size)
    sequences = sequences_in(args.data or [NYU])
    policy = parse_keyframes_word(args.keyframes)
    settings = parse_settings(args.settings)
    model = ErrorModel(size, args.scale, args.field, args.bias, args.noise, args.seed)
    k = pose_intrinsics("pose", NYU_KINECT, size)
    runs, frames = [], 0
    start = time.perf_counter()
    for sequence in sequences:
        loaded = load_sequence(sequence, size, args.stride)
        frames += len(loaded)
        runs.append(run_sequence(loaded, model.sequence([f for _, _, f in loaded]), policy, settings, size, k))
    report = summarise(runs, frames)
    report["settings"] = settings.describe()
    report["error_model"] = {**model.sigma, "seed": args.seed}
    report["keyframes"], report["size"] = policy.label, args.size
    report["sequences"] = [s.name for s in sequences]
    report["seconds"] = round(time.perf_counter() - start, 1)
    if args.cost:
        report["cost_480x640"] = [carry_and_fusion_cost(sequences[0], downscale=d) for d in (1, 2)]
    if args.live:
        report["live_replay"] = {s.name: live_replay(s) for s in sequences}
    raw, fused, perfect = report["raw"], report["fused"], report["perfect"]
    table = Table(
        f"Fusion against the raw network, {args.size}, --keyframes {policy.label}, {len(sequences)} NYUv2 sequences "
        f"({frames} frames); simulated network: scale {args.scale}, field {args.field}, bias {args.bias}, noise "
        f"{args.noise}, seed {args.seed}",
        ["output", "RMSE median (m)", "RMSE p90 (m)", "flicker median", "flicker p90"],
        [[name, report[name]["rmse_median_m"], report[name]["rmse_p90_m"], report[name]["flicker_median"],
          report[name]["flicker_p90"]] for name in ("raw", "fused", "perfect", "ground_truth")])
    goals = Table("Against the goals (issue 36)", ["goal", "measured", "met"], [
        ["flicker median <= 0.35x raw", f"{fused['flicker_median'] / raw['flicker_median']:.3f}x",
         fused["flicker_median"] <= 0.35 * raw["flicker_median"]],
        ["RMSE median <= 0.90x raw", f"{fused['rmse_median_m'] / raw['rmse_median_m']:.3f}x",
         fused["rmse_median_m"] <= 0.90 * raw["rmse_median_m"]],
        ["RMSE p90 <= 0.85x raw", f"{fused['rmse_p90_m'] / raw['rmse_p90_m']:.3f}x",
         fused["rmse_p90_m"] <= 0.85 * raw["rmse_p90_m"]],
        ["perfect network: adds <= 0.01 m median RMSE", f"{perfect['rmse_median_m']:.4f} m",
         perfect["rmse_median_m"] <= 0.01]])
    tables = [table, goals]
    if args.cost:
        costs = report["cost_480x640"]
        tables.append(Table(
            f"What a fused keyframe costs at 480x640 beyond the network, ms ({costs[0]['cpus']} CPUs, "
            f"{costs[0]['frames']} frames of {sequences[0].name}): measuring the motion, carrying the previous output "
            "(PnP + splat), the fusion", ["motion downscale", "motion p50", "carry p50", "fusion p50",
                                         "carry + fusion p50", "all p50", "all p90"],
            [[c["motion_downscale"], c["motion_ms_p50"], c["propagate_ms_p50"], c["fusion_ms_p50"],
              round(c["propagate_ms_p50"] + c["fusion_ms_p50"], 2), c["total_ms_p50"], c["total_ms_p90"]]
             for c in costs]))
    if args.live:
        tables.append(Table(
            "live on a replayed sequence (15 FPS, a network taking 0.4 s a pass, async, fusion, pose carry, 240x320): "
            "frames shown without depth after the first keyframe, and the frames a cut judged against the keyframe "
            "(the rule before issue 36) would have blanked",
            ["sequence", "frames", "shown", "without depth", "old rule: cut", "network passes"],
            [[name, r["frames"], r["shown"], r["without_depth"], r["old_rule_cuts"], r["network_passes"]]
             for name, r in report["live_replay"].items()]))
    lines = []
    for t in tables:
        lines += [t.caption, "", *markdown_table(t.columns, t.rows), ""]
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.record:
        write_record(Record("stability", "How much steadier, and how much more accurate, is the fused depth than the "
                            "network's own, and what does the fusion cost a perfect network?", tables,
                            random_weights=None,
                            notes=["No network runs: a simulated one (ground truth under the error model above).",
                                   f"Fusion settings: {settings.describe()}."]),
                     args.record, command_line(__spec__.name, argv))
    return report


if __name__ == "__main__":
    main()
