"""Fusion through `process` (edge.loop): on by default where the camera is known, said in every output, flicker in
every row and the summary, exact on resume under every keyframe policy, and a hole it cannot fill refused in one
line. The ray-cast room at the test export's size, with its own camera given as --intrinsics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from smoothdino.cli import app
from smoothdino.edge.sources.room import SyntheticRoom
from smoothdino.edge.sources.synthetic import write_sequence
from typer.testing import CliRunner

from .conftest import SMALL
from .test_resume_identity import UNKNOWN_ON_RESUME

ROOM = SyntheticRoom(*SMALL, frames=9, step=0.05, turn=0.02)
INTRINSICS = ",".join(f"{v:g}" for v in (ROOM.intrinsics.fx, ROOM.intrinsics.fy, ROOM.intrinsics.cx,
                                         ROOM.intrinsics.cy))
runner = CliRunner()


@pytest.fixture(scope="module")
def room_sequence(tmp_path_factory):
    return write_sequence(tmp_path_factory.mktemp("fused") / "room", ROOM)


def _process(sequence, out, engines, *extra):
    result = runner.invoke(app, ["process", str(sequence), "--engines", str(engines), "--backend", "onnxruntime",
                                 "--out", str(out), "--no-video", "--intrinsics", INTRINSICS, *extra])
    return result


def _outputs(folder, resumed=False):
    pngs = {p.name: p.read_bytes() for p in sorted((folder / "depth").glob("*.png"))}
    rows = json.loads((folder / "metrics.json").read_text())["frames"]
    return pngs, [{k: v for k, v in r.items() if not k.endswith("_ms") and not (resumed and k in UNKNOWN_ON_RESUME)}
                  for r in rows]


def test_fusion_is_on_by_default_with_a_camera_and_says_so(room_sequence, small_export, tmp_path):
    fused = _process(room_sequence, tmp_path / "fused", small_export)
    assert fused.exit_code == 0, fused.output
    raw = _process(room_sequence, tmp_path / "raw", small_export, "--fusion", "off")
    assert raw.exit_code == 0, raw.output
    metrics = json.loads((tmp_path / "fused" / "room" / "metrics.json").read_text())
    rows = metrics["frames"]
    assert isinstance(metrics["run"]["fusion"], dict) and metrics["run"]["fusion"]["agree"] > 0
    assert all(r["fused"] for r in rows)
    assert rows[0]["fusion"] == "restart" and all(r["fusion"] == "fused" for r in rows[1:])
    assert math.isnan(rows[0]["flicker"] if rows[0]["flicker"] is not None else math.nan)
    flickers = [r["flicker"] for r in rows[1:]]
    assert all(f is not None and 0 <= f < 1 for f in flickers)
    assert metrics["summary"]["flicker_median"] == pytest.approx(float(np.median(flickers)))
    plain = json.loads((tmp_path / "raw" / "room" / "metrics.json").read_text())
    assert plain["run"]["fusion"] == "off" and not any(r["fused"] for r in plain["frames"])
    # the first frame is the network's own in both; later ones differ where the fusion took the earlier output
    fused_pngs, raw_pngs = _outputs(tmp_path / "fused" / "room")[0], _outputs(tmp_path / "raw" / "room")[0]
    assert fused_pngs["1.png"] == raw_pngs["1.png"]
    assert sum(fused_pngs[n] != raw_pngs[n] for n in fused_pngs) >= len(fused_pngs) - 2
    # a resume under the other option is refused in one line naming it
    refused = _process(room_sequence, tmp_path / "raw", small_export)
    assert refused.exit_code == 2 and "--fusion off there, on now" in refused.output


@pytest.mark.parametrize("keyframes, stops", [("every", ("4",)), ("3", ("2", "5"))])
def test_a_fused_run_resumes_exactly(room_sequence, small_export, tmp_path, keyframes, stops):
    whole = _process(room_sequence, tmp_path / "whole", small_export, "--keyframes", keyframes)
    assert whole.exit_code == 0, whole.output
    for limit in stops:  # stopped part way (between keyframes too), then to the end
        assert _process(room_sequence, tmp_path / "parts", small_export, "--keyframes", keyframes,
                        "--frames", limit).exit_code == 0
    assert _process(room_sequence, tmp_path / "parts", small_export, "--keyframes", keyframes).exit_code == 0
    a, b = _outputs(tmp_path / "whole" / "room"), _outputs(tmp_path / "parts" / "room", resumed=True)
    assert a[0] == b[0]  # every PNG byte for byte
    rows_a = [{k: v for k, v in r.items() if k not in UNKNOWN_ON_RESUME} for r in a[1]]
    assert rows_a == b[1]  # flicker included: it reads the earlier output back as its PNG holds it
    states = list((tmp_path / "parts" / "room" / ".fusion").glob("*.npz"))
    assert len(states) == 1  # only the last keyframe's output is kept


def test_a_hole_a_fused_run_cannot_fill_is_one_line_and_loses_nothing(room_sequence, small_export, tmp_path):
    assert _process(room_sequence, tmp_path / "out", small_export).exit_code == 0
    folder = tmp_path / "out" / "room"
    (folder / "depth" / "4.png").unlink()
    before = sorted(p.name for p in (folder / "depth").glob("*.png"))
    again = _process(room_sequence, tmp_path / "out", small_export)
    assert again.exit_code == 2, again.output
    errors = [line for line in again.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--overwrite" in errors[0] and "--fusion off" in errors[0] and ".fusion" in errors[0]
    assert sorted(p.name for p in (folder / "depth").glob("*.png")) == before
    assert _process(room_sequence, tmp_path / "out", small_export, "--overwrite").exit_code == 0
    assert len(list((folder / "depth").glob("*.png"))) == ROOM.frames


@pytest.mark.parametrize("mode", ["--async", "--no-async"])
def test_live_with_a_camera_fuses_by_default_and_measures_flicker(small_export, tmp_path, mode):
    """`live` on a synthetic camera with --intrinsics: fused (async: its keyframes fused in the caller's thread;
    --no-async: every frame through the fused loop), flicker in every row after the first, said in metrics.json."""
    out = tmp_path / "live"
    frames = "300" if mode == "--async" else "12"  # async: unpaced frames go by while the first pass runs
    result = runner.invoke(app, ["live", "--engines", str(small_export), "--source", f"synthetic:70x98:{frames}",
                                 "--headless", "--backend", "onnxruntime", "--intrinsics", INTRINSICS, "--out", str(out),
                                 mode])
    assert result.exit_code == 0, result.output
    assert "fusion on" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["run"]["fusion"], dict)
    with open(out / "metrics.csv") as f:
        import csv

        rows = list(csv.DictReader(f))
    assert rows and all(r["fused"] == "True" for r in rows)
    # a figure wherever the two outputs share a tenth of the view (unpaced async frames may jump further than that)
    assert sum(r["flicker"] not in ("", "nan") for r in rows) >= 0.9 * len(rows)
    assert not (out / ".fusion").exists()  # a live run never resumes: nothing kept for it
