"""One connected viewer each, on its own thread: it sends the newest message it has not sent yet, never a queue,
so a slow viewer sees fewer frames and never older ones, and nothing it does reaches the loop.

A page (WebSocket) acknowledges every message once decoded; at most IN_FLIGHT go unacknowledged, so frames never
pile up in the network's buffers however slow the link (the latency stays about one frame's transfer). A viewer
that acknowledges nothing for STALL_S while frames wait, or whose socket takes that long to accept a frame, is
dropped (a page reconnects by itself). An MJPEG client (`/stream.mjpg`: VLC, ffplay, an <img>) has no
acknowledgement: TCP's own flow control paces it, with the same stall rule."""

from __future__ import annotations

import json
import socket
import threading
import time

from .websocket import BINARY, CLOSE, PING, PONG, TEXT, FrameReader, ProtocolError, close_frame, frame

IN_FLIGHT = 2  # one being decoded by the page, one on the way
STALL_S = 5.0
BOUNDARY = "smoothdino-frame"


class Viewer:
    """What every viewer shares: registration with the view, the newest-message wait, the stall rule."""

    wants_depth = False

    def __init__(self, view, sock: socket.socket):
        self.view = view
        self.sock = sock
        self.sent_seq = 0
        self.closed = False
        self.send_lock = threading.Lock()
        self.sock.settimeout(STALL_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ready(self) -> bool:
        latest = self.view.latest
        return latest is not None and latest.seq > self.sent_seq

    def next_message(self):
        """The newest message not sent yet, once ready(); None when the viewer or the view closes, or when it stalls."""
        cond = self.view.cond
        with cond:
            waited = cond.wait_for(lambda: self.closed or self.view.stopping or self.ready(), timeout=STALL_S)
            if self.closed or self.view.stopping:
                return None
            if not waited:
                return self.stalled()
            return self.view.latest

    def messages(self):
        """Each newest message in turn until the viewer or the view closes, or the viewer stalls."""
        while not self.closed:
            message = self.next_message()
            if message is None:
                return
            if message is not False:
                yield message

    def stalled(self):
        """Nothing to send for STALL_S: only the page's kind can be stalled here (the stream may just be paused)."""
        return False

    def send(self, data: bytes) -> bool:
        try:
            with self.send_lock:
                self.sock.sendall(data)
            return True
        except OSError:  # a timeout (the viewer stopped reading) or a closed connection: drop it
            self.closed = True
            return False

    def serve(self) -> None:
        """Register, send until closed, unregister (in the request's own thread)."""
        with self.view.cond:
            if self.view.stopping:
                return
            self.view.viewers.add(self)
        try:
            self.run()
        finally:
            with self.view.cond:
                self.view.viewers.discard(self)
                self.view.cond.notify_all()  # stop() waits for the pages to have been told
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run(self) -> None: ...

    def close(self) -> None:
        """The view stops: the viewer's thread notices, says goodbye (a page gets a close frame) and leaves."""
        self.closed = True


class PageViewer(Viewer):
    """The page, over a WebSocket. It sends {"ack": seq} per message and {"depth": true|false} when it starts or
    stops needing the depth (the cursor on the picture, or a pinned point)."""

    def __init__(self, view, sock: socket.socket):
        super().__init__(view, sock)
        self.unacked = 0
        self.last_progress = time.monotonic()  # the last ack, or the last time nothing was in flight
        self.reader = threading.Thread(target=self._read, name="web-view-page-reader", daemon=True)

    def ready(self) -> bool:
        return self.unacked < IN_FLIGHT and super().ready()

    def stalled(self):
        return None if self.unacked and time.monotonic() - self.last_progress > STALL_S else False

    def run(self) -> None:
        self.reader.start()
        for message in self.messages():
            with self.view.cond:
                if self.unacked == 0:
                    self.last_progress = time.monotonic()
                self.unacked += 1
                self.sent_seq = message.seq
            if not self.send(frame(BINARY, message.payload(self.wants_depth))):
                break
        if self.view.stopping:
            self.send(close_frame(reason="stream ended"))

    def _read(self) -> None:
        reader = FrameReader(self.sock)
        try:
            while not self.closed:
                got = reader.next_frame()
                if got is None:
                    continue
                opcode, payload = got
                if opcode == TEXT:
                    self._command(payload)
                elif opcode == PING:
                    self.send(frame(PONG, payload))
                elif opcode == CLOSE:
                    self.send(frame(CLOSE, payload[:2]))
                    break
        except (EOFError, OSError, ProtocolError):
            pass
        with self.view.cond:
            self.closed = True
            self.view.cond.notify_all()

    def _command(self, payload: bytes) -> None:
        try:
            command = json.loads(payload)
        except ValueError:
            return
        if not isinstance(command, dict):
            return
        with self.view.cond:
            if "ack" in command:
                self.unacked = max(0, self.unacked - 1)
                self.last_progress = time.monotonic()
            if "depth" in command:
                self.wants_depth = bool(command["depth"])
            self.view.cond.notify_all()

class MjpegViewer(Viewer):
    """multipart/x-mixed-replace JPEGs: the picture alone (the figures and the depth need the page)."""

    def run(self) -> None:
        for message in self.messages():
            self.sent_seq = message.seq
            part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(message.jpeg)}\r\n\r\n"
                    .encode() + message.jpeg + b"\r\n")
            if not self.send(part):
                break
