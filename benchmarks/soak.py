"""Soak: `python -m smoothdino.benchmarks.soak --frames 10000 --size 112x154 --out DIR`.

Drives the live loop (`edge.loop.run_stream`, as `smoothdino live --out` does) on the synthetic moving scene
swept back and forth, with random weights and an export made on the fly, writing every depth PNG and the
metrics. Every 50 frames it samples the process's resident memory and open file descriptors; per 500-frame
window it keeps latency p50/p99. `DIR/soak.json` holds all of it; the goals (RSS growth after warm-up
<= 16 MiB, constant descriptors, no frame lost) are checked at the end and printed.

"Frames written" counts only this run's frames: the depth PNGs of the frames this run computed, found on disk
at the end. A `DIR/run/depth` that already holds PNGs (an earlier soak) is refused, so a frame this run lost
can never be made up for by a file an earlier run left (`DIR/engines`, an earlier export, is reused).
--record writes benchmarks/results/soak.json for the docs (a run shorter than 10,000 frames is labelled a short soak).
"""

from __future__ import annotations

import argparse
import os
import sys
import platform
import resource
import time
from pathlib import Path

import numpy as np

SAMPLE_EVERY = 50
WINDOW = 500
RSS_GROWTH_GOAL_MIB = 16.0
FULL_SOAK_FRAMES = 10_000  # the docs' command; fewer is a short soak, and the record says so


def rss_mib() -> float:
    """Resident set size now (VmRSS), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class SoakProbe:
    """A FrameSink (edge.loop) that samples memory, descriptors and latency as frames go by."""

    def __init__(self, total: int, sample_every: int = SAMPLE_EVERY, window: int = WINDOW) -> None:
        self.total = total
        self.sample_every = max(1, sample_every)
        self.window = max(1, window)
        self.frames = 0
        self.computed: list[str] = []  # names of the frames this run computed (their PNGs were written before)
        self.rss: list[list[float]] = []
        self.fds: list[list[int]] = []
        self.windows: list[dict] = []
        self._latency: list[float] = []
        self._window_start = 0

    def write(self, frame, depth, result, canvas) -> None:
        self.frames += 1
        if result is not None:
            self._latency.append(result.timings["total"] * 1000.0)
            self.computed.append(frame.name)
        if self.frames % self.sample_every == 0 or self.frames in (1, self.total):  # in the loop, files open
            self.rss.append([self.frames, round(rss_mib(), 2)])
            self.fds.append([self.frames, open_descriptors()])
        if self.frames % self.window == 0:
            self._close_window()

    def _close_window(self) -> None:
        if self._latency:
            lat = np.asarray(self._latency)
            self.windows.append({"frames": [self._window_start + 1, self.frames], "p50_ms": round(float(np.percentile(lat, 50)), 2),
                                 "p99_ms": round(float(np.percentile(lat, 99)), 2)})
        self._latency, self._window_start = [], self.frames

    def close(self) -> None:
        if self.frames > self._window_start:
            self._close_window()


def verdict(result: dict, warmup: int) -> dict:
    after = [mib for frame, mib in result["rss_mib"] if frame >= warmup] or [result["rss_mib"][-1][1]]
    fds_after = [n for frame, n in result["open_fds"] if frame >= warmup] or [result["open_fds"][-1][1]]
    windows = result["latency_windows"]
    growth = round(max(after) - after[0], 2)
    fds_constant = min(fds_after) == max(fds_after)
    no_frame_lost = (result["frames_written"] == result["frames_computed"] == result["frames"]
                     == result["pngs_in_folder"] and not result["errors"])
    return {
        "warmup_frames": warmup,
        "rss_after_warmup_mib": after[0],
        "rss_end_mib": result["rss_mib"][-1][1],
        "rss_growth_mib": growth,
        "rss_growth_ok": growth <= RSS_GROWTH_GOAL_MIB,
        "fds_min_max": [min(fds_after), max(fds_after)],
        "fds_constant": fds_constant,
        "no_frame_lost": no_frame_lost,
        "goals_met": growth <= RSS_GROWTH_GOAL_MIB and fds_constant and no_frame_lost,
        "latency_p50_first_last_ms": [windows[0]["p50_ms"], windows[-1]["p50_ms"]] if windows else None,
    }


def record_tables(result: dict, warmup: int):
    """The soak's figures for the docs: the verdict against the goals, then latency per window."""
    from .record import Table

    v, size = result["verdict"], "x".join(str(n) for n in result["size"])
    short = "short soak, " if result["frames"] < FULL_SOAK_FRAMES else ""
    summary = Table(
        f"Soak ({short}{result['frames']} frames in {result['wall_seconds']:g} s): the live loop on the synthetic scene "
        f"at {size}, vits14+temporal {result['precision']}, {result['backend']}, every depth PNG and metrics row written",
        ["goal", "measured", "met"],
        [["no frame lost", f"{result['frames_written']} of {result['frames']} written, {result['pngs_in_folder']} PNGs "
          f"in the folder, {len(result['errors'])} errors", "yes" if v["no_frame_lost"] else "no"],
         [f"resident memory after {warmup} warm-up frames grows <= {RSS_GROWTH_GOAL_MIB:g} MiB",
          f"{v['rss_after_warmup_mib']:.1f} -> {v['rss_end_mib']:.1f} MiB (+{v['rss_growth_mib']:.1f})",
          "yes" if v["rss_growth_ok"] else "no"],
         ["open descriptors constant", "{} to {}".format(*v["fds_min_max"]), "yes" if v["fds_constant"] else "no"]])
    windows = Table(f"Latency per {result['window']}-frame window (a frame's step, ms)", ["frames", "p50", "p99"],
                    [[f"{w['frames'][0]}-{w['frames'][1]}", w["p50_ms"], w["p99_ms"]] for w in result["latency_windows"]])
    return [summary, windows]


def main(argv=None) -> dict:
    from smoothdino.core.console import console, random_weights_notice
    from smoothdino.core.errors import UserError
    from smoothdino.core.images import parse_size
    from smoothdino.edge.loop import StreamOutputs, run_stream
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.core.files import atomic_write_text
    from smoothdino.edge.sinks import json_dumps
    from smoothdino.edge.sources import SyntheticSource
    from smoothdino.edge.sources.synthetic import SyntheticScene

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--size", default="112x154", help="frame and export size HEIGHTxWIDTH")
    ap.add_argument("--out", type=Path, default=Path("out/soak"))
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=500, help="frames before the RSS baseline")
    ap.add_argument("--engines", type=Path, default=None, help="an existing export of --size (default: export one)")
    ap.add_argument("--sample-every", type=int, default=SAMPLE_EVERY, help="frames between RSS/descriptor samples")
    ap.add_argument("--window", type=int, default=WINDOW, help="frames per latency p50/p99 window")
    from .record import Record, add_record_option, command_line, load_note, write_record

    add_record_option(ap, "soak")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    size = parse_size(args.size)
    depth_folder = args.out / "run" / "depth"
    stale = sum(1 for _ in depth_folder.glob("*.png")) if depth_folder.is_dir() else 0
    if stale:  # they would count as written by this run
        raise UserError(f"{depth_folder}: {stale} depth PNGs from an earlier run; the soak counts the frames it "
                        f"writes itself: give an empty --out, or delete {args.out / 'run'}")

    random_weights_notice()
    engines = args.engines or args.out / "engines"
    if args.engines is None:
        from smoothdino.export import ExportSpec, ensure_export

        spec = ExportSpec(arch="vits14", adapter="temporal", size=size, precision=args.precision,
                          backend="onnxruntime", random_weights=True, calibration_frames=2)
        ensure_export(spec, engines, progress=lambda msg: None)
    probe = SoakProbe(args.frames, args.sample_every, args.window)
    errors: list[str] = []
    source = SyntheticSource(SyntheticScene(*size, frames=120), total=args.frames, live=True)
    start = time.perf_counter()
    with DepthPipeline.from_folder(engines, backend="onnxruntime", threads=args.threads) as pipeline:
        try:
            report = run_stream(pipeline, source, StreamOutputs(folder=args.out / "run", resume=False, sinks=[probe]),
                                run_info={"pipeline": pipeline.description, "random_weights": True})
        except Exception as err:  # noqa: BLE001 - a soak records what broke instead of dying
            errors.append(f"{type(err).__name__}: {err}")
            report = None
    result = {
        "frames": args.frames,
        "frames_computed": report.computed if report else probe.frames,
        # this run's frames whose PNG is on disk (the folder held none before: refused above)
        "frames_written": sum(1 for name in dict.fromkeys(probe.computed) if (depth_folder / f"{name}.png").is_file()),
        "pngs_in_folder": sum(1 for _ in depth_folder.glob("*.png")),
        "size": list(size),
        "precision": args.precision,
        "backend": "onnxruntime",
        "random_weights": True,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "sample_every": probe.sample_every,
        "window": probe.window,
        "rss_mib": probe.rss,
        "open_fds": probe.fds,
        "latency_windows": probe.windows,
        "errors": errors + ([f"{report.nonfinite} frames with NaN/Inf depth"] if report and report.nonfinite else []),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average": list(os.getloadavg())},
    }
    result["verdict"] = verdict(result, args.warmup)
    atomic_write_text(args.out / "soak.json", json_dumps(result))
    v = result["verdict"]
    console.print(f"soak: {result['frames_written']}/{args.frames} frames written in {result['wall_seconds']} s; "
                  f"RSS {v['rss_after_warmup_mib']} -> {v['rss_end_mib']} MiB after {args.warmup} warm-up frames "
                  f"(growth {v['rss_growth_mib']} MiB, goal <= {RSS_GROWTH_GOAL_MIB:g}: "
                  f"{'ok' if v['rss_growth_ok'] else 'MISSED'}); descriptors {v['fds_min_max']} "
                  f"({'constant' if v['fds_constant'] else 'CHANGING'}); latency p50 first/last window "
                  f"{v['latency_p50_first_last_ms']} ms; errors {len(result['errors'])} -> {args.out / 'soak.json'}")
    if args.record:
        notes = [f"A short soak ({args.frames:,} frames, {result['wall_seconds']:.0f} s), not days: it shows that "
                 "memory and descriptors settle after warm-up, not what a week does; the docs' command runs "
                 f"{FULL_SOAK_FRAMES:,} frames." if args.frames < FULL_SOAK_FRAMES else
                 f"{args.frames:,} frames ({result['wall_seconds'] / 3600:.1f} h).", load_note(load_before)]
        write_record(Record("soak", "Does the live loop keep its memory, its descriptors and its pace, and lose no "
                            "frame, over a long run?", record_tables(result, args.warmup), notes=notes),
                     args.record, command_line("smoothdino.benchmarks.soak", argv))
    return result


if __name__ == "__main__":
    from smoothdino.core.console import error_line
    from smoothdino.core.errors import UserError

    try:
        main()
    except UserError as err:
        error_line(str(err))
        sys.exit(2)
