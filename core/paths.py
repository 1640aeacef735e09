"""Where smoothdino keeps things: $SMOOTHDINO_HOME (default ~/.cache/smoothdino)."""

from __future__ import annotations

import os
from pathlib import Path


def smoothdino_home() -> Path:
    return Path(os.environ.get("SMOOTHDINO_HOME", Path.home() / ".cache" / "smoothdino")).expanduser()


def weights_cache_dir() -> Path:
    return smoothdino_home() / "weights"


def dated(path: Path | None) -> Path | None:
    """A path with strftime fields (`runs/%Y%m%d-%H%M%S`) named for now: a live run started at boot by a restart
    policy gets a folder of its own each start, instead of being refused the folder its last start used."""
    if path is None or "%" not in str(path):
        return path
    from datetime import datetime

    return Path(datetime.now().strftime(str(path)))
