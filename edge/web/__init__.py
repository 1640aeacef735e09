"""The browser view of a running stream (`live --serve`, `process --serve`): an HTTP server inside the process that
serves one page and the stream to any browser, with no internet and nothing to install on the viewing side. The page
shows RGB | depth with the colour bar in metres, the depth and 3-D point under the cursor (from the frame shown),
pinned points' distance over time, the output and network rates, the depth's age and how it was carried, stage
times and drops, and saves snapshots; with several cameras (`live --source A --source B`, one
`WebView.stream(source, camera=NAME)` each) a tile per camera, each with all of that. view.py is the loop's side
(never waits), message.py one frame as sent, server.py the routes and every bound on what a client may hold (the `websockets` asyncio server on a thread of its
own), viewers.py each page and MJPEG client as a task on that server's event loop, access.py who may connect;
static/ holds the page (shipped in the package)."""

from .access import Access, is_loopback
from .message import FrameMessage, encode_depth_png, encode_jpeg
from .server import ViewServer
from .view import WebStream, WebView, parse_serve, rates, serve_view

__all__ = ["Access", "FrameMessage", "ViewServer", "WebStream", "WebView", "encode_depth_png", "encode_jpeg",
           "is_loopback", "parse_serve", "rates", "serve_view"]
