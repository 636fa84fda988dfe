"""The runner lease: which one of the servers sharing a data directory runs its batches and sends its webhooks.

Every server (or Ray Serve ingress replica) that shares a data directory
answers the Files and Batch endpoints from the one SQLite store; only the
holder of this lease runs batch lines, writes output files and delivers
webhook events. The lease is an exclusive ``flock`` on ``easel.lock``: the
kernel releases it when its process ends however it ends (``SIGKILL``, a
crash, a replica Serve replaced), so another server takes it over on its next
try. A process that hangs without dying would keep it: so the holder's thread
also watches the runner's :class:`~.progress.Progress`, and when it has been
stuck for ``--runner-stall-seconds`` gives the lease up and does not try for
it again for as long, so that another server takes over. A stopped process
(``SIGSTOP``) runs no thread at all, this one included, and keeps the lease.

Each take-over claims a new **term**, a number in the database one above the
last; every write the runner makes checks, inside its transaction, that the
term is still its own (:meth:`~.store.Store.transaction`). A holder that gave
the lease up (its thread moves the term on before letting go) or lost it while
it hung can therefore commit nothing more when it wakes: at most one runner's
answers ever count, whatever the clocks and however long the hang.

A thread of its own tries for the lease every :data:`TRY_SECONDS` once the
store exists and, while it holds it, watches the database for commits made by
any process (SQLite's ``data_version``) that change the unfinished batches
and their statuses (``watch_query``): that is how the holder hears of a batch
created or cancelled on another server. Until it holds the lease its loop
calls only the standard library and SQLite: a server that does not run
batches runs none of Easel's code for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .progress import Progress

log = logging.getLogger("easel.batches")

LOCK_FILE = "easel.lock"
TRY_SECONDS = 0.5  # how soon a batch created elsewhere, or a lease left by a dead holder, is taken up
BUSY_SECONDS = 10.0  # another process's write transaction: wait for it rather than fail
TERM_SCHEMA = """
CREATE TABLE IF NOT EXISTS runner_lease (id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL);
"""


class Fenced(Exception):
    """A runner's write after its term ended: another holder's term has begun, so the write is not made."""


def next_term(db: sqlite3.Connection) -> int:
    """Move the term on by one, in ``db``'s open transaction; the new term."""
    db.execute("INSERT INTO runner_lease (id, term) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET term = term + 1")
    return int(db.execute("SELECT term FROM runner_lease").fetchone()[0])


def check_term(db: sqlite3.Connection, term: int) -> None:
    """Raise Fenced unless ``term`` is the current one (in ``db``'s open transaction, which holds the write lock)."""
    row = db.execute("SELECT term FROM runner_lease").fetchone()
    if row is None or row[0] != term:
        raise Fenced(f"term {term} is over (now {None if row is None else row[0]})")


class RunnerLease:
    def __init__(
        self, directory: Path, database: str, watch_query: str, progress: Progress, stall_seconds: float
    ) -> None:
        self.path = directory / LOCK_FILE
        self._database = directory / database
        self._watch_query = watch_query
        self.progress = progress
        self.stall_seconds = stall_seconds  # 0: never give the lease up
        self._file: IO[bytes] | None = None
        self._db: sqlite3.Connection | None = None  # this thread's own connection, while the lease is held
        self._resting_until = 0.0  # after giving the lease up, no try before this (monotonic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.term: int | None = None  # this holder's term while it holds the lease
        self.taken = asyncio.Event()  # set while this process holds the lease
        self.lost = asyncio.Event()  # set once this process gave the lease up (until it takes it again)
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
        self.term = None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        version = seen = None
        try:
            while not self._stop.is_set():
                resting = time.monotonic() < self._resting_until
                if self._file is None and not resting and self._database.is_file() and self._take(loop):
                    version = seen = None
                if self._db is not None and (why := self.progress.stalled(self.stall_seconds)):
                    self._give_up(loop, why)
                if self._db is not None and version != (version := self._db.execute("PRAGMA data_version").fetchone()):
                    answer = self._db.execute(self._watch_query).fetchall()
                    if answer != seen:
                        seen = answer
                        loop.call_soon_threadsafe(self.changed.set)
                self._stop.wait(TRY_SECONDS)
        except (OSError, sqlite3.Error, RuntimeError):  # RuntimeError: the event loop has closed
            log.exception("the runner lease's watch stopped; batches here run after a restart")

    def _take(self, loop: asyncio.AbstractEventLoop) -> bool:
        file = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lease is held
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another process holds it
            file.close()
            return False
        self._file = file
        try:
            db = sqlite3.connect(self._database, check_same_thread=False, isolation_level=None, timeout=BUSY_SECONDS)
            self._db = db
            db.executescript(TERM_SCHEMA)
            with _write(db):
                term = next_term(db)
        except sqlite3.Error:
            log.exception("could not claim the runner lease's term; trying again")
            self.release()
            return False
        self.term = term
        self.progress.restart()
        log.info("this server now runs the batches and webhooks of %s (term %d)", self.path.parent, term)
        loop.call_soon_threadsafe(self._now_held, True)
        return True

    def _give_up(self, loop: asyncio.AbstractEventLoop, why: str) -> None:
        """Fence this holder's runner (move the term on), let the lease go, and rest before trying again."""
        log.error(
            "the batch runner is stuck (%s): giving up the runner lease of %s so that another server runs the "
            "batches; lines this server had not committed run again there; it tries for the lease again in %.0f s",
            why, self.path.parent, self.stall_seconds,
        )  # fmt: skip
        assert self._db is not None
        try:
            with _write(self._db):
                next_term(self._db)
        except sqlite3.Error:  # the next holder's claim moves the term on all the same
            log.warning("could not end this server's term; the next holder's take-over ends it", exc_info=True)
        self.release()
        self._resting_until = time.monotonic() + self.stall_seconds
        loop.call_soon_threadsafe(self._now_held, False)

    def _now_held(self, held: bool) -> None:
        """On the event loop: one of taken and lost is set."""
        (self.lost if held else self.taken).clear()
        (self.taken if held else self.lost).set()


@contextlib.contextmanager
def _write(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
