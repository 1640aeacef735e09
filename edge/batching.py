"""Batching several cameras' frames into one network pass, only where it is measured to pay.

An export with `--batch N` has graphs (and TensorRT engines, one optimisation profile 1..N) that take 1..N frames a
pass; `FramePipeline.step_batch(frames, states)` runs them, each camera with its own TemporalState. Whether a
batch is cheaper per frame depends on the back-end, the frame size, the machine and what else it runs (a GPU is
expected to gain most; this project's 2-core CPU figures are in benchmarks/results/batching.json, made by
benchmarks/batching.py). So nothing batches by assumption:

- `measure_batching(manifest, backend)` times, on this machine, passes of 1, 2 and N frames of the export
  (synthetic frames, each camera its own state, rounds interleaving the sizes) and returns {"backend", "device",
  "per_frame_ms": {"1": ms, ...}} and, for ONNX Runtime on the CPU, "cpu_per_frame_ms" (this process's CPU time).
  `export --batch N` records it in manifest.batch_timing for the back-end it exported for (a TensorRT for RTX
  build made without its GPU cannot be timed: no figure).
- `choose_batch(manifest, cameras, backend, setting)` -> frames a pass for the multi-camera worker:
    setting 1 / "off": 1;  setting n: n (at most the cameras; more than the export's N is refused in one line);
    "auto": the batch b <= min(cameras, N) that saves most per frame against one frame a pass, taken only when it
    saves at least MIN_GAIN, measured for this back-end on this device; no such figure: 1. The saving is the
    clock's and, for ONNX Runtime on the CPU, also the CPU time's (medians): the smaller of the two must
    reach MIN_GAIN, so a clock that gained only because other work on the machine paused does not count.
  A batch also makes each camera wait for the whole pass, which is why a gain under MIN_GAIN is not worth it.
  `batch_decision` gives the same choice with its reason, for the worker's log line.

Torch-free (the run-time's rule): numpy, the engines and the pipeline only.
"""

from __future__ import annotations

import time

import numpy as np

from smoothdino.core.errors import UserError

MIN_GAIN = 0.10  # a batch must save at least 10 % per frame over one frame a pass
SETTINGS = ("auto", "off")


def _device(backend: str) -> str:
    """What a figure was measured on (this machine's GPU, else its CPU): a figure from elsewhere is not used."""
    from .machine.environment import device_description

    return device_description()


def parse_setting(setting: str | int | None) -> str | int:
    """auto | off | a number of frames a pass (1 = off)."""
    if setting is None:
        return "auto"
    if isinstance(setting, int) or str(setting).strip().isdigit():
        n = int(setting)
        if n < 1:
            raise UserError(f"--batch {setting}: a pass takes at least one frame (1 = no batching; or auto)")
        return n
    word = str(setting).strip().lower()
    if word not in SETTINGS:
        raise UserError(f"--batch {setting}: choose auto, off or a number of frames a pass")
    return word


def batch_decision(manifest, cameras: int, backend: str, setting: str | int | None = "auto",
                   measured: dict | None = None) -> tuple[int, str]:
    """(frames a pass, why). `measured` overrides the manifest's figure (a {"backend", "per_frame_ms"} dict)."""
    setting = parse_setting(setting)
    cameras = max(1, int(cameras))
    top = manifest.max_batch
    if setting == "off" or setting == 1:
        return 1, "batching off"
    if isinstance(setting, int):
        manifest.check_batch(setting, "--batch")
        n = min(setting, cameras)
        return n, f"--batch {setting}" + (f" (only {cameras} cameras)" if n < setting else "")
    if top < 2:
        return 1, "the export takes one frame a pass (export --batch N for more)"
    if cameras < 2:
        return 1, "one camera"
    figure = measured if measured is not None else manifest.batch_timing
    if not figure or figure.get("backend") != backend:
        return 1, f"no batch figure measured for {backend} (one frame a pass until one says a batch pays)"
    if measured is None and figure.get("device") and figure["device"] != _device(backend):
        return 1, f"the batch figure was measured on {figure['device']}, not here"
    per_frame = {int(b): float(ms) for b, ms in (figure.get("per_frame_ms") or {}).items()}
    if 1 not in per_frame:
        return 1, "no one-frame figure to compare with"
    cpu = {int(b): float(ms) for b, ms in (figure.get("cpu_per_frame_ms") or {}).items()}
    options = {b: ms for b, ms in per_frame.items() if 2 <= b <= min(cameras, top)}
    if not options:
        return 1, f"no figure for a batch of 2..{min(cameras, top)}"

    def gain(b: int) -> float:  # the smaller of the clock's and (ONNX Runtime on the CPU) the CPU time's saving
        saved = 1 - per_frame[b] / per_frame[1]
        if 1 in cpu and b in cpu:
            saved = min(saved, 1 - cpu[b] / cpu[1])
        return saved

    best = max(options, key=gain)
    where = f"{options[best]:.1f} vs {per_frame[1]:.1f} ms a frame on {backend}" + (
        f", CPU {cpu[best]:.1f} vs {cpu[1]:.1f} ms" if 1 in cpu and best in cpu else "")
    if gain(best) >= MIN_GAIN:
        return best, f"batch {best} measured {gain(best):.0%} cheaper a frame ({where})"
    return 1, f"batch {best} measured {-gain(best):.0%} dearer a frame ({where})" if gain(best) < 0 else \
        f"batch {best} saves only {gain(best):.0%} a frame ({where}; at least {MIN_GAIN:.0%} wanted)"


def choose_batch(manifest, cameras: int, backend: str, setting: str | int | None = "auto",
                 measured: dict | None = None) -> int:
    """Frames a network pass for `cameras` cameras on `backend` (see the module docstring): the multi-camera
    worker serves up to this many cameras per pass with `pipeline.step_batch`, one state each."""
    return batch_decision(manifest, cameras, backend, setting, measured)[0]


def measure_batching(manifest, backend: str = "onnxruntime", batches: list[int] | None = None, rounds: int = 3,
                     threads: int | None = None) -> dict:
    """Per-frame milliseconds of passes of 1, 2 and N frames of this export on this machine (median of `rounds`
    after a warm-up, the rounds interleaving the sizes; each camera a synthetic scene of its own, with its own
    state), as manifest.batch_timing."""
    from .pipeline import DepthPipeline
    from .sources.synthetic import SyntheticScene

    top = manifest.max_batch
    batches = sorted({b for b in (batches or [1, 2, top]) if 1 <= b <= top})
    h, w = manifest.frame_size
    scenes = [SyntheticScene(h, w, frames=rounds + 1, seed=11 + c, velocity=(2.6 - 1.7 * c, -1.3 + 0.9 * c))
              for c in range(top)]
    frames = [[s.frame(k)[0] for k in range(rounds + 1)] for s in scenes]
    wall: dict[int, list[float]] = {b: [] for b in batches}
    cpu: dict[int, list[float]] = {b: [] for b in batches}
    with DepthPipeline(manifest, backend=backend, threads=threads) as pipeline:
        ran_on = pipeline.backend
        on_cpu = ran_on == "onnxruntime" and list(getattr(pipeline.engines["encoder"], "providers", None) or
                                                  ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
        states = {b: [pipeline.new_state() for _ in range(b)] for b in batches}
        for k in range(rounds + 1):  # rounds interleave the batch sizes: other work falls on each alike
            for b in batches:
                start, process = time.perf_counter(), time.process_time()
                if b == 1:
                    pipeline.step(frames[0][k], state=states[b][0])
                else:
                    pipeline.step_batch([frames[c][k] for c in range(b)], states[b])
                if k:  # the first round is the warm-up
                    wall[b].append((time.perf_counter() - start) / b)
                    cpu[b].append((time.process_time() - process) / b)
    figure = {"backend": ran_on, "device": _device(ran_on),
              "per_frame_ms": {str(b): round(1000 * float(np.median(v)), 2) for b, v in wall.items()},
              "measured_on": f"median of {rounds} passes after a warm-up, rounds interleaving the batch sizes, "
                             "synthetic frames"}
    if on_cpu:  # the CPU time the frames took: what a saturated CPU pays, less moved by other work than the clock
        figure["cpu_per_frame_ms"] = {str(b): round(1000 * float(np.median(v)), 2) for b, v in cpu.items()}
    return figure


def export_timing(manifest, backend: str, say=print) -> dict | None:
    """`export --batch N`: the figure for manifest.batch_timing, measured on the back-end the export is for when
    it can run here (a TensorRT for RTX build without its GPU cannot: None, and auto stays at one frame a pass)."""
    if manifest.max_batch < 2:
        return None
    if backend != "onnxruntime":
        from .machine.environment import tensorrt_usable

        usable, why = tensorrt_usable(backend)
        if not usable:
            say(f"batch: not timed ({backend} cannot run here: {why}); choose_batch auto keeps one frame a pass")
            return None
    say(f"batch: timing passes of 1, 2 and {manifest.max_batch} frames on {backend} ...")
    figure = measure_batching(manifest, backend)
    say("batch: " + ", ".join(f"{b} a pass {ms:.1f} ms a frame" for b, ms in figure["per_frame_ms"].items()))
    return figure
