"""The in-process engine: the models' lanes on per-device workers (:mod:`server.engine.worker`), in this process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from pipelines.base import ImageBackend, ImageJob, ModelInfo
from pipelines.errors import Cancelled

from .base import (
    BatchPolicy,
    EngineMetrics,
    EngineStopped,
    JobHandle,
    ModelToLoad,
    copies_for,
    cpu_cores,
)
from .worker import DeviceWorker, LocalJobHandle, ModelLane

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
