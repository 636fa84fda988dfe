"""The Files and Batch APIs' store: one SQLite database (the standard library's, WAL mode) and a folder of contents.

Layout under the data directory (``--data-dir``, default ``$EASEL_HOME/data``)::

    easel.sqlite3        files, batches, each batch line's answer, webhook deliveries still to make
    easel.lock           the runner lease (:mod:`.lease`): held by the one server that runs the batches
                         (its term, which fences a holder that lost it, is a table in the database)
    files/file-<hex>     a file's bytes, written to a temporary name and renamed into place

Nothing here shares a name with the ``url`` image store (``--image-dir``). A
line's answer is committed in the same transaction that marks it done, so a
server killed at any moment restarts with every line either answered once or
still to run. The database is opened on the first use of either API, or at
start-up when it already exists (to resume batches): a server that never uses
them writes nothing. Several servers on one machine may share the directory
(SQLite's WAL mode serves processes of one host); :mod:`.lease` picks the one
that runs batches.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...webhooks import OUTBOX_SCHEMA
from .lease import TERM_SCHEMA, check_term

DATABASE = "easel.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER, seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, record TEXT NOT NULL, url_base TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT NOT NULL, request TEXT NOT NULL,
    answer TEXT, ok INTEGER, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, line)
);
"""
BUSY_WAIT_MS = 10_000  # another process's write transaction: wait for it rather than fail


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class Store:
    """The database and the contents folder; every method is short and safe to call from any thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.contents = directory / "files"
        self.contents.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            directory / DATABASE, check_same_thread=False, isolation_level=None, timeout=BUSY_WAIT_MS / 1000
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed answer survives a power cut, not only a kill
        self._db.executescript(SCHEMA + OUTBOX_SCHEMA + TERM_SCHEMA)
        self._mutex = threading.Lock()

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / DATABASE).is_file()

    def close(self) -> None:
        with self._mutex:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self, term: int | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction; with the batch runner's ``term``, made only while that term is the current one
        (else :class:`~.lease.Fenced`, and nothing is written): a runner that lost the lease writes nothing."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if term is not None:
                    check_term(self._db, term)
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, *args: object) -> list[sqlite3.Row]:
        with self._mutex:
            return self._db.execute(sql, args).fetchall()

    def next_seq(self, db: sqlite3.Connection, table: str) -> int:
        return int(db.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}").fetchone()[0])

    # -- file contents -------------------------------------------------------------------------------

    def content_path(self, file_id: str) -> Path:
        return self.contents / file_id

    def write_content(self, file_id: str, data: bytes) -> None:
        """Written whole to a temporary name, synced, then renamed: a crash leaves no half file under the id."""
        temporary = self.contents / f".{file_id}.part"
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.content_path(file_id))
        except OSError:
            temporary.unlink(missing_ok=True)
            raise

    def read_content(self, file_id: str) -> bytes:
        return self.content_path(file_id).read_bytes()

    def remove_content(self, file_id: str) -> None:
        self.content_path(file_id).unlink(missing_ok=True)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
