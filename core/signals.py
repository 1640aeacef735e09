"""SIGTERM ends a run the way Ctrl-C does: a service manager, `docker stop` or `timeout` stop the loop, the
outputs written so far stay whole, and the same command resumes. The exit code says which signal it was."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread; every `except KeyboardInterrupt` handles it like Ctrl-C."""


_received: list[int] = []


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """While a command runs: SIGTERM -> Terminated in the main thread (elsewhere, e.g. a test runner's worker
    thread, nothing changes); the previous handler is back afterwards."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _received.append(signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_exit_code() -> int:
    """128 + the signal: 143 after SIGTERM, 130 after Ctrl-C (SIGINT)."""
    return 128 + (_received[-1] if _received else signal.SIGINT)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the final outputs are flushed, so a second Ctrl-C cannot leave metrics.json
    describing other frames than the PNGs on disk; a signal that came meanwhile is raised afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            _received.append(pending[-1])
            raise Terminated() if pending[-1] == signal.SIGTERM else KeyboardInterrupt()
