"""Small pieces every network surface uses (the browser view, the Foxglove gate): a token bucket (so many actions
a second, a burst at once), a thread's name as the OS shows it (what serving costs, read per thread), and the body
of a server's own event-loop thread."""

from __future__ import annotations

import asyncio
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


def run_server_loop(owner, thread_name: bytes) -> None:
    """The body of a server's event-loop thread. `owner` has `loop`, `_serve()` (a coroutine that starts the server),
    `_started` (an Event set once it serves or failed) and `_failed`/`server` (set here); its stop calls
    loop.stop(). Whatever tasks the stop left are cancelled quietly and the loop is closed."""
    name_this_thread(thread_name)
    loop = owner.loop
    asyncio.set_event_loop(loop)
    try:
        owner.server = loop.run_until_complete(owner._serve())
    except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
        owner._failed = err
        owner._started.set()
        return
    owner._started.set()
    loop.run_forever()
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
