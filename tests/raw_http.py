"""Raw HTTP/1.1 over a socket, for what no well-behaved client sends: broken request lines, huge headers,
bodies that trickle or stop short. Used by the connection tests, the hostile-input suite and the benchmarks."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    status: int | None  # None: the connection closed (or reset) without an answer
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0  # from the first byte sent to the connection's end
    error: str | None = None  # how the read ended, if not by a clean close

    def json(self) -> dict:
        return json.loads(self.body)


def connect(url: str, timeout: float = 30.0) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def read_answer(sock: socket.socket, started: float) -> RawAnswer:
    """Everything the server sends until it closes the connection, parsed as one HTTP answer."""
    received, error = b"", None
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError as exc:
        error = type(exc).__name__
    seconds = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return RawAnswer(None, seconds=seconds, error=error)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return RawAnswer(int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body, seconds, error)


def exchange(url: str, data: bytes, *, trickle: bytes = b"", every: float = 0.25, timeout: float = 30.0) -> RawAnswer:
    """Send ``data``, then ``trickle`` a byte every ``every`` seconds until the server answers or closes."""
    sock = connect(url, timeout)
    started = time.monotonic()
    done = threading.Event()

    def trickle_bytes() -> None:
        for byte in trickle:
            if done.wait(every):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    with sock:
        sock.sendall(data)
        sender = threading.Thread(target=trickle_bytes, daemon=True)
        sender.start()
        answer = read_answer(sock, started)
        done.set()
        sender.join()
    return answer


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
