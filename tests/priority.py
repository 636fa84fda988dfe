"""The Ray group first in line for the CPU: every other xdist worker runs at a lower priority.

The Ray group is the suite's longest unit and its critical path: one worker runs it while the others share the
cores with it, and each of its replicas is a process of its own (Ray's workers, the Serve controller, the
proxy) that the other workers' servers slow down, so it used to end minutes after everything else. A worker
whose first test is not in that group lowers its own priority (``nice``) for the rest of the session, and the
servers and commands its tests start inherit it; the Ray group's worker and its Ray processes keep theirs. The
cores never idle because of it: a lower priority only yields when a higher one wants to run. Unprivileged
processes cannot raise their priority again, so the choice is made once, at a worker's first test (the Ray
group is handed out first, see :mod:`tests.schedule`).
"""

from __future__ import annotations

import os

import pytest

from .lanes import SHARED_SESSION_FIXTURES
from .schedule import scope_of

RAY_GROUP = SHARED_SESSION_FIXTURES["serve_port"]  # the xdist group of the tests that share the Ray instance
LOWER_BY = 10  # nice increment of the other workers; at 10, a nice-0 process gets about 9 in 10 of a shared core


class WorkerPriority:
    """Decides once per xdist worker, at its first test, whether it gives way to the Ray group."""

    def __init__(self) -> None:
        self.decided = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.decided:
            return
        self.decided = True
        if scope_of(item) != RAY_GROUP:
            os.nice(LOWER_BY)


def register(config: pytest.Config) -> None:
    """Only on xdist workers: a run in one process has no other worker to give way to."""
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(WorkerPriority(), "easel-worker-priority")
