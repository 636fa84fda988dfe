"""A lease holder whose runner hangs without dying gives the runner lease up, and another server on the same data
directory finishes its batch: every line answered once, with the synchronous endpoint's bytes. The new holder
also removes the files a holder killed mid-write left behind."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from server.serving.batch.files import Files
from server.serving.batch.orphans import ORPHAN_AGE_SECONDS
from server.serving.batch.store import Store

from ..conftest import running_server, tiny_settings
from .test_shared_data_dir import wait_until

LINES = 8
HANG_LINE = 3  # its prompt hangs the first holder's pipeline call
STALL_SECONDS = 10.0  # far above a line's time here, so only the hang trips it
PATIENCE = 300  # bounds a hang only: every wait is on a condition


class HangingBackend:
    """The real tiny backend, except that a call holding the prompt "hang" blocks until the test ends."""

    def __init__(self, inner, release: threading.Event) -> None:
        self.inner = inner
        self.info = inner.info
        self.release = release
        self.hung = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def run_batch(self, tickets):
        if any(ticket.job.prompt == "hang" for ticket in tickets):
            self.hung.set()
            self.release.wait()
        return self.inner.run_batch(tickets)


def body(i: int) -> dict:
    prompt = "hang" if i == HANG_LINE else f"a blue star {i}"
    return {"prompt": prompt, "size": "64x64", "seed": i, "response_format": "b64_json", "prior_steps": 2,
            "decoder_steps": 2}  # fmt: skip


def plant_orphans(data_dir: Path) -> tuple[str, Path]:
    """What a holder killed between writing a batch's output and settling the batch leaves: a batch_output file
    no batch names (as servers before this release did), and old contents with no row (as one now may)."""
    store = Store(data_dir)
    try:
        orphan = Files(store).add(b'{"custom_id": "x"}\n', "batch_dead_output.jsonl", "batch_output", None)["id"]
    finally:
        store.close()
    rowless = data_dir / "files" / ("file-" + "ab" * 12)
    rowless.write_bytes(b"staged, never committed")
    old = time.time() - ORPHAN_AGE_SECONDS - 60
    os.utime(rowless, (old, old))
    return orphan, rowless


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # the hung call returns, so the first server can stop


def test_a_holder_whose_pipeline_call_hangs_gives_the_lease_up_and_the_other_server_finishes_the_batch(
    tiny_model_dirs, tmp_path: Path, release: threading.Event, caplog
):
    from pipelines.loader import load_backend

    backends: list[HangingBackend] = []

    def hanging_loader(name, family, path, **kwargs):
        backends.append(HangingBackend(load_backend(name, family, path, **kwargs), release))
        return backends[-1]

    data_dir = tmp_path / "data"
    settings = tiny_settings(
        tiny_model_dirs, data_dir=data_dir, max_batch_images=1, workers=1, runner_stall_seconds=STALL_SECONDS
    )
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/generations", "body": body(i)} for i in range(LINES)
    ]
    content = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    with running_server(settings, loader=hanging_loader) as stuck:
        stuck_sdk = OpenAI(base_url=stuck.api_url, api_key="any", max_retries=0)
        upload = stuck_sdk.files.create(file=("in.jsonl", content), purpose="batch")  # makes the store
        wait_until(lambda: stuck.state.batch_api.lease.held, "the first server to take the lease")
        orphan, rowless = plant_orphans(data_dir)
        with running_server(settings) as healthy, caplog.at_level(logging.INFO, logger="easel.batches"):
            sdk = OpenAI(base_url=healthy.api_url, api_key="any", max_retries=0)
            batch = sdk.batches.create(
                input_file_id=upload.id, endpoint="/v1/images/generations", completion_window="24h"
            )
            wait_until(lambda: any(backend.hung.is_set() for backend in backends), "the hang")
            wait_until(lambda: healthy.state.batch_api.lease.held, "the healthy server to take the lease over")
            assert not stuck.state.batch_api.lease.held
            done = wait_until(
                lambda: (found := sdk.batches.retrieve(batch.id)).status == "completed" and found, "the batch"
            )
            given_up = [r for r in caplog.records if "giving up the runner lease" in r.getMessage()]
            assert [r.levelno for r in given_up] == [logging.ERROR]
            assert "finished nothing" in given_up[0].getMessage()
            assert (done.request_counts.total, done.request_counts.completed) == (LINES, LINES)
            assert done.error_file_id is None
            written = sdk.files.content(done.output_file_id).text
            output = [json.loads(text) for text in written.splitlines()]
            assert [line["custom_id"] for line in output] == [f"c{i}" for i in range(LINES)]  # each once, in order
            for i, line in enumerate(output):
                synchronous = httpx.post(healthy.url + "/v1/images/generations", json=body(i), timeout=PATIENCE)
                assert line["response"]["body"]["data"] == synchronous.json()["data"], f"line c{i}"

            # The new holder removed what a killed holder left, and nothing else.
            assert not rowless.exists()
            outputs = {file.id for file in sdk.files.list(purpose="batch_output")}
            assert outputs == {done.output_file_id} and orphan not in outputs
            assert sdk.files.retrieve(upload.id).id == upload.id

            # The hung call returns: the first server's runner, abandoned, commits nothing.
            release.set()
            wait_until(lambda: stuck.model_stats("easel-tiny")["running"] == 0, "the hung call to end")
            assert sdk.batches.retrieve(batch.id) == done
            assert sdk.files.content(done.output_file_id).text == written


def test_a_holder_whose_event_loop_stops_turning_gives_the_lease_up(
    tiny_model_dirs, tmp_path: Path, release: threading.Event, caplog
):
    """The holder's event loop is blocked (a blocking call on it: here, its once-a-second beat waits for the test,
    so the loop stops before any batch exists and nothing else can trip the watchdog first). Its lease thread sees no
    beat and gives up; the other server runs the batch."""
    settings = tiny_settings(
        tiny_model_dirs, data_dir=tmp_path / "data", max_batch_images=1, workers=1, runner_stall_seconds=STALL_SECONDS
    )
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/generations", "body": body(i + 1)}
        for i in range(LINES // 2)
    ]  # fmt: skip
    content = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    with running_server(settings) as stuck:
        upload = OpenAI(base_url=stuck.api_url, api_key="any", max_retries=0).files.create(
            file=("in.jsonl", content), purpose="batch"
        )
        wait_until(lambda: stuck.state.batch_api.lease.held, "the first server to take the lease")
        progress = stuck.state.batch_api.progress
        beat, blocked = progress.beat, threading.Event()

        def beat_after_the_test(*args):  # runs on the holder's event loop: blocks it
            blocked.set()
            release.wait(PATIENCE)
            return beat(*args)

        progress.beat = beat_after_the_test
        wait_until(blocked.is_set, "the holder's event loop to block")
        with running_server(settings) as healthy, caplog.at_level(logging.INFO, logger="easel.batches"):
            sdk = OpenAI(base_url=healthy.api_url, api_key="any", max_retries=0)
            batch = sdk.batches.create(
                input_file_id=upload.id, endpoint="/v1/images/generations", completion_window="24h"
            )
            wait_until(lambda: healthy.state.batch_api.lease.held, "the healthy server to take the lease over")
            done = wait_until(
                lambda: (found := sdk.batches.retrieve(batch.id)).status == "completed" and found, "the batch"
            )
            given_up = [r for r in caplog.records if "giving up the runner lease" in r.getMessage()]
            assert [r.levelno for r in given_up] == [logging.ERROR]
            assert "event loop has not run" in given_up[0].getMessage()
            written = sdk.files.content(done.output_file_id).text
            assert [json.loads(text)["custom_id"] for text in written.splitlines()] == [f"c{i}" for i in range(4)]

            # The loop turns again: the first server hears it gave the lease up, and commits nothing.
            progress.beat = beat
            release.set()
            wait_until(lambda: stuck.state.batch_api.lease.lost.is_set(), "the first server to see the lease lost")
            wait_until(lambda: stuck.readiness().get("status") == "ready", "the first server to answer again")
            assert sdk.batches.retrieve(batch.id) == done
            assert sdk.files.content(done.output_file_id).text == written
            assert healthy.state.batch_api.lease.held and not stuck.state.batch_api.lease.held
