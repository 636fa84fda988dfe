"""The Ray engine: the :class:`~server.engine.base.Engine` of an ingress replica; jobs run on model replicas.

Each model is a Serve deployment (:class:`server.scaleout.deployments.ModelReplica`)
reached through its handle. ``submit`` starts one streaming call on it; the
replica answers ``accepted`` once it holds the job, then previews, then the
result (:mod:`server.scaleout.wire`). Until ``accepted`` the job waits here,
in Serve's router, and ``--queue-size`` bounds how many may wait per model on
this ingress: more is a 429, as in one process (a retried request may also
use an equal reserve). ``drain`` waits for the jobs here and on replicas.

Cancelling a handle cancels the Serve call; Serve cancels the replica's task,
which cancels the job in its engine, so the backend stops at its next
denoising step. When the replica running a job dies or stops it (Serve scales
it down or redeploys it past its grace period), the job is sent again
(Serve routes it to a live replica; its seeds are fixed, so the images are the
same and previews already forwarded are not repeated), up to
``ATTEMPTS_PER_JOB`` times; then the request gets a retryable 503.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from pipelines.base import ImageJob, ModelInfo
from pipelines.errors import Cancelled

from ..engine.base import (
    EngineMetrics,
    EngineStopped,
    JobHandle,
    JobResult,
    ModelToLoad,
    QueueFull,
    WorkerLost,
)
from ..engine.local import JobHandleBase, wait_until
from ..engine.worker import QueueFigures
from .figures import Figure, replay
from .wire import Message, RemoteError, error_from_wire, job_to_wire, preview_from_wire, result_from_wire

log = logging.getLogger("easel.scaleout")

ATTEMPTS_PER_JOB = 3  # a job whose replica dies is sent again, up to this many times in all


class ReplicaStopped(Exception):
    """The replica stopped the job without being asked: it is shutting down (scaled down, redeployed)."""


REPLICA_LOST = (RayActorError, ReplicaUnavailableError, ReplicaStopped)


class RemoteModel(QueueFigures):
    """One model as this ingress sees it: its deployment handle and its jobs' figures (event loop only)."""

    def __init__(self, name: str, handle: DeploymentHandle, capacity: int, metrics: EngineMetrics | None) -> None:
        super().__init__(capacity)
        self.name = name
        self.handle = handle
        self.stream = handle.options(stream=True)
        self.metrics = metrics
        self.waiting = 0  # submitted here, not yet held by a replica
        self.waiting_images = 0
        self.running = 0  # held by a replica
        self.resent = 0  # jobs sent again after their replica died
        self.by_replica: Counter[str] = Counter()  # jobs completed, per replica id
        # Its seconds_per_image is a job's run time over its images (batched: an upper bound).

    def count_waiting(self, job: ImageJob, change: int) -> None:
        self.waiting += change
        self.waiting_images += change * job.n

    def record_result(self, replica: str, result: JobResult) -> None:
        self.completed += 1
        self.by_replica[replica] += 1
        self.record(result.run_seconds, len(result.images))
        if self.metrics is not None:
            self.metrics.images.labels(self.name).inc(len(result.images))

    def replay(self, figures: Iterable[Figure]) -> None:
        """Record what a replica measured inside its pipeline calls (:mod:`server.scaleout.figures`)."""
        if self.metrics is not None:
            replay(figures, self.metrics)

    def retry_after(self, images: int) -> float:
        """As ModelLane.retry_after; the jobs the replicas hold now stand for its slots (each runs in parallel)."""
        return self.turn_for(time.monotonic(), self.waiting_images, images, slots=self.running)

    def stats(self) -> dict[str, Any]:
        return {
            **self.figures(queued=self.waiting, running=self.running),
            "resent": self.resent,
            "completed_by_replica": dict(sorted(self.by_replica.items())),
        }


class RayJobHandle(JobHandleBase):
    """A job on a model deployment, seen from the ingress's event loop."""

    def __init__(self, model: RemoteModel, job: ImageJob, *, background: bool = False) -> None:
        super().__init__(asyncio.get_running_loop(), job)
        self.model = model
        self.background = background  # a batch line: the replica queues it behind its interactive jobs
        self.replica: str | None = None  # the replica holding the job, once accepted
        self._previews_forwarded = 0
        self._call: DeploymentResponseGenerator | None = None
        self._stopping = False
        model.count_waiting(job, 1)
        self._task = asyncio.create_task(self._drive())

    def when_done(self, callback: Callable[[RayJobHandle], object]) -> None:
        self._result.add_done_callback(lambda _: callback(self))

    def cancel(self, error: BaseException | None = None) -> None:
        """Stop the job here and on its replica; ``error`` settles it (default: Cancelled)."""
        if error is not None:
            self._settle(error=error)
        self._stopping = True
        if self._call is not None:
            self._call.cancel()  # reaches the replica: its task is cancelled, and with it the job
        self._task.cancel()

    async def _drive(self) -> None:
        try:
            wire = await off_the_loop_if_pixels(self.job.image is not None, self._to_wire, self.job)
            for attempt in range(1, ATTEMPTS_PER_JOB + 1):
                try:
                    await self._run_once(wire)
                    return
                except REPLICA_LOST as error:
                    if attempt == ATTEMPTS_PER_JOB:
                        raise WorkerLost(f"replicas of {self.model.name!r} died {attempt} times under it") from error
                    log.warning("replica %s of %s died under a job; sending it again", self.replica, self.model.name)
                    self.model.resent += 1
                    self._release()
                    self.model.count_waiting(self.job, 1)
        except asyncio.CancelledError:
            self._settle(error=Cancelled())
        except Exception as error:  # the request that owns the job reports it (server.serving.job_errors)
            self._settle(error=error)

    def _to_wire(self, job: ImageJob) -> Message:
        return job_to_wire(job, background=self.background)

    async def _run_once(self, wire: Message) -> None:
        self._call = self.model.stream.run.remote(wire)
        if self._stopping:
            self._call.cancel()
        async for message in self._call:
            kind = message["kind"]
            if kind == "accepted":
                self.model.count_waiting(self.job, -1)
                self.model.running += 1
                self.replica = message["replica"]
            elif kind == "preview" and message["index"] >= self._previews_forwarded:
                self._previews_forwarded = message["index"] + 1
                self._add_preview(preview_from_wire(message))
            elif kind in ("result", "error"):
                self.model.replay(message.get("figures", ()))
                self._finish(message)
                return
        raise RemoteError("the replica ended the job without an answer")

    def _finish(self, message: Message) -> None:
        if message["kind"] == "result":
            self._settle(result=result_from_wire(message))
            return
        error = error_from_wire(message)
        if isinstance(error, (Cancelled, EngineStopped)):  # this side asked nothing: the replica is going
            raise ReplicaStopped(str(error))
        self._settle(error=error)

    def _release(self) -> None:
        """Take the job off this model's waiting or running count."""
        if self.replica is None:
            self.model.count_waiting(self.job, -1)
        else:
            self.model.running -= 1
            self.replica = None

    def _settle(self, result: JobResult | None = None, error: BaseException | None = None) -> None:
        if not self.done:  # count the job once, by its first settlement
            replica = self.replica
            self._release()
            if result is not None:
                self.model.record_result(replica or "unknown", result)
            elif isinstance(error, Cancelled):
                self.model.cancelled += 1
                if self.model.metrics is not None:
                    self.model.metrics.cancelled.labels(self.model.name).inc()
            else:
                self.model.failed += 1
        super()._settle(result, error)


async def off_the_loop_if_pixels(has_pixels: bool, convert: Callable[[Any], Any], value: Any) -> Any:
    """``convert(value)``, in a thread when an input image (up to the upload limit's megapixels) is copied."""
    return await asyncio.to_thread(convert, value) if has_pixels else convert(value)


class RayEngine:
    """Runs each model's jobs on its Serve deployment; one per ingress replica."""

    def __init__(
        self, deployments: Mapping[str, DeploymentHandle], queue_size: int, metrics: EngineMetrics | None = None
    ) -> None:
        self._models = {name: RemoteModel(name, handle, queue_size, metrics) for name, handle in deployments.items()}
        self._live: set[RayJobHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._taking = True

    def load(self, model: ModelToLoad) -> ModelInfo:
        """Wait until a replica of the model's deployment has loaded it (blocking: the loading thread)."""
        remote = self._models.get(model.name)
        if remote is None:
            raise ValueError(f"no Ray Serve deployment for model {model.name!r}")
        loaded: Message = remote.handle.model_info.remote().result()
        if loaded["kind"] == "error":
            raise error_from_wire(loaded)
        info: ModelInfo = loaded["info"]
        with self._lock:
            if self._stopped:
                raise EngineStopped("the server is shutting down")
        return info

    def unload(self, model: str, *, park: bool = False) -> bool:
        """Never here: each model is a Serve deployment whose replicas Serve itself starts and stops."""
        return False

    def submit(self, model: str, job: ImageJob, *, retried: bool = False, background: bool = False) -> RayJobHandle:
        """As LocalEngine's: ``--queue-size`` jobs may wait per model on this ingress, retried ones also an
        equal reserve; a job waits here until a replica holds it (Serve's ``max_ongoing_requests``). Background
        jobs (batch lines) are outside that limit, and the replica holding one queues it behind its interactive
        jobs. Serve's router does not tell them apart: while every replica holds ``max_ongoing_requests`` jobs,
        a batch line waits for a place as an interactive job does."""
        remote = self._models[model]
        if self._stopped or not self._taking:
            raise EngineStopped("the server is shutting down")
        if not background and remote.waiting >= remote.capacity * (2 if retried else 1):
            raise QueueFull(model, remote.waiting, remote.retry_after(job.n))
        self._loop = asyncio.get_running_loop()
        handle = RayJobHandle(remote, job, background=background)
        self._live.add(handle)
        handle.when_done(self._live.discard)
        return handle

    def cancel(self, handle: JobHandle) -> None:
        assert isinstance(handle, RayJobHandle)  # an engine only ever gets back its own handles
        handle.cancel()

    def stats(self, model: str) -> dict[str, Any] | None:
        remote = self._models.get(model)
        return None if remote is None else remote.stats()

    def drain(self, timeout: float) -> bool:
        """Take no new jobs and wait for those here or on replicas (blocking); True if all finished in time."""
        self._taking = False
        return wait_until(lambda: not self._live, timeout)  # emptied on the event loop as jobs settle

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop taking jobs and stop every job still here or on a replica (from any thread)."""
        with self._lock:
            self._stopped = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        stopped = asyncio.run_coroutine_threadsafe(self._stop_all(), loop)
        try:
            stopped.result(timeout)
        except Exception:  # the loop is closing: the calls end with it
            log.debug("stopping jobs at shutdown did not finish", exc_info=True)

    async def _stop_all(self) -> None:
        for handle in list(self._live):
            handle.cancel(EngineStopped("the server is shutting down"))
