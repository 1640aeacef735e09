"""Cost of one adapter training step with and without the encoder feature cache.

    python -m smoothdino.benchmarks.train_step_cost --data ../shared/data/nyu2_sample --size 240x320 --batch 4

Runs two short trainings on the same pairs: without the cache (the encoder runs for both frames of every
pair at every step) and with it (a first pass fills the cache, the timed pass reads float16 levels from
disk). Reports the median seconds per step of each. Results: <out>/train_step_cost.json and .md.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from smoothdino.core.images import parse_size
from smoothdino.core.files import atomic_write_text
from smoothdino.edge.sinks import json_dumps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, action="append", required=True)
    p.add_argument("--size", default="480x640")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--arch", default="vits14")
    p.add_argument("--weights-dir", type=Path)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    a = p.parse_args(argv)
    from smoothdino.models.train import TrainConfig, train

    size = parse_size(a.size)
    frames = a.batch * a.steps // 2 + 2  # enough pairs for `steps` batches from each of two training scenes
    work = a.out / "train-step-cost"
    shutil.rmtree(work, ignore_errors=True)
    common = dict(data=a.data, arch=a.arch, size=size, batch=a.batch, epochs=1, lr=1e-5, frames_per_scene=frames,
                  max_steps=a.steps, weights_dir=a.weights_dir, random_weights=a.random_weights,
                  checkpoint_every=10**9)
    no_cache = train(TrainConfig(out=work / "no-cache", cache=False, **common))
    train(TrainConfig(out=work / "fill", cache_dir=work / "cache", **common))  # fills the cache
    cached = train(TrainConfig(out=work / "cached", cache_dir=work / "cache", **common))
    result = {"arch": a.arch, "size": a.size, "batch": a.batch, "steps": a.steps,
              "seconds_per_step_without_cache": no_cache.seconds_per_step,
              "seconds_per_step_with_cache": cached.seconds_per_step,
              "speedup": no_cache.seconds_per_step / max(cached.seconds_per_step, 1e-9),
              "cache_hits_timed_run": cached.cache_hits, "cache_misses_timed_run": cached.cache_misses}
    md = (f"# training step cost ({a.arch}, {a.size}, batch {a.batch}, median of {a.steps} steps)\n\n"
          f"| | s / step |\n|---|---|\n| without feature cache | {result['seconds_per_step_without_cache']:.2f} |\n"
          f"| with feature cache | {result['seconds_per_step_with_cache']:.2f} |\n| speed-up | x{result['speedup']:.2f} |\n")
    atomic_write_text(a.out / "train_step_cost.json", json_dumps(result))
    atomic_write_text(a.out / "train_step_cost.md", md)
    print(md)


if __name__ == "__main__":
    main()
