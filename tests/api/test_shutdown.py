"""Graceful shutdown of a real server process: SIGTERM finishes the work taken on, refuses new work, exits 0."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import LOOPBACK_TLS, assert_envelope

REPO = Path(__file__).resolve().parents[2]
SLOW = {"prior_steps": 2, "decoder_steps": 200}
# How long a busy machine may take to finish the jobs a shutdown waits for: the tests wait on the answers, never on
# the clock, so this only bounds a hang.
PATIENCE = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server_process(
    model_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    command = [sys.executable, "-m", "server", "--model", f"tiny=kandinsky22:{model_dir}", "--port", str(port), *args]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PATIENCE  # only ends a hung start: torch's import alone takes long when loaded
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
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


def generate(url: str, **fields) -> httpx.Response:
    body = {"prompt": "a red circle", "size": "256x256", "response_format": "b64_json", **SLOW, **fields}
    return httpx.post(url + "/v1/images/generations", json=body, timeout=PATIENCE)


def wait_running(url: str, count: int) -> None:
    deadline = time.monotonic() + PATIENCE
    while True:
        stats = httpx.get(url + "/health/ready", timeout=30, verify=LOOPBACK_TLS).json()["models"]["tiny"]
        if stats["running"] + stats["queued"] >= count:
            return
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)


def wait_shutting_down(url: str) -> None:
    """Until the server's readiness says it is shutting down (it goes on answering while it finishes)."""
    deadline = time.monotonic() + PATIENCE
    while httpx.get(url + "/health/ready", timeout=30, verify=LOOPBACK_TLS).json()["status"] != "shutting_down":
        assert time.monotonic() < deadline, "the server never began to shut down"
        time.sleep(0.05)


def test_sigterm_finishes_the_queued_and_running_jobs_and_exits_0(tiny_model_dirs):
    with (
        server_process(
            tiny_model_dirs["kandinsky"], "--shutdown-timeout", str(PATIENCE), "--max-batch-images", "1"
        ) as (
            process,
            url,
        ),
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        taken = [pool.submit(generate, url, seed=seed) for seed in range(3)]
        wait_running(url, 3)
        process.send_signal(signal.SIGTERM)
        # The signal reaches the server's loop asynchronously: a request sent at once may still race it in.
        wait_shutting_down(url)
        refused = generate(url, seed=9)  # still listening while it finishes: new work gets a clean answer
        assert_envelope(refused, 503, code="shutting_down")
        assert refused.headers["retry-after"] == "2"
        ready = httpx.get(url + "/health/ready", timeout=30)
        assert ready.status_code == 503 and ready.json()["status"] == "shutting_down"
        answers = [future.result() for future in taken]
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert all(len(answer.json()["data"]) == 1 for answer in answers)
        assert process.wait(timeout=PATIENCE) == 0


def test_what_the_timeout_leaves_is_cancelled_with_an_answer_and_a_stream_error(tiny_model_dirs):
    with (
        server_process(tiny_model_dirs["kandinsky"], "--shutdown-timeout", "0.5", "--max-batch-images", "1") as (
            process,
            url,
        ),
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        waiting = pool.submit(generate, url, seed=1, decoder_steps=200, prior_steps=200)
        streamed = pool.submit(
            lambda: httpx.post(
                url + "/v1/images/generations",
                json={"prompt": "a cat", "stream": True, **SLOW, "prior_steps": 200},
                timeout=120,
            )
        )
        wait_running(url, 2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stopped = assert_envelope(waiting.result(), 503, code="shutting_down")
        assert "shutting down" in stopped["message"]
        stream = streamed.result()
        assert stream.status_code == 200 and "event: error" in stream.text and "shutting_down" in stream.text
        assert process.wait(timeout=60) == 0
        assert time.monotonic() - started < 30


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_sighup_shuts_down_as_gracefully_as_sigterm_and_removes_the_image_directory(tiny_model_dirs, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary)}  # where the server makes its own url image directory
    with (
        server_process(tiny_model_dirs["kandinsky"], "--shutdown-timeout", str(PATIENCE), env=env) as (process, url),
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        assert [path.name for path in temporary.iterdir() if path.name.startswith("easel-images-")]
        taken = pool.submit(generate, url, seed=4, response_format="url")
        wait_running(url, 1)
        process.send_signal(signal.SIGHUP)
        answer = taken.result()
        assert answer.status_code == 200 and len(answer.json()["data"]) == 1
        assert process.wait(timeout=PATIENCE) == 0
    assert not [path for path in temporary.iterdir() if path.name.startswith("easel-images-")]


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")
def test_a_second_signal_cuts_the_wait_short(tiny_model_dirs):
    with (
        server_process(tiny_model_dirs["kandinsky"], "--shutdown-timeout", "120") as (process, url),
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        long = pool.submit(generate, url, seed=2, decoder_steps=200, prior_steps=200, n=4)
        wait_running(url, 1)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        started = time.monotonic()
        os.kill(process.pid, signal.SIGINT)
        assert_envelope(long.result(), 503, code="shutting_down")
        assert process.wait(timeout=60) == 0
        assert time.monotonic() - started < 30
