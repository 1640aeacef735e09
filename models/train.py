"""Adapter training on NYUv2 sequences with the encoder and decoder frozen (SmoothDINOv2's recipe).

Data: scene folders in the `nyu_data` layout; samples are consecutive pairs (t-1, t) inside a scene, the
shift from phase correlation of their grey frames (a pair below `min_confidence` is a scene cut: previous :=
current, shift := 0, as at run time). Scenes are split into train and validation, never frames.
Loss: MSE to ground-truth depth in metres over valid pixels (gt > 0); `regularized` adds 0.1 x MSE to the
un-adapted prediction, as published. Defaults follow the paper: Adam, lr 1e-5, batch 10, 10 epochs.

The frozen encoder dominates the cost, so its levels are cached on disk (float16, keyed by the encoder's
weights, the frame size and the frame file) and later epochs never run it. Checkpoints are written
atomically every N steps and on Ctrl-C; `resume` continues exactly (the batch order is a function of seed
and epoch, and the optimizer state is saved). Every step goes to log.jsonl. Under torchrun each rank takes
its share of every batch list and gradients are averaged by DistributedDataParallel.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from smoothdino.core.console import console
from smoothdino.core.errors import UserError
from smoothdino.edge.motion import phase_shift, scene_cut, to_grey
from smoothdino.edge.sources import FolderSource, read_depth_png, read_image

from .adapter import load_adapter
from .decoder import load_decoder
from .preprocess import preprocess
from .vit import load_encoder
from smoothdino.core.files import atomic_path

REG_WEIGHT = 0.1  # the published regularised variant
CACHE_VERSION = "levels-v1"  # bump when preprocessing or the level layout changes
RESUME_MUST_MATCH = ("arch", "head", "adapter", "hidden", "size", "batch", "lr", "regularized", "val_scenes",
                     "frames_per_scene", "min_confidence", "random_weights", "seed", "data")


@dataclass
class TrainConfig:
    data: list[Path]
    out: Path
    arch: str = "vits14"
    head: str = "dpt"
    adapter: str = "temporal"
    hidden: int = 64
    size: tuple[int, int] = (480, 640)
    epochs: int = 10
    batch: int = 10
    lr: float = 1e-5
    regularized: bool = False
    val_scenes: list[str] = field(default_factory=list)
    frames_per_scene: int | None = None
    checkpoint_every: int = 50
    max_steps: int | None = None
    resume: bool = False
    cache: bool = True
    cache_dir: Path | None = None
    min_confidence: float = 0.1
    weights_dir: Path | None = None
    random_weights: bool = False
    seed: int = 0


@dataclass
class Pair:
    scene: str
    previous: Path  # RGB files
    current: Path
    depth: Path  # ground truth of `current`
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)


# -- data -----------------------------------------------------------------------------------------

def find_scenes(paths: list[Path]) -> list[Path]:
    """Scene folders: each given folder that holds frames, or the sub-folders of a dataset root."""
    scenes = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise UserError(f"{p}: not a folder; give NYUv2 scene folders (<i>.jpg + <i>.png) or their parent")
        if any(p.glob("*.jpg")):
            scenes.append(p)
        else:
            scenes += sorted(d for d in p.iterdir() if d.is_dir() and any(d.glob("*.jpg")))
    if not scenes:
        raise UserError(f"{', '.join(map(str, paths))}: no NYUv2 scenes (folders of <i>.jpg and <i>.png)")
    return scenes


def split_scenes(scenes: list[Path], val_names: list[str]) -> tuple[list[Path], list[Path]]:
    """By scene, never by frame. Default: the last scene (sorted) validates when there are several."""
    if val_names:
        unknown = set(val_names) - {s.name for s in scenes}
        if unknown:
            raise UserError(f"--val-scenes {', '.join(sorted(unknown))}: not among {', '.join(s.name for s in scenes)}")
        val = [s for s in scenes if s.name in val_names]
    else:
        val = scenes[-1:] if len(scenes) > 1 else []
    train = [s for s in scenes if s not in val]
    if not train:
        raise UserError("no training scenes left after the validation split; give more scenes")
    return train, val


def _grey(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    bgr = read_image(path)
    if bgr is None:
        return None
    return to_grey(cv2.cvtColor(_fit(bgr, size), cv2.COLOR_BGR2RGB))


def _fit(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def make_pairs(scene: Path, size: tuple[int, int], limit: int | None, min_confidence: float) -> list[Pair]:
    source = FolderSource(scene, limit=limit)
    frames = [(rgb, depth) for _, rgb, depth in source.frames]
    pairs, grey_prev = [], None
    for (prev_rgb, _), (rgb, depth) in zip(frames, frames[1:]):  # (t-1, t), as at run time
        grey_prev = grey_prev if grey_prev is not None else _grey(prev_rgb, size)
        grey = _grey(rgb, size)
        if grey_prev is None or grey is None or depth is None:
            grey_prev = grey
            continue  # a corrupt frame breaks the pair; a frame without depth cannot be a target
        s, cut = scene_cut(phase_shift(grey_prev, grey), min_confidence)
        prev_path = rgb if cut else prev_rgb  # scene cut: previous := current
        pairs.append(Pair(scene.name, prev_path, rgb, depth, (s.dx, s.dy, s.confidence)))
        grey_prev = grey
    return pairs


class LevelCache:
    """Encoder levels per frame, float16 .npz on disk, keyed by encoder weights + frame size + file."""

    def __init__(self, folder: Path | None, encoder, size: tuple[int, int], device: torch.device):
        self.encoder, self.size, self.device = encoder, tuple(size), device
        key = hashlib.sha1(
            f"{encoder.arch.name}|{encoder.weights_id}|{size[0]}x{size[1]}|{CACHE_VERSION}".encode()).hexdigest()[:16]
        self.folder = Path(folder) / key if folder else None
        self.hits = self.misses = 0

    def _file(self, frame: Path) -> Path:
        stat = frame.stat()
        sig = hashlib.sha1(f"{frame.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return self.folder / frame.parent.name / f"{frame.stem}-{sig}.npz"

    def rgb(self, frame: Path) -> np.ndarray:
        bgr = read_image(frame)
        if bgr is None:
            raise UserError(f"{frame}: corrupt frame in a training pair; delete it or the pair's scene")
        return cv2.cvtColor(_fit(bgr, self.size), cv2.COLOR_BGR2RGB)

    @torch.no_grad()
    def levels(self, frames: list[Path]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batched levels for these frame files: [(patch [B,C,h,w], cls [B,C])] x 4, float32 on device."""
        per_frame: list[list[np.ndarray] | None] = []
        todo = []
        for i, frame in enumerate(frames):
            path = self._file(frame) if self.folder else None
            if path is not None and path.is_file():
                with np.load(path) as data:
                    per_frame.append([data[f"t{k}"] for k in range(8)])
                self.hits += 1
            else:
                per_frame.append(None)
                todo.append(i)
        if todo:
            self.misses += len(todo)
            batch = torch.cat([preprocess(self.rgb(frames[i])) for i in todo]).to(self.device)
            levels = self.encoder(batch)
            flat = [t.float().cpu().numpy().astype(np.float16) for pair in levels for t in pair]
            for j, i in enumerate(todo):
                per_frame[i] = [t[j] for t in flat]
                if self.folder:
                    path = self._file(frames[i])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(path) as tmp:
                        np.savez(tmp, **{f"t{k}": per_frame[i][k] for k in range(8)})
        stacked = [torch.from_numpy(np.stack([f[k] for f in per_frame])).float().to(self.device) for k in range(8)]
        return [(stacked[2 * k], stacked[2 * k + 1]) for k in range(4)]


def load_depth(pairs: list[Pair], size: tuple[int, int], device) -> torch.Tensor:
    maps = []
    for p in pairs:
        depth = read_depth_png(p.depth)
        if depth is None:
            raise UserError(f"{p.depth}: unreadable depth PNG; delete the pair's frames")
        maps.append(_fit(depth, size, nearest=True))
    return torch.from_numpy(np.stack(maps))[:, None].to(device)


def masked_mse(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    valid = gt > 0
    return ((pred - gt) ** 2)[valid].sum() / valid.sum().clamp_min(1)


# -- the loop -------------------------------------------------------------------------------------

def _config_record(cfg: TrainConfig) -> dict:
    """The configuration as JSON-like values (what a checkpoint stores and a resume compares)."""
    record = {}
    for k, v in asdict(cfg).items():
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, (list, tuple)):
            v = [str(x) if isinstance(x, Path) else x for x in v]
        record[k] = v
    return record


def _atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _batches(n: int, batch: int, seed: int, epoch: int, world: int = 1) -> list[list[int]]:
    """The epoch's batches: a function of seed and epoch only, so a resume sees the same ones. With several
    ranks a tail batch smaller than the world is dropped (every rank must take part in every step)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    batches = [order[i:i + batch].tolist() for i in range(0, n, batch)]
    return [b for b in batches if len(b) >= world]


class _StopOnSigint:
    """First Ctrl-C: finish the current step, then stop and save (so a resume is exact). Second: now."""

    def __init__(self):
        import signal
        import threading

        self.requested = False
        self._signal = signal
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        console.print("stopping after this step (Ctrl-C again to stop now)")

    def restore(self):
        if self._previous is not None:
            self._signal.signal(self._signal.SIGINT, self._previous)
            self._previous = None


@dataclass
class TrainResult:
    steps: int
    epochs_done: int
    train_loss: list[float]
    val: list[dict]
    interrupted: bool
    checkpoint: Path
    seconds_per_step: float
    cache_hits: int
    cache_misses: int


def train(cfg: TrainConfig, progress: Callable[[int, int, int, float], None] | None = None) -> TrainResult:
    """Run (or resume) a training. progress(step, total_steps, epoch, loss) is called after every step."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if distributed:
        import torch.distributed as dist

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    weights_dir = None if cfg.random_weights else cfg.weights_dir
    kw = {"random_weights": cfg.random_weights, "seed": cfg.seed}
    encoder = load_encoder(cfg.arch, weights_dir, **kw).to(device).requires_grad_(False)
    decoder = load_decoder(cfg.arch, cfg.head, weights_dir, **kw).to(device).requires_grad_(False)
    adapter = load_adapter(cfg.adapter, cfg.arch, hidden=cfg.hidden).to(device).train()
    if not list(adapter.parameters()):
        raise UserError(f"--adapter {cfg.adapter}: nothing to train; choose temporal or paper")

    scenes = find_scenes(cfg.data)
    train_scenes, val_scenes = split_scenes(scenes, cfg.val_scenes)
    train_pairs = [p for s in train_scenes for p in make_pairs(s, cfg.size, cfg.frames_per_scene, cfg.min_confidence)]
    val_pairs = [p for s in val_scenes for p in make_pairs(s, cfg.size, cfg.frames_per_scene, cfg.min_confidence)]
    if not train_pairs:
        raise UserError(f"{', '.join(s.name for s in train_scenes)}: no (t-1, t) pairs with depth")
    cache = LevelCache((cfg.cache_dir or out / "cache") if cfg.cache else None, encoder, cfg.size, device)

    model = adapter
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(adapter, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=cfg.lr)
    start_epoch, start_batch, step = 0, 0, 0
    val_history: list[dict] = []
    if cfg.resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        now = _config_record(cfg)
        changed = [k for k in RESUME_MUST_MATCH if state["config"].get(k) != now.get(k)]
        if changed:
            k = changed[0]
            raise UserError(f"{ckpt_path}: saved with {k}={state['config'].get(k)!r}, now {now.get(k)!r}; "
                            "resume with the same options or use another --out")
        adapter.load_state_dict(state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, start_batch, step = state["epoch"], state["next_batch"], state["step"]
        val_history = state.get("val", [])
    elif cfg.resume and rank == 0:
        console.print(f"no checkpoint in {out}: starting fresh")

    def save(epoch: int, next_batch: int) -> None:
        if rank == 0:
            _atomic_save({"adapter": adapter.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                          "next_batch": next_batch, "step": step, "val": val_history, "kind": cfg.adapter,
                          "arch": cfg.arch, "hidden": cfg.hidden,
                          "config": _config_record(cfg),
                          "weights": {"encoder": encoder.weights_id, "decoder": decoder.weights_id}}, ckpt_path)

    def log(record: dict) -> None:
        if rank == 0:
            with open(out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def shift_tensor(pairs: list[Pair]) -> torch.Tensor:
        return torch.tensor([p.shift for p in pairs], dtype=torch.float32, device=device)

    def forward(pairs: list[Pair]):
        current = cache.levels([p.current for p in pairs])
        previous = cache.levels([p.previous for p in pairs])
        depth = decoder(model(current, previous, shift_tensor(pairs)), cfg.size)
        return depth, current

    @torch.no_grad()
    def validate() -> dict:
        adapter.eval()
        sums = {"original": 0.0, "updated": 0.0, "pixels": 0}
        for i in range(0, len(val_pairs), cfg.batch):
            chunk = val_pairs[i:i + cfg.batch]
            gt = load_depth(chunk, cfg.size, device)
            depth, current = forward(chunk)
            original = decoder(current, cfg.size)
            n = int((gt > 0).sum())
            sums["updated"] += float(masked_mse(depth, gt)) * n
            sums["original"] += float(masked_mse(original, gt)) * n
            sums["pixels"] += n
        adapter.train()
        n = max(sums["pixels"], 1)
        return {"val_original_mse": sums["original"] / n, "val_updated_mse": sums["updated"] / n}

    total_steps = cfg.epochs * -(-len(train_pairs) // cfg.batch)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    losses: list[float] = []
    step_times: list[float] = []
    interrupted = False
    epoch = start_epoch
    position = (start_epoch, start_batch)  # where a resume continues: updated right after each optimizer step
    stop = _StopOnSigint()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            batches = _batches(len(train_pairs), cfg.batch, cfg.seed, epoch, world)
            first = start_batch if epoch == start_epoch else 0
            for b in range(first, len(batches)):
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
                t0 = time.perf_counter()
                chunk = [train_pairs[i] for i in batches[b]][rank::world]
                gt = load_depth(chunk, cfg.size, device)
                depth, current = forward(chunk)
                loss = masked_mse(depth, gt)
                if cfg.regularized:
                    with torch.no_grad():
                        original = decoder(current, cfg.size)
                    loss = loss + REG_WEIGHT * F.mse_loss(depth, original)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                position = (epoch, b + 1)
                step_times.append(time.perf_counter() - t0)
                losses.append(loss.item())
                log({"step": step, "epoch": epoch, "batch": b, "loss": losses[-1], "lr": cfg.lr,
                     "seconds": step_times[-1], "cache_hits": cache.hits, "cache_misses": cache.misses})
                if progress:
                    progress(step, total_steps, epoch, losses[-1])
                if step % cfg.checkpoint_every == 0:
                    save(*position)
                if stop.requested:
                    raise KeyboardInterrupt
            else:
                start_batch = 0
                record = {"epoch": epoch, "step": step, **(validate() if val_pairs else {})}
                val_history.append(record)
                log(record)
                position = (epoch + 1, 0)
                save(*position)
                if rank == 0 and val_pairs:
                    console.print(f"epoch {epoch}: validation MSE original {record['val_original_mse']:.4f} "
                                  f"-> updated {record['val_updated_mse']:.4f} m^2")
                continue
            save(*position)  # stopped by max_steps
            break
    except KeyboardInterrupt:
        interrupted = True
        save(*position)
    finally:
        stop.restore()
    if rank == 0 and interrupted:  # not in `finally`: that ran after every run, finished ones too
        console.print(f"interrupted: checkpoint saved to {ckpt_path}; continue with --resume")
    if rank == 0 and not interrupted:
        _atomic_save({"adapter": adapter.state_dict(), "kind": cfg.adapter, "arch": cfg.arch, "hidden": cfg.hidden},
                     out / "adapter.pt")
    if distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    return TrainResult(step, epoch, losses, val_history, interrupted, ckpt_path,
                       float(np.median(step_times)) if step_times else 0.0, cache.hits, cache.misses)
