"""Finished responses of ``/v1/responses``, kept in memory for ``previous_response_id`` and ``GET``.

Each is kept for ``--url-ttl-seconds`` (the lifetime of image URLs), then
forgotten; at most :data:`MAX_KEPT` at once, the oldest forgotten first, so a
busy server's memory stays bounded (each holds its image twice: the file and
its base64). They live in this process only: a restart, or another replica
behind a load balancer, does not know them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_KEPT = 256


@dataclass(frozen=True)
class KeptResponse:
    id: str
    body: dict[str, Any]  # the response object as answered
    image: bytes  # its image file, the input of an edit that continues from it
    output_format: str
    kept_at: float = field(default_factory=time.monotonic)


class KeptResponses:
    def __init__(self, ttl_seconds: float, limit: int = MAX_KEPT) -> None:
        self.ttl_seconds = ttl_seconds
        self.limit = limit
        self._kept: OrderedDict[str, KeptResponse] = OrderedDict()
        self._lock = threading.Lock()  # put runs in worker threads, get on the event loop

    def put(self, response: KeptResponse) -> None:
        with self._lock:
            self._forget_expired()
            self._kept[response.id] = response
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)

    def get(self, response_id: str) -> KeptResponse | None:
        with self._lock:
            self._forget_expired()
            return self._kept.get(response_id)

    def _forget_expired(self) -> None:
        oldest_kept = time.monotonic() - self.ttl_seconds
        while self._kept and next(iter(self._kept.values())).kept_at < oldest_kept:
            self._kept.popitem(last=False)
