"""The worker side of the in-process engine: per device, slots that run batched pipeline calls, and the job handles.

A slot takes a model's oldest waiting job and every compatible one behind it (``backend.batch_key``), up to
``max_batch_images``; when the model's last call held several jobs (clients are sending in parallel) it waits up to
``batch_wait_ms`` for as many companions, and with one client it starts at once. On a CPU the cores are a budget
the slots share: a call with nothing else to do takes them all, calls running side by side take a share each, and no
call runs on more threads than there are free cores. Slot n starts work only while n others are busy, so a lone
request always runs on the first slot. Measured defaults: (docs/performance.md, "Serving many users").

A :class:`LocalJobHandle` is the event-loop side of a job; worker threads reach
it only through ``loop.call_soon_threadsafe``. Its base, :class:`JobHandleBase`,
and a model's :class:`QueueFigures` (moving average, Retry-After turns, stats)
are shared with the Ray engine's handles and models (:mod:`server.scaleout.engine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any

from PIL import Image

from pipelines.base import BatchResult, ImageBackend, ImageJob, JobControl, Ticket, run_isolated, use_cpu_threads
from pipelines.errors import Cancelled, NonFiniteOutput

from .base import BatchPolicy, EngineMetrics, EngineStopped, JobResult, Preview, QueueFull
from .queue_figures import RejectionTurns

AVERAGE_WEIGHT = 0.3  # weight of the newest figure in the moving average of seconds per image


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


class QueueFigures(RejectionTurns):
    """A model's figures as every engine keeps them: jobs by outcome, seconds per image, turns for rejected jobs."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.seconds_per_image: float | None = None  # a moving average
        self.turns_until = 0.0  # when the turns handed to rejected jobs run out (monotonic; see turn_for)

    def record(self, seconds: float, images: int) -> None:
        """A pipeline call (or a job) that made ``images`` in ``seconds``."""
        per_image = seconds / max(images, 1)
        if self.seconds_per_image is None:
            self.seconds_per_image = per_image
        else:
            self.seconds_per_image += AVERAGE_WEIGHT * (per_image - self.seconds_per_image)

    def figures(self, *, queued: int, running: int) -> dict[str, Any]:
        """The figures ``Engine.stats`` answers with."""
        return {
            "queued": queued,
            "running": running,
            "queue_size": self.capacity,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "average_seconds": None if self.seconds_per_image is None else round(self.seconds_per_image, 3),
        }


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
        self.ticket = Ticket(job, JobControl(on_preview=self.preview_from_worker, should_cancel=self._cancel.is_set))

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

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


class ModelLane(QueueFigures):
    """One model: its replicas (one per slot), its queue and its figures. Guarded by its worker's condition."""

    def __init__(self, name: str, replicas: list[ImageBackend], capacity: int, worker: DeviceWorker) -> None:
        super().__init__(capacity)
        self.name = name
        self.replicas = replicas
        self.worker = worker
        self.waiting: deque[LocalJobHandle] = deque()
        self.running: list[LocalJobHandle] = []
        self.last_batch_jobs = 1

    def retry_after(self, now: float, images: int) -> float:
        """When a rejected job should come back (QueueFigures.turn_for); each slot serves in parallel."""
        backlog_images = sum(handle.job.n for handle in self.waiting)
        return self.turn_for(now, backlog_images, images, slots=len(self.replicas))

    def stats(self) -> dict[str, Any]:
        return self.figures(queued=len(self.waiting), running=len(self.running))


class DeviceWorker:
    """The slots that run every pipeline call for one device; see the module docstring for the policy."""

    def __init__(self, device: str, policy: BatchPolicy, cores: int, metrics: EngineMetrics | None) -> None:
        self.device = device
        self.policy = policy
        self.metrics = metrics
        self.cpu = device.startswith("cpu")
        self.cores = cores
        self._threads_in_use = 0
        self._busy_slots = 0
        self._condition = threading.Condition()
        self._lanes: list[ModelLane] = []
        self._turn = 0
        self._stopping = False
        self._slots = [
            threading.Thread(target=self._run, args=(slot,), name=f"easel-worker-{device}-{slot}", daemon=True)
            for slot in range(policy.workers)
        ]
        for thread in self._slots:
            thread.start()

    def attach(self, lane: ModelLane) -> None:
        with self._condition:
            self._lanes.append(lane)

    def submit(self, lane: ModelLane, handle: LocalJobHandle, *, retried: bool = False) -> None:
        """Queue a job; a retried one (turned away before) may also take a place in an equal reserve.

        Interactive jobs queue ahead of every background one (batch lines), which a slot takes only when no
        interactive job waits, or as companions in an interactive job's call; background jobs take no place
        in the queue's limit (their runner bounds how many wait)."""
        with self._condition:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            if handle.background:
                lane.waiting.append(handle)
            else:
                interactive = sum(not waiting.background for waiting in lane.waiting)
                if interactive >= lane.capacity * (2 if retried else 1):
                    raise QueueFull(lane.name, interactive, lane.retry_after(time.monotonic(), handle.job.n))
                lane.waiting.insert(interactive, handle)  # interactive jobs are always the queue's head
            self._condition.notify_all()

    def withdraw(self, lane: ModelLane, handle: LocalJobHandle) -> bool:
        """Remove a job that has not started; False if it is running or finished."""
        with self._condition:
            try:
                lane.waiting.remove(handle)
            except ValueError:
                return False
            lane.cancelled += 1
            return True

    def detach(self, lane: ModelLane) -> bool:
        """Remove a model's lane if it has no job waiting or running (False otherwise): an unloaded model's."""
        with self._condition:
            if lane.waiting or lane.running:
                return False
            self._lanes.remove(lane)
            return True

    def stats(self, lane: ModelLane) -> dict[str, Any]:
        with self._condition:
            return lane.stats()

    def idle(self) -> bool:
        with self._condition:
            return not any(lane.waiting or lane.running for lane in self._lanes)

    def stop_taking(self) -> None:
        with self._condition:
            self._stopping = True

    def stop(self, timeout: float) -> None:
        """Refuse new jobs, fail the waiting ones, interrupt the running ones, and wait for the slots."""
        with self._condition:
            self._stopping = True
            abandoned = [handle for lane in self._lanes for handle in lane.waiting]
            for lane in self._lanes:
                lane.waiting.clear()
                for handle in lane.running:
                    handle.request_cancel()  # stop at its next denoising step
            self._condition.notify_all()
        for handle in abandoned:
            handle.finish_from_worker(error=EngineStopped("the server is shutting down"))
        deadline = time.monotonic() + timeout
        for thread in self._slots:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- the slots' loop ------------------------------------------------------------------------------

    def _run(self, slot: int) -> None:
        while True:
            with self._condition:
                picked = self._take_batch(slot)
                if picked is None:
                    return
                lane, batch, threads = picked
            try:
                self._execute(slot, lane, batch, threads)
            finally:
                with self._condition:
                    self._threads_in_use -= threads
                    self._busy_slots -= 1
                    self._condition.notify_all()

    def _take_batch(self, slot: int) -> tuple[ModelLane, list[LocalJobHandle], int] | None:
        """The next batch and the threads it may use, waiting as needed. Call with the condition held."""
        while True:
            lane = self._next_lane(slot) if self._may_take(slot) else None
            if lane is not None:
                break
            if self._stopping and not any(lane.waiting for lane in self._lanes):
                return None
            self._condition.wait()
        batch = [lane.waiting.popleft()]
        self._busy_slots += 1
        # A core held while it waits for companions: no other slot may count every core free meanwhile.
        self._threads_in_use += 1
        lane.running.extend(batch)
        self._gather(lane, batch)
        self._threads_in_use -= 1
        threads = self._threads_for(lane)
        self._threads_in_use += threads
        return lane, batch, threads

    def _may_take(self, slot: int) -> bool:
        # Slot n takes work only while n others are busy: a lone request always runs on slot 0, whose
        # model copy and OpenMP threads are warm (alternating slots made a lone request 1.4x slower).
        return self._busy_slots >= slot and (self._threads_in_use < self.cores or not self.cpu)

    def _next_lane(self, slot: int) -> ModelLane | None:
        """The next model with waiting jobs that this slot has a replica of, taking turns between models."""
        for offset in range(len(self._lanes)):
            lane = self._lanes[(self._turn + offset) % len(self._lanes)]
            if lane.waiting and slot < len(lane.replicas):
                self._turn = (self._turn + offset + 1) % len(self._lanes)
                return lane
        return None

    def _gather(self, lane: ModelLane, batch: list[LocalJobHandle]) -> None:
        """Add compatible waiting jobs to ``batch``; wait for companions while clients run in parallel."""
        key = batch[0].batch_key
        if key is None:
            return
        deadline = batch[0].submitted + self.policy.batch_wait_ms / 1000
        while True:
            images = sum(handle.job.n for handle in batch)
            for handle in list(lane.waiting):
                # An interactive call takes no batch lines: its client must not wait for a batch's images.
                joins = handle.batch_key == key and (batch[0].background or not handle.background)
                if joins and images + handle.job.n <= self.policy.max_batch_images:
                    lane.waiting.remove(handle)
                    lane.running.append(handle)
                    batch.append(handle)
                    images += handle.job.n
            wait = deadline - time.monotonic()
            full = images >= self.policy.max_batch_images or len(batch) >= lane.last_batch_jobs
            if full or wait <= 0 or self._stopping:
                return
            self._condition.wait(wait)

    def _threads_for(self, lane: ModelLane) -> int:
        if not self.cpu:
            return 1
        # Split the cores only when another slot is running or could take the waiting work.
        parallel = self._busy_slots > 1 or any(other.waiting and len(other.replicas) > 1 for other in self._lanes)
        share = max(1, self.cores // self.policy.workers) if parallel else self.cores
        return max(1, min(share, self.cores - self._threads_in_use))

    def _execute(self, slot: int, lane: ModelLane, batch: list[LocalJobHandle], threads: int) -> None:
        started = time.monotonic()
        backend = lane.replicas[slot]
        if self.cpu:
            use_cpu_threads(threads)
        jobs = [handle.job for handle in batch]
        # Counted here, on the backend's own thread: a tokenizer is not safe to share across threads.
        tokens = [backend.count_tokens(job.prompt) if job.prompt else 0 for job in jobs]
        result = run_isolated(backend, [handle.ticket for handle in batch])
        seconds = time.monotonic() - started
        self._record(lane, batch, result, seconds, started)
        for handle, outcome, prompt_tokens in zip(batch, result.outcomes, tokens, strict=True):
            if isinstance(outcome, BaseException):
                handle.finish_from_worker(error=outcome)
            else:
                handle.finish_from_worker(JobResult(outcome, prompt_tokens, seconds))

    def _record(
        self, lane: ModelLane, batch: list[LocalJobHandle], result: BatchResult, seconds: float, started: float
    ) -> None:
        made = sum(len(o) for o in result.outcomes if not isinstance(o, BaseException))
        done = sum(not isinstance(o, BaseException) for o in result.outcomes)
        left = sum(isinstance(o, Cancelled) for o in result.outcomes)
        # Figures first, so whoever wakes on a result sees them updated.
        with self._condition:
            for handle in batch:
                lane.running.remove(handle)
            lane.completed += done
            lane.cancelled += left
            lane.failed += len(batch) - done - left
            if made:
                lane.record(seconds, made)
            lane.last_batch_jobs = len(batch)
        if self.metrics is not None:
            self.metrics.batch_images.labels(lane.name).observe(sum(handle.job.n for handle in batch))
            for handle in batch:
                self.metrics.queue_wait.labels(lane.name).observe(started - handle.submitted)
            for stage, stage_seconds in result.stage_seconds.items():
                self.metrics.stage_seconds.labels(lane.name, stage).observe(stage_seconds)
            self.metrics.images.labels(lane.name).inc(made)
            self.metrics.cancelled.labels(lane.name).inc(left)
            self.metrics.busy_seconds.labels(self.device).inc(seconds)
            for outcome in result.outcomes:
                if isinstance(outcome, NonFiniteOutput):
                    self.metrics.nonfinite.labels(lane.name, outcome.stage).inc()
