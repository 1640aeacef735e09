"""`smoothdino doctor`: what a Jetson owner runs first, on the host and in the container.

Each check gives one line: `ok`, `PROBLEM` (with its fix; any problem makes the exit code 2) or `note` (worth
knowing, not in the way). The checks: the Jetson and its L4T/JetPack; TensorRT's version, and an export's
manifest against it (--engines); ONNX Runtime's CUDA provider (an NVIDIA GPU without TensorRT); Docker's nvidia
runtime (on the host: /etc/docker/daemon.json, `docker info`; in a container: the Jetson's GPU device nodes); the
Argus socket and daemon; OpenCV's GStreamer and the nvarguscamerasrc element; one frame grabbed from --source,
with the pipeline it used; power mode and clocks; free memory. The system facts come from edge/machine
(camera_checks.py, jetson.py, environment.py); OpenCV, TensorRT and the frame sources are imported inside the
functions that need them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from smoothdino.core.errors import UserError
from smoothdino.edge.machine import environment
from smoothdino.edge.machine.camera_checks import (  # noqa: F401 (tests and callers read them here too)
    ARGUS_SOCKET,
    GL_DISPATCH,
    GST_REGISTRY,
    JETSON_GPU_NODES,
    NVIDIA_RUNTIME_FIX,
    ROOT_ENV,
    GstInspect,
    _video_index,
    argus_problem,
    camera_open_cause,
    camera_open_failure,
    docker_info,
    element_problem,
    gst_inspect,
    has_gstreamer,
    in_container,
    one_line,
    opencv_build_information,
    pipeline_elements,
    process_running,
    system_root,
    tls_problem,
)
from smoothdino.edge.machine.jetson import (
    MODEL_MOUNT_HINT,
    clocks_locked,
    jetson_info,
    parse_nvpmodel_conf,
    power_mode,
    read_text,
)

# -- the report -------------------------------------------------------------------------------------

LABELS = {"ok": "ok", "problem": "PROBLEM", "note": "note"}
LOW_MEMORY_MIB, TIGHT_MEMORY_MIB = 1024, 2048  # free memory below which a frame pass or an engine build may fail


@dataclass
class Check:
    what: str
    status: str  # ok | problem | note
    text: str

    def line(self) -> str:
        return f"{LABELS[self.status]:<7} {self.what}: {one_line(self.text)}"


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, what: str, status: str, text: str) -> None:
        self.checks.append(Check(what, status, text))

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status == "problem"]

    @property
    def exit_code(self) -> int:
        return 2 if self.problems else 0

    def lines(self) -> list[str]:
        n = len(self.problems)
        summary = ("doctor: no problems" if n == 0 else "doctor: 1 problem" if n == 1
                   else f"doctor: {n} problems; fix them in this order (an early one may cause the later ones)")
        return [c.line() for c in self.checks] + [summary]


# -- the checks --------------------------------------------------------------------------------------

def check_platform(report: Report, info: dict | None, container: bool) -> None:
    if info is None:
        report.add("Jetson", "note", "not a Jetson (no /etc/nv_tegra_release, no device-tree model): the Jetson "
                                     "checks are skipped")
        return
    l4t, jetpack, module = info.get("l4t"), info.get("jetpack"), info.get("module")
    if l4t is None:
        report.add("L4T / JetPack", "note", "no /etc/nv_tegra_release here" + (
            ": add -v /etc/nv_tegra_release:/etc/nv_tegra_release:ro to docker run" if container else ""))
    else:
        major, minor = (int(x) for x in l4t.split(".")[:2])
        if (major, minor) < (36, 4):
            report.add("L4T / JetPack", "problem",
                       f"L4T {l4t} (JetPack {jetpack or '?'}) ships TensorRT 8.x, which smoothdino refuses (it needs "
                       "TensorRT 10): flash JetPack 6.1 or 6.2 (L4T 36.4) and build the image on l4t-jetpack:r36.4.0")
        else:
            report.add("L4T / JetPack", "ok", f"L4T {l4t} = JetPack {jetpack or '?'}")
    if module:
        report.add("Jetson module", "ok", module)
    else:
        report.add("Jetson module", "note", f"unknown: {MODEL_MOUNT_HINT}")


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def check_tensorrt(report: Report, on_jetson: bool, version: str | None, runs: tuple[bool, str],
                   engines: Path | None, gpu: dict | None) -> None:
    if version is None:
        if on_jetson:
            report.add("TensorRT", "problem", "TensorRT's Python bindings are not importable: in Docker use this "
                       "project's image (deploy/jetson/Dockerfile installs python3-libnvinfer); on the host `sudo apt "
                       "install python3-libnvinfer`")
        else:
            from smoothdino.core.extras import install_extra

            report.add("TensorRT", "note", "not installed: ONNX Runtime runs the graphs (on an NVIDIA GPU: "
                                           f"{install_extra('tensorrt')})")
    elif environment.tensorrt_version_problem(version):
        report.add("TensorRT", "problem", environment.tensorrt_version_problem(version))
    elif not runs[0]:
        fix = (": in Docker run the image with --runtime nvidia (and configure Docker's nvidia runtime on the host)"
               if on_jetson else "")
        report.add("TensorRT", "problem" if on_jetson else "note", f"TensorRT {version} cannot run engines here "
                   f"({runs[1]}){fix}")
    else:
        report.add("TensorRT", "ok", f"TensorRT {version} runs engines")
    if engines is not None:
        check_engines(report, Path(engines), version, gpu, on_jetson)


def check_engines(report: Report, folder: Path, version: str | None, gpu: dict | None, on_jetson: bool) -> None:
    what = f"export {folder}"
    manifest = read_manifest(folder)
    if manifest is None:
        report.add(what, "problem", f"no readable {folder / 'manifest.json'}: copy the whole export folder "
                                    "(ssh jetson mkdir -p ~/smoothdino/engines, then scp -r)")
        return
    for name, record in sorted((manifest.get("files") or {}).items()):
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        if size is None or size != record.get("bytes"):
            state = "missing" if size is None else f"{size} bytes, {record.get('bytes')} when exported"
            report.add(what, "problem", f"{path}: {state} (an interrupted copy): copy the export folder again")
            return
    stages = manifest.get("stages") or {}
    have_engines = bool(stages) and all((s or {}).get("engine") for s in stages.values())
    built = manifest.get("tensorrt") or {}
    flavour = built.get("flavour") or ("tensorrt" if (manifest.get("versions") or {}).get("tensorrt") else None)
    built_version = built.get("version") or (manifest.get("versions") or {}).get("tensorrt")
    rebuild = f"smoothdino build --engines {folder}"
    if not have_engines:
        report.add(what, "note", f"ONNX graphs only: `{rebuild}` makes this machine's TensorRT engines (without it "
                                 "ONNX Runtime runs them on the CPU)")
        return
    if flavour == "tensorrt-rtx" and on_jetson:
        report.add(what, "problem", f"engines built with TensorRT for RTX, which does not run on a Jetson: `{rebuild} "
                                    "--backend tensorrt`")
        return
    if built_version and version and built_version != version:
        report.add(what, "problem", f"engines built with TensorRT {built_version}, this machine has {version}: "
                                    f"`{rebuild}` here (the same image that runs them)")
        return
    built_gpu = manifest.get("gpu") or {}
    if gpu and built_gpu.get("name") and built_gpu.get("name") != gpu.get("name"):
        report.add(what, "problem", f"engines built on {built_gpu.get('name')}, this GPU is {gpu.get('name')}: "
                                    f"`{rebuild}` here")
        return
    size = "x".join(str(n) for n in manifest.get("frame_size") or []) or "?"
    report.add(what, "ok", f"{manifest.get('arch')}+{manifest.get('adapter')} {manifest.get('precision')} {size}, "
                           f"engines of TensorRT {built_version or '?'}" + (f" on {built_gpu['name']}" if built_gpu.get("name") else ""))


def docker_installed(root: Path) -> bool:
    if root == Path("/"):
        return shutil.which("docker") is not None
    return any((root / d / "docker").exists() for d in ("usr/bin", "usr/local/bin", "bin"))


def check_docker(report: Report, root: Path, container: bool, on_jetson: bool,
                 info: tuple[int, str] | None) -> None:
    if container:
        if not on_jetson:
            report.add("Docker", "note", "in a container")
        elif any((root / node).exists() for node in JETSON_GPU_NODES):
            report.add("Docker", "ok", "in a container with the Jetson's GPU devices (--runtime nvidia)")
        else:
            report.add("Docker", "problem", "in a container without the Jetson's GPU devices (/dev/nvmap): run it "
                                            "with docker run --runtime nvidia")
        return
    if not docker_installed(root):
        if on_jetson:
            report.add("Docker", "note", "not installed (needed for the image): deploy/jetson/README.md, step 1")
        return
    text = read_text(root / "etc/docker/daemon.json")
    runtimes: dict = {}
    if text is not None:
        try:
            runtimes = json.loads(text).get("runtimes") or {}
        except (ValueError, AttributeError):
            report.add("Docker", "problem", "/etc/docker/daemon.json is not valid JSON (Docker will not start): fix "
                                            f"it, or move it away and run `{NVIDIA_RUNTIME_FIX}`")
            return
    if info is not None and info[0] != 0:
        out = info[1].lower()
        if "permission denied" in out:
            report.add("Docker", "problem", "this user cannot reach Docker: sudo usermod -aG docker $USER, then log out "
                                            "and in (or `newgrp docker`)")
            return
        if "cannot connect" in out or "is the docker daemon running" in out:
            report.add("Docker", "problem", "the Docker daemon is not running: sudo systemctl restart docker")
            return
    if "nvidia" in runtimes or (info is not None and info[0] == 0 and "nvidia" in info[1]):
        default = " (the default runtime)" if '"default-runtime": "nvidia"' in (text or "").replace("'", '"') else ""
        report.add("Docker", "ok", f"the nvidia runtime is configured{default}")
    else:
        report.add("Docker", "problem" if on_jetson else "note",
                   f"Docker has no nvidia runtime (not in /etc/docker/daemon.json): {NVIDIA_RUNTIME_FIX}")


def check_argus(report: Report, root: Path, container: bool) -> None:
    problem = argus_problem(root, container)
    if problem:
        report.add("Argus (CSI cameras)", "problem", problem)
        return
    daemon = "" if container else "; nvargus-daemon runs" if process_running(root, "nvargus-daemon") else ""
    report.add("Argus (CSI cameras)", "ok", f"/tmp/argus_socket is there{daemon}")


def check_gstreamer(report: Report, root: Path, on_jetson: bool, build_info: str | None,
                    inspect: GstInspect) -> None:
    if build_info is None:
        report.add("OpenCV", "problem", "cv2 is not importable: in Docker use this project's image; on the host `sudo "
                                        "apt install nvidia-opencv libopencv-python`")
        return
    version = re.search(r"General configuration for OpenCV\s+(\S+)", build_info)
    name = f"OpenCV {version[1]}" if version else "OpenCV"
    if not has_gstreamer(build_info):
        report.add("OpenCV", "problem" if on_jetson else "note",
                   f"{name} has no GStreamer: csi://N and pipelines cannot open (files and USB cameras can)"
                   + ("; a pip opencv-python shadows JetPack's: `pip uninstall opencv-python`, or use the image"
                      if on_jetson else ""))
        return
    report.add("OpenCV", "ok", f"{name} with GStreamer")
    if not on_jetson:
        return
    answer = inspect(["nvarguscamerasrc"])
    if answer is None:
        report.add("GStreamer", "note", "gst-inspect-1.0 not found, nvarguscamerasrc not checked (sudo apt install "
                                        "gstreamer1.0-tools)")
        return
    problem = element_problem("nvarguscamerasrc", answer)
    report.add("GStreamer", "problem" if problem else "ok", problem or "nvarguscamerasrc loads")
    preload = os.environ.get("LD_PRELOAD", "")
    if not problem and "libGLdispatch" not in preload and (root / GL_DISPATCH.lstrip("/")).exists():
        report.add("GStreamer", "note", f"LD_PRELOAD does not name {GL_DISPATCH}: if a camera fails with 'static TLS', "
                                        f"export LD_PRELOAD={GL_DISPATCH}")


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """What this process and its children (gst-plugin-scanner) write to file descriptor 2, GStreamer's warnings
    included; the list holds the text once the block ends."""
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", errors="replace"))


def load_like_live() -> None:
    """TensorRT, pycuda and OpenCV first, as `live` loads them before GStreamer loads nvarguscamerasrc: the order
    that exhausts the static TLS block on a Jetson. Whatever is missing is skipped."""
    try:
        environment.import_tensorrt("tensorrt")
    except Exception:
        pass
    try:
        import pycuda.driver  # noqa: F401
    except Exception:
        pass


def source_route(spec: str) -> str:
    """How the frames come, as `live` would open `spec`."""
    from smoothdino.edge.sources import gstreamer_csi

    csi = re.fullmatch(r"csi://(\d*)", spec)
    if csi:
        return f"GStreamer pipeline: {gstreamer_csi(int(csi[1] or 0))}"
    if "!" in spec:
        return f"GStreamer pipeline: {spec}"
    if _video_index(spec) is not None:
        return f"OpenCV VideoCapture on /dev/video{_video_index(spec)}"
    path = Path(spec).expanduser()
    if path.is_dir():
        return "a folder of images"
    if path.is_file():
        return "OpenCV's video reader (a file)"
    return "OpenCV VideoCapture" if "://" in spec else "the synthetic scene"


def check_source(report: Report, spec: str | None, timeout: float = 10.0) -> None:
    what = "camera / source"
    if not spec:
        report.add(what, "note", "no --source: pass --source csi://0 (or 0, /dev/video0, a video file) to grab one frame")
        return
    from smoothdino.edge.sources import open_source

    load_like_live()
    start = time.monotonic()
    frame, failure = None, None
    with captured_stderr() as stderr:
        try:
            stream = open_source(spec, limit=1, retries=0, read_timeout=timeout)
            try:
                frame = next(iter(stream), None)
            finally:
                stream.close()
        except UserError as err:
            failure = str(err)
        except Exception as err:  # an OpenCV error, a broken file
            failure = f"{spec}: {type(err).__name__}: {err}"
    seconds = time.monotonic() - start
    tls = tls_problem("".join(stderr))
    if frame is not None:
        h, w = frame.rgb.shape[:2]
        report.add(what, "ok", f"{spec}: one {w}x{h} frame in {seconds:.2f} s via {source_route(spec)}")
        if tls:
            report.add("GStreamer", "note", tls)
        return
    if tls:
        report.add(what, "problem", f"{spec}: {tls}")
        return
    report.add(what, "problem", failure or (
        f"{spec}: opened, but no frame within {timeout:.0f} s (via {source_route(spec)})"
        + ("; sudo systemctl restart nvargus-daemon on the host" if spec.startswith("csi://") else "")))


def check_power(report: Report, root: Path) -> None:
    names, _ = parse_nvpmodel_conf(read_text(root / "etc/nvpmodel.conf"))
    mode = power_mode(root)
    fastest = next(((i, n) for i, n in sorted(names.items()) if n.upper().startswith("MAXN")), None)
    if mode is None:
        report.add("power mode", "note", "unknown (no /etc/nvpmodel.conf here; in Docker add -v /etc/nvpmodel.conf:"
                                         "/etc/nvpmodel.conf:ro -v /var/lib/nvpmodel:/var/lib/nvpmodel:ro)")
    elif fastest and mode["id"] != fastest[0]:
        report.add("power mode", "note", f"{mode['name'] or '?'} (id {mode['id']}); the fastest is {fastest[1]}: "
                                         f"sudo nvpmodel -m {fastest[0]}")
    else:
        report.add("power mode", "ok", f"{mode['name'] or '?'} (id {mode['id']}, {mode['source']})")
    locked = clocks_locked(root)
    if locked is None:
        report.add("clocks", "note", "unknown (no cpufreq/devfreq files here)")
    elif locked:
        report.add("clocks", "ok", "locked (jetson_clocks)")
    else:
        report.add("clocks", "note", "not locked: `sudo jetson_clocks` on the host before timing (after every boot)")


def check_onnxruntime(report: Report, providers: list[str], gpu: dict | None) -> None:
    """Whether ONNX Runtime can use the NVIDIA GPU (its CUDA provider): what runs the graphs where TensorRT does not."""
    from smoothdino.edge.engines.factory import cuda_provider_state

    cuda, text = cuda_provider_state(providers, (gpu or {}).get("name"))
    report.add("ONNX Runtime", "ok" if cuda or not gpu else "note", text)


def parse_meminfo(text: str | None) -> dict[str, int]:
    """/proc/meminfo -> {"MemTotal": kiB, ...}."""
    return {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+)\s*kB", text or "", re.MULTILINE)}


def check_memory(report: Report, root: Path) -> None:
    mem = parse_meminfo(read_text(root / "proc/meminfo"))
    if "MemTotal" not in mem:
        report.add("memory", "note", "unknown (no /proc/meminfo)")
        return
    free = mem.get("MemAvailable", mem.get("MemFree", 0)) / 1024
    total, swap = mem["MemTotal"] / 1024, mem.get("SwapTotal", 0) / 1024
    text = f"{free / 1024:.1f} GiB free of {total / 1024:.1f} GiB (swap {swap / 1024:.1f} GiB)"
    if free < LOW_MEMORY_MIB:
        report.add("memory", "problem", f"{text}: engines may not build or load; close programs, or stop the desktop "
                                        "(sudo systemctl set-default multi-user.target, then reboot)")
    elif free < TIGHT_MEMORY_MIB:
        report.add("memory", "note", f"{text}: tight for building engines (smoothdino build --workspace-mib 256)")
    else:
        report.add("memory", "ok", text)


_AUTO = object()


@contextmanager
def _root_for_sources(root: Path) -> Iterator[None]:
    """edge/sources.py explains a camera that does not open with camera_open_failure, which reads $ROOT_ENV."""
    before = os.environ.get(ROOT_ENV)
    os.environ[ROOT_ENV] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ROOT_ENV, None)
        else:
            os.environ[ROOT_ENV] = before


def run_doctor(root: Path | str | None = None, engines: Path | None = None, source: str | None = None, *,
               timeout: float = 10.0, tensorrt_version=_AUTO, tensorrt_runs=_AUTO, gpu=_AUTO, build_info=_AUTO,
               inspect: GstInspect | None = None, docker=_AUTO, providers=_AUTO) -> Report:
    """Every check, in the order a newcomer fixes them. The keyword arguments replace what this process and its
    tools would answer (tests); left out, they are asked."""
    root = system_root(root)
    container = in_container(root)
    info = jetson_info(root)
    on_jetson = info is not None
    report = Report()
    check_platform(report, info, container)
    version = environment.tensorrt_installed_version() if tensorrt_version is _AUTO else tensorrt_version
    runs = (environment.tensorrt_usable() if version else (False, "not installed")) if tensorrt_runs is _AUTO \
        else tensorrt_runs
    gpu = environment.gpu() if gpu is _AUTO else gpu
    check_tensorrt(report, on_jetson, version, runs, engines, gpu)
    check_onnxruntime(report, environment.onnxruntime_providers() if providers is _AUTO else providers, gpu)
    check_docker(report, root, container, on_jetson,
                 (docker_info() if root == Path("/") else None) if docker is _AUTO else docker)
    if on_jetson:
        check_argus(report, root, container)
    check_gstreamer(report, root, on_jetson, opencv_build_information() if build_info is _AUTO else build_info,
                    inspect or gst_inspect)
    with _root_for_sources(root):
        check_source(report, source, timeout)
    if on_jetson:
        check_power(report, root)
    check_memory(report, root)
    return report
