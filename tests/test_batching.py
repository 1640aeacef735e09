"""Several cameras, one network: per-sequence temporal state, a batch axis (export --batch N), step_batch, the
TensorRT profile, and the rule that batches only where it was measured to pay (edge/batching.py).

One export with --batch 3 at the suite's small size (70x98, random weights, FP32 and FP16 graphs) serves the
module. The batch path is held to the one-frame path of the same pipeline (FP32 ONNX Runtime, tight tolerance)
and to the eager FP32 PyTorch model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smoothdino.core.errors import UserError

from .conftest import SMALL, _export

BATCH = 3
FRAMES = 4


@pytest.fixture(scope="module")
def batch_export(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("export") / "batch3", batch=BATCH)


def sequences(n: int = BATCH, frames: int = FRAMES, cut_at: int | None = None) -> list[list[np.ndarray]]:
    """n cameras, each a synthetic scene of its own moving its own way; with cut_at, the last camera's scene
    changes there (a scene cut in one sequence only)."""
    from smoothdino.edge.sources.synthetic import SyntheticScene

    out = []
    for c in range(n):
        scene = SyntheticScene(*SMALL, frames=frames, seed=3 + c, velocity=(2.5 - 2.0 * c, -1.0 + 1.5 * c))
        seq = [scene.frame(k)[0] for k in range(frames)]
        if cut_at is not None and c == n - 1:
            other = SyntheticScene(*SMALL, frames=frames, seed=99, velocity=(0.0, 3.0))
            seq = seq[:cut_at] + [other.frame(k)[0] for k in range(frames - cut_at)]
        out.append(seq)
    return out


def _pipeline(folder, **kw):
    from smoothdino.edge.pipeline import DepthPipeline

    return DepthPipeline.from_folder(folder, backend="onnxruntime", precision="fp32", **kw)


def test_batch_export_has_a_batch_axis_and_records_it(batch_export):
    import onnx

    from smoothdino.edge.engines.manifest import Manifest

    manifest = Manifest.load(batch_export)
    assert manifest.batch == manifest.max_batch == BATCH
    assert manifest.fingerprint["batch"] == BATCH
    for stage, files in manifest.stages.items():
        for name, io in {**files.inputs, **files.outputs}.items():
            assert io["shape"][0] == -1 and all(d > 0 for d in io["shape"][1:]), (stage, name, io)
        for precision, graph in files.onnx.items():
            model = onnx.load(str(batch_export / graph), load_external_data=False)
            for value in [*model.graph.input, *model.graph.output]:
                dims = value.type.tensor_type.shape.dim
                assert dims[0].dim_param == "batch" and all(d.dim_value > 0 for d in dims[1:]), (graph, value.name)
    # export timed passes of 1, 2 and 3 frames on ONNX Runtime here: what choose_batch's auto reads
    timing = manifest.batch_timing
    assert timing["backend"] == "onnxruntime" and set(timing["per_frame_ms"]) == {"1", "2", "3"}
    assert set(timing["cpu_per_frame_ms"]) == {"1", "2", "3"}  # ONNX Runtime on the CPU: its CPU time too
    saved = json.loads((batch_export / "manifest.json").read_text())
    assert saved["batch"] == BATCH and saved["batch_timing"] == timing


def test_one_frame_exports_are_unchanged():
    """--batch 1 (the default) is today's export: static graphs, and a fingerprint without `batch` (so exports made
    before batching are still current)."""
    from smoothdino.edge.engines.graph_io import io_shapes
    from smoothdino.export import ExportSpec

    assert "batch" not in ExportSpec(size=SMALL, random_weights=True).fingerprint()
    assert io_shapes("decoder", 70, 98, 384, (5, 7))["depth"] == [1, 1, 70, 98]
    assert io_shapes("decoder", 70, 98, 384, (5, 7), batch=4)["depth"] == [-1, 1, 70, 98]
    with pytest.raises(UserError, match="--batch 0"):
        ExportSpec(batch=0)


def test_step_batch_equals_each_camera_alone(batch_export):
    """N cameras through step_batch, frame after frame, give each camera the depth (and shift, and scene-cut
    decision) that camera gets alone through step(); one camera has a scene cut that the others do not."""
    cams = sequences(cut_at=2)
    with _pipeline(batch_export) as pipeline:
        alone = []
        for seq in cams:
            state = pipeline.new_state()
            alone.append([pipeline.step(rgb, state=state) for rgb in seq])
        states = [pipeline.new_state() for _ in cams]
        together = [pipeline.step_batch([seq[k] for seq in cams], states) for k in range(FRAMES)]
    assert [r.scene_cut for r in together[2]] == [False, False, True]
    for k in range(FRAMES):
        for c in range(BATCH):
            single, batched = alone[c][k], together[k][c]
            assert batched.batch == BATCH and single.batch == 1
            assert batched.scene_cut == single.scene_cut
            assert batched.shift.as_array() == pytest.approx(single.shift.as_array(), abs=1e-9)
            scale = np.abs(single.depth).max()
            assert np.abs(batched.depth - single.depth).max() <= 1e-5 * scale, (k, c)
    # the adapter saw a real shift (not the first frame's closed gate) on frames after the first
    assert all(r.shift.confidence > 0.5 for r in together[1])


def test_step_batch_matches_the_fp32_torch_model(batch_export):
    """The batch export's items against the eager FP32 model run one camera at a time (same seeded weights)."""
    from smoothdino.models.torch_pipeline import TorchPipeline

    cams = sequences(n=2, frames=3)
    with _pipeline(batch_export) as pipeline, \
            TorchPipeline("vits14", "temporal", size=SMALL, random_weights=True) as reference:
        states = [pipeline.new_state() for _ in cams]
        together = [pipeline.step_batch([seq[k] for seq in cams], states) for k in range(3)]
        for c, seq in enumerate(cams):
            reference.reset()
            for k, rgb in enumerate(seq):
                want = reference.step(rgb).depth
                got = together[k][c].depth
                assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), (k, c)


def test_torch_step_batch_equals_step():
    """The reference pipeline batches the same way (any number of frames a pass)."""
    from smoothdino.models.torch_pipeline import TorchPipeline

    cams = sequences(n=2, frames=2)
    with TorchPipeline("vits14", "temporal", size=SMALL, random_weights=True) as pipeline:
        states = [pipeline.new_state() for _ in cams]
        together = [pipeline.step_batch([seq[k] for seq in cams], states) for k in range(2)]
        for c, seq in enumerate(cams):
            pipeline.reset()
            for k, rgb in enumerate(seq):
                want = pipeline.step(rgb).depth
                assert np.abs(together[k][c].depth - want).max() <= 1e-5 * np.abs(want).max()


def test_states_never_cross(small_export_fp32):
    """Two sequences interleaved frame by frame through one pipeline (a state each) give exactly the depth each
    gives alone; the pipeline's own state (step(rgb)) is a third, untouched by the others."""
    a, b = sequences(n=2)
    with _pipeline(small_export_fp32) as pipeline:
        alone_a = [pipeline.step(rgb).depth for rgb in a]
        pipeline.reset()
        alone_b = [pipeline.step(rgb).depth for rgb in b]
        pipeline.reset()
        state_a, state_b = pipeline.new_state(), pipeline.new_state()
        own = pipeline.step(a[0]).depth  # the pipeline's own sequence starts with a's first frame
        mixed_a, mixed_b = [], []
        for ra, rb in zip(a, b):
            mixed_a.append(pipeline.step(ra, state=state_a).depth)
            mixed_b.append(pipeline.step(rb, state=state_b).depth)
        own_next = pipeline.step(a[1]).depth  # continues from a[0], not from anything the states ran
    for k in range(FRAMES):
        np.testing.assert_array_equal(mixed_a[k], alone_a[k])
        np.testing.assert_array_equal(mixed_b[k], alone_b[k])
    np.testing.assert_array_equal(own, alone_a[0])
    np.testing.assert_array_equal(own_next, alone_a[1])
    assert not np.array_equal(alone_a[1], alone_b[1])


def test_state_swap_prime_and_reset(small_export_fp32):
    """temporal_state swaps the pipeline's own sequence; prime(state=) and reset(state=) touch only that state."""
    a, b = sequences(n=2, frames=2)
    with _pipeline(small_export_fp32) as pipeline:
        pipeline.prime(a[0])
        want = pipeline.step(a[1]).depth
        state = pipeline.new_state()
        pipeline.prime(a[0], state=state)
        pipeline.prime(b[0])  # the pipeline's own: another sequence
        saved, pipeline.temporal_state = pipeline.temporal_state, state
        np.testing.assert_array_equal(pipeline.step(a[1]).depth, want)
        assert not saved.empty and state.grey is not None
        pipeline.reset(state=saved)
        assert saved.empty and not state.empty
        with pytest.raises(TypeError, match="TemporalState"):
            pipeline.step(a[0], state={"levels": None})


def test_a_batch_bigger_than_the_export_is_refused_in_one_line(batch_export, small_export_fp32):
    from smoothdino.edge.engines.manifest import Manifest

    cams = sequences(n=BATCH + 1, frames=1)
    with _pipeline(batch_export) as pipeline:
        states = [pipeline.new_state() for _ in cams]
        with pytest.raises(UserError) as err:
            pipeline.step_batch([seq[0] for seq in cams], states)
        assert "\n" not in str(err.value) and f"--batch {BATCH + 1}" in str(err.value)
        assert all(s.empty for s in states)  # refused before anything ran
        with pytest.raises(ValueError, match="one state twice"):
            pipeline.step_batch([cams[0][0], cams[1][0]], [states[0], states[0]])
    with _pipeline(small_export_fp32) as pipeline:  # a one-frame export takes one frame a pass
        assert pipeline.max_batch == 1
        with pytest.raises(UserError, match="--batch 2"):
            pipeline.step_batch([cams[0][0], cams[1][0]], [pipeline.new_state(), pipeline.new_state()])
    manifest = Manifest.load(batch_export)
    manifest.check_batch(BATCH)
    with pytest.raises(UserError) as err:
        manifest.check_batch(BATCH + 2, "--batch")
    assert "\n" not in str(err.value) and "at most 3" in str(err.value)


def test_choose_batch_takes_a_batch_only_where_measured_faster(batch_export):
    from smoothdino.edge.batching import batch_decision, choose_batch
    from smoothdino.edge.engines.manifest import Manifest

    manifest = Manifest.load(batch_export)
    faster = {"backend": "tensorrt", "per_frame_ms": {"1": 20.0, "2": 14.0, "3": 12.0}}
    slower = {"backend": "onnxruntime", "per_frame_ms": {"1": 100.0, "2": 104.0, "3": 110.0}}
    barely = {"backend": "onnxruntime", "per_frame_ms": {"1": 100.0, "2": 95.0, "3": 96.0}}
    assert choose_batch(manifest, 4, "tensorrt", measured=faster) == 3
    assert choose_batch(manifest, 2, "tensorrt", measured=faster) == 2  # never more than the cameras
    assert choose_batch(manifest, 1, "tensorrt", measured=faster) == 1
    assert choose_batch(manifest, 3, "onnxruntime", measured=slower) == 1
    assert choose_batch(manifest, 3, "onnxruntime", measured=barely) == 1  # under MIN_GAIN
    assert choose_batch(manifest, 3, "tensorrt", measured=slower) == 1  # another back-end's figure
    # ONNX Runtime on the CPU: the clock gained but the CPU time did not (other work paused): no batch
    clock_only = {**faster, "backend": "onnxruntime", "cpu_per_frame_ms": {"1": 40.0, "2": 39.0, "3": 41.0}}
    assert choose_batch(manifest, 3, "onnxruntime", measured=clock_only) == 1
    both = {**clock_only, "cpu_per_frame_ms": {"1": 40.0, "2": 30.0, "3": 33.0}}
    n, why = batch_decision(manifest, 3, "onnxruntime", measured=both)
    assert n == 2 and "cheaper" in why and "CPU 30.0 vs 40.0" in why  # the larger of the two savings (25 % vs 17.5 %)
    n, why = batch_decision(manifest, 3, "tensorrt")  # the manifest's own figure is ONNX Runtime's
    assert n == 1 and "no batch figure" in why
    # explicit settings: off, a number (at most the cameras), more than the export takes is refused
    assert choose_batch(manifest, 3, "onnxruntime", "off", measured=faster) == 1
    assert choose_batch(manifest, 2, "onnxruntime", 3) == 2
    with pytest.raises(UserError, match="--batch 5"):
        choose_batch(manifest, 5, "onnxruntime", 5)
    with pytest.raises(UserError, match="auto, off"):
        choose_batch(manifest, 2, "onnxruntime", "sometimes")
    # the export's own ONNX Runtime figure decides auto here, whichever way it went on this machine
    wall, cpu = manifest.batch_timing["per_frame_ms"], manifest.batch_timing["cpu_per_frame_ms"]
    saving = {b: min(1 - wall[str(b)] / wall["1"], 1 - cpu[str(b)] / cpu["1"]) for b in (2, 3)}
    best = max(saving, key=saving.get)
    assert choose_batch(manifest, 3, "onnxruntime") == (best if saving[best] >= 0.1 else 1)


def test_tensorrt_rtx_builds_the_batch_export_with_its_profile(batch_export, tmp_path):
    """TensorRT for RTX (no GPU needed) parses every graph of the batch export with its dynamic first axis, and
    builds it with one optimisation profile 1 / N / N (the engines' I/O is the manifest's, -1 batch dim)."""
    from smoothdino.edge.machine.environment import import_tensorrt

    try:
        import_tensorrt("tensorrt-rtx")
    except Exception as err:
        pytest.skip(f"TensorRT for RTX not importable ({type(err).__name__})")
    from smoothdino.edge.engines.manifest import Manifest
    from smoothdino.export.tensorrt import batch_profile, build_stage_engines, network_io, parse_onnx

    manifest = Manifest.load(batch_export)
    for stage, files in manifest.stages.items():
        trt, _, builder, network, _ = parse_onnx(batch_export / files.onnx["fp16"], "tensorrt-rtx")
        assert network_io(trt, network) == {"inputs": files.inputs, "outputs": files.outputs}
        profile = batch_profile(trt, builder, network, batch_export / files.onnx["fp16"], BATCH)
        first = network.get_input(0)
        low, opt, high = (tuple(s) for s in profile.get_shape(first.name))
        assert (low[0], opt[0], high[0]) == (1, BATCH, BATCH) and low[1:] == tuple(first.shape)[1:]
    stages = {s: manifest.stages[s] for s in manifest.stage_names}
    for files in stages.values():
        files.precision = "fp16"
    seconds = build_stage_engines(tmp_path, stages, {s: "fp16" for s in stages}, flavour="tensorrt-rtx",
                                  compute_capabilities=["8.6"], batch=BATCH,
                                  onnx_path=lambda stage, precision: batch_export / stages[stage].onnx[precision])
    assert set(seconds) == {f"{s}.engine" for s in stages}
    for files in stages.values():
        assert (tmp_path / files.engine).stat().st_size > 1 << 20


def test_tensorrt_feeds_take_any_batch_up_to_the_profile():
    """The TensorRT run-time's shape rule, without a GPU: a batch engine takes 1..N frames, a static one its shape."""
    from smoothdino.edge.engines.engine import TensorSpec
    from smoothdino.edge.engines.tensorrt_engine import check_host_feed, shape_fits

    assert shape_fits((2, 384, 5, 7), (-1, 384, 5, 7), 3)
    assert not shape_fits((4, 384, 5, 7), (-1, 384, 5, 7), 3)
    assert not shape_fits((0, 384, 5, 7), (-1, 384, 5, 7), 3)
    assert not shape_fits((2, 384, 5, 8), (-1, 384, 5, 7), 3)
    assert shape_fits((1, 3), (1, 3)) and not shape_fits((2, 3), (1, 3), 4)
    spec = TensorSpec((-1, 70, 98, 3), "uint8")
    check_host_feed("encoder.engine", "image", spec, np.zeros((3, 70, 98, 3), np.uint8), max_batch=3)
    with pytest.raises(ValueError, match=r"1\.\.3"):
        check_host_feed("encoder.engine", "image", spec, np.zeros((4, 70, 98, 3), np.uint8), max_batch=3)


def test_the_shared_network_batches_waiting_cameras_and_each_gets_its_own_depth(batch_export):
    """live's shared network with batching on: three cameras asking from their own threads are served in shared
    passes (a batch at a time, each camera its own state) and each camera's depth equals its sequence run alone."""
    import threading

    from smoothdino.edge.shared_network import SharedNetwork

    frames = 8  # passes are shared when the cameras' requests meet in the queue: over 8 rounds some always do
    cams = sequences(frames=frames)
    with _pipeline(batch_export) as pipeline:
        alone = []
        for seq in cams:
            state = pipeline.new_state()
            alone.append([pipeline.step(rgb, state=state).depth for rgb in seq])
    got: dict[int, list[np.ndarray]] = {}
    with SharedNetwork(lambda: _pipeline(batch_export)) as network:
        network.batch = BATCH
        lanes = [network.lane(f"cam{c}") for c in range(BATCH)]
        start = threading.Barrier(BATCH)

        def run(c: int) -> None:
            start.wait()
            got[c] = [lanes[c].step(rgb).depth for rgb in cams[c]]

        threads = [threading.Thread(target=run, args=(c,)) for c in range(BATCH)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        summary = network.summary()
    assert summary["frames"] == BATCH * frames and summary["passes"] < summary["frames"]  # some passes were shared
    assert sum(lane["batched_passes"] for lane in summary["lanes"].values()) > 0
    for c in range(BATCH):
        for k in range(frames):
            scale = np.abs(alone[c][k]).max()
            assert np.abs(got[c][k] - alone[c][k]).max() <= 1e-5 * scale, (c, k)
