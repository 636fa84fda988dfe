"""The engine with the real tiny Kandinsky backend: queues, one call per device, cancellation, previews."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import replace

import pytest

from pipelines.base import Cancelled, ImageJob
from server.engine.base import SECOND_COPY_MAX_PARAMETERS, EngineStopped, ModelToLoad, QueueFull, cpu_cores
from server.engine.local import LocalEngine as Engine
from weights.spec import ModelSpec

from ..conftest import TINY, OneJobAtATime


def make_job(backend, *, n: int = 1, decoder_steps: int = 2, seed: int = 0, preview_count: int = 0) -> ImageJob:
    width, height = backend.info.native_size_for(1, 1)
    return ImageJob(
        task="generate",
        n=n,
        width=width,
        height=height,
        seeds=[seed + i for i in range(n)],
        preset=backend.info.presets["low"].adjusted(prior_steps=2, decoder_steps=decoder_steps),
        prompt="a tiny red boat",
        preview_count=preview_count,
    )


class CountingBackend(OneJobAtATime):
    """Delegates to the real backend and records how many runs overlap."""

    def __init__(self, inner, tracker: dict) -> None:
        self.inner = inner
        self.info = inner.info
        self.tracker = tracker

    def run(self, job, control):
        with self.tracker["lock"]:
            self.tracker["active"] += 1
            self.tracker["peak"] = max(self.tracker["peak"], self.tracker["active"])
        try:
            return self.inner.run(job, control)
        finally:
            with self.tracker["lock"]:
                self.tracker["active"] -= 1

    def count_tokens(self, prompt):
        return self.inner.count_tokens(prompt)


class ThreadRecordingBackend(OneJobAtATime):
    """Delegates to the real backend and records which thread counts the prompt's tokens."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.info = inner.info
        self.token_thread: str | None = None

    def run(self, job, control):
        return self.inner.run(job, control)

    def count_tokens(self, prompt):
        self.token_thread = threading.current_thread().name
        return self.inner.count_tokens(prompt)


async def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.01)


@pytest.fixture
def engine(tiny_backend):
    engine = Engine(queue_size=1)
    engine.add_model("tiny", tiny_backend)
    yield engine
    engine.shutdown()


def test_job_runs_off_the_loop_and_returns_native_images(tiny_backend):
    backend = ThreadRecordingBackend(tiny_backend)
    engine = Engine(queue_size=1)
    engine.add_model("tiny", backend)

    async def scenario():
        handle = engine.submit("tiny", make_job(tiny_backend, n=2))
        ticks = 0
        while not handle.done:  # the loop keeps turning while the worker generates
            ticks += 1
            await asyncio.sleep(0.001)
        return await handle.result(), ticks

    try:
        result, ticks = asyncio.run(scenario())
    finally:
        engine.shutdown()
    images = result.images
    assert len(images) == 2 and all(image.size == tiny_backend.info.native_size_for(1, 1) for image in images)
    assert backend.token_thread.startswith("easel-worker-cpu")  # used on a worker thread of the device only
    assert result.prompt_tokens == tiny_backend.count_tokens("a tiny red boat") > 0
    assert ticks > 0 and result.run_seconds > 0
    assert engine.stats("tiny")["completed"] == 1


def test_previews_arrive_on_the_loop_before_the_result(engine, tiny_backend):
    async def scenario():
        handle = engine.submit("tiny", make_job(tiny_backend, n=2, decoder_steps=6, preview_count=2))
        previews = [preview async for preview in handle.previews()]
        return previews, (await handle.result()).images

    previews, images = asyncio.run(scenario())
    assert [preview.index for preview in previews] == [0, 1]
    assert all(len(preview.images) == 2 for preview in previews)
    assert len(images) == 2


def test_the_engine_leaves_a_job_as_it_was_submitted(engine, tiny_backend):
    """Previews and cancellation reach the job through its control, never through fields set on the job."""
    previewed = make_job(tiny_backend, decoder_steps=4, preview_count=2)
    cancelled = make_job(tiny_backend, decoder_steps=200, seed=1)
    before = [replace(previewed), replace(cancelled)]

    async def scenario():
        handle = engine.submit("tiny", previewed)
        assert len([preview async for preview in handle.previews()]) == 2
        await handle.result()
        handle = engine.submit("tiny", cancelled)
        await wait_until(lambda: engine.stats("tiny")["running"] == 1)
        engine.cancel(handle)
        with pytest.raises(Cancelled):
            await handle.result()

    asyncio.run(scenario())
    assert [previewed, cancelled] == before
    assert vars(previewed).keys() == vars(before[0]).keys()  # nothing added to the instance either


def test_full_queue_raises_and_cancel_drops_waiting_and_stops_running(engine, tiny_backend):
    async def scenario():
        running = engine.submit("tiny", make_job(tiny_backend, decoder_steps=200))
        await wait_until(lambda: engine.stats("tiny")["running"] == 1)
        waiting = engine.submit("tiny", make_job(tiny_backend))
        with pytest.raises(QueueFull) as caught:
            engine.submit("tiny", make_job(tiny_backend))
        assert caught.value.retry_after >= 1 and caught.value.waiting == 1

        engine.cancel(waiting)
        with pytest.raises(Cancelled):
            await waiting.result()
        assert engine.stats("tiny")["queued"] == 0 and engine.stats("tiny")["running"] == 1

        started = time.monotonic()
        engine.cancel(running)
        with pytest.raises(Cancelled):
            await running.result()
        return time.monotonic() - started

    stop_delay = asyncio.run(scenario())
    stats = engine.stats("tiny")
    assert stats["cancelled"] == 2 and stats["completed"] == 0
    assert stop_delay < 5  # interrupted between steps, not run to the end


def test_models_on_one_device_share_one_worker(tiny_backend):
    tracker = {"lock": threading.Lock(), "active": 0, "peak": 0}
    engine = Engine(queue_size=4)
    engine.add_model("a", CountingBackend(tiny_backend, tracker))
    engine.add_model("b", CountingBackend(tiny_backend, tracker))
    try:

        async def scenario():
            handles = [engine.submit(name, make_job(tiny_backend, seed=i)) for i, name in enumerate("abab")]
            return [await handle.result() for handle in handles]

        results = asyncio.run(scenario())
    finally:
        engine.shutdown()
    assert len(results) == 4
    assert tracker["peak"] == 1
    assert len(engine._workers) == 1


def test_backend_errors_reach_the_caller(tiny_backend):
    engine = Engine(queue_size=2)
    engine.add_model("tiny", tiny_backend)
    try:

        async def scenario():
            job = make_job(tiny_backend)
            job.width += 1  # not a multiple of the model's size multiple: the backend refuses
            handle = engine.submit("tiny", job)
            with pytest.raises(ValueError):
                await handle.result()

        asyncio.run(scenario())
        assert engine.stats("tiny")["failed"] == 1
    finally:
        engine.shutdown()


class StopIterationBackend(OneJobAtATime):
    """A backend with a bug that lets StopIteration escape (say, ``next()`` on an empty iterator)."""

    def __init__(self, inner) -> None:
        self.info = inner.info

    def run(self, job, control):
        raise StopIteration("empty")

    def count_tokens(self, prompt):
        return 0


def test_a_backend_raising_stop_iteration_fails_the_job_instead_of_hanging_it(tiny_backend):
    engine = Engine(queue_size=2)
    engine.add_model("tiny", StopIterationBackend(tiny_backend))
    try:

        async def scenario():
            handle = engine.submit("tiny", make_job(tiny_backend))
            with pytest.raises(RuntimeError, match="StopIteration"):
                await asyncio.wait_for(handle.result(), timeout=30)

        asyncio.run(scenario())
        assert engine.stats("tiny")["failed"] == 1
    finally:
        engine.shutdown()


def test_a_model_added_after_shutdown_starts_no_worker(tiny_backend):
    engine = Engine(queue_size=1)
    engine.shutdown()
    with pytest.raises(EngineStopped):
        engine.add_model("late", tiny_backend)
    assert engine._workers == {} and engine.stats("late") is None


def test_cores_are_counted_where_the_os_has_no_affinity_call(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cpu_cores() == len(os.sched_getaffinity(0))  # Linux: the cores this process may use
    monkeypatch.delattr(os, "sched_getaffinity")  # as on macOS and Windows
    assert cpu_cores() == os.cpu_count()


@pytest.mark.parametrize(
    ("parameters", "workers", "copies"),
    [
        (8_700_000, None, 2),  # easel-mini's size: a copy per CPU slot
        (SECOND_COPY_MAX_PARAMETERS + 1, None, 1),  # Kandinsky 2.2 is 4.9 billion: one copy, not 40 GB
        (SECOND_COPY_MAX_PARAMETERS + 1, 2, 2),  # --workers given: as many as it says
    ],
)
def test_a_large_model_is_loaded_once_on_a_cpu_unless_workers_says(tiny_model_dirs, parameters, workers, copies):
    from pipelines.loader import load_backend

    loaded = []

    def loader(*args, **kwargs):
        backend = load_backend(*args, **kwargs)
        backend.info = replace(backend.info, parameter_counts={"unet": parameters})
        loaded.append(backend)
        return backend

    engine = Engine(queue_size=4, loader=loader, workers=workers)
    engine.load(ModelToLoad(ModelSpec(TINY, "kandinsky22", tiny_model_dirs["kandinsky"]), "cpu", None))

    async def two_at_once():
        handles = [engine.submit(TINY, make_job(loaded[0], seed=seed)) for seed in (1, 2)]
        return [await handle.result() for handle in handles]

    try:
        assert len(loaded) == copies
        results = asyncio.run(two_at_once())  # a one-copy model on a two-slot device still runs all its jobs
        assert [len(result.images) for result in results] == [1, 1]
        assert engine.stats(TINY)["completed"] == 2
    finally:
        engine.shutdown()
