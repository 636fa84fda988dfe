"""The engine's batching and slots: waiting jobs share calls, calls share the cores, a bad job fails alone."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest
import torch

from pipelines.base import BatchResult, ImageJob
from pipelines.errors import Cancelled
from server.engine.local import LocalEngine

from .test_engine import make_job, wait_until


class RecordingBackend:
    """The real tiny backend, recording each call: its jobs' prompts, its threads, how many calls overlap."""

    def __init__(self, inner, tracker: dict | None = None) -> None:
        self.inner = inner
        self.info = inner.info
        self.calls: list[list[str]] = []
        self.threads: list[int] = []
        self.tracker = tracker if tracker is not None else new_tracker()

    def batch_key(self, job: ImageJob):
        return self.inner.batch_key(job)

    def count_tokens(self, prompt: str) -> int:
        return self.inner.count_tokens(prompt)

    def run_batch(self, tickets) -> BatchResult:
        jobs = [ticket.job for ticket in tickets]
        tracker, threads = self.tracker, torch.get_num_threads()
        with tracker["lock"]:
            tracker["active"] += 1
            tracker["peak"] = max(tracker["peak"], tracker["active"])
            tracker["threads"] += threads
            tracker["most_threads"] = max(tracker["most_threads"], tracker["threads"])
        self.calls.append([job.prompt for job in jobs])
        self.threads.append(threads)
        try:
            if any(job.prompt == "poison" for job in jobs):
                raise RuntimeError("a batch holding the poison job fails as a whole")
            return self.inner.run_batch(tickets)
        finally:
            with tracker["lock"]:
                tracker["active"] -= 1
                tracker["threads"] -= threads


def new_tracker() -> dict:
    return {"lock": threading.Lock(), "active": 0, "peak": 0, "threads": 0, "most_threads": 0}


def prompted(backend, prompt: str, *, n: int = 1, decoder_steps: int = 2, seed: int = 0) -> ImageJob:
    job = make_job(backend, n=n, decoder_steps=decoder_steps, seed=seed)
    job.prompt = prompt
    return job


@pytest.fixture
def recorded(tiny_backend):
    backend = RecordingBackend(tiny_backend)
    engine = LocalEngine(queue_size=8, workers=1, max_batch_images=3, batch_wait_ms=0)
    engine.add_model("tiny", backend)
    yield engine, backend
    engine.shutdown()


def test_compatible_waiting_jobs_share_a_call_up_to_the_image_limit(recorded, tiny_backend):
    engine, backend = recorded

    async def scenario():
        busy = engine.submit("tiny", prompted(tiny_backend, "busy", decoder_steps=40))
        await wait_until(lambda: engine.stats("tiny")["running"] == 1)
        jobs = [prompted(tiny_backend, name, n=n) for name, n in (("two", 2), ("three", 2), ("one", 1))]
        handles = [engine.submit("tiny", job) for job in jobs]
        results = [await handle.result() for handle in handles]
        await busy.result()
        return results

    results = asyncio.run(scenario())
    assert [len(result.images) for result in results] == [2, 2, 1]
    # One call at a time: the busy one, then the first job with every compatible one that fits in 3 images.
    assert backend.calls == [["busy"], ["two", "one"], ["three"]]


def test_a_job_that_breaks_a_shared_call_fails_alone(recorded, tiny_backend):
    engine, backend = recorded

    async def scenario():
        busy = engine.submit("tiny", prompted(tiny_backend, "busy", decoder_steps=40))
        await wait_until(lambda: engine.stats("tiny")["running"] == 1)
        handles = [engine.submit("tiny", prompted(tiny_backend, name)) for name in ("good", "poison", "fine")]
        await busy.result()
        return await asyncio.gather(*(handle.result() for handle in handles), return_exceptions=True)

    good, poison, fine = asyncio.run(scenario())
    assert isinstance(poison, RuntimeError)
    assert len(good.images) == 1 and len(fine.images) == 1  # type: ignore[union-attr]
    assert backend.calls[1] == ["good", "poison", "fine"]  # shared, failed as a whole, then each alone
    assert sorted(map(tuple, backend.calls[2:])) == [("fine",), ("good",), ("poison",)]
    assert engine.stats("tiny")["failed"] == 1


def test_a_cancelled_job_leaves_its_batch_and_the_other_finishes(recorded, tiny_backend):
    engine, backend = recorded

    async def scenario():
        busy = engine.submit("tiny", prompted(tiny_backend, "busy", decoder_steps=40))
        await wait_until(lambda: engine.stats("tiny")["running"] == 1)
        leaving = engine.submit("tiny", prompted(tiny_backend, "leaving", decoder_steps=200))
        staying = engine.submit("tiny", prompted(tiny_backend, "staying", decoder_steps=200, seed=5))
        await busy.result()
        await wait_until(lambda: engine.stats("tiny")["running"] == 2)  # the two share one call
        started = time.monotonic()
        engine.cancel(leaving)
        with pytest.raises(Cancelled):
            await leaving.result()
        return time.monotonic() - started, await staying.result()

    seconds, staying = asyncio.run(scenario())
    assert backend.calls[1] == ["leaving", "staying"]
    assert len(staying.images) == 1
    stats = engine.stats("tiny")
    assert stats["cancelled"] == 1 and stats["completed"] == 2


def test_two_slots_split_the_cores_when_busy_and_one_takes_them_all_alone(tiny_backend, tiny_model_dirs):
    from pipelines.loader import load_backend

    tracker = new_tracker()
    # One backend per slot, as the engine loads them: a pipeline object is not safe to share across threads.
    second = load_backend("tiny", "kandinsky22", tiny_model_dirs["kandinsky"])
    replicas = [RecordingBackend(tiny_backend, tracker), RecordingBackend(second, tracker)]
    engine = LocalEngine(queue_size=8, workers=2, max_batch_images=1, cores=2)
    engine.add_model("tiny", replicas)
    try:

        async def scenario():
            for i in range(3):
                await (engine.submit("tiny", prompted(tiny_backend, f"alone {i}"))).result()
                await wait_until(lambda: engine.stats("tiny")["running"] == 0)
            handles = [engine.submit("tiny", prompted(tiny_backend, f"busy {i}", decoder_steps=30)) for i in range(4)]
            await asyncio.gather(*(handle.result() for handle in handles))

        asyncio.run(scenario())
    finally:
        engine.shutdown()
    threads = {call[0]: count for replica in replicas for call, count in zip(replica.calls, replica.threads)}
    # A call with nothing else to do takes both cores, always on the first slot (its model copy is warm).
    assert [threads.pop(f"alone {i}") for i in range(3)] == [2, 2, 2]
    assert [call[0] for call in replicas[0].calls[:3]] == ["alone 0", "alone 1", "alone 2"]
    # Calls side by side take one core each (the last may find the other slot done and take both),
    # and the calls running at any moment never hold more threads than there are cores.
    assert sorted(threads.values())[:3] == [1, 1, 1] and set(threads.values()) <= {1, 2}
    assert tracker["peak"] == 2 and tracker["most_threads"] == 2


def test_on_one_core_a_slot_waiting_for_companions_keeps_its_core(tiny_backend, tiny_model_dirs):
    """One core, two slots (a one-CPU Ray replica): the second slot must not take the core the first will need.

    It used to: the first slot, done waiting for companions, was given zero threads, torch
    refused them, the slot's thread died and its jobs were never answered.
    """
    from pipelines.loader import load_backend

    tracker = new_tracker()
    second = load_backend("tiny", "kandinsky22", tiny_model_dirs["kandinsky"])
    replicas = [RecordingBackend(tiny_backend, tracker), RecordingBackend(second, tracker)]
    engine = LocalEngine(queue_size=8, workers=2, max_batch_images=8, batch_wait_ms=300, cores=1)
    engine.add_model("tiny", replicas)
    try:

        async def scenario():
            long = engine.submit("tiny", prompted(tiny_backend, "long", decoder_steps=30))
            pair = [engine.submit("tiny", prompted(tiny_backend, f"pair {i}")) for i in range(2)]
            await asyncio.gather(long.result(), *(handle.result() for handle in pair))
            # The last call held two jobs, so the next one waits for a companion; one that comes meanwhile
            # cannot join it (other steps) and wakes the idle slot.
            mixed = [engine.submit("tiny", prompted(tiny_backend, "two steps"))]
            await asyncio.sleep(0.1)
            mixed.append(engine.submit("tiny", prompted(tiny_backend, "three steps", decoder_steps=3)))
            await asyncio.wait_for(asyncio.gather(*(handle.result() for handle in mixed)), 60)

        asyncio.run(scenario())
    finally:
        engine.shutdown()
    calls = [call for replica in replicas for call in replica.calls]
    assert ["pair 0", "pair 1"] in calls and ["two steps"] in calls and ["three steps"] in calls
    assert tracker["peak"] == 1 and tracker["most_threads"] == 1


def test_jobs_asking_for_different_step_caches_wait_for_calls_of_their_own(recorded, tiny_backend):
    engine, backend = recorded

    def cached(name: str, interval: int | None):
        job = prompted(tiny_backend, name)
        job.preset = replace(job.preset, decoder_step_cache=interval)
        return job

    async def scenario():
        busy = engine.submit("tiny", prompted(tiny_backend, "busy", decoder_steps=40))
        await wait_until(lambda: engine.stats("tiny")["running"] == 1)
        jobs = [cached("one", 1), cached("three", 3), cached("default", None), cached("one again", 1)]
        handles = [engine.submit("tiny", job) for job in jobs]
        await busy.result()
        return [await handle.result() for handle in handles]

    assert [len(result.images) for result in asyncio.run(scenario())] == [1, 1, 1, 1]
    assert backend.calls == [["busy"], ["one", "one again"], ["three"], ["default"]]
