"""smoothdino: one command line for weights, export, calibration, processing, live depth, benchmarks, training.

Commands that only run engines (process with --engines, live, info) never import torch, so they work on a
Jetson with numpy, OpenCV, ONNX Runtime and TensorRT alone. Errors a user can fix print one line, exit 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from edge.console import console
from edge.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Live metric depth from a moving camera: DINOv2 + temporal adapter on TensorRT / ONNX Runtime.")
weights_app = typer.Typer(no_args_is_help=True, help="Official DINOv2 release files: list, fetch, verify.")
app.add_typer(weights_app, name="weights")


def user_errors(fn):
    """Turn UserError (and Ctrl-C) into one line and an exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def parse_size(text: str) -> tuple[int, int]:
    """'480x640' (height x width) -> (480, 640)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h < 14 or w < 14:
            raise ValueError
        return h, w
    except ValueError:
        raise UserError(f"--size {text!r}: give HEIGHTxWIDTH, e.g. 480x640 (each at least 14)") from None


ARCH_HELP = "Backbone: vits14, vitb14, vitl14 or vitg14."
RANDOM_HELP = "Seeded random weights in the official layout (no download; results are not metric)."


# -- weights --------------------------------------------------------------------------------------

def _selected_files(archs: list[str] | None, kinds: list[str] | None):
    from models.checkpoints import OFFICIAL_FILES

    files = [f for f in OFFICIAL_FILES if (not archs or f.arch in archs) and (not kinds or f.kind in kinds)]
    if not files:
        raise UserError("no release file matches: archs are vits14 vitb14 vitl14 vitg14, kinds backbone dpt linear4")
    return files


@weights_app.command("list")
@user_errors
def weights_list(weights_dir: Optional[Path] = typer.Option(None, help="Also look in this folder.")):
    """The release files, their URLs and whether they are here."""
    from models.checkpoints import OFFICIAL_FILES, find_local, pinned_hash, weights_cache

    table = Table(title=f"DINOv2 release files (cache: {weights_cache()})")
    for col in ("file", "size here", "sha256 (pinned)", "url"):
        table.add_column(col)
    for f in OFFICIAL_FILES:
        path = find_local(f, weights_dir)
        size = f"{path.stat().st_size / 2**20:.1f} MiB" if path else "-"
        pin = (pinned_hash(path) or "not verified")[:16] if path else "-"
        table.add_row(f.name, size, pin, f.url)
    console.print(table)


@weights_app.command("fetch")
@user_errors
def weights_fetch(
    archs: Optional[list[str]] = typer.Argument(None, help="Archs to fetch (default: vits14 vitb14)."),
    kind: Optional[list[str]] = typer.Option(None, "--kind", help="backbone, dpt, linear4 (default: backbone and dpt)."),
):
    """Download release files into the cache: resumable, atomic, accepted only after a strict load."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from models.checkpoints import fetch

    files = _selected_files(archs or ["vits14", "vitb14"], kind or ["backbone", "dpt"])
    with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console) as bar:
        for f in files:
            task = bar.add_task(f.name, total=None)
            path = fetch(f, lambda done, total, task=task: bar.update(task, completed=done, total=total))
            bar.update(task, description=f"{f.name} ok -> {path}")


@weights_app.command("verify")
@user_errors
def weights_verify(
    archs: Optional[list[str]] = typer.Argument(None, help="Archs to check (default: all present)."),
    weights_dir: Optional[Path] = typer.Option(None, help="Folder with files copied by hand."),
):
    """Strict-load every release file present and check its SHA-256 against the pin."""
    from models.checkpoints import find_local, verify

    checked = 0
    for f in _selected_files(archs, None):
        path = find_local(f, weights_dir)
        if path is None:
            continue
        digest = verify(path, f)
        console.print(f"ok  {path}  sha256:{digest[:16]}")
        checked += 1
    if not checked:
        where = weights_dir or "the cache"
        raise UserError(f"no release files in {where}: run `smoothdino weights fetch` or pass --weights-dir DIR")


# -- info -----------------------------------------------------------------------------------------

@app.command()
@user_errors
def info():
    """Versions, GPU, usable back-ends, and the weights cache."""
    from edge import environment as env

    table = Table(title="smoothdino info", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for name, version in env.versions().items():
        table.add_row(name, version or "not installed")
    g = env.gpu()
    table.add_row("GPU", f"{g['name']} (compute {g['compute_capability']})" if g else "none")
    ok, why = env.tensorrt_usable()
    backends = ["onnxruntime (" + ", ".join(env.onnxruntime_providers()) + ")"]
    backends.append("tensorrt" if ok else f"tensorrt: no - {why}")
    table.add_row("back-ends", "\n".join(backends))
    table.add_row("torch reference", "yes" if env.package_version("torch") else "no (edge-only install)")
    table.add_row("OpenCV GStreamer (CSI cameras)", "yes" if env.opencv_gstreamer() else "no")
    from edge.paths import weights_cache_dir

    cache = weights_cache_dir()
    present = sorted(p.name for p in cache.glob("*.pth")) if cache.is_dir() else []
    table.add_row("weights cache", f"{cache}\n" + ("\n".join(present) if present else "(empty)"))
    console.print(table)


def main() -> None:  # python -m cli
    app()


if __name__ == "__main__":
    sys.exit(main())
