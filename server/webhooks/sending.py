"""One event to one URL: attempts with exponential back-off and jitter, inside a bounded time, logged and counted.

A 2xx answer delivers the event. 5xx, 429, 408 and connection errors or time-outs are
tried again after ``first_backoff * 2**(n-1)`` seconds (at most ``max_backoff``; a
``Retry-After`` within that is honoured), each wait jittered down by up to half so that
many events do not retry in step. Any other answer (a 4xx, or a redirect, which is never
followed: events go only to the configured URLs) gives up at once. So does running out of
attempts or of time: no wait or attempt reaches past ``give_up_after`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from prometheus_client import CollectorRegistry, Counter

from .events import Event, signed_headers

log = logging.getLogger("easel.webhooks")

RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx


@dataclass(frozen=True)
class WebhookMetrics:
    delivered: Counter  # labels: event_type
    failed_attempts: Counter  # labels: event_type
    given_up: Counter  # labels: event_type, reason (refused, exhausted, shutdown, overflow, error)

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> WebhookMetrics:
        """The counters, in ``registry`` (None: counted but not exported)."""
        return cls(
            delivered=Counter(
                "easel_webhook_deliveries", "Webhook events delivered (a 2xx answer)", ["event_type"], registry=registry
            ),
            failed_attempts=Counter(
                "easel_webhook_failed_attempts",
                "Webhook attempts that failed (an error answer, a time-out, no connection)",
                ["event_type"],
                registry=registry,
            ),
            given_up=Counter(
                "easel_webhook_given_up",
                "Webhook events given up at one URL (refused: a 4xx or a redirect; exhausted: out of attempts or time; "
                "shutdown: still pending when the server stopped; overflow: too many pending; error: a fault in Easel)",
                ["event_type", "reason"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 10
    give_up_after: float = 600.0  # seconds from the first attempt to the end of the last
    first_backoff: float = 1.0
    max_backoff: float = 60.0
    attempt_timeout: float = 10.0  # one attempt's connect, send and answer

    def backoff(self, failures: int, retry_after: float | None = None, rand: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt: in [half, all] of the exponential step."""
        step = min(self.max_backoff, self.first_backoff * 2 ** (failures - 1))
        if retry_after is not None:
            step = min(self.max_backoff, max(step, retry_after))
        return step * (rand or random).uniform(0.5, 1.0)


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    retry: bool
    what: str  # "HTTP 503", "ConnectError", for the log
    retry_after: float | None = None


def shown(url: str) -> str:
    """A URL as logged: no credentials, query or fragment (a receiver's token often rides there)."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def attempt(client: httpx.AsyncClient, event: Event, url: str, key: bytes, timeout: float) -> Attempt:
    """One POST, bounded as a whole by ``timeout`` (httpx's own time-outs are per read, which a trickle outlasts)."""
    headers = signed_headers(event, key, int(time.time()))
    try:
        # httpx's time-outs a little later, as a backstop: the overall bound is the one that ends an attempt.
        return await asyncio.wait_for(_post(client, url, event.body, headers, timeout + 1.0), timeout)
    except asyncio.TimeoutError:
        return Attempt(delivered=False, retry=True, what=f"no answer in {timeout:.1f} s")
    except httpx.HTTPError as error:  # refused or reset connections, DNS
        return Attempt(delivered=False, retry=True, what=type(error).__name__)


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Attempt:
    # Streamed, and the answer's body never read: only its status and headers count, whatever its size.
    async with client.stream("POST", url, content=body, headers=headers, timeout=timeout) as answer:
        status = answer.status_code
        retry = status >= 500 or status in RETRIED_STATUSES
        return Attempt(200 <= status < 300, retry, f"HTTP {status}", _retry_after(answer) if retry else None)


def _retry_after(answer: httpx.Response) -> float | None:
    value = answer.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


@dataclass(frozen=True)
class Target:
    url: str
    gate: asyncio.Semaphore  # attempts at this URL at once; the others wait here, cheap to cancel at shutdown


async def deliver(
    client: httpx.AsyncClient,
    event: Event,
    target: Target,
    key: bytes,
    policy: RetryPolicy,
    metrics: WebhookMetrics,
    *,
    made: int = 0,
    age: float = 0.0,
    failed: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Try until delivered, refused, or out of attempts or time; every outcome is one log line and a count.

    ``made`` attempts were made and ``age`` seconds spent before (by a server that stopped since), and count
    against the policy's bounds; ``failed()`` hears of each failed attempt before its wait."""
    url = target.url
    deadline = time.monotonic() + policy.give_up_after - max(0.0, age)
    if made >= policy.attempts or time.monotonic() >= deadline:
        give_up(event, url, "exhausted", f"out of attempts or time after {made} attempts before a restart", metrics)
        return
    for number in range(made + 1, policy.attempts + 1):
        async with target.gate:
            timeout = min(policy.attempt_timeout, max(0.001, deadline - time.monotonic()))
            result = await attempt(client, event, url, key, timeout)
        if result.delivered:
            metrics.delivered.labels(event_type=event.type).inc()
            log.info("webhook %s %s delivered to %s (attempt %d)", event.type, event.id, shown(url), number)
            return
        metrics.failed_attempts.labels(event_type=event.type).inc()
        if failed is not None:
            await failed()
        if not result.retry:
            give_up(event, url, "refused", f"{result.what} on attempt {number}, not retried", metrics)
            return
        wait = policy.backoff(number, result.retry_after)
        if number == policy.attempts or time.monotonic() + wait >= deadline:
            give_up(event, url, "exhausted", f"{result.what} on attempt {number}, the last", metrics)
            return
        log.warning(
            "webhook %s %s to %s: %s on attempt %d; again in %.1f s",
            *(event.type, event.id, shown(url), result.what, number, wait),
        )
        await asyncio.sleep(wait)


def give_up(event: Event, url: str, reason: str, why: str, metrics: WebhookMetrics) -> None:
    metrics.given_up.labels(event_type=event.type, reason=reason).inc()
    log.error("webhook %s %s to %s given up: %s", event.type, event.id, shown(url), why)
