"""The request body's size limit (``--max-body-mb``), enforced while the body streams in."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, error_response


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
