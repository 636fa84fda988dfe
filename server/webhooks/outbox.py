"""The webhooks of one server: events handed over from any thread, delivered by a thread of their own.

``emit`` only builds the event and hands it to the delivery thread's event loop, so it
never waits on the network, whether called from the server's event loop or a worker
thread. Each event goes to every configured URL as its own delivery
(:mod:`server.webhooks.sending`); a slow or dead receiver holds up nothing but its own
retries. At shutdown the deliveries still pending get a short, bounded drain. Once the
batch store is open (:meth:`Webhooks.take_over`), events are recorded in it
(:mod:`server.webhooks.journal`) and what the drain leaves is sent by the next server
to hold the runner lease; without it, what is left is dropped, each with a log line
and a count.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

import httpx

from ..settings.config import Settings
from .events import new_event, signing_key
from .journal import Database, Delivery, Journal
from .sending import RetryPolicy, Target, WebhookMetrics, deliver, give_up, shown

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
        self._early: list[Delivery] = []  # emitted before start(); sent once it runs
        self._stopped = False
        self._journal: Journal | None = None
        self._client: httpx.AsyncClient | None = None
        self._targets: dict[str, Target] = {}
        self._pending: dict[asyncio.Task[None], Delivery] = {}  # touched only on the delivery thread

    @classmethod
    def from_settings(cls, settings: Settings, metrics: WebhookMetrics | None = None) -> Webhooks:
        policy = RetryPolicy(attempts=settings.webhook_attempts, give_up_after=settings.webhook_timeout_seconds)
        return cls(settings.webhook_urls, settings.webhook_secret, policy=policy, metrics=metrics)

    def emit(self, event_type: str, data: dict[str, object]) -> None:
        """Send an event of ``event_type`` (one of :data:`~server.webhooks.EVENT_TYPES`) to every URL, at once,
        from memory: a restart forgets it (:meth:`record` keeps it on disk)."""
        event = new_event(event_type, data)  # a bad type or data fails here, in the caller, with or without URLs
        self._hand_over([Delivery(event, url, time.time(), journaled=False) for url in self.urls])

    def record(self, db: sqlite3.Connection, event_type: str, data: dict[str, object]) -> Callable[[], None]:
        """Write the event's deliveries into ``db``'s open transaction (the batch store's, once
        :meth:`take_over` gave it); call what this returns once that transaction commits, to send them."""
        event = new_event(event_type, data)
        if not self.urls:
            return lambda: None
        if self._journal is None:
            return lambda: self._hand_over([Delivery(event, url, time.time(), journaled=False) for url in self.urls])
        if self._journal.count(db) + len(self.urls) > MAX_PENDING:
            self._drop([Delivery(event, url, time.time()) for url in self.urls], "overflow", "too many pending")
            return lambda: None
        deliveries = self._journal.add(db, event, self.urls, time.time())
        return lambda: self._hand_over(deliveries)

    def take_over(self, database: Database) -> None:
        """This server now holds the runner lease: record events in ``database`` and send what it holds,
        left by a server that stopped or died (blocking: a query)."""
        if not self.urls:
            return
        self._journal = Journal(database)
        left = self._journal.pending(self.urls)
        if left:
            log.info("webhooks: deliveries left by an earlier server: %d; sending them", len(left))
        self._hand_over(left)

    def _hand_over(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        with self._lock:
            if self._stopped:
                self._drop(deliveries, "shutdown", "emitted after the server stopped")
            elif self._loop is None:
                self._early.extend(deliveries)
            else:
                self._loop.call_soon_threadsafe(self._launch, deliveries)

    def pending(self) -> int:
        """Deliveries under way (an event at one URL), retries and waits included."""
        return len(self._pending) + len(self._early)

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
        self._drop(early, "shutdown", "the server stopped before webhooks started")
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
            self._targets = {url: Target(url, asyncio.Semaphore(ATTEMPTS_PER_URL)) for url in self.urls}
            with self._lock:
                self._loop = loop
                early, self._early = self._early, []
            self._launch(early)
        finally:
            ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _launch(self, deliveries: list[Delivery]) -> None:
        assert self._loop is not None
        under_way = {delivery.key for delivery in self._pending.values()}
        for delivery in deliveries:
            if delivery.key in under_way:  # a journaled delivery handed over twice
                continue
            if len(self._pending) >= MAX_PENDING:
                self._drop([delivery], "overflow", f"{MAX_PENDING} deliveries already pending")
                continue
            task = self._loop.create_task(self._send(delivery))
            self._pending[task] = delivery
            task.add_done_callback(self._finished)

    async def _send(self, delivery: Delivery) -> None:
        assert self._client is not None
        journal = self._journal if delivery.journaled else None

        async def failed() -> None:
            if journal is not None:
                await asyncio.to_thread(journal.attempted, delivery)

        await deliver(
            self._client, delivery.event, self._targets[delivery.url], self._key, self.policy, self.metrics,
            made=delivery.attempts, age=time.time() - delivery.created_at, failed=failed,
        )  # fmt: skip
        if journal is not None:  # delivered or given up: not to be sent again
            await asyncio.to_thread(journal.forget, delivery)

    def _finished(self, task: asyncio.Task[None]) -> None:
        delivery = self._pending.pop(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:  # a bug, not the receiver's doing: counted as given up, with the traceback
            event = delivery.event
            log.error("webhook %s %s: delivery failed", event.type, event.id, exc_info=error)
            give_up(event, delivery.url, "error", f"{type(error).__name__} in Easel", self.metrics)

    async def _drain(self, seconds: float) -> None:
        if self._pending:
            log.info("webhooks: up to %.0f s for %d pending deliveries", seconds, len(self._pending))
            _, left = await asyncio.wait(set(self._pending), timeout=seconds)
            self._drop([self._pending[task] for task in left], "shutdown", "still pending when the server stopped")
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _drop(self, deliveries: list[Delivery], reason: str, why: str) -> None:
        """Journaled deliveries stay on disk for the next server to hold the lease; the others are given up."""
        for delivery in deliveries:
            event = delivery.event
            if delivery.journaled and reason == "shutdown":
                log.warning("webhook %s %s to %s: %s; kept to send after a restart", event.type, event.id,
                            shown(delivery.url), why)  # fmt: skip
            else:
                give_up(event, delivery.url, reason, why, self.metrics)
