"""The gate in front of the Foxglove server: what a client on the network may hold of the depth process, bounded.

foxglove-sdk's WebSocket server (0.30) takes every connection it is offered, keeps one that never sends its request
head for as long as the client likes, and prints a line for each failed handshake: 1,000 idle connections held
1,000 of the process's descriptors (the usual limit is 1,024), and nothing in its API caps them. So the SDK listens
on a private loopback port (127.0.0.1, a port the kernel picks) and this gate listens where `--foxglove` asked. The
gate is the `websockets` asyncio server (strict HTTP/1.1 request heads, strict RFC 6455), on one thread with its own
event loop; each client that passes its checks gets its own connection to the SDK, and the two are relayed message
for message. The client sees the Foxglove server itself (the SDK chooses the subprotocol and sends every byte of
the protocol); only what the client may hold is ours:

    MAX_CONNECTIONS    connections at once, in any state; the next is answered 503 and closed at once (each client
                       costs the process 3 descriptors: its own, the gate's to the SDK, the SDK's)
    HEAD_DEADLINE_S    the whole handshake (request head included) must be done by then: not a timeout per byte
    HEAD_MAX_BYTES     the request head's size (431 past it)
    MAX_MESSAGE        a client's message size (1009 past it: Foxglove's subscribe is a few hundred bytes)
    MESSAGES_PER_S     a client's messages a second (MESSAGE_BURST at once); a flood closes that client only (1008)
    what it buffers    toward a client, one message being written and UPSTREAM_QUEUE read from the SDK: a client that
                       reads slowly makes the SDK drop its oldest messages (the SDK's per-client backlog), never the
                       gate hold more; one that reads nothing is closed by the keepalive (PING_S + PING_S)

Nothing a client does prints a line. The private port is reachable by the robot's own processes (loopback only);
they are not a network peer and are not bounded here (docs/robots.md says so)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from http import HTTPStatus

from smoothdino.core.errors import UserError
from smoothdino.core.throttle import TokenBucket, run_server_loop

MAX_CONNECTIONS = 32  # Foxglove viewers of one robot: a few; each may hold a frame's messages
HEAD_DEADLINE_S = 5.0
HEAD_MAX_BYTES = 16 << 10
MAX_MESSAGE = 64 << 10
MESSAGES_PER_S = 20.0
MESSAGE_BURST = 100  # the app subscribes to every channel at once when it connects
UPSTREAM_QUEUE = 2  # messages read ahead from the SDK for one client
PING_S = 20.0
BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
ACCEPT_BATCH = 32  # connections accepted in one go: a burst holds at most this many descriptors past the cap
THREAD_NAME = b"smoothdino-fox"  # /proc/<pid>/task/*/comm (15 characters at most)
SERVER_HEADER = "smoothdino-foxglove"  # no versions: nothing for a scanner to match

# websockets logs a refused handshake, a client's reset and a broken frame; a robot's journal gets none of it
QUIET = logging.getLogger("smoothdino.edge.sinks.foxglove_gate")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def _raw(status: int, body: str, extra: str = "") -> bytes:
    """A whole response written before websockets sees the connection (it is closed right after)."""
    data = body.encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n{extra}Server: {SERVER_HEADER}\r\n\r\n").encode() + data


class Counters:
    """What the bounds turned away (tests and benchmarks/web_attacks.py read them)."""

    def __init__(self):
        self.busy = self.slow_heads = self.big_heads = self.flooded = self.relayed = self.upstream_failed = 0
        self.errors = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


async def close_quietly(upstream) -> None:
    """The SDK's side of a client closed with a close handshake: an abort makes the SDK print a line for each."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(upstream.close(), 1.0)
    upstream.transport.abort()


def _connection_class():
    from websockets.asyncio.server import ServerConnection

    class GateConnection(ServerConnection):
        """websockets' connection with the gate's bounds on what happens before the request head is whole: the
        connection cap and the head's size (its deadline is websockets' open_timeout)."""

        def __init__(self, protocol, server, *, owner: FoxgloveGate, **options):
            super().__init__(protocol, server, **options)
            self.owner = owner
            self.refused = False
            self.head_bytes = 0
            self.big = False
            self.upstream = None  # the SDK's connection for this client, opened during the handshake

        def connection_made(self, transport) -> None:
            owner = self.owner
            if owner.open >= owner.max_connections or owner.stopping:
                self.refused = True  # answered and closed here: websockets never sees it
                owner.counters.busy += 1
                transport.write(owner.busy)
                transport.close()
                return
            owner.open += 1
            owner.connections.add(self)
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return
            if self.request is None:
                self.head_bytes += len(data)
                if self.head_bytes > HEAD_MAX_BYTES:
                    self.owner.counters.big_heads += 1
                    self.big = True
                    self.transport.write(_raw(431, f"431: a request head of more than {HEAD_MAX_BYTES} bytes\n"))
                    self.transport.close()
                    return
            super().data_received(data)

        def connection_lost(self, exc) -> None:
            if self.refused:
                return
            self.owner.open -= 1
            self.owner.connections.discard(self)
            if self.request is None and not self.big:
                self.owner.counters.slow_heads += 1  # cut at the deadline, or gone before its head was whole
            if self.upstream is not None:  # a handshake that failed after the SDK's connection was opened
                asyncio.ensure_future(close_quietly(self.upstream))
            super().connection_lost(exc)

    return GateConnection


class FoxgloveGate:
    """Listens at `address` and relays each admitted client to the Foxglove server at 127.0.0.1:`upstream_port`,
    on its own thread and event loop; `stop()` ends both. Binding happens in the caller's thread, so a busy port is
    a UserError there."""

    def __init__(self, address: tuple[str, int], upstream_port: int, option: str = "--foxglove", *,
                 max_connections: int = MAX_CONNECTIONS, head_deadline_s: float = HEAD_DEADLINE_S,
                 messages_per_s: float = MESSAGES_PER_S, message_burst: int = MESSAGE_BURST,
                 ping_s: float = PING_S):
        host, port = address
        self.upstream = f"ws://127.0.0.1:{upstream_port}"
        self.max_connections = max_connections
        self.head_deadline_s = head_deadline_s
        self.messages_per_s, self.message_burst = messages_per_s, message_burst
        self.ping_s = ping_s
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.socket = socket.create_server((host, port), family=family, backlog=BACKLOG)
        except (OSError, OverflowError) as err:
            why = getattr(err, "strerror", None) or str(err)
            raise UserError(f"{option} {host}:{port}: cannot serve ({why}); choose another port or host") from None
        self.port = self.socket.getsockname()[1]
        self.busy = _raw(503, f"503: the Foxglove server has {max_connections} connections open, its limit: try "
                              "again in a few seconds\n", "Retry-After: 5\r\n")
        self.counters = Counters()
        self.open = 0  # connections open now (the event loop's thread alone changes it)
        self.connections: set = set()  # idem: what stop() aborts if it is still there
        self.stopping = False
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="foxglove-gate", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failed is not None:
            self.socket.close()
            raise self._failed

    # -- the event loop's thread ------------------------------------------------------------------

    def _run(self) -> None:
        run_server_loop(self, THREAD_NAME)

    async def _serve(self):
        from websockets.asyncio.server import serve

        connection = _connection_class()
        server = await serve(
            self._relay, sock=self.socket, backlog=ACCEPT_BATCH, process_request=self._open_upstream,
            select_subprotocol=self._subprotocol, server_header=SERVER_HEADER, logger=QUIET, compression=None,
            max_size=MAX_MESSAGE, max_queue=16, open_timeout=self.head_deadline_s,
            ping_interval=self.ping_s, ping_timeout=self.ping_s, close_timeout=2,
            create_connection=lambda protocol, server, **options: connection(protocol, server, owner=self, **options))
        self.socket.listen(BACKLOG)  # asyncio listened with its accept batch; the queue itself stays long
        return server

    def _loop_error(self, loop, context: dict) -> None:
        self.counters.errors += 1  # a client's reset is not worth a traceback on a robot's journal

    async def _open_upstream(self, connection, request):
        """During the client's handshake: the SDK's own connection for it, offered the client's subprotocols, so the
        SDK chooses as it would have (None: go on; a response: refused with it)."""
        from websockets.asyncio.client import connect
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        def refuse(status: int, text: str):
            body = text.encode()
            return Response(status, HTTPStatus(status).phrase, Headers(
                {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)),
                 "Connection": "close"}), body)

        if request.headers.get("Upgrade", "").lower() != "websocket":
            return refuse(426, "426: this is a Foxglove WebSocket server: open it in Foxglove (ws://...)\n")
        offered = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol")
                   for p in value.split(",") if p.strip()][:8]
        try:
            connection.upstream = await connect(
                self.upstream, subprotocols=offered or None, compression=None, max_size=None,
                max_queue=UPSTREAM_QUEUE, open_timeout=self.head_deadline_s, ping_interval=None, close_timeout=1,
                proxy=None, user_agent_header=None, logger=QUIET)
        except Exception:  # noqa: BLE001 - the SDK refused (an unknown subprotocol) or is stopping
            self.counters.upstream_failed += 1
            return refuse(400, "400: the Foxglove server refused this handshake (offer subprotocol foxglove.sdk.v1)\n")
        return None

    @staticmethod
    def _subprotocol(connection, subprotocols):
        chosen = connection.upstream.subprotocol if connection.upstream is not None else None
        return chosen if chosen in subprotocols else None

    async def _relay(self, client) -> None:
        """An admitted client: messages both ways until either side closes."""
        upstream, client.upstream = client.upstream, None
        self.counters.relayed += 1
        try:
            down = asyncio.ensure_future(self._down(upstream, client))
            up = asyncio.ensure_future(self._up(client, upstream))
            done, pending = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            await close_quietly(upstream)

    @staticmethod
    async def _down(upstream, client) -> None:
        """The SDK's messages to the client; `send` waits while the client's buffer is full, so the gate reads no
        further ahead and the SDK drops this client's oldest messages instead."""
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                await client.send(message)

    async def _up(self, client, upstream) -> None:
        """The client's messages to the SDK, at most messages_per_s (a flood closes this client only)."""
        from websockets.exceptions import ConnectionClosed

        bucket = TokenBucket(self.messages_per_s, self.message_burst)
        with contextlib.suppress(ConnectionClosed):
            async for message in client:
                if not bucket.take():
                    self.counters.flooded += 1
                    await client.close(1008, f"more than {self.messages_per_s:g} messages a second")
                    return
                await upstream.send(message)

    # -- any thread -------------------------------------------------------------------------------

    def stop(self, wait_s: float = 2.0) -> None:
        """Every client told the server is going away (close 1001), every connection closed, the thread ended."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(wait_s), self.loop).result(timeout=wait_s + 3)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=wait_s + 3)

    async def _stop(self, wait_s: float) -> None:
        self.stopping = True
        self.server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), wait_s)
        for connection in list(self.connections):  # those still sending a head, or not answering the close
            connection.transport.abort()
            if connection.upstream is not None:
                connection.upstream.transport.abort()
        await asyncio.sleep(0)
