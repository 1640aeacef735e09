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

Several cameras: the server keeps the newest message of each camera, and a page gets the newest of each camera it
has not had (latest wins per camera), the one waiting longest first, so no camera starves another. What a page holds
does not grow with the frame rate, only with the number of cameras (fixed by the command): at most
IN_FLIGHT + cameras - 1 messages unacknowledged, one being decoded per camera and one on the way. The first-frame
rule is per camera: a stalled camera's old frame is held back (then sent with its age) without holding back the
others.

An MJPEG client (`/stream.mjpg`: VLC, ffplay, an <img>) has no acknowledgement: TCP's own flow control paces it,
with the same stall rule. It shows one camera: `?camera=NAME`, else the first."""

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
    ALL = object()  # `camera`: every camera (a page); else one camera's name, None for the only one (MJPEG)

    def __init__(self, server, camera=ALL):
        self.server = server
        self.camera = camera
        self.sent: dict[str | None, int] = {}  # per camera: the seq of the last message sent
        self.held: dict[str | None, tuple[object, float]] = {}  # per camera: its old first message, held until then
        self.wake = asyncio.Event()

    @property
    def sent_seq(self) -> int:
        return max(self.sent.values(), default=0)

    def can_send(self) -> bool:
        return True

    def wanted_camera(self):
        return self.camera

    def mark_sent(self, message) -> None:
        self.sent[message.camera] = message.seq
        self.held.pop(message.camera, None)

    def pick(self):
        """(the message to send now or None, seconds until a held first message is due or None): of every camera
        with a message this viewer has not had, the one that waits longest (the lowest seq)."""
        if not self.can_send():
            return None, None
        now = time.monotonic()
        best, due = None, None
        wanted = self.wanted_camera()
        for camera, latest in list(self.server.latest_by.items()):
            if wanted is not Viewer.ALL and camera != wanted:
                continue
            if latest.seq <= self.sent.get(camera, 0):
                continue
            if camera not in self.sent:  # this camera's first message here: current, or said to be old
                age = age_s(latest)
                held = self.held.get(camera)
                if held is None and age > FRESH_S:
                    held = self.held[camera] = (latest, now + FIRST_WAIT_S)
                if held is not None and held[0] is latest:  # nothing newer came since it was held
                    if now < held[1]:
                        due = min(due if due is not None else FIRST_WAIT_S, held[1] - now)
                        continue
                    latest = latest.aged(age)
            if best is None or latest.seq < best.seq:
                best = latest
        return best, due

    async def next_message(self):
        """The next message to send (pick); None when the view stops or nothing came for STALL_S."""
        while not self.server.stopping:
            self.wake.clear()
            message, due = self.pick()
            if message is not None:
                return message
            try:
                await asyncio.wait_for(self.wake.wait(), STALL_S if due is None else max(due, 0.001))
            except asyncio.TimeoutError:
                if self.stalled():
                    return None
        return None

    def stalled(self) -> bool:
        return False

    def register(self) -> bool:
        if self.server.stopping:
            return False
        self.server.viewers.add(self)
        self.server.viewer_came()
        return True

    def unregister(self) -> None:
        self.server.viewers.discard(self)


class PageViewer(Viewer):
    """The page, over a WebSocket. It sends {"ack": seq} per message and {"depth": true|false} when it starts or
    stops needing the depth (the cursor on the picture, or a pinned point); with several cameras
    {"depth": ["front", ...]}: the cameras whose tile has the cursor or a pinned point."""

    MAX_DEPTH_CAMERAS = 64

    def __init__(self, server, connection):
        super().__init__(server)
        self.depth: bool | frozenset = False
        self.connection = connection
        self.unacked = 0
        self.last_progress = time.monotonic()  # the last ack, or the last time nothing was in flight
        self.window_start = time.monotonic()
        self.window_count = 0

    @property
    def wants_depth(self) -> bool:
        return bool(self.depth)

    def wants_depth_for(self, camera: str | None) -> bool:
        return self.depth if isinstance(self.depth, bool) else camera in self.depth

    def can_send(self) -> bool:
        return self.unacked < IN_FLIGHT + max(0, len(self.server.latest_by) - 1)

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
            self.mark_sent(message)
            try:
                await asyncio.wait_for(self.connection.send(message.payload(self.wants_depth_for(message.camera))),
                                       STALL_S)
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
            wanted = command["depth"]
            if isinstance(wanted, list):  # these cameras' depth only (names; anything else in it is ignored)
                self.depth = frozenset(c for c in wanted[:self.MAX_DEPTH_CAMERAS] if isinstance(c, str))
            else:
                self.depth = bool(wanted)
        return owed


class MjpegViewer(Viewer):
    """multipart/x-mixed-replace JPEGs: the picture alone (the figures and the depth need the page), of one camera
    (FIRST: the view's first camera, or its only one)."""

    FIRST = object()

    def wanted_camera(self):
        if self.camera is MjpegViewer.FIRST:
            cameras = self.server.cameras
            return cameras[0] if cameras else None
        return self.camera


async def stream_mjpeg(server, connection, camera=MjpegViewer.FIRST) -> None:
    """`/stream.mjpg` on a connection websockets has read the request head of: the response head, then each newest
    JPEG of `camera` (a name; MjpegViewer.FIRST: the first camera, or the only one) as a part, until the client
    goes, stalls for STALL_S, or the view stops."""
    viewer = MjpegViewer(server, camera)
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
            viewer.mark_sent(message)
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
