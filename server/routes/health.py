"""Liveness and readiness. Neither needs an API key.

``GET /health``: 200 ``{"status": "ok"}`` whenever the process answers.
``GET /health/ready``: 200 when every model is loaded, else 503 (error
envelope); both carry ``models``: each model's status (``loading``,
``ready`` with its queue figures, or ``failed`` with the loader's message).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import SERVER_ERROR, APIError, error_response
from ..state import ServerState, server_state


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def model_readiness(state: ServerState) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, entry in state.catalog.entries.items():
        item: dict[str, Any] = {"status": entry.status}
        if entry.error is not None:
            item["error"] = entry.error
        if entry.backend is not None:
            item.update(device=entry.backend.info.device, dtype=entry.backend.info.dtype)
            item.update(state.engine.stats(name) or {})
        report[name] = item
    return report


async def ready(request: Request) -> JSONResponse:
    state = server_state(request)
    models = model_readiness(state)
    if state.catalog.all_ready():
        return JSONResponse({"status": "ready", "models": models})
    waiting = [f"{name} ({item['status']})" for name, item in models.items() if item["status"] != "ready"]
    return error_response(
        APIError(
            503,
            "Not ready: " + ", ".join(waiting),
            type=SERVER_ERROR,
            code="not_ready",
            extra={"status": "not_ready", "models": models},
        )
    )


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
]
