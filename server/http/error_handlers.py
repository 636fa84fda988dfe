"""Starlette's exception handlers: every exception that leaves an endpoint is answered in OpenAI's envelope.

:class:`~server.http.errors.APIError` is answered as it says; Starlette's ``HTTPException`` (unknown route, wrong
method) gets OpenAI's wording; a client that hangs up mid-request gets no answer; anything else is a bug, logged
with its traceback and the request id, while the client only gets a generic message and the id to quote.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .errors import (
    CLIENT_CLOSED_REQUEST,
    INVALID_REQUEST,
    SERVER_ERROR,
    APIError,
    error_response,
    internal_error,
    shown,
)

log = logging.getLogger("easel.errors")


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "unknown"))


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    target = f"{request.method} {shown(request.url.path)}"
    if exc.status_code == 404:
        message = f"Invalid URL ({target})" + _missing_v1_hint(request.url.path)
    elif exc.status_code == 405:
        message = f"Method not allowed ({target})"
    else:
        message = str(exc.detail)
    kind = INVALID_REQUEST if exc.status_code < 500 else SERVER_ERROR
    return error_response(APIError(exc.status_code, message, type=kind, headers=exc.headers))


_V1_RESOURCES = ("/images/", "/models", "/files/", "/responses")  # what Easel serves under /v1


def _missing_v1_hint(path: str) -> str:
    """For a path that would exist under ``/v1``: say so (a base URL without ``/v1`` is a common slip)."""
    if path.startswith("/v1/") or not path.startswith(_V1_RESOURCES):
        return ""
    return (
        f". Easel serves the OpenAI API under /v1: did you mean /v1{path}? "
        "Set the client's base_url to end in /v1 (e.g. http://127.0.0.1:8000/v1)."
    )


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Last resort for bugs: log the traceback server-side, tell the client only the request id."""
    request_id = request_id_of(request)
    log.error("unhandled error in %s %s [request_id=%s]", request.method, request.url.path, request_id, exc_info=exc)
    response = error_response(internal_error(request_id))
    # This handler runs outside the request-id middleware, so set the header here.
    response.headers["x-request-id"] = request_id
    return response


async def handle_client_gone(request: Request, exc: Exception) -> Response:
    """A client that hangs up while its request is read is no error: its access line says so, no traceback."""
    request.scope.setdefault("state", {})["gone"] = "while sending its request"
    return Response(status_code=CLIENT_CLOSED_REQUEST)


EXCEPTION_HANDLERS = {
    APIError: handle_api_error,
    ClientDisconnect: handle_client_gone,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
