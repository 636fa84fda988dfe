"""Serving many users: throughput and latency of a real server under 1 to 16 clients, engine settings side by side.

    python benchmarks/bench_load.py [--seconds 20] [--clients 1,2,4,8,16] [--data-dir DIR]

For each engine setting (one worker and no batching, as before; batching; two
worker slots; both: the default) it starts ``python -m server`` on the shipped
easel-mini, then measures, in one run:

- closed loop: N clients each sending a request as soon as the last one was
  answered: images/s, p50 and p95 latency, and the ratio to 1 client;
- open loop: requests arriving at random (Poisson) at a fixed rate, so queueing
  shows in the latency rather than slowing the clients down;
- /health latency while 16 clients generate;
- how far a batched image is from the same seed's image made alone (the
  largest pixel difference), and that one worker without batching gives the
  same bytes twice.

Each server gets the Files and Batches data directory ``--data-dir`` (default:
a new empty one per server), never the one of ``$EASEL_HOME``, so what an earlier
run left there cannot change the figures unnoticed.

Requests are easel-mini's default: 256x256, quality medium, b64_json. The
figures go to stdout as they come and as a table at the end (docs/performance.md, "Serving many users").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {  # name (as --settings takes it) -> server flags
    "before": ["--workers", "1", "--max-batch-images", "1"],  # one call at a time, as before this work
    "batching": ["--workers", "1"],
    "workers": ["--workers", "2", "--max-batch-images", "1"],
    "default": [],  # batching and two worker slots
}
PROMPTS = ("a red circle in the center", "a blue square on the left", "a yellow star at the top", "a green heart")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@contextlib.contextmanager
def server(flags: list[str], data_dir: Path | None = None) -> Iterator[str]:
    """``python -m server`` with ``flags`` on a free port, once ready; its Files and Batches data directory is
    ``data_dir``, else a new empty one (a store left by an earlier run would start a runner on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "server", "--port", str(port), "--queue-size", "64", "--log-level", "error"]
    with contextlib.ExitStack() as cleanup:
        if "--data-dir" not in flags:
            data_dir = data_dir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="easel-bench-")))
            command += ["--data-dir", str(data_dir)]
        yield from _started([*command, *flags], f"http://127.0.0.1:{port}")


def _started(command: list[str], url: str) -> Iterator[str]:
    env = {**os.environ, "EASEL_HOME": str(REPO / "runs" / "bench-home")}  # the shipped registry's models only
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def body(seed: int) -> dict:
    return {
        "prompt": PROMPTS[seed % len(PROMPTS)],
        "model": "easel-mini",
        "size": "256x256",
        "response_format": "b64_json",
        "seed": seed,
    }


@dataclass
class Run:
    images: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.images / self.seconds


async def closed_loop(url: str, clients: int, seconds: float) -> Run:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    seeds = iter(range(10**6))

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = await http.post(url + "/v1/images/generations", json=body(next(seeds)))
            response.raise_for_status()
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return Run(len(latencies), time.monotonic() - started, latencies)


async def open_loop(url: str, rate: float, seconds: float) -> Run:
    latencies: list[float] = []
    rng = random.Random(7)

    async def one(http: httpx.AsyncClient, seed: int) -> None:
        started = time.monotonic()
        (await http.post(url + "/v1/images/generations", json=body(seed))).raise_for_status()
        latencies.append(time.monotonic() - started)

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=256)) as http:
        tasks, seed = [], 0
        while time.monotonic() - started < seconds:
            tasks.append(asyncio.ensure_future(one(http, seed)))
            seed += 1
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    return Run(len(latencies), time.monotonic() - started, latencies)


async def health_under_load(url: str, clients: int, seconds: float) -> list[float]:
    probes: list[float] = []
    load = asyncio.ensure_future(closed_loop(url, clients, seconds))
    async with httpx.AsyncClient(timeout=30) as http:
        while not load.done():
            started = time.monotonic()
            await http.get(url + "/health")
            probes.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
    await load
    return probes


def pixels(b64: str):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


async def batched_against_alone(url_alone: str, url_batched: str, count: int) -> int:
    """Largest pixel difference between each seed's image made alone and made among others in parallel."""
    async with httpx.AsyncClient(timeout=300) as http:
        alone = [(await http.post(url_alone + "/v1/images/generations", json=body(s))).json() for s in range(count)]
        together = await asyncio.gather(
            *(http.post(url_batched + "/v1/images/generations", json=body(s)) for s in range(count))
        )
    worst = 0
    for one, many in zip(alone, together, strict=True):
        difference = abs(pixels(one["data"][0]["b64_json"]) - pixels(many.json()["data"][0]["b64_json"]))
        worst = max(worst, int(difference.max()))
    return worst


def line(name: str, run: Run, base: float | None) -> str:
    ratio = f" ({run.rate / base:.2f}x)" if base else ""
    return (
        f"{name}: {run.rate:.2f} images/s{ratio}, p50 {statistics.median(run.latencies):.2f} s, "
        f"p95 {percentile(run.latencies, 0.95):.2f} s ({run.images} images)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--clients", default="1,2,4,8,16")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--data-dir", type=Path, help="the servers' Files/Batches directory (default: a new one each)")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    chosen = [name for name in SETTINGS if name in args.settings.split(",")]
    if not chosen:
        parser.error(f"--settings: none of {args.settings!r} is one of {', '.join(SETTINGS)}")
    table: dict[str, dict[int, Run]] = {}
    open_runs: dict[str, list[tuple[float, Run]]] = {}
    baseline_rate: float | None = None
    for name in chosen:
        print(f"\n== {name} {SETTINGS[name] or '(defaults)'}", flush=True)
        with server(SETTINGS[name], args.data_dir) as url:
            asyncio.run(closed_loop(url, 2, 3))  # warm-up
            table[name] = {}
            for clients in client_counts:
                run = asyncio.run(closed_loop(url, clients, args.seconds))
                table[name][clients] = run
                base = table[name][client_counts[0]].rate
                print("  " + line(f"{clients:>2} clients", run, base), flush=True)
            if baseline_rate is None:
                baseline_rate = table[name][client_counts[0]].rate
            open_runs[name] = []
            for load in (0.5, 0.8):
                rate = load * max(run.rate for run in table[name].values())
                run = asyncio.run(open_loop(url, rate, args.seconds))
                open_runs[name].append((rate, run))
                print(f"  open loop at {rate:.2f} requests/s: " + line("", run, None)[2:], flush=True)
            probes = asyncio.run(health_under_load(url, 16, args.seconds / 2))
            print(
                f"  /health under 16 clients: p50 {statistics.median(probes) * 1000:.1f} ms, "
                f"p99 {percentile(probes, 0.99) * 1000:.1f} ms ({len(probes)} probes)",
                flush=True,
            )
    if "before" in table and "default" in table:
        with (
            server(SETTINGS["before"], args.data_dir) as alone,
            server([], args.data_dir) as batched,
        ):
            worst = asyncio.run(batched_against_alone(alone, batched, 8))
            again = asyncio.run(batched_against_alone(alone, alone, 4))
        print(f"\nlargest pixel difference, batched against alone: {worst}; alone twice: {again}")
    print("\n| setting | " + " | ".join(f"{c} client{'s' * (c > 1)}" for c in client_counts) + " |")
    print("|---|" + "---|" * len(client_counts))
    for name, runs in table.items():
        base = baseline_rate or 1.0
        cells = [
            f"{r.rate:.2f}/s ({r.rate / base:.2f}x), p50 {statistics.median(r.latencies):.2f} s" for r in runs.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
