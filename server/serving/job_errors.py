"""The one table that maps what the engine and the backends raise to the API error a client sees."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from pipelines.errors import Cancelled, MissingComponent, NonFiniteOutput

from ..engine.base import EngineStopped, QueueFull, WorkerLost
from ..http.errors import SERVER_ERROR, APIError, internal_error, shutting_down
from .residency import LoadTimedOut

log = logging.getLogger("easel.errors")


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


def _load_timed_out(error: LoadTimedOut) -> APIError:
    return APIError(503, str(error), type=SERVER_ERROR, code="model_loading", headers={"retry-after": "5"})


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
    (LoadTimedOut, _load_timed_out),
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
