"""``/v1/files``: OpenAI's Files API over the :class:`~.store.Store`.

Purposes: ``batch`` (a batch's input lines), ``vision`` and ``user_data``
(images a JSON edit names as ``{"file_id": ...}``); ``batch_output`` files are
made by batches, never uploaded. A batch file is held to OpenAI's limits (200 MB,
50,000 lines). ``expires_after`` ({anchor: created_at, seconds}) sets an expiry,
and batch files expire after 30 days unless told otherwise, as OpenAI's; expired
files are swept, and only those this store made (its database rows) ever are.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from ...http.errors import APIError, insufficient_storage, invalid, missing_parameter
from ..files import STORAGE_ERRNOS, STORAGE_RETRY_AFTER_SECONDS
from .store import Store, new_id

log = logging.getLogger("easel.batch")

UPLOAD_PURPOSES = ("batch", "vision", "user_data")
OPENAI_ONLY_PURPOSES = ("assistants", "fine-tune", "evals")  # OpenAI's, for features Easel does not have
IMAGE_PURPOSES = ("vision", "user_data")  # files an edit may name
MAX_BATCH_FILE_BYTES = 200 * 1000 * 1000
MAX_BATCH_LINES = 50_000
EXPIRY_SECONDS = (3600, 2_592_000)  # OpenAI's bounds for expires_after.seconds: an hour to 30 days
BATCH_FILE_DEFAULT_EXPIRY = 2_592_000
MAX_LIST = 10_000


def file_not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id[:64]}", param="file_id", code="file_not_found")


def no_such_image_file(file_id: str, param: str) -> APIError:
    return invalid(param, f"'{param}' names file '{file_id[:64]}', which does not exist.", "file_not_found")


def file_object(row: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
    }
    if row["expires_at"] is not None:
        body["expires_at"] = row["expires_at"]
    return body


def read_purpose(value: object) -> str:
    if value is None or value == "":
        raise missing_parameter("purpose")
    if value in OPENAI_ONLY_PURPOSES:
        raise invalid("purpose", f"Easel serves images only: purpose '{value}' is not supported.", "invalid_value")
    if value not in UPLOAD_PURPOSES:
        shown_value = str(value)[:64]
        raise invalid("purpose", f"'{shown_value}' is not one of {', '.join(UPLOAD_PURPOSES)}.", "invalid_value")
    return str(value)


def read_expiry(anchor: object, seconds: object, purpose: str) -> int | None:
    """Seconds until an upload expires, from ``expires_after``; None: kept until deleted."""
    if anchor is None and seconds is None:
        return BATCH_FILE_DEFAULT_EXPIRY if purpose == "batch" else None
    if anchor != "created_at":
        raise invalid("expires_after.anchor", "'expires_after.anchor' must be 'created_at'.", "invalid_value")
    low, high = EXPIRY_SECONDS
    if not (isinstance(seconds, str | int) and str(seconds).isdigit() and low <= int(seconds) <= high):
        message = f"'expires_after.seconds' must be an integer from {low} to {high}."
        raise invalid("expires_after.seconds", message, "invalid_value")
    return int(seconds)


def check_batch_file(data: bytes) -> None:
    if len(data) > MAX_BATCH_FILE_BYTES:
        raise invalid("file", f"A batch file may hold at most {MAX_BATCH_FILE_BYTES} bytes.", "file_too_large")
    if data.count(b"\n") + (0 if data.endswith(b"\n") else 1) > MAX_BATCH_LINES:
        raise invalid("file", f"A batch file may hold at most {MAX_BATCH_LINES} lines.", "too_many_lines")


@dataclass(frozen=True)
class NewFile:
    """A file whose contents are written and whose row is not yet committed (:meth:`Files.stage`)."""

    id: str
    purpose: str
    filename: str
    size: int
    created_at: int
    expires_at: int | None


class Files:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, data: bytes, filename: str, purpose: str, expires_in: int | None) -> dict[str, Any]:
        if purpose == "batch":
            check_batch_file(data)
        return self.add(data, filename, purpose, expires_in)

    def add(self, data: bytes, filename: str, purpose: str, expires_in: int | None) -> dict[str, Any]:
        """Store a file (its bytes first: a row never names missing contents); its file object."""
        try:
            new = self.stage(data, filename, purpose, expires_in)
        except OSError as error:
            if error.errno not in STORAGE_ERRNOS:
                raise
            raise _unstorable(os.strerror(error.errno)) from None
        try:
            with self.store.transaction() as db:
                self.record(db, new)
        except sqlite3.OperationalError as error:  # "database or disk is full": the contents go too
            self.store.remove_content(new.id)
            if "full" not in str(error) and "readonly" not in str(error):
                raise
            raise _unstorable(str(error)) from None
        return self.get(new.id)

    def stage(self, data: bytes, filename: str, purpose: str, expires_in: int | None) -> NewFile:
        """Write a new file's contents (OSError if they cannot be); :meth:`record` then makes it a file."""
        now = int(time.time())
        expires_at = None if expires_in is None else now + expires_in
        new = NewFile(new_id("file-"), purpose, filename, len(data), now, expires_at)
        self.store.write_content(new.id, data)
        return new

    def record(self, db: sqlite3.Connection, new: NewFile) -> None:
        """The staged file's row, in ``db``'s open transaction: from its commit on, the file exists."""
        seq = self.store.next_seq(db, "files")
        db.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
            (new.id, new.purpose, new.filename, new.size, new.created_at, new.expires_at, seq),
        )

    def row(self, file_id: str) -> Any:
        rows = self.store.query("SELECT * FROM files WHERE id = ?", file_id)
        if not rows or _expired(rows[0]):
            raise file_not_found(file_id)
        return rows[0]

    def get(self, file_id: str) -> dict[str, Any]:
        return file_object(self.row(file_id))

    def content(self, file_id: str) -> tuple[bytes, str]:
        row = self.row(file_id)
        return self.store.read_content(file_id), row["filename"]

    def image_bytes(self, file_id: str, param: str) -> bytes:
        """An image an edit names by ``file_id``: one uploaded for ``vision`` or ``user_data``."""
        rows = self.store.query("SELECT * FROM files WHERE id = ?", file_id)
        if not rows or _expired(rows[0]):
            raise no_such_image_file(file_id, param)
        if rows[0]["purpose"] not in IMAGE_PURPOSES:
            message = f"'{param}' names a file of purpose '{rows[0]['purpose']}'; upload images as vision or user_data."
            raise invalid(param, message, "invalid_file_purpose")
        return self.store.read_content(file_id)

    def delete(self, file_id: str) -> dict[str, Any]:
        self.row(file_id)
        with self.store.transaction() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self.store.remove_content(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def page(self, purpose: str | None, limit: int, order: str, after: str | None) -> dict[str, Any]:
        direction = "DESC" if order == "desc" else "ASC"
        where, args = ["(expires_at IS NULL OR expires_at > ?)"], [int(time.time())]
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)  # type: ignore[arg-type]
        if after is not None:
            cursor = self.store.query("SELECT seq FROM files WHERE id = ?", after)
            if cursor:
                where.append("seq < ?" if direction == "DESC" else "seq > ?")
                args.append(cursor[0]["seq"])
        sql = f"SELECT * FROM files WHERE {' AND '.join(where)} ORDER BY seq {direction} LIMIT ?"
        rows = self.store.query(sql, *args, limit + 1)
        data = [file_object(row) for row in rows[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }

    def sweep(self) -> int:
        """Delete the expired files (rows and contents); how many."""
        now = int(time.time())
        rows = self.store.query("SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?", now)
        for row in rows:
            with self.store.transaction() as db:
                db.execute("DELETE FROM files WHERE id = ?", (row["id"],))
            self.store.remove_content(row["id"])
        return len(rows)


def _expired(row: Any) -> bool:
    return row["expires_at"] is not None and row["expires_at"] <= time.time()


def _unstorable(reason: str) -> APIError:
    """A full or read-only data directory: 507 with Retry-After, logged without a traceback; nothing is kept."""
    log.warning("cannot store an uploaded file in the data directory: %s", reason)
    message = f"The server cannot store files right now ({reason.lower()}). Retry later."
    return insufficient_storage(message, STORAGE_RETRY_AFTER_SECONDS)
