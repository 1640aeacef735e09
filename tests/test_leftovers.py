"""No leftovers, ever: a run's reserve and temporary files are made inside its guarded region, named with the host,
the process id and a random part, and the ones a killed process left (this host, its process gone) are removed by
the next start; another host's are left alone. Real faults: a sink that cannot open, SIGKILL, two processes with
the same pid (two pid namespaces, as two containers), Ctrl-C of `process --ray`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from smoothdino.cli import app
from smoothdino.edge.sinks.video import ENCODER_VARIABLE
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence
from typer.testing import CliRunner

from .conftest import ROOT, SMALL

runner = CliRunner()
LEFTOVER = re.compile(r"\.tmp|\.smoothdino-reserve|\.smoothdino-probe")


def leftovers(out: Path) -> list[str]:
    """Every temporary or reserve file (or folder) anywhere under `out`."""
    return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*") if LEFTOVER.search(p.name))


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> Path:
    return write_sequence(tmp_path_factory.mktemp("seq") / "seq", SyntheticScene(*SMALL, frames=24, velocity=(2.0, 1.0)))


def _args(sequence: Path, engines: Path, out: Path, *extra: str) -> list[str]:
    return ["process", str(sequence), "--engines", str(engines), "--backend", "onnxruntime", "--out", str(out), *extra]


def test_a_sink_that_cannot_open_leaves_no_reserve(sequence, small_export, tmp_path, monkeypatch):
    """The video sink refuses to open (an unknown encoder) after the PNG folder exists: one line, exit 2, and the
    reserve that was to keep room for metrics.json is gone with it."""
    monkeypatch.setenv(ENCODER_VARIABLE, "vp9")
    out = tmp_path / "out"
    result = runner.invoke(app, _args(sequence, small_export, out, "--limit", "2"))
    assert result.exit_code == 2 and f"{ENCODER_VARIABLE}=vp9" in result.output, result.output
    assert leftovers(out) == []


def _wait_for_pngs(child: subprocess.Popen, depth: Path, count: int, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while child.poll() is None and time.monotonic() < deadline and len(list(depth.glob("[!.]*.png"))) < count:
        time.sleep(0.01)
    assert child.poll() is None, "the run ended before the signal"


def test_what_a_killed_process_left_is_removed_by_the_same_command(sequence, small_export, tmp_path):
    """SIGKILL mid-run leaves the reserve and the video's temporary (finished by the orphaned ffmpeg); the same
    command ends with no temporary or reserve file anywhere under --out."""
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "smoothdino.cli", *_args(sequence, small_export, out, "--threads", "1")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    _wait_for_pngs(child, out / "seq" / "depth", 3)
    child.kill()
    child.wait()
    time.sleep(0.5)  # the orphaned ffmpeg sees the end of its input and finishes its file
    left = leftovers(out)
    assert any("reserve" in name for name in left) and any(name.startswith("seq/.video.") for name in left), left
    result = runner.invoke(app, _args(sequence, small_export, out))
    assert result.exit_code == 0, result.output
    assert leftovers(out) == []


# -- the names, and which of them are stale ---------------------------------------------------------

HOLD_A_RESERVE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from smoothdino.core.files import SpaceReserve
    SpaceReserve(Path(sys.argv[1]), 4096)
    print("ready", flush=True)
    time.sleep(600)
""")


def _reserve_holder(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD_A_RESERVE, str(folder)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT.parent)
    assert child.stdout.readline().strip() == "ready"
    return child


def test_temporary_names_say_host_pid_and_a_random_part_and_only_this_hosts_dead_ones_are_stale(tmp_path):
    from smoothdino.core.files import atomic_path, parse_temporary, remove_stale_temporaries

    target = tmp_path / "frame.png"
    with atomic_path(target) as first, atomic_path(target) as second:  # two writers of one file in one process
        assert first != second and first.suffix == second.suffix == ".png"  # OpenCV chooses the format by it
        first.write_bytes(b"first")
        second.write_bytes(b"second")
        ours = parse_temporary(first.name)
        assert ours is not None and ours.pid == os.getpid() and ours.local
    assert parse_temporary("frame.png") is None and parse_temporary(".frame.12.tmp.png") is None  # pid only: unknown

    folder = tmp_path / "out"
    folder.mkdir()
    dead, alive = _reserve_holder(folder), _reserve_holder(folder)
    dead.kill()
    dead.wait()
    by_pid = {parse_temporary(p.name).pid: p for p in folder.iterdir()}
    assert set(by_pid) == {dead.pid, alive.pid}
    # the same name made on another node (shared storage under --ray): its process may well be running there
    mine = by_pid[dead.pid].name
    elsewhere = folder / mine.replace(parse_temporary(mine).host, "another-node-4026531836")
    elsewhere.write_bytes(b"")
    assert parse_temporary(elsewhere.name).pid == dead.pid and not parse_temporary(elsewhere.name).local
    try:
        assert remove_stale_temporaries(folder) == [by_pid[dead.pid]]
        assert sorted(folder.iterdir()) == sorted([by_pid[alive.pid], elsewhere])
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_temporaries(folder) == [by_pid[alive.pid]] and list(folder.iterdir()) == [elsewhere]


WRITE_ONE_FILE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from smoothdino.core.files import atomic_write_bytes
    path, mark = Path(sys.argv[1]), sys.argv[2].encode()
    for _ in range(300):
        atomic_write_bytes(path, mark * 200_000)
    print(os.getpid())
""")


def test_two_processes_with_the_same_pid_never_share_a_temporary_name(tmp_path):
    """Two containers on shared storage: each process is pid 1 of its own pid namespace, both write one file over
    and over. With pid-only names they wrote into each other's temporary file and one died on the rename."""
    if os.geteuid() != 0:
        pytest.skip("needs root (unshare --pid: a pid namespace for each writer)")
    path = tmp_path / "shared.bin"
    writers = [subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-c", WRITE_ONE_FILE, str(path), mark],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT.parent)
               for mark in ("a", "b")]
    results = [(w.wait(timeout=120), *w.communicate()) for w in writers]
    if any("unshare" in err and code != 0 for code, _, err in results):
        pytest.skip(f"no pid namespace here: {results[0][2].strip().splitlines()[-1]}")
    assert [(code, out.strip()) for code, out, _ in results] == [(0, "1"), (0, "1")], results  # both were pid 1
    data = path.read_bytes()
    assert data in (b"a" * 200_000, b"b" * 200_000)  # whole, one writer's
    assert leftovers(tmp_path) == []


# -- Ctrl-C of process --ray -----------------------------------------------------------------------

def test_ctrl_c_of_ray_leaves_no_reserve_or_temporary(ray_cluster, sequence, small_export, tmp_path):
    """Ctrl-C while both workers are inside a chunk (each holding its reserve): the driver stops them, and it and
    the same command after it end with no temporary or reserve file anywhere under --out."""
    out = tmp_path / "out"
    # --fusion off: the sequence cut into chunks, one a worker (a fused sequence is a single chunk)
    args = _args(sequence, small_export, out, "--no-video", "--fusion", "off", "--chunk", "6", "--ray", ray_cluster)
    driver = subprocess.Popen([sys.executable, "-m", "smoothdino.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None and not (
                len([p for p in (out / "seq").glob(".smoothdino-reserve*")]) == 2
                and list((out / "seq" / "depth").glob("[!.]*.png"))):
            time.sleep(0.01)
        assert driver.poll() is None, "the run ended before Ctrl-C"
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 130 and "Traceback" not in output, output
    assert leftovers(out) == []
    again = runner.invoke(app, args[:-1])  # the same command (on this module's Ray instance)
    assert again.exit_code == 0, again.output
    assert leftovers(out) == []
