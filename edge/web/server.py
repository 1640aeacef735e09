"""The view's HTTP server (the standard library's threading server: a thread per connection). Routes:

    GET  /               the page (static/index.html)
    GET  /static/<name>  its scripts and style, from the package (nothing is ever loaded from elsewhere)
    GET  /ws             the WebSocket: one FrameMessage per frame (viewers.PageViewer)
    GET  /stream.mjpg    the picture alone as MJPEG, for VLC, ffplay or an <img> (viewers.MjpegViewer)
    POST /snapshot?seq=N the frame the page shows, saved into the snapshots folder: the only write there is

Every request passes access.Access first (403 otherwise); the WebSocket and the snapshot also need the page's own
Origin. The page's Content-Security-Policy allows nothing but this server, so it works, and only works, offline."""

from __future__ import annotations

import json
import socket
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from smoothdino.core.errors import UserError

from .access import Access
from .viewers import BOUNDARY, MjpegViewer, PageViewer
from .websocket import accept_key

ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "png16.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
REFUSED = (b"403: this view needs its token: open the address smoothdino printed when it started "
           b"(http://HOST:PORT/?token=...)\n")


def load_assets() -> dict[str, bytes]:
    """Every file the page needs, read from the installed package once (a wheel missing one fails here, at start)."""
    folder = resources.files(__package__).joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in ASSETS}


class ViewServer(ThreadingHTTPServer):
    daemon_threads = True  # a viewer's connection never keeps the process alive

    def __init__(self, address: tuple[str, int], view, option: str = "--serve"):
        host, port = address
        self.host = host
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.view = view
        self.assets = load_assets()
        try:
            super().__init__((host, port), ViewRequest)
        except (OSError, OverflowError) as err:
            why = getattr(err, "strerror", None) or str(err)
            raise UserError(f"{option} {host}:{port}: cannot serve ({why}); choose another port or host") from None
        self.access = Access.for_bind(host, self.server_address[1])

    def server_bind(self) -> None:
        """HTTPServer's bind without its reverse DNS lookup of the host (seconds on a robot with no DNS)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.host, self.server_address[1]


class ViewRequest(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "smoothdino-view"
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle kept-alive connection is closed after this long (a viewer's socket gets its own)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the terminal belongs to the loop's progress and notices

    def _query(self) -> tuple[str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        return url.path, parse_qs(url.query)

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _admitted(self, query) -> bool:
        if self.server.access.allows(self.headers, query):
            return True
        self._reply(403, REFUSED)
        return False

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        path, query = self._query()
        if not self._admitted(query):
            return
        if path in ("/", "/index.html"):
            self._page(query)
        elif path.startswith("/static/") and path[len("/static/"):] in ASSETS:
            name = path[len("/static/"):]
            self._reply(200, self.server.assets[name], ASSETS[name])
        elif path == "/ws":
            self._websocket()
        elif path == "/stream.mjpg":
            self._mjpeg()
        else:
            self._reply(404, b"404: not part of the view\n")

    def do_POST(self) -> None:  # noqa: N802
        path, query = self._query()
        if not self._admitted(query):
            return
        if path != "/snapshot":
            self._reply(404, b"404: not part of the view\n")
            return
        if not Access.same_origin(self.headers):
            self._reply(403, b"403: another site's page\n")
            return
        try:
            seq = int(query.get("seq", [""])[0])
        except ValueError:
            self._reply(400, b"400: snapshot?seq=N, N the frame's number in the stream\n")
            return
        saved = self.server.view.save_snapshot(seq)
        if saved is None:
            self._reply(404, b'{"error": "that frame is no longer kept: try again"}', "application/json")
        elif not saved:  # the disk refused (WindowSink.save_snapshot said why in a notice)
            self._reply(500, b'{"error": "the snapshot could not be written: see the terminal"}', "application/json")
        else:
            self._reply(200, json.dumps({"saved": [str(p) for p in saved]}).encode(), "application/json")

    def _page(self, query) -> None:
        access = self.server.access
        headers = {"Content-Security-Policy": POLICY}
        if access.token is not None and query.get("token"):  # the page's scripts and stream carry it from here on
            headers["Set-Cookie"] = f"{access.cookie}={access.token}; Path=/; HttpOnly; SameSite=Strict"
        self._reply(200, self.server.assets["index.html"], ASSETS["index.html"], headers)

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            self._reply(400, b"400: a WebSocket upgrade is expected here\n")
            return
        if not Access.same_origin(self.headers):
            self._reply(403, b"403: another site's page\n")
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key))
        self.end_headers()
        self.close_connection = True
        PageViewer(self.server.view, self.connection).serve()

    def _mjpeg(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        MjpegViewer(self.server.view, self.connection).serve()
