"""The I/O contract of the three graphs, shared by export (which writes it) and the run-time (which wires it).

    encoder:  image uint8 [1,H,W,3] RGB          -> patchK [1,C,h,w], clsK [1,C]   (K = 0..3)
    adapter:  patchK, clsK, prev_patchK, prev_clsK, shift float32 [1,3] (dx, dy px, confidence)
                                                 -> fused_patchK, fused_clsK
    decoder:  patchK, clsK                       -> depth float32 [1,1,H,W] metres

An export with `--batch N` has the same tensors with a dynamic first axis (1..N frames, recorded as -1 in the
manifest's shapes, as TensorRT writes a dynamic dim); item i of every tensor belongs to frame i.
"""

from __future__ import annotations

NUM_LEVELS = 4
STAGES = ("encoder", "adapter", "decoder")


def level_names(prefix: str = "") -> list[str]:
    """patch0, cls0, patch1, cls1, ... (the order the graphs take and give them)."""
    return [f"{prefix}{kind}{k}" for k in range(NUM_LEVELS) for kind in ("patch", "cls")]


ENCODER_INPUTS = ["image"]
ENCODER_OUTPUTS = level_names()
ADAPTER_INPUTS = level_names() + level_names("prev_") + ["shift"]
ADAPTER_OUTPUTS = level_names("fused_")
DECODER_INPUTS = level_names()
DECODER_OUTPUTS = ["depth"]

IO = {
    "encoder": (ENCODER_INPUTS, ENCODER_OUTPUTS),
    "adapter": (ADAPTER_INPUTS, ADAPTER_OUTPUTS),
    "decoder": (DECODER_INPUTS, DECODER_OUTPUTS),
}


def io_shapes(stage: str, height: int, width: int, dim: int, grid: tuple[int, int], batch: int = 1) -> dict[str, list[int]]:
    """Shapes of a stage's tensors for a frame size (grid = patch grid h, w); the first dim is 1, or -1 (dynamic)
    for a batch export (batch > 1)."""
    h, w = grid
    b = 1 if batch <= 1 else -1

    def level(name: str) -> list[int]:
        return [b, dim, h, w] if "patch" in name else [b, dim]

    shapes = {}
    for name in IO[stage][0] + IO[stage][1]:
        if name == "image":
            shapes[name] = [b, height, width, 3]
        elif name == "shift":
            shapes[name] = [b, 3]
        elif name == "depth":
            shapes[name] = [b, 1, height, width]
        else:
            shapes[name] = level(name)
    return shapes
