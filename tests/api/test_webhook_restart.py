"""A webhook still being retried when its server is SIGKILLed is sent after the restart, under the same
``webhook-id``, and the openai SDK's ``webhooks.unwrap()`` accepts it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from openai import OpenAI
from openai.types.webhooks import BatchCompletedWebhookEvent

from ..webhook_receivers import recording
from .test_batch_restart import body, server
from .test_webhooks import SECRET

REFUSALS = 1000  # the receiver answers 503 this many times: until the test lets it succeed


def kept_deliveries(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "easel.sqlite3")) as db:
        return db.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0]


def test_an_event_pending_at_a_kill_is_delivered_after_the_restart_with_the_same_id(tiny_model_dirs, tmp_path: Path):
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    line = {"custom_id": "only", "method": "POST", "url": "/v1/images/generations", "body": body(1)}
    with recording(*[503] * REFUSALS) as receiver:
        options = ("--webhook-url", receiver.url, "--webhook-secret", SECRET)
        with server(tiny_model_dirs["kandinsky"], data_dir, log, *options) as (process, url):
            sdk = OpenAI(base_url=url + "/v1", api_key="any", max_retries=0)
            content = io.BytesIO((json.dumps(line) + "\n").encode())
            file_id = sdk.files.create(file=("in.jsonl", content), purpose="batch").id
            batch = sdk.batches.create(
                input_file_id=file_id, endpoint="/v1/images/generations", completion_window="24h"
            )
            refused = receiver.wait_for(2, timeout=300)  # the first attempt and one retry, both refused
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        assert kept_deliveries(data_dir) == 1
        with receiver.changed:
            receiver.answers.clear()  # from now on the receiver accepts
            arrived = len(receiver.received)
        with server(tiny_model_dirs["kandinsky"], data_dir, log, *options) as (_, url):
            after = receiver.wait_for(arrived + 1, timeout=120)[arrived]
            sdk = OpenAI(base_url=url + "/v1", api_key="any", max_retries=0, webhook_secret=SECRET)
            assert sdk.batches.retrieve(batch.id).status == "completed"
            deadline = time.monotonic() + 60
            while kept_deliveries(data_dir):  # delivered: not to be sent again
                assert time.monotonic() < deadline, "the delivered event is still kept"
                time.sleep(0.05)
    assert after.headers["webhook-id"] == refused[0].headers["webhook-id"] == refused[1].headers["webhook-id"]
    assert after.body == refused[0].body  # the same event, byte for byte: only the signature's timestamp is new
    event = sdk.webhooks.unwrap(after.body.decode(), after.headers)
    assert isinstance(event, BatchCompletedWebhookEvent) and event.data.id == batch.id
    assert "webhooks: deliveries left by an earlier server: 1; sending them" in log.read_text()
