"""The send deadline: a connection whose answer stops reaching its client is aborted, and its slot freed.

asyncio keeps what the kernel would not take yet in the transport's write buffer; a client that stops reading
leaves bytes there for good, uvicorn's send waits on a paused transport for good, and a close waits for the
buffer to empty, also for good. Only progress counts, not the total time, so a slow but steady download of a big
image is never cut: the watch looks at the unsent bytes a few times per deadline, and any fewer (or none) is
progress. Nothing moving for ``timeout`` seconds, with bytes still waiting, calls ``on_stall``.

Unsent bytes are the transport's buffer plus, on Linux, the socket's kernel send queue (``SIOCOUTQ``): the kernel
buffers megabytes and only wakes the writer once a good part of that is free, so a slow reader's progress can
take minutes to show in the transport's buffer alone. Elsewhere the transport's buffer is all there is to watch.
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
import time
from collections.abc import Callable

# Linux's SIOCOUTQ: the bytes in a socket's send queue that its peer has not acknowledged.
KERNEL_QUEUE_IOCTL: int | None = getattr(termios, "TIOCOUTQ", None)

CHECKS_PER_DEADLINE = 4  # the deadline is kept to within a quarter of itself
LONGEST_CHECK_INTERVAL = 5.0  # seconds; a long deadline is still checked this often


class SendWatch:
    """Calls ``on_stall`` once when ``transport`` has held unsent bytes without sending any for ``timeout`` s."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.WriteTransport,
        timeout: float,
        on_stall: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.transport = transport
        self.timeout = timeout
        self.on_stall = on_stall
        self.interval = min(timeout / CHECKS_PER_DEADLINE, LONGEST_CHECK_INTERVAL)
        self.pending = 0  # bytes in the write buffer at the last check
        self.moved_at = time.monotonic()  # the last check that saw progress
        self.handle: asyncio.TimerHandle | None = loop.call_later(self.interval, self._check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _check(self) -> None:
        self.handle = None
        pending = unsent_bytes(self.transport)
        now = time.monotonic()
        if pending == 0 or pending < self.pending:
            self.moved_at = now
        self.pending = pending
        if pending and now - self.moved_at >= self.timeout:
            self.on_stall()
            return
        self.handle = self.loop.call_later(self.interval, self._check)


def unsent_bytes(transport: asyncio.WriteTransport) -> int:
    """Bytes written to ``transport`` that its peer has not yet acknowledged (as far as this platform can tell)."""
    pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if KERNEL_QUEUE_IOCTL is None or sock is None:
        return pending
    try:
        queued = fcntl.ioctl(sock.fileno(), KERNEL_QUEUE_IOCTL, b"\0" * 4)
    except OSError:  # closed meanwhile, or a socket kind that does not say
        return pending
    return pending + int(struct.unpack("i", queued)[0])
