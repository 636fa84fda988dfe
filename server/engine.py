"""The engine: per-model bounded queues feeding one worker thread per device.

Pipeline calls never run on the event loop. Each device (``cpu``, ``cuda:0``,
...) has one worker thread, so one pipeline call runs at a time per device,
however many models share it; the worker takes turns between the models'
queues. Each model's queue is bounded: a full queue is :class:`QueueFull`
(the API answers 429 with a Retry-After estimated from measured job times).

A :class:`JobHandle` is the event-loop side of a job. The worker thread talks
to it only through ``loop.call_soon_threadsafe``: previews
(``ImageJob.on_preview``) land on an asyncio queue, the result on a future.
``cancel()`` sets the flag that ``ImageJob.should_cancel`` reads between
denoising steps, and drops the job at once if it is still waiting.

Room to grow: cross-request batching belongs in ``DeviceWorker._take_next``
(merge compatible waiting jobs of one model into one call); cancellation is
already wired through to the backends.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from PIL import Image

from pipelines.base import Cancelled, ImageBackend, ImageJob

log = logging.getLogger("easel.engine")

FIRST_JOB_SECONDS_GUESS = 10.0  # Retry-After basis before any job has been timed
AVERAGE_WEIGHT = 0.3  # weight of the newest job in the moving average


class QueueFull(Exception):
    def __init__(self, model: str, waiting: int, retry_after: int) -> None:
        super().__init__(f"model {model!r} already has {waiting} requests waiting")
        self.model = model
        self.waiting = waiting
        self.retry_after = retry_after


class EngineStopped(Exception):
    """The engine shut down before the job ran."""


@dataclass(frozen=True)
class Preview:
    index: int  # 0-based partial image number
    images: list[Image.Image]  # one per image in the job, at native resolution


class JobHandle:
    """A submitted job, seen from the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        model: str,
        job: ImageJob,
        before_run: Callable[[ImageBackend], object] | None = None,
    ) -> None:
        self.model = model
        self.job = job
        # Runs on the worker thread just before the job: anything else that touches the
        # backend (e.g. its tokenizer, which is not safe to share across threads) goes here.
        self.before_run = before_run
        self.before_run_result: object = None
        self._loop = loop
        self._cancel = threading.Event()
        self._result: asyncio.Future[list[Image.Image]] = loop.create_future()
        # A job whose client left settles with an error nobody awaits; mark it seen.
        self._result.add_done_callback(_mark_retrieved)
        self._previews: asyncio.Queue[Preview | None] = asyncio.Queue()
        self.run_seconds: float | None = None
        job.should_cancel = self._cancel.is_set
        job.on_preview = self._preview_from_worker

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._result.done()

    async def result(self) -> list[Image.Image]:
        """The images, or the backend's exception (Cancelled when dropped)."""
        # Shield: a caller that stops waiting must not cancel the future the worker will settle.
        return await asyncio.shield(self._result)

    async def previews(self) -> AsyncIterator[Preview]:
        """Partial images as the backend emits them; ends when the job finishes."""
        while (preview := await self._previews.get()) is not None:
            yield preview

    # -- called from the worker thread --------------------------------------------------

    def _preview_from_worker(self, index: int, images: list[Image.Image]) -> None:
        self._post(self._previews.put_nowait, Preview(index, images))

    def _finish(self, images: list[Image.Image] | None = None, error: BaseException | None = None) -> None:
        self._post(self._settle, images, error)

    def _post(self, callback, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    # -- on the loop -------------------------------------------------------------------

    def _settle(self, images: list[Image.Image] | None, error: BaseException | None) -> None:
        self._previews.put_nowait(None)
        if self._result.done():
            return
        if isinstance(error, StopIteration):
            # A future refuses StopIteration (TypeError), which would leave the request waiting forever.
            error = RuntimeError(f"backend raised StopIteration: {error}")
        if error is not None:
            self._result.set_exception(error)
        else:
            self._result.set_result(images or [])


def _mark_retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class ModelLane:
    """One model's queue and timing statistics. Guarded by its worker's condition."""

    def __init__(self, name: str, backend: ImageBackend, capacity: int, worker: DeviceWorker) -> None:
        self.name = name
        self.backend = backend
        self.capacity = capacity
        self.worker = worker
        self.waiting: deque[JobHandle] = deque()
        self.running: JobHandle | None = None
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

    def stats(self) -> dict[str, object]:
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

    def submit(self, lane: ModelLane, handle: JobHandle) -> None:
        with self._condition:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            if len(lane.waiting) >= lane.capacity:
                raise QueueFull(lane.name, len(lane.waiting), lane.retry_after())
            lane.waiting.append(handle)
            self._condition.notify()

    def withdraw(self, lane: ModelLane, handle: JobHandle) -> bool:
        """Remove a job that has not started; False if it is running or finished."""
        with self._condition:
            try:
                lane.waiting.remove(handle)
            except ValueError:
                return False
            lane.cancelled += 1
            return True

    def stats(self, lane: ModelLane) -> dict[str, object]:
        with self._condition:
            return lane.stats()

    def stop(self, timeout: float) -> None:
        with self._condition:
            self._stopping = True
            abandoned = [(lane, handle) for lane in self._lanes for handle in lane.waiting]
            for lane in self._lanes:
                lane.waiting.clear()
                if lane.running is not None:
                    lane.running._cancel.set()  # stop at its next denoising step
            self._condition.notify_all()
        for _, handle in abandoned:
            handle._finish(error=EngineStopped("the server is shutting down"))
        self._thread.join(timeout)

    def _take_next(self) -> tuple[ModelLane, JobHandle] | None:
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

    def _execute(self, lane: ModelLane, handle: JobHandle) -> None:
        started = time.monotonic()
        images: list[Image.Image] | None = None
        error: BaseException | None = None
        try:
            if handle.cancelled:
                raise Cancelled()
            if handle.before_run is not None:
                handle.before_run_result = handle.before_run(lane.backend)
            images = lane.backend.run(handle.job)
        except BaseException as raised:  # reported to the request that owns the job
            error = raised
        seconds = time.monotonic() - started
        # Statistics first, so whoever wakes on the result sees them updated.
        with self._condition:
            lane.running = None
            if error is None:
                lane.completed += 1
                lane.record(seconds)
            elif isinstance(error, Cancelled):
                lane.cancelled += 1
            else:
                lane.failed += 1
        if error is None:
            handle.run_seconds = seconds
        handle._finish(images, error)


def _device_key(device: str) -> str:
    # "cuda" and "cuda:0" are the same GPU and must share a worker.
    return "cuda:0" if device == "cuda" else device


class Engine:
    """Routes jobs to per-model lanes on per-device workers."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._lanes: dict[str, ModelLane] = {}
        self._workers: dict[str, DeviceWorker] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def add_model(self, name: str, backend: ImageBackend) -> None:
        """Make a loaded model available (called from the loading thread); EngineStopped after shutdown."""
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

    def submit(
        self, model: str, job: ImageJob, *, before_run: Callable[[ImageBackend], object] | None = None
    ) -> JobHandle:
        """Queue ``job``; raises QueueFull. Call from the event loop.

        ``before_run(backend)`` runs on the device's thread right before the job;
        its return value is ``handle.before_run_result``.
        """
        lane = self._lanes[model]
        handle = JobHandle(asyncio.get_running_loop(), model, job, before_run)
        lane.worker.submit(lane, handle)
        return handle

    def cancel(self, handle: JobHandle) -> None:
        """Stop a job: dropped if waiting, interrupted at the next step if running."""
        handle._cancel.set()
        lane = self._lanes[handle.model]
        if lane.worker.withdraw(lane, handle):
            handle._finish(error=Cancelled())

    def stats(self, model: str) -> dict[str, object] | None:
        lane = self._lanes.get(model)
        return None if lane is None else lane.worker.stats(lane)

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop(timeout)
