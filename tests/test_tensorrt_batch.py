"""The TensorRT run-time's batch and per-camera paths, on a simulated device (no GPU here).

The device is a bytearray: pycuda's allocations are offsets into it and its copies move bytes, so DeviceTensor
views, slices and device-to-device copies are checked byte for byte. The engines are fakes with TensorRT's API as
TensorRTEngine uses it (I/O tensors with a -1 batch dim, one optimisation profile, `set_input_shape`, output shapes
from the context, `execute_async_v3` reading and writing the bound addresses). Three fake stages make a pipeline
whose depth depends on the current and the previous frame, so a state that crossed cameras, or ping-pong buffers
that a second camera overwrote, would show. Real engines on a GPU: tests/test_tensorrt.py (skips here).
"""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

H, W, C = 6, 8, 4  # frame, and one level's channels (the fake encoder's patch map is [n, C, 2, 2])


class FakeDevice:
    def __init__(self):
        self.memory = bytearray(1 << 22)
        self.top = 64

    def alloc(self, n: int):
        device = self

        class Allocation:
            def __init__(self, at):
                self.at = at

            def __int__(self):
                return self.at

            def free(self):
                pass

        at = self.top
        self.top += (n + 63) // 64 * 64
        assert self.top <= len(self.memory), "fake device out of memory"
        return Allocation(at)

    def read(self, ptr: int, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        return np.frombuffer(bytes(self.memory[ptr:ptr + n]), dtype).reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).tobytes()
        self.memory[ptr:ptr + len(data)] = data


@pytest.fixture()
def device(monkeypatch):
    from smoothdino.edge.engines import tensorrt_engine

    dev = FakeDevice()

    class Stream:
        handle = 0

        def synchronize(self):
            pass

    cuda = types.SimpleNamespace(
        mem_alloc=dev.alloc,
        pagelocked_empty=lambda shape, dtype: np.empty(shape, dtype),
        memcpy_htod_async=lambda dst, host, stream: dev.write(int(dst), host),
        memcpy_dtoh_async=lambda host, src, stream: np.copyto(host, dev.read(int(src), host.shape, host.dtype)),
        memcpy_dtod_async=lambda dst, src, n, stream: dev.memory.__setitem__(
            slice(int(dst), int(dst) + n), bytes(dev.memory[int(src):int(src) + n])),
    )
    monkeypatch.setattr(tensorrt_engine, "_CUDA", {"cuda": cuda, "context": None, "stream": Stream(),
                                                   "thread": threading.get_ident()})
    return dev


# -- fake TensorRT: three stages with a batch axis ----------------------------------------------------------------

STAGE_IO = {  # name -> (shape with -1 batch, dtype, is input)
    "encoder": {"image": ((-1, H, W, 3), "uint8", True), "patch0": ((-1, C, 2, 2), "float32", False),
                "cls0": ((-1, C), "float32", False)},
    "adapter": {"patch0": ((-1, C, 2, 2), "float32", True), "cls0": ((-1, C), "float32", True),
                "prev_patch0": ((-1, C, 2, 2), "float32", True), "prev_cls0": ((-1, C), "float32", True),
                "shift": ((-1, 3), "float32", True),
                "fused_patch0": ((-1, C, 2, 2), "float32", False), "fused_cls0": ((-1, C), "float32", False)},
    "decoder": {"patch0": ((-1, C, 2, 2), "float32", True), "cls0": ((-1, C), "float32", True),
                "depth": ((-1, 1, H, W), "float32", False)},
}


def compute(stage: str, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What each fake stage does, item by item (a batch is its items side by side)."""
    if stage == "encoder":
        img = x["image"].astype(np.float32) / 255
        patch = np.stack([img[:, :3, :4].mean((1, 2)), img[:, 3:, :4].mean((1, 2)),
                          img[:, :3, 4:].mean((1, 2)), img[:, 3:, 4:].mean((1, 2))], -1)  # [n, 3, 4]
        patch = np.concatenate([patch, patch[:, :1] * 2], 1).reshape(-1, C, 2, 2)
        return {"patch0": patch, "cls0": patch.mean((2, 3))}
    if stage == "adapter":
        gate = x["shift"][:, 2:3]
        return {"fused_patch0": x["patch0"] + 0.5 * gate[:, :, None, None] * x["prev_patch0"],
                "fused_cls0": x["cls0"] + 0.25 * x["prev_cls0"] + x["shift"][:, :1]}
    depth = 1 + x["patch0"].sum((1, 2, 3))[:, None] + x["cls0"].sum(1, keepdims=True)  # [n, 1]
    ramp = np.linspace(0, 1, H * W, dtype=np.float32).reshape(1, 1, H, W)
    return {"depth": (depth[:, :, None, None] * (1 + ramp)).astype(np.float32)}


def fake_tensorrt(device: FakeDevice, max_batch: int):
    class ILogger:
        Severity = types.SimpleNamespace(ERROR="error", INTERNAL_ERROR="internal", WARNING="warning")

        def __init__(self):
            pass

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            if not (1 <= shape[0] <= max_batch):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            n = next(iter(self.shapes.values()))[0]
            return (n,) + STAGE_IO[self.engine.stage][name][0][1:]

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            io = STAGE_IO[self.engine.stage]
            inputs = {n: device.read(self.addresses[n], self.shapes[n], io[n][1]) for n, v in io.items() if v[2]}
            assert len({v.shape[0] for v in inputs.values()}) == 1
            for name, value in compute(self.engine.stage, inputs).items():
                assert value.shape == tuple(self.get_tensor_shape(name))
                device.write(self.addresses[name], value.astype(np.float32))
            return True

    class Engine:
        def __init__(self, stage):
            self.stage, self.names = stage, list(STAGE_IO[stage])
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_shape(self, name):
            return STAGE_IO[self.stage][name][0]

        def get_tensor_dtype(self, name):
            return STAGE_IO[self.stage][name][1]

        def get_tensor_mode(self, name):
            return "input" if STAGE_IO[self.stage][name][2] else "output"

        def get_tensor_profile_shape(self, name, profile):
            shape = STAGE_IO[self.stage][name][0]
            return [(1,) + shape[1:], (max_batch,) + shape[1:], (max_batch,) + shape[1:]]

        def create_execution_context(self, *args):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine(blob.decode())

    return types.SimpleNamespace(ILogger=ILogger, Runtime=Runtime, TensorIOMode=types.SimpleNamespace(INPUT="input"),
                                 nptype=lambda dtype: np.dtype(dtype).type)


@pytest.fixture()
def engines(device, tmp_path, monkeypatch):
    from smoothdino.edge.engines import tensorrt_engine

    trt = fake_tensorrt(device, max_batch=3)
    monkeypatch.setattr(tensorrt_engine, "import_tensorrt", lambda flavour: trt)

    def open_stage(stage, output_sets=1):
        path = tmp_path / f"{stage}.engine"
        path.write_bytes(stage.encode())
        return tensorrt_engine.TensorRTEngine(path, output_sets=output_sets)

    return open_stage


def frames(camera: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(camera)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(count)]


def pipeline(open_stage):
    """A DepthPipeline on the fake engines, wired as DepthPipeline wires TensorRT (encoder with two output sets)."""
    from smoothdino.edge.motion import Shift
    from smoothdino.edge.pipeline import DepthPipeline

    p = DepthPipeline.__new__(DepthPipeline)
    p.backend, p.precision, p.files = "tensorrt", "fp32", {}
    p.manifest = types.SimpleNamespace(check_batch=lambda n, source: None, frame_size=(H, W))
    p.engines = {"encoder": open_stage("encoder", 2), "adapter": open_stage("adapter"), "decoder": open_stage("decoder")}
    p.has_adapter, p.max_batch = True, 3
    p._init_frame_state((H, W), 0.1, 1, False)
    p._check = lambda rgb: None
    p._timed_shift = lambda prev, grey: (Shift(float(grey.mean() - prev.mean()), 0.0, 0.9), 0.0)  # per camera
    return p


def test_engine_sets_shapes_per_pass_and_returns_views(engines, device):
    encoder = engines("encoder", 2)
    assert encoder.max_batch == 3 and encoder.dynamic
    assert encoder._output_sets[0]["patch0"].shape == (3, C, 2, 2)  # allocated for the profile's max
    images = np.stack(frames(0, 2))
    out = encoder.run({"image": images})
    assert out["patch0"].shape == (2, C, 2, 2) and out["patch0"].is_view
    want = compute("encoder", {"image": images})
    np.testing.assert_allclose(out["patch0"].to_host(), want["patch0"], rtol=1e-6)
    np.testing.assert_allclose(out["cls0"][1:2].to_host(), want["cls0"][1:2], rtol=1e-6)
    assert out["cls0"][1:2] is out["cls0"][1:2]  # views are made once
    one = encoder.run({"image": images[:1]})  # the other output set, one frame
    assert one["patch0"].shape == (1, C, 2, 2)
    np.testing.assert_allclose(out["patch0"].to_host(), want["patch0"], rtol=1e-6)  # ping-pong: still there
    with pytest.raises(ValueError, match=r"1\.\.3"):
        encoder.run({"image": np.stack(frames(0, 4))})
    copies = encoder.copy_levels({k: v[1:2] for k, v in out.items()})
    assert not copies["patch0"].is_view
    encoder.run({"image": images[::-1].copy()})
    encoder.run({"image": images[::-1].copy()})  # both output sets overwritten
    np.testing.assert_allclose(copies["patch0"].to_host(), want["patch0"][1:2], rtol=1e-6)
    adapter = engines("adapter")
    stacked = adapter.stack_inputs({"prev_patch0": [copies["patch0"], one["patch0"]]}, strip="prev_")
    assert stacked["patch0"].shape == (2, C, 2, 2)
    np.testing.assert_allclose(stacked["patch0"].to_host()[0], want["patch0"][1], rtol=1e-6)


def test_batches_and_cameras_on_tensorrt_equal_each_camera_alone(engines):
    """step_batch and interleaved step(state=) on the TensorRT path give every camera what it gets alone: the
    encoder's ping-pong buffers never hand one camera another's previous levels."""
    cams = [frames(c, 4) for c in range(3)]
    alone = []
    for seq in cams:
        p = pipeline(engines)
        alone.append([p.step(rgb).depth for rgb in seq])
    p = pipeline(engines)
    states = [p.new_state() for _ in cams]
    together = [p.step_batch([seq[k] for seq in cams], states) for k in range(4)]
    q = pipeline(engines)
    own = q.step(cams[0][0]).depth  # the pipeline's own sequence, then two more cameras interleaved
    qs = [q.new_state(), q.new_state()]
    mixed = [[q.step(cams[c][k], state=qs[c - 1]).depth for c in (1, 2)] for k in range(4)]
    own_next = q.step(cams[0][1]).depth
    pair = [q.step_batch([cams[1][k], cams[2][k]], [q.new_state(), q.new_state()]) for k in range(1)]
    for k in range(4):
        for c in range(3):
            np.testing.assert_allclose(together[k][c].depth, alone[c][k], rtol=1e-6)
        for c in (1, 2):
            np.testing.assert_allclose(mixed[k][c - 1], alone[c][k], rtol=1e-6)
    np.testing.assert_allclose(own, alone[0][0], rtol=1e-6)
    np.testing.assert_allclose(own_next, alone[0][1], rtol=1e-6)
    np.testing.assert_allclose(pair[0][1].depth, alone[2][0], rtol=1e-6)
    assert not np.allclose(alone[0][1], alone[1][1])
