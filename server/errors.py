"""API errors, the OpenAI error envelope, and the one table that maps engine and backend exceptions to them.

Every non-2xx response Easel sends has the body
``{"error": {"message", "type", "param", "code"}}``. The handlers here turn
:class:`APIError`, Starlette's ``HTTPException`` (unknown route, wrong method)
and any unexpected exception into that shape. Unexpected exceptions are logged
with their traceback and the request id; the client only gets a generic
message and the id to quote.
"""

from __future__ import annotations

import http
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from pipelines.base import Cancelled, MissingComponent, NonFiniteOutput

from .engine.base import EngineStopped, QueueFull, WorkerLost

log = logging.getLogger("easel.errors")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """An error the client should see, with its HTTP status and OpenAI fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # top-level keys next to "error" (e.g. readiness details)


ECHO_LIMIT = 256  # characters of a client's own text (a name, a value, a path) repeated in an answer or a log line


def shown(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, the cut marked: what a client sent is repeated, never unbounded, so a
    20 MB model name costs neither a 20 MB answer nor 40 MB of log."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters]"


def invalid(param: str | None, message: str, code: str | None = None) -> APIError:
    """A 400 naming the offending request parameter."""
    return APIError(400, message, param=param, code=code)


def missing_parameter(param: str) -> APIError:
    return invalid(param, f"Missing required parameter: '{param}'.", code="missing_required_parameter")


SHUTDOWN_RETRY_AFTER_SECONDS = 2  # another replica, or this server once restarted


def shutting_down(message: str = "The server is shutting down.") -> APIError:
    headers = {"retry-after": str(SHUTDOWN_RETRY_AFTER_SECONDS)}
    return APIError(503, message, type=SERVER_ERROR, code="shutting_down", headers=headers)


def insufficient_storage(message: str, retry_after: int) -> APIError:
    """The image directory cannot take the files a ``url`` answer needs (full, read-only): 507, retry later."""
    return APIError(
        507, message, type=SERVER_ERROR, code="insufficient_storage", headers={"retry-after": str(retry_after)}
    )


def internal_error(request_id: str) -> APIError:
    return APIError(
        500,
        f"The server had an error while processing your request. Quote request id {request_id} when reporting it.",
        type=SERVER_ERROR,
    )


def _queue_full(error: QueueFull) -> APIError:
    # retry-after-ms keeps the engine's jitter (the openai SDK prefers it); retry-after is whole seconds.
    # The x-ratelimit headers are OpenAI's, read as: this many requests may wait, none is free.
    seconds = error.retry_after
    reset = f"{round(seconds * 1000)}ms" if seconds < 1 else f"{round(seconds, 1):g}s"
    return APIError(
        429,
        f"Model '{error.model}' has {error.waiting} requests waiting, the most this server queues; "
        f"retry after {math.ceil(seconds)} s.",
        type="rate_limit_error",
        code="queue_full",
        headers={
            "retry-after": str(math.ceil(seconds)),
            "retry-after-ms": str(round(seconds * 1000)),
            "x-ratelimit-limit-requests": str(error.waiting),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": reset,
        },
    )


def _worker_lost() -> APIError:
    return APIError(
        503,
        "The worker running this request went away; retry it.",
        type=SERVER_ERROR,
        code="worker_lost",
        headers={"retry-after": "1"},
    )


# What the engine and the backends raise, as the client sees it. The first matching row wins.
# A ValueError from a backend is a job it refuses (its input, not a bug); anything not listed is a bug: 500.
ERROR_TABLE: list[tuple[type[BaseException], Callable[[Any], APIError]]] = [
    (APIError, lambda error: error),
    (QueueFull, _queue_full),
    (EngineStopped, lambda error: shutting_down()),
    (WorkerLost, lambda error: _worker_lost()),
    # Only the engine's shutdown cancels a job whose client is still waiting for it.
    (Cancelled, lambda error: shutting_down("The job was stopped: the server is shutting down.")),
    (MissingComponent, lambda error: APIError(400, str(error), param="model", code="missing_component")),
    (NonFiniteOutput, lambda error: APIError(500, str(error), type=SERVER_ERROR, code="model_error")),
    (ValueError, lambda error: APIError(400, str(error), code="invalid_value")),
]


def job_error(error: BaseException, request_id: str) -> APIError:
    """The API error for what submitting or running a job raised; a bug is logged and answered 500."""
    for kind, to_api_error in ERROR_TABLE:
        if isinstance(error, kind):
            return to_api_error(error)
    log.error("backend failed [request_id=%s]", request_id, exc_info=error)
    return internal_error(request_id)


def envelope(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    body = envelope(error.message, error.type, error.param, error.code)
    body.update(error.extra)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


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


CLIENT_CLOSED_REQUEST = 499  # never reaches the client; shows in access logs


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


def raw_error(status: int, message: str, code: str, request_id: str, extra: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 error answer in OpenAI's envelope, for a connection the app never saw."""
    kind = INVALID_REQUEST if status < 500 else SERVER_ERROR
    body = json.dumps(envelope(message, kind, None, code)).encode()
    headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "connection": "close",
        "x-request-id": request_id,
        "x-content-type-options": "nosniff",
        **(extra or {}),
    }
    head = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body
