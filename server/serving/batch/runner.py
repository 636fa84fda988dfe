"""Running batches: each active batch's unanswered lines, a bounded number at a time, then its output files.

Lines go to the engine as background jobs (:mod:`.lines`), so interactive
requests always go first; a window of :data:`LINES_IN_FLIGHT` lines across all
batches keeps the engine's calls full without flooding its queue. Each answer
is committed as its line finishes; a server stopped or killed picks up the
unanswered lines on its next start. When a batch finishes (or is cancelled,
or outlives its window), its answers become the output and error files, and
:class:`BatchEvents` hears of it (webhooks, when configured).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol

from ...engine.base import JobHandle
from ..images import ImageServing
from .batches import FINISHED, Batches
from .files import Files
from .lines import Interrupted, answer_line
from .store import Store, new_id

log = logging.getLogger("easel.batches")

LINES_IN_FLIGHT = 32  # lines submitted and not yet answered, over all batches
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


class BatchEvents(Protocol):
    """Where a batch's end is announced: ``batch.completed``, ``batch.failed``, ``batch.cancelled`` or
    ``batch.expired`` with ``{"id": batch_id}`` (:class:`server.webhooks.Webhooks`)."""

    def record(self, db: sqlite3.Connection, event_type: str, data: dict[str, object]) -> Callable[[], None]:
        """Keep the event in ``db``'s open transaction, the one that settles the batch; the callable returned
        sends it once that commits, without blocking."""
        ...

    def take_over(self, database: Store) -> None:
        """This server now holds the runner lease: send the events ``database`` still holds."""
        ...


class NoEvents:
    """No webhooks configured: the ends of batches are only logged."""

    def record(self, db: sqlite3.Connection, event_type: str, data: dict[str, object]) -> Callable[[], None]:
        log.debug("%s %s", event_type, data)
        return lambda: None

    def take_over(self, database: Store) -> None:
        pass


class BatchRunner:
    def __init__(self, batches: Batches, files: Files, serving: ImageServing, events: BatchEvents) -> None:
        self.batches = batches
        self.files = files
        self.serving = serving
        self.events = events
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._handles: dict[str, set[JobHandle]] = {}
        self._cancelled: set[str] = set()
        self._window = asyncio.Semaphore(LINES_IN_FLIGHT)

    def start(self, batch_id: str) -> None:
        if batch_id not in self._tasks:
            task = asyncio.create_task(self._run(batch_id), name=f"easel-{batch_id}")
            self._tasks[batch_id] = task
            task.add_done_callback(lambda _: self._tasks.pop(batch_id, None))

    def running(self, batch_id: str) -> bool:
        return batch_id in self._tasks

    def cancelling(self, batch_id: str) -> bool:
        return batch_id in self._cancelled

    def cancel(self, batch_id: str) -> None:
        """Stop taking the batch's lines and drop those in the engine; it then finishes as cancelled."""
        self._cancelled.add(batch_id)
        for handle in list(self._handles.get(batch_id, ())):
            self.serving.engine.cancel(handle)
        self.start(batch_id)  # a batch found cancelling at start-up has no task yet

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _run(self, batch_id: str) -> None:
        try:
            record = await asyncio.to_thread(self.batches.record, batch_id)
            if record["status"] == "validating":
                record = await asyncio.to_thread(self.batches.update, batch_id, ("validating",), status="in_progress")
            if record["status"] == "cancelling":
                self._cancelled.add(batch_id)
            if record["status"] == "in_progress" and batch_id not in self._cancelled:
                await self._run_lines(batch_id, record)
            await asyncio.to_thread(self._finish, batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s stopped on an unexpected error; it resumes on the next start", batch_id)

    def _stopping(self, batch_id: str, expires_at: int) -> bool:
        return batch_id in self._cancelled or self.serving.draining or time.time() >= expires_at

    async def _run_lines(self, batch_id: str, record: dict[str, Any]) -> None:
        pending = await asyncio.to_thread(self.batches.pending, batch_id)
        url_base = await asyncio.to_thread(self.batches.url_base, batch_id)
        total = await asyncio.to_thread(lambda: self.batches.get(batch_id)["request_counts"]["total"])
        log.info("batch %s: %d of %d lines answered, running the rest", batch_id, total - len(pending), total)
        handles = self._handles.setdefault(batch_id, set())
        running: set[asyncio.Task[None]] = set()
        try:
            for row in pending:
                await self._window.acquire()
                if self._stopping(batch_id, record["expires_at"]):
                    self._window.release()
                    break
                task = asyncio.create_task(self._line(batch_id, row, record["endpoint"], url_base, handles))
                task.add_done_callback(lambda _: self._window.release())
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(running)
        finally:
            for task in running:
                task.cancel()
            self._handles.pop(batch_id, None)

    async def _line(self, batch_id: str, row: Any, endpoint: str, url_base: str, handles: set[JobHandle]) -> None:
        request_id = new_id("req_")
        body = json.loads(row["request"])

        def track(handle: JobHandle) -> None:
            handles.add(handle)
            if batch_id in self._cancelled:
                self.serving.engine.cancel(handle)

        try:
            answer = await answer_line(self.serving, endpoint, body, url_base, request_id, track)
        except Interrupted:
            return
        except Exception:  # a bug: the line stays unanswered and runs again on the next start
            log.exception("batch %s line %d failed [request_id=%s]", batch_id, row["line"], request_id)
            return
        line = {
            "id": new_id("batch_req_"),
            "custom_id": row["custom_id"],
            "response": {"status_code": answer.status, "request_id": request_id, "body": answer.body},
            "error": None,
        }
        await asyncio.to_thread(self.batches.answer, batch_id, row["line"], line, answer.status == 200, answer.tokens)

    def _finish(self, batch_id: str) -> None:
        """Write the output and error files and settle the status (blocking: run it in a thread)."""
        record = self.batches.record(batch_id)
        pending = self.batches.pending(batch_id)
        if record["status"] in FINISHED:
            return
        if record["status"] == "cancelling" or batch_id in self._cancelled:
            final = "cancelled"
        elif pending and time.time() >= record["expires_at"]:
            final = "expired"
            for row in pending:
                error = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
                line = {"id": new_id("batch_req_"), "custom_id": row["custom_id"], "response": None, "error": error}
                self.batches.answer(batch_id, row["line"], line, False, (0, 0))
        elif pending:
            return  # the server is stopping: the rest runs on its next start
        else:
            final = "completed"
        self.batches.update(batch_id, ("in_progress",), status="finalizing")
        try:
            outputs: dict[str, Any] = {
                "output_file_id": self._answers_file(batch_id, record, ok=True),
                "error_file_id": self._answers_file(batch_id, record, ok=False),
            }
        except OSError as error:
            log.error("batch %s failed: its output could not be written: %s", batch_id, error)
            failure = {"code": "output_not_written", "message": f"The output could not be written: {error.strerror}"}
            errors = {"object": "list", "data": [{**failure, "param": None, "line": None}]}
            self._settle(batch_id, status="failed", errors=errors)
            return
        self._settle(batch_id, status=final, **outputs)
        self._cancelled.discard(batch_id)
        log.info("batch %s %s", batch_id, final)

    def _settle(self, batch_id: str, **changes: Any) -> None:
        """The batch's last change and its event, in one transaction: it ends if and only if it is announced."""
        sends: list[Callable[[], None]] = []

        def announce(db: sqlite3.Connection) -> None:
            sends.append(self.events.record(db, f"batch.{changes['status']}", {"id": batch_id}))

        self.batches.update(batch_id, None, announce, **changes)
        for send in sends:
            send()

    def _answers_file(self, batch_id: str, record: dict[str, Any], *, ok: bool) -> str | None:
        answers = self.batches.answered(batch_id, ok)
        if not answers:
            return None
        data = "".join(answer + "\n" for answer in answers).encode("utf-8")
        name = f"{batch_id}_{'output' if ok else 'error'}.jsonl"
        expiry = record.get("output_expires_after")
        return str(self.files.add(data, name, "batch_output", expiry)["id"])
