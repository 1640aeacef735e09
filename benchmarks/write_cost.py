"""What one frame's write unit costs, and how much of it the power-cut safety is: a 16-bit depth PNG and a metrics
row, written as the loop writes them, with and without the fsync of file and folder before the rename
(core.files.durable_replace).

    python -m smoothdino.benchmarks.write_cost --size 480x640 --frames 200 --out out/benchmarks

The PNGs go to --folder (default: a new folder under the current directory, removed at the end: the figure is for
the disk the outputs go to, not /tmp, which may be a tmpfs where fsync costs nothing). The depth is the synthetic
scene's (it compresses like a real one), with its ground truth, so the row holds every metric. Per frame: PNG encode,
write, rename (+ fsync of the file and its folder) and a live metrics row (MetricsSink appending to metrics.csv), each
frame a new file as in a run. Rounds with and without fsync alternate, so drift hits both alike; the first frame of
each round (files and folders opened) is left out. Results: <out>/write_cost.json and .md (printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from smoothdino.core.files import atomic_write_text
from smoothdino.core.images import parse_size
from smoothdino.edge.sinks import MetricsSink, atomic_imwrite, json_dumps, to_millimetres
from smoothdino.edge.sources.synthetic import SyntheticScene

from .record import Record, Table, add_record_option, command_line, write_record
from .report import markdown_table

MODES = {"fsync (as shipped)": True, "no fsync": False}


def file_system(folder: Path) -> str:
    """The file system type and device `folder` is on (/proc/mounts: the longest mount point above it)."""
    try:
        mounts = [line.split()[:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    folder = str(Path(folder).resolve())
    found = max((m for m in mounts if folder == m[1] or folder.startswith(m[1].rstrip("/") + "/")),
                key=lambda m: len(m[1]), default=None)
    return f"{found[2]} ({found[0]} on {found[1]})" if found else "unknown"


def measure(folder: Path, size: tuple[int, int], frames: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per frame for each mode, over `rounds` alternating rounds of frames // rounds frames."""
    scene = SyntheticScene(*size, frames=16)
    canvases = scene.canvases()
    depths = [scene.frame(i, canvases)[1] for i in range(scene.frames)]
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    per_round = max(2, frames // rounds)
    for r in range(rounds):
        order = list(MODES) if r % 2 == 0 else list(MODES)[::-1]
        for mode in order:
            run = folder / f"{r}-{MODES[mode]}"
            (run / "depth").mkdir(parents=True)
            metrics = MetricsSink(run, {}, keep_rows=False)
            for i in range(per_round):
                depth = depths[i % len(depths)]
                start = time.perf_counter()
                atomic_imwrite(run / "depth" / f"{i:06d}.png", to_millimetres(depth), durable=MODES[mode])
                metrics.add(f"{i:06d}", depth, depth, {"total": 0.05})
                if i:  # the first: files and folders opened
                    times[mode].append(time.perf_counter() - start)
            metrics.write()
    return times


def summarize(times: dict[str, list[float]]) -> dict[str, dict]:
    out = {}
    for mode, values in times.items():
        ms = np.asarray(values) * 1000.0
        out[mode] = {"frames": int(ms.size), "p50_ms": float(np.percentile(ms, 50)),
                     "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean())}
    return out


def table(result: dict) -> Table:
    return Table(f"A frame's write unit at {result['size']} (16-bit PNG + metrics row), ms, on {result['file_system']}",
                 ["mode", "frames", "p50 ms", "p95 ms", "mean ms"],
                 [[mode, s["frames"], round(s["p50_ms"], 2), round(s["p95_ms"], 2), round(s["mean_ms"], 2)]
                  for mode, s in result["modes"].items()])


def fsync_line(result: dict) -> str:
    return f"fsync of file and folder costs {result['fsync_p50_ms']:.2f} ms a frame (p50 difference)."


def markdown(result: dict) -> str:
    t = table(result)
    return "\n".join([t.caption + f", {result['machine']}:", "", *markdown_table(t.columns, t.rows), "",
                      fsync_line(result), ""])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="480x640")
    p.add_argument("--frames", type=int, default=200, help="frames per mode")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds the frames are split into")
    p.add_argument("--folder", type=Path, default=None, help="where the PNGs go (default: a new folder here)")
    p.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    add_record_option(p, "write_cost")
    a = p.parse_args(argv)
    if a.frames < 2 * a.rounds:
        p.error("--frames: at least two per round")
    size = parse_size(a.size)
    parent = a.folder or Path.cwd()
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".write-cost-", dir=parent))
    try:
        modes = summarize(measure(folder, size, a.frames, a.rounds))
        fs = file_system(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"size": f"{size[0]}x{size[1]}", "file_system": fs, "cpus": os.cpu_count(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "modes": modes,
              "fsync_p50_ms": modes["fsync (as shipped)"]["p50_ms"] - modes["no fsync"]["p50_ms"],
              "fsync_mean_ms": modes["fsync (as shipped)"]["mean_ms"] - modes["no fsync"]["mean_ms"]}
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "write_cost.json", json_dumps(result))
    text = markdown(result)
    atomic_write_text(a.out / "write_cost.md", text)
    print(text)
    if a.record:
        write_record(Record("write_cost", "What does writing a frame cost, and how much of it is the fsync that "
                            "keeps every written frame through a power cut?", [table(result)],
                            notes=[fsync_line(result)], random_weights=None),
                     a.record, command_line(__spec__.name, argv))
    return result


if __name__ == "__main__":
    main()
