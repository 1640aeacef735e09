"""Who may use the browser view. Bound to loopback (the default): anyone on this machine, through a loopback name;
a request whose Host is another name is refused, so a web page elsewhere cannot reach the view by pointing a DNS
name at 127.0.0.1. Bound to another interface: only requests carrying the random token (the `token=` of the address
in the token file the command names: view.WebView.token_file) on every route; the page passes it on to its scripts
and stream itself. No cookie: cookies ignore ports, so every other web service on the robot's host name would
receive it. Page-made writes and the streams also need the view's own Origin, so another site open in the same
browser cannot use them."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str | None) -> str:
    """'127.0.0.1:8080' / '[::1]:8080' / 'localhost' -> the name alone ('' when missing or malformed)."""
    try:
        return urlsplit(f"//{host_header or ''}").hostname or ""
    except ValueError:
        return ""


@dataclass(frozen=True)
class Access:
    token: str | None  # None: bound to loopback, no token
    port: int

    @classmethod
    def for_bind(cls, host: str, port: int) -> Access:
        return cls(None if is_loopback(host) else secrets.token_urlsafe(18), port)

    @staticmethod
    def given_token(query: dict[str, list[str]]) -> str | None:
        return query["token"][0] if query.get("token") else None

    def allows(self, headers, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return is_loopback(host_name(headers.get("Host")))
        given = self.given_token(query)
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    @staticmethod
    def same_origin(headers) -> bool:
        """A browser's request from the view's own page (or from no page at all: a script or a viewer app)."""
        origin = headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == (headers.get("Host") or "")
