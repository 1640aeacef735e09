"""A real TensorRT builder in the suite: TensorRT for RTX (the dev extra) parses and builds, without a GPU,
every graph of the exports we ship, and its network's I/O is the manifest's.

Graphs come from session fixtures: vits14+temporal reuses conftest's `small_export`; the other adapters add
only their decoder (the encoder graph does not depend on the adapter); vitb14 and vits14 at 480x640 are
exported without the gate (benchmarks/tensorrt_build.py). One target (sm 8.6) keeps the builds short; the
export test uses the default portable set. The full matrix with timings: benchmarks/tensorrt_build.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from smoothdino.core.errors import UserError

from .conftest import SMALL

ROOT = Path(__file__).resolve().parents[1]
TARGET = ["8.6"]


@pytest.fixture(scope="session")
def rtx():
    from smoothdino.edge.machine.environment import import_tensorrt

    try:
        return import_tensorrt("tensorrt-rtx")
    except Exception as err:
        pytest.skip(f"TensorRT for RTX not importable ({type(err).__name__}): pip install -e .[dev] on Linux x86_64")


def _graphs(tmp_path_factory, arch, adapter, size, stages=None) -> dict:
    from smoothdino.benchmarks.tensorrt_build import export_graphs

    folder = tmp_path_factory.mktemp(f"{arch}_{adapter}")
    return {stage: (folder, files) for stage, files in export_graphs(arch, "dpt", adapter, size, folder, stages).items()}


@pytest.fixture(scope="session")
def shipped_graphs(small_export, rtx, tmp_path_factory) -> dict:
    """{(arch, adapter): {stage: (folder, StageFiles)}}: vits14 and vitb14 x none, paper, temporal at 70x98."""
    from smoothdino.edge.engines.manifest import Manifest

    manifest = Manifest.load(small_export)
    graphs = {("vits14", "temporal"): {stage: (small_export, files) for stage, files in manifest.stages.items()},
              ("vitb14", "temporal"): _graphs(tmp_path_factory, "vitb14", "temporal", SMALL)}
    for arch in ("vits14", "vitb14"):
        for adapter in ("none", "paper"):
            graphs[(arch, adapter)] = _graphs(tmp_path_factory, arch, adapter, SMALL, ("decoder",))
    return graphs


CASES = [(arch, adapter, stage, precision)
         for arch in ("vits14", "vitb14")
         for adapter, stages in (("temporal", ("encoder", "adapter", "decoder")), ("paper", ("decoder",)),
                                 ("none", ("decoder",)))
         for stage in stages for precision in ("fp32", "fp16")]


@pytest.mark.parametrize("arch,adapter,stage,precision", CASES, ids=["-".join(c) for c in CASES])
def test_every_shipped_graph_parses_and_builds(shipped_graphs, rtx, tmp_path, arch, adapter, stage, precision):
    """(vits14|vitb14) x (temporal: encoder, adapter, decoder | paper: folded decoder | none: decoder) x
    (fp32, fp16); the encoder is the same graph for every adapter."""
    from smoothdino.export.tensorrt import build_engine, network_io, parse_onnx

    folder, files = shipped_graphs[(arch, adapter)][stage]
    onnx_path = folder / files.onnx[precision]
    trt, _, _, network, _ = parse_onnx(onnx_path, "tensorrt-rtx")
    assert network_io(trt, network) == {"inputs": files.inputs, "outputs": files.outputs}
    engine = build_engine(onnx_path, tmp_path / "stage.engine", flavour="tensorrt-rtx", compute_capabilities=TARGET,
                          expected_io={"inputs": files.inputs, "outputs": files.outputs},
                          fp32_exact=precision == "fp32")
    assert engine.stat().st_size > 1 << 20  # weights are in it


def test_encoder_uint8_input_feeds_only_a_cast(small_export):
    """TensorRT takes a UINT8 network input only straight into a Cast; the FP16 graph must keep that too."""
    import onnx

    for name in ("encoder.onnx", "encoder.fp16.onnx"):
        graph = onnx.load(str(small_export / name), load_external_data=False).graph
        consumers = [n.op_type for n in graph.node if "image" in n.input]
        assert consumers == ["Cast"], (name, consumers)


def test_cast_first_preprocessing_is_numerically_identical():
    import torch

    from smoothdino.models.archs import center_padding
    from smoothdino.models.preprocess import MEAN_255, STD_255, normalize_and_pad

    rgb = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 31, 45, 3), dtype=np.uint8))
    assert torch.equal(normalize_and_pad(rgb), normalize_and_pad(rgb.float()))
    permuted_first = (rgb.permute(0, 3, 1, 2).float() - torch.tensor(MEAN_255).view(1, 3, 1, 1)) \
        / torch.tensor(STD_255).view(1, 3, 1, 1)  # the order before the Cast fix
    top, left = center_padding(31)[0], center_padding(45)[0]
    assert torch.equal(normalize_and_pad(rgb)[:, :, top:top + 31, left:left + 45], permuted_first)


def _uint8_graph(path: Path, cast_first: bool) -> Path:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2])]
    if cast_first:
        nodes = [helper.make_node("Cast", ["image"], ["image_f"], name="to_float", to=TensorProto.FLOAT),
                 helper.make_node("Transpose", ["image_f"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2])]
    else:
        nodes.append(helper.make_node("Cast", ["nchw"], ["nchw_f"], name="to_float", to=TensorProto.FLOAT))
    out = "nchw" if cast_first else "nchw_f"
    graph = helper.make_graph(
        nodes, "uint8_input", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 4, 6, 3])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 3, 4, 6])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_refused_graph_names_node_and_op_in_one_line(rtx, tmp_path):
    from smoothdino.export.tensorrt import build_engine

    bad = _uint8_graph(tmp_path / "bad.onnx", cast_first=False)
    with pytest.raises(UserError) as err:
        build_engine(bad, tmp_path / "bad.engine", flavour="tensorrt-rtx", compute_capabilities=TARGET)
    message = str(err.value)
    assert "\n" not in message and "bad.onnx" in message
    assert re.search(r"node to_nchw \(Transpose\)", message), message
    assert not (tmp_path / "bad.engine").exists()
    good = _uint8_graph(tmp_path / "good.onnx", cast_first=True)  # the same graph with the Cast first builds
    assert build_engine(good, tmp_path / "good.engine", flavour="tensorrt-rtx", compute_capabilities=TARGET).is_file()


def test_io_unlike_the_manifest_is_refused(small_export, rtx, tmp_path):
    from smoothdino.edge.engines.manifest import Manifest
    from smoothdino.export.tensorrt import build_engine

    files = Manifest.load(small_export).stages["adapter"]
    inputs = {**files.inputs, "shift": {"shape": [1, 4], "dtype": "float32"}}
    with pytest.raises(UserError, match=r"inputs differ from the manifest's: shift: .*\[1, 3\].*\[1, 4\]"):
        build_engine(small_export / files.onnx["fp16"], tmp_path / "a.engine", flavour="tensorrt-rtx",
                     compute_capabilities=TARGET, expected_io={"inputs": inputs, "outputs": files.outputs})


def test_compute_capabilities(rtx):
    from smoothdino.export.tensorrt import PORTABLE_COMPUTE_CAPABILITIES, resolve_compute_capabilities

    # No GPU here: the portable set; Turing has no FP32 GEMM in TensorRT for RTX, so FP32 leaves it out.
    assert resolve_compute_capabilities("tensorrt-rtx", [], "fp16") == list(PORTABLE_COMPUTE_CAPABILITIES)
    assert "7.5" not in resolve_compute_capabilities("tensorrt-rtx", [], "fp32")
    assert resolve_compute_capabilities("tensorrt-rtx", ["8.9", "8.6", "8.9"]) == ["8.9", "8.6"]
    with pytest.raises(UserError, match="Turing"):
        resolve_compute_capabilities("tensorrt-rtx", ["7.5"], "fp32")
    with pytest.raises(UserError, match="8.7"):
        resolve_compute_capabilities("tensorrt-rtx", ["8.7"])  # Jetson Orin: not an RTX target
    with pytest.raises(UserError, match="tensorrt-rtx only"):
        resolve_compute_capabilities("tensorrt", ["8.6"])
    for cc in PORTABLE_COMPUTE_CAPABILITIES:  # every target we may ask for exists in the bindings
        assert hasattr(rtx.ComputeCapability, "SM" + cc.replace(".", ""))


def test_tensorrt_rtx_export_writes_an_engine_per_stage(rtx, tmp_path):
    """`--backend tensorrt-rtx` on a machine without a GPU: engines for every stage, the manifest records the
    flavour, version and targets, and the gate (which cannot run the engines here) falls back to ONNX Runtime."""
    from smoothdino.edge.engines.manifest import Manifest
    from smoothdino.export import ExportSpec, export_model
    from smoothdino.export.tensorrt import PORTABLE_COMPUTE_CAPABILITIES

    spec = ExportSpec(arch="vits14", adapter="paper", size=SMALL, precision="fp16", backend="tensorrt-rtx",
                      random_weights=True, calibration_frames=2)
    export_model(spec, tmp_path, progress=lambda msg: None)
    manifest = Manifest.load(tmp_path)
    assert manifest.stage_names == ["encoder", "decoder"]  # paper offsets folded into the decoder
    for stage in manifest.stage_names:
        assert manifest.engine_path(stage).stat().st_size > 1 << 20
    assert manifest.tensorrt == {"flavour": "tensorrt-rtx", "version": rtx.__version__,
                                 "compute_capabilities": list(PORTABLE_COMPUTE_CAPABILITIES)}
    assert manifest.tensorrt_flavour == "tensorrt-rtx" and manifest.versions["tensorrt"] is None
    with pytest.raises(UserError) as err:  # plain TensorRT on a Jetson refuses these engines in one line
        manifest.check_tensorrt("10.3.0", {"name": "Orin", "compute_capability": "8.7"}, flavour="tensorrt")
    assert "manifest.json" in str(err.value) and "--backend tensorrt" in str(err.value) and "\n" not in str(err.value)


def test_pyproject_pins_the_installed_rtx_bindings(rtx):
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"tensorrt-rtx-cu12-bindings=={rtx.__version__};' in text
    assert f'"tensorrt-rtx-cu12-libs=={rtx.__version__};' in text


@pytest.mark.slow
def test_vits14_480x640_temporal_fp16_builds(rtx, tmp_path_factory, tmp_path):
    from smoothdino.benchmarks.tensorrt_build import export_graphs
    from smoothdino.export.tensorrt import build_engine

    folder = tmp_path_factory.mktemp("vits14_480")
    graphs = export_graphs("vits14", "dpt", "temporal", (480, 640), folder, precisions=("fp16",))
    assert graphs["encoder"].inputs["image"] == {"shape": [1, 480, 640, 3], "dtype": "uint8"}
    for stage, files in graphs.items():
        engine = build_engine(folder / files.onnx["fp16"], tmp_path / f"{stage}.engine", flavour="tensorrt-rtx",
                              compute_capabilities=TARGET, expected_io={"inputs": files.inputs,
                                                                        "outputs": files.outputs})
        assert engine.stat().st_size > 1 << 20
