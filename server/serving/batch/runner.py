"""Running batches: each active batch's unanswered lines, a bounded number at a time, then its output files.

Lines go to the engine as background jobs (:mod:`.lines`), so interactive
requests always go first; a window of :data:`LINES_IN_FLIGHT` lines across all
batches keeps the engine's calls full without flooding its queue. Each answer
is committed as its line finishes; a server stopped or killed picks up the
unanswered lines on its next start. When a batch finishes (or is cancelled,
or outlives its window), its answers become the output and error files,
committed with the batch's last status and its event (:class:`BatchEvents`:
webhooks, when configured) in one transaction, so a settled batch names every
output file there is. Every write is made as the runner's lease term
(:mod:`.lease`): a runner whose server lost the lease, even one that wakes up
from a hang long after, writes nothing.
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
from .files import Files, NewFile
from .lease import Fenced
from .lines import Interrupted, answer_line
from .progress import Progress
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
    """The batches of one lease term: made when this server takes the lease, abandoned when it gives it up."""

    def __init__(
        self, batches: Batches, files: Files, serving: ImageServing, events: BatchEvents, term: int, progress: Progress
    ) -> None:
        self.batches = batches
        self.files = files
        self.serving = serving
        self.events = events
        self.term = term
        self.progress = progress
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

    @property
    def working(self) -> bool:
        return bool(self._tasks)

    def cancelling(self, batch_id: str) -> bool:
        return batch_id in self._cancelled

    def cancel(self, batch_id: str) -> None:
        """Stop taking the batch's lines and drop those in the engine; it then finishes as cancelled."""
        self._cancelled.add(batch_id)
        for handle in list(self._handles.get(batch_id, ())):
            self.serving.engine.cancel(handle)
        self.start(batch_id)  # a batch found cancelling at start-up has no task yet

    async def abandon(self) -> None:
        """This server gave the lease up: drop the lines in the engine and stop, committing nothing more."""
        for handles in list(self._handles.values()):
            for handle in list(handles):
                self.serving.engine.cancel(handle)
        await self.stop()

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
                record = await asyncio.to_thread(
                    lambda: self.batches.update(batch_id, ("validating",), term=self.term, status="in_progress")
                )
            if record["status"] == "cancelling":
                self._cancelled.add(batch_id)
            if record["status"] == "in_progress" and batch_id not in self._cancelled:
                await self._run_lines(batch_id, record)
            await asyncio.to_thread(self._finish, batch_id)
        except asyncio.CancelledError:
            raise
        except Fenced:
            log.warning("batch %s: this server no longer holds the runner lease; the holder runs it", batch_id)
        except Exception:
            log.exception("batch %s stopped on an unexpected error; it resumes on the next start", batch_id)
        finally:
            self.progress.moved()

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
        finally:
            self.progress.moved()
        line = {
            "id": new_id("batch_req_"),
            "custom_id": row["custom_id"],
            "response": {"status_code": answer.status, "request_id": request_id, "body": answer.body},
            "error": None,
        }
        try:
            await asyncio.to_thread(
                self.batches.answer, batch_id, row["line"], line, answer.status == 200, answer.tokens, self.term
            )
        except Fenced:  # this server gave the lease up while the line ran: the holder answers it
            log.info("batch %s line %d: not committed, this server no longer runs batches", batch_id, row["line"])

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
                self.batches.answer(batch_id, row["line"], line, False, (0, 0), self.term)
        elif pending:
            return  # the server is stopping: the rest runs on its next start
        else:
            final = "completed"
        self.batches.update(batch_id, ("in_progress",), term=self.term, status="finalizing")
        staged: list[NewFile] = []
        try:
            outputs = {
                "output_file_id": self._stage_answers(batch_id, record, staged, ok=True),
                "error_file_id": self._stage_answers(batch_id, record, staged, ok=False),
            }
        except OSError as error:
            self._unstage(staged)
            log.error("batch %s failed: its output could not be written: %s", batch_id, error)
            failure = {"code": "output_not_written", "message": f"The output could not be written: {error.strerror}"}
            errors = {"object": "list", "data": [{**failure, "param": None, "line": None}]}
            self._settle(batch_id, [], status="failed", errors=errors)
            return
        try:
            self._settle(batch_id, staged, status=final, **outputs)
        except BaseException:  # fenced, or the database failed: the staged contents must not outlive the try
            self._unstage(staged)
            raise
        self._cancelled.discard(batch_id)
        log.info("batch %s %s", batch_id, final)

    def _settle(self, batch_id: str, staged: list[NewFile], **changes: Any) -> None:
        """The batch's last change, its output files and its event, in one transaction: it ends if and only if it
        is announced, and its files exist if and only if it names them."""
        sends: list[Callable[[], None]] = []

        def also(db: sqlite3.Connection) -> None:
            for new in staged:
                self.files.record(db, new)
            sends.append(self.events.record(db, f"batch.{changes['status']}", {"id": batch_id}))

        self.batches.update(batch_id, None, also, term=self.term, **changes)
        self.progress.moved()
        for send in sends:
            send()

    def _unstage(self, staged: list[NewFile]) -> None:
        for new in staged:
            self.files.store.remove_content(new.id)

    def _stage_answers(self, batch_id: str, record: dict[str, Any], staged: list[NewFile], *, ok: bool) -> str | None:
        answers = self.batches.answered(batch_id, ok)
        if not answers:
            return None
        data = "".join(answer + "\n" for answer in answers).encode("utf-8")
        name = f"{batch_id}_{'output' if ok else 'error'}.jsonl"
        staged.append(self.files.stage(data, name, "batch_output", record.get("output_expires_after")))
        return staged[-1].id
