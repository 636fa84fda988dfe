"""Forgiving paths: runs of ``/`` in a request path are read as one.

Clients that build URLs as ``f"{base}/images/generations"`` from a base URL
that already ends in ``/`` (Open WebUI, n8n) ask for ``/v1//images/generations``;
no route of Easel's has an empty segment, so such a path can only mean the one
with the slashes collapsed. This runs outside every other middleware, so the
routes, the API key's public paths, the access log and the metrics all see the
collapsed path.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

_SLASHES = re.compile(r"/{2,}")
_RAW_SLASHES = re.compile(rb"/{2,}")


class CollapseSlashesMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope)
            scope["path"] = _SLASHES.sub("/", scope["path"])
            if isinstance(scope.get("raw_path"), bytes):
                scope["raw_path"] = _RAW_SLASHES.sub(b"/", scope["raw_path"])
        await self.app(scope, receive, send)
