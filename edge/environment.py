"""What this machine can run: package versions, GPU, usable back-ends. Imports nothing heavy up front."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import shutil
import subprocess
from functools import lru_cache

PACKAGES = {
    "smoothdino": "smoothdino",
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "tensorrt": "tensorrt",
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
    return {name: package_version(module) for name, module in PACKAGES.items()}


def tensorrt_version() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return None
    return tensorrt.__version__


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
    if _is_jetson():
        return {"name": "Jetson (integrated)", "compute_capability": "unknown", "memory_mib": None}
    return None


def _is_jetson() -> bool:
    try:
        with open("/proc/device-tree/model") as fh:
            return "jetson" in fh.read().lower()
    except OSError:
        return False


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except Exception:
        return []


def tensorrt_usable() -> tuple[bool, str]:
    """(usable, why not). TensorRT needs its libraries, pycuda and a CUDA device."""
    try:
        import tensorrt  # noqa: F401
    except Exception as err:
        return False, f"tensorrt not importable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return False, "no CUDA device"
    except Exception as err:
        return False, f"pycuda/CUDA unavailable ({type(err).__name__})"
    return True, ""


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
