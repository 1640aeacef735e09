"""`smoothdino process --ray`: chunks of every sequence on a local Ray instance (2 CPUs) give byte-identical PNGs and
the same metrics rows as one process, for every keyframe policy and corrupt frames anywhere; a run under other options
is refused (folder and chunk), or redone whole with --overwrite; a worker killed mid-chunk, Ctrl-C on the driver, a
bad address and an --out a worker cannot write."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from smoothdino.cli import app
from smoothdino.core.errors import UserError
from smoothdino.edge.commands.chunks import (
    SCHEDULE,
    Chunk,
    SequencePlan,
    chunk_size,
    cut,
    finished,
    keyframe_schedule,
    last_readable_before,
    sequence_schedule,
)
from smoothdino.edge.keyframes import decide_keyframes, parse_keyframes
from smoothdino.edge.run_identity import RunIdentity
from smoothdino.edge.sources.recorded import FolderSource
from smoothdino.edge.sources.synthetic import SyntheticScene, write_sequence
from typer.testing import CliRunner

from .conftest import ROOT, SMALL
from .test_resume_identity import UNKNOWN_ON_RESUME

ray = pytest.importorskip("ray")
runner = CliRunner()


def _process(sequences, out, engines, *extra):
    sequences = sequences if isinstance(sequences, list) else [sequences]
    return runner.invoke(app, ["process", *map(str, sequences), "--engines", str(engines), "--backend", "onnxruntime",
                               "--out", str(out), *extra])


def _timeless(rows: list[dict], resumed: bool = False) -> list[dict]:
    """Rows without their timings; with `resumed`, without what a frame read back from an earlier attempt does not
    know either (as on resume)."""
    return [{k: v for k, v in row.items() if not k.endswith("_ms") and not (resumed and k in UNKNOWN_ON_RESUME)}
            for row in rows]


def _assert_same(one: Path, many: Path, name: str, resumed: bool = False) -> dict:
    """The cluster's PNGs byte for byte and its metrics rows (timings aside, in frame order) are one process's."""
    pngs = sorted(p.name for p in (one / name / "depth").glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in (many / name / "depth").glob("*.png"))
    for png in pngs:
        assert (one / name / "depth" / png).read_bytes() == (many / name / "depth" / png).read_bytes(), png
    a = json.loads((one / name / "metrics.json").read_text())
    b = json.loads((many / name / "metrics.json").read_text())
    assert _timeless(b["frames"], resumed) == _timeless(a["frames"], resumed)
    assert [r["frame"] for r in b["frames"]] == [r["frame"] for r in a["frames"]]
    assert b["run"]["skipped_frames"] == a["run"]["skipped_frames"]
    assert {k: b["summary"][k] for k in ("rmse", "temporal", "frames")} == \
           {k: a["summary"][k] for k in ("rmse", "temporal", "frames")}
    return b


def _footer(output: str) -> str:
    return next(line for line in output.splitlines() if "chunks of up to" in line)


def _corrupt(sequence: Path, *positions: int) -> Path:
    """Frames at these positions truncated (skipped and counted by every run)."""
    for position in positions:
        jpg = sequence / f"{position + 1}.jpg"
        data = jpg.read_bytes()
        jpg.write_bytes(data[: len(data) // 2])
    return sequence


def _identity(policy) -> RunIdentity:
    pipeline = SimpleNamespace(identity="test", precision="fp16", frame_size=SMALL, min_confidence=0.1,
                               motion_downscale=1)
    return RunIdentity.of(pipeline, policy, True)


def _refuse(height, width):
    raise UserError(f"frames are {height}x{width}")


def test_chunk_size_rule_and_where_a_chunk_starts_priming(tmp_path):
    every, three = parse_keyframes("every"), parse_keyframes("3")
    assert chunk_size(400_000, 100) == 1000  # capped
    assert chunk_size(10_000, 10) == 250  # 4 chunks a worker
    assert chunk_size(100, 8) == 16  # the floor
    sequence = _corrupt(write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=20, velocity=(2.5, 1.0))), 13)
    source = FolderSource(sequence)
    assert [last_readable_before(source, s) for s in (0, 4, 13, 14)] == [0, 3, 12, 12]  # every: the adapter's frame

    # N counts readable frames: keyframes 0, 3, 6, 9, 12, then 16 and 19 (frame 13 is skipped)
    schedule = keyframe_schedule(source, three, _identity(three), _refuse)
    assert schedule.positions == [p for p in range(20) if p != 13]
    assert [p for p, k in zip(schedule.positions, schedule.keyframes) if k] == [0, 3, 6, 9, 12, 16, 19]
    assert schedule.priming(0, 5) == (0, {str(p + 1): p % 3 == 0 for p in range(5)})
    # chunk [15, 20) starts on a carried frame of keyframe 12: it primes from 9, 12's own previous keyframe
    first, forced = schedule.priming(15, 20)
    assert first == 9 and list(forced) == [str(p + 1) for p in (9, 10, 11, 12, 14, 15, 16, 17, 18, 19)]
    assert [forced[str(p + 1)] for p in (12, 15, 16)] == [True, False, True]
    assert schedule.priming(12, 15)[0] == 9  # starts on keyframe 12: its previous keyframe is all it needs
    assert schedule.priming(13, 14) == (13, {})  # nothing readable of its own

    # auto: one decision per readable frame, exactly decide_keyframes' on the readable frames
    auto = parse_keyframes("auto")
    decided = keyframe_schedule(source, auto, _identity(auto), _refuse)
    frames = [f.rgb for f in (source.load(p) for p in range(20)) if f is not None]
    assert decided.keyframes == list(decide_keyframes(frames, auto, 1, 0.1)) and 2 < sum(decided.keyframes) < 19

    plan = cut([SequencePlan(sequence, "seq", 20, False)], 5)[0]
    assert [(c.start, c.end) for c in plan.chunks] == [(0, 5), (5, 10), (10, 15), (15, 20)]
    assert Chunk("s", "s", 5, 10).key == "0000005-0000010"


def test_the_schedule_is_computed_once_per_sequence_and_the_frames(tmp_path):
    """Cached under the run's identity and the frame files: read back by a resumed driver, computed again when a
    frame file changed or the options did."""
    sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=8, velocity=(2.5, 1.0)))
    plan, auto = SequencePlan(sequence, "seq", 8, False), parse_keyframes("auto")
    loads = []

    class Counting(FolderSource):
        def load(self, position, depth=True):
            assert not depth  # the schedule reads the RGB alone: never a ground-truth PNG
            loads.append(position)
            return super().load(position, depth)

    first = keyframe_schedule(Counting(sequence), auto, _identity(auto), _refuse)
    assert sorted(loads) == list(range(8))  # every frame decoded once: O(frames)
    out = tmp_path / "out"
    assert sequence_schedule(plan, out, auto, _identity(auto), _refuse) == first
    cached = out / "seq" / ".chunks" / SCHEDULE
    written = cached.stat().st_mtime_ns
    assert sequence_schedule(plan, out, auto, _identity(auto), _refuse) == first
    assert cached.stat().st_mtime_ns == written  # read back, not computed again
    _corrupt(sequence, 4)
    assert 4 not in sequence_schedule(plan, out, auto, _identity(auto), _refuse).positions


@pytest.mark.parametrize("policy, carry", [("3", "shift"), ("auto", "shift"), ("auto", "pose"), ("2", "shift")])
def test_the_schedule_decided_in_parallel_segments_is_exactly_the_serial_one(tmp_path, monkeypatch, policy, carry):
    """Segments decided at once on threads and joined equal one serial pass, with skipped frames at and around the
    segments' first frames and a scene cut (a frame of noise) inside one; no ground-truth depth is decoded."""
    import numpy as np

    from smoothdino.edge.commands import chunks

    sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=40, velocity=(2.5, 1.0)))
    noise = np.random.default_rng(3).integers(0, 256, (*SMALL, 3), dtype=np.uint8)
    import cv2

    cv2.imwrite(str(sequence / "17.jpg"), noise)  # position 16: a scene cut
    _corrupt(sequence, 0, 10, 11, 30)
    monkeypatch.setattr(chunks, "MIN_SEGMENT", 5)
    monkeypatch.setattr("smoothdino.edge.sources.recorded.read_depth_png",
                        lambda path: pytest.fail(f"the schedule decoded {path}"))
    keyframes = parse_keyframes(policy, carry=carry)
    identity = RunIdentity.of(SimpleNamespace(identity="test", precision="fp16", frame_size=SMALL, min_confidence=0.1,
                                              motion_downscale=1), keyframes, True, carry=carry)
    source = FolderSource(sequence)
    serial = keyframe_schedule(source, keyframes, identity, _refuse, threads=1)
    frames = [f.rgb for f in (source.load(p, depth=False) for p in range(40)) if f is not None]
    assert serial.keyframes == list(decide_keyframes(frames, keyframes, 1, 0.1, carry))
    assert serial.positions == [p for p in range(40) if p not in (0, 10, 11, 30)]
    assert serial.keyframes[serial.positions.index(16)]  # the cut
    for threads in (2, 3, 4, 7):
        assert chunks.schedule_segments(40, keyframes, threads)[1][0] % (keyframes.n if policy != "auto" else 1) == 0
        assert keyframe_schedule(source, keyframes, identity, _refuse, threads=threads) == serial, threads


def test_a_chunk_done_under_other_options_is_refused_never_reused(tmp_path):
    chunk, three = Chunk("seq", "seq", 0, 5), parse_keyframes("3")
    record = chunk.record(tmp_path)
    record.mkdir(parents=True)
    (record / "metrics.json").write_text("{}")
    (record / "done.json").write_text(json.dumps({"identity": _identity(three).record()}))
    assert finished(chunk, tmp_path, _identity(three)) is not None
    with pytest.raises(UserError) as refused:
        finished(chunk, tmp_path, _identity(parse_keyframes("every")))
    assert str(record) in str(refused.value) and "--keyframes 3 there, every now" in str(refused.value)
    (record / "done.json").write_text(json.dumps({"identity": "vits14+temporal/dpt/fp16/70x98/w"}))  # an old one
    with pytest.raises(UserError, match="recorded only the export"):
        finished(chunk, tmp_path, _identity(three))


@pytest.mark.nyu
def test_nyu_sequences_on_ray_equal_one_process(ray_cluster, nyu_root, small_export, tmp_path):
    """NYUv2 folders: the camera is known, so by default every keyframe is fused with the output before it (edge.fusion)
    and a sequence is one chunk (a fused output depends on every one before it): the sequences spread over the
    workers, and each equals one process byte for byte. 6 frames each: more than --chunk 5, so an unfused sequence
    would be cut in two."""
    sequences = [nyu_root / "bathroom_0028_out", nyu_root / "bedroom_0004_out"]
    one = _process(sequences, tmp_path / "one", small_export, "--limit", "6")
    assert one.exit_code == 0, one.output
    many = _process(sequences, tmp_path / "many", small_export, "--limit", "6", "--chunk", "5", "--ray")
    assert many.exit_code == 0, many.output
    assert "Traceback" not in many.output and "on 2 Ray workers" in many.output
    assert _footer(many.output).startswith("2 chunks")  # --chunk 5 does not cut a fused sequence
    for sequence in sequences:
        metrics = _assert_same(tmp_path / "one", tmp_path / "many", sequence.name)
        assert len(metrics["frames"]) == 6 and metrics["run"]["cluster"]["chunks"] == 1
        assert all(r["fused"] for r in metrics["frames"]) and metrics["run"]["fusion"] != "off"
        assert sum(r["flicker"] is not None for r in metrics["frames"]) == 5  # every frame after the first
        video = tmp_path / "many" / sequence.name / "video.mp4"
        import cv2

        assert int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT)) == 6


# corrupt frames (positions) in each sequence of 12 frames, for chunks of 3 frames: [0, 3) [3, 6) [6, 9) [9, 12)
CORRUPT = {
    "starts": (3, 9),  # a chunk's first frame
    "windows": (4,),  # inside the frames chunk [6, 9) primes from (N = 3: keyframes 0 and 3, then 7)
    "keyframes": (0, 7),  # the first frame, and the one that is a keyframe of N = 3 without the first skip
}


@pytest.mark.parametrize("policy, carry", [("every", []), ("3", ["--carry", "shift"]), ("auto", ["--carry", "pose"])])
def test_ray_equals_one_process_for_every_policy_with_corrupt_frames_anywhere(ray_cluster, small_export, tmp_path,
                                                                              policy, carry):
    sequences = [_corrupt(write_sequence(tmp_path / name, SyntheticScene(*SMALL, frames=12, velocity=(2.5, 1.0))),
                          *positions) for name, positions in CORRUPT.items()]
    common = ["--no-video", "--keyframes", policy, *carry, "--fusion", "off"]  # off: sequences cut into chunks
    one = _process(sequences, tmp_path / "one", small_export, *common)
    assert one.exit_code == 0, one.output
    many = _process(sequences, tmp_path / "many", small_export, *common, "--ray", "auto", "--chunk", "3")
    assert many.exit_code == 0, many.output
    assert _footer(many.output).startswith("12 chunks")  # each chunk once: no chunk is run again
    for name, positions in CORRUPT.items():
        metrics = _assert_same(tmp_path / "one", tmp_path / "many", name)
        assert metrics["run"]["skipped_frames"] == [f"{p + 1}.jpg" for p in positions]
        assert metrics["run"]["keyframes"] == policy
        if policy != "every":
            assert 1 < sum(r["keyframe"] for r in metrics["frames"]) < len(metrics["frames"])
    if policy != "3":
        return

    # A resumed driver: the finished chunks are not run again, the schedule is read back, not computed again
    windows = tmp_path / "many" / "windows"
    schedule = windows / ".chunks" / SCHEDULE
    written = schedule.stat().st_mtime_ns
    (windows / ".chunks" / "0000009-0000012" / "done.json").unlink()
    again = _process(sequences, tmp_path / "many", small_export, *common, "--ray", "--chunk", "3")
    assert again.exit_code == 0 and _footer(again.output).startswith("1 chunks"), again.output
    assert schedule.stat().st_mtime_ns == written
    _assert_same(tmp_path / "one", tmp_path / "many", "windows", resumed=True)

    # Other options: the folder is refused in one line naming it and the option, before any chunk runs
    other = _process(sequences[1], tmp_path / "many", small_export, *common, "--ray", "--chunk", "3",
                     "--min-confidence", "0.5")
    assert other.exit_code == 2
    errors = [line for line in other.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(windows) in errors[0] and "--min-confidence 0.1 there, 0.5 now" in errors[0]
    # a chunk another run finished (its done.json says so) is refused, never reused
    done = windows / ".chunks" / "0000006-0000009" / "done.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps({**record, "identity": {**record["identity"], "keyframes": "every"}}))
    refused = _process(sequences[1], tmp_path / "many", small_export, *common, "--ray", "--chunk", "3")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert str(done.parent) in refused.output and "--keyframes every there, 3 now" in refused.output
    # --overwrite: the sequence redone whole, equal to one process
    redone = _process(sequences[1], tmp_path / "many", small_export, *common, "--ray", "--chunk", "3", "--overwrite")
    assert redone.exit_code == 0 and _footer(redone.output).startswith("4 chunks"), redone.output
    _assert_same(tmp_path / "one", tmp_path / "many", "windows")


def test_ray_equals_one_process_across_a_keyframe_whose_features_overflowed(ray_cluster, small_export, tmp_path,
                                                                           monkeypatch):
    """--keyframes 3: keyframe 3's features overflow (NaN, as an FP16 encoder's can), in one process and on the
    workers alike (the encoder is poisoned on that frame's pixels). The unbroken run gives it no depth and starts
    afresh at keyframe 6; chunks that prime across it (chunk [6, 9) from keyframe 3; [4, 8) from 0, computing 3
    again) must rebuild exactly that (tests/test_keyframes.py holds the same for a resumed run)."""
    import hashlib

    import numpy as np
    from smoothdino.edge.commands import cluster_worker
    from smoothdino.edge.pipeline import DepthPipeline

    sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=10, velocity=(1.5, 0.5)))
    poisoned = hashlib.sha256(FolderSource(sequence).load(3).rgb.tobytes()).hexdigest()

    def poison(encode):
        def overflowing(self, rgb):
            levels = encode(self, rgb)
            if hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest() == poisoned:
                levels = {name: np.full_like(value, np.nan) for name, value in levels.items()}
            return levels

        overflowing.poisoned = True
        return overflowing

    class OverflowingWorker(cluster_worker.ChunkWorker.__ray_actor_class__):
        def open(self):  # in the worker's own process (the class travels by value)
            if not getattr(DepthPipeline._encode, "poisoned", False):
                DepthPipeline._encode = poison(DepthPipeline._encode)
            return super().open()

    monkeypatch.setattr(DepthPipeline, "_encode", poison(DepthPipeline._encode))  # the one process
    monkeypatch.setattr(cluster_worker, "ChunkWorker", ray.remote(concurrency_groups={"control": 1})(OverflowingWorker))
    common = ["--no-video", "--keyframes", "3", "--carry", "shift", "--fusion", "off"]  # chunks that prime
    one = _process(sequence, tmp_path / "one", small_export, *common)
    assert one.exit_code == 0, one.output
    rows = json.loads((tmp_path / "one" / "seq" / "metrics.json").read_text())["frames"]
    assert [r["keyframe"] for r in rows] == [i % 3 == 0 for i in range(10)]
    assert rows[3].get("nonfinite_pixels", 0) > 0 and "nonfinite_pixels" not in rows[6]  # the overflow; a fresh start
    for size, chunks in (("3", 4), ("4", 3)):
        many = _process(sequence, tmp_path / f"many{size}", small_export, *common, "--ray", "auto", "--chunk", size)
        assert many.exit_code == 0, many.output
        assert _footer(many.output).startswith(f"{chunks} chunks")
        _assert_same(tmp_path / "one", tmp_path / f"many{size}", "seq")


def _chunk_workers() -> list[int]:
    """PIDs of the live chunk workers, from Ray's actor table."""
    from ray._private.state import state

    return [a["Pid"] for a in state.actor_table(None).values()
            if a["ActorClassName"] == "ChunkWorker" and a["State"] == "ALIVE"]


def test_a_worker_killed_mid_chunk_is_retried_and_the_result_is_exact(ray_cluster, small_export, tmp_path):
    sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=24, velocity=(2.0, 1.0)))
    one = _process(sequence, tmp_path / "one", small_export, "--no-video", "--fusion", "off")  # cut into chunks
    assert one.exit_code == 0, one.output
    depth = tmp_path / "many" / "seq" / "depth"
    killed: list[int] = []

    def kill_a_worker() -> None:  # once both workers are inside their first chunks (8 frames each)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not killed:
            if depth.is_dir() and len(list(depth.glob("*.png"))) >= 2:
                pids = _chunk_workers()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    many = _process(sequence, tmp_path / "many", small_export, "--no-video", "--fusion", "off", "--chunk", "8", "--ray")
    killer.join()
    assert killed and many.exit_code == 0, many.output
    assert "retried after a worker was lost" in _footer(many.output)
    metrics = _assert_same(tmp_path / "one", tmp_path / "many", "seq", resumed=True)
    assert metrics["run"]["cluster"]["retried_chunks"] == 1
    reused = int(_footer(many.output).split("; ")[-1].split()[0])  # "...; N frames reused)"
    assert reused == sum(r["scene_cut"] is None for r in metrics["frames"])  # frames its first attempt wrote


def test_ctrl_c_cancels_cleanly_and_the_same_command_resumes(ray_cluster, small_export, tmp_path):
    sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=24, velocity=(2.0, 1.0)))
    # --fusion off: this sequence is cut into chunks (a fused one is a single chunk)
    one = _process(sequence, tmp_path / "one", small_export, "--no-video", "--fusion", "off")
    assert one.exit_code == 0, one.output
    out = tmp_path / "many"
    args = ["process", str(sequence), "--engines", str(small_export), "--backend", "onnxruntime", "--no-video",
            "--fusion", "off", "--out", str(out), "--chunk", "4", "--ray", ray_cluster]  # a driver of its own, joining by address
    driver = subprocess.Popen([sys.executable, "-m", "smoothdino.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not list(out.glob("seq/.chunks/*/done.json")):
            time.sleep(0.02)
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 130, output
    assert "Traceback" not in output and "run the same command to resume" in output
    finished = len(list(out.glob("seq/.chunks/*/done.json")))
    assert 1 <= finished < 6 and not (out / "seq" / "metrics.json").exists()

    resumed = _process(sequence, out, small_export, "--no-video", "--fusion", "off", "--chunk", "4", "--ray")
    assert resumed.exit_code == 0, resumed.output
    assert _footer(resumed.output).startswith(f"{6 - finished} chunks")  # the finished ones were not run again
    _assert_same(tmp_path / "one", out, "seq", resumed=True)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_a_bad_ray_address_is_one_line(small_export, tmp_path, address):
    sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=2))
    result = _process(sequence, tmp_path / "out", small_export, "--ray", address)
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"--ray {address}: no Ray cluster answers there" in errors[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_out_a_worker_cannot_write_is_one_line(small_export, tmp_path):
    """A Ray head whose workers see --out read-only (a private mount namespace: a node without write access to the
    shared storage); the driver, outside it, joins by address and refuses in one line before any frame."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a private mount namespace for the worker node)")
    out = tmp_path / "out"
    out.mkdir()
    port = _free_port()
    session = Path(tempfile.mkdtemp(prefix="sdray", dir="/tmp"))  # Ray's sockets: a path under 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}
    ray_bin = Path(sys.executable).parent / "ray"
    node = (f"mount --bind {out} {out} && mount -o remount,bind,ro {out} && exec {ray_bin} start --head "
            f"--port {port} --num-cpus 1 --include-dashboard=false --disable-usage-stats "
            f"--temp-dir {session} --block")
    head = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", node], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        if head.poll() is not None:
            why = head.stderr.read().strip()
            if "unshare" in why or "mount" in why:
                pytest.skip(f"no private mount namespace here: {why.splitlines()[-1]}")
            pytest.fail(f"the Ray head did not start: {why}")
        sequence = write_sequence(tmp_path / "seq", SyntheticScene(*SMALL, frames=2))
        done = subprocess.run([sys.executable, "-m", "smoothdino.cli", "process", str(sequence), "--engines",
                               str(small_export), "--backend", "onnxruntime", "--out", str(out), "--ray",
                               f"127.0.0.1:{port}"], check=False, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=180)
    finally:
        head.terminate()  # `ray start --block` stops the node's processes it started
        head.wait(timeout=60)
        shutil.rmtree(session, ignore_errors=True)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(errors) == 1 and "cannot write there" in errors[0] and str(out) in errors[0], done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (out / "seq" / "depth").exists() or not list((out / "seq" / "depth").glob("*.png"))


def test_a_node_without_engines_for_its_gpu_builds_them_once(small_export, tmp_path, monkeypatch):
    """No GPU here: TensorRT and the build are stand-ins; what runs for real is the choice, the per-node folder,
    the copy of the export and the lock that lets one worker build while the others wait."""
    from smoothdino.edge.commands import cluster_worker

    monkeypatch.setenv("SMOOTHDINO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cluster_worker, "tensorrt_usable", lambda flavour: (True, ""))
    monkeypatch.setattr(cluster_worker, "gpu", lambda: {"name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"})
    monkeypatch.setattr(cluster_worker, "tensorrt_version", lambda flavour: "10.3.0")
    builds = []

    def build(command, **kwargs):  # `smoothdino build --engines COPY --backend tensorrt`, here a stand-in
        builds.append(command)
        time.sleep(0.3)  # the other worker arrives meanwhile and waits on the lock
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(cluster_worker.subprocess, "run", build)
    assert cluster_worker.engines_for_this_node(small_export, "onnxruntime") == small_export
    found: list[Path] = []
    workers = [threading.Thread(target=lambda: found.append(cluster_worker.engines_for_this_node(small_export,
                                                                                                  "tensorrt")))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(builds) == 1 and builds[0][-4:] == ["--engines", builds[0][-3], "--backend", "tensorrt"]
    assert found[0] == found[1] and found[0].parent == tmp_path / "home" / "cluster-engines"
    assert "Orin-sm8.7-tensorrt10.3.0" in found[0].name and (found[0] / "manifest.json").is_file()
