"""Depth + intrinsics -> points: hand-computed pinhole geometry, the packed ROS/Foxglove layout, PLY files."""

from __future__ import annotations

import numpy as np
import pytest
from smoothdino.core.errors import UserError
from smoothdino.edge.sources.intrinsics import (
    NYU_KINECT,
    Intrinsics,
    IntrinsicsChoice,
    parse_intrinsics,
)
from smoothdino.edge.sinks.pointcloud import POINTCLOUD2_FIELDS, PlySink, depth_to_points
from smoothdino.edge.sources import Frame

K = Intrinsics(fx=100.0, fy=50.0, cx=10.0, cy=5.0, width=30, height=20)


def _scene():
    depth = np.full((20, 30), 2.0, np.float32)
    depth[6, 12] = 4.0
    depth[0, 3] = 0.0  # no depth: no point
    depth[3, 0] = np.nan  # an FP16 overflow: no point
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    return depth, rgb


def test_points_match_pinhole_geometry_by_hand():
    depth, rgb = _scene()
    cloud = depth_to_points(depth, K, stride=1, rgb=rgb)
    assert len(cloud) == 20 * 30 - 2
    by_pixel = {tuple(p): i for i, p in enumerate(cloud.pixels.tolist())}
    # pixel (row 6, column 12) at 4 m: X = (12 - 10) * 4 / 100, Y = (6 - 5) * 4 / 50
    i = by_pixel[(6, 12)]
    np.testing.assert_allclose(cloud.xyz[i], [0.08, 0.08, 4.0], rtol=1e-6)
    # pixel (0, 0) at 2 m: X = -10 * 2 / 100, Y = -5 * 2 / 50
    np.testing.assert_allclose(cloud.xyz[by_pixel[(0, 0)]], [-0.2, -0.2, 2.0], rtol=1e-6)
    assert (0, 3) not in by_pixel and (3, 0) not in by_pixel
    assert cloud.rgb[i].tolist() == rgb[6, 12].tolist()


def test_stride_keeps_every_nth_pixel_from_the_corner():
    depth, _ = _scene()
    cloud = depth_to_points(depth, K, stride=3)
    expected = {(r, c) for r in range(0, 20, 3) for c in range(0, 30, 3)} - {(0, 3), (3, 0)}
    assert {tuple(p) for p in cloud.pixels.tolist()} == expected
    assert cloud.rgb is None


def test_intrinsics_scale_with_the_depth_map():
    """Depth at half the calibration's size: focal lengths and principal point halve too."""
    depth = np.full((10, 15), 1.0, np.float32)
    cloud = depth_to_points(depth, K, stride=1)
    i = cloud.pixels.tolist().index([4, 7])
    np.testing.assert_allclose(cloud.xyz[i], [(7 - 5.0) / 50.0, (4 - 2.5) / 25.0, 1.0], rtol=1e-6)
    half = NYU_KINECT.scaled(240, 320)
    assert (half.fx, half.cx, half.width, half.height) == pytest.approx((518.8579 / 2, 325.5824 / 2, 320, 240))


def test_packed_colour_is_ros_rgb_and_foxglove_rgba():
    depth, rgb = _scene()
    cloud = depth_to_points(depth, K, stride=5, rgb=rgb)
    ros = cloud.packed(alpha=0)
    raw = ros.view(np.uint8).reshape(len(cloud), 16)
    offsets = {name: offset for name, offset, _ in POINTCLOUD2_FIELDS}
    xyz = np.stack([raw[:, offsets[a]:offsets[a] + 4].copy().view("<f4")[:, 0] for a in "xyz"], axis=1)
    np.testing.assert_array_equal(xyz, cloud.xyz)
    packed = raw[:, offsets["rgb"]:offsets["rgb"] + 4].copy().view("<u4")[:, 0]
    r, g, b = (cloud.rgb[:, i].astype(np.uint32) for i in range(3))
    np.testing.assert_array_equal(packed, (r << 16) | (g << 8) | b)  # PCL's 0x00RRGGBB
    assert (cloud.packed(alpha=255)["a"] == 255).all()


def _read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode().splitlines()
    count = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    body = np.frombuffer(data[end:], np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                               ("r", "u1"), ("g", "u1"), ("b", "u1")]))
    assert header[1] == "format binary_little_endian 1.0" and len(body) == count
    return header, body


def test_ply_sink_writes_the_frame_cloud(tmp_path):
    depth, rgb = _scene()
    sink = PlySink(tmp_path / "points", IntrinsicsChoice(parse_intrinsics("100,50,10,5")), stride=2, random_weights=True)
    sink.write(Frame(rgb, 0, "000007", 0.0), depth, None, None)
    header, body = _read_ply(tmp_path / "points" / "000007.ply")
    assert any("RANDOM WEIGHTS" in line for line in header)
    assert len(body) == 10 * 15  # rows 0, 2 .. 18 x columns 0, 2 .. 28; the two holes are off the grid
    far = body[body["z"] == 4.0]  # pixel (6, 12), by hand: X = (12 - 10) * 4 / 100, Y = (6 - 5) * 4 / 50
    assert len(far) == 1
    np.testing.assert_allclose([far["x"][0], far["y"][0]], [0.08, 0.08], rtol=1e-6)
    assert [far["r"][0], far["g"][0], far["b"][0]] == rgb[6, 12].tolist()


def test_intrinsics_choice_order_and_bad_text():
    frame_k = Intrinsics(200.0, 200.0, 15.0, 10.0, 30, 20)
    assert IntrinsicsChoice(parse_intrinsics("1,2,3,4")).for_frame({"intrinsics": frame_k}, 20, 30).fx == 1.0
    assert IntrinsicsChoice().for_frame({"intrinsics": frame_k}, 20, 30) == frame_k
    assert IntrinsicsChoice(nyu=True).for_frame({}, 480, 640) == NYU_KINECT
    for bad in ("1,2,3", "a,b,c,d", "0,1,2,3"):
        with pytest.raises(UserError, match="fx,fy,cx,cy"):
            parse_intrinsics(bad)
