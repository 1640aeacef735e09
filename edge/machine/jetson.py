"""What Jetson this is, read from the files JetPack keeps: the module (/proc/device-tree/model), the L4T release
(/etc/nv_tegra_release) and the JetPack it belongs to, the power mode (nvpmodel's status file and its mode
names in /etc/nvpmodel.conf) and whether the clocks are locked (what `jetson_clocks` does: every CPU's and the
GPU's minimum frequency raised to the maximum). Latency figures mean little without these.

Docker hides the device tree from a container (/proc/device-tree points into /sys/firmware, which Docker masks), so
the module's name is also read from a host copy mounted into the container, where jetson-containers puts it:
`cat /proc/device-tree/model > /tmp/nv_jetson_model` on the host, `-v /tmp/nv_jetson_model:/tmp/nv_jetson_model:ro`.

Every parser takes text and every reader takes a root folder, so tests feed fixture files; a missing or
unreadable file gives None, never an exception. No subprocess, no root rights (nvpmodel -q and
jetson_clocks --show want sudo on some releases; the files they read do not)."""

from __future__ import annotations

import re
from pathlib import Path

# L4T (Jetson Linux) release -> JetPack, from NVIDIA's JetPack archive. A release not listed here still gets
# its JetPack major version from the L4T major version (see jetpack_for).
JETPACK_FOR_L4T = {
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "35.6.1": "5.1.5",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1", "36.4.7": "6.2.1",
}
JETPACK_MAJOR_FOR_L4T_MAJOR = {32: "4", 34: "5", 35: "5", 36: "6", 38: "7"}

DEVICE_TREE_MODEL = "proc/device-tree/model"
HOST_MODEL_COPY = "tmp/nv_jetson_model"  # the host's device-tree model, mounted into a container
MODEL_MOUNT_HINT = ("a container does not see the device tree: on the host `cat /proc/device-tree/model > "
                    "/tmp/nv_jetson_model`, then add -v /tmp/nv_jetson_model:/tmp/nv_jetson_model:ro to docker run")


def read_text(path: Path) -> str | None:
    """A small system file's text, or None when absent or unreadable."""
    try:
        return Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def parse_tegra_release(text: str | None) -> dict | None:
    """/etc/nv_tegra_release ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64,
    DATE: ...") -> {"l4t": "36.4.0", "jetpack": "6.1", "board": "generic"}; None if it is not that file."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text or "")
    if match is None:
        return None
    l4t = f"{match[1]}.{match[2]}.{match[3] or 0}"
    board = re.search(r"BOARD:\s*([^,\s]+)", text)
    return {"l4t": l4t, "jetpack": jetpack_for(l4t), "board": board[1] if board else None}


def jetpack_for(l4t: str) -> str | None:
    """"36.4.3" -> "6.2"; a release newer than the table -> "6.x" (its major version is certain); None when
    the L4T major version is unknown."""
    if l4t in JETPACK_FOR_L4T:
        return JETPACK_FOR_L4T[l4t]
    major = JETPACK_MAJOR_FOR_L4T_MAJOR.get(int(l4t.split(".")[0]))
    return f"{major}.x" if major else None


def parse_module_model(text: str | None) -> str | None:
    """/proc/device-tree/model -> "NVIDIA Jetson AGX Orin Developer Kit"; None for anything that is not a
    Jetson (a Raspberry Pi has the same file)."""
    model = (text or "").replace("\0", "").strip()  # device-tree strings end in NUL
    return model if model and ("jetson" in model.lower() or "tegra" in model.lower()) else None


def parse_nvpmodel_status(text: str | None) -> int | None:
    """/var/lib/nvpmodel/status ("pmode:0002 fmode:quiet") -> 2."""
    match = re.search(r"pmode:\s*(\d+)", text or "")
    return int(match[1]) if match else None


def parse_nvpmodel_conf(text: str | None) -> tuple[dict[int, str], int | None]:
    """/etc/nvpmodel.conf -> ({mode id: name}, the boot default id) from its "< POWER_MODEL ID=0 NAME=MAXN >"
    and "< PM_CONFIG DEFAULT=2 >" lines."""
    names = {int(i): name for i, name in re.findall(r"^<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+)\s*>", text or "", re.MULTILINE)}
    default = re.search(r"^<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", text or "", re.MULTILINE)
    return names, int(default[1]) if default else None


def power_mode(root: Path) -> dict | None:
    """{"id", "name", "source"}: the mode nvpmodel last set (its status file: what `nvpmodel -q` reports),
    else the boot default."""
    names, default = parse_nvpmodel_conf(read_text(root / "etc/nvpmodel.conf"))
    mode = parse_nvpmodel_status(read_text(root / "var/lib/nvpmodel/status"))
    source = "nvpmodel status"
    if mode is None:
        mode, source = default, "nvpmodel.conf default"
    if mode is None:
        return None
    return {"id": mode, "name": names.get(mode), "source": source}


def _min_equals_max(folder: Path, low: str, high: str) -> bool | None:
    low_text, high_text = read_text(folder / low), read_text(folder / high)
    if low_text is None or high_text is None:
        return None
    return low_text.strip() == high_text.strip()


def clocks_locked(root: Path) -> bool | None:
    """True when every CPU's cpufreq minimum equals its maximum and so does the GPU's (devfreq), as
    `jetson_clocks` leaves them; None when the files are not there."""
    checks = [_min_equals_max(cpu, "scaling_min_freq", "scaling_max_freq")
              for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))]
    gpus = [d for d in sorted((root / "sys/class/devfreq").glob("*"))
            if re.search(r"gpu|ga10b|gv11b|gp10b|gm20b", d.name)]  # Orin, Xavier, TX2, Nano integrated GPUs
    checks += [_min_equals_max(gpu, "min_freq", "max_freq") for gpu in gpus]
    known = [c for c in checks if c is not None]
    return all(known) if known else None


def module_model(root: Path | str = "/") -> str | None:
    """The module's name from the device tree, else from the host copy mounted into a container. The device tree
    is read through /sys too: /proc/device-tree is an absolute link into /sys, which points into the container's
    own (masked) /sys when the host's root is mounted elsewhere (`doctor` with the host's / at /host)."""
    root = Path(root)
    for path in (DEVICE_TREE_MODEL, "sys/firmware/devicetree/base/model", HOST_MODEL_COPY):
        model = parse_module_model(read_text(root / path))
        if model:
            return model
    return None


def jetson_info(root: Path | str = "/") -> dict | None:
    """Module, L4T, JetPack, power mode and clock lock of the Jetson whose file system is at `root`; None off
    a Jetson."""
    root = Path(root)
    module = module_model(root)
    release = parse_tegra_release(read_text(root / "etc/nv_tegra_release"))
    if module is None and release is None:
        return None
    return {"module": module, "l4t": release and release["l4t"], "jetpack": release and release["jetpack"],
            "board": release and release["board"], "power_mode": power_mode(root), "clocks_locked": clocks_locked(root)}


def describe(info: dict) -> dict[str, str]:
    """The rows `smoothdino info` prints for a Jetson."""
    mode = info.get("power_mode")
    clocks = {True: "locked (jetson_clocks)", False: "not locked: run `sudo jetson_clocks` before timing",
              None: "unknown (no cpufreq/devfreq files)"}[info.get("clocks_locked")]
    return {
        "Jetson module": info.get("module") or f"unknown ({MODEL_MOUNT_HINT})",
        "JetPack / L4T": f"JetPack {info.get('jetpack') or '?'} (L4T {info.get('l4t') or '?'})",
        "power mode (nvpmodel)": (f"{mode['name'] or '?'} (id {mode['id']}, {mode['source']})" if mode else "unknown"),
        "clocks": clocks,
    }
