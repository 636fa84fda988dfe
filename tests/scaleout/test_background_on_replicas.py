"""A batch line sent to a model replica keeps its low priority there: the replica's engine runs the interactive
jobs that arrive while it waits first, as one process does (no Ray instance: the replica's ``run`` is driven
directly, over a real engine and the tiny model)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.engine.local import LocalEngine
from server.scaleout.deployments import ModelReplica
from server.scaleout.figures import FigureLog
from server.scaleout.wire import job_to_wire

from ..server.test_batching_engine import RecordingBackend, prompted
from ..server.test_engine import wait_until


class GatedBackend(RecordingBackend):
    """The recording tiny backend whose call for the prompt "busy" waits for the gate: the others queue meanwhile."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.gate = threading.Event()

    def run_batch(self, tickets):
        if any(ticket.job.prompt == "busy" for ticket in tickets):
            self.gate.wait()
        return super().run_batch(tickets)


@pytest.fixture
def gated(tiny_backend):
    backend = GatedBackend(tiny_backend)
    engine = LocalEngine(queue_size=8, workers=1, max_batch_images=3, batch_wait_ms=0)
    engine.add_model("tiny", backend)
    yield engine, backend
    backend.gate.set()
    engine.shutdown()


def replica_over(engine) -> ModelReplica:
    """A ModelReplica around ``engine``, without the Ray replica context its constructor reads."""
    replica = object.__new__(ModelReplica)
    replica._name, replica._engine, replica._replica, replica._figures = "tiny", engine, "replica-1", FigureLog()
    return replica


async def answer(replica: ModelReplica, wire: dict) -> str:
    kinds = [message["kind"] async for message in replica.run(wire)]
    assert kinds[0] == "accepted" and kinds[-1] == "result", kinds
    return kinds[-1]


def run_in_order(replica: ModelReplica, engine, backend, tiny_backend, *, background: bool) -> None:
    """A call held busy; then three jobs flagged ``background`` (or not), then two interactive ones, all queued."""

    def sent(prompt: str, flagged: bool = False) -> asyncio.Task:
        return asyncio.create_task(answer(replica, job_to_wire(prompted(tiny_backend, prompt), background=flagged)))

    async def scenario():
        busy = sent("busy")
        await wait_until(lambda: engine.stats("tiny")["running"] == 1)
        lines = [sent(f"b{i}", background) for i in range(3)]
        await wait_until(lambda: engine.stats("tiny")["queued"] == 3)
        interactive = [sent(f"i{i}") for i in range(2)]
        await wait_until(lambda: engine.stats("tiny")["queued"] == 5)
        backend.gate.set()
        await asyncio.gather(busy, *lines, *interactive)

    asyncio.run(scenario())


def test_batch_lines_wait_behind_interactive_jobs_on_the_replica(gated, tiny_backend):
    engine, backend = gated
    run_in_order(replica_over(engine), engine, backend, tiny_backend, background=True)
    # Queued last, the interactive jobs go first, in a call of their own; the batch lines share the next one.
    assert backend.calls == [["busy"], ["i0", "i1"], ["b0", "b1", "b2"]]


def test_without_the_flag_the_replica_runs_jobs_in_the_order_they_came(gated, tiny_backend):
    engine, backend = gated
    run_in_order(replica_over(engine), engine, backend, tiny_backend, background=False)
    assert backend.calls == [["busy"], ["b0", "b1", "b2"], ["i0", "i1"]]
