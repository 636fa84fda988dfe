"""Webhook deliveries kept in the batch store: a delivery cut short by a stop is sent by the next server with
the same webhook id, its attempts counted across the restart; one out of attempts stays given up."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from openai import OpenAI
from openai.types.webhooks import BatchCompletedWebhookEvent
from prometheus_client import CollectorRegistry

from server.serving.batch.store import Store
from server.webhooks import WebhookMetrics, Webhooks
from server.webhooks.sending import RetryPolicy

from ..webhook_receivers import recording

SECRET = "whsec_" + base64.b64encode(b"easel-webhook-journal-key-32byte").decode()
QUICK = RetryPolicy(attempts=10, give_up_after=60.0, first_backoff=0.2, max_backoff=1.0, attempt_timeout=10.0)


@contextlib.contextmanager
def store_at(directory: Path) -> Iterator[Store]:
    store = Store(directory)
    try:
        yield store
    finally:
        store.close()


def kept(store: Store) -> list[tuple[str, int]]:
    return [(row["webhook_id"], row["attempts"]) for row in store.query("SELECT * FROM webhook_deliveries")]


def server_webhooks(url: str, store: Store, registry: CollectorRegistry) -> Webhooks:
    """A server's webhooks as its lifespan makes them, holding the lease of ``store``."""
    webhooks = Webhooks([url], SECRET, policy=QUICK, metrics=WebhookMetrics.create(registry))
    webhooks.start()
    webhooks.take_over(store)
    return webhooks


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_delivery_cut_short_is_sent_after_the_restart_with_the_same_id(tmp_path: Path) -> None:
    with recording(*[503] * 100) as receiver, store_at(tmp_path) as store:
        first = server_webhooks(receiver.url, store, CollectorRegistry())
        with store.transaction() as db:
            send = first.record(db, "batch.completed", {"id": "batch_kept"})
        assert len(kept(store)) == 1  # kept from the commit on, before any attempt
        send()
        wait_for(lambda: kept(store)[0][1] >= 2, "two failed attempts counted")
        first.stop(drain_seconds=0)  # an attempt may be under way: it is cut short, and the delivery kept
        ((webhook_id, attempts),) = kept(store)
        assert 2 <= attempts < QUICK.attempts
        with receiver.changed:
            receiver.answers.clear()  # the receiver accepts from now on
            refused = len(receiver.received)
        registry = CollectorRegistry()
        second = server_webhooks(receiver.url, store, registry)  # the restart
        try:
            wait_for(lambda: not kept(store), "the delivery to end")
        finally:
            second.stop()
        received = receiver.received
        assert {item.headers["webhook-id"] for item in received} == {webhook_id}
        assert len(received) > refused  # and the restarted server's first attempt delivered it:
        assert (
            registry.get_sample_value("easel_webhook_failed_attempts_total", {"event_type": "batch.completed"}) is None
        )
        assert registry.get_sample_value("easel_webhook_deliveries_total", {"event_type": "batch.completed"}) == 1
        sdk = OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1", webhook_secret=SECRET)
        event = sdk.webhooks.unwrap(received[-1].body.decode(), received[-1].headers)
        assert isinstance(event, BatchCompletedWebhookEvent) and event.data.id == "batch_kept"


def test_a_delivery_out_of_attempts_before_the_restart_stays_given_up(tmp_path: Path) -> None:
    with recording() as receiver, store_at(tmp_path) as store:
        first = Webhooks([receiver.url], SECRET, policy=QUICK, metrics=WebhookMetrics.create(CollectorRegistry()))
        first.take_over(store)  # never started: nothing is sent
        with store.transaction() as db:
            first.record(db, "batch.completed", {"id": "batch_spent"})
            db.execute("UPDATE webhook_deliveries SET attempts = ?", (QUICK.attempts,))
        first.stop()
        assert len(kept(store)) == 1
        registry = CollectorRegistry()
        second = server_webhooks(receiver.url, store, registry)
        try:
            wait_for(lambda: not kept(store), "the delivery to be given up")
        finally:
            second.stop()
        labels = {"event_type": "batch.completed", "reason": "exhausted"}
        assert registry.get_sample_value("easel_webhook_given_up_total", labels) == 1
        assert receiver.received == []
