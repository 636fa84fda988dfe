"""How the runner lease's watchdog tells a holder that is stuck from one that is busy.

The flock of the runner lease (:mod:`.lease`) outlives a process that hangs
without dying: a pipeline call that never returns, a deadlock, a wedged event
loop. So the holder's event loop beats once a second (:meth:`Progress.beat`),
saying whether the runner has lines to run and how far the engine has got (jobs
finished plus denoising steps made, one count); the runner marks each line it settles (:meth:`Progress.moved`). The
lease's own thread reads these (:meth:`Progress.stalled`) and gives the lease
up when the loop has not beaten, or the runner has had work but neither it nor
the engine has finished anything, for ``--runner-stall-seconds``. Any job the
engine finishes counts, interactive ones too: batch lines that wait behind a
stream of interactive requests are slow, not stuck; so does each denoising step,
so a call that takes minutes on a CPU is slow, not stuck.

Written on the event loop and read by the lease's thread: plain floats, ints
and a bool, each written whole, need no lock.
"""

from __future__ import annotations

import time


class Progress:
    def __init__(self) -> None:
        self.beat_at = self.moved_at = time.monotonic()
        self.working = False  # the runner has batches it is running
        self._engine_done: int | None = None  # jobs the engine has finished plus steps made, at the last beat

    def restart(self) -> None:
        """The lease was just taken: nothing before counts against this holder."""
        self.beat_at = self.moved_at = time.monotonic()

    def moved(self) -> None:
        """The runner settled a line or a batch."""
        self.moved_at = time.monotonic()

    def beat(self, working: bool, engine_done: int) -> None:
        """The event loop is alive: the runner has work or not; ``engine_done``: the engine's jobs finished plus
        its denoising steps made."""
        now = time.monotonic()
        if engine_done != self._engine_done or (working and not self.working):
            self.moved_at = now  # the engine moved, or the runner just got work: time counts from here
        self._engine_done, self.working, self.beat_at = engine_done, working, now

    def stalled(self, limit: float) -> str | None:
        """Why this holder should give the lease up, or None while it is alive and moving (or ``limit`` is 0)."""
        if limit <= 0:
            return None
        now = time.monotonic()
        if now - self.beat_at > limit:
            return f"its event loop has not run for {now - self.beat_at:.0f} s"
        if self.working and now - self.moved_at > limit:
            return f"its batch lines and its engine have finished nothing for {now - self.moved_at:.0f} s"
        return None
