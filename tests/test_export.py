"""Export: three graphs, checked and compared with PyTorch; FP16 graphs; the paper fold; the gate; the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from smoothdino.calibration import GateError, calibration_pairs, run_gate
from smoothdino.cli import app
from smoothdino.core.errors import UserError
from smoothdino.edge.engines.graph_io import IO
from smoothdino.edge.engines.manifest import Manifest
from smoothdino.edge.pipeline import DepthPipeline
from smoothdino.export import AdapterGraph, DecoderGraph, EncoderGraph, ExportSpec, compare_with_torch, export_graph, export_model
from smoothdino.export.onnx import run_onnx
from smoothdino.models import load_adapter, load_decoder, load_encoder
from smoothdino.models.fold import fold_offsets_into_decoder

from .conftest import SMALL


def _export_three(arch, size, tmp_path, rgb, stages=("encoder", "adapter", "decoder")):
    enc = load_encoder(arch, random_weights=True)
    dec = load_decoder(arch, random_weights=True)
    ad = load_adapter("temporal", arch, random_weights=True)
    image = torch.from_numpy(rgb)[None]
    eg = EncoderGraph(enc, size)
    with torch.no_grad():
        levels = eg(image)
    previous = tuple(t.roll(1, dims=-1) if t.ndim == 4 else t * 0.9 for t in levels)
    cases = {
        "encoder": (eg, (image,)),
        "adapter": (AdapterGraph(ad), levels + previous + (torch.tensor([[6.0, -3.0, 0.9]]),)),
        "decoder": (DecoderGraph(dec, size), levels),
    }
    for stage, (module, example) in cases.items():
        if stage not in stages:
            continue
        path = export_graph(module, stage, example, tmp_path / f"{arch}_{stage}.onnx")
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
        assert [i.name for i in model.graph.input] == IO[stage][0]
        assert [o.name for o in model.graph.output] == IO[stage][1]
        errors = compare_with_torch(path, module, stage, example)
        assert max(errors.values()) <= 1e-4, (stage, errors)
        assert not [n for n in model.graph.node if n.op_type == "Resize" and stage == "encoder"], "pos-embed must be a constant"


@pytest.mark.parametrize("arch", ["vits14", "vitb14"])
def test_three_graphs_small_size_with_padding(arch, tmp_path):
    # 66x90 is not a multiple of 14: centre padding happens inside the graph.
    rgb = np.random.default_rng(3).integers(0, 256, (66, 90, 3), dtype=np.uint8)
    _export_three(arch, (66, 90), tmp_path, rgb)


def test_adapter_graph_480x640_real_frame(tmp_path, nyu_scene):
    """The adapter at the real size with random (not identity) weights, on a real frame's features. The encoder and
    decoder graphs at 480x640 are compared with PyTorch by the README's own export (test_quickstart.py asserts its
    figures; vitb14's encoder at 480x640: test_encoder.py), so they are not traced a second time here (34 s)."""
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(nyu_scene / "20.jpg")), cv2.COLOR_BGR2RGB)
    _export_three("vits14", (480, 640), tmp_path, np.ascontiguousarray(rgb), stages=("adapter",))


def test_export_writes_manifest_and_gate(small_export):
    manifest = Manifest.load(small_export)
    assert manifest.precision == "fp16" and manifest.stage_names == ["encoder", "adapter", "decoder"]
    assert manifest.random_weights and manifest.weights["encoder"].startswith("random-weights")
    assert manifest.gate["passed"] and manifest.gate["frames"] == 2
    assert all(v <= 1e-4 for v in manifest.gate["onnx_vs_torch_max_rel"].values())
    assert manifest.stages["encoder"].inputs["image"] == {"shape": [1, 70, 98, 3], "dtype": "uint8"}
    assert manifest.stages["decoder"].outputs["depth"]["shape"] == [1, 1, 70, 98]
    gate = json.loads((small_export / "gate.json").read_text())
    assert gate["passed"] and set(gate["outputs"]) >= {"patch0", "fused_cls3", "depth"}
    # FP16 graphs really are FP16 inside, with FP32 islands, and keep FP32 I/O.
    from smoothdino.export import precision_summary

    counts = precision_summary(manifest.onnx_path("decoder", "fp16"))
    assert counts["fp16"] > counts["fp32"] > 0
    model = onnx.load(str(manifest.onnx_path("encoder", "fp16")))
    ops = {(n.op_type) for n in model.graph.node}
    assert "Cast" in ops
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)


@pytest.mark.nyu
def test_fp16_on_nyu_frames_finite_and_gated(small_export, nyu_root):
    manifest = Manifest.load(small_export)
    scenes = sorted(p for p in nyu_root.iterdir() if p.is_dir())
    pairs = calibration_pairs(scenes, 6, SMALL)
    assert len({p.name.split("/")[0] for p in pairs}) == 3  # spread across scenes
    with DepthPipeline(manifest, backend="onnxruntime") as fp16, \
            DepthPipeline(manifest, backend="onnxruntime", precision="fp32") as fp32:
        report = run_gate(fp16, fp32, pairs, 5.0)
    assert report.passed, report.reasons
    assert all(o["nan_inf"] == 0 for o in report.outputs.values())
    assert 0 < report.depth["rmse_vs_reference_mm"] < 20  # FP16 differs, but only slightly
    assert report.depth["measured_against"] == "ground truth"


def test_paper_fold_equals_running_the_adapter(tmp_path):
    torch.manual_seed(0)
    adapter = load_adapter("paper", "vits14", random_weights=True, seed=3)
    gen = torch.Generator().manual_seed(1)
    levels = [(torch.randn(1, 384, 5, 7, generator=gen), torch.randn(1, 384, generator=gen)) for _ in range(4)]
    previous = [(torch.randn(1, 384, 5, 7, generator=gen), torch.randn(1, 384, generator=gen)) for _ in range(4)]
    shift = torch.tensor([[4.0, -2.0, 0.7]])
    for head in ("dpt", "linear4"):
        decoder = load_decoder("vits14", head, random_weights=True)
        folded = fold_offsets_into_decoder(decoder, adapter.static_offsets())
        with torch.no_grad():
            expected = decoder(adapter(levels, previous, shift), (70, 98))
            got = folded(levels, (70, 98))
        # equal to FP32 rounding: the fold sums in another order (|diff| <= 1e-5 + 1e-5 |depth|, depth up to ~10 m)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=head)
        assert (decoder(levels, (70, 98)) - expected).abs().max() > 1e-4  # the offsets do change depth


def test_paper_export_has_no_adapter_stage(tmp_path):
    out = tmp_path / "paper"
    manifest, report = export_model(ExportSpec(adapter="paper", size=SMALL, precision="fp32", backend="onnx",
                                               random_weights=True, calibration_frames=1), out)
    assert manifest.adapter_folded and manifest.stage_names == ["encoder", "decoder"]
    assert not (out / "adapter.onnx").exists()
    # The folded decoder graph gives what the torch adapter + decoder give.
    adapter = load_adapter("paper", "vits14", random_weights=True)
    decoder = load_decoder("vits14", random_weights=True)
    gen = torch.Generator().manual_seed(2)
    levels = [(torch.randn(1, 384, 5, 7, generator=gen), torch.randn(1, 384, generator=gen)) for _ in range(4)]
    with torch.no_grad():
        expected = decoder(adapter(levels, levels, torch.zeros(1, 3)), SMALL).numpy()
    got = run_onnx(out / "decoder.onnx", {n: t.numpy() for n, t in zip(IO["decoder"][0], [t for p in levels for t in p])})
    assert np.abs(got["depth"] - expected).max() / np.abs(expected).max() < 1e-4


def _scaled_copy(src: Path, dst: Path, factor: float) -> None:
    """A deliberately broken export: the FP16 decoder's depth multiplied by `factor`."""
    shutil.copytree(src, dst)
    path = dst / "decoder.fp16.onnx"
    model = onnx.load(str(path))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [o if o != out else out + "_unscaled" for o in node.output]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(factor, np.float32), "broken_scale"))
    model.graph.node.append(onnx.helper.make_node("Mul", [out + "_unscaled", "broken_scale"], [out]))
    onnx.save(model, str(path))
    from smoothdino.edge.engines.manifest import Manifest

    manifest = Manifest.load(dst)
    manifest.files.pop(path.name)  # an edited graph, not a damaged copy: save() records it again
    manifest.save(dst)


def test_gate_refuses_a_scaled_graph(small_export, tmp_path):
    broken = tmp_path / "broken"
    _scaled_copy(small_export, broken, 1.03)
    result = CliRunner().invoke(app, ["calibrate", "--engines", str(broken), "--calibration-frames", "2"])
    assert result.exit_code == 2, result.output
    gate = json.loads((broken / "gate.json").read_text())
    assert not gate["passed"] and any("depth" in r for r in gate["reasons"])
    assert "FAIL" in result.output and "gate.json" in result.output


def test_export_refuses_then_force_keeps(tmp_path):
    spec = ExportSpec(size=SMALL, precision="fp16", backend="onnx", random_weights=True, calibration_frames=1,
                      tolerance_mm=1e-6)
    with pytest.raises(GateError, match="not accepted"):
        export_model(spec, tmp_path / "strict")
    assert (tmp_path / "strict" / "gate.json").is_file() and not (tmp_path / "strict" / "manifest.json").exists()
    spec.force = True
    manifest, report = export_model(spec, tmp_path / "strict")
    assert not report.passed and (tmp_path / "strict" / "manifest.json").is_file()


def test_manifest_round_trip_and_refusals(small_export, tmp_path):
    manifest = Manifest.load(small_export)
    copy = tmp_path / "copy"
    shutil.copytree(small_export, copy)
    again = Manifest.load(copy)
    assert again.stages == manifest.stages and again.gate == manifest.gate and again.frame_size == manifest.frame_size
    again.save(copy)
    assert Manifest.load(copy).weights == manifest.weights

    again.versions["tensorrt"] = "10.3.0"
    again.gpu = {"name": "Orin", "compute_capability": "8.7"}
    with pytest.raises(UserError) as err:
        again.check_tensorrt("11.4.0", {"name": "Orin", "compute_capability": "8.7"})
    assert "10.3.0" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="built for Orin"):
        again.check_tensorrt("10.3.0", {"name": "NVIDIA H100", "compute_capability": "9.0"})
    again.check_tensorrt("10.3.0", {"name": "Orin", "compute_capability": "8.7"})  # same: accepted
    with pytest.raises(UserError) as err:
        again.check_frame_size(480, 640, "camera")
    assert "70x98" in str(err.value) and "--resize" in str(err.value)

    (copy / "encoder.fp16.onnx").unlink()
    with pytest.raises(UserError, match="missing"):
        Manifest.load(copy).onnx_path("encoder")
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not a smoothdino manifest"):
        Manifest.load(copy)


def test_export_cli_prints_gate_table(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["export", "--size", "70x98", "--precision", "fp32", "--backend", "onnx",
                                      "--random-weights", "--calibration-frames", "1", "--adapter", "none",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "gate" in result.output and "PASS" in result.output and "RANDOM" in result.output
    assert Manifest.load(out).adapter == "none"
    bad = CliRunner().invoke(app, ["export", "--size", "70by98", "--out", str(out)])
    assert bad.exit_code == 2 and "HEIGHTxWIDTH" in bad.output
