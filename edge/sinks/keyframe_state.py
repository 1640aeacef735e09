"""What a resumed run needs to continue a fused stream exactly: the last keyframe's output at the network's size.

With fusion (edge.fusion) a keyframe's output depends on every output before it, so unlike the network's own depth it
cannot be computed again from the keyframe's frame. The loop writes it, with the fusion's state, as
<run>/.fusion/<frame>.npz in the keyframe's write unit (before its PNG: a PNG on disk always has its state), and
removes the earlier keyframe's file once the unit is complete; a resumed run reads back the one of the last keyframe
before it (edge.loop.ResumableSteps). Exact float32: no millimetre rounding, whatever size the PNGs are. Only the last
keyframe's is kept (one depth map, not one per frame), so a fused run resumes where it stopped; a hole further back
(a PNG deleted by hand) cannot be filled exactly, and is refused in one line naming the fix.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from smoothdino.core.errors import UserError
from smoothdino.core.files import atomic_write_bytes

FOLDER = ".fusion"


class KeyframeStates:
    def __init__(self, run_folder: Path):
        self.folder = Path(run_folder) / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def write(self, name: str, depth: np.ndarray, state: np.ndarray | None) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, depth=np.asarray(depth, np.float32),
                 state=np.asarray([] if state is None else state, np.float64))
        atomic_write_bytes(self.path(name), buffer.getvalue())

    def read(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        path = self.path(name)
        try:
            with np.load(path) as saved:
                depth, state = saved["depth"], saved["state"]
        except (OSError, KeyError, ValueError) as err:
            why = "is gone" if isinstance(err, FileNotFoundError) else f"cannot be read ({err.__class__.__name__})"
            raise UserError(f"{path}: keyframe {name}'s fused output {why}, and the frames to compute after it depend on "
                            "it (each fused output depends on every one before it, so only the last is kept); run the "
                            "same command with --overwrite to redo the sequence, or with --fusion off") from None
        return depth, (state if state.size else None)

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def keep_only(self, name: str) -> None:
        """Every state but `name`'s removed (called once `name`'s write unit is complete)."""
        keep = self.path(name).name
        for path in self.folder.glob("*.npz"):
            if path.name != keep:
                path.unlink(missing_ok=True)
