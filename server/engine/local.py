"""The in-process engine: the models' lanes on per-device workers (:mod:`server.engine.worker`), in this process.

Its job handles are here too: :class:`JobHandleBase`, the result a request awaits and the previews it streams, is
shared with the Ray engine's handles (:mod:`server.scaleout.engine`); a :class:`LocalJobHandle` is reached from
worker threads only through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from PIL import Image

from pipelines.base import ImageBackend, ImageJob, JobControl, ModelInfo, Ticket
from pipelines.errors import Cancelled

from .base import (
    BatchPolicy,
    EngineMetrics,
    EngineStopped,
    JobHandle,
    JobResult,
    ModelToLoad,
    Preview,
    copies_for,
    cpu_cores,
)
from .worker import DeviceWorker, ModelLane


class JobHandleBase:
    """What every engine's job handle shares: the result the request awaits and the previews it streams.

    Call every method on the event loop; subclasses decide how a job's news reaches it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, job: ImageJob) -> None:
        self.job = job
        self._result: asyncio.Future[JobResult] = loop.create_future()
        # A job whose client left settles with an error nobody awaits; mark it seen.
        self._result.add_done_callback(_mark_retrieved)
        self._previews: asyncio.Queue[Preview | None] = asyncio.Queue()

    @property
    def done(self) -> bool:
        return self._result.done()

    async def result(self) -> JobResult:
        # Shield: a caller that stops waiting must not cancel the future the engine will settle.
        return await asyncio.shield(self._result)

    async def previews(self) -> AsyncIterator[Preview]:
        while (preview := await self._previews.get()) is not None:
            yield preview

    def _add_preview(self, preview: Preview) -> None:
        self._previews.put_nowait(preview)

    def _settle(self, result: JobResult | None = None, error: BaseException | None = None) -> None:
        """End the previews and settle the result (the first settlement counts; later ones only end previews)."""
        self._previews.put_nowait(None)
        if self._result.done():
            return
        if isinstance(error, StopIteration):
            # A future refuses StopIteration (TypeError), which would leave the request waiting forever.
            error = RuntimeError(f"backend raised StopIteration: {error}")
        if error is not None:
            self._result.set_exception(error)
        else:
            assert result is not None
            self._result.set_result(result)


def _mark_retrieved(future: asyncio.Future[JobResult]) -> None:
    if not future.cancelled():
        future.exception()


class LocalJobHandle(JobHandleBase):
    """A submitted job, seen from the event loop; worker threads call only its ``*_from_worker`` methods.

    It owns the job's ticket: the backend reaches the handle only through the ticket's control.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        model: str,
        job: ImageJob,
        batch_key: Hashable | None,
        *,
        background: bool = False,
    ):
        super().__init__(loop, job)
        self.model = model
        self.background = background  # a batch line: waits behind every interactive job, outside the queue's limit
        self.batch_key = batch_key
        self.submitted = time.monotonic()
        self._loop = loop
        self._cancel = threading.Event()
        self.ticket = Ticket(job, JobControl(on_preview=self.preview_from_worker, should_cancel=self._should_stop))
        # Set by the worker while the job runs: asked at each denoising step, it counts the step, may pause there
        # (in a call of batch lines, which gives way to interactive jobs), and says whether the call gives its
        # slot up.
        self.checkpoint: Callable[[], bool] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _should_stop(self) -> bool:
        if self._cancel.is_set():
            return True
        checkpoint = self.checkpoint  # may pause; a cancel that comes meanwhile stops the job at once
        return checkpoint is not None and (checkpoint() or self._cancel.is_set())

    def request_cancel(self) -> None:
        """Ask the backend to drop this job at its next denoising step (any thread)."""
        self._cancel.set()

    # -- called from worker threads -------------------------------------------------------------

    def preview_from_worker(self, index: int, images: list[Image.Image]) -> None:
        self._post(self._add_preview, Preview(index, images))

    def finish_from_worker(self, result: JobResult | None = None, error: BaseException | None = None) -> None:
        self._post(self._settle, result, error)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(callback, *args)


Loader = Callable[..., ImageBackend]  # pipelines.loader.load_backend's signature


def load_backend(*args: Any, **kwargs: Any) -> ImageBackend:
    # Imported on first use, in the loading thread: torch and diffusers take seconds to import.
    from pipelines.loader import load_backend

    return load_backend(*args, **kwargs)


def move_backend(backend: ImageBackend, device: str) -> None:
    from pipelines.residency import move_backend

    move_backend(backend, device)


def release_memory() -> None:
    from pipelines.residency import release_memory

    release_memory()


def _device_key(device: str) -> str:
    # "cuda" and "cuda:0" are the same GPU and must share a worker.
    return "cuda:0" if device == "cuda" else device


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    """Poll ``done`` until it is true (True) or ``timeout`` seconds have passed (False); blocking."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class LocalEngine:
    """Routes jobs to per-model lanes on per-device workers, in this process."""

    def __init__(
        self,
        queue_size: int,
        loader: Loader = load_backend,
        *,
        workers: int | None = None,
        max_batch_images: int | None = None,
        batch_wait_ms: float | None = None,
        cores: int | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.loader = loader
        self.workers = workers
        self.max_batch_images = max_batch_images
        self.batch_wait_ms = batch_wait_ms
        self.cores = cores
        self.metrics = metrics
        self._lanes: dict[str, ModelLane] = {}
        self._parked: dict[str, tuple[list[ImageBackend], str]] = {}  # warm tier: replicas in CPU RAM, their device
        self._workers: dict[str, DeviceWorker] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def load(self, model: ModelToLoad) -> ModelInfo:
        parked = self._parked.pop(model.name, None)
        if parked is not None:  # warm in CPU RAM: move back, no disk read
            replicas, device = parked
            for backend in replicas:
                move_backend(backend, device)
            self.add_model(model.name, replicas)
            return replicas[0].info

        def load_one() -> ImageBackend:
            spec = model.spec
            return self.loader(
                spec.name,
                spec.family,
                spec.path,
                presets=spec.presets,
                device=model.device,
                dtype=model.dtype,
                optimize=model.optimize,
            )

        first = load_one()
        # Each slot runs its own copy: a pipeline object (its scheduler) is not safe to share across threads.
        self.add_model(model.name, [first] + [load_one() for _ in range(self._copies(first.info) - 1)])
        return first.info

    def _copies(self, info: ModelInfo) -> int:
        """Copies of a model to load: one per worker slot, but one for a large model unless --workers says."""
        return copies_for(info.device, self.workers, sum(info.parameter_counts.values()))

    def _policy(self, device: str) -> BatchPolicy:
        return BatchPolicy.for_device(
            device, workers=self.workers, max_batch_images=self.max_batch_images, batch_wait_ms=self.batch_wait_ms
        )

    def add_model(self, name: str, replicas: ImageBackend | list[ImageBackend]) -> None:
        """Make a loaded model available (one backend, or one per worker slot); EngineStopped after shutdown."""
        replicas = replicas if isinstance(replicas, list) else [replicas]
        device = _device_key(replicas[0].info.device)
        with self._lock:
            if self._stopped:  # a model that finished loading as the server stopped: start no worker for it
                raise EngineStopped("the server is shutting down")
            worker = self._workers.get(device)
            if worker is None:
                cores = (self.cores or cpu_cores()) if device.startswith("cpu") else 1
                policy = self._policy(device)
                worker = self._workers[device] = DeviceWorker(device, policy, cores, self.metrics)
            lane = ModelLane(name, replicas, self.queue_size, worker)
            worker.attach(lane)
            self._lanes[name] = lane

    def unload(self, model: str, *, park: bool = False) -> bool:
        """Stop serving an idle model and free its memory, or with ``park`` move it to CPU RAM (the warm tier).

        False, with nothing changed, while one of its jobs waits or runs: an unload never cancels a job.
        """
        with self._lock:
            lane = self._lanes.get(model)
            if lane is None:  # not serving: a parked model is dropped from CPU RAM unless asked to stay
                if not park and self._parked.pop(model, None) is not None:
                    release_memory()
                return True
            if not lane.worker.detach(lane):
                return False
            del self._lanes[model]
        replicas, lane.replicas = lane.replicas, []
        if park:
            self._parked[model] = (replicas, replicas[0].info.device)
            for backend in replicas:
                move_backend(backend, "cpu")
        del replicas, lane
        release_memory()
        return True

    def parked(self, model: str) -> bool:
        """Whether the model waits in CPU RAM (the warm tier)."""
        return model in self._parked

    def submit(self, model: str, job: ImageJob, *, retried: bool = False, background: bool = False) -> LocalJobHandle:
        lane = self._lanes[model]
        key = lane.replicas[0].batch_key(job)
        handle = LocalJobHandle(asyncio.get_running_loop(), model, job, key, background=background)
        lane.worker.submit(lane, handle, retried=retried)
        return handle

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, LocalJobHandle)  # an engine only ever gets back its own handles
        handle.request_cancel()
        lane = self._lanes[handle.model]
        if lane.worker.withdraw(lane, handle):
            handle.finish_from_worker(error=Cancelled())
            if self.metrics is not None:
                self.metrics.cancelled.labels(lane.name).inc()

    def stats(self, model: str) -> dict[str, Any] | None:
        lane = self._lanes.get(model)
        return None if lane is None else lane.worker.stats(lane)

    def drain(self, timeout: float) -> bool:
        """Take no new jobs and wait for the queued and running ones; True if all finished in time."""
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop_taking()
        return wait_until(lambda: all(worker.idle() for worker in workers), timeout)

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop(timeout)
