"""Middleware for Ray's HTTP proxy, so responses through it carry the headers plain serving sends.

Ray's proxy gives every request an id (a UUID, unless the client sent an
``x-request-id``) and appends it to the response, after the one Easel's own
middleware set: two headers. Here, in front of Ray's, a request without a
usable id gets one in Easel's format, which Ray and Easel then both adopt, and
the duplicate header is dropped on the way out. Ray loads this through
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (set by ``easel serve --ray``
for the Ray instance it starts; set it yourself on ``ray start``).

What the proxy answers by itself becomes OpenAI's envelope here too, with the
request id: its plain-text 404, 408, 429 and 503, and the request an ingress
replica died holding, which Serve leaves unanswered (uvicorn would send a
plain-text 500). An error answer is Ray's own when it is not JSON: Easel's app
answers every error in the envelope.
"""

from __future__ import annotations

import json
import logging

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..http.errors import INVALID_REQUEST, SERVER_ERROR, envelope, internal_error, shown
from ..http.request_id import REQUEST_ID_HEADER, SANE_REQUEST_ID, new_request_id

log = logging.getLogger("easel.proxy")

_HEADER_BYTES = REQUEST_ID_HEADER.encode()
# Codes for what Ray's proxy answers by itself; its message is kept (Serve's own words: a timeout, no replica).
RAY_ERROR_CODES = {404: "not_found", 408: "request_timeout", 429: "too_many_requests", 503: "service_unavailable"}


def one_request_id(app: ASGIApp) -> ASGIApp:
    """The proxy's side of request ids: Easel's format in, one header out."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = MutableHeaders(scope=scope)
        if not SANE_REQUEST_ID.match(headers.get(REQUEST_ID_HEADER, "")):
            headers[REQUEST_ID_HEADER] = new_request_id()
        answer = _ProxyAnswer(send, headers[REQUEST_ID_HEADER])
        try:
            await app(scope, receive, answer.send)
        except Exception as error:
            if answer.started:
                raise
            log.error("the proxy failed before answering [request_id=%s]", answer.request_id, exc_info=error)
        if not answer.started:  # an ingress replica died holding the request: Serve answers nothing
            await answer.send_envelope(500, internal_error(answer.request_id).message)

    return middleware


class _ProxyAnswer:
    """The proxy's ``send`` for one request: one request id header, and Ray's own error answers in the envelope."""

    def __init__(self, send: Send, request_id: str) -> None:
        self.downstream = send
        self.request_id = request_id
        self.started = False
        self.held: Message | None = None  # the start of an answer of Ray's own, until its body has arrived
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            message["headers"] = _without_repeated_id(message.get("headers", []))
            if message["status"] >= 400 and not _is_json(message["headers"]):
                self.held = message
                return
        elif message["type"] == "http.response.body" and self.held is not None:
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                await self._send_in_envelope(self.held)
            return
        await self.downstream(message)

    async def _send_in_envelope(self, start: Message) -> None:
        status = start["status"]
        if status >= 500 and status not in RAY_ERROR_CODES:  # Serve's text would be an exception's: not for clients
            message = internal_error(self.request_id).message
        else:
            message = shown(self.body.decode("utf-8", "replace").strip() or f"HTTP {status}")
        retry_after = [(name, value) for name, value in start["headers"] if name.lower() == b"retry-after"]
        await self.send_envelope(status, message, retry_after)

    async def send_envelope(self, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        self.started = True
        kind = INVALID_REQUEST if status < 500 else SERVER_ERROR
        body = json.dumps(envelope(message, kind, None, RAY_ERROR_CODES.get(status))).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (_HEADER_BYTES, self.request_id.encode()),
            (b"x-content-type-options", b"nosniff"),
            *(extra or []),
        ]
        await self.downstream({"type": "http.response.start", "status": status, "headers": headers})
        await self.downstream({"type": "http.response.body", "body": body, "more_body": False})


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"content-type" and value.startswith(b"application/json") for name, value in headers)


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
