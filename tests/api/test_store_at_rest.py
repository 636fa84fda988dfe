"""A server started on a data directory that already holds files and finished batches: it takes the runner lease,
and from then on, idle or generating images, it asks SQLite nothing but the lease's one cheap question per try
(``PRAGMA data_version``), from the lease's own thread. Counted statement by statement, not timed: a query per
request, on the event loop, or a watch that re-reads the batches on every try would each show here."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from openai import OpenAI

from server.serving.batch import service

from ..conftest import running_server, tiny_settings
from .test_shared_data_dir import wait_until

TRIES = 6  # lease tries watched while idle, and again after the generations
WATCH = "PRAGMA data_version"
BODY = {"prompt": "a red circle", "size": "64x64", "prior_steps": 2, "decoder_steps": 4}


class Statements:
    """Every statement any SQLite connection opened from now on runs, with the name of the thread that ran it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        connect = sqlite3.connect

        def traced(*args, **kwargs) -> sqlite3.Connection:
            connection = connect(*args, **kwargs)
            connection.set_trace_callback(self._ran)
            return connection

        monkeypatch.setattr(sqlite3, "connect", traced)

    def _ran(self, statement: str) -> None:
        with self._lock:
            self.seen.append((threading.current_thread().name, statement))

    def since(self, mark: int) -> list[tuple[str, str]]:
        with self._lock:
            return self.seen[mark:]

    def watches(self) -> int:
        with self._lock:
            return sum(statement == WATCH for _, statement in self.seen)


def populate(settings) -> None:
    """Files and two finished batches in the store, as a server that has been used leaves them."""
    with running_server(settings) as live:
        sdk = OpenAI(base_url=live.api_url, api_key="any", max_retries=0)
        for round_ in range(2):
            lines = [
                {"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/generations", "body": BODY}
                for i in range(2)
            ]
            content = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
            uploaded = sdk.files.create(file=(f"in{round_}.jsonl", content), purpose="batch")
            batch = sdk.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/images/generations", completion_window="24h"
            )
            wait_until(lambda b=batch: sdk.batches.retrieve(b.id).status == "completed", "the batch")


def test_a_server_on_a_used_store_asks_sqlite_one_statement_per_lease_try_idle_or_busy(
    tiny_model_dirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = tiny_settings(tiny_model_dirs, data_dir=tmp_path / "data")
    populate(settings)
    monkeypatch.setattr(service, "SWEEP_SECONDS", 3600.0)  # the minutely sweep's query is not what this counts
    statements = Statements(monkeypatch)
    with running_server(settings) as live:
        state = live.state.batch_api
        wait_until(lambda: state.lease.held, "the runner lease")
        # Its first look at the unfinished batches (there are none) is done once the next tries have run.
        first = statements.watches()
        wait_until(lambda: statements.watches() >= first + 2, "the lease's tries after its first look")
        assert not state.working  # finished batches start no runner task

        mark, watched = len(statements.seen), statements.watches()
        wait_until(lambda: statements.watches() >= watched + TRIES, "lease tries while idle")
        sdk = OpenAI(base_url=live.api_url, api_key="any", max_retries=0)
        for seed in range(3):
            extra = {"prior_steps": 2, "decoder_steps": 4, "seed": seed}
            generated = sdk.images.generate(
                prompt=BODY["prompt"], size="256x256", n=2, response_format="b64_json", extra_body=extra
            )
            assert len(generated.data) == 2 and all(item.b64_json for item in generated.data)
        watched = statements.watches()
        wait_until(lambda: statements.watches() >= watched + TRIES, "lease tries after the generations")

        ran = statements.since(mark)
        assert {statement for _, statement in ran} == {WATCH}, ran
        assert {thread for thread, _ in ran} == {"easel-runner-lease"}, ran
