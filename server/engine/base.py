"""The engine interface: what the serving layer needs from whatever runs its jobs.

An engine loads models, queues jobs per model, runs them, and can cancel
them. The serving layer holds a :class:`JobHandle` per submitted job and
awaits its previews and result on the event loop. Implementations: the
in-process one in :mod:`server.engine.local`; batching or remote replicas
slot in behind the same methods.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from pipelines.base import ImageJob, ModelInfo, Ticket
from pipelines.speed import SpeedOptions
from weights.spec import ModelSpec


class QueueFull(Exception):
    def __init__(self, model: str, waiting: int, retry_after: float) -> None:
        super().__init__(f"model {model!r} already has {waiting} requests waiting")
        self.model = model
        self.waiting = waiting  # the queue's capacity, which is full
        self.retry_after = retry_after  # seconds until a place is likely free, jittered


class EngineStopped(Exception):
    """The engine shut down before the job ran."""


class WorkerLost(Exception):
    """The process running the job went away (a remote replica died) and retrying it there failed too."""


@dataclass(frozen=True)
class ModelToLoad:
    """One model for the engine to load: its spec, and where and how this server loads it."""

    spec: ModelSpec
    device: str | None  # None: the loader's choice
    dtype: str | None
    optimize: SpeedOptions = SpeedOptions()  # speed settings applied at load (pipelines.optimize)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Preview:
    index: int  # 0-based partial image number
    images: list[Image.Image]  # one per image in the job, at native resolution


@dataclass(frozen=True)
class JobResult:
    images: list[Image.Image]  # the job's n images at native resolution, in seed order
    prompt_tokens: int  # the prompt's tokens in the model's own tokenizer (0 without a prompt), for usage
    run_seconds: float


@dataclass(frozen=True)
class EngineMetrics:
    """Where an engine records its figures: prometheus-client metrics, made per app by :mod:`server.observe.metrics`."""

    queue_wait: Any  # Histogram by model: seconds from submit to the start of the job's pipeline call
    batch_images: Any  # Histogram by model: images per pipeline call
    stage_seconds: Any  # Histogram by model and stage: seconds each pipeline stage took per call
    images: Any  # Counter by model: images made
    cancelled: Any  # Counter by model: jobs cancelled (client gone) or dropped
    busy_seconds: Any  # Counter by device: seconds a worker slot spent in pipeline calls
    nonfinite: Any  # Counter by model and stage: jobs failed because a stage output NaN or infinite values
    requeued: Any  # Counter by model: batch-line jobs queued again when their call gave its slot up


DEFAULT_MAX_BATCH_IMAGES = {"gpu": 16, "cpu": 8}
# Two CPU slots pay because a small model's call cannot keep two cores busy (OpenMP's own overhead was 27%
# of self time under load for easel-mini, 8.7M parameters). A large model's matrix products keep every core
# busy in one call, and a second copy doubles memory counted in GB (Kandinsky 2.2: 4.9 billion parameters,
# 20 GB in float32; Karlo: over 1.7 billion), so past this size a model gets one copy unless --workers is given.
SECOND_COPY_MAX_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class BatchPolicy:
    """How a device runs its jobs: worker slots, images per call, the wait for companions."""

    workers: int
    max_batch_images: int
    batch_wait_ms: float

    @classmethod
    def for_device(
        cls, device: str, *, workers: int | None, max_batch_images: int | None, batch_wait_ms: float | None
    ) -> BatchPolicy:
        """The settings given, the rest by device (measured: docs/performance.md, "Serving many users")."""
        gpu = not device.startswith(("cpu", "mps"))
        return cls(
            workers=workers or (1 if gpu else 2),
            max_batch_images=max_batch_images or DEFAULT_MAX_BATCH_IMAGES["gpu" if gpu else "cpu"],
            batch_wait_ms=batch_wait_ms if batch_wait_ms is not None else (10.0 if gpu else 30.0),
        )


def copies_for(device: str, workers: int | None, parameters: int) -> int:
    """Copies of a model the in-process engine loads: one per worker slot, one for a large model unless --workers
    says (each slot runs its own copy: a pipeline is not safe to share across threads)."""
    if workers is None and parameters > SECOND_COPY_MAX_PARAMETERS:
        return 1
    return BatchPolicy.for_device(device, workers=workers, max_batch_images=None, batch_wait_ms=None).workers


class JobHandle(Protocol):
    """A submitted job, seen from the event loop."""

    job: ImageJob

    @property
    def done(self) -> bool: ...

    async def result(self) -> JobResult:
        """The result, or the backend's exception (Cancelled when the job was dropped)."""
        ...

    def previews(self) -> AsyncIterator[Preview]:
        """Partial images as the backend emits them; ends when the job finishes."""
        ...


class SlotJob(Protocol):
    """A submitted job, seen from a worker slot's thread (the in-process engine's handle)."""

    job: ImageJob
    ticket: Ticket  # what the backend gets: the job and its control
    background: bool  # a batch line
    batch_key: Hashable | None
    submitted: float  # monotonic
    # While it runs: asked at each denoising step; counts it; in a call of batch lines may pause; True: give way.
    checkpoint: Callable[[], bool] | None

    @property
    def cancelled(self) -> bool: ...

    def request_cancel(self) -> None: ...

    def finish_from_worker(self, result: JobResult | None = None, error: BaseException | None = None) -> None: ...


class Engine(Protocol):
    def load(self, model: ModelToLoad) -> ModelInfo:
        """Load a model and make it available (blocking: call from a thread); EngineStopped after shutdown."""
        ...

    def unload(self, model: str, *, park: bool = False) -> bool:
        """Free an idle model's memory (``park``: move it to CPU RAM, where ``load`` finds it again); False while
        it has a job waiting or running, which an unload never cancels (blocking: call from a thread)."""
        ...

    def submit(self, model: str, job: ImageJob, *, retried: bool = False, background: bool = False) -> JobHandle:
        """Queue ``job`` for a loaded model (call from the event loop); raises QueueFull or EngineStopped.

        ``background``: a batch line, run in the capacity interactive jobs leave idle; it never makes the
        queue refuse a job.

        ``retried``: the client says this request repeats one that was turned away. Such a
        job may also take a place in a reserve as large as the queue, so that clients
        turned away once are not turned away again by newcomers.
        """
        ...

    def cancel(self, handle: JobHandle) -> None:
        """Stop a job: dropped if waiting, interrupted at the next denoising step if running."""
        ...

    def stats(self, model: str) -> dict[str, Any] | None:
        """Queue figures for a loaded model; None if it is not loaded."""
        ...

    def drain(self, timeout: float) -> bool:
        """Take no new jobs and wait for the queued and running ones (blocking); True if all finished in time."""
        ...

    def shutdown(self, timeout: float) -> None:
        """Stop taking jobs, drop the waiting ones, interrupt the running ones (blocking)."""
        ...


def cpu_cores() -> int:
    """The cores this process may run on: its affinity where the OS has one (a container or taskset narrows it)."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only: macOS and Windows have no such call
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1
