"""One connected viewer each, as tasks on the server's event loop (no thread per viewer): it sends the newest
message it has not sent yet, never a queue, so a slow viewer sees fewer frames and never older ones, and nothing it
does reaches the loop (the depth loop only ever fills the view's one-frame mailbox).

A page (WebSocket) acknowledges every message once decoded; at most IN_FLIGHT go unacknowledged, so frames never
pile up in the network's buffers however slow the link (the latency stays about one frame's transfer). A viewer
that acknowledges nothing for STALL_S while frames wait, or whose socket takes that long to accept a frame, is
dropped (a page reconnects by itself). An ack wakes its own page only. Besides the acks it owes (at most one per
message sent to it, however fast the stream), a page sends at most MESSAGES_PER_S messages a second (a switch now and
then): a flood closes that page (1008), no other.

A page's first frame is current: a message older than FRESH_S (the stream paused, or nobody watched for a while) is
held back up to FIRST_WAIT_S for a newer one, and sent with its age (`stale_s`, which the page shows) if none comes.

An MJPEG client (`/stream.mjpg`: VLC, ffplay, an <img>) has no acknowledgement: TCP's own flow control paces it,
with the same stall rule."""

from __future__ import annotations

import asyncio
import json
import struct
import time

from websockets.exceptions import ConnectionClosed

IN_FLIGHT = 2  # one being decoded by the page, one on the way
STALL_S = 5.0
BOUNDARY = "smoothdino-frame"
MESSAGES_PER_S = 60  # a page's messages a second besides the acks it owes (one per message sent to it): its depth
                     # switches come when the cursor enters or leaves the picture
MAX_COMMAND = 256  # bytes: {"ack": 123456} and {"depth": false} are a few dozen
FRESH_S = 1.0
FIRST_WAIT_S = 1.0
GOING_AWAY = 1001  # "the stream ended" (the page then says so instead of reconnecting)
POLICY_VIOLATION = 1008


def age_s(message) -> float:
    """Seconds since the loop handed the message's frame to the view."""
    return max(0.0, time.time() - message.header.get("written_ms", 0.0) / 1000.0)


class Viewer:
    wants_depth = False

    def __init__(self, server):
        self.server = server
        self.sent_seq = 0
        self.wake = asyncio.Event()

    def ready(self) -> bool:
        latest = self.server.latest
        return latest is not None and latest.seq > self.sent_seq

    async def next_message(self):
        """The newest message not sent yet once ready(); None when the view stops or nothing came for STALL_S."""
        while not self.server.stopping:
            self.wake.clear()
            if self.ready():
                message = self.server.latest
                if self.sent_seq == 0 and age_s(message) > FRESH_S:
                    message = await self.fresh_or_aged(message)
                return message
            try:
                await asyncio.wait_for(self.wake.wait(), STALL_S)
            except asyncio.TimeoutError:
                if self.stalled():
                    return None
        return None

    async def fresh_or_aged(self, message):
        """The first message: a newer one if it comes within FIRST_WAIT_S, else this one with its age said."""
        deadline = time.monotonic() + FIRST_WAIT_S
        while time.monotonic() < deadline and not self.server.stopping:
            self.wake.clear()
            if self.server.latest is not message:
                return self.server.latest
            try:
                await asyncio.wait_for(self.wake.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
        return message.aged(age_s(message))

    def stalled(self) -> bool:
        return False

    def register(self) -> bool:
        if self.server.stopping:
            return False
        self.server.viewers.add(self)
        return True

    def unregister(self) -> None:
        self.server.viewers.discard(self)


class PageViewer(Viewer):
    """The page, over a WebSocket. It sends {"ack": seq} per message and {"depth": true|false} when it starts or
    stops needing the depth (the cursor on the picture, or a pinned point)."""

    def __init__(self, server, connection):
        super().__init__(server)
        self.connection = connection
        self.unacked = 0
        self.last_progress = time.monotonic()  # the last ack, or the last time nothing was in flight
        self.window_start = time.monotonic()
        self.window_count = 0

    def ready(self) -> bool:
        return self.unacked < IN_FLIGHT and super().ready()

    def stalled(self) -> bool:
        stalled = bool(self.unacked) and time.monotonic() - self.last_progress > STALL_S
        if stalled:
            self.server.counters.stalled += 1
        return stalled

    async def serve(self) -> None:
        if not self.register():
            await self.connection.close(GOING_AWAY, "stream ended")
            return
        reader = asyncio.ensure_future(self._read())
        sender = asyncio.ensure_future(self._send())
        try:
            await asyncio.wait([reader, sender], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.unregister()
            for task in (reader, sender):
                task.cancel()
            await asyncio.gather(reader, sender, return_exceptions=True)
        if reader.done() and not reader.cancelled() and reader.result() == POLICY_VIOLATION:
            # no closing handshake with a flood: its close frame, then the connection goes without reading the rest
            # (waiting for the page's close would parse everything it keeps sending)
            reason = b"too many messages"
            self.connection.transport.write(struct.pack("!BBH", 0x88, 2 + len(reason), POLICY_VIOLATION) + reason)
            self.connection.transport.close()
            return
        code, reason = (GOING_AWAY, "stream ended") if self.server.stopping else (1000, "")
        await self.connection.close(code, reason)

    async def _send(self) -> None:
        while True:
            message = await self.next_message()
            if message is None:
                return
            if self.unacked == 0:
                self.last_progress = time.monotonic()
            self.unacked += 1
            self.sent_seq = message.seq
            try:
                await asyncio.wait_for(self.connection.send(message.payload(self.wants_depth)), STALL_S)
            except (asyncio.TimeoutError, ConnectionClosed):
                self.server.counters.stalled += 1
                return

    async def _read(self) -> int | None:
        """The page's messages until it closes; POLICY_VIOLATION when it sent too many."""
        try:
            async for data in self.connection:
                if isinstance(data, str) and len(data) <= MAX_COMMAND and self._command(data):
                    continue  # an ack the page owed: as many as frames it was sent, whatever the frame rate
                now = time.monotonic()
                if now - self.window_start >= 1.0:
                    self.window_start, self.window_count = now, 0
                self.window_count += 1
                if self.window_count > MESSAGES_PER_S:
                    self.server.counters.flooded_pages += 1
                    return POLICY_VIOLATION
        except ConnectionClosed:
            pass
        return None

    def _command(self, text: str) -> bool:
        """Apply the page's command; True when it was an ack for a message in flight (owed, never counted)."""
        try:
            command = json.loads(text)
        except (ValueError, RecursionError):
            return False
        if not isinstance(command, dict):
            return False
        owed = False
        if "ack" in command and self.unacked:
            self.unacked -= 1
            self.last_progress = time.monotonic()
            self.wake.set()  # this page only
            owed = len(command) == 1
        if "depth" in command:
            self.wants_depth = bool(command["depth"])
        return owed


class MjpegViewer(Viewer):
    """multipart/x-mixed-replace JPEGs: the picture alone (the figures and the depth need the page)."""


async def stream_mjpeg(server, connection) -> None:
    """`/stream.mjpg` on a connection websockets has read the request head of: the response head, then each newest
    JPEG as a part, until the client goes, stalls for STALL_S, or the view stops."""
    viewer = MjpegViewer(server)
    if not viewer.register():
        return
    transport = connection.transport
    try:
        transport.write((f"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n"
                         f"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n"
                         f"Server: smoothdino-view\r\n\r\n").encode())
        while not transport.is_closing():
            message = await viewer.next_message()
            if message is None:
                return
            viewer.sent_seq = message.seq
            transport.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(message.jpeg)}\r\n\r\n"
                            .encode() + message.jpeg + b"\r\n")
            try:
                await asyncio.wait_for(connection.drain(), STALL_S)
            except asyncio.TimeoutError:
                server.counters.stalled += 1
                return
            except (ConnectionError, ConnectionClosed):
                return
    finally:
        viewer.unregister()
