"""The engine interface: what the serving layer needs from whatever runs its jobs.

An engine loads models, queues jobs per model, runs them, and can cancel
them. The serving layer holds a :class:`JobHandle` per submitted job and
awaits its previews and result on the event loop. Implementations: the
in-process one in :mod:`server.engine.local`; batching or remote replicas
slot in behind the same methods.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from pipelines.base import ImageJob, ModelInfo, SpeedOptions


class QueueFull(Exception):
    def __init__(self, model: str, waiting: int, retry_after: int) -> None:
        super().__init__(f"model {model!r} already has {waiting} requests waiting")
        self.model = model
        self.waiting = waiting
        self.retry_after = retry_after


class EngineStopped(Exception):
    """The engine shut down before the job ran."""


@dataclass(frozen=True)
class ModelToLoad:
    """One model for the engine to load: a name clients use, a backend family, a weights directory."""

    name: str
    family: str
    path: Path
    presets: str | None  # a quality table in pipelines.presets; None: the family's
    device: str | None  # None: the loader's choice
    dtype: str | None
    optimize: SpeedOptions = SpeedOptions()


@dataclass(frozen=True)
class Preview:
    index: int  # 0-based partial image number
    images: list[Image.Image]  # one per image in the job, at native resolution


@dataclass(frozen=True)
class JobResult:
    images: list[Image.Image]  # the job's n images at native resolution, in seed order
    prompt_tokens: int  # the prompt's tokens in the model's own tokenizer (0 without a prompt), for usage
    run_seconds: float


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


class Engine(Protocol):
    def load(self, model: ModelToLoad) -> ModelInfo:
        """Load a model and make it available (blocking: call from a thread); EngineStopped after shutdown."""
        ...

    def submit(self, model: str, job: ImageJob) -> JobHandle:
        """Queue ``job`` for a loaded model (call from the event loop); raises QueueFull or EngineStopped."""
        ...

    def cancel(self, handle: JobHandle) -> None:
        """Stop a job: dropped if waiting, interrupted at the next denoising step if running."""
        ...

    def stats(self, model: str) -> dict[str, Any] | None:
        """Queue figures for a loaded model; None if it is not loaded."""
        ...

    def shutdown(self, timeout: float) -> None:
        """Stop taking jobs, drop the waiting ones, interrupt the running ones (blocking)."""
        ...
