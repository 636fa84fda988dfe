"""Files and Batches behind two Ray Serve ingress replicas sharing one data directory: either replica answers
every call from the one store, one of them runs the lines and sends each webhook once, and when that one dies
the other takes the batch over, answering every line once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import OpenAI
from openai.types.webhooks import BatchCompletedWebhookEvent

from server.scaleout.deployments import INGRESS_NAME
from server.settings.ray_serve import RayServeSettings
from tests.api.test_webhooks import SECRET
from tests.conftest import TEST_KEY
from tests.webhook_receivers import Recorder, recording

from .conftest import ENGINE_CORES, RayApp, deployed, wait_until
from .test_replicas import serving_replica

STEPS = {"prior_steps": 2, "decoder_steps": 6}
PATIENCE = 300  # bounds a hang only: every wait is on a condition


@dataclass
class Setup:
    app: RayApp
    data_dir: Path
    receiver: Recorder


@pytest.fixture(scope="module")
def setup(serve_port: int, tiny_model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[Setup]:
    scaling = RayServeSettings(replicas=1, ingress_replicas=2, replica_cpus=ENGINE_CORES)
    data_dir, image_dir = tmp_path_factory.mktemp("ray-data"), tmp_path_factory.mktemp("ray-images")
    with recording() as receiver:
        hooks = {"webhook_urls": (receiver.url,), "webhook_secret": SECRET}
        # One call at a time of one image, as a lone synchronous request runs: batched or concurrent products round
        # differently.
        fields = {"api_keys": (TEST_KEY,), "data_dir": data_dir, "max_batch_images": 1, "workers": 1, **hooks}
        with deployed(serve_port, tiny_model_dirs["kandinsky"], image_dir, scaling, **fields) as app:
            yield Setup(app, data_dir, receiver)


def sdk(app: RayApp) -> OpenAI:
    # Retries: a request the proxy routed to a replica that has just been killed.
    return OpenAI(base_url=app.api_url, api_key=TEST_KEY, max_retries=5, webhook_secret=SECRET)


def body(seed: int) -> dict:
    return {"prompt": f"a blue star {seed}", "size": "64x64", "seed": seed, "response_format": "b64_json", **STEPS}


def start_batch(client: OpenAI, seeds: range) -> str:
    lines = [{"custom_id": f"c{s}", "method": "POST", "url": "/v1/images/generations", "body": body(s)} for s in seeds]
    content = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    file_id = client.files.create(file=("in.jsonl", content), purpose="batch").id
    return client.batches.create(input_file_id=file_id, endpoint="/v1/images/generations", completion_window="24h").id


def finished(client: OpenAI, batch_id: str):
    batch = wait_until(
        lambda: (
            (b := client.batches.retrieve(batch_id)).status not in ("validating", "in_progress", "finalizing") and b
        ),
        PATIENCE,
        f"batch {batch_id} to finish",
    )
    assert batch.status == "completed", batch
    return batch


def assert_answers_are_synchronous(setup: Setup, batch, seeds: range) -> None:
    client = sdk(setup.app)
    output = [json.loads(text) for text in client.files.content(batch.output_file_id).text.splitlines()]
    assert [line["custom_id"] for line in output] == [f"c{s}" for s in seeds]  # each line once, in order
    assert batch.error_file_id is None and batch.request_counts.completed == len(seeds)
    for seed, line in zip(seeds, output, strict=True):
        fields = body(seed)
        extra = {key: fields.pop(key) for key in ("seed", *STEPS)}
        synchronous = client.images.generate(**fields, extra_body=extra)
        in_batch = line["response"]["body"]["data"]
        assert [item["b64_json"] for item in in_batch] == [item.b64_json for item in synchronous.data], f"c{seed}"
        assert [item["seed"] for item in in_batch] == [item.seed for item in synchronous.data] == [seed]


def lease_holder(data_dir: Path) -> int | None:
    """The pid of the process holding the runner lease: the kernel's table of flocks, by the lock file's inode."""
    if not (data_dir / "easel.lock").exists():
        return None
    inode = os.stat(data_dir / "easel.lock").st_ino
    for entry in Path("/proc/locks").read_text().splitlines():
        fields = entry.split()
        if fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
            return int(fields[4])
    return None


def answered(data_dir: Path, batch_id: str) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "easel.sqlite3")) as db:
        query = "SELECT COUNT(*) FROM lines WHERE batch_id = ? AND answer IS NOT NULL"
        return db.execute(query, (batch_id,)).fetchone()[0]


def test_both_ingress_replicas_serve_the_store_and_one_runs_the_batch(setup: Setup, ray_dir: Path) -> None:
    client = sdk(setup.app)
    seeds = range(4)
    batch_id = start_batch(client, seeds)
    answering = set()
    for number in range(8):  # Serve spreads these over both ingress replicas; each answers from the store
        request_id = f"req_batchget{number:024d}"
        assert client.batches.retrieve(batch_id, extra_headers={"x-request-id": request_id}).id == batch_id
        answering.add(serving_replica(ray_dir, INGRESS_NAME, request_id))
    assert len(answering) == 2
    assert_answers_are_synchronous(setup, finished(client, batch_id), seeds)

    # One event per batch at the URL, however many replicas: wait for a second batch's, then count.
    second = start_batch(client, range(10, 11))
    finished(client, second)
    received = setup.receiver.wait_for(2, timeout=60)
    events = [client.webhooks.unwrap(item.body.decode(), item.headers) for item in received]
    assert all(isinstance(event, BatchCompletedWebhookEvent) for event in events)
    assert sorted(event.data.id for event in events) == sorted([batch_id, second])
    assert len({item.headers["webhook-id"] for item in received}) == 2
    assert len(setup.receiver.received) == 2


def test_when_the_runner_replica_dies_the_other_finishes_its_batch(setup: Setup) -> None:
    client = sdk(setup.app)
    seeds = range(100, 112)
    batch_id = start_batch(client, seeds)
    holder = wait_until(lambda: lease_holder(setup.data_dir), 60, "a replica to hold the runner lease")
    wait_until(lambda: answered(setup.data_dir, batch_id) >= 2, PATIENCE, "two answered lines")
    os.kill(holder, signal.SIGKILL)
    before = answered(setup.data_dir, batch_id)
    assert before < len(seeds), "the kill should land mid-batch"
    wait_until(lambda: lease_holder(setup.data_dir) not in (None, holder), 60, "another replica to take the lease")
    assert_answers_are_synchronous(setup, finished(client, batch_id), seeds)
