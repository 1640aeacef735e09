"""core.mailbox.Mailbox, the latest-wins slot every live sink's sending thread takes frames from (Foxglove, ROS 2):
the loop's `put` never waits, a frame the thread has not taken is replaced (and said so), the thread takes the
newest, and close delivers what waits before the thread finishes."""

from __future__ import annotations

import threading
import time

import pytest
from smoothdino.core.mailbox import Mailbox


def test_put_replaces_what_waits_and_the_thread_takes_the_newest():
    delivered, release, started = [], threading.Event(), threading.Event()
    finished = []

    def deliver(item):
        started.set()
        release.wait(10)  # a slow send: the loop goes on meanwhile
        delivered.append(item)

    box = Mailbox(deliver, "test-mailbox", finish=lambda: finished.append(len(delivered)))
    assert box.put(0) is False
    assert started.wait(10)  # the thread took 0 and is busy with it
    begin = time.perf_counter()
    replaced = [box.put(i) for i in range(1, 6)]  # 1 waits, then 2..5 each replace the one waiting
    assert time.perf_counter() - begin < 0.5  # never waits for the thread
    assert replaced == [False, True, True, True, True]
    assert not box.flush(timeout=0.05)  # 0 is still being delivered and 5 waits
    release.set()
    assert box.flush(timeout=10) and delivered == [0, 5]
    box.put(6)
    assert box.close() and not box.close()  # closed once
    assert box.join(10) and delivered == [0, 5, 6] and finished == [3]  # the last one delivered, then finish
    assert box.put(7) is False and delivered == [0, 5, 6]  # after close nothing is sent


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the raise, on its thread
def test_finish_runs_when_a_delivery_raises():
    finished = threading.Event()

    def deliver(item):
        raise RuntimeError("the viewer went away")

    box = Mailbox(deliver, "test-mailbox", finish=finished.set)
    box.put(1)
    assert finished.wait(10) and box.join(10)
    assert box.flush(timeout=1)  # nothing waits, nothing is being delivered
