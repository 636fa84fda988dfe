"""Every request's id: the client's ``x-request-id`` if sane, else a new one, echoed on every response.

The outermost middleware; it also reads ``//`` in a path as ``/`` (:mod:`server.http.paths`). Plain ASGI rather
than ``BaseHTTPMiddleware`` (as every middleware here), so request bodies stream through untouched and client
disconnects stay visible to endpoints.
"""

from __future__ import annotations

import re
import secrets

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .paths import collapse_slashes

REQUEST_ID_HEADER = "x-request-id"
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def is_retry(headers: Headers) -> bool:
    """Whether the client sent this request again after a failure: OpenAI's SDKs count their retries in
    ``x-stainless-retry-count``. A retry after a 429 gets the queue's reserve."""
    return headers.get("x-stainless-retry-count", "0") not in ("", "0")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(16)


class RequestIdMiddleware:
    """Give every request an id (the client's ``x-request-id`` if sane) and echo it on every response; the
    outermost middleware, it also reads ``//`` in a path as ``/`` (:mod:`server.http.paths`).

    The id is ``request.state.request_id`` for everything behind this middleware.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "//" in scope["path"]:  # a base URL ending in "/" joined to "/images/...": one slash meant
            scope = collapse_slashes(scope)
        offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = offered if SANE_REQUEST_ID.match(offered) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers[REQUEST_ID_HEADER] = request_id
                # Never let a browser guess a type: an image URL is an image, an error is JSON.
                headers["x-content-type-options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_id)
