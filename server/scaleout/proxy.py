"""Middleware for Ray's HTTP proxy, so responses through it carry the headers plain serving sends.

Ray's proxy gives every request an id (a UUID, unless the client sent an
``x-request-id``) and appends it to the response, after the one Easel's own
middleware set: two headers. Here, in front of Ray's, a request without a
usable id gets one in Easel's format, which Ray and Easel then both adopt, and
the duplicate header is dropped on the way out. Ray loads this through
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (set by ``easel serve --ray``
for the Ray instance it starts; set it yourself on ``ray start``).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..http.middleware import REQUEST_ID_HEADER, SANE_REQUEST_ID, new_request_id

_HEADER_BYTES = REQUEST_ID_HEADER.encode()


def one_request_id(app: ASGIApp) -> ASGIApp:
    """The proxy's side of request ids: Easel's format in, one header out."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = MutableHeaders(scope=scope)
            if not SANE_REQUEST_ID.match(headers.get(REQUEST_ID_HEADER, "")):
                headers[REQUEST_ID_HEADER] = new_request_id()
            send = _sending_one_id(send)
        await app(scope, receive, send)

    return middleware


def _sending_one_id(send: Send) -> Send:
    async def send_one_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = _without_repeated_id(message.get("headers", []))
        await send(message)

    return send_one_id


def _without_repeated_id(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept, seen = [], False
    for name, value in raw:
        if name.lower() == _HEADER_BYTES:
            if seen:
                continue
            seen = True
        kept.append((name, value))
    return kept


def proxy_middlewares() -> list[Middleware]:
    return [Middleware(one_request_id)]
