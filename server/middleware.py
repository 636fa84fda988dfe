"""ASGI middleware: request ids, bearer-key auth, request body size limit.

Plain ASGI classes rather than ``BaseHTTPMiddleware`` so that request bodies
stream through untouched and client disconnects stay visible to endpoints.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, error_response

REQUEST_ID_HEADER = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(16)


def is_usable_request_id(offered: str) -> bool:
    return bool(_SANE_REQUEST_ID.match(offered))


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
        request_id = offered if is_usable_request_id(offered) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


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
