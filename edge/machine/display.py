"""Whether a window can open here, asked before OpenCV tries: OpenCV's Qt build (the PyPI wheel) aborts the
whole process when it cannot reach an X server, so `live` would die instead of going on headless."""

from __future__ import annotations

import os
import re
import socket
import sys

X11_SOCKETS = "/tmp/.X11-unix"


def parse_x_display(display: str) -> tuple[str, int] | None:
    """$DISPLAY ("[host]:N[.screen]", "unix:N") -> (host, N); host "" means this machine's unix socket."""
    match = re.fullmatch(r"(?:(?P<host>[^:]*)/)?(?P<name>[^:]*):(?P<number>\d+)(?:\.\d+)?", display.strip())
    if match is None:
        return None
    host = match["name"]
    return ("" if host in ("", "unix") else host), int(match["number"])


def _connects(family: int, address, timeout: float) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(address)
            return True
        except OSError:
            return False


def x_server_reachable(display: str, timeout: float = 1.0) -> bool:
    """An X server answers at $DISPLAY: its unix socket (file or Linux abstract name) or TCP port 6000+N."""
    parsed = parse_x_display(display)
    if parsed is None:
        return False
    host, number = parsed
    if host:  # ssh -X forwards to localhost:10 and similar
        return _connects(socket.AF_INET, (host, 6000 + number), timeout)
    path = f"{X11_SOCKETS}/X{number}"
    return _connects(socket.AF_UNIX, path, timeout) or (
        sys.platform.startswith("linux") and _connects(socket.AF_UNIX, "\0" + path, timeout))


def window_unavailable_reason(environ: dict[str, str] | None = None) -> str | None:
    """None when a window can open; else why not, in a few words. Only Linux/BSD need an X server; macOS and
    Windows always have a desktop session when a user runs `live` there."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith(("linux", "freebsd")):
        return None
    display = environ.get("DISPLAY", "")
    if not display:
        return "no $DISPLAY" + (" (Wayland only: OpenCV's window needs XWayland)" if environ.get("WAYLAND_DISPLAY") else "")
    if not x_server_reachable(display):
        return f"no X server answers at DISPLAY={display}"
    return None
