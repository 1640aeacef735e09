"""What the robot outputs cost a frame: the ROS 2 bag sink (32FC1 depth + CameraInfo + PointCloud2), the PLY
sink and the Foxglove WebSocket sink (one loopback viewer subscribed to every channel), against the plain run.

    python -m smoothdino.benchmarks.robotics_overhead --sizes 70x98,480x640 --frames 12

Two measurements per frame size, on synthetic moving frames generated before any clock starts:
- sink cost: each sink's own time per frame, called as the loop calls it. The bag and PLY sinks run on the
  loop's thread; the Foxglove sink's loop-side cost is `write` (a mailbox), its building/logging runs on its
  publisher thread and is timed there, publish by publish; a publish that raised is counted as failed, never
  as published, and left out of the times.
- in the loop: run_stream per-frame time (from the source handing a frame over to the last sink returning),
  plain and with each sink, on an export at that size (made here with random weights unless --engines
  SIZE=FOLDER is given; --no-pipeline skips it). One untimed run first warms ONNX Runtime up.
- ROS 2 (`--ros2`), per transport (DDS through Cyclone, Zenoh through a router in a child process): the publisher
  thread's ms a frame to build Image + CameraInfo + PointCloud2 (every --cloud-stride-th pixel) and to send them,
  the loop side's `write`, and the depth images a second a loopback subscriber (another process, on 127.0.0.1,
  multicast off) receives while frames are offered at --ros2-offer-fps for --ros2-seconds.
Percentiles are real percentiles (numpy, linear) of the per-frame times. The first frame of every run (first
write: files opened; first frame of a stream: no phase correlation) is warm-up: reported apart as first_ms,
left out of the percentiles.
Results: <out>/robotics_overhead.json and .md; --record writes benchmarks/results/robotics_overhead.json for the docs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from smoothdino.core.images import parse_size
from smoothdino.edge.sinks.bag import BagSink
from smoothdino.edge.sinks.foxglove import TOPICS, FoxgloveSink
from smoothdino.edge.sources.intrinsics import NYU_KINECT, IntrinsicsChoice
from smoothdino.edge.sinks.pointcloud import PlySink
from smoothdino.core.files import atomic_write_text
from smoothdino.edge.sinks import json_dumps
from smoothdino.edge.sources import Frame, SourceStats
from smoothdino.edge.sources.synthetic import SyntheticScene

from .record import Record, Table, add_record_option, command_line, load_note, write_record
from .report import markdown_table
from .ros2_loopback import Child, cyclone_loopback, free_port, zenoh_config
from .runners import percentiles

MESSAGE_DATA = 0x01  # Foxglove WebSocket protocol: binary opcode of a message on a subscription


class LoopbackViewer:
    """A Foxglove-protocol client on loopback, as the Foxglove app behaves on connect: read the advertised
    channels, subscribe to every one. `receive` collects messages; `drain` reads in a thread, like a live
    viewer. Needs `websockets` (the dev extra)."""

    def __init__(self, port: int, wait: float = 60.0, channels: int = len(TOPICS)):
        from websockets.sync.client import connect

        deadline = time.monotonic() + wait
        self._stack = contextlib.ExitStack()
        while True:
            try:
                self.ws = self._stack.enter_context(connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"],
                                                            open_timeout=2, close_timeout=1, max_size=None))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.channels: dict[int, dict] = {}
        while len(self.channels) < channels:
            message = json.loads(self.ws.recv(timeout=10))
            if message["op"] == "advertise":
                self.channels.update({c["id"]: c for c in message["channels"]})
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": cid, "channelId": cid} for cid in self.channels]}))
        self.received = 0
        self._thread: threading.Thread | None = None

    def receive(self, until: float) -> list[tuple[str, bytes]]:
        """(topic, payload) of every message until `until` (time.monotonic) or the server goes away."""
        got = []
        while time.monotonic() < until:
            try:
                data = self.ws.recv(timeout=None if until == float("inf") else max(0.01, until - time.monotonic()))
            except Exception:  # noqa: BLE001 - a timeout, or the stream ended and the server closed
                break
            if isinstance(data, bytes) and data[0] == MESSAGE_DATA:
                (subscription,) = struct.unpack_from("<I", data, 1)
                got.append((self.channels[subscription]["topic"], data[13:]))  # opcode, subscription, log time
                self.received += 1
        return got

    def drain(self) -> None:
        self._thread = threading.Thread(target=lambda: self.receive(float("inf")), daemon=True)
        self._thread.start()

    def decoder(self, topic: str):
        """The protobuf class the server advertised for a topic (its schema is a FileDescriptorSet)."""
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        channel = next(c for c in self.channels.values() if c["topic"] == topic)
        pending = list(descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"])).file)
        pool = descriptor_pool.DescriptorPool()
        while pending:  # dependencies first, whatever order the set lists them in
            for f in list(pending):
                try:
                    pool.Add(f)
                    pending.remove(f)
                except TypeError:
                    continue
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(channel["schemaName"]))

    def close(self) -> None:
        self._stack.close()


def _viewer_or_recording(folder: Path):
    """A reading loopback viewer when websockets is installed, else an MCAP recording (either makes every
    channel live, so the sink builds and logs everything)."""
    try:
        import websockets  # noqa: F401
    except ModuleNotFoundError:
        return FoxgloveSink(None, folder / "run.mcap"), None
    sink = FoxgloveSink(("127.0.0.1", 0))
    viewer = LoopbackViewer(sink.port)
    viewer.drain()
    return sink, viewer


def synthetic_frames(size: tuple[int, int], count: int) -> tuple[list[Frame], list[np.ndarray]]:
    """The synthetic moving frames and their depth, made up front: their generation is never timed."""
    h, w = size
    frames, depths = [], []
    for i, (rgb, depth) in enumerate(SyntheticScene(h, w, count)):
        frames.append(Frame(rgb, i, f"{i + 1}", i / 10, meta={"intrinsics": NYU_KINECT.scaled(h, w), "frame_id": "camera",
                                                           "stamp_ns": 1_700_000_000_000_000_000 + i * 100_000_000}))
        depths.append(depth.astype(np.float32))
    return frames, depths


def per_frame(seconds: list[float]) -> dict:
    """The first frame apart (warm-up), percentiles of the rest, in ms."""
    if len(seconds) < 2:
        raise ValueError("need at least 2 frames: the first is warm-up")
    return {**percentiles(seconds[1:]), "first_ms": 1000.0 * seconds[0], "timed_frames": len(seconds) - 1}


def time_publishes(sink: FoxgloveSink) -> dict:
    """Time each publish on the sink's publisher thread, and count the ones that raised apart (the sink's own
    `published` counts a failed publish too). Set before the first write."""
    stats: dict = {"ok_seconds": [], "failed": 0}
    publish = sink.publish

    def timed(*args):
        start = time.perf_counter()
        try:
            publish(*args)
        except Exception:
            stats["failed"] += 1
            raise  # the sink reports it, as it would without the benchmark
        stats["ok_seconds"].append(time.perf_counter() - start)

    sink.publish = timed  # the publisher thread looks it up on the instance for each frame
    return stats


def publisher_row(sink: FoxgloveSink, stats: dict, written: int) -> dict:
    ok = stats["ok_seconds"]
    row = {"per_frame": per_frame(ok) if len(ok) >= 2 else {"p50_ms": float("nan"), "p95_ms": float("nan")},
           "frames_written": written, "published": len(ok), "publish_failed": stats["failed"],
           "dropped": sink.dropped}
    row["unaccounted"] = written - len(ok) - stats["failed"] - sink.dropped  # 0: every frame is one of the three
    return row


def sink_costs(size: tuple[int, int], count: int, cloud_stride: int) -> dict:
    """Seconds per frame each sink takes, called as run_stream calls it."""
    frames, depths = synthetic_frames(size, count)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, make in ((f"bag sink (depth, CameraInfo, PointCloud2 1/{cloud_stride}^2)",
                            lambda: BagSink(folder / "bag", "/camera", IntrinsicsChoice(), cloud_stride)),
                           (f"PLY sink (1/{cloud_stride}^2)", lambda: PlySink(folder / "ply", IntrinsicsChoice(), cloud_stride))):
            sink = make()
            times = []
            for frame, depth in zip(frames, depths):
                start = time.perf_counter()
                sink.write(frame, depth, None, None)
                times.append(time.perf_counter() - start)
            start = time.perf_counter()
            sink.close()
            rows[name] = {"per_frame": per_frame(times), "close_ms": (time.perf_counter() - start) * 1000.0}
        sink, viewer = _viewer_or_recording(folder)
        sink.cloud_stride = cloud_stride
        publishes = time_publishes(sink)
        times = []
        for frame, depth in zip(frames, depths):
            start = time.perf_counter()
            sink.write(frame, depth, None, None)
            times.append(time.perf_counter() - start)
            time.sleep(0.05)  # leave the publisher time for each frame, as a real loop's inference would
        sink.close()
        who = "1 loopback viewer" if viewer else "MCAP recording"
        rows[f"Foxglove sink, loop thread ({who})"] = {"per_frame": per_frame(times)}
        rows[f"Foxglove sink, publisher thread ({who})"] = publisher_row(sink, publishes, len(frames))
        if viewer:
            rows[f"Foxglove sink, publisher thread ({who})"]["messages_received"] = viewer.received
            viewer.close()
    return rows


class FrameListSource:
    """Frames made beforehand, handed to run_stream as a sequence source would; notes when it hands each over."""

    live = False
    fps = 10.0

    def __init__(self, frames: list[Frame], name: str):
        self.frames, self.name = frames, name
        self.stats = SourceStats()
        self.handed: list[float] = []

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        for frame in self.frames:
            self.stats.read += 1
            self.handed.append(time.perf_counter())
            yield frame

    def close(self) -> None:
        pass


def timed_stream(pipeline, frames: list[Frame], sinks: list) -> list[float]:
    """run_stream over `frames`; per frame, the seconds from the source handing it over to the loop being done
    with it (pipeline, every sink): generation and the loop's set-up and closing are outside."""
    from smoothdino.edge.loop import StreamOutputs, run_stream

    source = FrameListSource(frames, "synthetic")
    done: list[float] = []
    report = run_stream(pipeline, source, StreamOutputs(sinks=sinks), on_frame=lambda _: done.append(time.perf_counter()))
    if report.computed != len(frames) or len(done) != len(frames):
        raise RuntimeError(f"run_stream computed {report.computed} of {len(frames)} frames")
    return [end - start for start, end in zip(source.handed, done)]


def loop_costs(size: tuple[int, int], engines: Path, count: int, cloud_stride: int, ros2: bool = True) -> dict:
    """run_stream time per frame: plain, + bag sink, + Foxglove sink with a viewer, + each ROS 2 transport (no
    subscriber: the loop's side is what is timed), plain again (after an untimed warm-up run)."""
    from smoothdino.edge.pipeline import DepthPipeline
    from smoothdino.edge.ros2 import Ros2Publisher

    frames, _ = synthetic_frames(size, count)
    rows = {}
    with cyclone_loopback(), tempfile.TemporaryDirectory() as tmp, \
            DepthPipeline.from_folder(engines, backend="auto") as pipeline:
        folder = Path(tmp)
        description = pipeline.description
        timed_stream(pipeline, frames[:2], [])  # warm-up: ONNX Runtime's first runs, not timed
        variants = ["plain", "bag sink", "Foxglove sink + viewer", *(["ROS 2 dds", "ROS 2 zenoh"] if ros2 else []),
                    "plain (again)"]
        for name in variants:
            viewer, publishes = None, None
            if name.startswith("ROS 2"):
                sinks = [Ros2Publisher(name.split()[-1], namespace=ROS2_NAMESPACE, domain=random.randrange(120, 230),
                                       connect=f"tcp/127.0.0.1:{free_port()}" if name.endswith("zenoh") else None,
                                       distro="jazzy", intrinsics=IntrinsicsChoice(None, "bench", nyu=True),
                                       cloud_stride=cloud_stride, live=False)]
            elif name == "bag sink":
                sinks = [BagSink(folder / f"bag{len(rows)}", "/camera", IntrinsicsChoice(), cloud_stride)]
            elif name.startswith("Foxglove"):
                fox, viewer = _viewer_or_recording(folder)
                fox.cloud_stride = cloud_stride
                publishes = time_publishes(fox)
                sinks = [fox]
            else:
                sinks = []
            seconds = timed_stream(pipeline, frames, sinks)  # closes the sinks
            rows[name] = {"per_frame": per_frame(seconds), "frames": len(seconds)}
            if publishes is not None:
                publisher = publisher_row(fox, publishes, len(frames))
                rows[name].update({k: publisher[k] for k in ("published", "publish_failed", "dropped")})
            if viewer:
                viewer.close()
    plain = (rows["plain"]["per_frame"]["p50_ms"] + rows["plain (again)"]["per_frame"]["p50_ms"]) / 2
    for row in rows.values():
        row["overhead_p50_ms"] = row["per_frame"]["p50_ms"] - plain
    return {"pipeline": description, "rows": rows}


ROS2_NAMESPACE = "/bench"


def subscribe(transport: str, domain: int, endpoint: str, seconds: float) -> None:
    """A loopback subscriber (run as its own process): counts the depth images on <ROS2_NAMESPACE>/depth/image as
    they arrive (bytes only, no Python deserialization), until `seconds` passed; prints the arrival times as JSON."""
    from smoothdino.edge.ros2.topics import Graph

    graph = Graph.of(ROS2_NAMESPACE, domain=domain, distro="jazzy")
    topic = graph.topic("depth")
    arrivals: list[float] = []
    if transport == "dds":
        from cyclonedds._clayer import ddspy_take
        from cyclonedds.core import Qos, SampleState, ViewState, InstanceState
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.qos import Policy
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic
        from smoothdino.edge.ros2.dds import idl_type

        participant = DomainParticipant(domain)
        reader = DataReader(participant, Topic(participant, topic.dds_topic, idl_type("jazzy", topic.ros_type)),
                            qos=Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(5)))
        mask = SampleState.Any | ViewState.Any | InstanceState.Any
        print("ready", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            taken = ddspy_take(reader._ref, mask, 16)
            now = time.monotonic()
            arrivals += [now for _, info in taken if info.valid_data]
            time.sleep(0.001)
    else:
        import zenoh

        from smoothdino.edge.ros2.zenoh import data_key

        session = zenoh.open(zenoh_config(endpoint))
        subscriber = session.declare_subscriber(data_key(graph, topic), lambda sample: arrivals.append(time.monotonic()))
        print("ready", flush=True)
        time.sleep(seconds)
        subscriber.undeclare()
        session.close()
    print(json.dumps(arrivals), flush=True)


def ros2_costs(size: tuple[int, int], seconds: float, offer_fps: float, cloud_stride: int) -> dict:
    """Per transport: publisher-thread ms a frame (build the three messages' CDR, send them), loop-side write ms,
    and what a loopback subscriber in another process receives a second while frames are offered."""
    from smoothdino.edge.ros2 import Ros2Publisher

    frames, depths = synthetic_frames(size, 8)
    rows = {}
    with cyclone_loopback():
        for transport in ("dds", "zenoh"):
            domain = random.randrange(120, 230)
            endpoint = f"tcp/127.0.0.1:{free_port()}"
            router = Child.router(endpoint) if transport == "zenoh" else None
            try:
                listener = Child("-m", "smoothdino.benchmarks.robotics_overhead", "--subscribe", transport, domain,
                                 endpoint, seconds + 4)
                publisher = Ros2Publisher(transport, namespace=ROS2_NAMESPACE, domain=domain,
                                          connect=endpoint if transport == "zenoh" else None, distro="jazzy",
                                          intrinsics=IntrinsicsChoice(None, "bench", nyu=True),
                                          cloud_stride=cloud_stride, live=False)
                build, send = _timed(publisher.builder, "build"), _timed(publisher.transport, "publish")
                time.sleep(1.0)  # discovery
                writes, start = [], time.perf_counter()
                i = 0
                while time.perf_counter() - start < seconds:
                    due = start + i / offer_fps
                    time.sleep(max(0.0, due - time.perf_counter()))
                    t0 = time.perf_counter()
                    publisher.write(frames[i % len(frames)], depths[i % len(depths)], None, None)
                    writes.append(time.perf_counter() - t0)
                    i += 1
                offered = time.perf_counter() - start
                publisher.close()
                arrivals = json.loads(listener.process.communicate(timeout=seconds + 30)[0].strip().splitlines()[-1])
            finally:
                if router is not None:
                    router.kill()
            span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
            rows[transport] = {"build": per_frame(build), "send": per_frame(send), "write": per_frame(writes),
                               "offered": i, "offered_fps": i / offered, "published": publisher.published,
                               "dropped": publisher.dropped, "failed": publisher.failed, "received": len(arrivals),
                               "received_fps": (len(arrivals) - 1) / span if span else 0.0}
    return rows


def _timed(owner, name: str) -> list[float]:
    """Seconds of each call of owner.<name> from now on (the publisher thread looks the method up on the instance)."""
    seconds: list[float] = []
    method = getattr(owner, name)

    def timed(*args):
        start = time.perf_counter()
        try:
            return method(*args)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(owner, name, timed)
    return seconds


def _export(size: tuple[int, int], out: Path) -> Path:
    from smoothdino.export import ExportSpec, export_model

    engines = out / f"engines-{size[0]}x{size[1]}-random"
    if not (engines / "manifest.json").is_file():
        export_model(ExportSpec(size=size, precision="fp32", backend="onnx", random_weights=True, calibration_frames=2,
                                force=True), engines)
    return engines


INTRO = ("Synthetic moving frames, point clouds every {stride}th pixel each way; random weights (the depth values do "
         "not matter for the cost). Percentiles leave out each run's first frame (warm-up, shown as 'first').")


def tables(result: dict) -> list[Table]:
    """Per frame size: the sinks' own cost, the ROS 2 publisher per transport, and the loop with each output."""
    def notes(r: dict) -> str:
        return ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                         if k not in ("per_frame", "frames", "overhead_p50_ms"))

    out = []
    for size, entry in result["sizes"].items():
        out.append(Table(f"{size}: sink cost, ms per frame", ["sink", "p50", "p95", "first", "frames timed", "notes"], [
            [name, f"{r['per_frame']['p50_ms']:.2f}", f"{r['per_frame']['p95_ms']:.2f}",
             f"{r['per_frame']['first_ms']:.2f}" if "first_ms" in r["per_frame"] else "-",
             r["per_frame"].get("timed_frames", "-"), notes(r)]
            for name, r in entry["sinks"].items()]))
        if "ros2" in entry:
            out.append(Table(
                f"{size}: ROS 2 publisher, {result['ros2_seconds']:g} s of frames offered at "
                f"{result['ros2_offer_fps']:g}/s, a loopback subscriber in another process (ms per frame, p50 (p95))",
                ["transport", "build Image+CameraInfo+PointCloud2", "send", "loop-side write", "published", "dropped",
                 "received/s"], [
                    [name, f"{r['build']['p50_ms']:.2f} ({r['build']['p95_ms']:.2f})",
                     f"{r['send']['p50_ms']:.2f} ({r['send']['p95_ms']:.2f})",
                     f"{r['write']['p50_ms']:.3f} ({r['write']['p95_ms']:.3f})", r["published"], r["dropped"],
                     f"{r['received_fps']:.1f}"]
                    for name, r in entry["ros2"].items()]))
        if "loop" in entry:
            out.append(Table(f"{size}: in the loop ({entry['loop']['pipeline']}), ms per frame",
                             ["run", "p50", "p95", "first", "p50 overhead vs plain", "frames timed", "notes"], [
                [name, f"{r['per_frame']['p50_ms']:.1f}", f"{r['per_frame']['p95_ms']:.1f}",
                 f"{r['per_frame']['first_ms']:.1f}", f"{r['overhead_p50_ms']:+.1f}", r["per_frame"]["timed_frames"],
                 notes(r)]
                for name, r in entry["loop"]["rows"].items()]))
    return out


def markdown(result: dict) -> str:
    lines = ["# robot outputs: per-frame cost", "", INTRO.format(stride=result["cloud_stride"]), ""]
    for table in tables(result):
        lines += [table.caption + ":", "", *markdown_table(table.columns, table.rows), ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="70x98,480x640")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--loop-frames", type=int, default=8, help="frames per run_stream variant (the first is warm-up)")
    p.add_argument("--cloud-stride", type=int, default=4)
    p.add_argument("--engines", action="append", default=[], help="SIZE=FOLDER, an export at that size (repeat)")
    p.add_argument("--no-pipeline", action="store_true", help="sink costs only")
    p.add_argument("--ros2-seconds", type=float, default=5.0, help="seconds of frames offered to each ROS 2 transport")
    p.add_argument("--ros2-offer-fps", type=float, default=60.0, help="frames a second offered to the ROS 2 publisher")
    p.add_argument("--no-ros2", action="store_true", help="leave the ROS 2 transports out")
    p.add_argument("--subscribe", nargs=4, metavar=("TRANSPORT", "DOMAIN", "ENDPOINT", "SECONDS"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=Path("out/benchmarks"))
    add_record_option(p, "robotics_overhead")
    a = p.parse_args(argv)
    load_before = os.getloadavg()
    if a.subscribe:  # the loopback subscriber's own process
        transport, domain, endpoint, seconds = a.subscribe
        return subscribe(transport, int(domain), endpoint, float(seconds))
    if a.frames < 3 or a.loop_frames < 3:
        p.error("--frames and --loop-frames: at least 3 (the first frame of each run is warm-up)")
    a.out.mkdir(parents=True, exist_ok=True)
    given = {parse_size(k): Path(v) for k, v in (e.split("=", 1) for e in a.engines)}
    result = {"cloud_stride": a.cloud_stride, "random_weights": True, "sizes": {}, "ros2_seconds": a.ros2_seconds,
              "ros2_offer_fps": a.ros2_offer_fps}
    for text in a.sizes.split(","):
        size = parse_size(text)
        entry = {"sinks": sink_costs(size, a.frames, a.cloud_stride)}
        if not a.no_ros2:
            entry["ros2"] = ros2_costs(size, a.ros2_seconds, a.ros2_offer_fps, a.cloud_stride)
        if not a.no_pipeline:
            engines = given.get(size) or _export(size, a.out)
            entry["loop"] = loop_costs(size, engines, a.loop_frames, a.cloud_stride, ros2=not a.no_ros2)
        result["sizes"][text] = entry
        atomic_write_text(a.out / "robotics_overhead.json", json_dumps(result))
    atomic_write_text(a.out / "robotics_overhead.md", markdown(result))
    print(markdown(result))
    if a.record:
        write_record(Record("robotics_overhead", "What do the robot outputs (ROS 2 bag, PLY, Foxglove, live ROS 2) "
                            "cost a frame, against the plain run?", tables(result),
                            notes=[INTRO.format(stride=result["cloud_stride"]),
                                   "The ROS 2 subscriber runs on the same CPUs as the publisher (loopback, no ROS "
                                   "install).", load_note(load_before)]),
                     a.record, command_line("smoothdino.benchmarks.robotics_overhead", argv))
    return result


if __name__ == "__main__":
    main()
