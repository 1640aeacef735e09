"""`--carry pose` through the commands: which carry each frame got and the camera's motion in metrics rows, the
default (pose where the camera is known, else shift and a notice), exact resume, and /tf in output bags read back with
rosbags."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from smoothdino.cli import app
from smoothdino.edge.sources.room import SyntheticRoom
from smoothdino.edge.sources.synthetic import write_sequence

runner = CliRunner()
ROOM = SyntheticRoom(120, 160, frames=12, step=0.05, turn=0.02)
K = ROOM.intrinsics
INTRINSICS = f"{K.fx},{K.fy},{K.cx},{K.cy}"


@pytest.fixture(scope="module")
def room_sequence(tmp_path_factory):
    return write_sequence(tmp_path_factory.mktemp("room") / "room", ROOM)


def _process(sequence, out, export, *extra):
    result = runner.invoke(app, ["process", str(sequence), "--out", str(out), "--engines", str(export), "--backend",
                                 "onnxruntime", "--no-video", *extra])
    assert result.exit_code == 0, result.output
    return result


def _rows(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_pose_rows_say_how_each_frame_was_carried_and_resume_is_exact(room_sequence, small_export, tmp_path):
    common = ["--keyframes", "4", "--carry", "pose", "--intrinsics", INTRINSICS]
    _process(room_sequence, tmp_path / "whole", small_export, *common)
    metrics = _rows(tmp_path / "whole" / "room")
    rows = metrics["frames"]
    assert [r["carry"] for r in rows[:5]][0] == "network" and [r["keyframe"] for r in rows] == [i % 4 == 0 for i in range(12)]
    carried = [r for r in rows if not r["keyframe"]]
    assert {r["carry"] for r in carried} <= {"pose", "shift"}
    posed = [r for r in carried if r["carry"] == "pose"]
    assert len(posed) >= 6  # the room textures track well: most carried frames get a pose
    for r in posed:
        assert r["inliers"] >= 12 and r["tracked"] >= r["inliers"]
        q = np.array([r["qx"], r["qy"], r["qz"], r["qw"]])
        assert abs(np.linalg.norm(q) - 1) < 1e-4 and all(np.isfinite([r["tx_m"], r["ty_m"], r["tz_m"]]))
    for r in carried:
        assert (r["carry"] == "shift") == bool(r.get("fallback"))  # a shift under --carry pose says why
    counts = metrics["summary"]["carry"]
    assert counts["network"] == 3 and sum(counts.values()) == 12

    for limit in ("6", "10"):  # stopped mid-way between keyframes, then to the end
        _process(room_sequence, tmp_path / "parts", small_export, *common, "--limit", limit)
    _process(room_sequence, tmp_path / "parts", small_export, *common)
    for name in (f"{i}.png" for i in range(1, 13)):
        assert (tmp_path / "whole" / "room" / "depth" / name).read_bytes() == \
               (tmp_path / "parts" / "room" / "depth" / name).read_bytes(), name

    # the same frames carried by the shift give other depth: the carry is part of the run's identity
    refused = runner.invoke(app, ["process", str(room_sequence), "--out", str(tmp_path / "whole"), "--engines",
                                  str(small_export), "--backend", "onnxruntime", "--no-video", "--keyframes", "4",
                                  "--carry", "shift"])
    assert refused.exit_code == 2 and "--carry" in refused.output


def test_without_a_camera_the_shift_carries_with_a_notice_and_pose_is_refused(room_sequence, small_export, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for jpg in sorted(room_sequence.glob("*.jpg"))[:6]:
        (images / jpg.name).write_bytes(jpg.read_bytes())  # frames only: no depth, so not an NYUv2 folder
    result = _process(images, tmp_path / "out", small_export, "--keyframes", "3")
    assert "no camera intrinsics" in result.output and "--intrinsics" in result.output
    assert {r["carry"] for r in _rows(tmp_path / "out" / "images")["frames"]} == {"network", "shift"}
    refused = runner.invoke(app, ["process", str(images), "--out", str(tmp_path / "pose"), "--engines",
                                  str(small_export), "--backend", "onnxruntime", "--keyframes", "3", "--carry", "pose"])
    assert refused.exit_code == 2 and "--carry pose needs the camera" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "pose").exists()  # before any work
    # with the camera named, the default is the pose carry
    named = _process(images, tmp_path / "named", small_export, "--keyframes", "3", "--intrinsics", INTRINSICS)
    assert "no camera intrinsics" not in named.output
    assert "pose" in {r["carry"] for r in _rows(tmp_path / "named" / "images")["frames"]}


def test_output_bags_carry_the_camera_motion_on_tf(small_export, tmp_path):
    from rosbags.highlevel import AnyReader

    from .test_bags import write_bag

    frames = [rgb for rgb, _ in SyntheticRoom(70, 98, frames=6, step=0.05, turn=0.02)]
    bag = tmp_path / "robot_run"
    write_bag(bag, frames, "rgb8")  # with CameraInfo: the pose carry is the default
    _process(bag, tmp_path / "out", small_export, "--keyframes", "3")
    folder = tmp_path / "out" / "robot_run"
    rows = {r["frame"]: r for r in _rows(folder)["frames"]}
    transforms = []
    with AnyReader([folder / "depth_bag"]) as reader:
        tf = [c for c in reader.connections if c.topic == "/tf"]
        assert tf and tf[0].msgtype == "tf2_msgs/msg/TFMessage"
        for connection, _, raw in reader.messages(connections=tf):
            transforms += reader.deserialize(raw, connection.msgtype).transforms
    posed = [name for name, r in rows.items() if r["carry"] in ("network", "pose")]
    assert len(transforms) == len(posed) >= 3
    for name, stamped in zip(posed, transforms):
        assert stamped.header.frame_id == "cam_color_optical_keyframe" and stamped.child_frame_id == "cam_color_optical"
        t, q = stamped.transform.translation, stamped.transform.rotation
        if rows[name]["carry"] == "network":
            assert (t.x, t.y, t.z, q.x, q.y, q.z, q.w) == (0, 0, 0, 0, 0, 0, 1)
        else:
            assert np.allclose([t.x, t.y, t.z], [rows[name][k] for k in ("tx_m", "ty_m", "tz_m")], atol=1e-5)
            assert np.allclose([q.x, q.y, q.z, q.w], [rows[name][k] for k in ("qx", "qy", "qz", "qw")], atol=1e-5)
