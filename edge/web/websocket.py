"""The part of WebSocket (RFC 6455) the browser view needs, on a plain socket: the handshake's answer, whole
(unfragmented) frames from the server, and the page's own small frames (acks and switches as text, ping, close).

Hand-written rather than a dependency: the server sends one kind of message and reads a few bytes back, and the
run-time stays numpy + OpenCV + ONNX Runtime on a Jetson."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GOING_AWAY = 1001  # the close code for "the stream ended"
MAX_PAGE_FRAME = 64 << 10  # the page sends acks and switches: a bigger frame is not our page


class ProtocolError(Exception):
    """The other end broke the protocol (an unmasked frame, a fragment, a giant frame): the viewer is dropped."""


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for the page's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key.strip() + GUID).encode()).digest()).decode()


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One whole server frame (FIN set, no mask: servers never mask)."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return head + payload


def close_frame(code: int = GOING_AWAY, reason: str = "") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason.encode()[:120])


class FrameReader:
    """Reads the page's frames from a socket that has a timeout (the same socket sends with it): a timeout while
    waiting is not an error, only "nothing yet" (`next_frame` returns None), and a partly received frame waits in
    the buffer for the rest."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def next_frame(self) -> tuple[int, bytes] | None:
        """(opcode, unmasked payload); None after a timeout with no whole frame; EOFError when the page is gone."""
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise EOFError
            self.buffer += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        fin, opcode, masked, length = data[0] & 0x80, data[0] & 0x0F, data[1] & 0x80, data[1] & 0x7F
        at = 2
        if length == 126:
            if len(data) < 4:
                return None
            length, at = struct.unpack_from("!H", data, 2)[0], 4
        elif length == 127:
            if len(data) < 10:
                return None
            length, at = struct.unpack_from("!Q", data, 2)[0], 10
        if not masked or not fin or opcode == CONTINUATION or length > MAX_PAGE_FRAME:
            raise ProtocolError(f"unexpected frame (opcode {opcode}, fin {bool(fin)}, masked {bool(masked)}, "
                                f"{length} bytes)")
        if len(data) < at + 4 + length:
            return None
        mask = bytes(data[at:at + 4])
        body = bytes(data[at + 4:at + 4 + length])
        del data[:at + 4 + length]
        # XOR with the 4-byte mask repeated over the payload, as one big integer (the frames are small)
        key = (mask * (length // 4 + 1))[:length]
        payload = (int.from_bytes(body, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big") if length else b""
        return opcode, payload
