"""Upload benchmark: the server's memory while 8 worst-case uploads arrive at once, and after.

Starts ``python -m server`` (the default model, easel-mini) as a child process, so
its memory can be read from ``/proc/PID/status`` (Linux) every few milliseconds:

    python benchmarks/bench_uploads.py                      # the defaults
    python benchmarks/bench_uploads.py -- --max-concurrent-decodes 4 --max-decode-mb 64

Arguments after ``--`` go to the server. Two bursts of 8 concurrent requests:

* the audit's files (issue 18): 4 variations of a 633-byte JPEG whose header
  claims 6000x6000 and 4 of a 115 KB 39.7-megapixel PNG of zeros;
* the largest uploads the defaults accept: 4 variations of a 3500x3500 PNG
  of zeros (46.7 MiB decoded) and 4 edits whose image and mask are
  3500x3500 RGBA PNGs (two decodes each), all answered at 256x256.

For each: the answers, the peak resident memory above idle during the burst,
and the memory still held 3 s after it. Targets: peak <= 150 MiB above idle,
memory returned afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx

from tests.hostile_files import lying_jpeg, zeros_png

MIB = 1024 * 1024
STEPS = {"decoder_steps": "2"}


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakSampler:
    """The highest resident memory of ``pid`` seen while it runs, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.003) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes(self.pid))
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def variation(url: str, image: bytes) -> int:
    files = {"image": ("in.png", image, "image/png")}
    data = {"size": "256x256", "response_format": "b64_json", **STEPS}
    return httpx.post(url + "/v1/images/variations", files=files, data=data, timeout=300).status_code


def edit(url: str, image: bytes, mask: bytes) -> int:
    files = {"image": ("in.png", image, "image/png"), "mask": ("mask.png", mask, "image/png")}
    data = {"prompt": "a red circle", "size": "256x256", "response_format": "b64_json", "prior_steps": "2", **STEPS}
    return httpx.post(url + "/v1/images/edits", files=files, data=data, timeout=300).status_code


def burst(name: str, pid: int, url: str, calls: list, idle: int) -> None:
    started = time.monotonic()
    with PeakSampler(pid) as sampler, ThreadPoolExecutor(len(calls)) as pool:
        statuses = sorted(future.result() for future in [pool.submit(*call) for call in calls])
    seconds = time.monotonic() - started
    time.sleep(3.0)
    after = resident_bytes(pid)
    print(
        f"{name}: {len(calls)} at once, answers {statuses}, {seconds:.1f} s; "
        f"peak {(sampler.peak - idle) / MIB:.0f} MiB above idle, {(after - idle) / MIB:.0f} MiB above idle 3 s later"
    )


@contextlib.contextmanager
def child_server(server_args: list[str]) -> Iterator[tuple[subprocess.Popen, str]]:
    """``python -m server`` with ``server_args`` on a free port, ready; yields the process and its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "server", "--port", str(port), "--log-level", "warning", *server_args]
    server = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not _ready(url):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.5)
        yield server, url
    finally:
        server.terminate()
        server.wait(30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server_args", nargs="*", help="after --: arguments for python -m server")
    args = parser.parse_args()
    with child_server(args.server_args) as (server, url):
        variation(url, zeros_png(256, 256))  # warm up: first-call setup is not an upload's cost
        audit = [lying_jpeg(), zeros_png()]
        largest = zeros_png(3500, 3500)
        largest_rgba = zeros_png(3500, 3500, "RGBA")
        time.sleep(2.0)
        idle = resident_bytes(server.pid)
        print(f"server {' '.join(args.server_args) or '(defaults)'}: idle {idle / MIB:.0f} MiB resident")
        burst("audit files", server.pid, url, [(variation, url, audit[i % 2]) for i in range(8)], idle)
        calls = [(variation, url, largest)] * 4 + [(edit, url, largest_rgba, largest_rgba)] * 4
        burst("largest accepted", server.pid, url, calls, idle)
        status = Path(f"/proc/{server.pid}/status").read_text()
        high_water = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        print(f"server high-water mark over the whole run: {int(high_water.split()[1]) // 1024} MiB")


if __name__ == "__main__":
    main()
