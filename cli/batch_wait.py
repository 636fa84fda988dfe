"""``--wait``: follow a batch until it ends, with its progress on stderr.

On a terminal the progress is a bar (answered lines of the total); anywhere
else (a log file, a pipe, CI) it is one plain line per change, with no control
characters, so a log reads as a history. Progress is ``request_counts``:
completed plus failed lines, of the total.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from tqdm import tqdm

from .batch_client import FINISHED, BatchClient

POLL_SECONDS = 0.5


def counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    """(completed, failed, total) of a batch object."""
    request_counts = batch.get("request_counts") or {}
    completed, failed, total = (int(request_counts.get(key) or 0) for key in ("completed", "failed", "total"))
    return completed, failed, total


def summary(batch: dict[str, Any]) -> str:
    """``batch_... in_progress: 7/10 answered (6 completed, 1 failed)``."""
    completed, failed, total = counts(batch)
    answered = f"{completed + failed}/{total} answered ({completed} completed, {failed} failed)"
    return f"{batch['id']} {batch['status']}: {answered}"


class Progress(Protocol):
    def show(self, batch: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class BarProgress:
    """A tqdm bar of answered lines, for a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar: tqdm | None = None

    def show(self, batch: dict[str, Any]) -> None:
        completed, failed, total = counts(batch)
        if self._bar is None:
            self._bar = tqdm(total=total, desc=batch["id"], unit="line", file=self._stream, leave=True)
        self._bar.set_postfix_str(f"{batch['status']}, {failed} failed", refresh=False)
        self._bar.update(completed + failed - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class LineProgress:
    """One plain line each time the status or the counts change, for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = ""

    def show(self, batch: dict[str, Any]) -> None:
        line = summary(batch)
        if line != self._last:
            print(line, file=self._stream, flush=True)
            self._last = line

    def close(self) -> None:
        pass


def progress_for(stream: TextIO) -> Progress:
    return BarProgress(stream) if stream.isatty() else LineProgress(stream)


def wait(client: BatchClient, batch: dict[str, Any], interval: float = POLL_SECONDS) -> dict[str, Any]:
    """Poll until the batch ends; returns its last object. Ctrl-C propagates (the caller says how to resume)."""
    progress = progress_for(sys.stderr)
    try:
        while True:
            progress.show(batch)
            if batch["status"] in FINISHED:
                return batch
            time.sleep(interval)
            batch = client.retrieve(batch["id"])
    finally:
        progress.close()
