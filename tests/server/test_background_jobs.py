"""Background jobs (batch lines) in the engine: behind every interactive job, never in a call with one, and giving
way to interactive jobs at denoising-step boundaries."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

from pipelines.base import Ticket
from pipelines.errors import Cancelled
from server.engine.local import LocalEngine

from .test_batching_engine import RecordingBackend, new_tracker, prompted, recorded  # noqa: F401 - a fixture
from .test_engine import wait_until


def test_interactive_jobs_run_before_waiting_background_jobs_and_without_them(recorded, tiny_backend):  # noqa: F811
    engine, backend = recorded

    async def scenario():
        busy = engine.submit("tiny", prompted(tiny_backend, "busy", decoder_steps=40))
        await wait_until(lambda: engine.stats("tiny")["running"] == 1)
        lines = [engine.submit("tiny", prompted(tiny_backend, f"b{i}"), background=True) for i in range(3)]
        interactive = [engine.submit("tiny", prompted(tiny_backend, f"i{i}")) for i in range(2)]
        await asyncio.gather(busy.result(), *(handle.result() for handle in lines + interactive))

    asyncio.run(scenario())
    # The interactive jobs, queued last, go first, in a call of their own; the batch lines share the next one.
    assert backend.calls == [["busy"], ["i0", "i1"], ["b0", "b1", "b2"]]


class HeldBackend(RecordingBackend):
    """The recording tiny backend whose calls of batch lines ("bg..." prompts) stop at their first denoising step
    until ``go`` is set (``held`` counts the calls waiting there), so an interactive job can be sent while they
    run on any machine; ``ended`` lists each call's first prompt as it ends."""

    SHARED = ("go", "ended")  # what the replicas of two_slot_engine share

    def __init__(self, inner, tracker: dict | None = None) -> None:
        super().__init__(inner, tracker)
        self.go = threading.Event()
        self.held = 0
        self.ended: list[str] = []

    def run_batch(self, tickets):
        if tickets[0].job.prompt.startswith("bg"):
            tickets = [Ticket(t.job, replace(t.control, should_cancel=self._held(t.control))) for t in tickets]
        try:
            return super().run_batch(tickets)
        finally:
            self.ended.append(tickets[0].job.prompt)

    def _held(self, control):
        first = [True]

        def should_cancel() -> bool:
            if first[0]:
                first[0] = False
                with self.tracker["lock"]:
                    self.held += 1
                self.go.wait()
            return control.should_cancel()

        return should_cancel


def two_slot_engine(held_backend: type[HeldBackend], tiny_backend, tiny_model_dirs):
    """An engine with two slots, each a replica of the tiny model wrapped in ``held_backend``, with one set of gates
    and one record of ends for both (its ``SHARED`` attributes); the engine and the two replicas."""
    from pipelines.loader import load_backend

    tracker = new_tracker()
    second = load_backend("tiny", "kandinsky22", tiny_model_dirs["kandinsky"])
    replicas = [held_backend(tiny_backend, tracker), held_backend(second, tracker)]
    for name in held_backend.SHARED:
        setattr(replicas[1], name, getattr(replicas[0], name))
    engine = LocalEngine(queue_size=8, workers=2, max_batch_images=1, batch_wait_ms=0, cores=2)
    engine.add_model("tiny", replicas)
    return engine, replicas


async def two_lines_held(engine, replicas, tiny_backend) -> list:
    """Two batch lines queued at once, as a batch's runner queues its lines (the first slot sees the second
    waiting), once each is held at its first step on a slot of its own."""
    with engine._lanes["tiny"].worker._condition:
        lines = [
            engine.submit("tiny", prompted(tiny_backend, f"bg {i}", decoder_steps=8), background=True) for i in range(2)
        ]
    await wait_until(lambda: replicas[0].held + replicas[1].held == 2)
    return lines


def _pixels(images) -> list[bytes]:
    return [image.tobytes() for image in images]


def test_a_running_batch_call_gives_its_only_slot_to_an_interactive_job_and_runs_again_to_the_same_pixels(
    tiny_backend,
):
    backend = HeldBackend(tiny_backend)
    engine = LocalEngine(queue_size=8, workers=1, max_batch_images=3, batch_wait_ms=0)
    engine.add_model("tiny", backend)
    try:

        async def scenario():
            backend.go.set()
            alone = await engine.submit(
                "tiny", prompted(tiny_backend, "bg line", decoder_steps=8), background=True
            ).result()
            backend.go.clear()
            line = engine.submit("tiny", prompted(tiny_backend, "bg line", decoder_steps=8), background=True)
            await wait_until(lambda: backend.held == 2)
            interactive = engine.submit("tiny", prompted(tiny_backend, "interactive"))
            backend.go.set()
            first = await interactive.result()
            assert not line.done  # the interactive job did not wait for the batch line
            return alone, await line.result(), first

        alone, line, interactive = asyncio.run(scenario())
    finally:
        engine.shutdown()
    assert len(interactive.images) == 1
    # The batch line stopped at a step boundary, let the interactive job run, then ran again from its seed.
    assert backend.calls == [["bg line"], ["bg line"], ["interactive"], ["bg line"]]
    assert _pixels(line.images) == _pixels(alone.images)
    stats = engine.stats("tiny")
    assert (stats["completed"], stats["cancelled"], stats["failed"], stats["queued"]) == (3, 0, 0, 0)


def test_with_every_slot_on_batch_lines_the_first_gives_way_to_an_interactive_job_on_every_core_the_other_pauses(
    tiny_backend, tiny_model_dirs
):
    engine, replicas = two_slot_engine(HeldBackend, tiny_backend, tiny_model_dirs)
    try:

        async def scenario():
            lines = await two_lines_held(engine, replicas, tiny_backend)
            interactive = engine.submit("tiny", prompted(tiny_backend, "interactive"))
            replicas[0].go.set()
            await interactive.result()
            return await asyncio.gather(*(line.result() for line in lines))

        results = asyncio.run(scenario())
    finally:
        engine.shutdown()
    first, second = ([(call[0], threads) for call, threads in zip(r.calls, r.threads)] for r in replicas)
    # Both lines started on a core each. The first slot's gave its slot up to the interactive job, which ran
    # there on both cores, and ran again; the second slot's paused, went on after the interactive job, and ran once.
    (line_0, _), (line_1, _) = first[0], second[0]
    assert first == [(line_0, 1), ("interactive", 2), (line_0, first[2][1])] and second == [(line_1, 1)]
    assert {line_0, line_1} == {"bg 0", "bg 1"}
    ended = replicas[0].ended
    assert [name for name in ended if name in ("interactive", line_1)] == ["interactive", line_1]
    assert all(len(result.images) == 1 for result in results)
    stats = engine.stats("tiny")
    assert (stats["completed"], stats["cancelled"], stats["failed"]) == (3, 0, 0)


class HeldInteractive(HeldBackend):
    """HeldBackend that also holds the "held interactive" call at each denoising step until ``release`` is set;
    ``interactive_started`` tells it has reached its first."""

    SHARED = (*HeldBackend.SHARED, "release", "interactive_started")

    def __init__(self, inner, tracker: dict | None = None) -> None:
        super().__init__(inner, tracker)
        self.release = threading.Event()
        self.interactive_started = threading.Event()

    def run_batch(self, tickets):
        if tickets[0].job.prompt == "held interactive":
            tickets = [
                Ticket(t.job, replace(t.control, should_cancel=self._until_released(t.control))) for t in tickets
            ]
        return super().run_batch(tickets)

    def _until_released(self, control):
        def should_cancel() -> bool:
            self.interactive_started.set()
            self.release.wait()
            return control.should_cancel()

        return should_cancel


def test_a_paused_call_whose_jobs_are_all_cancelled_ends_while_the_interactive_job_still_runs(
    tiny_backend, tiny_model_dirs
):
    engine, replicas = two_slot_engine(HeldInteractive, tiny_backend, tiny_model_dirs)
    try:

        async def scenario():
            lines = await two_lines_held(engine, replicas, tiny_backend)
            interactive = engine.submit("tiny", prompted(tiny_backend, "held interactive"))
            replicas[0].go.set()
            await wait_until(replicas[0].interactive_started.is_set)
            # One line gave its slot up and waits in the queue; the other is paused on its slot.
            for line in lines:
                engine.cancel(line)
            ends = asyncio.gather(*(line.result() for line in lines), return_exceptions=True)
            outcomes = await asyncio.wait_for(ends, timeout=30)  # paused until the interactive job ended, before
            assert not interactive.done
            replicas[0].release.set()
            return outcomes, await interactive.result()

        outcomes, interactive = asyncio.run(scenario())
    finally:
        replicas[0].release.set()
        engine.shutdown()
    assert [type(outcome) for outcome in outcomes] == [Cancelled, Cancelled]
    assert len(interactive.images) == 1
    stats = engine.stats("tiny")
    assert (stats["completed"], stats["cancelled"], stats["failed"]) == (1, 2, 0)


# Enough decoder steps that the job is still running long after the first 20 are counted (the poll looks every
# 10 ms); each is a real step of the tiny model, so more only costs CPU.
LONG_STEPS = 120


def test_a_running_call_counts_its_denoising_steps_before_it_ends(recorded, tiny_backend):  # noqa: F811
    """The batch runner's watchdog reads this figure: a long call on a CPU must show it moves."""
    engine, backend = recorded

    async def scenario():
        long = engine.submit("tiny", prompted(tiny_backend, "long", decoder_steps=LONG_STEPS), background=True)
        await wait_until(lambda: engine.stats("tiny")["steps"] >= 20)
        assert engine.stats("tiny")["running"] == 1 and not long.done
        await long.result()
        return engine.stats("tiny")["steps"]

    steps = asyncio.run(scenario())
    assert steps >= 2 + LONG_STEPS  # every prior and decoder step of the job
