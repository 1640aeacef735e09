"""The base layer every other folder may use (torch-free, Jetson-safe): errors, console, paths, atomic files,
frame sizes and resizing."""

from .console import RANDOM_WEIGHTS_BANNER, console, error_line, notice, random_weights_notice, reset_notices
from .errors import UserError
from .files import atomic_path, atomic_write_bytes, atomic_write_text
from .images import NYU_DEPTH_RANGE, parse_size, resize_depth, resize_rgb
from .paths import smoothdino_home, weights_cache_dir

__all__ = [
    "RANDOM_WEIGHTS_BANNER", "console", "error_line", "notice", "random_weights_notice", "reset_notices", "UserError",
    "atomic_path", "atomic_write_bytes", "atomic_write_text", "NYU_DEPTH_RANGE", "parse_size", "resize_depth",
    "resize_rgb", "smoothdino_home", "weights_cache_dir",
]
