"""Forgiving paths: runs of ``/`` in a request path are read as one.

Clients that build URLs as ``f"{base}/images/generations"`` from a base URL
that already ends in ``/`` (Open WebUI, n8n) ask for ``/v1//images/generations``;
no route of Easel's has an empty segment, so such a path can only mean the one
with the slashes collapsed. :class:`~server.http.middleware.RequestIdMiddleware`,
the outermost middleware, applies it, so the routes, the API key's public
paths, the access log and the metrics all see the collapsed path.
"""

from __future__ import annotations

import re

from starlette.types import Scope

_SLASHES = re.compile(r"/{2,}")
_RAW_SLASHES = re.compile(rb"/{2,}")


def collapse_slashes(scope: Scope) -> Scope:
    """A copy of an HTTP scope whose ``path`` (and ``raw_path``) have each run of slashes as one."""
    collapsed = dict(scope)
    collapsed["path"] = _SLASHES.sub("/", scope["path"])
    if isinstance(scope.get("raw_path"), bytes):
        collapsed["raw_path"] = _RAW_SLASHES.sub(b"/", scope["raw_path"])
    return collapsed
