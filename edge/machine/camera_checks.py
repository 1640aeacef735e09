"""Why a camera does not open, and the system facts behind it: GStreamer in OpenCV, a GStreamer element
(gst-inspect-1.0), the static-TLS error of libGLdispatch, the Argus socket and daemon of a Jetson CSI camera, a
/dev/videoN that is not there. `camera_open_failure` is the one line a camera that does not open becomes
(sources/camera.py raises it); `smoothdino doctor` (commands/doctor.py) reports the same facts.

Everything read from files is read under a root folder (`root`, or SMOOTHDINO_SYSTEM_ROOT), so tests build fake
device trees, sockets and release files in a temporary folder. What a file cannot tell (gst-inspect-1.0,
`docker info`, OpenCV's build) comes from a small function each, which tests replace by passing its answer.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from .jetson import (
    read_text,
)

ROOT_ENV = "SMOOTHDINO_SYSTEM_ROOT"
ARGUS_SOCKET = "tmp/argus_socket"
GL_DISPATCH = "/lib/aarch64-linux-gnu/libGLdispatch.so.0"  # jetson-containers' fix for the static TLS error
GST_REGISTRY = "~/.cache/gstreamer-1.0/registry.*.bin"  # where GStreamer remembers plugins that failed to load
JETSON_GPU_NODES = ("dev/nvmap", "dev/nvhost-ctrl-gpu", "dev/nvgpu")  # what --runtime nvidia brings in
NVIDIA_RUNTIME_FIX = "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"

GstInspect = Callable[[list[str]], "tuple[int, str] | None"]  # gst-inspect-1.0 args -> (exit code, output)


def system_root(root: Path | str | None = None) -> Path:
    """The folder the system files are read under: `root`, else $SMOOTHDINO_SYSTEM_ROOT, else /."""
    return Path(root or os.environ.get(ROOT_ENV) or "/")


def in_container(root: Path) -> bool:
    """Docker leaves /.dockerenv in every container, Podman /run/.containerenv."""
    return (root / ".dockerenv").exists() or (root / "run/.containerenv").exists()


def one_line(text: str) -> str:
    return " ".join(str(text).split())


# -- what this process and its tools say (tests pass these answers instead) --------------------------

def gst_inspect(args: list[str], timeout: float = 30.0) -> tuple[int, str] | None:
    """`gst-inspect-1.0 ARGS` -> (exit code, stdout + stderr); None where the tool is not installed."""
    exe = shutil.which("gst-inspect-1.0")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode, done.stdout + done.stderr


def opencv_build_information() -> str | None:
    try:
        import cv2

        return cv2.getBuildInformation()
    except Exception:
        return None


def has_gstreamer(build_info: str) -> bool:
    return bool(re.search(r"GStreamer:\s+YES", build_info))


def docker_info() -> tuple[int, str] | None:
    """`docker info`'s runtimes -> (exit code, output); None without a docker command."""
    exe = shutil.which("docker")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True,
                              timeout=15)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 1, str(err)
    return done.returncode, done.stdout + done.stderr


def process_running(root: Path, name: str) -> bool | None:
    """Whether a process of that name (/proc/<pid>/comm) runs; None where no process is visible."""
    comms = list((root / "proc").glob("[0-9]*/comm"))
    if not comms:
        return None
    return any((read_text(c) or "").strip() == name for c in comms)


# -- the camera: why it does not open ---------------------------------------------------------------

def tls_problem(text: str | None) -> str | None:
    """The libGLdispatch static-TLS failure in GStreamer's output, as one line with its fix."""
    line = next((ln for ln in (text or "").splitlines() if "static TLS" in ln), None)
    if line is None:
        return None
    library = re.search(r"(\S*lib[\w.+-]+\.so[\w.]*): cannot allocate memory in static TLS block", line)
    return (f"GStreamer could not load a plugin ({library[1] if library else 'a library'}: cannot allocate memory "
            f"in static TLS block); preload it: LD_PRELOAD={GL_DISPATCH} (the image sets it; `docker run -e "
            f"LD_PRELOAD={GL_DISPATCH}` for another image, `export LD_PRELOAD=...` on the host), then `rm "
            f"{GST_REGISTRY}` so GStreamer retries the plugins it gave up on")


def pipeline_elements(pipeline: str) -> list[str]:
    """The element names of a gst-launch style pipeline (caps such as video/x-raw,... are not elements)."""
    names = []
    for part in pipeline.split("!"):
        token = part.strip().split(None, 1)[0] if part.strip() else ""
        if re.fullmatch(r"[a-z0-9][a-z0-9_-]*", token):
            names.append(token)
    return names


def element_problem(element: str, result: tuple[int, str] | None) -> str | None:
    """`gst-inspect-1.0 ELEMENT`'s answer -> the problem, None when the element loads (or nothing is known)."""
    if result is None:
        return None
    code, output = result
    tls = tls_problem(output)
    if tls:
        return tls
    if code == 0:
        return None
    fix = ("it comes with JetPack (nvidia-l4t-gstreamer): run the image with --runtime nvidia; on the host `sudo apt "
           "install nvidia-l4t-gstreamer`" if element == "nvarguscamerasrc" else "install the GStreamer plugin that has it")
    return (f"GStreamer has no element {element} (`gst-inspect-1.0 {element}` fails); {fix}; a plugin that once failed "
            f"to load stays blacklisted until `rm {GST_REGISTRY}`")


def argus_problem(root: Path, container: bool) -> str | None:
    """Whether nvarguscamerasrc can reach the Argus daemon: its socket, and (on the host) the daemon process."""
    where = "on the host " if container else ""
    try:
        mode = (root / ARGUS_SOCKET).lstat().st_mode
    except OSError:
        mode = None
    if mode is None:
        if container:
            return ("no /tmp/argus_socket in this container, so nvarguscamerasrc cannot reach the Argus daemon: add "
                    "-v /tmp/argus_socket:/tmp/argus_socket to docker run (and on the host check `systemctl status "
                    "nvargus-daemon`)")
        return "no /tmp/argus_socket: the Argus daemon is not answering: sudo systemctl restart nvargus-daemon"
    if stat.S_ISDIR(mode):
        return (f"/tmp/argus_socket is a directory, not the Argus socket (docker run makes one when nvargus-daemon was "
                f"not running): {where}sudo rm -r /tmp/argus_socket && sudo systemctl restart nvargus-daemon")
    if not stat.S_ISSOCK(mode):
        return (f"/tmp/argus_socket is not a socket: {where}sudo rm /tmp/argus_socket && sudo systemctl restart "
                "nvargus-daemon")
    if not container and process_running(root, "nvargus-daemon") is False:
        return ("nvargus-daemon is not running (/tmp/argus_socket is stale), so Argus is not answering: sudo systemctl "
                "restart nvargus-daemon")
    return None


def _video_index(spec: str) -> int | None:
    match = re.fullmatch(r"(?:/dev/video)?(\d+)", spec)
    return int(match[1]) if match else None


def camera_open_cause(spec: str, root: Path | str | None = None, build_info: str | None = None,
                      inspect: GstInspect | None = None) -> str:
    """Why OpenCV could not open `spec`, as far as this machine tells: GStreamer missing (OpenCV's build
    information), the element missing (gst-inspect-1.0, when installed), Argus not answering (/tmp/argus_socket,
    nvargus-daemon), nothing at that index (/dev/videoN). `build_info` None: ask OpenCV; `inspect` None: run
    gst-inspect-1.0."""
    root = system_root(root)
    container = in_container(root)
    csi = re.fullmatch(r"csi://(\d*)", spec)
    if csi or "!" in spec:
        info = build_info if build_info is not None else opencv_build_information()
        if info is not None and not has_gstreamer(info):
            what = "csi://N goes through GStreamer (nvarguscamerasrc)" if csi else "a pipeline needs GStreamer"
            return (f"this OpenCV has no GStreamer (cv2.getBuildInformation(): GStreamer NO) and {what}; PyPI's "
                    "opencv-python has none: on a Jetson use JetPack's OpenCV (`pip uninstall opencv-python`, which "
                    "shadows it) or this project's image (its build refuses a pip OpenCV)")
        elements = ["nvarguscamerasrc"] if csi else pipeline_elements(spec)
        for element in elements:
            answer = (inspect or gst_inspect)([element])
            if answer is None:
                break  # no gst-inspect-1.0 here: nothing known about the elements
            problem = element_problem(element, answer)
            if problem:
                return problem
        if "nvarguscamerasrc" in elements:
            problem = argus_problem(root, container)
            if problem:
                return problem
    sensor = int(csi[1] or 0) if csi else None
    if sensor is not None and not container and not (root / f"dev/video{sensor}").exists():
        return (f"no /dev/video{sensor}: no camera at CSI sensor {sensor} (check the ribbon cable and `ls /dev/video*`; "
                "a sensor the device tree does not list is enabled with sudo /opt/nvidia/jetson-io/jetson-io.py)")
    index = _video_index(spec)
    if index is not None:
        device = root / f"dev/video{index}"
        if not device.exists():
            docker = f"; in Docker add --device /dev/video{index} to docker run" if container else ""
            return f"no /dev/video{index}: nothing at camera index {index} (`ls /dev/video*` lists the cameras{docker})"
        if not os.access(device, os.R_OK | os.W_OK):
            return f"/dev/video{index} is not open to this user: sudo usermod -aG video $USER, then log in again"
    if spec.startswith(("rtsp://", "http://", "https://")):
        return "the stream does not answer (check the URL, the network and the credentials)"
    if Path(spec).is_file():
        return "OpenCV cannot read this video (missing codec, or not a video)"
    checked = "GStreamer, its elements and the Argus socket look fine" if csi or "!" in spec else "the device is there"
    return (f"{checked}; another program may hold the camera (close it"
            + ("; sudo systemctl restart nvargus-daemon on the host frees Argus)" if csi else ")"))


def camera_open_failure(spec: str, root: Path | str | None = None, build_info: str | None = None,
                        inspect: GstInspect | None = None) -> str:
    """The one line a camera that does not open becomes (edge/sources.py raises it as a UserError)."""
    try:
        cause = camera_open_cause(spec, root, build_info, inspect)
    except Exception as err:  # the diagnosis must never hide the failure it explains
        cause = f"check the device and that no other program holds it ({type(err).__name__} while diagnosing)"
    return one_line(f"{spec}: cannot open the camera: {cause}")


