"""An answer's memory: bounded before the job is queued (``--max-request-mb``), given back after it is sent.

The bound takes incompressible pixels, so it is an upper bound on what encoding and sending an answer holds. Giving
back: answers are encoded in worker threads, and glibc keeps what a thread frees in that thread's arena for reuse, so
after a few large answers the process could hold hundreds of MiB it no longer uses. ``malloc_trim(0)`` returns
the free pages of every arena. It runs a moment after such an answer, when the answer's body has been freed too,
and at most once per moment however many answers end. Without glibc (macOS, musl) there is nothing to call.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
from collections.abc import Callable

from ..http.errors import invalid

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


# -- Memory per request (--max-request-mb; docs/limits.md). Files are fitted and encoded one at a time (one GIF frame
# at a time) and held until the answer is sent. The estimate takes incompressible pixels: it bounds an answer.
FILE_BYTES_PER_PIXEL = {"gif": 1.5}  # per frame: palette indices, which LZW may grow to 12-bit codes; others: RGB, 3
INLINE_COPIES = 1 + 2 * 4 / 3  # b64_json and streams: the file, its base64 text, and that text in the JSON body
MiB = 1024 * 1024


def answer_peak_bytes(n: int, frames: int, pixels: int, output_format: str, inline: bool) -> int:
    """The files held until sent, plus one frame at work (6 bytes a pixel: it and its resized copy) and, for a GIF,
    every frame so far as a palette image and its difference from the last (2 bytes a pixel each)."""
    per_file = FILE_BYTES_PER_PIXEL.get(output_format, 3.0) * pixels * frames
    working = 6.0 * pixels + (2.0 * pixels * frames if output_format == "gif" else 0.0)
    return math.ceil(n * per_file * (INLINE_COPIES if inline else 1.0) + working)


def check_answer_memory(n: int, frames: int, width: int, height: int, fmt: str, inline: bool, *, limit: int) -> None:
    """A 400 naming what to lower, and how far, when the answer could take more than ``limit`` bytes."""
    peak = answer_peak_bytes(n, frames, width * height, fmt, inline)
    if peak <= limit:
        return
    fits_n = max(
        (k for k in range(1, n) if answer_peak_bytes(k, frames, width * height, fmt, inline) <= limit), default=0
    )
    fits_frames = max(
        (k for k in range(2, frames) if answer_peak_bytes(1, k, width * height, fmt, inline) <= limit), default=0
    )
    if fits_n:
        param, hint = "n", f"At most n={fits_n} fits at this size and format."
    elif fits_frames:
        param, hint = "frame_count", f"At most frame_count={fits_frames} fits with n=1 at this size."
    else:
        param, hint = "size", "Ask for a smaller size" + (" or response_format 'url'." if inline else ".")
    message = (
        f"This request's answer could take up to {math.ceil(peak / MiB):,} MiB of memory to encode and send ({n} x "
        f"{frames} frame(s) at {width}x{height}, {fmt}{', base64 in JSON' if inline else ''}); this server allows "
        f"{math.ceil(limit / MiB):,} MiB per request (--max-request-mb). {hint}"
    )
    raise invalid(param, message, code="answer_too_large")
