"""Where smoothdino keeps things: $SMOOTHDINO_HOME (default ~/.cache/smoothdino)."""

from __future__ import annotations

import os
from pathlib import Path


def smoothdino_home() -> Path:
    return Path(os.environ.get("SMOOTHDINO_HOME", Path.home() / ".cache" / "smoothdino")).expanduser()


def weights_cache_dir() -> Path:
    return smoothdino_home() / "weights"
