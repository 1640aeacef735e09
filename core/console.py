"""Console output shared by every command: one stderr console, one-line notices.

Data goes to files or stdout; everything a person should read while a command runs goes here.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, highlight=False)
if not console.is_terminal:  # logs and CI: wide tables, and one-line messages stay one line
    console.width = 160

RANDOM_WEIGHTS_BANNER = (
    "RANDOM WEIGHTS: seeded random init, not the DINOv2 release - depth values are not metric and "
    "accuracy figures mean nothing"
)

# An adapter exported without --adapter-weights (and without --random-weights) keeps its initial state, which is the
# identity: the "temporal" in the depth is then nothing. Said wherever random weights are said.
UNTRAINED_ADAPTER = "initial"  # its weights id (models.adapter.load_adapter), as manifest.json records it
UNTRAINED_ADAPTER_BANNER = (
    "UNTRAINED ADAPTER: exported without --adapter-weights, the adapter is the identity (depth is DINOv2's, frame by "
    "frame); train it: smoothdino train NYUV2_SCENES... --out runs/adapter, then export --adapter-weights "
    "runs/adapter/adapter.pt"
)
UNTRAINED_ADAPTER_LINE = "UNTRAINED ADAPTER - identity"  # the overlay's


def untrained_adapter(weights: Mapping[str, str]) -> bool:
    """Whether `weights` (stage -> weights id: a manifest's, a pipeline's) hold an adapter in its initial state."""
    return weights.get("adapter") == UNTRAINED_ADAPTER


def adapter_state(weights: Mapping[str, str]) -> dict:
    """What a run's metrics.json says of its adapter: untrained_adapter, and the banner when it is."""
    untrained = untrained_adapter(weights)
    return {"untrained_adapter": untrained, **({"adapter_warning": UNTRAINED_ADAPTER_BANNER} if untrained else {})}


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


def notice_once(key: str, message: str) -> None:
    """notice(message), the first time `key` comes in this command (several engines may meet the same fact)."""
    if key not in _shown:
        _shown.add(key)
        notice(message)


def untrained_adapter_notice(weights: Mapping[str, str]) -> None:
    """The untrained-adapter banner, once per process, when `weights` hold one (see UNTRAINED_ADAPTER)."""
    if untrained_adapter(weights) and "untrained" not in _shown:
        _shown.add("untrained")
        console.print(f"[bold white on red] {escape(UNTRAINED_ADAPTER_BANNER)} [/]", soft_wrap=True)
