"""Small pieces every network surface uses to bound what a client can make it do: a token bucket (so many
actions a second, a burst at once) and a thread's name as the OS shows it (what serving costs, read per thread)."""

from __future__ import annotations

import time


class TokenBucket:
    """`rate` actions a second, `burst` at once: `take()` says whether one more is allowed now."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst, self.level, self.at = rate, burst, float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level < 1.0:
            return False
        self.level -= 1.0
        return True


def name_this_thread(name: bytes) -> None:
    """The calling thread's name as the OS shows it (Linux; elsewhere nothing), in `top -H` and
    /proc/<pid>/task/*/comm: what a server thread costs can be read per thread (benchmarks/web_attacks.py)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
