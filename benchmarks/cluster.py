"""What distributing `process` over Ray costs: N Ray workers x 1 thread against 1 process x N threads, on the same
frames, on this machine (`process --ray` on a local instance).

    python -m smoothdino.benchmarks.cluster --size 112x154 --frames 40 --workers 2

- Frames: a synthetic moving sequence at the export's size (no resizing), written before any clock starts.
- Export: made here (vits14 + temporal, FP16 graphs, random weights) unless --engines DIR is given; ONNX Runtime.
- Baseline: edge.commands.process on one pipeline with --workers threads. Cluster: edge.commands.cluster on a local
  Ray instance with --workers CPUs, one worker a CPU, chunks of --chunk frames (default: frames / (2 x workers), so
  every worker gets the same share; `process --ray` picks chunks itself, see edge.commands.chunks). Both without
  video; the outputs must be byte-identical (checked).
- Throughput: frames over the time from the first frame handed out to the last sequence's metrics written. The
  one-off costs beside it: opening the pipeline (baseline), starting Ray and the workers opening the export
  (cluster), reported apart and in an end-to-end ratio. The two alternate --repeats times (other load on the
  machine hits both alike); the medians are reported.
- Per-chunk overhead (medians over the chunks): scheduling = the driver's submit-to-result time minus the worker's
  own time for the chunk; priming = the worker's setup and replay of the frames before the chunk, until its first
  frame; the extra encoder passes that prime the pipeline, at the median encoder time; the export opened once per
  worker, shared by its chunks.
Results: <out>/cluster.json and cluster.md; --record writes benchmarks/results/cluster.json for the docs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from smoothdino.core.files import atomic_write_text
from smoothdino.core.images import parse_size
from smoothdino.edge.commands import cluster
from smoothdino.edge.commands.process import ProcessOptions, process
from smoothdino.edge.keyframes import parse_keyframes
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence

from .record import Record, Table, add_record_option, command_line, load_note, write_record
from .report import markdown_table


def _export(size: tuple[int, int], folder: Path) -> Path:
    from smoothdino.export import ExportSpec, export_model

    if not (folder / "manifest.json").is_file():
        export_model(ExportSpec(arch="vits14", adapter="temporal", size=size, precision="fp16", backend="onnx",
                                random_weights=True, calibration_frames=2), folder)
    return folder


def _same(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.png"))
    return bool(names) and names == sorted(p.name for p in b.glob("*.png")) and \
        all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="112x154")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (1 thread each) = baseline threads")
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--keyframes", default="every")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engines", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("out/bench_cluster"))
    add_record_option(parser, "cluster")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    import ray

    size = parse_size(args.size)
    policy = parse_keyframes(args.keyframes)
    args.out.mkdir(parents=True, exist_ok=True)
    engines = args.engines or _export(size, args.out / f"engines-{size[0]}x{size[1]}")
    work = Path(tempfile.mkdtemp(prefix="cluster-", dir=args.out))
    sequence = write_sequence(work / "moving", SyntheticScene(*size, frames=args.frames, velocity=(2.0, 1.0)))
    chunk = args.chunk or max(1, math.ceil(args.frames / (2 * args.workers)))

    begin = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    ray_start = time.perf_counter() - begin
    median = lambda values: float(np.median(values)) if values else 0.0
    ones, manys, opens, results, identical = [], [], [], [], True
    try:
        for repeat in range(args.repeats):
            # baseline: one process, `workers` threads
            begin = time.perf_counter()
            pipeline = DepthPipeline.from_folder(engines, backend="onnxruntime", threads=args.workers)
            opens.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            process(pipeline, ProcessOptions([sequence], work / f"one{repeat}", video=False, keyframes=policy,
                                             fusion="off"))  # off: the sequence is cut into chunks
            ones.append(time.perf_counter() - begin)
            # the cluster: `workers` Ray workers, one thread (one Ray CPU) each
            options = ProcessOptions([sequence], work / f"many{repeat}", video=False, keyframes=policy, fusion="off")
            results.append(cluster.run(options, cluster.ClusterOptions(engines, "auto", "onnxruntime", 1, chunk),
                                       show=False))
            manys.append(results[-1].wall_seconds)
            identical &= _same(work / f"one{repeat}" / "moving" / "depth", work / f"many{repeat}" / "moving" / "depth")
    finally:
        ray.shutdown()
    opened, one_seconds = median(opens), median(ones)
    result = results[int(np.argsort(manys)[len(manys) // 2])]  # the median cluster run
    rows = json.loads((work / "many0" / "moving" / "metrics.json").read_text())["frames"]
    encoder_ms = float(np.median([r["encoder_ms"] for r in rows if r.get("encoder_ms")]))
    chunks = [c for r in results for c in r.chunks]
    schedule = median([c["wall_ms"] - c["run_ms"] for c in chunks])
    prime = median([c["prime_ms"] for c in chunks if c["start"] > 0])
    extra = median([c["extra_encoder_passes"] for c in chunks if c["start"] > 0])
    open_ms = median([w["open_ms"] for w in result.opened])
    per_worker = len(result.chunks) / max(1, result.workers)
    frames = args.frames
    figures = {
        "size": f"{size[0]}x{size[1]}", "frames": frames, "workers": args.workers, "chunk": chunk,
        "chunks": len(result.chunks), "keyframes": policy.label, "identical_pngs": identical,
        "repeats": args.repeats, "one_process_seconds": [round(x, 3) for x in ones],
        "ray_seconds": [round(x, 3) for x in manys],
        "one_process": {"threads": args.workers, "open_s": round(opened, 3), "seconds": round(one_seconds, 3),
                        "fps": round(frames / one_seconds, 3)},
        "ray": {"workers": result.workers, "ray_start_s": round(ray_start, 3),
                "workers_start_s": round(result.startup_seconds, 3), "seconds": round(result.wall_seconds, 3),
                "fps": round(frames / result.wall_seconds, 3)},
        "throughput_ratio": round(one_seconds / result.wall_seconds, 3),
        "end_to_end_ratio": round((opened + one_seconds) / (ray_start + result.startup_seconds
                                                            + result.wall_seconds), 3),
        "per_chunk_ms": {"scheduling": round(schedule, 1), "priming": round(prime, 1),
                         "extra_encoder_passes": extra, "encoder_ms": round(encoder_ms, 1),
                         "priming_network": round(extra * encoder_ms, 1), "open_export_per_worker": round(open_ms, 1),
                         "open_export_per_chunk": round(open_ms / per_worker, 1),
                         "total": round(schedule + prime + extra * encoder_ms + open_ms / per_worker, 1)},
        "frame_ms_one_thread": round(result.wall_seconds * result.workers / frames * 1000.0, 1),
    }
    runs = Table(
        f"`process` against `process --ray` on a local Ray instance: {frames} synthetic frames at {figures['size']}, "
        f"vits14+temporal FP16 graphs, ONNX Runtime CPU, --keyframes {policy.label}, median of {args.repeats} "
        "alternating runs",
        ["run", "frames/s", "seconds", "one-off (s)", "x one process (throughput)", "x one process (end to end)"],
        [[f"1 process x {args.workers} threads", f"{figures['one_process']['fps']:.2f}", f"{one_seconds:.2f}",
          f"{opened:.2f} (open)", "1", "1"],
         [f"{result.workers} Ray workers x 1 thread", f"{figures['ray']['fps']:.2f}", f"{result.wall_seconds:.2f}",
          f"{ray_start:.2f} (Ray) + {result.startup_seconds:.2f} (workers)", f"{figures['throughput_ratio']:.2f}",
          f"{figures['end_to_end_ratio']:.2f}"]])
    table = markdown_table(runs.columns, [row[:4] for row in runs.rows])
    c = figures["per_chunk_ms"]
    overhead = Table(
        f"What `--ray` adds per chunk, ms (medians over {len(chunks)} chunks of {chunk} frames; "
        f"{len(result.chunks)} chunks a run)",
        ["scheduling", "priming (setup + replay)", "encoder passes priming", "their network time",
         "export opened, once a worker", "its share a chunk", "total a chunk"],
        [[f"{c['scheduling']:.0f}", f"{c['priming']:.0f}", f"{c['extra_encoder_passes']:.0f}",
          f"{c['priming_network']:.0f}", f"{c['open_export_per_worker']:.0f}", f"{c['open_export_per_chunk']:.0f}",
          f"{c['total']:.0f}"]])
    text = ("\n".join(table) + f"\n\nthroughput Ray / one process: **{figures['throughput_ratio']:.2f}x** "
            f"(end to end, one-off costs included: {figures['end_to_end_ratio']:.2f}x); PNGs identical: {identical}\n\n"
            f"per chunk ({len(result.chunks)} chunks of {chunk} frames a run): scheduling {c['scheduling']:.0f} ms, "
            f"priming "
            f"{c['priming']:.0f} ms + {c['extra_encoder_passes']:.0f} encoder pass(es) ({c['priming_network']:.0f} "
            f"ms), export opened once a worker {c['open_export_per_worker']:.0f} ms ({c['open_export_per_chunk']:.0f}"
            f" ms a chunk here): **{c['total']:.0f} ms** a chunk\n")
    atomic_write_text(args.out / "cluster.json", json.dumps(figures, indent=1) + "\n")
    atomic_write_text(args.out / "cluster.md", text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    if args.record:
        write_record(Record("cluster", "What does `process --ray` cost against one process on the same frames?",
                            [runs, overhead], notes=[
                                f"Outputs byte-identical (every depth PNG of every run): {'yes' if identical else 'NO'}.",
                                f"Both on this one machine's {os.cpu_count()} CPUs: the ratio is what distributing costs, "
                                "not what more machines buy.", load_note(load_before)]),
                     args.record, command_line("smoothdino.benchmarks.cluster", argv))
    return figures


if __name__ == "__main__":
    main()
