"""API errors and the OpenAI error envelope.

Every non-2xx response Easel sends has the body
``{"error": {"message", "type", "param", "code"}}``: an :class:`APIError`
answered by :func:`error_response`. Exceptions become API errors in two places:
:mod:`server.http.error_handlers` (Starlette's and unexpected ones) and
:mod:`server.serving.job_errors` (what the engine and the backends raise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

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


def internal_error(request_id: str) -> APIError:
    return APIError(
        500,
        f"The server had an error while processing your request. Quote request id {request_id} when reporting it.",
        type=SERVER_ERROR,
    )


def envelope(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    body = envelope(error.message, error.type, error.param, error.code)
    body.update(error.extra)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


CLIENT_CLOSED_REQUEST = 499  # never reaches the client; shows in access logs
