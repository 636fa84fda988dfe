"""CORS for browser clients (``--cors-allow-origins``): Starlette's handling, with refusals in OpenAI's envelope."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from .errors import APIError, error_response
from .middleware import REQUEST_ID_HEADER


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
