"""What this machine can run: package versions, GPU, usable back-ends. Imports nothing heavy up front."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
from functools import lru_cache

from smoothdino.core.errors import UserError

PACKAGES = {
    "smoothdino": "smoothdino",
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "tensorrt": "tensorrt",
    "tensorrt-rtx": "tensorrt_rtx_bindings",
    "pycuda": "pycuda",
    "opencv": "cv2",
    "numpy": "numpy",
}


def package_version(module: str) -> str | None:
    """Version of an importable module, or None. TensorRT and pycuda may be present but unusable
    (no libraries, no driver): then the version is followed by the reason."""
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # ImportError, OSError from missing shared libraries, CUDA init errors
        for dist in (module, module.replace("_", "-")):
            try:
                return f"{importlib.metadata.version(dist)} (unusable: {type(err).__name__})"
            except importlib.metadata.PackageNotFoundError:
                pass
        return None
    return getattr(mod, "__version__", None) or "installed"


def versions() -> dict[str, str | None]:
    found = {name: package_version(module) for name, module in PACKAGES.items()}
    rtx_module = _importable_rtx_module()  # the SDK's wheel imports as tensorrt_rtx, PyPI's as tensorrt_rtx_bindings
    if rtx_module:
        found["tensorrt-rtx"] = package_version(rtx_module)
    return found


# -- the two TensorRT flavours --------------------------------------------------------------------
# "tensorrt": TensorRT 10.3 (JetPack 6), TensorRT 10/11 on x86; builds on and runs on the GPU it was built on.
# "tensorrt-rtx": TensorRT for RTX; builds ahead of time without a GPU for chosen compute capabilities and
# runs on RTX-class GPUs only (SM 7.5, 8.0, 8.6, 8.9, 12.x): not a Jetson, not an H100.
TENSORRT_FLAVOURS = ("tensorrt", "tensorrt-rtx")
FLAVOUR_MODULES = {"tensorrt": ("tensorrt",), "tensorrt-rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}
FLAVOUR_TITLES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT for RTX"}
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")


def _check_flavour(flavour: str) -> None:
    if flavour not in TENSORRT_FLAVOURS:
        raise ValueError(f"TensorRT flavour {flavour!r}: one of {TENSORRT_FLAVOURS}")


def _importable_rtx_module() -> str | None:
    for module in FLAVOUR_MODULES["tensorrt-rtx"]:
        if importlib.util.find_spec(module) is not None:
            return module
    return None


# TensorRT below 10 has no strongly typed networks (NetworkDefinitionCreationFlag.STRONGLY_TYPED), which every
# engine build uses (DESIGN.md, "Precision and TensorRT versions"). On a Jetson that is JetPack 6.0 and older.
MIN_TENSORRT_MAJOR = 10
JETPACK_FOR_OLD_TENSORRT = {"8.6": "JetPack 6.0 (L4T 36.2/36.3)", "8.5": "JetPack 5.1.x (L4T 35)",
                            "8.4": "JetPack 5.0.x (L4T 34/35.1)", "8.2": "JetPack 4.6.x (L4T 32.7)"}


class TensorRTTooOld(UserError, ImportError):
    """An importable TensorRT that cannot build or run our engines. A UserError (one line, exit 2) and an
    ImportError, so code that falls back when TensorRT is missing falls back here too."""


def tensorrt_version_problem(version: str | None) -> str | None:
    """The one line that refuses a TensorRT `version` older than 10, naming the JetPack to use; None when it
    will do (or the version is unknown: nothing is refused on a guess)."""
    match = re.match(r"\s*(\d+)\.(\d+)", str(version or ""))
    if match is None or int(match[1]) >= MIN_TENSORRT_MAJOR:
        return None
    jetpack = JETPACK_FOR_OLD_TENSORRT.get(f"{match[1]}.{match[2]}")
    shipped = f", the TensorRT of {jetpack}," if jetpack else ""
    return (f"TensorRT {version}{shipped} is too old: smoothdino builds strongly typed networks, which need "
            f"TensorRT {MIN_TENSORRT_MAJOR} or newer; on a Jetson flash JetPack 6.1 or 6.2 (L4T 36.4, TensorRT 10.3) "
            "and build the image on l4t-jetpack:r36.4.0, elsewhere install TensorRT 10; or run with --backend "
            "onnxruntime")


def check_tensorrt_module(module, flavour: str = "tensorrt"):
    """The module itself, or TensorRTTooOld. TensorRT for RTX has its own numbering (1.x) and is not checked."""
    if flavour == "tensorrt":
        problem = tensorrt_version_problem(getattr(module, "__version__", None))
        if problem:
            raise TensorRTTooOld(problem)
    return module


def import_tensorrt(flavour: str = "tensorrt"):
    """The flavour's Python module. Raises ImportError (or OSError from missing libraries) when absent, and
    TensorRTTooOld (an ImportError and a UserError) for TensorRT below 10, so export, build and the run-time
    all refuse it in the same line."""
    _check_flavour(flavour)
    first_error: Exception | None = None
    for module in FLAVOUR_MODULES[flavour]:
        try:
            loaded = importlib.import_module(module)
        except Exception as err:  # ImportError, OSError (libnvinfer missing)
            first_error = first_error or err
            continue
        return check_tensorrt_module(loaded, flavour)
    raise first_error  # type: ignore[misc]


def tensorrt_installed_version(flavour: str = "tensorrt") -> str | None:
    """The installed version even where import_tensorrt refuses it (too old): what `doctor` reports."""
    for module in FLAVOUR_MODULES[flavour]:
        try:
            return getattr(importlib.import_module(module), "__version__", None) or "installed"
        except Exception:
            try:
                return importlib.metadata.version(module.replace("_", "-"))
            except importlib.metadata.PackageNotFoundError:
                continue
    return None


def tensorrt_version(flavour: str = "tensorrt") -> str | None:
    try:
        return import_tensorrt(flavour).__version__
    except Exception:
        return None


@lru_cache(maxsize=1)
def gpu() -> dict | None:
    """{'name', 'compute_capability', 'memory_mib'} of GPU 0, from pycuda, else nvidia-smi; None if none."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count():
            dev = cuda.Device(0)
            major, minor = dev.compute_capability()
            return {"name": dev.name(), "compute_capability": f"{major}.{minor}", "memory_mib": dev.total_memory() >> 20}
    except Exception:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip().splitlines()
            if out:
                name, cc, mem = (s.strip() for s in out[0].split(","))
                return {"name": name, "compute_capability": cc, "memory_mib": int(float(mem))}
        except Exception:
            pass
    if jetson() is not None:
        return {"name": "Jetson (integrated)", "compute_capability": "unknown", "memory_mib": None}
    return None


@lru_cache(maxsize=1)
def jetson() -> dict | None:
    """Module, JetPack/L4T, power mode and clock lock of this Jetson (edge/jetson.py); None elsewhere."""
    from .jetson import jetson_info

    return jetson_info("/")


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except Exception:
        return []


def tensorrt_usable(flavour: str = "tensorrt") -> tuple[bool, str]:
    """(usable to run engines, why not). Needs the flavour's libraries, pycuda and a CUDA device; TensorRT
    for RTX also needs an RTX-class GPU."""
    try:
        import_tensorrt(flavour)
    except TensorRTTooOld as err:
        return False, str(err)
    except Exception as err:
        module = " or ".join(FLAVOUR_MODULES[flavour])
        return False, f"{module} not importable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return False, "no CUDA device"
    except Exception as err:
        return False, f"pycuda/CUDA unavailable ({type(err).__name__})"
    if flavour == "tensorrt-rtx":
        g = gpu() or {}
        if not rtx_runs_on(g.get("compute_capability")):
            return False, (f"{g.get('name', 'this GPU')} (sm {g.get('compute_capability')}) is not an RTX-class GPU "
                           f"(TensorRT for RTX runs on sm {', '.join(RTX_COMPUTE_CAPABILITIES)})")
    return True, ""


def rtx_runs_on(compute_capability: str | None) -> bool:
    """TensorRT for RTX engines run on Turing and later consumer/workstation GPUs, not on Jetson (8.7) or
    data-centre Hopper (9.0) / Blackwell (10.x)."""
    return compute_capability in RTX_COMPUTE_CAPABILITIES or str(compute_capability).startswith("12.")


def tensorrt_flavours() -> list[dict]:
    """Both flavours as `smoothdino info` reports them: version (None when not installed), usable, why not."""
    rows = []
    for flavour in TENSORRT_FLAVOURS:
        usable, why = tensorrt_usable(flavour)
        version = tensorrt_version(flavour)
        if version is None and not any(importlib.util.find_spec(m) for m in FLAVOUR_MODULES[flavour]):
            why = "not installed"
        can_build = version is not None and (flavour == "tensorrt-rtx" or usable)  # RTX builds without a GPU
        rows.append({"flavour": flavour, "title": FLAVOUR_TITLES[flavour], "version": version,
                     "usable": usable, "why": why, "can_build": can_build})
    return rows


def opencv_gstreamer() -> bool:
    """CSI cameras on a Jetson need OpenCV built with GStreamer (JetPack's is; PyPI's wheels are not)."""
    try:
        import cv2

        return bool(re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))
    except Exception:
        return False


def device_description() -> str:
    g = gpu()
    if g:
        return f"{g['name']} (sm {g['compute_capability']})"
    import os
    import platform

    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"
