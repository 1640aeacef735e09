"""Several cameras on one network (`live --source A --source B ...`) against one `live` process per camera.

For 1, 2 and 4 cameras (video files replayed at 30 FPS: the synthetic scene, edge/sources/synthetic.py, each
camera its own seed and motion, written with cv2.VideoWriter) at each frame size, it runs

    one        `smoothdino live --source cam0.avi --source cam1.avi ... --headless --out OUT` (one SharedNetwork),
               with --batch off and, where the export has a batch axis (`export --batch N`), --batch <cameras>
    separate   one `smoothdino live --source camK.avi --headless --out OUT/camK` per camera, all started together

each as subprocesses, as a user would, with the run-time's defaults (async, ONNX Runtime threads = physical cores
per process), and reads back what the runs wrote. How each figure is measured:

- peak RSS: the kernel's high-water mark of each process's resident memory (VmHWM in /proc/<pid>/status, polled
  every 50 ms until it exits), summed over the processes of a run. RSS counts the shared libraries' pages once per
  process; PSS (/proc/<pid>/smaps_rollup, polled every 0.5 s, summed at each poll, the peak of the sum) shares
  them out, and is shown beside it.
- keyframe interval of a camera: the seconds between the arrivals of its consecutive network passes, where a pass
  arrives at the first output frame that carries it (in its metrics rows the keyframe is frame - age_frames; the
  arrival time is that frame's depth PNG's write time, so an interval is measured to one camera frame, 33 ms).
  A camera's keyframe rate is (arrivals - 1) / (last arrival - first arrival) = 1 / its mean interval.
- network passes: those whose depth reached an output (its cameras' distinct keyframes), all cameras, over the
  whole clip (every arrangement plays the same clips, so the counts compare; the goal is judged on them), and a
  second a steady state: the sum of the cameras' keyframe rates (a camera needs two arrivals for one),
  measured the same way for one process and for separate ones. `network.json`'s own passes_per_s (one process)
  counts from the network's start, model loading included, so it is lower; it is kept in the JSON figures.
- output rate of a camera: its metrics rows (frames written, depth PNG + row each) less one, over the seconds
  between its first and last PNG; drops: `dropped_frames` (frames the camera thread overwrote before the loop took
  them, metrics.json) over the frames the camera delivered (read + dropped).

`--record` writes benchmarks/results/multi_camera.json (the docs' figures) with the load average as the run began.
Random weights (nothing can be downloaded here): the arithmetic is the real network's, so the times are too.

    python -m smoothdino.benchmarks.multi_camera --sizes 224x294,480x640 --cameras 1,2,4 --seconds 10 --record
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .record import Record, Table, add_record_option, command_line, load_note, write_record

FPS = 30.0
SWEEP = 100  # frames of one sweep of the synthetic scene; the camera pans back and forth across it (bounded canvas)
GOAL_RSS = 1.3  # four cameras in one process: at most this times one camera's resident memory
GOAL_INTERVAL = 1.25  # the worst camera's keyframe interval: at most this times the mean
GOAL_DROPS = 1.0  # per cent
GOAL_RATE = 0.99  # output at the camera's rate: at least this share of it


def _sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]


# -- inputs -------------------------------------------------------------------------------------------------------

def camera_motion(camera: int) -> tuple[float, float]:
    """Each camera pans its own way (px a frame, x and y)."""
    return (2.6 - 1.7 * camera, -1.3 + 0.9 * camera)


def make_clips(folder: Path, size: tuple[int, int], cameras: int, seconds: float, fps: float = FPS) -> list[Path]:
    """`cameras` MJPEG videos cam0.avi ... of the synthetic scene at `size`, `seconds` long at `fps`, each camera
    its own scene (seed) and motion; reused when already there with the same frame count."""
    import cv2

    from smoothdino.edge.sources.synthetic import SyntheticScene

    h, w = size
    frames = max(2, int(round(seconds * fps)))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in range(cameras):
        path = folder / f"cam{c}.avi"
        paths.append(path)
        if path.is_file():
            capture = cv2.VideoCapture(str(path))
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            capture.release()
            if count == frames:
                continue
        scene = SyntheticScene(h, w, frames=SWEEP, seed=11 + c, velocity=camera_motion(c))
        canvases = scene.canvases()
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
        for k in range(frames):
            j = k % (2 * SWEEP)
            rgb = scene.frame(j if j < SWEEP else 2 * SWEEP - 1 - j, canvases)[0]
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        writer.release()
    return paths


def export_for(size: tuple[int, int], batch: int, cache: Path, precision: str = "fp32") -> Path:
    """A random-weights vits14 + temporal export at `size` (with a batch axis 1..`batch` when batch > 1), made
    once in `cache` and reused while its fingerprint holds (export.exporter.ensure_export)."""
    from smoothdino.export import ExportSpec
    from smoothdino.export.exporter import ensure_export

    spec = ExportSpec(arch="vits14", adapter="temporal", size=size, precision=precision, backend="onnx",
                      random_weights=True, calibration_frames=2, batch=batch)
    folder = cache / f"vits14-temporal-{precision}-{size[0]}x{size[1]}-b{batch}"
    ensure_export(spec, folder)
    return folder


# -- memory -------------------------------------------------------------------------------------------------------

def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pss_kib(pid: int) -> int | None:
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemorySampler:
    """Polls the processes' VmHWM (every `period` s; the last value read before each exits is its peak RSS) and
    the sum of their PSS (every `pss_period` s; the peak of the sum)."""

    def __init__(self, pids: list[int], period: float = 0.05, pss_period: float = 0.5):
        self.pids, self.period, self.pss_period = list(pids), period, pss_period
        self.hwm_kib = dict.fromkeys(self.pids, 0)
        self.peak_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="memory-sampler", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        next_pss = 0.0
        while not self._stop.is_set():
            for pid in self.pids:
                hwm = _status_kib(pid, "VmHWM")
                if hwm:
                    self.hwm_kib[pid] = max(self.hwm_kib[pid], hwm)
            now = time.monotonic()
            if now >= next_pss:
                next_pss = now + self.pss_period
                self.peak_pss_kib = max(self.peak_pss_kib, sum(_pss_kib(pid) or 0 for pid in self.pids))
            self._stop.wait(self.period)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_mib": round(sum(self.hwm_kib.values()) / 1024, 1),
                "per_process_rss_mib": [round(v / 1024, 1) for v in self.hwm_kib.values()],
                "peak_pss_mib": round(self.peak_pss_kib / 1024, 1)}


# -- one run -------------------------------------------------------------------------------------------------------

def smoothdino_command() -> list[str]:
    """The CLI beside this Python (the venv's entry point), else `python -c` the typer app."""
    script = Path(sys.executable).with_name("smoothdino")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from smoothdino.cli import app; app()"]


def live_command(engines: Path, clips: list[Path], out: Path, batch: str | None = None,
                 threads: int | None = None) -> list[str]:
    command = [*smoothdino_command(), "live", "--engines", str(engines), "--headless", "--out", str(out)]
    for clip in clips:
        command += ["--source", str(clip)]
    if batch is not None and len(clips) > 1:
        command += ["--batch", str(batch)]
    if threads:
        command += ["--threads", str(threads)]
    return command


def run_live(engines: Path, clips: list[Path], out: Path, separate: bool, batch: str | None = None,
             threads: int | None = None, timeout: float = 600.0, fps: float = FPS) -> dict:
    """Run the cameras in one `live` (separate=False) or one `live` each (started together); wait for them to
    end (the clips end); return the run's figures (see the module docstring) with each camera's."""
    out.mkdir(parents=True, exist_ok=True)
    if separate:
        commands = [(live_command(engines, [clip], out / clip.stem, None, threads), out / f"{clip.stem}.log")
                    for clip in clips]
    else:  # one camera's `live` writes into --out itself, several cameras' into --out/<camera>
        folder = out / clips[0].stem if len(clips) == 1 else out
        commands = [(live_command(engines, clips, folder, batch, threads), out / "live.log")]
    launched = time.time()
    processes = []
    for command, log in commands:
        with open(log, "wb") as handle:
            processes.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
    sampler = MemorySampler([p.pid for p in processes])
    try:
        deadline = time.monotonic() + timeout
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
            process.wait()
        raise RuntimeError(f"live did not end within {timeout:g} s; see the logs in {out}") from None
    finally:
        memory = sampler.stop()
    wall = time.time() - launched
    failed = [(p.returncode, log) for p, (_, log) in zip(processes, commands) if p.returncode != 0]
    if failed:
        code, log = failed[0]
        raise RuntimeError(f"live exited with {code}: {log.read_text(errors='replace')[-2000:]}")
    cameras = {}
    for clip in clips:
        folder = out / clip.stem
        cameras[clip.stem] = camera_figures(folder, launched, fps)
    network_file = out / "network.json"
    network = json.loads(network_file.read_text()) if not separate and network_file.is_file() else None
    run = {"processes": len(processes), "separate": separate, "batch": batch if not separate else None,
           "cameras": cameras, "network": network, "wall_s": round(wall, 2), **memory}
    return {**run, **run_totals(cameras)}


def run_totals(cameras: dict[str, dict]) -> dict:
    """A run's figures from its cameras': keyframes in all, steady passes a second, the keyframe intervals' mean
    and the worst camera's against it, the slowest output and the worst drops. A camera with fewer than two
    keyframes has no interval (and is the worst): the run then has no steady rate and no interval ratio."""
    rates = [c["keyframe_rate"] for c in cameras.values()]
    means = [c["interval_mean_ms"] for c in cameras.values()]
    means = means if None not in means else []
    return {"passes_seen": sum(c["passes_seen"] for c in cameras.values()),
            "total_passes_per_s": round(sum(rates), 3) if None not in rates else None,
            "interval_mean_ms": round(statistics.fmean(means), 1) if means else None,
            "worst_interval_ratio": round(max(means) / statistics.fmean(means), 3) if means else None,
            "worst_interval_p95_ms": max((c["interval_p95_ms"] for c in cameras.values()
                                          if c["interval_p95_ms"] is not None), default=None),
            "min_output_fps": min((c["output_fps"] for c in cameras.values() if c["output_fps"] is not None),
                                  default=None),
            "max_drop_pct": max(c["drop_pct"] for c in cameras.values()),
            "first_depth_s": max((c["first_depth_s"] for c in cameras.values() if c["first_depth_s"] is not None),
                                 default=None)}


def camera_rows(folder: Path) -> list[dict]:
    """A camera's metrics rows (none when no frame got depth: a camera whose first keyframe never came)."""
    if not (folder / "metrics.csv").is_file():
        return []
    with open(folder / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def camera_figures(folder: Path, launched: float | None = None, fps: float = FPS) -> dict:
    """One camera's figures from what its run wrote in `folder`: metrics.json, metrics.csv and the depth PNGs'
    write times (see the module docstring)."""
    run = json.loads((folder / "metrics.json").read_text())["run"]
    rows = camera_rows(folder)
    written = [(folder / "depth" / f"{row['frame']}.png").stat().st_mtime for row in rows]
    keys = [int(row["frame"]) - int(float(row["age_frames"])) for row in rows]
    arrivals = [t for i, (t, key) in enumerate(zip(written, keys)) if i == 0 or key != keys[i - 1]]
    intervals = np.diff(arrivals) * 1000.0
    read = len(rows) + int(run.get("waiting_frames") or 0)
    dropped = int(run.get("dropped_frames") or 0)
    span = written[-1] - written[0] if len(written) > 1 else 0.0
    key_span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return {"frames_written": len(rows), "frames_read": read, "waiting_frames": int(run.get("waiting_frames") or 0),
            "dropped": dropped, "drop_pct": round(100.0 * dropped / max(read + dropped, 1), 2),
            "output_fps": round((len(rows) - 1) / span, 2) if span > 0 else None, "camera_fps": fps,
            "passes_seen": len(arrivals),
            "keyframe_rate": round((len(arrivals) - 1) / key_span, 3) if key_span > 0 else None,
            "interval_mean_ms": round(float(intervals.mean()), 1) if intervals.size else None,
            "interval_p95_ms": round(float(np.percentile(intervals, 95)), 1) if intervals.size else None,
            "interval_max_ms": round(float(intervals.max()), 1) if intervals.size else None,
            "first_depth_s": round(written[0] - launched, 2) if written and launched else None}


# -- the whole benchmark ---------------------------------------------------------------------------------------------

def plan(cameras: list[int], batched: bool) -> list[tuple[int, bool, str | None]]:
    """(cameras, separate, batch) of each run: one camera once (one process is then a separate process); more:
    one process batch off, one process batched (when the export has a batch axis), separate processes."""
    runs = []
    for n in cameras:
        if n == 1:
            runs.append((1, False, None))
            continue
        runs.append((n, False, "off"))
        if batched:
            runs.append((n, False, str(n)))
        runs.append((n, True, None))
    return runs


def _label(run: dict) -> tuple[str, str]:
    if run["processes"] == 1 and len(run["cameras"]) == 1:
        return "1 (= separate)", "-"
    if run["separate"]:
        return f"{run['processes']} separate", "-"
    return "1", {"off": "off", None: "-"}.get(run["batch"], run["batch"])


def batch_note(engines: Path, cameras: int) -> str:
    """What `--batch auto` would take for `cameras` cameras on this export, and the figure it decides from."""
    from smoothdino.edge.batching import batch_decision
    from smoothdino.edge.engines.manifest import Manifest

    manifest = Manifest.load(engines)
    n, why = batch_decision(manifest, cameras, "onnxruntime", "auto")
    timing = manifest.batch_timing or {}
    per = ", ".join(f"{b} a pass {ms:.0f} ms a frame" for b, ms in (timing.get("per_frame_ms") or {}).items())
    return f"`--batch auto` with {cameras} cameras takes {n} a pass ({why})" + (f"; export measured {per}" if per else "")


def goal_rows(results: dict) -> list[list]:
    """Each goal of issue 39 against the largest camera count measured at each size."""
    rows = []
    for key, runs in results.items():
        single = next((r for r in runs if len(r["cameras"]) == 1), None)
        top = max(len(r["cameras"]) for r in runs)
        one = next((r for r in runs if len(r["cameras"]) == top and not r["separate"] and r["batch"] in ("off", None)),
                   None)
        sep = next((r for r in runs if len(r["cameras"]) == top and r["separate"]), None)
        batched = [r for r in runs if len(r["cameras"]) == top and not r["separate"] and r["batch"] not in ("off", None)]
        if top < 2 or one is None:
            continue
        if single is not None:
            ratio = one["peak_rss_mib"] / single["peak_rss_mib"]
            sep_ratio = f", separate x{sep['peak_rss_mib'] / single['peak_rss_mib']:.2f}" if sep else ""
            rows.append([key, f"{top} cameras, one process: RSS <= {GOAL_RSS}x one camera",
                         f"x{ratio:.2f} ({one['peak_rss_mib']:.0f} vs {single['peak_rss_mib']:.0f} MiB{sep_ratio})",
                         "met" if ratio <= GOAL_RSS else "missed"])
        if sep is not None:
            for run in [one, *batched]:
                name = "batch off" if run is one else f"batch {run['batch']}"
                mine, theirs = run["total_passes_per_s"], sep["total_passes_per_s"]
                steady = f"; steady {mine} vs {theirs} passes/s" if mine is not None and theirs is not None else ""
                rows.append([key, f"network keyframes in all >= {top} separate processes ({name})",
                             f"{run['passes_seen']} vs {sep['passes_seen']} keyframes in the clip{steady}",
                             "met" if run["passes_seen"] >= sep["passes_seen"] else "missed"])
        fps_ok = one["min_output_fps"] is not None and one["min_output_fps"] >= GOAL_RATE * FPS
        drops_ok = one["max_drop_pct"] < GOAL_DROPS
        rows.append([key, f"every camera at its {FPS:g} FPS with < {GOAL_DROPS:g} % drops (one process)",
                     f"slowest {one['min_output_fps']} FPS, worst drops {one['max_drop_pct']} %",
                     "met" if fps_ok and drops_ok else "missed"])
        ratio = one["worst_interval_ratio"]
        rows.append([key, f"worst camera's keyframe interval <= {GOAL_INTERVAL}x the mean (one process)",
                     (f"x{ratio} (worst p95 {one['worst_interval_p95_ms']} ms, mean {one['interval_mean_ms']} ms); "
                      if ratio is not None else "a camera had fewer than two keyframes; ")
                     + "keyframes per camera " + "/".join(str(c["passes_seen"]) for c in one["cameras"].values()),
                     "not measured" if ratio is None else "met" if ratio <= GOAL_INTERVAL else "missed"])
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="224x294,480x640", help="HEIGHTxWIDTH, comma-separated")
    ap.add_argument("--cameras", default="1,2,4", help="camera counts, comma-separated")
    ap.add_argument("--max-cameras", default=None,
                    help="per size, the most cameras to run, e.g. 480x640=2 (a time budget on a small machine)")
    ap.add_argument("--seconds", default="10",
                    help="each clip's length (30 FPS): one for every size, or per size, e.g. 224x294=12,480x640=30")
    ap.add_argument("--batch", choices=("on", "off"), default="on",
                    help="on: also one process with --batch <cameras> on an export with a batch axis")
    ap.add_argument("--threads", type=int, default=None, help="--threads of every live (default: the run-time's)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="export folders and clips (made once, reused while current)")
    ap.add_argument("--work", type=Path, default=None, help="the runs' folders (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="write every figure (each camera's too) here")
    ap.add_argument("--render", type=Path, metavar="FIGURES_JSON",
                    help="measure nothing: write the record (--record) from the figures.json of an earlier run")
    add_record_option(ap, "multi_camera")
    args = ap.parse_args(argv)
    if args.render is not None:
        figures = json.loads(args.render.read_text())
        if args.record:
            write_figures_record(figures, args.record, figures["command"])
        return figures
    load_before = os.getloadavg()
    started = time.monotonic()

    from smoothdino.core.paths import smoothdino_home

    cache = args.cache or smoothdino_home() / "benchmarks" / "multi_camera"
    work = args.work or Path(tempfile.mkdtemp(prefix="multi_camera-"))
    print(f"runs in {work}; exports and clips in {cache}", flush=True)
    counts = sorted({int(c) for c in args.cameras.split(",")})
    limits = dict(item.split("=") for item in args.max_cameras.split(",")) if args.max_cameras else {}
    lengths = {k: float(v) for k, v in (item.split("=") for item in args.seconds.split(","))} \
        if "=" in args.seconds else {}
    results: dict[str, list[dict]] = {}
    clip_seconds: dict[str, float] = {}
    notes_batch: list[str] = []
    for size in _sizes(args.sizes):
        key = f"{size[0]}x{size[1]}"
        here = [n for n in counts if n <= int(limits.get(key, max(counts)))]
        top = max(here)
        static = export_for(size, 1, cache)
        batched = export_for(size, top, cache) if args.batch == "on" and top > 1 else None
        if batched is not None:
            notes_batch.append(f"{key}: " + batch_note(batched, top))
        seconds = clip_seconds[key] = lengths.get(key, 10.0) if lengths else float(args.seconds)
        clips = make_clips(cache / "clips" / key, size, top, seconds)
        results[key] = []
        for n, separate, batch in plan(here, batched is not None):
            engines = batched if batch not in (None, "off") else static
            name = f"{n}cam-" + ("separate" if separate else f"one-batch-{batch or 'none'}")
            run = run_live(engines, clips[:n], work / key / name, separate, batch, args.threads)
            run["size"], run["seconds"] = key, seconds
            results[key].append(run)
            processes, batch_cell = _label(run)
            print(f"{key} {n} cameras, {processes} process(es), batch {batch_cell}: RSS {run['peak_rss_mib']:.0f} MiB "
                  f"(PSS {run['peak_pss_mib']:.0f}), {run['passes_seen']} keyframes in the clip "
                  f"({run['total_passes_per_s']} a second steady), keyframe interval mean "
                  f"{run['interval_mean_ms']} ms (worst x{run['worst_interval_ratio']}, p95 "
                  f"{run['worst_interval_p95_ms']} ms), output >= {run['min_output_fps']} FPS, drops <= "
                  f"{run['max_drop_pct']} %, first depth {run['first_depth_s']} s", flush=True)
    figures = {"results": results, "load_average_before": list(load_before),
               "load_average_after": list(os.getloadavg()), "seconds": clip_seconds, "fps": FPS,
               "wall_s": round(time.monotonic() - started, 1), "batch_notes": notes_batch, "work": str(work),
               "command": command_line(__spec__.name, argv), "date": datetime.date.today().isoformat()}
    figures["goals"] = goal_rows(results)
    print("\ngoals (issue 39):")
    for row in figures["goals"]:
        print("  " + " | ".join(str(v) for v in row))
    (work / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")  # every camera's figures, beside its files
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    if args.record:
        write_figures_record(figures, args.record, figures["command"])
    return figures


def table_row(run: dict) -> list:
    processes, batch_cell = _label(run)
    return [run["size"], len(run["cameras"]), processes, batch_cell, run["peak_rss_mib"], run["peak_pss_mib"],
            run["passes_seen"], run["total_passes_per_s"], run["interval_mean_ms"], run["worst_interval_ratio"],
            run["worst_interval_p95_ms"], run["min_output_fps"], run["max_drop_pct"], run["first_depth_s"]]


def write_figures_record(figures: dict, folder: Path, command: str) -> Path:
    """benchmarks/results/multi_camera.json from a run's figures (main's, or the figures.json it wrote, `--render`);
    each run's totals are computed again from its cameras' figures (run_totals), so the record follows this code."""
    results = {key: [{**run, **run_totals(run["cameras"])} for run in runs] for key, runs in figures["results"].items()}
    rows = [table_row(run) for runs in results.values() for run in runs]
    cpus = os.cpu_count() or 1
    notes = [
        "Each camera an MJPEG clip of the synthetic scene (its own seed and pan; "
        + ", ".join(f"{v:g} s at {k}" for k, v in figures["seconds"].items())
        + f") replayed at {FPS:g} FPS (`live` paces a video file as a camera); vits14 + temporal adapter, fp32 "
        "graphs, ONNX Runtime on the CPU, the run-time's defaults (async, shift carry, ONNX Runtime threads = "
        "physical cores per process); every output frame is also written (`--out`: a 16-bit depth PNG and a metrics "
        "row), a cost the network shares the cores with.",
        "RSS: the sum of each process's peak resident memory (VmHWM); PSS: the peak of the processes' summed "
        "proportional memory (shared libraries counted once). Keyframes: network results that reached an output, "
        "all cameras, over the whole clip (every arrangement plays the same clips, so they compare; a batched pass "
        "counts once for each camera it served); passes/s: the sum of the cameras' keyframe rates, steady state "
        "(- where a camera had fewer than two keyframes). Keyframe interval: seconds between the output frames where "
        "a camera's consecutive keyframes first arrive (frame - age_frames changes; the depth PNG's write time), "
        "mean over cameras; worst/mean: the worst camera's mean interval over the cameras' mean; p95: the worst "
        "camera's 95th percentile. Output FPS: the slowest camera's frames written a second; drops: the worst "
        "camera's frames overwritten by the camera thread / frames delivered. First depth: seconds from launch to "
        "the slowest camera's first depth (model loading included). One camera: one process is a separate process, "
        "run once.",
        load_note(figures["load_average_before"]),
        f"This machine has {cpus} CPU cores, shared with other work: separate processes compete for the same cores "
        "(each ONNX Runtime session sized for all of them), and one process's one network uses them all, so neither "
        "arrangement gives a camera more than the cores give. A GPU (one network thread, several engines' "
        "contexts) is where the memory and contention figures differ most: that figure waits for a GPU.",
        *figures["batch_notes"],
        "Batching: one pass over several cameras' frames (`--batch N`, an export with `--batch N`); `auto` takes a "
        "batch only where the export measured it >= 10 % faster a frame on this machine (the figures above: two "
        "passes each, timed as the export was made, on the same busy machine; the batched runs' own keyframes are "
        "the better guide); the TensorRT figure (profile 1..N) waits for a GPU.",
    ]
    record = Record("multi_camera", "Several cameras in one `live` (one network) against one process per camera: "
                    "memory, network passes, keyframe intervals, output rate and drops (this CPU).",
                    [Table("Runs", ["size", "cameras", "processes", "batch", "peak RSS MiB", "peak PSS MiB",
                                    "keyframes", "passes/s", "keyframe interval ms", "worst/mean", "worst p95 ms",
                                    "slowest output FPS", "worst drops %", "first depth s"], rows),
                     Table("Goals (issue 39)", ["size", "goal", "measured", "verdict"], goal_rows(results))],
                    notes=notes, random_weights=True, date=figures.get("date", ""),
                    load_average=[round(v, 2) for v in figures["load_average_after"]])  # as the run ended
    return write_record(record, folder, command)


if __name__ == "__main__":
    main()
