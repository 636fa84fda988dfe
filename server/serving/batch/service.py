"""The Files and Batch APIs of one server: their store opened on first use, their runner, their sweeps.

Every server sharing a data directory answers these APIs from the one store;
the one that holds the runner lease (:mod:`.lease`) runs the batches, sends
their webhook events and sweeps expired files. The others keep trying for the
lease, so a batch created on any of them, or left by a holder that died,
starts within a second.
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
from .lease import RunnerLease
from .runner import BatchEvents, BatchRunner, NoEvents
from .store import DATABASE, Store

log = logging.getLogger("easel.batches")

SWEEP_SECONDS = 60.0


class BatchApi:
    """Opened lazily: a server whose clients never use these APIs writes nothing to the data directory."""

    def __init__(self, settings: Settings, serving: ImageServing, events: BatchEvents | None = None) -> None:
        self.directory: Path = settings.data_dir or easel_home() / "data"
        self.serving = serving
        self.events = events or NoEvents()
        self._store: Store | None = None
        self._files: Files | None = None
        self._batches: Batches | None = None
        self._runner: BatchRunner | None = None
        self.lease = RunnerLease(self.directory, DATABASE, ACTIVE_QUERY)
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
            self._runner = BatchRunner(self._batches, self._files, self.serving, self.events)
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

    @property
    def runner(self) -> BatchRunner:
        self._open()
        assert self._runner is not None
        return self._runner

    def created(self, batch_id: str) -> None:
        """A batch was just stored: run it now if this server holds the lease (else the holder finds it)."""
        if self.lease.held:
            self.runner.start(batch_id)

    def cancelled(self, batch_id: str) -> None:
        """A batch was just marked cancelling: stop its lines now if this server runs them."""
        if self.lease.held:
            self.runner.cancel(batch_id)

    async def start(self) -> None:
        """Try for the lease from now on: the holder resumes what an earlier run left unfinished."""
        self.lease.start()

    async def run_forever(self) -> None:
        """Once the lease is taken, look at the unfinished batches each time the database changes."""
        await self.lease.taken.wait()
        self._open()
        assert self._store is not None
        await asyncio.to_thread(self.events.take_over, self._store)
        while True:
            self.lease.changed.clear()
            try:
                await self._look()
            except (OSError, sqlite3.Error, APIError):
                log.exception("looking for batches to run failed; looking again on the next change")
            await self.lease.changed.wait()

    async def _look(self) -> None:
        for batch_id, status in (await asyncio.to_thread(self.batches.active)).items():
            if status == "cancelling" and not self.runner.cancelling(batch_id):
                self.runner.cancel(batch_id)
            elif not self.runner.running(batch_id) and not self.serving.draining:
                self.runner.start(batch_id)

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
            if self._files is not None and self.lease.held:
                try:
                    await asyncio.to_thread(self._files.sweep)
                except OSError:
                    log.exception("sweeping expired files failed")
