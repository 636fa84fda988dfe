"""Memory per request: the server's resident memory while big GIF answers are made, and 10 s after.

Starts ``python -m server`` (the default model, easel-mini, with 2 prior and 2
decoder steps a request) as a child process and reads its memory from
``/proc/PID/status`` (Linux) every few milliseconds:

    python benchmarks/bench_request_memory.py                 # the defaults (--max-request-mb 1024)
    python benchmarks/bench_request_memory.py --unbounded     # also run the audit's request, with no bound

Arguments after ``--`` go to the server. The requests:

* the audit's: ``n=10, frame_count=16, size=2048x2048, output_format=gif,
  response_format=b64_json`` (refused by the default bound: its answer could
  take 3,672 MiB);
* the largest the default bound admits of that shape, ``n=2``, alone and
  three at once;
* with ``--unbounded`` (a second server with ``--max-request-mb 100000``):
  the audit's request itself, to show what it costs now that frames are
  encoded one at a time.

For each: the answers, the time, the peak resident memory above idle and
what is still held above idle 10 s after the last answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx

from benchmarks.bench_uploads import MIB, PeakSampler, child_server, resident_bytes

AUDIT = {"n": 10, "size": "2048x2048", "output_format": "gif", "frame_count": 16, "response_format": "b64_json"}
STEPS = {"prior_steps": 2, "decoder_steps": 2}
SETTLE_SECONDS = 10.0


def generate(url: str, fields: dict) -> tuple[int, int, str]:
    """Status, answer bytes, and the error message if any."""
    body = {"prompt": "a red circle in the top left corner", **STEPS, **fields}
    response = httpx.post(url + "/v1/images/generations", json=body, timeout=1800)
    message = response.json()["error"]["message"] if response.status_code >= 400 else ""
    return response.status_code, len(response.content), message


def run(name: str, pid: int, url: str, fields: dict, count: int = 1) -> None:
    time.sleep(2.0)
    idle = resident_bytes(pid)
    started = time.monotonic()
    with PeakSampler(pid, interval=0.01) as sampler, ThreadPoolExecutor(count) as pool:
        answers = [future.result() for future in [pool.submit(generate, url, fields) for _ in range(count)]]
    seconds = time.monotonic() - started
    time.sleep(SETTLE_SECONDS)
    after = resident_bytes(pid)
    statuses = [status for status, _, _ in answers]
    sizes = ", ".join(f"{size / MIB:.1f}" for _, size, _ in answers)
    print(
        f"{name}: {count} at once, answers {statuses} ({sizes} MiB), {seconds:.1f} s; idle {idle / MIB:.0f} MiB, "
        f"peak +{(sampler.peak - idle) / MIB:.0f} MiB, +{(after - idle) / MIB:.0f} MiB {SETTLE_SECONDS:g} s after",
        flush=True,
    )
    for _, _, message in answers[:1]:
        if message:
            print(f"  {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unbounded", action="store_true", help="also run the audit's request with no bound")
    parser.add_argument("server_args", nargs="*", help="after --: arguments for python -m server")
    args = parser.parse_args()
    largest = {**AUDIT, "n": 2}
    with child_server(args.server_args) as (server, url):
        generate(url, {"size": "256x256"})  # warm up: first-call setup is not a request's cost
        print(f"server {' '.join(args.server_args) or '(defaults)'} on {sys.platform}", flush=True)
        run("the audit's request", server.pid, url, AUDIT)
        run("largest admitted (n=2)", server.pid, url, largest)
        run("largest admitted (n=2)", server.pid, url, largest, count=3)
    if args.unbounded:
        with child_server([*args.server_args, "--max-request-mb", "100000"]) as (server, url):
            generate(url, {"size": "256x256"})
            print("server --max-request-mb 100000", flush=True)
            run("the audit's request, unbounded", server.pid, url, AUDIT)


if __name__ == "__main__":
    main()
