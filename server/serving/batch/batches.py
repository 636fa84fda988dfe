"""``/v1/batches``: a batch's input checked and stored line by line, its object as OpenAI's, its lifecycle.

Lifecycle: validating → in_progress → finalizing → completed, or failed
(the output could not be written), expired (the 24 hours passed first), or
cancelling → cancelled. The input is checked when the batch is created, and a
file that breaks a rule is a 400 naming the line: nothing is stored. A line's
*body* is checked only when it runs, as the synchronous endpoint checks it; a
body that endpoint refuses becomes that line's answer in the error file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...http.errors import APIError, invalid, missing_parameter
from .files import Files, read_expiry
from .store import Store, dumps, new_id

ENDPOINTS = ("/v1/images/generations", "/v1/images/edits")
COMPLETION_WINDOW_SECONDS = {"24h": 86_400}
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
FINISHED = ("completed", "failed", "expired", "cancelled")
TIMESTAMPS = (
    "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
    "cancelled_at",
)  # fmt: skip
# The unfinished batches and their statuses: what the runner lease's holder watches for (.lease).
ACTIVE_QUERY = (
    "SELECT id, json_extract(record, '$.status') AS status FROM batches "
    f"WHERE status IN ({', '.join(repr(status) for status in ACTIVE)}) ORDER BY seq"
)
MAX_METADATA = (16, 64, 512)  # keys, key length, value length: OpenAI's
MAX_LIST = 100


@dataclass(frozen=True)
class InputLine:
    number: int  # 1-based line of the input file
    custom_id: str
    body: dict[str, Any]


def batch_not_found(batch_id: str) -> APIError:
    return APIError(404, f"No such Batch object: {batch_id[:64]}", param="batch_id", code="batch_not_found")


def bad_input(message: str, code: str) -> APIError:
    return invalid("input_file_id", message, code)


def read_lines(data: bytes, endpoint: str) -> list[InputLine]:
    """The input file's requests; a 400 naming the first line that breaks a rule."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_input("The input file is not UTF-8 text (JSONL).", "invalid_jsonl") from None
    lines: list[InputLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            message = f"Line {number} of the input file is not JSON: the file must be JSONL."
            raise bad_input(message, "invalid_jsonl") from None
        if not isinstance(item, dict):
            raise bad_input(f"Line {number} of the input file is not a JSON object.", "invalid_line")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise bad_input(f"Line {number} has no 'custom_id' (a non-empty string).", "missing_custom_id")
        if custom_id in seen:
            raise bad_input(f"Line {number} repeats custom_id '{custom_id[:64]}'.", "duplicate_custom_id")
        seen.add(custom_id)
        if item.get("method", "POST") != "POST":
            raise bad_input(f"Line {number}: 'method' must be POST.", "invalid_method")
        if item.get("url") != endpoint:
            message = f"Line {number}: 'url' is {str(item.get('url'))[:64]!r} but the batch's endpoint is {endpoint}."
            raise bad_input(message, "mismatched_url")
        if not isinstance(item.get("body"), dict):
            raise bad_input(f"Line {number}: 'body' must be a JSON object.", "invalid_body")
        lines.append(InputLine(number, custom_id, item["body"]))
    if not lines:
        raise bad_input("The input file holds no requests.", "empty_file")
    return lines


def read_metadata(value: object) -> dict[str, str] | None:
    keys, key_length, value_length = MAX_METADATA
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > keys:
        raise invalid("metadata", f"'metadata' must be an object of at most {keys} string values.", "invalid_type")
    for key, item in value.items():
        if len(key) > key_length or not isinstance(item, str) or len(item) > value_length:
            message = f"'metadata' keys are at most {key_length} characters, values strings of at most {value_length}."
            raise invalid("metadata", message, "invalid_value")
    return value


class Batches:
    def __init__(self, store: Store, files: Files) -> None:
        self.store = store
        self.files = files

    def create(self, body: dict[str, Any], url_base: str, default_model: str) -> dict[str, Any]:
        endpoint, window = body.get("endpoint"), body.get("completion_window")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if body.get(name) is None:
                raise missing_parameter(name)
        if endpoint not in ENDPOINTS:
            message = f"Easel batches serve {' and '.join(ENDPOINTS)}; 'endpoint' was {str(endpoint)[:64]!r}."
            raise invalid("endpoint", message, "invalid_value")
        if window not in COMPLETION_WINDOW_SECONDS:
            raise invalid("completion_window", "'completion_window' must be '24h'.", "invalid_value")
        metadata = read_metadata(body.get("metadata"))
        output_expiry = self._output_expiry(body.get("output_expires_after"))
        lines = read_lines(self._input(body["input_file_id"]), str(endpoint))
        now = int(time.time())
        batch_id = new_id("batch_")
        model = lines[0].body.get("model")
        record = {
            "id": batch_id,
            "object": "batch",
            "endpoint": endpoint,
            "model": model if isinstance(model, str) else default_model,
            "input_file_id": body["input_file_id"],
            "completion_window": window,
            "status": "validating",
            "created_at": now,
            "expires_at": now + COMPLETION_WINDOW_SECONDS[str(window)],
            "metadata": metadata,
            "output_expires_after": output_expiry,
        }
        with self.store.transaction() as db:
            seq = self.store.next_seq(db, "batches")
            db.execute("INSERT INTO batches VALUES (?, ?, ?, ?)", (batch_id, seq, dumps(record), url_base))
            db.executemany(
                "INSERT INTO lines (batch_id, line, custom_id, request) VALUES (?, ?, ?, ?)",
                [(batch_id, line.number, line.custom_id, dumps(line.body)) for line in lines],
            )
        return self.get(batch_id)

    def _input(self, file_id: object) -> bytes:
        rows = self.store.query("SELECT * FROM files WHERE id = ?", str(file_id))
        if not isinstance(file_id, str) or not rows or (rows[0]["expires_at"] or time.time() + 1) <= time.time():
            raise bad_input(f"No such file: {str(file_id)[:64]}.", "file_not_found")
        if rows[0]["purpose"] != "batch":
            message = f"File {file_id} has purpose '{rows[0]['purpose']}'; a batch's input must have purpose 'batch'."
            raise bad_input(message, "invalid_file_purpose")
        return self.store.read_content(file_id)

    @staticmethod
    def _output_expiry(value: object) -> int | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise invalid("output_expires_after", "'output_expires_after' must be an object.", "invalid_type")
        return read_expiry(value.get("anchor"), value.get("seconds"), "batch_output")

    # -- reading -------------------------------------------------------------------------------------

    def record(self, batch_id: str) -> dict[str, Any]:
        rows = self.store.query("SELECT record FROM batches WHERE id = ?", batch_id)
        if not rows:
            raise batch_not_found(batch_id)
        return json.loads(rows[0]["record"])

    def url_base(self, batch_id: str) -> str:
        return str(self.store.query("SELECT url_base FROM batches WHERE id = ?", batch_id)[0]["url_base"])

    def get(self, batch_id: str) -> dict[str, Any]:
        return self.batch_object(self.record(batch_id))

    def batch_object(self, record: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's Batch object; fields with no value yet are left out, as OpenAI's schema types none as null."""
        counts = self.store.query(
            "SELECT COUNT(*) AS total, COALESCE(SUM(ok = 1), 0) AS completed, COALESCE(SUM(ok = 0), 0) AS failed, "
            "COALESCE(SUM(input_tokens), 0) AS input, COALESCE(SUM(output_tokens), 0) AS output "
            "FROM lines WHERE batch_id = ?",
            record["id"],
        )[0]
        body = {key: value for key, value in record.items() if value is not None and key != "output_expires_after"}
        body["metadata"] = record.get("metadata")
        body["request_counts"] = {
            "total": counts["total"],
            "completed": counts["completed"],
            "failed": counts["failed"],
        }
        body["usage"] = {
            "input_tokens": counts["input"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": counts["output"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": counts["input"] + counts["output"],
        }
        return body

    def page(self, limit: int, after: str | None) -> dict[str, Any]:
        args: list[object] = []
        where = ""
        if after is not None:
            cursor = self.store.query("SELECT seq FROM batches WHERE id = ?", after)
            if cursor:
                where, args = "WHERE seq < ?", [cursor[0]["seq"]]
        rows = self.store.query(f"SELECT record FROM batches {where} ORDER BY seq DESC LIMIT ?", *args, limit + 1)
        data = [self.batch_object(json.loads(row["record"])) for row in rows[:limit]]
        page: dict[str, Any] = {"object": "list", "data": data, "has_more": len(rows) > limit}
        if data:  # OpenAI's schema types the ids as strings, not null: an empty page leaves them out
            page.update(first_id=data[0]["id"], last_id=data[-1]["id"])
        return page

    def active(self) -> dict[str, str]:
        """The unfinished batches' statuses by id, oldest first."""
        return {row["id"]: row["status"] for row in self.store.query(ACTIVE_QUERY)}

    # -- changing ------------------------------------------------------------------------------------

    def update(
        self,
        batch_id: str,
        expect: tuple[str, ...] | None = None,
        also: Callable[[sqlite3.Connection], None] | None = None,
        *,
        term: int | None = None,
        **changes: Any,
    ) -> dict[str, Any]:
        """Change fields of the record, only while its status is one of ``expect`` if given (a cancel and the
        runner may race); a new status stamps its ``<status>_at`` time; ``also(db)`` writes more in the same
        transaction when the change is made. ``term``: the runner's, which must still be current (else
        :class:`~.lease.Fenced`, and nothing changes). Returns the record as it now is."""
        with self.store.transaction(term) as db:
            row = db.execute("SELECT record FROM batches WHERE id = ?", (batch_id,)).fetchone()
            record = json.loads(row["record"])
            if expect is not None and record["status"] not in expect:
                return record
            status = changes.get("status")
            if status is not None and f"{status}_at" in TIMESTAMPS:
                changes.setdefault(f"{status}_at", int(time.time()))
            record.update(changes)
            db.execute("UPDATE batches SET record = ? WHERE id = ?", (dumps(record), batch_id))
            if also is not None:
                also(db)
        return record

    def request_cancel(self, batch_id: str) -> dict[str, Any]:
        record = self.record(batch_id)
        if record["status"] in FINISHED:
            message = f"Batch {batch_id} is already {record['status']}; only an unfinished batch can be cancelled."
            raise invalid("batch_id", message, "batch_not_cancellable")
        if record["status"] != "cancelling":
            record = self.update(batch_id, ("validating", "in_progress"), status="cancelling")
            if record["status"] in FINISHED:  # it finished meanwhile
                return self.request_cancel(batch_id)
        return self.batch_object(record)

    def pending(self, batch_id: str) -> list[Any]:
        return self.store.query(
            "SELECT line, custom_id, request FROM lines WHERE batch_id = ? AND answer IS NULL ORDER BY line", batch_id
        )

    def answered(self, batch_id: str, ok: bool) -> list[str]:
        rows = self.store.query(
            "SELECT answer FROM lines WHERE batch_id = ? AND ok = ? ORDER BY line", batch_id, 1 if ok else 0
        )
        return [row["answer"] for row in rows]

    def answer(
        self, batch_id: str, line: int, answer: dict[str, Any], ok: bool, tokens: tuple[int, int], term: int
    ) -> None:
        """Record a line's answer, as runner ``term`` (:class:`~.lease.Fenced` once that term is over); a line
        already answered keeps its first (never answered twice)."""
        with self.store.transaction(term) as db:
            db.execute(
                "UPDATE lines SET answer = ?, ok = ?, input_tokens = ?, output_tokens = ? "
                "WHERE batch_id = ? AND line = ? AND answer IS NULL",
                (dumps(answer), 1 if ok else 0, tokens[0], tokens[1], batch_id, line),
            )
