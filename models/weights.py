"""Release files accepted only after they load: a download is checked by a strict load into the model it belongs to
(the ViT backbone or the NYUv2 head), then its SHA-256 is pinned. Apart from checkpoints.py, which the model builders
import, so that the builders and the registry never import each other."""

from __future__ import annotations

import os
from pathlib import Path

from smoothdino.core.files import sha256_of

from .checkpoints import (
    CheckpointError,
    OfficialFile,
    ProgressCallback,
    download,
    head_state_dict,
    load_strict,
    pin_hash,
    pinned_hash,
    read_checkpoint,
    weights_cache,
)
from .decoder import build_head
from .vit import build_encoder


def check_file(f: OfficialFile, path: Path) -> None:
    """Strict load of one release file into its module; raises CheckpointError with one line."""
    if f.kind == "backbone":
        load_strict(build_encoder(f.arch), read_checkpoint(path), path, f"dinov2_{f.arch} backbone")
    else:
        state = head_state_dict(read_checkpoint(path), path)
        load_strict(build_head(f.arch, f.kind), state, path, f"dinov2_{f.arch} NYU {f.kind} head")


def fetch(f: OfficialFile, progress: ProgressCallback | None = None) -> Path:
    """Download (or find) a release file, accept it only after a strict load, and pin its hash."""
    final = weights_cache() / f.name
    if final.is_file():
        return final
    part = download(f, progress)
    try:
        check_file(f, part)
    except CheckpointError:
        rejected = final.with_suffix(".rejected")
        os.replace(part, rejected)
        raise CheckpointError(
            f"{f.url}: the downloaded file does not load as {f.name} (kept as {rejected}); report it"
        ) from None
    os.replace(part, final)  # atomic: a file under the final name has always passed the strict load
    pin_hash(final, sha256_of(final))
    return final


def verify(path: Path, f: OfficialFile) -> str:
    """Strict load + hash against the pin (pinned now if none). Returns the SHA-256."""
    check_file(f, path)
    digest = sha256_of(path)
    pinned = pinned_hash(path)
    if pinned is None:
        pin_hash(path, digest)
    elif pinned != digest:
        raise CheckpointError(
            f"{path}: SHA-256 {digest[:12]}... differs from the pinned {pinned[:12]}... (file changed); "
            "delete it and fetch it again"
        )
    return digest
