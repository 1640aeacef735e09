"""A latest-wins mailbox: what stands between a loop that must never wait and the one thread that sends its frames
somewhere slow (a viewer, a network). `put` replaces what waits; the thread takes the newest.

Every live sink that runs a sending thread uses it (edge/sinks/foxglove.py, edge/ros2/publisher.py), so they drop,
flush and close alike: a frame the thread has not taken yet is replaced by the next one (the caller counts it as
dropped), so the sending is at most one frame behind and the loop never waits for it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """One slot and the thread that empties it. `put(item)` leaves `item` for the thread, replacing one still
    waiting (then it returns True); the thread calls `deliver(item)` on each item it takes, one at a time, until
    `close()`: then it delivers what still waits, calls `finish()` (if given; also when `deliver` raised, which ends
    the thread: catch what the loop can go on after) and ends. `flush` waits until nothing waits and nothing is being
    delivered; `join` waits for the thread's end."""

    def __init__(self, deliver: Callable[[T], None], name: str, finish: Callable[[], None] | None = None):
        self._deliver, self._finish = deliver, finish
        self._wake = threading.Condition()
        self._item: T | None = None
        self._waiting = False  # an item is in the slot
        self._busy = False  # the thread is delivering the item it took
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> bool:
        """Leave `item` for the thread, never waiting; True when it replaced one the thread had not taken (dropped).
        After close() the item is left alone (nothing is sent any more)."""
        with self._wake:
            if self.closed:
                return False
            replaced = self._waiting
            self._item, self._waiting = item, True
            self._wake.notify_all()
        return replaced

    def _take(self) -> tuple[bool, T | None]:
        with self._wake:
            self._busy = False
            self._wake.notify_all()
            self._wake.wait_for(lambda: self._waiting or self.closed)
            if not self._waiting:
                return False, None  # closed, and nothing left
            item, self._item, self._waiting, self._busy = self._item, None, False, True
            return True, item

    def _run(self) -> None:
        try:
            while True:
                taken, item = self._take()
                if not taken:
                    return
                self._deliver(item)
        finally:
            with self._wake:
                self._busy = False
                self._wake.notify_all()
            if self._finish is not None:
                self._finish()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the item waiting (if any) is delivered; False if that took longer than `timeout`."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._waiting and not self._busy, timeout=timeout)

    def close(self) -> bool:
        """No more items: the thread delivers what waits, then finishes and ends. False when closed already."""
        with self._wake:
            if self.closed:
                return False
            self.closed = True
            self._wake.notify_all()
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` for the thread's end; True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
