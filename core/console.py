"""Console output shared by every command: one stderr console, one-line notices.

Data goes to files or stdout; everything a person should read while a command runs goes here.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, highlight=False)
if not console.is_terminal:  # logs and CI: wide tables, and one-line messages stay one line
    console.width = 160

RANDOM_WEIGHTS_BANNER = (
    "RANDOM WEIGHTS: seeded random init, not the DINOv2 release - depth values are not metric and "
    "accuracy figures mean nothing"
)


def error_line(message: str) -> None:
    """The one line a UserError becomes."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def notice(message: str) -> None:
    """One line for a fallback or a choice made on the user's behalf."""
    console.print(f"[yellow]notice:[/] {escape(message)}", soft_wrap=True)  # paths and extras have brackets


_shown: set[str] = set()


def reset_notices() -> None:
    """A new command starts: its output gets the banner again (matters when commands share a process)."""
    _shown.clear()


def random_weights_notice() -> None:
    """The banner, once per process (encoder, decoder and adapter all ask for it)."""
    if "random" not in _shown:
        _shown.add("random")
        console.print(f"[bold white on red] {RANDOM_WEIGHTS_BANNER} [/]", soft_wrap=True)
