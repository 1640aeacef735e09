"""The official DINOv2 release files: registry, cache folder, resumable download, strict loading.

Files live in `$SMOOTHDINO_HOME/weights` (default `~/.cache/smoothdino/weights`); files a user copied by hand
are found with `weights_dir`. A download is written to `<name>.part` (resumed with an HTTP Range request),
checked against the server's length and by a strict load, and only then renamed into place. The SHA-256 of
every file that passed is pinned in `SHA256SUMS` beside it, and `verify` holds later copies to that pin.
The release publishes no hashes, so the pin is taken on first download (or first verify) of a file that
loaded strictly; we never ship made-up hashes.
"""

from __future__ import annotations

import os
import pickle
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from smoothdino.core.errors import UserError
from smoothdino.core.paths import weights_cache_dir as weights_cache

from .archs import ARCHS
from smoothdino.core.files import atomic_write_text, sha256_of

RELEASE_URL = "https://dl.fbaipublicfiles.com/dinov2"
# A mirror with the release's layout (<url>/dinov2_<arch>/<file>), e.g. a lab server for robots without internet.
MIRROR_VARIABLE = "SMOOTHDINO_WEIGHTS_URL"


def release_url() -> str:
    return (os.environ.get(MIRROR_VARIABLE) or RELEASE_URL).rstrip("/")


class CheckpointError(UserError):
    """A weight file that is missing, truncated or from another model (one line: file and fix)."""


@dataclass(frozen=True)
class OfficialFile:
    arch: str  # vits14 ...
    kind: str  # backbone | dpt | linear4

    @property
    def name(self) -> str:
        suffix = {"backbone": "pretrain", "dpt": "nyu_dpt_head", "linear4": "nyu_linear4_head"}[self.kind]
        return f"dinov2_{self.arch}_{suffix}.pth"

    @property
    def url(self) -> str:
        return f"{release_url()}/dinov2_{self.arch}/{self.name}"

    @property
    def key(self) -> str:
        return f"{self.arch}:{self.kind}"


OFFICIAL_FILES: list[OfficialFile] = [
    OfficialFile(arch, kind) for arch in ARCHS for kind in ("backbone", "dpt", "linear4")
]


def official_file(arch: str, kind: str) -> OfficialFile:
    for f in OFFICIAL_FILES:
        if f.arch == arch and f.kind == kind:
            return f
    raise ValueError(f"no official file for arch={arch!r} kind={kind!r}")


def find_local(f: OfficialFile, weights_dir: Path | None = None) -> Path | None:
    """The file in --weights-dir first, then in the cache; None when neither has it."""
    for folder in ([Path(weights_dir)] if weights_dir else []) + [weights_cache()]:
        if (folder / f.name).is_file():
            return folder / f.name
    return None


# -- strict loading -------------------------------------------------------------------------------

def read_checkpoint(path: Path) -> dict:
    """torch.load with one-line errors. Weights-only first; the mmcv head files may carry a `meta`
    entry that the safe unpickler refuses, and those official files are then read in full."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; run `smoothdino weights fetch` or pass --weights-dir")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "weights_only" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # zip/pickle errors from a truncated or foreign file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({reason}); delete it and fetch it again"
        ) from None


def head_state_dict(checkpoint: dict, path: Path) -> dict[str, torch.Tensor]:
    """mmcv head files: {'state_dict': {'decode_head.*': ...}, ...} -> keys without the prefix."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no state_dict inside; is this a DINOv2 depth head file?")
    prefix = "decode_head."
    if not any(k.startswith(prefix) for k in state):
        raise CheckpointError(f"{path}: no 'decode_head.*' keys; is this a DINOv2 NYU depth head file?")
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _short(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """load_state_dict(strict=True), but a mismatch is one line naming the file and the offending keys."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_short(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_short(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes ({_short(wrong, 2)})")
    if problems:
        raise CheckpointError(f"{path}: not a {what}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


# -- download -------------------------------------------------------------------------------------

ProgressCallback = Callable[[int, int | None], None]  # (bytes so far, total or None)


def _pins(folder: Path) -> dict[str, str]:
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return {}
    pins = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            pins[parts[1]] = parts[0]
    return pins


def pin_hash(path: Path, digest: str) -> None:
    pins = _pins(path.parent)
    pins[path.name] = digest
    atomic_write_text(path.parent / "SHA256SUMS", "".join(f"{h}  {n}\n" for n, h in sorted(pins.items())))


def pinned_hash(path: Path) -> str | None:
    return _pins(path.parent).get(path.name)


def download(f: OfficialFile, progress: ProgressCallback | None = None, timeout: float = 30.0) -> Path:
    """Fetch one release file to `<cache>/<name>.part`, resuming a partial one. Returns the .part path."""
    folder = weights_cache()
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / (f.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(f.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the .part is complete
            return part
        raise UserError(
            f"{f.url}: HTTP {err.code}; download it by hand into {folder} or pass --weights-dir DIR"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(
            f"cannot reach {release_url()} ({reason}): offline? copy {f.name} into {folder} "
            "or pass --weights-dir DIR with the files"
        ) from None
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        total = (int(length) + (have if resumed else 0)) if length else None
        done = have if resumed else 0
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    if total is not None and part.stat().st_size != total:
        raise UserError(
            f"{part}: download stopped at {part.stat().st_size} of {total} bytes; run the same command to resume"
        )
    return part


def weights_id(path: Path) -> str:
    """What a manifest records about a weight file: its name and SHA-256 (pinned, or computed now)."""
    path = Path(path)
    return f"{path.name}@sha256:{pinned_hash(path) or sha256_of(path)}"


def resolve(f: OfficialFile, weights: str | Path | None) -> Path:
    """A file path, a folder holding the official name, or None for the cache."""
    if weights is not None:
        p = Path(weights).expanduser()
        if p.is_dir():
            found = find_local(f, p)
            if found is None:
                raise CheckpointError(
                    f"{p / f.name}: not found; copy the release file there or run `smoothdino weights fetch {f.arch}`"
                )
            return found
        if not p.is_file():
            raise CheckpointError(f"{p}: no such file; give the path of {f.name} or a folder that holds it")
        return p
    found = find_local(f)
    if found is None:
        raise CheckpointError(
            f"{f.name} is not in {weights_cache()}: run `smoothdino weights fetch {f.arch}`, "
            "pass --weights-dir DIR, or use --random-weights"
        )
    return found
