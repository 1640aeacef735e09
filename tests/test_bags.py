"""ROS bags: a bag written here with rosbags goes through `process`; the bag that comes out is read back with
rosbags and checked against the depth PNGs, the input's stamps and hand-computed point-cloud geometry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from smoothdino.cli import app
from smoothdino.core.errors import UserError
from smoothdino.edge.sources.bag import BagSource, camera_namespace, is_bag
from smoothdino.edge.sources.synthetic import SyntheticScene
from typer.testing import CliRunner

rosbags = pytest.importorskip("rosbags")
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

runner = CliRunner()
TYPES = get_typestore(Stores.ROS2_HUMBLE)
T = TYPES.types
TOPIC = "/cam/color/image_raw"
START_NS = 1_700_000_000_123_456_789
K_IN = [80.0, 0.0, 47.0, 0.0, 82.0, 36.0, 0.0, 0.0, 1.0]


def _header(stamp_ns: int, frame_id: str = "cam_color_optical"):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                                    frame_id=frame_id)


def _image(rgb: np.ndarray, encoding: str, stamp_ns: int):
    """A sensor_msgs Image or CompressedImage of an RGB frame, as a camera driver would publish it."""
    h, w = rgb.shape[:2]
    if encoding in ("jpeg", "png"):
        _, data = cv2.imencode("." + encoding.replace("jpeg", "jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return T["sensor_msgs/msg/CompressedImage"](header=_header(stamp_ns), format=encoding, data=data.reshape(-1))
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]}[encoding]
    step = w * pixels.shape[2] + 2  # padded rows: readers must honour step
    data = np.zeros((h, step), np.uint8)
    data[:, : w * pixels.shape[2]] = pixels.reshape(h, -1)
    return T["sensor_msgs/msg/Image"](header=_header(stamp_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
                                      step=step, data=data.reshape(-1))


def _camera_info(stamp_ns: int, h: int, w: int):
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](header=_header(stamp_ns), height=h, width=w, distortion_model="plumb_bob",
                                           d=np.zeros(5), k=np.array(K_IN), r=np.eye(3).reshape(-1),
                                           p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)


def write_bag(path, frames, encoding="rgb8", *, topic=TOPIC, camera_info=True, broken=(), storage="mcap", extra_topics=()):
    """frames: RGB arrays; broken: {position: 'corrupt' | 'unknown-encoding' | 'truncated'}; returns the stamps (ns)
    of the frames written whole."""
    broken = dict(broken)
    stamps = []
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    msgtype = "sensor_msgs/msg/CompressedImage" if encoding in ("jpeg", "png") else "sensor_msgs/msg/Image"
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image = writer.add_connection(topic, msgtype, typestore=TYPES)
        info = writer.add_connection(f"{camera_namespace(topic)}/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TYPES)
        others = [writer.add_connection(t, msgtype, typestore=TYPES) for t in extra_topics]
        for i, rgb in enumerate(frames):
            stamp = START_NS + i * 100_000_000
            log_time = stamp + 5_000_000  # received 5 ms after capture
            if camera_info:
                writer.write(info, log_time, TYPES.serialize_cdr(_camera_info(stamp, *rgb.shape[:2]), "sensor_msgs/msg/CameraInfo"))
            msg = _image(rgb, "rgb8" if broken.get(i) == "unknown-encoding" else encoding, stamp)
            if broken.get(i) == "unknown-encoding":
                msg.encoding = "yuv422_yuy2"
            data = TYPES.serialize_cdr(msg, msgtype)
            if broken.get(i) == "corrupt":
                data = data[:40]
            if broken.get(i) == "truncated":  # a JPEG cut short: the message itself is well formed
                msg.data = msg.data[: len(msg.data) // 2]
                data = TYPES.serialize_cdr(msg, msgtype)
            writer.write(image, log_time, data)
            for other in others:
                writer.write(other, log_time, data)
            if i not in broken:
                stamps.append(stamp)
    return stamps


def _frames(n=5, h=70, w=98):
    return [rgb for rgb, _ in SyntheticScene(h, w, n)]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "png", "jpeg"])
def test_bag_source_decodes_each_encoding(tmp_path, encoding):
    frames = _frames(3)
    stamps = write_bag(tmp_path / "bag", frames, encoding)
    source = BagSource(tmp_path / "bag")
    got = list(source)
    source.close()
    assert [f.meta["stamp_ns"] for f in got] == stamps and [f.name for f in got] == ["000000", "000001", "000002"]
    assert got[0].meta["frame_id"] == "cam_color_optical"
    k = got[0].meta["intrinsics"]
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (80.0, 82.0, 47.0, 36.0, 98, 70)
    for frame, rgb in zip(got, frames):
        expected = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, 2) if encoding == "mono8" else rgb
        diff = np.abs(frame.rgb.astype(int) - expected.astype(int))
        # lossless encodings exactly; JPEG within its loss (6 grey levels on this texture; swapped channels: 28)
        assert frame.rgb.shape == (70, 98, 3) and (diff.mean() < 10 if encoding == "jpeg" else diff.max() == 0)


def test_broken_messages_are_skipped_and_counted(tmp_path):
    write_bag(tmp_path / "raw", _frames(5), "rgb8", broken={1: "corrupt", 3: "unknown-encoding"})
    source = BagSource(tmp_path / "raw")
    assert [f.name for f in source] == ["000000", "000002", "000004"]
    assert (source.stats.read, source.stats.skipped, source.stats.skipped_names) == (3, 2, ["000001", "000003"])
    source.close()
    write_bag(tmp_path / "jpeg", _frames(4), "jpeg", broken={2: "truncated"})
    source = BagSource(tmp_path / "jpeg")
    assert [f.name for f in source] == ["000000", "000001", "000003"] and source.stats.skipped == 1
    source.close()


def test_topic_choice_and_bad_bags(tmp_path):
    write_bag(tmp_path / "two", _frames(2), extra_topics=("/cam/ir/image_raw",))
    with pytest.raises(UserError, match=r"several image topics \(/cam/color/image_raw, /cam/ir/image_raw\); pass --topic"):
        BagSource(tmp_path / "two")
    with pytest.raises(UserError, match="no image topic /nope"):
        BagSource(tmp_path / "two", topic="/nope")
    source = BagSource(tmp_path / "two", topic="/cam/ir/image_raw")
    assert source.topic == "/cam/ir/image_raw" and len(list(source)) == 2
    source.close()
    # the .mcap file alone (as copied off a robot) and a sqlite3 bag read the same
    write_bag(tmp_path / "sql", _frames(2), storage="sqlite3")
    for path in (tmp_path / "two" / "two.mcap", tmp_path / "sql"):
        assert is_bag(path)
        assert len(list(BagSource(path, topic=TOPIC))) == 2
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"not an mcap file at all")
    with pytest.raises(UserError, match="garbage.mcap: not a readable ROS bag"):
        BagSource(garbage)


def _read_bag(path):
    out = {}
    with AnyReader([path]) as reader:
        for connection, log_time, raw in reader.messages():
            out.setdefault(connection.topic, []).append((log_time, reader.deserialize(raw, connection.msgtype)))
    return out


def test_process_bag_in_bag_out(tmp_path, small_export):
    frames = _frames(5)
    bag = tmp_path / "robot_run"
    stamps = write_bag(bag, frames, "rgb8", broken={2: "corrupt"})
    out = tmp_path / "out"
    result = runner.invoke(app, ["process", str(bag), "--engines", str(small_export), "--out", str(out),
                                 "--points", "--cloud-stride", "3", "--no-video"])
    assert result.exit_code == 0, result.output
    folder = out / "robot_run"
    names = ["000000", "000001", "000003", "000004"]
    assert sorted(p.stem for p in (folder / "depth").glob("*.png")) == names
    assert json.loads((folder / "metrics.json").read_text())["run"]["skipped_frames"] == ["000002"]

    written = _read_bag(folder / "depth_bag")
    assert (folder / "depth_bag" / "depth_bag.mcap").is_file() and not list(folder.glob(".depth_bag*"))
    depth_msgs = written["/cam/color/depth"]
    assert len(depth_msgs) == 4 == len(written["/cam/color/depth/camera_info"]) == len(written["/cam/color/depth/points"])
    for name, stamp, (log_time, msg) in zip(names, stamps, depth_msgs):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp and log_time == stamp + 5_000_000
        assert (msg.encoding, msg.height, msg.width, msg.step, msg.header.frame_id) == ("32FC1", 70, 98, 98 * 4, "cam_color_optical")
        metres = np.frombuffer(msg.data.tobytes(), "<f4").reshape(70, 98)
        png = cv2.imread(str(folder / "depth" / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0
        assert np.isfinite(metres).all() and np.abs(metres - png).max() <= 0.0005 + 1e-6  # the PNG rounds to 1 mm

    _, info = written["/cam/color/depth/camera_info"][0]
    assert info.k.tolist() == K_IN and (info.width, info.height) == (98, 70)

    # the cloud's geometry, by hand from the bag's own depth image: pixel (v, u) -> ((u-cx) z/fx, (v-cy) z/fy, z)
    _, first = depth_msgs[0]
    z = np.frombuffer(first.data.tobytes(), "<f4").reshape(70, 98)
    _, cloud = written["/cam/color/depth/points"][0]
    fields = {f.name: (f.offset, f.datatype) for f in cloud.fields}
    assert fields == {"x": (0, 7), "y": (4, 7), "z": (8, 7), "rgb": (12, 7)} and cloud.point_step == 16
    points = np.frombuffer(cloud.data.tobytes(), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")]))
    assert cloud.width == len(points) == 24 * 33  # rows 0, 3 .. 69, columns 0, 3 .. 96
    for index, (v, u) in {0: (0, 0), 34: (3, 3), len(points) - 1: (69, 96)}.items():
        expected = [(u - 47.0) * z[v, u] / 80.0, (v - 36.0) * z[v, u] / 82.0, z[v, u]]
        np.testing.assert_allclose([points["x"][index], points["y"][index], points["z"][index]], expected, rtol=1e-5)
        r, g, b = (int(c) for c in frames[0][v, u])
        assert points["rgb"][index] == (r << 16) | (g << 8) | b

    plys = sorted((folder / "points").glob("*.ply"))
    assert [p.stem for p in plys] == names
    assert f"element vertex {cloud.width}".encode() in plys[0].read_bytes()[:400]


def test_process_refuses_ambiguous_bag_in_one_line(tmp_path, small_export):
    write_bag(tmp_path / "two", _frames(2), extra_topics=("/cam/ir/image_raw",))
    result = runner.invoke(app, ["process", str(tmp_path / "two"), "--engines", str(small_export), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "several image topics (/cam/color/image_raw, /cam/ir/image_raw); pass --topic" in result.output
    assert "Traceback" not in result.output
    folder = tmp_path / "frames"
    folder.mkdir()
    result = runner.invoke(app, ["process", str(folder), "--topic", "/x", "--engines", str(small_export)])
    assert result.exit_code == 2 and "--topic /x applies to ROS bags" in result.output


def test_without_the_robotics_extra_one_line_names_it(tmp_path, monkeypatch):
    write_bag(tmp_path / "bag", _frames(1))
    for name in [m for m in sys.modules if m.split(".")[0] == "rosbags"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rosbags", None)  # as if not installed
    with pytest.raises(UserError, match=r"ROS bags needs the 'robotics' extra .*pip install (-e )?'\S+\[robotics\]'$"):
        BagSource(tmp_path / "bag")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_resume_keeps_the_complete_bag(tmp_path, small_export, signum, code):
    """A complete bag is never replaced by a shorter one from a resumed run that was stopped part way."""
    stamps = write_bag(tmp_path / "robot_run", _frames(10), "rgb8")
    out = tmp_path / "out"
    # --fusion off: frames lost in the middle are computed again, which a fused run cannot do exactly (its outputs
    # depend on every one before; tests/test_fusion_runs.py holds that it refuses in one line)
    args = ["process", str(tmp_path / "robot_run"), "--engines", str(small_export), "--out", str(out),
            "--backend", "onnxruntime", "--no-video", "--fusion", "off"]
    assert runner.invoke(app, args).exit_code == 0
    folder = out / "robot_run"
    complete = [msg.data.tobytes() for _, msg in _read_bag(folder / "depth_bag")["/cam/color/depth"]]
    assert len(complete) == 10
    # three depth PNGs lost: the same command recomputes them (reusing the others) and is stopped after the first,
    # while its own bag holds frames 0..7 at most
    lost = [folder / "depth" / f"{name}.png" for name in ("000002", "000006", "000007")]
    for png in lost:
        png.unlink()
    child = subprocess.Popen([sys.executable, "-m", "smoothdino.cli", *args, "--threads", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not lost[0].exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == code, stderr[-1500:]
    assert lost[0].exists() and not lost[2].exists(), "the signal did not land while lost frames were recomputed"

    written = _read_bag(folder / "depth_bag")  # rosbags reads it back whole: the complete bag, untouched
    depth = written["/cam/color/depth"]
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in depth] == stamps
    assert [m.data.tobytes() for _, m in depth] == complete
    assert len(written["/cam/color/depth/points"]) == 10 == len(written["/cam/color/depth/camera_info"])
    assert not list(folder.glob(".depth_bag*")) and "kept the bag already there (10 frames" in stderr

    # run to the end, the same command replaces the bag with its own (same frames: the PNGs match)
    assert runner.invoke(app, args).exit_code == 0
    depth = _read_bag(folder / "depth_bag")["/cam/color/depth"]
    assert len(depth) == 10 and not list(folder.glob(".depth_bag*"))


def test_bag_moved_aside_by_a_killed_swap_is_put_back(tmp_path):
    """SIGKILL between moving the old bag aside and the new one in leaves no bag: the next run puts it back."""
    from smoothdino.edge.sinks.bag import BagSink
    from smoothdino.edge.sources.intrinsics import IntrinsicsChoice

    depth = "/cam/color/depth"
    stamps = write_bag(tmp_path / ".depth_bag.99999.tmp" / "depth_bag.previous", _frames(2), topic=depth)
    sink = BagSink(tmp_path / "depth_bag", "/cam/color", IntrinsicsChoice())
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in _read_bag(tmp_path / "depth_bag")[depth]] == stamps
    sink.close()  # no frame written: the bag stays as it was
    assert len(_read_bag(tmp_path / "depth_bag")[depth]) == 2 and not list(tmp_path.glob(".depth_bag*"))
