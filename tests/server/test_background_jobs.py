"""Background jobs (batch lines) in the engine: behind every interactive job, and never companions in an
interactive job's call."""

from __future__ import annotations

import asyncio

from .test_batching_engine import prompted, recorded  # noqa: F401 - recorded is a fixture
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
