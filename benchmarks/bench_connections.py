"""Slow-client benchmark: 300 connections trickling their headers or bodies a byte a second.

Starts ``python -m server`` (the default model) as a child process:

    python benchmarks/bench_connections.py                  # the defaults
    python benchmarks/bench_connections.py -- --header-timeout-seconds 5 --max-connections 64

Arguments after ``--`` go to the server. Half the connections trickle a request's
headers, half send complete headers with ``Content-Length: 1000`` and trickle
the body. Prints what each group was answered and when its connections ended,
/health's answers and latency while they are open (a probe needs a free
connection slot too), and the server's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx

from benchmarks.bench_uploads import child_server, resident_bytes

TRICKLERS = 300
RUN_SECONDS = 90.0


async def trickle(port: int, first: bytes, rest: bytes) -> tuple[int | None, float]:
    """Send ``first``, then ``rest`` a byte a second; the status answered (None: none) and seconds until closed."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(first)

    async def send_slowly() -> None:
        for byte in rest:
            await asyncio.sleep(1.0)
            writer.write(bytes([byte]))

    sender = asyncio.ensure_future(send_slowly())
    try:
        answer = await asyncio.wait_for(reader.read(), RUN_SECONDS)
    except (asyncio.TimeoutError, ConnectionError):
        answer = b""
    sender.cancel()
    writer.close()
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return status, time.monotonic() - started


async def probe_health(url: str, until: float) -> list[tuple[int, float]]:
    probes = []
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                status = (await client.get(url + "/health", headers={"connection": "close"})).status_code
            except httpx.TransportError:
                status = 0
            probes.append((status, time.monotonic() - started))
            await asyncio.sleep(0.5)
    return probes


def resident_mib(pid: int) -> int:
    return resident_bytes(pid) // (1024 * 1024)


async def flood(port: int, pid: int) -> None:
    url = f"http://127.0.0.1:{port}"
    head_only = b"POST /v1/images/generations HTTP/1.1\r\nhost: x\r\n"
    body_head = head_only + b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    idle = resident_mib(pid)
    # Alternating, so that under a connection cap both kinds hold slots.
    tasks = [
        trickle(port, head_only, b"x-slow: " + b"a" * 200) if i % 2 == 0 else trickle(port, body_head, b"{" * 1000)
        for i in range(TRICKLERS)
    ]
    health = asyncio.ensure_future(probe_health(url, time.monotonic() + 75))
    await asyncio.sleep(0)
    results = await asyncio.gather(*tasks)
    busy = resident_mib(pid)
    probes = await health
    halves = (("trickled headers", results[0::2]), ("trickled bodies", results[1::2]))
    for name, group in halves:
        answers = Counter("none" if status is None else status for status, _ in group)
        ends = [seconds for _, seconds in group]
        print(
            f"{name}: {len(group)} connections, answers {dict(answers)}; closed after median "
            f"{statistics.median(ends):.1f} s, max {max(ends):.1f} s"
        )
    codes = Counter(status for status, _ in probes)
    times = sorted(seconds * 1000 for _, seconds in probes)
    print(
        f"/health during the flood: {len(probes)} probes, answers {dict(codes)}, "
        f"p50 {times[len(times) // 2]:.0f} ms, max {times[-1]:.0f} ms"
    )
    print(f"server resident memory: {idle} MiB before, {busy} MiB after the flood")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server_args", nargs="*", help="after --: arguments for python -m server")
    args = parser.parse_args()
    with child_server(args.server_args) as (server, url):
        print(f"server {' '.join(args.server_args) or '(defaults)'}; {TRICKLERS} trickling connections")
        asyncio.run(flood(int(url.rsplit(":", 1)[1]), server.pid))


if __name__ == "__main__":
    main()
