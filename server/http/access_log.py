"""One access-log line and the HTTP metrics for every request, with the error's message for failures."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import shown

access_log = logging.getLogger("easel.access")

ERROR_BODY_LIMIT = 16 * 1024  # error envelopes are small; a larger error body is not read for the log


@dataclass(frozen=True)
class HTTPMetrics:
    """What :class:`AccessLogMiddleware` counts (made, with the other metrics, by :mod:`server.observe.metrics`)."""

    requests: Any  # Counter by route, status, model
    request_seconds: Any  # Histogram by route
    rejected: Any  # Counter by model: 429s
    server_errors: Any  # Counter by route: 5xx


class AccessLogMiddleware:
    """One log line and the request metrics per request, when its response has been sent (or has failed).

    The line holds the request id, method, path, status, duration and the model
    asked for (``request.state.model``, set by serving); a 4xx or 5xx line also
    carries the error envelope's message. Structured fields ride on the record
    for ``--log-format json``. The metrics count by route template and by the
    configured model the request resolved to (``request.state.served_model``):
    a label per name a client makes up would grow without bound. Place it
    inside :class:`RequestIdMiddleware`.
    """

    def __init__(self, app: ASGIApp, metrics: HTTPMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before answering, Starlette's last-resort handler sends a 500
        error_body = bytearray()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400 and len(error_body) < ERROR_BODY_LIMIT:
                error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - started
            self._log(scope, status, seconds, bytes(error_body))
            if self.metrics is not None:
                self._count(scope, status, seconds)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        assert self.metrics is not None
        route = getattr(scope.get("route"), "path", "unmatched")
        model = scope.get("state", {}).get("served_model", "")
        self.metrics.requests.labels(route, str(status), model).inc()
        self.metrics.request_seconds.labels(route).observe(seconds)
        if status == 429:
            self.metrics.rejected.labels(model).inc()
        elif status >= 500:
            self.metrics.server_errors.labels(route).inc()

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float, error_body: bytes) -> None:
        state = scope.get("state", {})
        error = _error_message(error_body) if status >= 400 else None
        if state.get("timed_out"):  # the connection answered 408 itself (GuardedH11Protocol)
            status, error = 408, state["timed_out"]
        elif state.get("gone"):  # the client hung up: no error of the server's, said once, here
            error = f"the client went away {state['gone']}"
        fields = {
            "request_id": state.get("request_id", "-"),
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "model": state.get("model"),
            "error": error,
        }
        if status >= 400:  # an answered request named a route and a model Easel has; a refused one, anything
            fields.update(path=shown(fields["path"]), model=fields["model"] and shown(fields["model"]))
        line = "{method} {path} {status} {duration_ms} ms model={model} request_id={request_id}".format(
            **{**fields, "model": fields["model"] or "-"}
        )
        if fields["error"]:
            line += f" error={json.dumps(fields['error'], ensure_ascii=False)}"
        access_log.log(logging.WARNING if status >= 500 else logging.INFO, line, extra=fields)


def _error_message(body: bytes) -> str | None:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return message if isinstance(message, str) else None
