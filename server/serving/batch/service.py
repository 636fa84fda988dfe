"""The Files and Batch APIs of one server: their store opened on first use, their runner, their sweeps.

Every server sharing a data directory answers these APIs from the one store;
the one that holds the runner lease (:mod:`.lease`) runs the batches, sends
their webhook events and sweeps expired and orphaned files. The others keep
trying for the lease, so a batch created on any of them, or left by a holder
that died, starts within a second. Each time this server takes the lease it
runs its batches with a new :class:`~.runner.BatchRunner` for that term; a
holder that gets stuck gives the lease up (:mod:`.progress`), and its runner
is abandoned.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from weights.registry import easel_home

from ...http.errors import APIError
from ...settings.config import Settings
from ..images import ImageServing
from .batches import ACTIVE_QUERY, Batches
from .files import Files, no_such_image_file
from .lease import Fenced, RunnerLease
from .orphans import remove_orphans
from .progress import Progress
from .runner import BatchEvents, BatchRunner, NoEvents
from .store import DATABASE, Store

log = logging.getLogger("easel.batches")

SWEEP_SECONDS = 60.0
BEAT_SECONDS = 1.0  # how often the event loop tells the lease's watchdog it is alive (.progress)


class BatchApi:
    """Opened lazily: a server whose clients never use these APIs writes nothing to the data directory."""

    def __init__(self, settings: Settings, serving: ImageServing, events: BatchEvents | None = None) -> None:
        self.directory: Path = settings.data_dir or easel_home() / "data"
        self.serving = serving
        self.events = events or NoEvents()
        self._store: Store | None = None
        self._files: Files | None = None
        self._batches: Batches | None = None
        self._runner: BatchRunner | None = None  # this term's, while this server holds the lease
        self.progress = Progress()
        self.lease = RunnerLease(self.directory, DATABASE, ACTIVE_QUERY, self.progress, settings.runner_stall_seconds)
        serving.file_bytes = self._image_bytes

    def _image_bytes(self, file_id: str, param: str) -> bytes:
        if self._store is None and not Store.exists(self.directory):
            raise no_such_image_file(file_id, param)  # nothing uploaded yet: no need to make a store to say so
        return self.files.image_bytes(file_id, param)

    def _open(self) -> None:
        if self._store is None:
            store = Store(self.directory)
            self._files = Files(store)
            self._batches = Batches(store, self._files)
            self._store = store

    @property
    def files(self) -> Files:
        self._open()
        assert self._files is not None
        return self._files

    @property
    def batches(self) -> Batches:
        self._open()
        assert self._batches is not None
        return self._batches

    def created(self, batch_id: str) -> None:
        """A batch was just stored: run it now if this server holds the lease (else the holder finds it)."""
        if self._runner is not None and self.lease.taken.is_set():
            self._runner.start(batch_id)

    def cancelled(self, batch_id: str) -> None:
        """A batch was just marked cancelling: stop its lines now if this server runs them."""
        if self._runner is not None and self.lease.taken.is_set():
            self._runner.cancel(batch_id)

    async def start(self) -> None:
        """Try for the lease from now on: the holder resumes what an earlier run left unfinished."""
        self.lease.start()

    async def run_forever(self) -> None:
        """Each time the lease is taken: run the batches for that term until the lease is given up."""
        while True:
            await self.lease.taken.wait()
            term = self.lease.term
            if term is None:  # given up again already
                await self.lease.lost.wait()
                continue
            self._open()
            assert self._store is not None and self._files is not None and self._batches is not None
            runner = BatchRunner(self._batches, self._files, self.serving, self.events, term, self.progress)
            self._runner = runner
            try:
                await self._take_over(term)
                await self._run_term(runner)
            finally:
                self._runner = None
                await runner.abandon()

    async def _take_over(self, term: int) -> None:
        assert self._store is not None
        try:
            await asyncio.to_thread(self.events.take_over, self._store)
            await asyncio.to_thread(remove_orphans, self._store, term)
        except (OSError, sqlite3.Error, Fenced):  # the batches run regardless
            log.exception("taking over the webhooks or removing orphaned files failed; the batches run all the same")

    async def _run_term(self, runner: BatchRunner) -> None:
        """Look at the unfinished batches each time the database changes, until the lease is lost."""
        lost = asyncio.ensure_future(self.lease.lost.wait())
        try:
            while not self.lease.lost.is_set():
                self.lease.changed.clear()
                try:
                    await self._look(runner)
                except (OSError, sqlite3.Error, APIError):
                    log.exception("looking for batches to run failed; looking again on the next change")
                changed = asyncio.ensure_future(self.lease.changed.wait())
                await asyncio.wait({changed, lost}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
        finally:
            lost.cancel()

    async def _look(self, runner: BatchRunner) -> None:
        for batch_id, status in (await asyncio.to_thread(self.batches.active)).items():
            if status == "cancelling" and not runner.cancelling(batch_id):
                runner.cancel(batch_id)
            elif not runner.running(batch_id) and not self.serving.draining:
                runner.start(batch_id)

    async def beat_forever(self) -> None:
        """Tell the lease's watchdog that this event loop runs, whether the runner has work, and how far the
        engine has got (jobs finished and denoising steps made: a long call on a CPU moves step by step)."""
        engine, names = self.serving.engine, list(self.serving.catalog.entries)
        while True:
            await self.lease.taken.wait()  # a server that does not run batches runs none of this
            done = 0
            for name in names:
                stats = engine.stats(name) or {}
                done += stats.get("completed", 0) + stats.get("failed", 0) + stats.get("cancelled", 0)
                done += stats.get("steps", 0)
            self.progress.beat(self.working, done)
            await asyncio.sleep(BEAT_SECONDS)

    @property
    def working(self) -> bool:
        """This server holds the lease and runs batches now."""
        return self._runner is not None and self._runner.working

    async def stop(self) -> None:
        """Stop running batches (the store stays open, and the lease held, until :meth:`close`)."""
        await asyncio.to_thread(self.lease.stop)
        if self._runner is not None:
            await self._runner.stop()

    def close(self) -> None:
        """After the webhooks have stopped: they keep what they could not send in the store."""
        if self._store is not None:
            self._store.close()
            self._store = None
        self.lease.release()

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            term = self.lease.term
            if self._store is not None and self._files is not None and term is not None:
                try:
                    await asyncio.to_thread(self._files.sweep)
                    await asyncio.to_thread(remove_orphans, self._store, term)
                except (OSError, sqlite3.Error, Fenced):
                    log.exception("sweeping expired and orphaned files failed")
