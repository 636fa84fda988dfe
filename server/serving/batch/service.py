"""The Files and Batch APIs of one server: their store opened on first use, their runner, their sweeps."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from weights.registry import easel_home

from ...http.errors import APIError
from ...settings.config import Settings
from ..images import ImageServing
from .batches import Batches
from .files import Files, no_such_image_file
from .runner import BatchEvents, BatchRunner, NoEvents
from .store import Store

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
        serving.file_bytes = self._image_bytes

    def _image_bytes(self, file_id: str, param: str) -> bytes:
        if self._store is None and not Store.exists(self.directory):
            raise no_such_image_file(file_id, param)  # nothing uploaded yet: no need to make a store to say so
        return self.files.image_bytes(file_id, param)

    def _open(self) -> None:
        if self._store is None:
            store = Store(self.directory)  # StoreBusy (503) if another server holds the directory
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

    async def start(self) -> None:
        """Resume the batches a previous run left unfinished (only if this directory already has a store)."""
        if not Store.exists(self.directory):
            return
        try:
            active = await asyncio.to_thread(lambda: self.batches.active())
        except APIError as error:  # another server holds the directory: it runs the batches
            log.warning("%s", error.message)
            return
        for batch_id in active:
            log.info("resuming batch %s", batch_id)
            self.runner.start(batch_id)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.stop()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            if self._files is not None:
                try:
                    await asyncio.to_thread(self._files.sweep)
                except OSError:
                    log.exception("sweeping expired files failed")
