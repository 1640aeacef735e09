"""The documented Python code runs as written, so the API pages cannot drift from the code: every ```python block of
docs/python-api.md (and of README.md, should it hold any) runs on its own in a folder holding what the blocks name
(engines/vits14-temporal: a tiny export with random weights; frame.jpg and video.mp4: the synthetic scene)."""

from __future__ import annotations

import contextlib
import io
import re
import warnings

import cv2
import pytest

from smoothdino.edge.sources.synthetic import SyntheticScene

from .conftest import ROOT

PYTHON_API = ROOT / "docs" / "python-api.md"
DOCUMENTS = (PYTHON_API, ROOT / "README.md")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


BLOCKS = [(path, block) for path in DOCUMENTS for block in python_blocks(path.read_text())]


def test_the_python_api_page_documents_the_api():
    ours = python_blocks(PYTHON_API.read_text())
    assert len(ours) >= 4 and all("smoothdino.open(" in block for block in ours)
    joined = "\n".join(ours)
    for name in ("step(", "reset()", "to_points(", "asynchronous=True", "keyframes=", "Ros2Publisher("):
        assert name in joined, name


@pytest.fixture()
def readme_folder(small_export, tmp_path, monkeypatch):
    """The names the blocks use, in a fresh working directory."""
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "vits14-temporal").symlink_to(small_export, target_is_directory=True)
    scene = SyntheticScene(480, 640, frames=30, velocity=(3.0, 1.5))  # 1 s of video: async passes usually finish
    frames = list(scene)
    cv2.imwrite(str(tmp_path / "frame.jpg"), cv2.cvtColor(frames[0][0], cv2.COLOR_RGB2BGR))
    writer = cv2.VideoWriter(str(tmp_path / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    for rgb, _ in frames:
        writer.write(cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (320, 240), interpolation=cv2.INTER_AREA))
    writer.release()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("index", range(len(BLOCKS)),
                         ids=[f"{path.stem}-block{i + 1}" for i, (path, _) in enumerate(BLOCKS)])
def test_documented_python_block_runs(readme_folder, index):
    path, block = BLOCKS[index]
    code = compile(block, f"{path.relative_to(ROOT)} python block {index + 1}", "exec")
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.simplefilter("ignore")  # the random-weights warning
        exec(code, {"__name__": "__main__"})
    if "print(" in block and "asynchronous=True" not in block:  # async may print nothing yet
        assert printed.getvalue().strip(), "the block printed nothing"
