"""The view's server: the `websockets` asyncio server (strict RFC 6455, strict HTTP/1.1 request heads, no request
bodies) on one thread with its own event loop: no thread per connection, and nothing here ever waits on the depth
loop or makes it wait. Routes:

    GET  /               the page (static/index.html)
    GET  /static/<name>  its scripts and style, from the package (nothing is ever loaded from elsewhere)
    GET  /ws             the WebSocket: one FrameMessage per frame (viewers.PageViewer), of every camera
    GET  /stream.mjpg    the picture alone as MJPEG, for VLC, ffplay or an <img> (viewers.stream_mjpeg); with
                         several cameras `?camera=NAME` (404 for a name the view does not have), else the first
    POST /snapshot?seq=N the frame the page shows, saved into the snapshots folder: the only write there is; with
                         several cameras `?seq=N&seq=M...`, the frame of each tile (at most one per camera), one
                         snapshot as far as the rate and the budget go

Every request passes access.Access first (403 otherwise); the WebSocket, the MJPEG stream and the snapshot also
need the page's own Origin. Every response but the stream's is one write and closes its connection (no keep-alive:
nothing after a request head is ever read as another request). The page's Content-Security-Policy allows nothing
but this server, so it works, and only works, offline.

What a client can hold, each bound tested in tests/test_web_attacks.py and measured by benchmarks/web_attacks.py:
    MAX_CONNECTIONS      connections open at once, in any state; the next is answered 503 and closed at once, so the
                         process's descriptors stay for its own files
    HEAD_DEADLINE_S      the whole request head must have arrived by then (not a per-byte timeout)
    HEAD_MAX_BYTES       the request head's size (431 past it; websockets also caps lines and header count)
    BACKLOG              the listen queue: 200 pages loading at once wait there, none is refused or times out
    viewers.MESSAGES_PER_S  a page's messages a second besides the acks it owes; a flood closes that page only (1008)
    MAX_MESSAGE          a page's message size (1009 past it: an ack is 12 bytes); no compression
    SNAPSHOT_*           snapshots a second (429 past it) and the bytes the snapshots folder may hold (507 past it)
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from smoothdino.core.errors import UserError
from smoothdino.core.throttle import TokenBucket, run_server_loop
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from .access import Access
from .viewers import BOUNDARY, MjpegViewer, PageViewer, stream_mjpeg

ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "png16.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
REFUSED = (b"403: this view needs its token: open the address in the token file smoothdino named when it started "
           b"(http://HOST:PORT/?token=...)\n")
SERVER_HEADER = "smoothdino-view"  # no versions: nothing for a scanner to match

MAX_CONNECTIONS = 256
HEAD_DEADLINE_S = 5.0
HEAD_MAX_BYTES = 32 << 10
BACKLOG = 1024  # the kernel caps it at net.core.somaxconn (4096 on current Linux)
ACCEPT_BATCH = 32  # connections accepted in one go (asyncio's batch is its backlog): a burst holds at most this many
                   # descriptors past the cap while each is answered 503
MAX_MESSAGE = 4 << 10
SNAPSHOT_PER_S = 1.0  # a token bucket: SNAPSHOT_BURST at once, then one a second
SNAPSHOT_BURST = 3
SNAPSHOT_BUDGET = 256 << 20  # bytes in the snapshots folder (about 1,000 snapshots at 480x640)



def _raw(status: str, body: bytes, extra: str = "") -> bytes:
    """A whole response written before websockets sees the connection (it is closed right after)."""
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}Server: {SERVER_HEADER}\r\n\r\n").encode() + body


def busy(limit: int) -> bytes:
    return _raw("503 Service Unavailable", b"503: the view has %d connections open, its limit: try again in a few "
                b"seconds\n" % limit, "Retry-After: 5\r\n")


TOO_BIG = _raw("431 Request Header Fields Too Large", b"431: a request head of more than %d bytes\n" % HEAD_MAX_BYTES)

# websockets logs a refused handshake, a client's reset and a broken frame; a robot's journal gets none of it
QUIET = logging.getLogger("smoothdino.edge.web.server")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


THREAD_NAME = b"smoothdino-view"  # the server thread's name in `top -H` and /proc/<pid>/task/*/comm


def load_assets() -> dict[str, bytes]:
    """Every file the page needs, read from the installed package once (a wheel missing one fails here, at start)."""
    folder = resources.files(__package__).joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in ASSETS}


def page_with_token(page: bytes, token: str | None) -> bytes:
    """index.html whose script and style addresses carry the token (no cookie: cookies ignore ports, so every other
    service on this host name would receive one)."""
    if token is None:
        return page
    for name in ("style.css", "png16.js", "app.js"):
        page = page.replace(f'"/static/{name}"'.encode(), f'"/static/{name}?token={token}"'.encode())
    return page


def reply(status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
          headers: dict[str, str] | None = None) -> Response:
    """One whole response (head and body in one write), after which the connection closes."""
    head = Headers({"Content-Type": content_type, "Content-Length": str(len(body)), "Cache-Control": "no-store",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Connection": "close",
                    **(headers or {})})
    return Response(status, HTTPStatus(status).phrase, head, body)


class Counters:
    """What the bounds turned away (benchmarks/web_attacks.py and the tests read them)."""

    def __init__(self):
        self.busy = self.slow_heads = self.big_heads = self.flooded_pages = self.stalled = 0
        self.snapshots_limited = self.snapshots_over_budget = self.errors = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class ViewConnection(ServerConnection):
    """websockets' connection with this server's bounds on what happens before the request head is whole (the
    connection cap, the head's deadline and size), and the MJPEG route, which streams instead of upgrading."""

    def __init__(self, protocol, server, *, owner: ViewServer, **options):
        super().__init__(protocol, server, **options)
        self.owner = owner
        self.refused = False
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None

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
        self.head_timer = asyncio.get_running_loop().call_later(owner.head_deadline_s, self._head_late)
        super().connection_made(transport)

    def _head_late(self) -> None:
        if self.request is None:
            self.owner.counters.slow_heads += 1
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.request is None:
            self.head_bytes += len(data)
            if self.head_bytes > HEAD_MAX_BYTES:
                self.owner.counters.big_heads += 1
                self.refused_late()
                return
        super().data_received(data)

    def refused_late(self) -> None:
        self.transport.write(TOO_BIG)
        self.transport.close()

    def process_event(self, event) -> None:
        if self.request is None and self.head_timer is not None:
            self.head_timer.cancel()
        super().process_event(event)

    def connection_lost(self, exc) -> None:
        if self.refused:
            return
        self.owner.open -= 1
        self.owner.connections.discard(self)
        if self.head_timer is not None:
            self.head_timer.cancel()
        super().connection_lost(exc)

    async def handshake(self, process_request=None, process_response=None, server_header=SERVER_HEADER) -> None:
        await asyncio.wait([self.request_rcvd, self.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED)
        if self.request is not None and urlsplit(self.request.path).path == "/stream.mjpg":
            refused = self.owner.refusal(self.request, needs_origin=True)
            camera = self.owner.mjpeg_camera(self.request)
            if refused is None and camera is not None:  # streamed until the client goes or the view stops
                await stream_mjpeg(self.owner, self, camera)
                return
        await super().handshake(process_request, process_response, server_header)


class ViewServer:
    """The view's server on its own thread and event loop; `stop()` ends both. Binding happens in the caller's
    thread, so a busy port is a UserError there."""

    def __init__(self, address: tuple[str, int], view, option: str = "--serve", *,
                 max_connections: int = MAX_CONNECTIONS, snapshot_budget: int = SNAPSHOT_BUDGET,
                 head_deadline_s: float = HEAD_DEADLINE_S):
        host, port = address
        self.host = host
        self.view = view
        self.max_connections = max_connections
        self.head_deadline_s = head_deadline_s
        self.snapshot_budget = snapshot_budget
        self.assets = load_assets()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.socket = socket.create_server((host, port), family=family, backlog=BACKLOG)
        except (OSError, OverflowError) as err:
            why = getattr(err, "strerror", None) or str(err)
            raise UserError(f"{option} {host}:{port}: cannot serve ({why}); choose another port or host") from None
        self.server_address = self.socket.getsockname()
        self.access = Access.for_bind(host, self.server_address[1])
        self.page = page_with_token(self.assets["index.html"], self.access.token)
        self.counters = Counters()
        self.busy = busy(max_connections)
        self.open = 0  # connections open now (the event loop's thread alone changes it)
        self.connections: set[ViewConnection] = set()
        self.viewers: set = set()  # pages and MJPEG clients (idem)
        self.stopping = False
        self.latest = None  # the newest FrameMessage of any camera (set by the view's encoder thread)
        self.latest_by: dict = {}  # the newest FrameMessage of each camera (None: the only one), same thread
        self.snapshots = TokenBucket(SNAPSHOT_PER_S, SNAPSHOT_BURST)
        self.snapshot_bytes: int | None = None  # what the snapshots folder holds, counted at the first snapshot
        self.disk = ThreadPoolExecutor(1, thread_name_prefix="web-view-snapshot")  # one save at a time, off the loop
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="web-view-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failed is not None:
            raise self._failed

    # -- the event loop's thread ------------------------------------------------------------------

    def _run(self) -> None:
        run_server_loop(self, THREAD_NAME)

    async def _serve(self):
        server = await serve(
            self._handler, sock=self.socket, backlog=ACCEPT_BATCH, process_request=self._route,
            server_header=SERVER_HEADER, logger=QUIET, compression=None, max_size=MAX_MESSAGE, max_queue=16,
            open_timeout=None,  # the head's deadline is ViewConnection's; the rest of the handshake is ours
            ping_interval=20, ping_timeout=20, close_timeout=2,
            create_connection=lambda protocol, server, **options: ViewConnection(protocol, server, owner=self,
                                                                                 **options))
        self.socket.listen(BACKLOG)  # asyncio listened with its accept batch; the queue itself stays long
        return server

    def _loop_error(self, loop, context: dict) -> None:
        self.counters.errors += 1  # a client's reset is not worth a traceback on a robot's journal

    def refusal(self, request, needs_origin: bool = False) -> Response | None:
        """403 when the request may not use the view (access.Access), None when it may."""
        query = parse_qs(urlsplit(request.path).query)
        if not self.access.allows(request.headers, query):
            return reply(403, REFUSED)
        if needs_origin and not Access.same_origin(request.headers):
            return reply(403, b"403: another site's page\n")
        return None

    def mjpeg_camera(self, request):
        """The camera `/stream.mjpg` shows: `?camera=NAME` when the view has it, the first one without; None: no
        such camera (answered 404 by _route)."""
        names = parse_qs(urlsplit(request.path).query).get("camera")
        if not names:
            return MjpegViewer.FIRST
        return names[0] if names[0] in self.cameras else None

    async def _route(self, connection, request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        method = getattr(request, "method", "GET")
        refused = self.refusal(request, needs_origin=path in ("/ws", "/snapshot", "/stream.mjpg"))
        if refused is not None:
            return refused
        if path == "/snapshot":
            return await self._snapshot(parse_qs(url.query)) if method == "POST" else reply(
                405, b"405: POST /snapshot?seq=N\n", headers={"Allow": "POST"})
        if method != "GET":
            return reply(405, b"405: this view reads GET only here\n", headers={"Allow": "GET"})
        if path in ("/", "/index.html"):
            return reply(200, self.page, ASSETS["index.html"], {"Content-Security-Policy": POLICY})
        if path.startswith("/static/") and path[len("/static/"):] in ASSETS:
            name = path[len("/static/"):]
            return reply(200, self.assets[name], ASSETS[name])
        if path == "/stream.mjpg":  # streamed by ViewConnection.handshake unless its camera is not one of ours
            return reply(404, f"404: no such camera; this view has: {', '.join(self.cameras) or 'one camera'}\n"
                         .encode(errors="replace"))
        if path == "/ws":
            if self.stopping:
                return reply(503, b"503: the view is stopping\n")
            return None  # websockets checks the upgrade itself (400 or 426 when it is not a proper one)
        return reply(404, b"404: not part of the view\n")

    async def _handler(self, connection) -> None:
        """An upgraded /ws connection: the page until it or the view closes."""
        await PageViewer(self, connection).serve()

    async def _snapshot(self, query) -> Response:
        try:
            seqs = [int(text) for text in query.get("seq", [""])]
        except ValueError:
            seqs = []
        if not seqs or len(seqs) > max(1, len(self.cameras)):
            return reply(400, b"400: snapshot?seq=N (with several cameras seq=N&seq=M..., one a camera), N the "
                         b"frame's number in the stream\n")
        if not self.snapshots.take():
            self.counters.snapshots_limited += 1
            return _json(429, {"error": f"at most one snapshot a second ({SNAPSHOT_BURST} at once): try again"},
                         {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        folder = Path(self.view.snapshots.snapshots)
        if self.snapshot_bytes is None:
            self.snapshot_bytes = await loop.run_in_executor(self.disk, folder_bytes, folder)
        if self.snapshot_bytes >= self.snapshot_budget:
            self.counters.snapshots_over_budget += 1
            return _json(507, {"error": f"the snapshots folder holds {self.snapshot_bytes / 1e6:.0f} MB, its budget "
                                        f"({self.snapshot_budget / 1e6:.0f} MB): move some away"})
        saved = await loop.run_in_executor(self.disk, self.view.save_snapshots, seqs)
        if saved is None:
            return _json(404, {"error": "that frame is no longer kept: try again"})
        if not saved:  # the disk refused (WindowSink.save_snapshot said why in a notice)
            return _json(500, {"error": "the snapshot could not be written: see the terminal"})
        self.snapshot_bytes += sum(_size(p) for p in saved)
        # the folder's own name, never where it is on this machine
        return _json(200, {"saved": [f"{folder.name}/{p.name}" for p in saved]})

    # -- any thread -------------------------------------------------------------------------------

    def publish(self, message) -> None:
        """The encoder's new message: every viewer is woken (in the event loop's thread)."""
        self.latest_by[message.camera] = message
        if self.latest is None or message.seq > self.latest.seq:
            self.latest = message
        try:
            self.loop.call_soon_threadsafe(self._wake_all)
        except RuntimeError:  # the loop has stopped: nobody to tell
            pass

    def _wake_all(self) -> None:
        for viewer in self.viewers:
            viewer.wake.set()

    def viewer_came(self) -> None:
        """A page or MJPEG client registered (the event loop's thread): the view encodes what it has not yet."""
        refresh = getattr(self.view, "refresh", None)
        if refresh is not None:
            refresh()

    @property
    def watching(self) -> int:
        return len(self.viewers)

    @property
    def depth_wanted(self) -> bool:
        return any(getattr(v, "wants_depth", False) for v in list(self.viewers))

    def depth_wanted_for(self, camera: str | None) -> bool:
        """Whether some page asked for this camera's depth (the cursor or a pinned point on its tile)."""
        return any(v.wants_depth_for(camera) for v in list(self.viewers) if hasattr(v, "wants_depth_for"))

    @property
    def cameras(self) -> list[str]:
        """The view's named cameras, in the order of the page's tiles ([]: one camera)."""
        return list(getattr(self.view, "cameras", []))

    def stop(self, wait_s: float = 2.0) -> None:
        """Every page is told the stream ended (close 1001), every connection closed, the thread ended."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(wait_s), self.loop).result(timeout=wait_s + 3)
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=wait_s + 3)
        self.disk.shutdown(wait=False)

    async def _stop(self, wait_s: float) -> None:
        self.stopping = True
        self._wake_all()
        self.server.close()  # open pages get 1001 ("going away": the page says "stream ended")
        try:
            await asyncio.wait_for(self.server.wait_closed(), wait_s)
        except asyncio.TimeoutError:
            pass
        for connection in list(self.connections):  # those still sending a head, or not answering the close
            connection.transport.abort()
        await asyncio.sleep(0)


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return reply(status, json.dumps(body).encode(), "application/json", headers)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def folder_bytes(folder: Path) -> int:
    """Bytes in the folder's files (not below it: snapshots are written flat)."""
    try:
        return sum(_size(p) for p in folder.iterdir())
    except OSError:
        return 0


__all__ = ["BOUNDARY", "MAX_CONNECTIONS", "ViewServer"]
