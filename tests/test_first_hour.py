"""The first hour (issue 32): `process` on your own video (and on an image folder without depth), an untrained
adapter said as plainly as random weights, a GPU without TensorRT used through ONNX Runtime's CUDA provider, and
one name per concept on the command line."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.core.console import console
from smoothdino.edge.sources.synthetic import SyntheticScene

from .conftest import SMALL
from .test_faults import _png_names, _process_child, write_video
from .test_video import probe

runner = CliRunner()


def _process(inputs, out: Path, engines: Path, *extra: str):
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return runner.invoke(app, ["process", *map(str, inputs), "--engines", str(engines), "--backend", "onnxruntime",
                               "--out", str(out), *extra])


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "depth").glob("*.png"))}


def _row(output: str, name: str) -> list[str]:
    """The report table's cells for one sequence."""
    line = next(line for line in output.splitlines() if line.strip().startswith("│ " + name))
    return [c.strip() for c in line.split("│")[1:-1]]


# -- process on a video file ---------------------------------------------------------------------

FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A short MP4 of the moving synthetic scene at the export's size: a user's own video."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", FRAMES)


@pytest.fixture(scope="module")
def clip_whole(clip, small_export, tmp_path_factory) -> Path:
    """One uninterrupted `process clip.mp4`: what every other run on the clip must equal."""
    out = tmp_path_factory.mktemp("whole")
    result = _process(clip, out, small_export)
    assert result.exit_code == 0, result.output
    return out / "clip"


def test_process_takes_a_video_file_with_pngs_metrics_and_an_h264_video(clip, clip_whole):
    from smoothdino.edge.commands.robotics import RobotOptions, first_frame_size

    assert first_frame_size(clip, RobotOptions()) == SMALL  # what an on-the-fly export (no --engines) is sized to
    names = [f"{i:06d}.png" for i in range(FRAMES)]  # frames are addressed by their index, zero-padded
    assert list(_pngs(clip_whole)) == names
    for name in names[:2]:
        depth = cv2.imread(str(clip_whole / "depth" / name), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == SMALL
    metrics = json.loads((clip_whole / "metrics.json").read_text())
    assert [r["frame"] for r in metrics["frames"]] == [n[:-4] for n in names]
    assert metrics["run"]["source"] == "clip" and metrics["summary"]["frames"] == FRAMES
    video = probe(clip_whole / "video.mp4")
    assert video["codec"] == "h264" and video["frames"] == FRAMES


def test_a_limited_run_on_a_video_resumes_byte_identically(clip, clip_whole, small_export, tmp_path):
    first = _process(clip, tmp_path, small_export, "--frames", "5", "--no-video")
    assert first.exit_code == 0, first.output
    assert len(_pngs(tmp_path / "clip")) == 5
    rest = _process(clip, tmp_path, small_export, "--no-video")
    assert rest.exit_code == 0, rest.output
    assert _row(rest.output, "clip")[2:4] == [str(FRAMES - 5), "5"]  # new, resumed
    assert _pngs(tmp_path / "clip") == _pngs(clip_whole)


def test_sigint_during_process_on_a_video_then_the_same_command_resumes_exactly(clip, clip_whole, small_export,
                                                                               tmp_path):
    out = tmp_path / "out"
    child = _process_child(clip, small_export, out, "--no-video")
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline and len(_png_names(out / "clip" / "depth")) < 3:
        time.sleep(0.001)
    if child.poll() is not None:
        pytest.fail("the run finished before the signal: nothing was tested")
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130 and "run the same command to resume" in stderr, stderr[-1500:]
    partial = _pngs(out / "clip")
    assert 3 <= len(partial) < FRAMES
    resumed = _process(clip, out, small_export, "--no-video")
    assert resumed.exit_code == 0, resumed.output
    assert _row(resumed.output, "clip")[3] == str(len(partial))  # resumed, not redone
    assert _pngs(out / "clip") == _pngs(clip_whole)


def test_process_takes_an_image_folder_without_depth(small_export, tmp_path):
    folder = tmp_path / "walk"
    folder.mkdir()
    for i, (rgb, _) in enumerate(SyntheticScene(*SMALL, frames=4)):
        cv2.imwrite(str(folder / f"img_{i + 1}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    result = _process(folder, tmp_path / "out", small_export, "--no-video")
    assert result.exit_code == 0, result.output
    assert list(_pngs(tmp_path / "out" / "walk")) == [f"img_{i}.png" for i in range(1, 5)]
    metrics = json.loads((tmp_path / "out" / "walk" / "metrics.json").read_text())
    assert metrics["summary"]["frames"] == 4 and metrics["summary"].get("rmse") is None  # no ground truth


def test_a_video_that_opencv_cannot_read_is_one_line(small_export, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    result = _process(broken, tmp_path / "out", small_export)
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(broken) in errors[0]
    topic = _process(tmp_path / "missing.mp4", tmp_path / "out", small_export)
    assert topic.exit_code == 2 and "missing.mp4" in topic.output


def test_process_ray_on_a_video_equals_one_process(ray_cluster, clip, clip_whole, small_export, tmp_path):
    """A video is one chunk (read in order, as a bag): the same PNGs, rows and H.264 video as one process."""
    result = _process(clip, tmp_path, small_export, "--ray", "auto", "--chunk", "4")
    assert result.exit_code == 0, result.output
    assert "1 chunks" in result.output
    assert _pngs(tmp_path / "clip") == _pngs(clip_whole)
    rows = [json.loads((folder / "metrics.json").read_text())["frames"] for folder in (clip_whole, tmp_path / "clip")]
    assert [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in rows[1]] == \
           [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in rows[0]]
    assert probe(tmp_path / "clip" / "video.mp4")["frames"] == FRAMES


# -- an untrained adapter is said as plainly as random weights ------------------------------------

@pytest.fixture(scope="module")
def untrained_export(small_export, tmp_path_factory) -> Path:
    """The small export as `smoothdino export` records official weights and no --adapter-weights: the adapter in its
    initial state (models.adapter.load_adapter's weights id "initial"). Only manifest.json's record changes: the
    run-time says what the manifest says."""
    folder = tmp_path_factory.mktemp("untrained") / "export"
    shutil.copytree(small_export, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["weights"] = {"encoder": "dinov2_vits14_pretrain.pth@0123456789abcdef",
                           "decoder": "dinov2_vits14_nyu_dpt_head.pth@0123456789abcdef", "adapter": "initial"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_an_untrained_adapter_is_said_in_the_manifest_banner_and_metrics(clip, small_export, untrained_export,
                                                                         tmp_path):
    from smoothdino.edge.commands.tables import gate_table
    from smoothdino.edge.engines.manifest import Manifest

    manifest = Manifest.load(untrained_export)
    assert manifest.untrained_adapter and not manifest.random_weights
    assert not Manifest.load(small_export).untrained_adapter  # random weights: said as such, not as untrained
    with console.capture() as table:
        console.print(gate_table(manifest, "export"))
    assert "UNTRAINED" in table.get() and "identity" in table.get()

    result = _process(clip, tmp_path, untrained_export, "--no-video", "--frames", "2")
    assert result.exit_code == 0, result.output
    banners = [line for line in result.output.splitlines() if "UNTRAINED ADAPTER" in line]
    assert len(banners) == 1 and "smoothdino train" in banners[0] and "--adapter-weights" in banners[0]
    assert "RANDOM WEIGHTS" not in result.output
    run = json.loads((tmp_path / "clip" / "metrics.json").read_text())["run"]
    assert run["untrained_adapter"] is True and "smoothdino train" in run["adapter_warning"]

    random = _process(clip, tmp_path / "random", small_export, "--no-video", "--frames", "2")
    assert random.exit_code == 0 and "UNTRAINED" not in random.output
    run = json.loads((tmp_path / "random" / "clip" / "metrics.json").read_text())["run"]
    assert run["untrained_adapter"] is False and "adapter_warning" not in run


def test_the_overlay_says_untrained_adapter_in_red():
    from smoothdino.edge.sinks.view import side_by_side

    rgb, depth = np.full((*SMALL, 3), 128, np.uint8), np.full(SMALL, 2.0, np.float32)
    plain = side_by_side(rgb, depth, [])
    marked = side_by_side(rgb, depth, [], untrained_adapter=True)
    band = marked[:12, :SMALL[1]].astype(int)
    assert not np.array_equal(plain, marked)
    assert (band[..., 2] - band[..., 0] > 100).any()  # red text (BGR), as the RANDOM WEIGHTS line


# -- a GPU without TensorRT: ONNX Runtime's CUDA provider -----------------------------------------

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]  # PyPI's onnxruntime
WITH_CUDA = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]  # onnxruntime-gpu
TENSORRT_RUNS = (True, "")
NO_TENSORRT = (False, "tensorrt not importable (ModuleNotFoundError: No module named 'tensorrt')")


def test_auto_picks_tensorrt_then_cuda_then_cpu_and_says_which_and_why():
    from smoothdino.edge.engines.factory import choose_backend

    def choose(requested, providers, tensorrt=NO_TENSORRT, have_engines=True, gpu=None):
        return choose_backend(requested, providers=providers, tensorrt=tensorrt, have_engines=have_engines, gpu=gpu)

    word, said = choose("auto", WITH_CUDA, TENSORRT_RUNS)
    assert word == "tensorrt" and "TensorRT" in said
    word, said = choose("auto", WITH_CUDA)
    assert word == "onnxruntime-cuda" and "CUDA" in said and "No module named 'tensorrt'" in said
    word, said = choose("auto", WITH_CUDA, TENSORRT_RUNS, have_engines=False)
    assert word == "onnxruntime-cuda" and "no TensorRT engines" in said
    word, said = choose("auto", CPU_ONLY, gpu="NVIDIA GeForce RTX 4090")
    assert word == "onnxruntime" and "CPU" in said and "onnxruntime-gpu" in said  # a GPU left unused says how to use it
    word, said = choose("auto", CPU_ONLY)
    assert word == "onnxruntime" and "CPU" in said and "onnxruntime-gpu" not in said  # no GPU: nothing to install
    # asked for by name: quiet when it is there, one notice and the next best when it is not
    assert choose("onnxruntime-cuda", WITH_CUDA) == ("onnxruntime-cuda", None)
    assert choose("onnxruntime", WITH_CUDA) == ("onnxruntime", None)
    word, said = choose("onnxruntime-cuda", CPU_ONLY, gpu="NVIDIA GeForce RTX 4090")
    assert word == "onnxruntime" and "CUDAExecutionProvider" in said and "onnxruntime-gpu" in said
    word, said = choose("tensorrt", WITH_CUDA)
    assert word == "onnxruntime-cuda" and "No module named 'tensorrt'" in said


def test_onnxruntime_sessions_take_the_cuda_provider_when_the_list_has_it():
    from smoothdino.edge.engines.onnxruntime_engine import session_providers

    assert session_providers(WITH_CUDA) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert session_providers(CPU_ONLY) == ["CPUExecutionProvider"]


def test_onnxruntime_cuda_is_a_backend_word_with_a_gpu_extra():
    import tomllib

    from smoothdino.core.backends import BACKENDS, backend_word

    assert "onnxruntime-cuda" in BACKENDS and backend_word("ONNXRuntime-CUDA") == "onnxruntime-cuda"
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(r.startswith("onnxruntime-gpu") for r in extras["gpu"])


def test_process_with_onnxruntime_cuda_where_onnxruntime_has_no_cuda_falls_back_in_one_notice(clip, small_export,
                                                                                              tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider: the fallback cannot happen here")
    result = runner.invoke(app, ["process", str(clip), "--engines", str(small_export), "--backend", "onnxruntime-cuda",
                                 "--out", str(tmp_path), "--no-video", "--frames", "1"])
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "CUDAExecutionProvider" in line]
    assert len(said) == 1 and said[0].startswith("notice:") and "using ONNX Runtime on the CPU" in said[0]
    assert json.loads((tmp_path / "clip" / "metrics.json").read_text())["run"]["backend"] == "onnxruntime"


def test_info_and_doctor_report_onnxruntime_cuda(tmp_path):
    from smoothdino.edge.commands.doctor import run_doctor

    info = runner.invoke(app, ["info"])
    assert info.exit_code == 0, info.output
    assert "onnxruntime-cuda" in info.output and "auto ->" in info.output

    def check(**facts):
        report = run_doctor(tmp_path, tensorrt_version=None, build_info="", docker=None, **facts)
        return next(c for c in report.checks if c.what == "ONNX Runtime")

    cuda = check(providers=WITH_CUDA, gpu={"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"})
    assert cuda.status == "ok" and "CUDA" in cuda.text and "onnxruntime-cuda" in cuda.text
    unused = check(providers=CPU_ONLY, gpu={"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"})
    assert unused.status == "note" and "RTX 4090" in unused.text and "onnxruntime-gpu" in unused.text
    cpu = check(providers=CPU_ONLY, gpu=None)
    assert cpu.status == "ok" and "CPU" in cpu.text


# -- one name per concept ------------------------------------------------------------------------

WIDE = {"COLUMNS": "250"}  # help tables unwrapped


def test_frames_is_the_frame_limit_of_every_command_and_the_old_names_still_work(clip, small_export, tmp_path):
    for command in ("process", "live", "inspect", "bench"):
        shown = runner.invoke(app, [command, "--help"], env=WIDE).output
        assert "--frames" in shown, command
    assert "--limit" not in runner.invoke(app, ["process", "--help"], env=WIDE).output  # hidden aliases
    assert "--max-frames" not in runner.invoke(app, ["live", "--help"], env=WIDE).output

    new = _process(clip, tmp_path / "new", small_export, "--frames", "2", "--no-video")
    assert new.exit_code == 0, new.output
    assert len(_pngs(tmp_path / "new" / "clip")) == 2 and "renamed" not in new.output
    old = _process(clip, tmp_path / "old", small_export, "--limit=2", "--no-video")
    assert old.exit_code == 0, old.output
    assert len(_pngs(tmp_path / "old" / "clip")) == 2
    assert "--limit is now --frames" in old.output  # said once, the run goes on

    live = runner.invoke(app, ["live", "--source", str(clip), "--engines", str(small_export), "--backend", "onnxruntime",
                               "--headless", "--no-async", "--max-frames", "1", "--out", str(tmp_path / "live")])
    assert live.exit_code == 0, live.output
    assert "--max-frames is now --frames" in live.output
    assert len(list((tmp_path / "live" / "depth").glob("*.png"))) == 1  # the camera stopped after one frame


def test_calibration_pairs_have_one_name_and_word_lists_take_repeats_or_commas(small_export, tmp_path):
    """--frames is a frame limit everywhere; the gate's pairs are --calibration-frames in export, calibrate and build
    (calibrate's and build's old --frames still work, with a notice). A list of words is given repeated, or
    comma-separated, or both, in every command."""
    import shutil

    from smoothdino.cli import words

    for command in ("export", "calibrate", "build"):
        shown = runner.invoke(app, [command, "--help"], env=WIDE).output
        assert "--calibration-frames" in shown and "--frames " not in shown, command
    copy = tmp_path / "export"
    shutil.copytree(small_export, copy)
    old = runner.invoke(app, ["calibrate", "--engines", str(copy), "--frames", "1", "--backend", "onnxruntime"])
    assert old.exit_code == 0, old.output
    assert "--frames is now --calibration-frames" in old.output
    assert json.loads((copy / "gate.json").read_text())["frames"] == 1  # the old name set the new option
    assert words(["vits14,vitb14", "vits14+paper", " int8 ,"]) == ["vits14", "vitb14", "vits14+paper", "int8"]
    for command, option in (("bench", "--configs"), ("bench", "--keyframes"), ("train", "--val-scenes"),
                            ("weights fetch", "--kind"), ("export", "--compute-capability")):
        shown = " ".join(runner.invoke(app, [*command.split(), "--help"], env=WIDE).output.split())
        assert option in shown and "repeat, or comma-separated" in shown, (command, option)


def test_version():
    from importlib.metadata import version

    import smoothdino

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"smoothdino {smoothdino.__version__}"
    assert smoothdino.__version__ == version("smoothdino-edge")


def test_help_shows_allowed_values_instead_of_types():
    shown = runner.invoke(app, ["process", "--help"], env=WIDE).output
    for metavar in ("auto|onnxruntime|onnxruntime-cuda|tensorrt|tensorrt-rtx", "every|N|auto",
                    "vits14|vitb14|vitl14|vitg14"):
        assert metavar in shown, metavar
    assert "<str>" not in shown and "TEXT" not in shown


def test_open_takes_color_as_well_as_colour(small_export, textured_rgb):
    import smoothdino

    frame = np.ascontiguousarray(textured_rgb[..., ::-1])
    with smoothdino.open(small_export, colour="bgr", backend="onnxruntime") as british, \
            smoothdino.open(small_export, color="bgr", backend="onnxruntime") as american:
        assert np.array_equal(british.step(frame).depth, american.step(frame).depth)
    with pytest.raises(ValueError, match="colour"):
        smoothdino.open(small_export, colour="rgb", color="bgr")
    with pytest.raises(TypeError, match="colour"):  # required, as before: never guessed
        smoothdino.open(small_export)


def test_extra_install_lines_name_what_this_copy_was_installed_from():
    """smoothdino-edge is not on PyPI: `pip install 'smoothdino-edge[ros2]'` would fail. The hint names the source
    of this very install: here the editable clone that `make install` made."""
    from smoothdino.core.extras import install_extra, torch_install

    from .conftest import ROOT

    assert install_extra("ros2") == f"pip install -e '{ROOT}[ros2]'"
    assert torch_install().endswith(f"then pip install -e '{ROOT}[torch]'")
