"""The send deadline: clients that stop reading their answer lose the connection, and its slot comes back.

The server here has room for 4 connections and a 2-second send deadline. A
client with a 4 KiB receive buffer asks for a 12 MB image and never reads: the
kernel's buffers take a few MB, the rest waits in the server's write buffer.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from server.settings.model_specs import ModelSpec

from ..conftest import TINY, LiveServer, OneJobAtATime, running_server, tiny_settings
from ..raw_http import request_head

SEND_TIMEOUT = 2.0
MAX_CONNECTIONS = 4
STEPS = {"prior_steps": 2, "decoder_steps": 8}  # enough steps for a partial image
BIG = 12 * 1024 * 1024  # more than loopback's kernel buffers (4 MiB send, the client's 4 KiB receive) hold


class HoldsAfterFirstPreview(OneJobAtATime):
    """A real backend that, after its first preview, runs on until its job is cancelled, as a slow model would."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.info = inner.info

    def count_tokens(self, prompt: str) -> int:
        return self.inner.count_tokens(prompt)

    def run(self, job, control):
        emit, cancelled = control.on_preview, control.should_cancel

        def emit_then_hold(index: int, images: list) -> None:
            emit(index, images)
            deadline = time.monotonic() + 120
            while not cancelled() and time.monotonic() < deadline:
                time.sleep(0.05)

        return self.inner.run(job, replace(control, on_preview=emit_then_hold))


@pytest.fixture(scope="module")
def send_limited(tiny_model_dirs: dict[str, Path]) -> Iterator[LiveServer]:
    from pipelines.loader import load_backend

    def loader(*args, **kwargs):
        return HoldsAfterFirstPreview(load_backend(*args, **kwargs))

    settings = tiny_settings(
        tiny_model_dirs,
        models=(ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"]),),
        aliases={},
        max_connections=MAX_CONNECTIONS,
        send_timeout_seconds=SEND_TIMEOUT,
    )
    with running_server(settings, loader=loader) as live:
        yield live


@pytest.fixture(scope="module")
def big_image(send_limited: LiveServer) -> str:
    """The path of a 12 MB image URL (random bytes: nothing compresses them on the way)."""
    name = send_limited.state.store.save(os.urandom(BIG), "png")
    return f"/v1/files/images/{name}"


def non_reader(url: str, request: bytes) -> socket.socket:
    """A connection with a 4 KiB receive buffer that sends ``request`` and reads nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sets the advertised window
    sock.connect((host, int(port)))
    sock.sendall(request)
    return sock


def health_status(url: str) -> int:
    return httpx.get(url + "/health", timeout=10).status_code


def wait_until(condition, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` holds; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, what
        time.sleep(0.1)
    return time.monotonic() - started


def read_all(sock: socket.socket) -> tuple[int, str | None]:
    """Bytes received until the connection ends, and how it ended (None: a clean close)."""
    sock.settimeout(30)
    received = 0
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except OSError as error:
        return received, type(error).__name__
    return received, None


def aborted_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "answer not taken by the client for 2 s" in r.getMessage()]


def test_clients_that_never_read_lose_their_connections_and_health_answers_again(
    send_limited: LiveServer, big_image: str, caplog
) -> None:
    request = request_head("GET", big_image)
    with caplog.at_level(logging.INFO, logger="easel"):
        stalled = [non_reader(send_limited.url, request) for _ in range(MAX_CONNECTIONS)]
        try:
            # Every slot is held: this is what a server without a send deadline answers for as long as they like.
            assert health_status(send_limited.url) == 503
            seconds = wait_until(lambda: health_status(send_limited.url) == 200, 30, "the slots never came back")
            # One free slot answers the probe; read only once every stalled answer was aborted, or reading would
            # let an answer whose deadline has not come yet go through.
            wait_until(lambda: len(aborted_records(caplog)) == MAX_CONNECTIONS, 30, "every stalled answer aborted")
            ends = [read_all(sock) for sock in stalled]
        finally:
            for sock in stalled:
                sock.close()
    assert seconds >= SEND_TIMEOUT * 0.5, seconds  # not at once: the deadline ended them
    for received, ended in ends:
        assert 0 < received < BIG and ended == "ConnectionResetError", (received, ended)  # part, then the abort
    assert len(aborted_records(caplog)) == MAX_CONNECTIONS
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["1 connection(s) refused with 503: 4 already open (--max-connections)"]  # the probe's 503


def test_a_slow_but_steady_reader_gets_the_whole_answer(send_limited: LiveServer, big_image: str) -> None:
    # 256 KiB, then a pause of 0.2 s: far slower than the server could send, far longer than the deadline.
    sock = non_reader(send_limited.url, request_head("GET", big_image, {"connection": "close"}))
    received, started = bytearray(), time.monotonic()
    with sock:
        sock.settimeout(30)
        while chunk := sock.recv(65536):
            received += chunk
            if len(received) % (256 * 1024) < len(chunk):  # crossed a 256 KiB mark
                time.sleep(0.2)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) == BIG
    assert time.monotonic() - started > SEND_TIMEOUT * 2  # it did outlast the deadline


def test_a_stream_its_client_stops_reading_is_cancelled_with_its_job(send_limited: LiveServer, caplog) -> None:
    before = send_limited.model_stats(TINY)
    # The backend holds after the first partial image until the job is cancelled: only the deadline can end this.
    fields = {"prompt": "a red circle", "size": "256x256", "stream": True, "partial_images": 2, **STEPS}
    body = json.dumps(fields).encode()
    head = request_head(
        "POST", "/v1/images/generations", {"content-type": "application/json", "content-length": str(len(body))}
    )
    with caplog.at_level(logging.INFO, logger="easel"):
        sock = non_reader(send_limited.url, head + body)
        with sock:
            stats = send_limited.wait_for(
                lambda ready: ready["models"][TINY]["cancelled"] > before["cancelled"], timeout=60
            )["models"][TINY]
            received, ended = read_all(sock)
    assert stats["completed"] == before["completed"]
    assert received > 0 and ended == "ConnectionResetError"  # part of the stream, then the abort
    wait_until(lambda: send_limited.model_stats(TINY)["running"] == 0, 30, "the job kept running")
    gone = [r.getMessage() for r in caplog.records if "POST /v1/images/generations 200" in r.getMessage()]
    assert len(gone) == 1
    assert gone[0].endswith(
        'error="the client went away while receiving its answer: none of it was taken for 2 seconds"'
    )


def test_the_default_deadline_is_30_seconds(tiny_model_dirs: dict[str, Path]) -> None:
    from server.app.runner import uvicorn_options

    assert uvicorn_options(tiny_settings(tiny_model_dirs))["http"].keywords["limits"].send_timeout == 30.0
