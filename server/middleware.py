"""ASGI middleware: request ids, the access log, request metrics, bearer-key auth, request body size limit.

Plain ASGI classes rather than ``BaseHTTPMiddleware`` so that request bodies
stream through untouched and client disconnects stay visible to endpoints.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, error_response
from .metrics import HTTPMetrics

access_log = logging.getLogger("easel.access")

REQUEST_ID_HEADER = "x-request-id"
ERROR_BODY_LIMIT = 16 * 1024  # error envelopes are small; a larger error body is not read for the log
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(16)


class RequestIdMiddleware:
    """Give every request an id (the client's ``x-request-id`` if sane) and echo it on every response.

    The id is ``request.state.request_id`` for everything behind this middleware.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = offered if _SANE_REQUEST_ID.match(offered) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class AccessLogMiddleware:
    """One log line per request, when its response has been sent (or has failed).

    The line holds the request id, method, path, status, duration and the
    model the request resolved to (``request.state.model``, set by serving);
    a 4xx or 5xx line also carries the error envelope's message, so a refused
    request says why in the log. Structured fields ride on the record for
    ``--log-format json``. Place it inside :class:`RequestIdMiddleware`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            self._log(scope, status, time.perf_counter() - started, bytes(error_body))

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float, error_body: bytes) -> None:
        state = scope.get("state", {})
        fields = {
            "request_id": state.get("request_id", "-"),
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "model": state.get("model"),
            "error": _error_message(error_body) if status >= 400 else None,
        }
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


class _CorsMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered in OpenAI's error envelope."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode(errors="replace")
        refused = error_response(APIError(response.status_code, f"CORS preflight refused: {reason}.", code="cors"))
        refused.headers.update({k: v for k, v in response.headers.items() if k.startswith("access-control-")})
        return refused


def cors(origins: Iterable[str]) -> list[Middleware]:
    """CORS for browser clients from ``origins`` (``*``: any); none: no CORS headers, OPTIONS answers 405."""
    allowed = list(origins)
    if not allowed:
        return []
    return [
        Middleware(
            _CorsMiddleware,
            allow_origins=allowed,
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["*"],  # the SDKs send their own x-stainless-* and openai-* headers
            expose_headers=[REQUEST_ID_HEADER, "retry-after", "x-should-retry"],
            max_age=600,
        )
    ]


class BearerAuthMiddleware:
    """Require ``Authorization: Bearer <key>`` matching one of ``keys``; no keys means open.

    Paths under ``public_prefixes`` (health checks, served image URLs, which
    are unguessable like OpenAI's own blob URLs) need no key.
    """

    def __init__(self, app: ASGIApp, keys: Iterable[str], public_prefixes: Iterable[str] = ()) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys if key]
        self.public_prefixes = tuple(public_prefixes)

    def _is_public(self, path: str) -> bool:
        return any(path == prefix.rstrip("/") or path.startswith(prefix) for prefix in self.public_prefixes)

    def _matches(self, offered: str) -> bool:
        candidate = offered.encode()
        # Compare against every key (no early exit) so timing says nothing about which key is close.
        results = [hmac.compare_digest(candidate, key) for key in self.keys]
        return any(results)

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
    return APIError(
        413,
        f"Request body is larger than this server's limit of {limit} bytes.",
        param=None,
        code="request_too_large",
    )


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


class MetricsMiddleware:
    """Count every HTTP request by route, status and model, and time it to its last byte.

    The route is the path template the router matched (``/v1/images/generations``,
    not each image URL); the model is the configured model the request resolved
    to, which serving puts at ``request.state.served_model``.
    """

    def __init__(self, app: ASGIApp, metrics: HTTPMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            model = scope.get("state", {}).get("served_model", "")
            self.metrics.requests.labels(route, str(status), model).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
            if status == 429:
                self.metrics.rejected.labels(model).inc()
            elif status >= 500:
                self.metrics.server_errors.labels(route).inc()
