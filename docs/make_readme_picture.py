"""Make docs/side_by_side.png, the README's picture of the RGB | depth view with its colour bar.

The synthetic moving scene (edge/sources/synthetic.py) at the demo's size (240x320) goes through a vits14 +
temporal adapter export with seeded RANDOM WEIGHTS (no download; the picture says so in red: the depth values are
not metric), frame by frame as `process` runs it; one frame's view is drawn exactly as the video and the window
draw it (edge/sinks/view.side_by_side), then written as a PNG with a 256-colour palette to stay small (< 100 KB).

    .venv/bin/python docs/make_readme_picture.py            # -> docs/side_by_side.png (about a minute on 2 cores)
    .venv/bin/python docs/make_readme_picture.py --out x.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = (240, 320)
FRAMES = 8  # the picture shows the last: the adapter has fused 7 earlier frames and the overlay has a frame rate


def render(frames: int = FRAMES):
    """The side-by-side view (BGR) of the last of `frames` synthetic frames, with random weights."""
    import time

    from smoothdino.edge.loop import overlay_lines
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.edge.sinks.view import side_by_side
    from smoothdino.edge.sources.synthetic import SyntheticScene
    from smoothdino.export import ExportSpec, export_model

    with tempfile.TemporaryDirectory() as folder:
        spec = ExportSpec(arch="vits14", adapter="temporal", size=SIZE, precision="fp32", backend="onnx",
                          random_weights=True, calibration_frames=2)
        export_model(spec, Path(folder) / "engines")
        with DepthPipeline.from_folder(Path(folder) / "engines", backend="onnxruntime") as pipeline:
            fps, last = 0.0, time.perf_counter()
            for rgb, _ in SyntheticScene(*SIZE, frames=frames):
                result = pipeline.step(rgb)
                now = time.perf_counter()
                fps, last = 1.0 / max(now - last, 1e-6), now
            return side_by_side(rgb, result.depth, overlay_lines(result, fps), random_weights=True)


def save_small_png(canvas, path: Path, colours: int = 256) -> int:
    """`canvas` (BGR) as a palette PNG; returns its size in bytes."""
    from PIL import Image

    image = Image.fromarray(canvas[..., ::-1].copy()).quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "side_by_side.png")
    args = parser.parse_args()
    size = save_small_png(render(), args.out)
    print(f"{args.out}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
