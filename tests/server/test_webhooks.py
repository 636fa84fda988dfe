"""Webhooks on their own: events the openai SDK unwraps, retries with bounded back-off, refusals, shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import threading
import time

import httpx
import pytest
from openai import InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)
from prometheus_client import CollectorRegistry

from server.webhooks import EVENT_TYPES, WebhookMetrics, Webhooks
from server.webhooks.outbox import ATTEMPTS_PER_URL, MAX_PENDING
from server.webhooks.sending import RetryPolicy

from ..webhook_receivers import recording, silent

SECRET = "whsec_" + base64.b64encode(b"easel-webhook-test-key-32-bytes!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-webhook-test-key-32bytes").decode()
QUICK = RetryPolicy(attempts=5, give_up_after=60.0, first_backoff=0.2, max_backoff=1.0, attempt_timeout=10.0)
TYPED = {
    "batch.completed": BatchCompletedWebhookEvent,
    "batch.failed": BatchFailedWebhookEvent,
    "batch.cancelled": BatchCancelledWebhookEvent,
    "batch.expired": BatchExpiredWebhookEvent,
}
sdk = OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")


REGISTRIES: dict[Webhooks, CollectorRegistry] = {}
COUNTERS = {
    "delivered": "easel_webhook_deliveries_total",
    "failed_attempts": "easel_webhook_failed_attempts_total",
    "given_up": "easel_webhook_given_up_total",
}


def made(urls: list[str], policy: RetryPolicy = QUICK, transport: httpx.AsyncBaseTransport | None = None) -> Webhooks:
    """Webhooks counting into a registry of their own, as /metrics reads them."""
    registry = CollectorRegistry()
    webhooks = Webhooks(urls, SECRET, policy=policy, metrics=WebhookMetrics.create(registry), transport=transport)
    REGISTRIES[webhooks] = registry
    return webhooks


def count(webhooks: Webhooks, counter: str, event_type: str, **labels: str) -> float:
    value = REGISTRIES[webhooks].get_sample_value(COUNTERS[counter], {"event_type": event_type, **labels})
    return value or 0.0


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


@pytest.fixture
def started():
    running: list[Webhooks] = []

    def start(urls, policy: RetryPolicy = QUICK) -> Webhooks:
        webhooks = made(urls, policy)
        webhooks.start()
        running.append(webhooks)
        return webhooks

    yield start
    for webhooks in running:
        webhooks.stop(drain_seconds=0)


def test_each_batch_event_unwraps_with_the_sdk_to_its_typed_event(started):
    with recording() as receiver:
        webhooks = started([receiver.url])
        for number, event_type in enumerate(sorted(EVENT_TYPES)):
            webhooks.emit(event_type, {"id": f"batch_{number}"})
        received = receiver.wait_for(len(EVENT_TYPES))
    assert {r.path for r in received} == {"/hooks"}
    events = [sdk.webhooks.unwrap(r.body, r.headers, secret=SECRET) for r in received]
    for r, event in zip(received, events, strict=True):
        body = json.loads(r.body)
        assert type(event) is TYPED[body["type"]]
        assert event.object == "event" and event.id == body["id"] and event.id.startswith("evt_")
        assert abs(event.created_at - time.time()) < 600
        assert list(body) == ["id", "object", "created_at", "type", "data"] and body["data"] == {"id": event.data.id}
        assert r.headers["content-type"] == "application/json"
        assert r.headers["webhook-id"].startswith("wh_") and r.headers["webhook-signature"].startswith("v1,")
    assert sorted((e.type, e.data.id) for e in events) == [(t, f"batch_{n}") for n, t in enumerate(sorted(EVENT_TYPES))]
    assert len({r.headers["webhook-id"] for r in received}) == len(received)


def test_a_wrong_secret_or_a_changed_body_fails_to_unwrap(started):
    with recording() as receiver:
        started([receiver.url]).emit("batch.completed", {"id": "batch_1"})
        (received,) = receiver.wait_for(1)
    with pytest.raises(InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(received.body, received.headers, secret=OTHER_SECRET)
    with pytest.raises(InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(received.body.replace(b"batch_1", b"batch_2"), received.headers, secret=SECRET)
    stale = {**received.headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(received.body, stale, secret=SECRET)
    assert sdk.webhooks.unwrap(received.body, received.headers, secret=SECRET).data.id == "batch_1"


def test_a_receiver_that_fails_twice_gets_the_event_once_delivered_with_the_same_id(started):
    with recording(503, (429, {"retry-after": "0"}), 200) as receiver:
        webhooks = started([receiver.url])
        webhooks.emit("batch.completed", {"id": "batch_7"})
        received = receiver.wait_for(3)
        wait_until(lambda: count(webhooks, "delivered", "batch.completed") == 1)
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in received}) == 1 and len({r.body for r in received}) == 1
    for r in received:  # every attempt is signed anew, and verifies
        assert sdk.webhooks.unwrap(r.body, r.headers, secret=SECRET).data.id == "batch_7"
    # Each wait is at least half its exponential step: 0.2 s after the first failure, 0.4 s after the second.
    gaps = [b.at - a.at for a, b in zip(received, received[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps
    assert count(webhooks, "failed_attempts", "batch.completed") == 2
    assert count(webhooks, "given_up", "batch.completed", reason="exhausted") == 0
    assert webhooks.pending() == 0


def test_the_back_off_doubles_with_jitter_and_stays_within_its_bounds():
    policy = RetryPolicy(first_backoff=1.0, max_backoff=60.0)
    rand = random.Random(25)
    for failures in range(1, 12):
        step = min(60.0, 2.0 ** (failures - 1))
        waits = [policy.backoff(failures, rand=rand) for _ in range(200)]
        assert all(step / 2 <= wait <= step for wait in waits)
        assert max(waits) - min(waits) > step / 4  # jittered, not constant
    assert 15.0 <= policy.backoff(1, retry_after=30.0, rand=rand) <= 30.0  # Retry-After honoured
    assert policy.backoff(1, retry_after=3600.0, rand=rand) <= 60.0  # but never past the cap


def test_a_4xx_or_a_redirect_is_given_up_at_once(started):
    with recording(404, (307, {"location": "/elsewhere"})) as receiver:
        webhooks = started([receiver.url])
        webhooks.emit("batch.failed", {"id": "batch_1"})
        webhooks.emit("batch.failed", {"id": "batch_2"})
        wait_until(lambda: count(webhooks, "given_up", "batch.failed", reason="refused") == 2)
        assert [r.path for r in receiver.received] == ["/hooks", "/hooks"]  # the redirect was not followed
    assert count(webhooks, "failed_attempts", "batch.failed") == 2
    assert count(webhooks, "delivered", "batch.failed") == 0


def test_attempts_are_bounded_in_number_and_in_time(started):
    with recording(*[500] * 50) as receiver:
        few = started([receiver.url], RetryPolicy(attempts=3, first_backoff=0.05, max_backoff=0.1))
        few.emit("batch.expired", {"id": "batch_1"})
        wait_until(lambda: count(few, "given_up", "batch.expired", reason="exhausted") == 1)
        assert len(receiver.received) == 3
        policy = RetryPolicy(attempts=50, give_up_after=1.5, first_backoff=0.2, max_backoff=0.4)
        brief = started([receiver.url], policy)
        brief.emit("batch.cancelled", {"id": "batch_2"})
        wait_until(lambda: count(brief, "given_up", "batch.cancelled", reason="exhausted") == 1)
        tries = [r for r in receiver.received if b"batch_2" in r.body]
    assert 2 <= len(tries) < 50
    assert tries[-1].at - tries[0].at < policy.give_up_after  # no attempt starts past the time allowed
    assert count(brief, "failed_attempts", "batch.cancelled") == len(tries)


def test_emit_returns_at_once_from_any_thread_while_a_receiver_never_answers(started):
    with silent() as receiver:
        webhooks = started([receiver.url])

        async def from_an_event_loop() -> None:
            webhooks.emit("batch.completed", {"id": "batch_loop"})

        asyncio.run(from_an_event_loop())
        worker = threading.Thread(target=webhooks.emit, args=("batch.completed", {"id": "batch_thread"}))
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive()
        receiver.wait_for(2)  # both are being delivered, and neither caller waited for an answer
        assert webhooks.pending() == 2
        assert count(webhooks, "delivered", "batch.completed") == 0


def test_shutdown_drains_briefly_then_drops_what_is_left_with_a_log_line(caplog):
    caplog.set_level(logging.INFO, logger="easel.webhooks")
    with silent() as receiver, recording() as answering:
        webhooks = made([receiver.url, answering.url])
        webhooks.emit("batch.completed", {"id": "batch_early"})  # before start: held, then sent
        webhooks.start()
        receiver.wait_for(1)
        answering.wait_for(1)
        wait_until(lambda: count(webhooks, "delivered", "batch.completed") == 1)
        started_at = time.monotonic()
        webhooks.stop(drain_seconds=0.5)
        assert time.monotonic() - started_at < 30  # bounded: the silent receiver's attempt would take 10 s
        webhooks.emit("batch.completed", {"id": "batch_late"})
    assert count(webhooks, "given_up", "batch.completed", reason="shutdown") == 3  # one pending, two late
    assert webhooks.pending() == 0
    dropped = [r.getMessage() for r in caplog.records if "still pending when the server stopped" in r.getMessage()]
    assert len(dropped) == 1 and receiver.url.removesuffix("/hooks") in dropped[0]
    assert len(answering.received) == 1


def test_an_unknown_event_type_is_refused_in_the_caller():
    with pytest.raises(ValueError, match="unknown webhook event type 'batch.done'"):
        Webhooks([], None).emit("batch.done", {"id": "batch_1"})
    with pytest.raises(ValueError, match="need a secret"):
        Webhooks(["http://127.0.0.1:9/hooks"], None)


class FaultyTransport(httpx.AsyncBaseTransport):
    """A fault inside Easel's sending (not a network error): it must be counted and logged, not lost silently."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in the sender")


def test_a_fault_in_the_sender_is_counted_and_logged_with_its_traceback(caplog):
    webhooks = made(["http://127.0.0.1:9/hooks"], transport=FaultyTransport())
    webhooks.start()
    try:
        webhooks.emit("batch.completed", {"id": "batch_1"})
        wait_until(lambda: count(webhooks, "given_up", "batch.completed", reason="error") == 1)
    finally:
        webhooks.stop(drain_seconds=0)
    (failed,) = [r for r in caplog.records if r.getMessage().endswith("delivery failed")]
    assert failed.exc_info is not None and "a bug in the sender" in str(failed.exc_info[1])
    assert count(webhooks, "failed_attempts", "batch.completed") == 0 and webhooks.pending() == 0


def test_an_attempt_without_an_answer_ends_at_its_time_out_and_is_retried(started, caplog):
    caplog.set_level(logging.WARNING, logger="easel.webhooks")
    policy = RetryPolicy(attempts=2, first_backoff=0.05, max_backoff=0.1, attempt_timeout=0.3)
    with silent() as receiver:
        webhooks = started([receiver.url], policy)
        webhooks.emit("batch.expired", {"id": "batch_1"})
        wait_until(lambda: count(webhooks, "given_up", "batch.expired", reason="exhausted") == 1)
        receiver.wait_for(2)  # its accepting thread may run late on a loaded machine: the client is done already
        assert len(receiver.connections) == 2  # a fresh connection for the second attempt
    assert count(webhooks, "failed_attempts", "batch.expired") == 2
    lines = [r.getMessage() for r in caplog.records]
    assert any("no answer in 0.3 s on attempt 1; again in" in line for line in lines), lines
    assert any("given up: no answer in 0.3 s on attempt 2, the last" in line for line in lines), lines


def test_pending_deliveries_are_bounded_and_a_receiver_gets_a_few_connections_at_most(caplog):
    caplog.set_level(logging.CRITICAL, logger="easel.webhooks")  # a thousand give-up lines say nothing here
    with silent() as receiver:
        webhooks = made([receiver.url], RetryPolicy(attempt_timeout=60.0))
        webhooks.start()
        for number in range(MAX_PENDING + 5):
            webhooks.emit("batch.completed", {"id": f"batch_{number}"})
        wait_until(lambda: count(webhooks, "given_up", "batch.completed", reason="overflow") == 5)
        receiver.wait_for(ATTEMPTS_PER_URL)
        assert webhooks.pending() == MAX_PENDING
        webhooks.stop(drain_seconds=0.2)
        assert len(receiver.connections) == ATTEMPTS_PER_URL  # the others waited their turn, not the receiver
    assert count(webhooks, "given_up", "batch.completed", reason="shutdown") == MAX_PENDING
    assert webhooks.pending() == 0
