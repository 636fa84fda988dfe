"""Deliveries kept on disk until they end: a table in the batch store's SQLite database.

A batch's event is written in the same transaction that settles the batch,
one row per URL, so the batch ends if and only if its event is to be sent.
A row goes when its delivery ends (delivered, refused, out of attempts or
time); a server stopped or killed meanwhile leaves it, and the server that
next holds the runner lease sends it again under the same ``webhook-id`` so
receivers can deduplicate. Attempts made and the event's creation time are
kept with it: the bounds of ``--webhook-attempts`` and
``--webhook-timeout-seconds`` hold across restarts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from .events import Event

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook_id TEXT NOT NULL, url TEXT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, body BLOB NOT NULL,
    created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (webhook_id, url)
);
"""


class Database(Protocol):
    """What the journal needs of the batch store (:class:`server.serving.batch.store.Store`)."""

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def query(self, sql: str, *args: object) -> list[sqlite3.Row]: ...


@dataclass(frozen=True)
class Delivery:
    event: Event
    url: str
    created_at: float  # the event's time.time(): the time bound counts from it, across restarts
    attempts: int = 0  # attempts already made, by this server or one before it
    journaled: bool = True  # False: kept in memory only (no store), lost at shutdown

    @property
    def key(self) -> tuple[str, str]:
        return self.event.webhook_id, self.url


class Journal:
    def __init__(self, database: Database) -> None:
        self.database = database

    def count(self, db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0])

    def add(self, db: sqlite3.Connection, event: Event, urls: Sequence[str], now: float) -> list[Delivery]:
        """One row per URL, inside the caller's open transaction ``db``."""
        deliveries = [Delivery(event, url, now) for url in urls]
        db.executemany(
            "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, url, event_id, type, body, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(event.webhook_id, url, event.id, event.type, event.body, now) for url in urls],
        )
        return deliveries

    def pending(self, urls: Sequence[str]) -> list[Delivery]:
        """Every delivery left to make to a configured URL, oldest first (rows for other URLs stay, unsent)."""
        rows = self.database.query("SELECT * FROM webhook_deliveries ORDER BY created_at, webhook_id, url")
        return [
            Delivery(
                Event(row["event_id"], row["webhook_id"], row["type"], bytes(row["body"])),
                row["url"],
                row["created_at"],
                row["attempts"],
            )
            for row in rows
            if row["url"] in urls
        ]

    def attempted(self, delivery: Delivery) -> None:
        with self.database.transaction() as db:
            db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1 WHERE webhook_id = ? AND url = ?", delivery.key
            )

    def forget(self, delivery: Delivery) -> None:
        with self.database.transaction() as db:
            db.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ? AND url = ?", delivery.key)
