"""The runner lease: which one of the servers sharing a data directory runs its batches and sends its webhooks.

Every server (or Ray Serve ingress replica) that shares a data directory
answers the Files and Batch endpoints from the one SQLite store; only the
holder of this lease runs batch lines, writes output files and delivers
webhook events. The lease is an exclusive ``flock`` on ``easel.lock``: the
kernel releases it when its process ends however it ends (``SIGKILL``, a
crash, a replica Serve replaced), so another server takes it over on its next
try, with no heartbeat to tune and no clock to trust. A process that hangs
without dying keeps the lease.

A thread of its own tries for the lease every :data:`TRY_SECONDS` once the
store exists and, while it holds it, watches the database for commits made by
any process (SQLite's ``data_version``) that change the unfinished batches
and their statuses (``watch_query``): that is how the holder hears of a batch
created or cancelled on another server. Its loop calls only the standard
library and SQLite: an idle server runs none of Easel's code for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
import threading
from pathlib import Path
from typing import IO

log = logging.getLogger("easel.batches")

LOCK_FILE = "easel.lock"
TRY_SECONDS = 0.5  # how soon a batch created elsewhere, or a lease left by a dead holder, is taken up


class RunnerLease:
    def __init__(self, directory: Path, database: str, watch_query: str) -> None:
        self.path = directory / LOCK_FILE
        self._database = directory / database
        self._watch_query = watch_query
        self._file: IO[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken = asyncio.Event()  # set once this process holds the lease
        self.changed = asyncio.Event()  # set when watch_query's answer has changed since the holder last looked

    @property
    def held(self) -> bool:
        return self._file is not None

    def start(self) -> None:
        """Start trying for the lease (on the event loop that awaits :attr:`taken`)."""
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._watch, args=(loop,), name="easel-runner-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (blocks up to one try); the lease, if held, stays held until :meth:`release`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        version = seen = None
        watching: sqlite3.Connection | None = None
        try:
            while not self._stop.is_set():
                if self._file is None and self._database.is_file():
                    file = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lease is held
                    try:
                        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:  # BlockingIOError: another process holds it
                        file.close()
                    else:
                        self._file = file
                        watching = sqlite3.connect(self._database, check_same_thread=False)
                        log.info("this server now runs the batches and webhooks of %s", self.path.parent)
                        loop.call_soon_threadsafe(self.taken.set)
                if watching is not None and version != (version := watching.execute("PRAGMA data_version").fetchone()):
                    answer = watching.execute(self._watch_query).fetchall()
                    if answer != seen:
                        seen = answer
                        loop.call_soon_threadsafe(self.changed.set)
                self._stop.wait(TRY_SECONDS)
        except (OSError, sqlite3.Error, RuntimeError):  # RuntimeError: the event loop has closed
            log.exception("the runner lease's watch stopped; batches here run after a restart")
        finally:
            if watching is not None:
                with contextlib.suppress(sqlite3.Error):
                    watching.close()
