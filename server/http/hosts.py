"""Which ``Host`` names the server answers: a guard against DNS rebinding on an open local server.

A web page a user visits can make their browser send requests to ``127.0.0.1``
under a name the attacker controls (DNS rebinding); the browser then treats
the answers as that page's own. Answering only the loopback names while bound
to loopback closes that door. Other hosts get 421 Misdirected Request in
OpenAI's envelope. Names are compared without the port, case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import APIError, error_response, shown

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_HOST = "*"


def answered_hosts(allowed: Iterable[str] | None, bind_host: str, public_base_url: str | None) -> frozenset[str] | None:
    """The host names to answer, or None for any: ``--allowed-hosts`` if given (``*``: any); else any host when a
    public base URL or a non-loopback bind says the server is meant to be reached by name; else the loopback names.
    """
    if allowed:
        names = frozenset(name.strip().lower() for name in allowed)
        return None if ANY_HOST in names else names
    if public_base_url is not None or not is_loopback(bind_host):
        return None
    return LOOPBACK_NAMES


def is_loopback(host: str) -> bool:
    return host.lower() in LOOPBACK_NAMES or host.startswith("127.")


def host_name(header: str) -> str:
    """``Host`` without its port: ``[::1]:8000`` -> ``::1``, ``Example.COM:80`` -> ``example.com``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class AllowedHostsMiddleware:
    """Answer 421 to a request whose ``Host`` is not one of ``names`` (None: every host is answered)."""

    def __init__(self, app: ASGIApp, names: frozenset[str] | None) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.names is None:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host")
        if header is None or host_name(header) in self.names:  # no Host at all: HTTP/1.0, never a browser
            await self.app(scope, receive, send)
            return
        error = APIError(
            421,
            f"This server does not answer for the host {shown(header)!r}. Use one of: {', '.join(sorted(self.names))}"
            " (the server's --allowed-hosts).",
            code="misdirected_request",
        )
        await error_response(error)(scope, receive, send)
