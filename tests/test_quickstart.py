"""The README's "Depth on your own video" block runs as written: its `smoothdino` lines, verbatim, in a fresh folder
holding a generated clip.mp4 (16:9, not the export's 4:3), end in depth PNGs, metrics and an H.264 video.

The weights come through the real download path (`weights fetch`), from a local mirror (SMOOTHDINO_WEIGHTS_URL)
serving random tensors in the official files' layout: no weights can be downloaded here. Its install lines are
this environment's own (`make install` runs them), and are checked against pyproject.toml and the Makefile."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from .conftest import ROOT
from .spec_keys import save_official
from .test_video import probe

pytestmark = pytest.mark.slow

SECTION = "## Depth on your own video"
CLIP_FRAMES = 3  # the first frame (no previous one) and two with one: every output of each kind


def quickstart_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    assert block, f"README.md's '{SECTION}' has no ```bash block"
    return [line.strip() for line in block[1].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_quickstart_install_lines_are_what_make_install_does():
    """The block's install lines name what this very suite was installed with: the Makefile's torch pin and a
    pyproject extra that exists (the lines themselves need the network, so they are not run here)."""
    lines = quickstart_lines()
    pips = [line for line in lines if line.startswith("pip install")]
    torch_line = next(line for line in pips if "torch==" in line)
    pin = re.search(r"^TORCH\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)[1]
    assert pin in torch_line.split()
    extras = re.findall(r'"\.\[(\w+)\]"', " ".join(pips))
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras and set(extras) <= set(declared), extras
    assert any(line.startswith("python3 -m venv") for line in lines)


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def weights_mirror(tmp_path):
    """The release's layout (dinov2_vits14/<file>) on 127.0.0.1, with random official-format tensors."""
    root = tmp_path / "mirror"
    (root / "dinov2_vits14").mkdir(parents=True)
    for kind, suffix in (("backbone", "pretrain"), ("dpt", "nyu_dpt_head"), ("linear4", "nyu_linear4_head")):
        save_official(root / "dinov2_vits14" / f"dinov2_vits14_{suffix}.pth", "vits14", kind, seed=3)
    handler = lambda *a, **k: MirrorHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def write_clip(path: Path) -> None:
    """A phone-shaped video (360x640, 16:9) of a textured scene moving right: not the export's 480x640."""
    from smoothdino.edge.sources.synthetic import SyntheticScene

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 360))
    for rgb, _ in SyntheticScene(360, 640, frames=CLIP_FRAMES, velocity=(2.0, 1.0)):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def test_the_readme_commands_give_depth_on_a_generated_video(weights_mirror, tmp_path):
    commands = [line for line in quickstart_lines() if line.startswith("smoothdino ")]
    assert [shlex.split(c)[1] for c in commands] == ["weights", "export", "process"], commands
    work = tmp_path / "work"
    work.mkdir()
    write_clip(work / "clip.mp4")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(SMOOTHDINO_HOME=str(tmp_path / "home"), SMOOTHDINO_WEIGHTS_URL=weights_mirror, COLUMNS="200",
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
    assert sorted(p.name for p in (tmp_path / "home" / "weights").glob("*.pth")) == [
        "dinov2_vits14_nyu_dpt_head.pth", "dinov2_vits14_pretrain.pth"]  # fetched: backbone and DPT head

    export = shlex.split(commands[1])  # its graphs at 480x640 equal PyTorch's (the export compared them on its frame)
    manifest = json.loads((work / export[export.index("--out") + 1] / "manifest.json").read_text())
    assert manifest["frame_size"] == [480, 640]
    errors = manifest["gate"]["onnx_vs_torch_max_rel"]
    assert set(errors) == {"encoder", "adapter", "decoder"} and max(errors.values()) <= 1e-4, errors

    process = shlex.split(commands[-1])
    out = work / process[process.index("--out") + 1] / "clip"
    names = sorted(p.name for p in (out / "depth").glob("*.png"))
    assert names == [f"{i:06d}.png" for i in range(CLIP_FRAMES)]
    depth = cv2.imread(str(out / "depth" / names[-1]), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (360, 640) and (depth > 0).mean() > 0.9  # the clip's size
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["frames"] == CLIP_FRAMES
    video = probe(out / "video.mp4")
    assert video["codec"] == "h264" and video["frames"] == CLIP_FRAMES
