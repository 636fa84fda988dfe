"""What the connection guard (:class:`server.http.guard.GuardedH11Protocol`) limits and answers with.

Its early answers are written as raw HTTP/1.1 bytes in OpenAI's envelope (with an ``x-request-id``): no app, no
Starlette, is there to send them. Refused connections are logged at most once per interval, with a count.
"""

from __future__ import annotations

import http
import json
import logging
import time
from dataclasses import dataclass

from .errors import INVALID_REQUEST, SERVER_ERROR, envelope

log = logging.getLogger("easel.connections")

LINGER_SECONDS = 3.0  # after an early answer, what the client still sends is read and dropped, so it gets the answer
REFUSAL_LOG_INTERVAL = 10.0  # refused connections are logged at most this often, with a count


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float  # from a request's first byte to the end of its headers
    body_timeout: float  # from the end of the headers to the end of the body
    header_bytes: int  # a request's headers larger than this are answered 431 (h11's incomplete-event limit)
    send_timeout: float  # an answer that makes no progress to its client for this long is aborted (SendWatch)


class RefusalLog:
    """One server's connections refused over the limit, logged once per interval: a flood must not flood the log."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.logged_at = -REFUSAL_LOG_INTERVAL

    def note(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "%d connection(s) refused with 503: %d already open (--max-connections)", self.count, self.limit
            )
            self.count, self.logged_at = 0, now


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
