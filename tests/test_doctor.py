"""`smoothdino doctor` and the camera's one-line errors, on fake system roots: fake device trees, release files,
nvpmodel files, Argus sockets, daemon.json files and /proc under a temporary folder, a small video written here
as the source. What the process and its tools would answer (TensorRT, OpenCV's build, gst-inspect-1.0, docker
info) is passed in, never patched in."""

from __future__ import annotations

import json
import os
import socket
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from smoothdino.core.errors import UserError
from smoothdino.edge.commands import doctor
from smoothdino.edge.commands.doctor import ROOT_ENV, camera_open_failure, captured_stderr, run_doctor, tls_problem
from smoothdino.edge.machine.environment import (TensorRTTooOld, check_tensorrt_module, import_tensorrt,
                                         tensorrt_usable, tensorrt_version_problem)
from typer.testing import CliRunner


def _jetson_fixtures():
    """tests/test_jetson.py's fixture roots, loaded by path (pytest runs in importlib mode, maybe without the
    repository on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("jetson_fixtures", Path(__file__).with_name("test_jetson.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ORIN_NANO_JP62, module.make_root


ORIN_NANO_JP62, make_root = _jetson_fixtures()

GST_YES = "General configuration for OpenCV 4.8.0 =====\n  Video I/O:\n    GStreamer:                   YES (1.20.3)\n"
GST_NO = "General configuration for OpenCV 4.10.0 =====\n  Video I/O:\n    GStreamer:                   NO\n"
TLS_OUTPUT = ("(gst-plugin-scanner:69): GStreamer-WARNING **: 18:43:01.969: Failed to load plugin "
              "'/usr/lib/aarch64-linux-gnu/gstreamer-1.0/libgstnvarguscamerasrc.so': "
              "/lib/aarch64-linux-gnu/libGLdispatch.so.0: cannot allocate memory in static TLS block\n"
              "No such element or plugin 'nvarguscamerasrc'\n")
MEMINFO = "MemTotal:        7620000 kB\nMemFree:          900000 kB\nMemAvailable:    5200000 kB\nSwapTotal:       3800000 kB\n"


def element_loads(args):
    return 0, f"Factory Details:\n  Long-name  {args[0]}\n"


def element_missing(args):
    return 1, f"No such element or plugin '{args[0]}'\n"


def no_gst_inspect(args):
    return None


def argus_socket(root: Path) -> socket.socket:
    """A real unix socket at <root>/tmp/argus_socket (kept open by the caller's fixture)."""
    path = root / "tmp/argus_socket"
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


@pytest.fixture
def short_tmp(tmp_path_factory):
    """Unix socket paths are limited to ~107 bytes: a short folder for roots that hold one."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sd") as folder:
        yield Path(folder)


def one_line(text: str) -> bool:
    return "\n" not in text and "\r" not in text


# -- TensorRT below 10 -------------------------------------------------------------------------------

def test_tensorrt_8_6_is_refused_in_one_line_naming_the_jetpack():
    fake = types.SimpleNamespace(__version__="8.6.2")  # what JetPack 6.0 / l4t-jetpack:r36.3.0 import as tensorrt
    with pytest.raises(TensorRTTooOld) as refused:
        check_tensorrt_module(fake)
    message = str(refused.value)
    assert one_line(message)
    assert "TensorRT 8.6.2" in message and "JetPack 6.0" in message
    assert "JetPack 6.1 or 6.2" in message and "l4t-jetpack:r36.4.0" in message
    assert isinstance(refused.value, UserError) and isinstance(refused.value, ImportError)  # exit 2; fallbacks fall back


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3.9", "11.0.0", None, "installed"])
def test_tensorrt_10_and_unknown_versions_pass(version):
    fake = types.SimpleNamespace(__version__=version)
    assert check_tensorrt_module(fake) is fake
    assert tensorrt_version_problem(version) is None


def test_tensorrt_for_rtx_has_its_own_numbering():
    fake = types.SimpleNamespace(__version__="1.7.1.116")
    assert check_tensorrt_module(fake, "tensorrt-rtx") is fake
    assert tensorrt_version_problem("1.7.1.116") is not None  # as plain TensorRT it would be refused


def test_usable_says_why_in_the_refusal_line(monkeypatch):
    """The run-time's backend choice and `build --backend auto` print tensorrt_usable's reason."""
    import importlib
    import sys

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "8.6.2"
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    importlib.invalidate_caches()
    with pytest.raises(TensorRTTooOld):
        import_tensorrt("tensorrt")
    usable, why = tensorrt_usable("tensorrt")
    assert not usable and why.startswith("TensorRT 8.6.2, the TensorRT of JetPack 6.0")


# -- the camera's one-line errors, each cause --------------------------------------------------------

def test_csi_without_gstreamer(tmp_path):
    message = camera_open_failure("csi://0", tmp_path, build_info=GST_NO, inspect=element_loads)
    assert message.startswith("csi://0: cannot open the camera: this OpenCV has no GStreamer")
    assert "pip uninstall opencv-python" in message and one_line(message)


def test_csi_without_the_element(tmp_path):
    message = camera_open_failure("csi://0", tmp_path, build_info=GST_YES, inspect=element_missing)
    assert "GStreamer has no element nvarguscamerasrc" in message and "--runtime nvidia" in message
    assert "registry" in message and one_line(message)


def test_csi_static_tls(tmp_path):
    message = camera_open_failure("csi://0", tmp_path, build_info=GST_YES, inspect=lambda args: (1, TLS_OUTPUT))
    assert "libGLdispatch.so.0: cannot allocate memory in static TLS block" in message
    assert "LD_PRELOAD=/lib/aarch64-linux-gnu/libGLdispatch.so.0" in message and one_line(message)


def test_csi_argus_socket_missing_on_the_host_and_in_a_container(tmp_path):
    host = camera_open_failure("csi://0", tmp_path, build_info=GST_YES, inspect=element_loads)
    assert "no /tmp/argus_socket" in host and "sudo systemctl restart nvargus-daemon" in host
    (tmp_path / ".dockerenv").touch()
    inside = camera_open_failure("csi://0", tmp_path, build_info=GST_YES, inspect=element_loads)
    assert "-v /tmp/argus_socket:/tmp/argus_socket" in inside and one_line(inside)


def test_csi_argus_socket_made_a_directory_by_docker(tmp_path):
    (tmp_path / "tmp/argus_socket").mkdir(parents=True)
    message = camera_open_failure("csi://1", tmp_path, build_info=GST_YES, inspect=element_loads)
    assert "/tmp/argus_socket is a directory" in message and "sudo rm -r /tmp/argus_socket" in message


def test_csi_argus_daemon_not_running(short_tmp):
    make_root(short_tmp, {"proc/1/comm": "systemd\n", "proc/2/comm": "kthreadd\n", "dev/video0": ""})
    with argus_socket(short_tmp):
        message = camera_open_failure("csi://0", short_tmp, build_info=GST_YES, inspect=element_loads)
    assert "nvargus-daemon is not running" in message and one_line(message)


def test_csi_nothing_at_that_sensor(short_tmp):
    make_root(short_tmp, {"proc/1/comm": "systemd\n", "proc/812/comm": "nvargus-daemon\n", "dev/video0": ""})
    with argus_socket(short_tmp):
        message = camera_open_failure("csi://1", short_tmp, build_info=GST_YES, inspect=element_loads)
        assert "no /dev/video1: no camera at CSI sensor 1" in message
        fine = camera_open_failure("csi://0", short_tmp, build_info=GST_YES, inspect=element_loads)
    assert "look fine; another program may hold the camera" in fine


def test_camera_index_with_nothing_there(tmp_path):
    message = camera_open_failure("3", tmp_path, build_info=GST_NO)
    assert message == ("3: cannot open the camera: no /dev/video3: nothing at camera index 3 (`ls /dev/video*` "
                       "lists the cameras)")
    (tmp_path / ".dockerenv").touch()
    assert "add --device /dev/video2 to docker run" in camera_open_failure("/dev/video2", tmp_path, build_info=GST_NO)


def test_a_pipeline_names_its_missing_element(tmp_path):
    def inspect(args):
        return (0, "") if args[0] != "nvv4l2decoder" else (1, "No such element")

    message = camera_open_failure("rtspsrc location=rtsp://x ! rtph264depay ! nvv4l2decoder ! "
                                  "video/x-raw, format=BGRx ! appsink", tmp_path, build_info=GST_YES, inspect=inspect)
    assert "no element nvv4l2decoder" in message
    assert doctor.pipeline_elements("a ! video/x-raw(memory:NVMM), width=1 ! appsink drop=true") == ["a", "appsink"]


def test_camera_source_raises_the_diagnosis(tmp_path, monkeypatch):
    """The real path: OpenCV cannot open a camera index that does not exist; the UserError is the diagnosis."""
    from smoothdino.edge.sources import open_source

    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    with pytest.raises(UserError) as err:
        open_source("9", limit=1, retries=0)
    assert str(err.value).startswith("9: cannot open the camera: no /dev/video9") and one_line(str(err.value))
    if doctor.has_gstreamer(cv2.getBuildInformation()):
        return
    with pytest.raises(UserError, match="csi://0: cannot open the camera: this OpenCV has no GStreamer"):
        open_source("csi://0", limit=1, retries=0)


def test_tls_in_captured_stderr():
    """GStreamer's plugin scanner writes to file descriptor 2: the doctor captures it around the grab."""
    with captured_stderr() as text:
        os.write(2, TLS_OUTPUT.encode())
    assert tls_problem("".join(text)) and tls_problem("all fine") is None


# -- the doctor's checks on fake roots ----------------------------------------------------------------

@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    return path


def jetson_container(root: Path) -> Path:
    """JetPack 6.2 in the container run.sh starts: no device tree, the host copy of the model, the GPU nodes."""
    files = {k: v for k, v in ORIN_NANO_JP62.items() if k != "proc/device-tree/model"}
    files.update({"tmp/nv_jetson_model": ORIN_NANO_JP62["proc/device-tree/model"], ".dockerenv": "",
                  "dev/nvmap": "", "proc/meminfo": MEMINFO})
    return make_root(root, files)


HEALTHY = dict(tensorrt_version="10.3.0", tensorrt_runs=(True, ""), gpu=None, build_info=GST_YES,
               inspect=element_loads, docker=None)


def lines(report) -> dict[str, str]:
    for line in report.lines():
        assert one_line(line)
    return {c.what: c.status for c in report.checks}


def test_healthy_jetson_container(short_tmp, video):
    root = jetson_container(short_tmp / "root")
    with argus_socket(root):
        report = run_doctor(root, source=str(video), **HEALTHY)
    status = lines(report)
    assert report.exit_code == 0, report.lines()
    assert status["L4T / JetPack"] == status["Jetson module"] == status["TensorRT"] == "ok"
    assert status["Docker"] == status["Argus (CSI cameras)"] == status["GStreamer"] == "ok"
    assert status["camera / source"] == status["power mode"] == status["clocks"] == status["memory"] == "ok"
    text = "\n".join(report.lines())
    assert "ok      Jetson module: NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super" in text
    assert "L4T 36.4.3 = JetPack 6.2" in text and "one 64x48 frame" in text and "OpenCV's video reader" in text
    assert report.lines()[-1] == "doctor: no problems"


def test_jetpack_6_0_and_tensorrt_8_6(tmp_path):
    files = {"etc/nv_tegra_release": "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n",
             "proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\0", "proc/meminfo": MEMINFO}
    report = run_doctor(make_root(tmp_path, files), **{**HEALTHY, "tensorrt_version": "8.6.2"})
    problems = {c.what: c.text for c in report.problems}
    assert "JetPack 6.1 or 6.2" in problems["L4T / JetPack"] and "L4T 36.3.0" in problems["L4T / JetPack"]
    assert problems["TensorRT"] == tensorrt_version_problem("8.6.2")
    assert report.exit_code == 2


def test_docker_without_the_nvidia_runtime_on_the_host(tmp_path):
    root = make_root(tmp_path, {**ORIN_NANO_JP62, "usr/bin/docker": "", "proc/meminfo": MEMINFO,
                                "etc/docker/daemon.json": json.dumps({"data-root": "/mnt/docker"})})
    report = run_doctor(root, **HEALTHY)
    docker = next(c for c in report.checks if c.what == "Docker")
    assert docker.status == "problem"
    assert "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker" in docker.text
    (root / "etc/docker/daemon.json").write_text(json.dumps(
        {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}, "default-runtime": "nvidia"}))
    docker = next(c for c in run_doctor(root, **HEALTHY).checks if c.what == "Docker")
    assert docker.status == "ok" and "default runtime" in docker.text
    (root / "etc/docker/daemon.json").unlink()  # configured elsewhere: docker info still lists it
    checks = run_doctor(root, **{**HEALTHY, "docker": (0, '{"nvidia":{"path":"nvidia-container-runtime"}}')}).checks
    assert next(c for c in checks if c.what == "Docker").status == "ok"
    denied = run_doctor(root, **{**HEALTHY, "docker": (1, "permission denied while trying to connect to the Docker "
                                                          "daemon socket at unix:///var/run/docker.sock")})
    assert "sudo usermod -aG docker $USER" in next(c for c in denied.checks if c.what == "Docker").text


def test_container_without_the_nvidia_runtime_and_argus(tmp_path):
    root = jetson_container(tmp_path)
    (root / "dev/nvmap").unlink()
    (root / "tmp/argus_socket").mkdir(parents=True)  # what docker run -v makes when the host had no socket
    report = run_doctor(root, **HEALTHY)
    problems = {c.what: c.text for c in report.problems}
    assert "docker run --runtime nvidia" in problems["Docker"]
    assert "is a directory" in problems["Argus (CSI cameras)"]
    assert report.exit_code == 2 and report.lines()[-1].startswith("doctor: 2 problems")


def test_gstreamer_problems_on_a_jetson(tmp_path):
    root = jetson_container(tmp_path)
    tls = run_doctor(root, **{**HEALTHY, "inspect": lambda args: (1, TLS_OUTPUT)})
    assert "LD_PRELOAD=" in next(c for c in tls.problems if c.what == "GStreamer").text
    pip_opencv = run_doctor(root, **{**HEALTHY, "build_info": GST_NO})
    assert "pip uninstall opencv-python" in next(c for c in pip_opencv.problems if c.what == "OpenCV").text


def test_power_mode_and_clocks_are_notes(tmp_path):
    files = {**ORIN_NANO_JP62, "var/lib/nvpmodel/status": "pmode:0000 fmode:quiet\n", "proc/meminfo": MEMINFO,
             "sys/class/devfreq/17000000.gpu/min_freq": "306000000\n"}
    report = run_doctor(make_root(tmp_path, files), **HEALTHY)
    notes = {c.what: c.text for c in report.checks if c.status == "note"}
    assert notes["power mode"] == "15W (id 0); the fastest is MAXN_SUPER: sudo nvpmodel -m 2"
    assert "sudo jetson_clocks" in notes["clocks"]


def test_low_memory(tmp_path):
    files = {**ORIN_NANO_JP62, "proc/meminfo": "MemTotal: 3800000 kB\nMemAvailable: 600000 kB\nSwapTotal: 0 kB\n"}
    report = run_doctor(make_root(tmp_path, files), **HEALTHY)
    assert "0.6 GiB free of 3.6 GiB" in next(c for c in report.problems if c.what == "memory").text


def write_export(folder: Path, tensorrt: str | None, engines: bool = True) -> Path:
    folder.mkdir(parents=True)
    stages = {s: {"onnx": {"fp16": f"{s}.onnx"}, "engine": f"{s}.engine" if engines else None}
              for s in ("encoder", "adapter", "decoder")}
    files = {}
    for stage in stages.values():
        for name in [*stage["onnx"].values(), stage["engine"]]:
            if name:
                (folder / name).write_bytes(b"x" * 10)
                files[name] = {"bytes": 10, "sha256": "0"}
    manifest = {"arch": "vits14", "adapter": "temporal", "precision": "fp16", "frame_size": [480, 640],
                "stages": stages, "files": files, "versions": {"tensorrt": tensorrt},
                "tensorrt": {"flavour": "tensorrt", "version": tensorrt, "compute_capabilities": []} if tensorrt else None,
                "gpu": {"name": "Orin (nvgpu)", "compute_capability": "8.7"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_export_against_this_tensorrt(tmp_path):
    root = make_root(tmp_path / "root", {**ORIN_NANO_JP62, "proc/meminfo": MEMINFO})

    def export_check(folder):
        return next(c for c in run_doctor(root, engines=folder, **HEALTHY).checks if c.what == f"export {folder}")

    same = export_check(write_export(tmp_path / "same", "10.3.0"))
    assert same.status == "ok" and "engines of TensorRT 10.3.0 on Orin (nvgpu)" in same.text
    other = export_check(write_export(tmp_path / "other", "10.7.0"))
    assert other.status == "problem" and "TensorRT 10.7.0, this machine has 10.3.0" in other.text
    assert f"smoothdino build --engines {tmp_path / 'other'}" in other.text
    graphs = export_check(write_export(tmp_path / "graphs", None, engines=False))
    assert graphs.status == "note" and "ONNX graphs only" in graphs.text
    truncated = write_export(tmp_path / "truncated", "10.3.0")
    (truncated / "decoder.engine").write_bytes(b"x")
    assert "1 bytes, 10 when exported" in export_check(truncated).text
    missing = export_check(tmp_path / "nowhere")
    assert missing.status == "problem" and "ssh jetson mkdir -p" in missing.text


def test_source_that_does_not_open(tmp_path):
    root = make_root(tmp_path, {"proc/meminfo": MEMINFO})  # not a Jetson: the Jetson checks are skipped
    report = run_doctor(root, source="9", **HEALTHY)
    source = next(c for c in report.checks if c.what == "camera / source")
    assert source.status == "problem" and source.text.startswith("9: cannot open the camera: no /dev/video9")
    assert [c.what for c in report.checks if c.status == "problem"] == ["camera / source"]


# -- the command --------------------------------------------------------------------------------------

def test_cli_exit_0_when_nothing_is_wrong(tmp_path, video, monkeypatch):
    from smoothdino.cli import app

    root = make_root(tmp_path / "root", {"proc/meminfo": MEMINFO})
    monkeypatch.setenv(ROOT_ENV, str(root))
    result = CliRunner().invoke(app, ["doctor", "--source", str(video)])
    assert result.exit_code == 0, result.output
    assert "ok      camera / source:" in result.output and "doctor: no problems" in result.output
    assert "PROBLEM" not in result.output


def test_cli_exit_2_with_one_line_per_problem(tmp_path, monkeypatch):
    from smoothdino.cli import app

    root = jetson_container(tmp_path / "root")  # no Argus socket mounted
    monkeypatch.setenv(ROOT_ENV, str(root))
    result = CliRunner().invoke(app, ["doctor", "--source", "7"])
    assert result.exit_code == 2, result.output
    problems = [ln for ln in result.output.splitlines() if ln.startswith("PROBLEM")]
    assert any("Argus (CSI cameras): no /tmp/argus_socket in this container" in ln for ln in problems)
    assert any(ln.startswith("PROBLEM camera / source: 7: cannot open the camera: no /dev/video7") for ln in problems)
    n = len(problems)
    assert result.output.strip().splitlines()[-1].startswith(f"doctor: {n} problem")
    hidden = CliRunner().invoke(app, ["doctor", "--help"])
    assert "--root" not in hidden.output and "--engines" in hidden.output
    explicit = CliRunner().invoke(app, ["doctor", "--root", str(tmp_path / "root")], env={ROOT_ENV: ""})
    assert explicit.exit_code == 2 and "Argus (CSI cameras)" in explicit.output
