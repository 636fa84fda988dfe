"""The API key check: ``Authorization: Bearer <key>``, compared in constant time; public paths pass."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import APIError, error_response


class BearerAuthMiddleware:
    """Require ``Authorization: Bearer <key>`` matching one of ``keys``; no keys means open.

    Paths under ``public_prefixes`` (health checks, served image URLs, which
    are unguessable like OpenAI's own blob URLs) and the exact ``public_paths``
    (the playground page) need no key. A public path that is sent a valid key
    anyway learns so (``request.state.has_api_key``), so it can show its caller
    what it keeps from the public (the readiness check's model paths).
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

    def _offered(self, scope: Scope) -> str | None:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys:
            await self.app(scope, receive, send)
            return
        offered = self._offered(scope)
        if self._is_public(scope["path"]):
            scope.setdefault("state", {})["has_api_key"] = offered is not None and self._matches(offered)
            await self.app(scope, receive, send)
            return
        if offered is None:
            error = APIError(
                401,
                "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                "(Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )
        elif not self._matches(offered):
            error = APIError(
                401, "Incorrect API key provided.", code="invalid_api_key", headers={"www-authenticate": "Bearer"}
            )
        else:
            await self.app(scope, receive, send)
            return
        await error_response(error)(scope, receive, send)
