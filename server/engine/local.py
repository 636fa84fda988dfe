"""The in-process engine: one worker thread per device runs every pipeline call for that device, one at a time.

Each model has a lane: a bounded queue of waiting jobs and its timing
figures. A device's worker takes turns between the lanes of the models on it,
so models sharing a GPU never run concurrently (they would contend for its
memory and compute) and pipeline work never blocks the event loop.

A :class:`LocalJobHandle` is the event-loop side of a job. The worker thread
talks to it only through ``loop.call_soon_threadsafe``: previews land on an
asyncio queue, the result on a future. Cancelling sets the flag the backend
reads between denoising steps (``ImageJob.should_cancel``), and drops the job
at once if it is still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from PIL import Image

from pipelines.base import Cancelled, ImageBackend, ImageJob, ModelInfo

from .base import EngineStopped, JobHandle, JobResult, ModelToLoad, Preview, QueueFull

log = logging.getLogger("easel.engine")

Loader = Callable[..., ImageBackend]  # pipelines.loader.load_backend's signature
FIRST_JOB_SECONDS_GUESS = 10.0  # Retry-After basis before any job has been timed
AVERAGE_WEIGHT = 0.3  # weight of the newest job in the moving average


def load_backend(*args: Any, **kwargs: Any) -> ImageBackend:
    # Imported on first use, in the loading thread: torch and diffusers take seconds to import.
    from pipelines.loader import load_backend

    return load_backend(*args, **kwargs)


class LocalJobHandle:
    """A submitted job, seen from the event loop; the worker thread calls only its ``*_from_worker`` methods."""

    def __init__(self, loop: asyncio.AbstractEventLoop, model: str, job: ImageJob) -> None:
        self.model = model
        self.job = job
        self._loop = loop
        self._cancel = threading.Event()
        self._result: asyncio.Future[JobResult] = loop.create_future()
        # A job whose client left settles with an error nobody awaits; mark it seen.
        self._result.add_done_callback(_mark_retrieved)
        self._previews: asyncio.Queue[Preview | None] = asyncio.Queue()
        job.should_cancel = self._cancel.is_set
        job.on_preview = self.preview_from_worker

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._result.done()

    def request_cancel(self) -> None:
        """Ask the backend to stop at its next denoising step (any thread)."""
        self._cancel.set()

    async def result(self) -> JobResult:
        # Shield: a caller that stops waiting must not cancel the future the worker will settle.
        return await asyncio.shield(self._result)

    async def previews(self) -> AsyncIterator[Preview]:
        while (preview := await self._previews.get()) is not None:
            yield preview

    # -- called from the worker thread ----------------------------------------------------------

    def preview_from_worker(self, index: int, images: list[Image.Image]) -> None:
        self._post(self._previews.put_nowait, Preview(index, images))

    def finish_from_worker(self, result: JobResult | None = None, error: BaseException | None = None) -> None:
        self._post(self._settle, result, error)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(callback, *args)

    # -- on the loop ------------------------------------------------------------------------------

    def _settle(self, result: JobResult | None, error: BaseException | None) -> None:
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


class ModelLane:
    """One model's queue and timing figures. Guarded by its worker's condition."""

    def __init__(self, name: str, backend: ImageBackend, capacity: int, worker: DeviceWorker) -> None:
        self.name = name
        self.backend = backend
        self.capacity = capacity
        self.worker = worker
        self.waiting: deque[LocalJobHandle] = deque()
        self.running: LocalJobHandle | None = None
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.average_seconds: float | None = None

    def record(self, seconds: float) -> None:
        if self.average_seconds is None:
            self.average_seconds = seconds
        else:
            self.average_seconds += AVERAGE_WEIGHT * (seconds - self.average_seconds)

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by one job."""
        per_job = self.average_seconds if self.average_seconds is not None else FIRST_JOB_SECONDS_GUESS
        return max(1, math.ceil(per_job))

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self.waiting),
            "running": 1 if self.running is not None else 0,
            "queue_size": self.capacity,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "average_seconds": None if self.average_seconds is None else round(self.average_seconds, 3),
        }


class DeviceWorker:
    """The thread that runs every pipeline call for one device, one at a time."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._condition = threading.Condition()
        self._lanes: list[ModelLane] = []
        self._turn = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"easel-worker-{device}", daemon=True)
        self._thread.start()

    def attach(self, lane: ModelLane) -> None:
        with self._condition:
            self._lanes.append(lane)

    def submit(self, lane: ModelLane, handle: LocalJobHandle) -> None:
        with self._condition:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            if len(lane.waiting) >= lane.capacity:
                raise QueueFull(lane.name, len(lane.waiting), lane.retry_after())
            lane.waiting.append(handle)
            self._condition.notify()

    def withdraw(self, lane: ModelLane, handle: LocalJobHandle) -> bool:
        """Remove a job that has not started; False if it is running or finished."""
        with self._condition:
            try:
                lane.waiting.remove(handle)
            except ValueError:
                return False
            lane.cancelled += 1
            return True

    def stats(self, lane: ModelLane) -> dict[str, Any]:
        with self._condition:
            return lane.stats()

    def stop(self, timeout: float) -> None:
        with self._condition:
            self._stopping = True
            abandoned = [handle for lane in self._lanes for handle in lane.waiting]
            for lane in self._lanes:
                lane.waiting.clear()
                if lane.running is not None:
                    lane.running.request_cancel()  # stop at its next denoising step
            self._condition.notify_all()
        for handle in abandoned:
            handle.finish_from_worker(error=EngineStopped("the server is shutting down"))
        self._thread.join(timeout)

    def _take_next(self) -> tuple[ModelLane, LocalJobHandle] | None:
        """The next job, taking turns between models. Call with the condition held."""
        for offset in range(len(self._lanes)):
            lane = self._lanes[(self._turn + offset) % len(self._lanes)]
            if lane.waiting:
                self._turn = (self._turn + offset + 1) % len(self._lanes)
                return lane, lane.waiting.popleft()
        return None

    def _run(self) -> None:
        while True:
            with self._condition:
                picked = self._take_next()
                while picked is None and not self._stopping:
                    self._condition.wait()
                    picked = self._take_next()
                if picked is None:
                    return
                lane, handle = picked
                lane.running = handle
            self._execute(lane, handle)

    def _execute(self, lane: ModelLane, handle: LocalJobHandle) -> None:
        started = time.monotonic()
        result: JobResult | None = None
        error: BaseException | None = None
        try:
            if handle.cancelled:
                raise Cancelled()
            job = handle.job
            # Counted here, on the device's thread: the tokenizer is not safe to share across threads.
            prompt_tokens = lane.backend.count_tokens(job.prompt) if job.prompt else 0
            images = lane.backend.run(job)
            result = JobResult(images, prompt_tokens, time.monotonic() - started)
        except BaseException as raised:  # reported to the request that owns the job
            error = raised
        # Figures first, so whoever wakes on the result sees them updated.
        with self._condition:
            lane.running = None
            if result is not None:
                lane.completed += 1
                lane.record(result.run_seconds)
            elif isinstance(error, Cancelled):
                lane.cancelled += 1
            else:
                lane.failed += 1
        handle.finish_from_worker(result, error)


def _device_key(device: str) -> str:
    # "cuda" and "cuda:0" are the same GPU and must share a worker.
    return "cuda:0" if device == "cuda" else device


class LocalEngine:
    """Routes jobs to per-model lanes on per-device workers, in this process."""

    def __init__(self, queue_size: int, loader: Loader = load_backend) -> None:
        self.queue_size = queue_size
        self.loader = loader
        self._lanes: dict[str, ModelLane] = {}
        self._workers: dict[str, DeviceWorker] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def load(self, model: ModelToLoad) -> ModelInfo:
        backend = self.loader(
            model.name,
            model.family,
            model.path,
            presets=model.presets,
            device=model.device,
            dtype=model.dtype,
            optimize=model.optimize,
        )
        self.add_model(model.name, backend)
        return backend.info

    def add_model(self, name: str, backend: ImageBackend) -> None:
        """Make a loaded backend available; EngineStopped after shutdown."""
        device = _device_key(backend.info.device)
        with self._lock:
            if self._stopped:  # a model that finished loading as the server stopped: start no worker for it
                raise EngineStopped("the server is shutting down")
            worker = self._workers.get(device)
            if worker is None:
                worker = self._workers[device] = DeviceWorker(device)
            lane = ModelLane(name, backend, self.queue_size, worker)
            worker.attach(lane)
            self._lanes[name] = lane

    def submit(self, model: str, job: ImageJob) -> LocalJobHandle:
        lane = self._lanes[model]
        handle = LocalJobHandle(asyncio.get_running_loop(), model, job)
        lane.worker.submit(lane, handle)
        return handle

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, LocalJobHandle)  # an engine only ever gets back its own handles
        handle.request_cancel()
        lane = self._lanes[handle.model]
        if lane.worker.withdraw(lane, handle):
            handle.finish_from_worker(error=Cancelled())

    def stats(self, model: str) -> dict[str, Any] | None:
        lane = self._lanes.get(model)
        return None if lane is None else lane.worker.stats(lane)

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop(timeout)
