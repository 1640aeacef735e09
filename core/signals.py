"""SIGINT, SIGTERM and SIGHUP end a run the way Ctrl-C does: a service manager, `docker stop`, `timeout` or a
dropped ssh session stop the loop, the outputs written so far stay whole, and the same command resumes. The exit
code says which signal it was (130, 143, 129).

Where a signal may land matters. A stream (edge.loop.run_stream) holds signals for its whole length and opens
the gate only where nothing is being written (reading the next frame, running the network):

    with held_signals() as gate:          # a signal here is recorded, not raised
        with interruptible():             # here it raises at once (KeyboardInterrupt / Terminated)
            frame = next(frames); result = pipeline.step(frame)
        write the frame's PNG, metrics row, every sink   # one unit: a signal waits for it to finish
    flush metrics.json, close the video ...              # still held
    gate.pending                          # the signal that came while held, if any

The handler itself closes the gate when it raises, so a second signal right behind the first can never cut
into the write unit or the final flush, however the two interleave with the exception's unwinding."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread; every `except KeyboardInterrupt` handles it like Ctrl-C."""


class _Gate:
    def __init__(self):
        self.held = False  # True: signals are recorded in `pending`, not raised
        self.opened = False  # inside interruptible(): the handler closes the gate as it raises
        self.pending: int | None = None


_gate = _Gate()
_received: list[int] = []  # every stop signal this process got (the exit code names the last)


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _handler(signum, frame):
    _received.append(signum)
    if _gate.held:
        _gate.pending = _gate.pending or signum
        return
    if _gate.opened:
        _gate.held = True  # closed before the raise: the unwinding runs with signals held
    raise _interrupt(signum)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """While a command runs: SIGINT, SIGTERM and SIGHUP -> KeyboardInterrupt / Terminated in the main thread
    (elsewhere, e.g. a test runner's worker thread, nothing changes); the previous handlers are back afterwards.
    Nested use keeps the outer installation. SIGHUP that was ignored (nohup) stays ignored."""
    if not _on_main_thread() or signal.getsignal(signal.SIGINT) is _handler:
        yield
        return
    _received.clear()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        if not (s == signal.SIGHUP and previous[s] == signal.SIG_IGN):
            signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def interrupt_exit_code() -> int:
    """128 + the signal: 130 after Ctrl-C (SIGINT), 143 after SIGTERM, 129 after SIGHUP."""
    return 128 + (_received[-1] if _received else signal.SIGINT)


@contextlib.contextmanager
def held_signals() -> Iterator[_Gate]:
    """Signals are recorded, not raised, inside this block except within `interruptible()`. The caller reads
    `gate.pending` (and may clear it) before the block ends; one still pending at the end is raised then."""
    if not _on_main_thread():
        yield _Gate()  # signals never reach another thread: nothing to hold
        return
    outer = _gate.held
    _gate.held = True
    try:
        yield _gate
    finally:
        _gate.held = outer
        if not outer and _gate.pending is not None:
            signum, _gate.pending = _gate.pending, None
            raise _interrupt(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside held_signals(): a signal raises here at once (one that came while held raises on entry). Use it
    only around work that writes nothing: reading a frame, running the network."""
    if not _on_main_thread():
        yield
        return
    outer_held, outer_opened = _gate.held, _gate.opened
    if _gate.pending is not None:
        signum, _gate.pending = _gate.pending, None
        raise _interrupt(signum)
    _gate.held, _gate.opened = False, True
    try:
        yield
    finally:
        _gate.held, _gate.opened = outer_held, outer_opened
