"""Batches against interactive clients, on a real server (``python -m server``) with the shipped easel-mini.

    python benchmarks/bench_batch.py [--count 200] [--size 256x256] [--clients 8] [--probes 20]

Prints, for the same ``--count`` generations:

- throughput: images/s as one batch (submit, poll until completed) against the same requests sent by
  ``--clients`` clients in a closed loop; the ratio (target >= 0.9);
- interactive latency: p50 of ``--probes`` single requests one after another on an idle server, and again while a
  batch runs; the ratio (target <= 1.25).

Each phase gets a fresh server with its own data directory. Figures: docs/batch.md, "Measured".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx
from openai import OpenAI

from benchmarks.bench_load import server as load_server

PROMPTS = ("a red circle in the center", "a blue square on the left", "a yellow star at the top", "a green heart")


def server() -> contextlib.AbstractContextManager[str]:
    """bench_load's server, with a data directory of its own (batches and files start empty)."""
    return load_server(["--data-dir", tempfile.mkdtemp(prefix="easel-bench-batch-")])


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
    assert batch.status == "completed" and batch.request_counts.completed == batch.request_counts.total, batch


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


def probe_p50(url: str, probes: int, size: str) -> float:
    seconds = []
    for i in range(probes):
        started = time.monotonic()
        httpx.post(url + "/v1/images/generations", json=body(10_000 + i, size), timeout=600).raise_for_status()
        seconds.append(time.monotonic() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args()
    with server() as url:
        httpx.post(url + "/v1/images/generations", json=body(0, args.size), timeout=600)  # warm up
        as_batch = batch_rate(url, args.count, args.size)
        print(f"batch of {args.count}: {as_batch:.2f} images/s", flush=True)
        by_clients = clients_rate(url, args.count, args.size, args.clients)
        print(f"{args.clients} clients, {args.count} requests: {by_clients:.2f} images/s", flush=True)
        idle = probe_p50(url, args.probes, args.size)
        print(f"interactive p50, idle: {idle * 1000:.0f} ms", flush=True)
        sdk, batch_id = submit_batch(url, max(args.count, args.probes * 4), args.size, offset=20_000)
        while sdk.batches.retrieve(batch_id).request_counts.completed == 0:  # type: ignore[union-attr]
            time.sleep(0.1)
        busy = probe_p50(url, args.probes, args.size)
        left = sdk.batches.retrieve(batch_id).request_counts
        print(f"interactive p50, batch running: {busy * 1000:.0f} ms (batch lines answered meanwhile: "
              f"{left.completed}/{left.total})", flush=True)  # type: ignore[union-attr]  # fmt: skip
        if left.completed < left.total:  # type: ignore[union-attr]
            sdk.batches.cancel(batch_id)
        else:  # the probes outlasted the batch: part of them ran on an idle server
            print("the batch finished before the probes did: raise --count for a fair busy figure", flush=True)
    print(f"\nthroughput ratio batch / {args.clients} clients: {as_batch / by_clients:.2f} (target >= 0.9)")
    print(f"latency ratio p50 busy / idle: {busy / idle:.2f} (target <= 1.25)")


if __name__ == "__main__":
    main()
