"""Batches against interactive clients, on a real server (``python -m server``) with the shipped easel-mini.

    python benchmarks/bench_batch.py [--count 200] [--size 256x256] [--clients 8] [--probes 20]

Prints, for the same ``--count`` generations:

- throughput: images/s as one batch (submit, poll until completed) against the same requests sent by
  ``--clients`` clients in a closed loop; the ratio (target >= 0.9);
- interactive latency: p50 of ``--probes`` single requests one after another on an idle server (before and after
  the busy phase), and of as many while a batch runs: probes go one after another from the moment the batch is in
  progress, and only those that started and ended while it still had unanswered lines count (the script says how
  many); the ratio (target <= 1.25).

Every phase runs on one server, one after the other, with the load average printed beside each figure (a shared
machine's noise shows there). Figures: docs/batch.md, "Measured".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx
from openai import OpenAI

from benchmarks.bench_load import server as load_server

PROMPTS = ("a red circle in the center", "a blue square on the left", "a yellow star at the top", "a green heart")


@contextlib.contextmanager
def server() -> Iterator[str]:
    """bench_load's server, with a data directory of its own (batches and files start empty), removed after."""
    with (
        tempfile.TemporaryDirectory(prefix="easel-bench-batch-") as data_dir,
        load_server(["--data-dir", data_dir]) as url,
    ):
        yield url


def body(i: int, size: str) -> dict:
    return {"prompt": PROMPTS[i % len(PROMPTS)], "size": size, "seed": i, "response_format": "b64_json"}


def submit_batch(url: str, count: int, size: str, offset: int = 0) -> tuple[OpenAI, str]:
    sdk = OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/images/generations", "body": body(offset + i, size)}
             for i in range(count)]  # fmt: skip
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file_id = sdk.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch").id
    batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/images/generations", completion_window="24h")
    return sdk, batch.id


def wait_batch(sdk: OpenAI, batch_id: str) -> None:
    while (batch := sdk.batches.retrieve(batch_id)).status not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.2)
    counts = batch.request_counts
    assert batch.status == "completed" and counts is not None and counts.completed == counts.total, batch


def batch_rate(url: str, count: int, size: str) -> float:
    started = time.monotonic()
    sdk, batch_id = submit_batch(url, count, size)
    wait_batch(sdk, batch_id)
    return count / (time.monotonic() - started)


def clients_rate(url: str, count: int, size: str, clients: int) -> float:
    def one(i: int) -> None:
        response = httpx.post(url + "/v1/images/generations", json=body(i, size), timeout=600)
        response.raise_for_status()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(count)))
    return count / (time.monotonic() - started)


def probe_seconds(url: str, index: int, size: str) -> float:
    started = time.monotonic()
    httpx.post(url + "/v1/images/generations", json=body(10_000 + index, size), timeout=600).raise_for_status()
    return time.monotonic() - started


def idle_probes(url: str, probes: int, size: str, first: int) -> list[float]:
    return [probe_seconds(url, first + i, size) for i in range(probes)]


def running(sdk: OpenAI, batch_id: str) -> bool:
    """The batch is in progress with lines still unanswered (status only moves forward, so a probe that starts and
    ends with this true ran entirely while the batch did)."""
    batch = sdk.batches.retrieve(batch_id)
    counts = batch.request_counts
    return batch.status == "in_progress" and counts is not None and counts.completed + counts.failed < counts.total


def busy_probes(url: str, probes: int, size: str, count: int) -> tuple[list[float], int, str]:
    """Probes one after another from the moment a batch of ``count`` is in progress; only those that started and
    ended while it ran count. Returns their seconds, how many probes were dropped, and the batch's progress."""
    sdk, batch_id = submit_batch(url, count, size, offset=20_000)
    while sdk.batches.retrieve(batch_id).status == "validating":
        time.sleep(0.05)
    fair: list[float] = []
    dropped = 0
    while len(fair) < probes and running(sdk, batch_id):
        seconds = probe_seconds(url, 1_000 + len(fair) + dropped, size)
        if running(sdk, batch_id):
            fair.append(seconds)
        else:
            dropped += 1  # the batch ended during this probe: part of it ran on an idle server
    counts = sdk.batches.retrieve(batch_id).request_counts
    progress = f"{counts.completed + counts.failed}/{counts.total}" if counts else "?"
    if running(sdk, batch_id):
        sdk.batches.cancel(batch_id)
        while sdk.batches.retrieve(batch_id).status != "cancelled":  # the next phase starts on an idle server
            time.sleep(0.1)
    return fair, dropped, progress


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args()
    with server() as url:
        httpx.post(url + "/v1/images/generations", json=body(0, args.size), timeout=600)  # warm up
        print(f"start: {load()}", flush=True)
        as_batch = batch_rate(url, args.count, args.size)
        print(f"batch of {args.count}: {as_batch:.2f} images/s ({load()})", flush=True)
        by_clients = clients_rate(url, args.count, args.size, args.clients)
        print(f"{args.clients} clients, {args.count} requests: {by_clients:.2f} images/s ({load()})", flush=True)
        idle_before = idle_probes(url, args.probes, args.size, first=0)
        print(f"interactive p50, idle: {ms(statistics.median(idle_before))} ({load()})", flush=True)
        busy, dropped, progress = busy_probes(url, args.probes, args.size, max(args.count, args.probes * 4))
        print(f"interactive p50, batch running: {ms(statistics.median(busy)) if busy else '-'} over {len(busy)} "
              f"probes that started and ended while the batch ran ({dropped} dropped; batch lines answered: "
              f"{progress}; {load()})", flush=True)  # fmt: skip
        idle_after = idle_probes(url, args.probes, args.size, first=args.probes)
        print(f"interactive p50, idle again: {ms(statistics.median(idle_after))} ({load()})", flush=True)
    idle = statistics.median(idle_before + idle_after)
    print(f"\nthroughput ratio batch / {args.clients} clients: {as_batch / by_clients:.2f} (target >= 0.9)")
    if len(busy) < args.probes:
        print(f"only {len(busy)} of {args.probes} probes ran while the batch did: raise --count for a fuller figure")
    if busy:
        print(f"latency p50 busy / idle (idle: both idle runs, {ms(idle)}): "
              f"{statistics.median(busy) / idle:.2f} (target <= 1.25)")  # fmt: skip


if __name__ == "__main__":
    main()
