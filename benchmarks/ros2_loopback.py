"""ROS 2 on this machine alone, for the ROS 2 benchmark (robotics_overhead.py --ros2) and tests (tests/test_ros2.py):
Cyclone DDS kept on the loopback interface, a Zenoh router and Zenoh sessions on a loopback endpoint, and the child
processes a subscriber or a router runs in. No ROS install: what a subscriber needs, it builds from these.

    python -m smoothdino.benchmarks.ros2_loopback router tcp/127.0.0.1:7447   # a router (rmw_zenohd's part), until
                                                                              # SIGTERM or SIGINT; prints `ready`
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# lo only, peer 127.0.0.1, multicast off: DDS traffic stays on this machine (and out of other runs' domains)
CYCLONE_LOOPBACK = """<?xml version="1.0" encoding="UTF-8"?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces><NetworkInterface name="lo"/></Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>20</MaxAutoParticipantIndex>
      <Peers><Peer address="127.0.0.1"/></Peers>
    </Discovery>
  </Domain>
</CycloneDDS>
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def cyclone_loopback():
    """CYCLONEDDS_URI naming CYCLONE_LOOPBACK while the block runs (and for its children); yields {CYCLONEDDS_URI: ...}
    for a child's environment."""
    previous = os.environ.get("CYCLONEDDS_URI")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "cyclonedds.xml"
        config.write_text(CYCLONE_LOOPBACK)
        os.environ["CYCLONEDDS_URI"] = config.as_uri()
        try:
            yield {"CYCLONEDDS_URI": config.as_uri()}
        finally:
            if previous is None:
                os.environ.pop("CYCLONEDDS_URI", None)
            else:
                os.environ["CYCLONEDDS_URI"] = previous


def zenoh_config(endpoint: str, mode: str = "peer"):
    """A Zenoh session on `endpoint` alone, scouting off: a peer connects to it, a router listens there (as
    `ros2 run rmw_zenoh_cpp rmw_zenohd` does)."""
    import zenoh

    config = zenoh.Config()
    config.insert_json5("mode", json.dumps(mode))
    config.insert_json5("scouting/multicast/enabled", "false")
    config.insert_json5("listen/endpoints" if mode == "router" else "connect/endpoints", json.dumps([endpoint]))
    return config


def router(endpoint: str) -> None:
    """A Zenoh router on `endpoint` until SIGTERM or SIGINT."""
    import zenoh

    session = zenoh.open(zenoh_config(endpoint, "router"))
    print("ready", flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    session.close()


class Child:
    """A child Python process (`python ARGS...`) that prints `ready` once it listens: a subscriber, or the router
    (`Child.router(endpoint)`). Its stdout after `ready` is the caller's (communicate(), or left alone)."""

    def __init__(self, *args: str, env: dict | None = None, wait: float = 30.0, cwd: Path | None = None):
        self.process = subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        ready, said = threading.Event(), []
        threading.Thread(target=lambda: (said.append(self.process.stdout.readline()), ready.set()), daemon=True).start()
        if not ready.wait(wait) or said != ["ready\n"]:
            self.kill()
            raise RuntimeError(f"{' '.join(map(str, args[:3]))} did not start: {self.process.stderr.read()[-2000:]}")

    @classmethod
    def router(cls, endpoint: str, **kwargs) -> Child:
        return cls("-m", "smoothdino.benchmarks.ros2_loopback", "router", endpoint, **kwargs)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def finish(self, grace: float) -> None:
        """Let it end by itself (it got what it waited for), else end it: what it wrote stays."""
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


if __name__ == "__main__":
    if sys.argv[1:2] != ["router"] or len(sys.argv) != 3:
        sys.exit("usage: python -m smoothdino.benchmarks.ros2_loopback router ENDPOINT")
    router(sys.argv[2])
