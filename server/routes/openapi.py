"""``GET /openapi.json``: Easel's API as OpenAPI 3.1 (:mod:`server.protocol.openapi`); no API key needed."""

from __future__ import annotations

from functools import cache
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..protocol.openapi import openapi_document


@cache
def _document() -> dict[str, Any]:
    return openapi_document()  # the tables are fixed for the process's life: build it once


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(_document())


routes = [Route("/openapi.json", openapi, methods=["GET"])]
