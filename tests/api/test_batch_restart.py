"""A server SIGKILLed in the middle of a batch resumes it on restart: the lines answered before the kill are not
run again, the others are run once, and every line's body is the synchronous endpoint's for the same seed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from openai import OpenAI

from ..conftest import LOOPBACK_TLS
from .test_shutdown import free_port

REPO = Path(__file__).resolve().parents[2]
LINES = 40
STEPS = {"prior_steps": 2, "decoder_steps": 2}
PATIENCE = 300  # bounds a hang only: every wait below is on a condition


@contextlib.contextmanager
def server(model_dir: Path, data_dir: Path, log: Path, *extra: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``easel serve`` as a process of its own (to be killed), ready; ``extra``: more options."""
    port = free_port()
    command = [
        sys.executable, "-m", "server", "--model", f"tiny=kandinsky22:{model_dir}", "--port", str(port),
        "--data-dir", str(data_dir), "--max-batch-images", "1", "--workers", "1", *extra,
    ]  # fmt: skip
    with open(log, "a") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health/ready", timeout=2, verify=LOOPBACK_TLS).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def body(seed: int) -> dict:
    return {"prompt": f"a green square {seed}", "size": "64x64", "seed": seed, "response_format": "b64_json", **STEPS}


def answered_lines(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "easel.sqlite3")) as db:
        return db.execute("SELECT COUNT(*) FROM lines WHERE answer IS NOT NULL").fetchone()[0]


def images_made(url: str) -> float:
    metrics = httpx.get(url + "/metrics", timeout=10).text
    found = re.search(r'^easel_images_generated_total\{model="tiny"\} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_batch_killed_mid_way_resumes_and_answers_every_line_once(tiny_model_dirs, tmp_path: Path):
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/generations", "body": body(i)} for i in range(LINES)
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with server(tiny_model_dirs["kandinsky"], data_dir, log) as (process, url):
        sdk = OpenAI(base_url=url + "/v1", api_key="any", max_retries=0)
        file_id = sdk.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch").id
        batch_id = sdk.batches.create(
            input_file_id=file_id, endpoint="/v1/images/generations", completion_window="24h"
        ).id
        deadline = time.monotonic() + PATIENCE
        while sdk.batches.retrieve(batch_id).request_counts.completed < 3:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    before = answered_lines(data_dir)
    assert 3 <= before < LINES, f"the kill should land mid-batch; {before} lines were answered"

    with server(tiny_model_dirs["kandinsky"], data_dir, log) as (_, url):
        sdk = OpenAI(base_url=url + "/v1", api_key="any", max_retries=0)
        deadline = time.monotonic() + PATIENCE
        while (batch := sdk.batches.retrieve(batch_id)).status != "completed":
            assert batch.status in ("in_progress", "finalizing") and time.monotonic() < deadline, batch.status
            time.sleep(0.1)
        assert f"batch {batch_id}: {before} of {LINES} lines answered, running the rest" in log.read_text()
        assert images_made(url) == LINES - before  # the lines answered before the kill did not run again
        assert (batch.request_counts.total, batch.request_counts.completed) == (LINES, LINES)  # type: ignore[union-attr]
        assert batch.error_file_id is None
        output = [json.loads(text) for text in sdk.files.content(batch.output_file_id).text.splitlines()]  # type: ignore[arg-type]
        assert [line["custom_id"] for line in output] == [f"c{i}" for i in range(LINES)]  # each once, in order
        for i, line in enumerate(output):
            synchronous = httpx.post(url + "/v1/images/generations", json=body(i), timeout=PATIENCE).json()
            assert line["response"]["body"]["data"] == synchronous["data"], f"line c{i}"
