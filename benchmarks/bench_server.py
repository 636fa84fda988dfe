"""Server benchmark: generation latency, throughput under concurrency, /health latency under load.

Against a running server:

    python benchmarks/bench_server.py --base-url http://127.0.0.1:8000 --model easel-mini

Or self-contained, starting an in-process server on tiny random-weight models
(measures the server's overhead more than a model):

    python benchmarks/bench_server.py --tiny

Prints one line per figure. Steps and size are request fields, so the same
command measures a real model on a GPU (``--prior-steps 25 --decoder-steps 50``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def describe(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{name}: n={len(ms)} mean={statistics.fmean(ms):.1f} ms p50={percentile(ms, 0.5):.1f} ms "
        f"p95={percentile(ms, 0.95):.1f} ms max={max(ms):.1f} ms"
    )


@contextlib.contextmanager
def tiny_server(queue_size: int) -> Iterator[str]:
    """An in-process server on freshly built tiny models; yields its base URL."""
    from pipelines.tiny import build_tiny_kandinsky
    from server.settings.config import Settings
    from server.settings.model_specs import ModelSpec

    with tempfile.TemporaryDirectory(prefix="easel-bench-") as tmp:
        path = build_tiny_kandinsky(Path(tmp) / "tiny")
        settings = Settings(models=(ModelSpec("easel-tiny", "kandinsky22", path),), queue_size=queue_size)
        with in_process_server(settings) as url:
            yield url


@contextlib.contextmanager
def in_process_server(settings, loader=None) -> Iterator[str]:
    """A uvicorn server for ``settings`` on a free loopback port, once its models are ready; yields its base URL."""
    import uvicorn

    from server.app.application import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(settings, loader=loader)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health/ready").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the in-process server never became ready")
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


async def generate(http: httpx.AsyncClient, url: str, body: dict) -> tuple[float, int]:
    started = time.perf_counter()
    response = await http.post(url + "/v1/images/generations", json=body, timeout=600)
    return time.perf_counter() - started, response.status_code


async def warm_up(http: httpx.AsyncClient, url: str, body: dict, patience_s: float = 300.0) -> None:
    """One generation that succeeds: a server just started answers 503 while its model loads."""
    deadline = time.monotonic() + patience_s
    while True:
        _, status = await generate(http, url, body)
        if status == 200:
            return
        if status != 503 or time.monotonic() > deadline:
            raise SystemExit(f"warm-up generation answered HTTP {status}")
        await asyncio.sleep(1.0)


async def probe_health(http: httpx.AsyncClient, url: str, stop: asyncio.Event, timings: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await http.get(url + "/health")
        timings.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)


async def run(url: str, args: argparse.Namespace) -> None:
    body = {
        "prompt": "a lighthouse on a cliff at dusk",
        "size": args.size,
        "response_format": "b64_json",
        "prior_steps": args.prior_steps,
        "decoder_steps": args.decoder_steps,
        "n": args.n,
    }
    if args.model:
        body["model"] = args.model
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(headers=headers) as http:
        await warm_up(http, url, body)

        sequential = [(await generate(http, url, body))[0] for _ in range(args.requests)]
        print(
            describe(
                f"sequential generation ({args.size}, n={args.n}, steps {args.prior_steps}+{args.decoder_steps})",
                sequential,
            )
        )

        idle_health = []
        for _ in range(20):
            started = time.perf_counter()
            await http.get(url + "/health")
            idle_health.append(time.perf_counter() - started)
        print(describe("/health idle", idle_health))

        stop = asyncio.Event()
        health_timings: list[float] = []
        prober = asyncio.create_task(probe_health(http, url, stop, health_timings))
        started = time.perf_counter()
        results = await asyncio.gather(*(generate(http, url, body) for _ in range(args.requests * args.concurrency)))
        elapsed = time.perf_counter() - started
        stop.set()
        await prober
        ok = [seconds for seconds, status in results if status == 200]
        rejected = sum(1 for _, status in results if status == 429)
        print(describe(f"concurrent generation ({len(results)} requests at once)", ok))
        print(f"throughput: {len(ok) * args.n / elapsed:.2f} images/s over {elapsed:.1f} s; 429 answers: {rejected}")
        if health_timings:
            print(describe("/health during generation", health_timings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--tiny", action="store_true", help="start an in-process server on tiny models instead")
    parser.add_argument("--model", default=None)
    parser.add_argument("--api-key", default=os.environ.get("EASEL_API_KEY"))
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--prior-steps", type=int, default=4)
    parser.add_argument("--decoder-steps", type=int, default=8)
    parser.add_argument(
        "--requests", type=int, default=5, help="sequential requests; the concurrent phase sends this x concurrency"
    )
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    if bool(args.base_url) == bool(args.tiny):
        parser.error("give exactly one of --base-url and --tiny")
    if args.tiny:
        with tiny_server(queue_size=args.requests * args.concurrency) as url:
            asyncio.run(run(url, args))
    else:
        asyncio.run(run(args.base_url.rstrip("/"), args))


if __name__ == "__main__":
    main()
