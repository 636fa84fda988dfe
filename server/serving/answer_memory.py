"""Giving memory back to the system after a large answer (the bound before it: ``check_answer_memory`` in
:mod:`server.protocol.images`).

Answers are encoded in worker threads, and glibc keeps what a thread frees in that thread's arena for reuse, so
after a few large answers the process could hold hundreds of MiB it no longer uses. ``malloc_trim(0)`` returns
the free pages of every arena. It runs a moment after such an answer, when the answer's body has been freed too,
and at most once per moment however many answers end. Without glibc (macOS, musl) there is nothing to call.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

TRIM_AFTER_BYTES = 64 * 1024 * 1024  # answers estimated below this are left to the allocator
TRIM_DELAY_SECONDS = 1.0  # after the answer has been handed over: its body is freed by then


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the process already has loaded
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class MemoryReturn:
    """Schedules ``malloc_trim`` after large answers (call :meth:`after_answer` on the event loop)."""

    def __init__(self) -> None:
        self.trim = _malloc_trim()
        self.scheduled = False

    async def after_answer(self) -> None:
        if self.trim is None or self.scheduled:
            return
        self.scheduled = True
        loop = asyncio.get_running_loop()
        loop.call_later(TRIM_DELAY_SECONDS, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.scheduled = False
        assert self.trim is not None
        loop.run_in_executor(None, self.trim, 0)
