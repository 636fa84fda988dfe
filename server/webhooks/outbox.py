"""The webhooks of one server: events handed over from any thread, delivered by a thread of their own.

``emit`` only builds the event and hands it to the delivery thread's event loop, so it
never waits on the network, whether called from the server's event loop or a worker
thread. Each event goes to every configured URL as its own delivery
(:mod:`server.webhooks.sending`); a slow or dead receiver holds up nothing but its own
retries. At shutdown the deliveries still pending get a short, bounded drain; what is
left after it is dropped, each with a log line and a count.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import httpx

from ..settings.config import Settings
from .events import Event, new_event, signing_key
from .sending import RetryPolicy, Target, WebhookMetrics, deliver, give_up

log = logging.getLogger("easel.webhooks")

MAX_PENDING = 1000  # deliveries (an event at one URL) under way at once; more are dropped, logged and counted
DRAIN_SECONDS = 5.0  # at shutdown, how long pending deliveries may still finish
ATTEMPTS_PER_URL = 8  # connections open to one receiver at once (httpx's pool is slow to cancel long queues)


class Webhooks:
    def __init__(
        self,
        urls: Sequence[str],
        secret: str | None,
        *,
        policy: RetryPolicy | None = None,
        metrics: WebhookMetrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if urls and not secret:
            raise ValueError("webhook URLs need a secret: events are always signed")
        self.urls = tuple(urls)
        self.policy = policy or RetryPolicy()
        self.metrics = metrics or WebhookMetrics.create(None)
        self._key = signing_key(secret) if secret else b""
        self._transport = transport
        self._lock = threading.Lock()  # guards the hand-over: _loop, _early, _stopped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._early: list[Event] = []  # emitted before start(); sent once it runs
        self._stopped = False
        self._client: httpx.AsyncClient | None = None
        self._targets: list[Target] = []
        self._pending: dict[asyncio.Task[None], tuple[Event, str]] = {}  # touched only on the delivery thread

    @classmethod
    def from_settings(cls, settings: Settings, metrics: WebhookMetrics | None = None) -> Webhooks:
        policy = RetryPolicy(attempts=settings.webhook_attempts, give_up_after=settings.webhook_timeout_seconds)
        return cls(settings.webhook_urls, settings.webhook_secret, policy=policy, metrics=metrics)

    def emit(self, event_type: str, data: dict[str, object]) -> None:
        """Send an event of ``event_type`` (one of :data:`~server.webhooks.EVENT_TYPES`) to every URL, at once."""
        event = new_event(event_type, data)  # a bad type or data fails here, in the caller, with or without URLs
        if not self.urls:
            return
        with self._lock:
            if self._stopped:
                self._drop([event], "emitted after the server stopped")
            elif self._loop is None:
                self._early.append(event)
            else:
                self._loop.call_soon_threadsafe(self._launch, event)

    def pending(self) -> int:
        """Deliveries under way (an event at one URL), retries and waits included."""
        return len(self._pending) + len(self._early) * len(self.urls)

    def start(self) -> None:
        """Start the delivery thread (nothing to start without URLs)."""
        with self._lock:
            if not self.urls or self._thread is not None or self._stopped:
                return
            ready = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(ready,), name="easel-webhooks", daemon=True)
            self._thread.start()
        ready.wait()

    def stop(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Give pending deliveries up to ``drain_seconds``, drop the rest, and end the thread. Blocks that long."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
            early, self._early = self._early, []
        self._drop(early, "the server stopped before webhooks started")
        if loop is None or thread is None:
            return
        drained = asyncio.run_coroutine_threadsafe(self._drain(drain_seconds), loop)
        try:
            drained.result(timeout=drain_seconds + 10)
        except Exception:  # shutting down regardless; say why
            log.exception("webhooks: the shutdown drain failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    # -- on the delivery thread ---------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            self._client = httpx.AsyncClient(
                transport=self._transport,
                follow_redirects=False,
                headers={"user-agent": "easel-webhooks"},
                limits=httpx.Limits(max_connections=ATTEMPTS_PER_URL * len(self.urls)),
            )
            self._targets = [Target(url, asyncio.Semaphore(ATTEMPTS_PER_URL)) for url in self.urls]
            with self._lock:
                self._loop = loop
                early, self._early = self._early, []
            for event in early:
                self._launch(event)
        finally:
            ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _launch(self, event: Event) -> None:
        assert self._loop is not None and self._client is not None
        for target in self._targets:
            if len(self._pending) >= MAX_PENDING:
                give_up(event, target.url, "overflow", f"{MAX_PENDING} deliveries already pending", self.metrics)
                continue
            task = self._loop.create_task(deliver(self._client, event, target, self._key, self.policy, self.metrics))
            self._pending[task] = (event, target.url)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        event, url = self._pending.pop(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:  # a bug, not the receiver's doing: counted as given up, with the traceback
            log.error("webhook %s %s: delivery failed", event.type, event.id, exc_info=error)
            give_up(event, url, "error", f"{type(error).__name__} in Easel", self.metrics)

    async def _drain(self, seconds: float) -> None:
        if self._pending:
            log.info("webhooks: up to %.0f s for %d pending deliveries", seconds, len(self._pending))
            _, left = await asyncio.wait(set(self._pending), timeout=seconds)
            for task in left:
                event, url = self._pending[task]
                give_up(event, url, "shutdown", "still pending when the server stopped", self.metrics)
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _drop(self, events: list[Event], why: str) -> None:
        for event in events:
            for url in self.urls:
                give_up(event, url, "shutdown", why, self.metrics)
