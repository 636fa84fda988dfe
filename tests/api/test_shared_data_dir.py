"""Two servers on one data directory: either answers the Files and Batch APIs from the one store, the holder of
the runner lease runs the batch, and a cancel sent to the other stops it."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from openai import OpenAI

from ..conftest import running_server, tiny_settings

LINES = 40
PATIENCE = 300  # bounds a hang only: every wait is on a condition


def wait_until(condition, what: str):
    deadline = time.monotonic() + PATIENCE
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_a_batch_created_on_one_server_is_run_by_the_lease_holder_and_cancelled_through_the_other(
    tiny_model_dirs, tmp_path: Path
):
    settings = tiny_settings(tiny_model_dirs, data_dir=tmp_path / "data", max_batch_images=1, workers=1)
    with running_server(settings) as first, running_server(settings) as second:
        clients = [OpenAI(base_url=live.api_url, api_key="any", max_retries=0) for live in (first, second)]
        body = {"prompt": "a red circle", "size": "64x64", "prior_steps": 2, "decoder_steps": 4}
        lines = [
            {"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/generations", "body": body}
            for i in range(LINES)
        ]
        content = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
        uploaded = clients[0].files.create(file=("in.jsonl", content), purpose="batch")
        assert clients[1].files.retrieve(uploaded.id) == uploaded  # one store behind both
        batch = clients[1].batches.create(
            input_file_id=uploaded.id, endpoint="/v1/images/generations", completion_window="24h"
        )
        holders = wait_until(
            lambda: (
                [live.state.batch_api.lease.held for live in (first, second)].count(True) == 1
                and [live.state.batch_api.lease.held for live in (first, second)]
            ),
            "one server to hold the runner lease",
        )
        other = clients[holders.index(False)]
        wait_until(lambda: other.batches.retrieve(batch.id).request_counts.completed >= 1, "a line answered")
        assert other.batches.cancel(batch.id).status == "cancelling"
        ended = wait_until(
            lambda: (found := other.batches.retrieve(batch.id)).status == "cancelled" and found, "the cancel"
        )
        assert 1 <= ended.request_counts.completed < LINES  # the holder stopped taking lines
        assert clients[holders.index(True)].batches.retrieve(batch.id) == ended
