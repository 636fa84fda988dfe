"""Liveness and readiness. Neither needs an API key.

``GET /health``: 200 ``{"status": "ok"}`` whenever the process answers.
``GET /health/ready``: 200 when the preloaded models have loaded (``--preload``;
docs/models-memory.md) and the server is not shutting down, else 503 (error
envelope); both carry ``models``: each model's status (``unloaded``, ``loading``,
``ready`` with its queue figures, or ``failed`` with the loader's message,
its file paths shown only to a caller that sends the API key).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..http.errors import SERVER_ERROR, APIError, error_response
from .state import ServerState


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.easel
    # A failed model's reason names files on the server: shown to a caller with the API key only.
    models = state.catalog.readiness(state.engine, with_paths=getattr(request.state, "has_api_key", False))
    if state.catalog.all_ready() and not state.images.draining:
        return JSONResponse({"status": "ready", "models": models})
    if state.images.draining:
        message, status = "Not ready: the server is shutting down.", "shutting_down"
    else:
        preloaded = state.catalog.preloaded or tuple(models)  # the start-up loads: the ones readiness waits for
        waiting = [f"{name} ({models[name]['status']})" for name in preloaded if models[name]["status"] != "ready"]
        message, status = "Not ready: " + ", ".join(waiting), "not_ready"
    return error_response(
        APIError(503, message, type=SERVER_ERROR, code=status, extra={"status": status, "models": models})
    )


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
]
