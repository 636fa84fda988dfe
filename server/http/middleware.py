"""What every request passes before it reaches a route: four ASGI middlewares, and under them the connection guard.

A request gets its id, its access line and metrics, the API key check and the body limit: plain ASGI classes
rather than ``BaseHTTPMiddleware``, so request bodies stream through untouched and client disconnects stay
visible to endpoints. :class:`GuardedH11Protocol`, at the end, is uvicorn's h11 protocol with the limits a
server facing slow or hostile clients needs (docs/running.md, "Connection limits"; its limits and early answers are in
:mod:`server.http.connections`). They share one module on purpose: every request runs all of them, and the
architecture test caps the files a request passes (tests/server/test_layout.py). CORS, which only browsers
need, is :mod:`server.http.cors`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import h11
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .connections import LINGER_SECONDS, ConnectionLimits, RefusalLog, raw_error
from .errors import APIError, error_response, shown
from .paths import collapse_slashes

access_log = logging.getLogger("easel.access")
log = logging.getLogger("easel.connections")

REQUEST_ID_HEADER = "x-request-id"
ERROR_BODY_LIMIT = 16 * 1024  # error envelopes are small; a larger error body is not read for the log
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass(frozen=True)
class HTTPMetrics:
    """What :class:`AccessLogMiddleware` counts (made, with the other metrics, by :mod:`server.observe.metrics`)."""

    requests: Any  # Counter by route, status, model
    request_seconds: Any  # Histogram by route
    rejected: Any  # Counter by model: 429s
    server_errors: Any  # Counter by route: 5xx


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


class AccessLogMiddleware:
    """One log line and the request metrics per request, when its response has been sent (or has failed).

    The line holds the request id, method, path, status, duration and the model
    asked for (``request.state.model``, set by serving); a 4xx or 5xx line also
    carries the error envelope's message. Structured fields ride on the record
    for ``--log-format json``. The metrics count by route template and by the
    configured model the request resolved to (``request.state.served_model``):
    a label per name a client makes up would grow without bound. Place it
    inside :class:`RequestIdMiddleware`.
    """

    def __init__(self, app: ASGIApp, metrics: HTTPMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before answering, Starlette's last-resort handler sends a 500
        error_body = bytearray()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400 and len(error_body) < ERROR_BODY_LIMIT:
                error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - started
            self._log(scope, status, seconds, bytes(error_body))
            if self.metrics is not None:
                self._count(scope, status, seconds)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        assert self.metrics is not None
        route = getattr(scope.get("route"), "path", "unmatched")
        model = scope.get("state", {}).get("served_model", "")
        self.metrics.requests.labels(route, str(status), model).inc()
        self.metrics.request_seconds.labels(route).observe(seconds)
        if status == 429:
            self.metrics.rejected.labels(model).inc()
        elif status >= 500:
            self.metrics.server_errors.labels(route).inc()

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float, error_body: bytes) -> None:
        state = scope.get("state", {})
        error = _error_message(error_body) if status >= 400 else None
        if state.get("timed_out"):  # the connection answered 408 itself (GuardedH11Protocol)
            status, error = 408, state["timed_out"]
        elif state.get("gone"):  # the client hung up: no error of the server's, said once, here
            error = f"the client went away {state['gone']}"
        fields = {
            "request_id": state.get("request_id", "-"),
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "model": state.get("model"),
            "error": error,
        }
        if status >= 400:  # an answered request named a route and a model Easel has; a refused one, anything
            fields.update(path=shown(fields["path"]), model=fields["model"] and shown(fields["model"]))
        line = "{method} {path} {status} {duration_ms} ms model={model} request_id={request_id}".format(
            **{**fields, "model": fields["model"] or "-"}
        )
        if fields["error"]:
            line += f" error={json.dumps(fields['error'], ensure_ascii=False)}"
        access_log.log(logging.WARNING if status >= 500 else logging.INFO, line, extra=fields)


def _error_message(body: bytes) -> str | None:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return message if isinstance(message, str) else None


class BearerAuthMiddleware:
    """Require ``Authorization: Bearer <key>`` matching one of ``keys``; no keys means open.

    Paths under ``public_prefixes`` (health checks, served image URLs, which
    are unguessable like OpenAI's own blob URLs) and the exact ``public_paths``
    (the playground page) need no key.
    """

    def __init__(
        self, app: ASGIApp, keys: Iterable[str], public_prefixes: Iterable[str] = (), public_paths: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys if key]
        self.public_prefixes = tuple(public_prefixes)
        self.public_paths = frozenset(public_paths)

    def _is_public(self, path: str) -> bool:
        prefixes = self.public_prefixes
        return path in self.public_paths or any(path == p.rstrip("/") or path.startswith(p) for p in prefixes)

    def _matches(self, offered: str) -> bool:
        # Compare against every key (no early exit) so timing says nothing about which key is close.
        return any([hmac.compare_digest(offered.encode(), key) for key in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            error = APIError(
                401,
                "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                "(Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )
        elif not self._matches(token.strip()):
            error = APIError(
                401, "Incorrect API key provided.", code="invalid_api_key", headers={"www-authenticate": "Bearer"}
            )
        else:
            await self.app(scope, receive, send)
            return
        await error_response(error)(scope, receive, send)


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"Request body is larger than this server's limit of {limit} bytes.", code="request_too_large")


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading
    anything. Otherwise bytes are counted as they arrive, and the read that
    crosses the limit raises: an endpoint never holds more than ``limit``
    bytes (plus one chunk) of a body.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(body_too_large(self.limit))(scope, receive, send)
            return
        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise body_too_large(self.limit)
            return message

        await self.app(scope, receive_with_limit, send)


# -- the connection: what uvicorn's h11 protocol does not limit ---------------------------------------------------


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a connection cap, header and body deadlines, and enveloped early answers.

    A request's headers must be complete within ``header_timeout`` of its first
    byte (for a new connection: of the connection), its body within
    ``body_timeout`` of the headers; otherwise the answer is 408 (an idle new
    connection that sent nothing is just closed). A connection over
    ``max_connections`` is answered 503 at once. Every early answer is
    followed by a lingering close: the server stops writing and drops what the
    client still sends for up to ``LINGER_SECONDS``, so the client reads the
    answer instead of a connection reset.
    """

    def __init__(self, *args: Any, limits: ConnectionLimits, refusals: RefusalLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.refusals = refusals  # one server's, shared by its connections
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: str | None = None  # "headers" or "body": the part on a deadline
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over_limit = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if over_limit:
            self.refusals.note()
            message = "The server has too many open connections; retry shortly."
            self._answer_early(raw_error(503, message, "server_busy", new_request_id(), {"retry-after": "1"}))
            return
        self._expect("headers")

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._reading is None:  # the first bytes of the next request on a kept-alive connection
            self._expect("headers")
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request()  # a pipelined request may have started

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 could not parse the request: answer in the envelope rather than uvicorn's plain text."""
        limit = self.config.h11_max_incomplete_event_size or self.limits.header_bytes
        if len(self.conn.trailing_data[0]) > limit:
            message = f"The request's headers are larger than this server's limit of {limit} bytes."
            self._answer_early(raw_error(431, message, "headers_too_large", new_request_id()))
        else:
            message = "Invalid HTTP request: the request line or headers could not be parsed."
            self._answer_early(raw_error(400, message, "invalid_http_request", new_request_id()))

    def _follow_request(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._reading != "body":
                self._expect("body")
        elif state is h11.IDLE:
            if self._reading is None and self.conn.trailing_data[0]:
                self._expect("headers")
        else:  # the request is complete (or the connection is over): nothing left to wait for
            self._stop_deadline()

    def _expect(self, part: str) -> None:
        self._stop_deadline()
        self._reading = part
        timeout = self.limits.header_timeout if part == "headers" else self.limits.body_timeout
        self._deadline = self.loop.call_later(timeout, self._too_slow)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._reading = None, None

    def _too_slow(self) -> None:
        part = self._reading
        self._deadline, self._reading = None, None
        if self.transport.is_closing():
            return
        if part == "headers" and not self.conn.trailing_data[0]:
            self.transport.close()  # a connection opened and never used: nothing to answer
            return
        cycle = self.cycle if part == "body" else None
        if cycle is not None and cycle.response_started:
            self.transport.close()  # already answered (or answering): the client only gets less
            return
        request_id = new_request_id()
        timeout = self.limits.header_timeout if part == "headers" else self.limits.body_timeout
        message = f"The request {part} did not arrive within {timeout:g} seconds."
        if cycle is not None:
            # The app sees this deadline as a disconnect; its access line reports the 408 (AccessLogMiddleware).
            state = cycle.scope.setdefault("state", {})
            request_id = state.get("request_id", request_id)
            state["timed_out"] = message
            cycle.disconnected = True
            cycle.message_event.set()
        else:  # headers: the app never saw the request, so no access line will say it
            log.info("request %s not received within %g s; answered 408 [request_id=%s]", part, timeout, request_id)
        self._answer_early(raw_error(408, message, "request_timeout", request_id))

    def _answer_early(self, answer: bytes) -> None:
        self._stop_deadline()
        self._lingering = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
