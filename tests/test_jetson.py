"""Jetson facts read from JetPack's files (fixture roots for JetPack 5 and 6 and a machine that is not a
Jetson), as `smoothdino info` shows them and `bench` records them; and the Jetson recipe's install list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from smoothdino.edge.machine.jetson import (
    jetpack_for,
    jetson_info,
    parse_module_model,
    parse_nvpmodel_conf,
    parse_nvpmodel_status,
    parse_tegra_release,
)
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]

# Text as JetPack 6.2 writes it on an Orin Nano developer kit (Super), after `sudo nvpmodel -m 2` and
# `sudo jetson_clocks`.
ORIN_NANO_JP62 = {
    "etc/nv_tegra_release": (
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
        "# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
        "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"),
    "proc/device-tree/model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0",
    "etc/nvpmodel.conf": (
        "< PARAM TYPE=FILE NAME=CPU_ONLINE >\nCORE_0 /sys/devices/system/cpu/cpu0/online\n\n"
        "< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n\n< POWER_MODEL ID=1 NAME=25W >\nCPU_ONLINE CORE_0 1\n\n"
        "< POWER_MODEL ID=2 NAME=MAXN_SUPER >\nCPU_ONLINE CORE_0 1\n\n< POWER_MODEL ID=3 NAME=7W >\nCPU_ONLINE CORE_0 1\n\n"
        "< PM_CONFIG DEFAULT=0 >\n"),
    "var/lib/nvpmodel/status": "pmode:0002 fmode:quiet\n",
    **{f"sys/devices/system/cpu/cpu{i}/cpufreq/{name}": "1728000\n"
       for i in range(6) for name in ("scaling_min_freq", "scaling_max_freq")},
    "sys/class/devfreq/17000000.gpu/min_freq": "1020000000\n",
    "sys/class/devfreq/17000000.gpu/max_freq": "1020000000\n",
}

# JetPack 5.1.2 on an AGX Xavier: nvpmodel never run by hand (no status file: the boot default applies), clocks
# left to the governor.
AGX_XAVIER_JP512 = {
    "etc/nv_tegra_release": ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                             "DATE: Tue Aug  1 19:57:35 UTC 2023\n"),
    "proc/device-tree/model": "Jetson-AGX\0",
    "etc/nvpmodel.conf": ("< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=MODE_10W >\n"
                          "< POWER_MODEL ID=2 NAME=MODE_15W >\n< POWER_MODEL ID=3 NAME=MODE_30W_ALL >\n"
                          "< PM_CONFIG DEFAULT=2 >\n"),
    **{f"sys/devices/system/cpu/cpu{i}/cpufreq/scaling_min_freq": "115200\n" for i in range(8)},
    **{f"sys/devices/system/cpu/cpu{i}/cpufreq/scaling_max_freq": "2265600\n" for i in range(8)},
    "sys/class/devfreq/17000000.gv11b/min_freq": "114750000\n",
    "sys/class/devfreq/17000000.gv11b/max_freq": "1377000000\n",
}


def make_root(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


# -- the parsers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, l4t, jetpack, board", [
    (ORIN_NANO_JP62["etc/nv_tegra_release"], "36.4.3", "6.2", "generic"),
    (AGX_XAVIER_JP512["etc/nv_tegra_release"], "35.4.1", "5.1.2", "t186ref"),
    ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024",
     "36.4.0", "6.1", "generic"),
    ("# R36 (release), REVISION: 9.0, GCID: 1, BOARD: generic, EABI: aarch64", "36.9.0", "6.x", "generic"),  # newer than the table
    ("# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64", "32.7.4", "4.x", "t210ref"),
])
def test_tegra_release(text, l4t, jetpack, board):
    assert parse_tegra_release(text) == {"l4t": l4t, "jetpack": jetpack, "board": board}


@pytest.mark.parametrize("text", [None, "", "Ubuntu 22.04.4 LTS", "# R36 (release)"])
def test_tegra_release_that_is_not_one(text):
    assert parse_tegra_release(text) is None


def test_jetpack_of_an_unknown_l4t_family():
    assert jetpack_for("99.1.0") is None


def test_module_model():
    assert parse_module_model("NVIDIA Jetson AGX Orin Developer Kit\0") == "NVIDIA Jetson AGX Orin Developer Kit"
    assert parse_module_model("Raspberry Pi 4 Model B Rev 1.4\0") is None
    assert parse_module_model(None) is None


def test_nvpmodel_files():
    assert parse_nvpmodel_status("pmode:0002 fmode:quiet\n") == 2
    assert parse_nvpmodel_status("pmode:0000") == 0
    assert parse_nvpmodel_status("garbage") is None
    names, default = parse_nvpmodel_conf(ORIN_NANO_JP62["etc/nvpmodel.conf"])
    assert names == {0: "15W", 1: "25W", 2: "MAXN_SUPER", 3: "7W"} and default == 0
    assert parse_nvpmodel_conf(None) == ({}, None)


# -- whole roots ----------------------------------------------------------------------------------

def test_jetpack6_orin_nano(tmp_path):
    info = jetson_info(make_root(tmp_path, ORIN_NANO_JP62))
    assert info == {"module": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "l4t": "36.4.3",
                    "jetpack": "6.2", "board": "generic",
                    "power_mode": {"id": 2, "name": "MAXN_SUPER", "source": "nvpmodel status"}, "clocks_locked": True}


def test_jetpack5_agx_xavier_default_mode_clocks_free(tmp_path):
    info = jetson_info(make_root(tmp_path, AGX_XAVIER_JP512))
    assert info["module"] == "Jetson-AGX" and info["l4t"] == "35.4.1" and info["jetpack"] == "5.1.2"
    assert info["power_mode"] == {"id": 2, "name": "MODE_15W", "source": "nvpmodel.conf default"}
    assert info["clocks_locked"] is False


def test_one_cpu_unlocked_means_not_locked(tmp_path):
    files = dict(ORIN_NANO_JP62)
    files["sys/devices/system/cpu/cpu3/cpufreq/scaling_min_freq"] = "729600\n"
    assert jetson_info(make_root(tmp_path, files))["clocks_locked"] is False


def test_gpu_unlocked_means_not_locked(tmp_path):
    files = dict(ORIN_NANO_JP62)
    files["sys/class/devfreq/17000000.gpu/min_freq"] = "306000000\n"
    assert jetson_info(make_root(tmp_path, files))["clocks_locked"] is False


def test_missing_power_and_clock_files_are_unknown_not_errors(tmp_path):
    files = {k: v for k, v in ORIN_NANO_JP62.items() if k.startswith(("etc/nv_tegra", "proc/"))}
    info = jetson_info(make_root(tmp_path, files))
    assert info["jetpack"] == "6.2" and info["power_mode"] is None and info["clocks_locked"] is None


def test_module_from_the_host_copy_in_a_container(tmp_path):
    """Docker masks the device tree; run.sh mounts the host's model at /tmp/nv_jetson_model (jetson-containers'
    place), and without it `info` says how to get it."""
    from smoothdino.edge.machine.jetson import describe

    files = {k: v for k, v in ORIN_NANO_JP62.items() if k != "proc/device-tree/model"}
    bare = jetson_info(make_root(tmp_path / "bare", files))
    assert bare["module"] is None and bare["l4t"] == "36.4.3"
    assert "-v /tmp/nv_jetson_model:/tmp/nv_jetson_model:ro" in describe(bare)["Jetson module"]
    files["tmp/nv_jetson_model"] = ORIN_NANO_JP62["proc/device-tree/model"]
    mounted = jetson_info(make_root(tmp_path / "mounted", files))
    assert mounted["module"] == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert describe(mounted)["Jetson module"] == mounted["module"]


def test_not_a_jetson(tmp_path):
    assert jetson_info(tmp_path) is None  # nothing there at all
    pi = make_root(tmp_path / "pi", {"proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\0",
                                     "sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq": "600000\n"})
    assert jetson_info(pi) is None
    (tmp_path / "odd" / "etc" / "nv_tegra_release").mkdir(parents=True)  # unreadable as a file
    assert jetson_info(tmp_path / "odd") is None


# -- where the facts show up -------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def fresh_gpu_facts():
    """environment.gpu() caches its answer for the process; one computed while a test fakes a Jetson would say
    "Jetson (integrated)" to every later test in the process (a bench's device, a record's key)."""
    from smoothdino.edge.machine import environment

    environment.gpu.cache_clear()
    yield
    environment.gpu.cache_clear()


def test_info_shows_the_jetson(tmp_path, monkeypatch):
    from smoothdino.cli import app
    from smoothdino.edge.machine import environment
    root = make_root(tmp_path, AGX_XAVIER_JP512)
    monkeypatch.setattr(environment, "jetson", lambda: jetson_info(root))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Jetson-AGX" in text
    assert "JetPack 5.1.2 (L4T 35.4.1)" in text
    assert "MODE_15W (id 2, nvpmodel.conf default)" in text
    assert "not locked" in text


def test_info_off_a_jetson_says_no(monkeypatch):
    from smoothdino.cli import app
    from smoothdino.edge.machine import environment
    monkeypatch.setattr(environment, "jetson", lambda: None)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert re.search(r"Jetson\s*│\s*no\b", result.output), result.output


def test_bench_records_the_jetson(tmp_path, monkeypatch):
    """results.json carries the module, JetPack, power mode and clock lock beside threads and load average;
    results.md says them in one line."""
    from smoothdino.benchmarks import bench

    root = make_root(tmp_path / "root", ORIN_NANO_JP62)
    monkeypatch.setattr(bench, "jetson_info", lambda: jetson_info(root))
    spec = bench.BenchSpec(data=["synthetic:28x42"], out=tmp_path / "bench", configs=["vits14"], backends=["torch"],
                           frames=1, warmup=0, threads=1, random_weights=True)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        bench.run_bench(spec, say=lambda msg: None)
        assert torch.get_num_threads() == threads + 1  # pinned to 1 for the run, then given back
    finally:
        torch.set_num_threads(threads)
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert results["jetson"] == jetson_info(root)
    assert "threads" in results and "load_average_before" in results
    markdown = (tmp_path / "bench" / "results.md").read_text()
    assert "- Jetson: " in markdown and "MAXN_SUPER (id 2" in markdown and "JetPack 6.2 (L4T 36.4.3)" in markdown


# -- the recipe in deploy/jetson ------------------------------------------------------------------------

def test_jetson_requirements_are_the_runtime_dependencies_minus_opencv():
    """The Dockerfile installs deploy/jetson/requirements-runtime.txt and then the project with --no-deps, so
    pip never puts PyPI's OpenCV (no GStreamer: no CSI camera) over JetPack's. This keeps that list in step with
    pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower()

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [line for line in (ROOT / "deploy/jetson/requirements-runtime.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert {name(r) for r in declared} - {"opencv-python"} == {name(r) for r in listed}
    assert "opencv" not in " ".join(listed) and "torch" not in " ".join(listed)
    dockerfile = (ROOT / "deploy/jetson/Dockerfile").read_text()  # parsed in tests/test_deploy.py
    assert "requirements-runtime.txt" in dockerfile and "--no-deps" in dockerfile


def test_the_jetson_image_installs_the_robotics_extra():
    """`live --foxglove` and bags work on the robot: deploy/jetson/requirements-robotics.txt is pyproject's
    `robotics` extra, installed in the image under the run-time's constraints (JetPack's numpy 1.x)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["robotics"]
    listed = [line.strip() for line in (ROOT / "deploy/jetson/requirements-robotics.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(extra)
    dockerfile = (ROOT / "deploy/jetson/Dockerfile").read_text().replace("\\\n", " ")
    assert "pip3 install -r deploy/jetson/requirements-robotics.txt -c deploy/jetson/requirements-runtime.txt" \
        in dockerfile and "import foxglove" in dockerfile
