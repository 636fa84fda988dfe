"""Webhook receivers on loopback: one records what it is sent and answers as told, one never answers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn

Answer = int | tuple[int, dict[str, str]]  # a status, or a status and headers (Retry-After, Location)


@dataclass(frozen=True)
class Received:
    path: str
    body: bytes
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival


@dataclass
class Recorder:
    """Answers the first requests with ``answers`` in order, then 200; records every request."""

    answers: deque[Answer] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    changed: threading.Condition = field(default_factory=threading.Condition)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        with self.changed:
            self.received.append(Received(scope["path"], body, headers, time.monotonic()))
            answer = self.answers.popleft() if self.answers else 200
            self.changed.notify_all()
        status, extra = answer if isinstance(answer, tuple) else (answer, {})
        raw_headers = [(b"content-length", b"0"), *((k.encode(), v.encode()) for k, v in extra.items())]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": b""})

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        """The first ``count`` requests, once they have arrived."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(f"{len(self.received)} of {count} webhook requests arrived")
            return list(self.received)


@contextlib.contextmanager
def recording(*answers: Answer) -> Iterator[Recorder]:
    """A :class:`Recorder` served by uvicorn on a free loopback port, at ``recorder.url`` (path /hooks)."""
    recorder = Recorder(deque(answers))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(recorder, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-webhook-receiver", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("webhook receiver did not start")
            time.sleep(0.02)
        recorder.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks"
        yield recorder
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class Silent:
    """Accepts connections and never reads from or answers them."""

    url: str
    connections: list[socket.socket] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.connections) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.connections)} of {count} connections arrived")
            time.sleep(0.02)


@contextlib.contextmanager
def silent() -> Iterator[Silent]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.05)
    receiver = Silent(f"http://127.0.0.1:{listener.getsockname()[1]}/hooks")
    stop = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                receiver.connections.append(listener.accept()[0])

    thread = threading.Thread(target=hold, name="test-silent-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        stop.set()
        thread.join(timeout=10)
        for connection in [*receiver.connections, listener]:
            connection.close()
