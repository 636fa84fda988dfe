"""The worker side of the in-process engine: per device, slots that run batched pipeline calls.

A slot takes a model's oldest waiting job and every compatible one behind it (``backend.batch_key``), up to
``max_batch_images``; when the model's last call held several jobs (clients are sending in parallel) it waits up to
``batch_wait_ms`` for as many companions, and with one client it starts at once. On a CPU the cores are a budget
the slots share: a call with nothing else to do takes them all, calls running side by side take a share each, and no
call runs on more threads than there are free cores. Slot n starts work only while n others are busy, so a lone
request always runs on the first slot. Measured defaults: (docs/performance.md, "Serving many users").

Batch lines (background jobs) queue behind every interactive job, run in calls of their own, and give way to
interactive jobs at denoising-step boundaries (:mod:`server.engine.giving_way`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from pipelines.base import BatchResult, ImageBackend, run_isolated, use_cpu_threads
from pipelines.errors import Cancelled, NonFiniteOutput

from .base import BatchPolicy, EngineMetrics, EngineStopped, JobResult, QueueFull, SlotJob
from .giving_way import call_to_give_way
from .queue_figures import RejectionTurns

AVERAGE_WEIGHT = 0.3  # weight of the newest figure in the moving average of seconds per image


class QueueFigures(RejectionTurns):
    """A model's figures as every engine keeps them: jobs by outcome, seconds per image, turns for rejected jobs."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.seconds_per_image: float | None = None  # a moving average
        self.turns_until = 0.0  # when the turns handed to rejected jobs run out (monotonic; see turn_for)

    def record(self, seconds: float, images: int) -> None:
        """A pipeline call (or a job) that made ``images`` in ``seconds``."""
        per_image = seconds / max(images, 1)
        if self.seconds_per_image is None:
            self.seconds_per_image = per_image
        else:
            self.seconds_per_image += AVERAGE_WEIGHT * (per_image - self.seconds_per_image)

    def figures(self, *, queued: int, running: int) -> dict[str, Any]:
        """The figures ``Engine.stats`` answers with."""
        return {
            "queued": queued,
            "running": running,
            "queue_size": self.capacity,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "average_seconds": None if self.seconds_per_image is None else round(self.seconds_per_image, 3),
        }


class ModelLane(QueueFigures):
    """One model: its replicas (one per slot), its queue and its figures. Guarded by its worker's condition."""

    def __init__(self, name: str, replicas: list[ImageBackend], capacity: int, worker: DeviceWorker) -> None:
        super().__init__(capacity)
        self.name = name
        self.replicas = replicas
        self.worker = worker
        self.waiting: deque[SlotJob] = deque()
        self.running: list[SlotJob] = []
        self.last_batch_jobs = 1
        self.steps = 0  # denoising steps its jobs have made (a step of a shared call counts once per job)

    def retry_after(self, now: float, images: int) -> float:
        """When a rejected job should come back (QueueFigures.turn_for); each slot serves in parallel."""
        backlog_images = sum(handle.job.n for handle in self.waiting if not handle.background)
        return self.turn_for(now, backlog_images, images, slots=len(self.replicas))

    def stats(self) -> dict[str, Any]:
        return {**self.figures(queued=len(self.waiting), running=len(self.running)), "steps": self.steps}

    def interactive_waiting(self) -> bool:
        return bool(self.waiting) and not self.waiting[0].background  # they queue ahead of every batch line

    def interactive_running(self) -> bool:
        return any(not handle.background for handle in self.running)


@dataclass(eq=False)
class RunningCall:
    """A pipeline call on a slot (server.engine.giving_way)."""

    slot: int
    lane: ModelLane
    handles: list[SlotJob]
    threads: int  # CPU threads it holds from the device's budget
    started: float  # monotonic
    background: bool  # every job in it is a batch line
    yielding: bool = False  # giving its slot up: stops at its next step, its jobs queue again

    def cancelled(self) -> bool:  # every job in it is: nothing it would pause for is left, so it goes on to its end
        return all(handle.cancelled for handle in self.handles)


class DeviceWorker:
    """The slots that run every pipeline call for one device; see the module docstring for the policy."""

    def __init__(self, device: str, policy: BatchPolicy, cores: int, metrics: EngineMetrics | None) -> None:
        self.device = device
        self.policy = policy
        self.metrics = metrics
        self.cpu = device.startswith("cpu")
        self.cores = cores
        self._threads_in_use = 0
        self._busy_slots = 0
        self._calls: dict[int, RunningCall] = {}  # by slot
        self._condition = threading.Condition()
        self._lanes: list[ModelLane] = []
        self._turn = 0
        self._stopping = False
        self._slots = [
            threading.Thread(target=self._run, args=(slot,), name=f"easel-worker-{device}-{slot}", daemon=True)
            for slot in range(policy.workers)
        ]
        for thread in self._slots:
            thread.start()

    def attach(self, lane: ModelLane) -> None:
        with self._condition:
            self._lanes.append(lane)

    def submit(self, lane: ModelLane, handle: SlotJob, *, retried: bool = False) -> None:
        """Queue a job; a retried one (turned away before) may also take a place in an equal reserve. Interactive
        jobs queue ahead of every batch line; batch lines take no place in the queue's limit (their runner bounds
        how many wait)."""
        with self._condition:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            if handle.background:
                lane.waiting.append(handle)
            else:
                interactive = sum(not waiting.background for waiting in lane.waiting)
                if interactive >= lane.capacity * (2 if retried else 1):
                    raise QueueFull(lane.name, interactive, lane.retry_after(time.monotonic(), handle.job.n))
                lane.waiting.insert(interactive, handle)  # interactive jobs are always the queue's head
            self._condition.notify_all()

    def withdraw(self, lane: ModelLane, handle: SlotJob) -> bool:
        """Remove a job that has not started; False if it is running or finished."""
        with self._condition:
            self._condition.notify_all()  # calls paused for this job, or whose jobs are all cancelled, go on
            try:
                lane.waiting.remove(handle)
            except ValueError:
                return False
            lane.cancelled += 1
            return True

    def detach(self, lane: ModelLane) -> bool:
        """Remove a model's lane if it has no job waiting or running (False otherwise): an unloaded model's."""
        with self._condition:
            if lane.waiting or lane.running:
                return False
            self._lanes.remove(lane)
            return True

    def stats(self, lane: ModelLane) -> dict[str, Any]:
        with self._condition:
            return lane.stats()

    def idle(self) -> bool:
        with self._condition:
            return not any(lane.waiting or lane.running for lane in self._lanes)

    def stop_taking(self) -> None:
        with self._condition:
            self._stopping = True

    def stop(self, timeout: float) -> None:
        """Refuse new jobs, fail the waiting ones, interrupt the running ones, and wait for the slots."""
        with self._condition:
            self._stopping = True
            abandoned = [handle for lane in self._lanes for handle in lane.waiting]
            for lane in self._lanes:
                lane.waiting.clear()
                for handle in lane.running:
                    handle.request_cancel()  # stop at its next denoising step
            self._condition.notify_all()
        for handle in abandoned:
            handle.finish_from_worker(error=EngineStopped("the server is shutting down"))
        deadline = time.monotonic() + timeout
        for thread in self._slots:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- the slots' loop ------------------------------------------------------------------------------

    def _run(self, slot: int) -> None:
        while True:
            with self._condition:
                call = self._take_batch(slot)
                if call is None:
                    return
            try:
                self._execute(call)
            finally:
                with self._condition:
                    del self._calls[slot]
                    self._threads_in_use -= call.threads
                    self._busy_slots -= 1
                    self._condition.notify_all()

    def _take_batch(self, slot: int) -> RunningCall | None:
        """The next batch and the threads it may use, waiting as needed. Call with the condition held."""
        while True:
            lane = self._next_lane(slot) if self._may_take(slot) else None
            if lane is not None:
                break
            if self._stopping and not any(lane.waiting for lane in self._lanes):
                return None
            self._condition.wait()
        batch = [lane.waiting.popleft()]
        self._busy_slots += 1
        # A core held while it waits for companions: no other slot may count every core free meanwhile.
        self._threads_in_use += 1
        lane.running.extend(batch)
        self._gather(lane, batch)
        self._threads_in_use -= 1
        threads = self._threads_for(lane)
        self._threads_in_use += threads
        self._calls[slot] = RunningCall(slot, lane, batch, threads, time.monotonic(), batch[0].background)
        self._condition.notify_all()  # slot n + 1 may take work now that n are busy
        return self._calls[slot]

    def _may_take(self, slot: int) -> bool:
        # Slot n takes work only while n others are busy (paused or not): a lone request always runs on slot 0,
        # whose model copy and OpenMP threads are warm (alternating slots made a lone request 1.4x slower), and
        # the interactive job slot 0 is giving its batch lines up for is slot 0's.
        giving_way = slot > 0 and any(call.yielding for call in self._calls.values())
        return not giving_way and self._busy_slots >= slot and (self._active_threads() < self.cores or not self.cpu)

    def _interactive_demand(self) -> bool:
        return any(lane.interactive_waiting() or lane.interactive_running() for lane in self._lanes)

    def _background_calls(self) -> list[RunningCall]:
        """Calls of batch lines that give way now: while interactive work waits or runs, they pause at their next
        step, so their slots and threads do not count (none if there is no such work)."""
        if not self._interactive_demand():
            return []
        return [call for call in self._calls.values() if call.background]

    def _active_threads(self) -> int:
        return self._threads_in_use - sum(call.threads for call in self._background_calls())

    def _takeable(self, lane: ModelLane, demand: bool) -> bool:
        # While interactive work waits or runs, no batch line starts: it would only pause at its first step.
        return lane.interactive_waiting() if demand else bool(lane.waiting)

    def _next_lane(self, slot: int) -> ModelLane | None:
        """The next model with waiting jobs that this slot has a replica of, taking turns between models."""
        demand = self._interactive_demand()
        for offset in range(len(self._lanes)):
            lane = self._lanes[(self._turn + offset) % len(self._lanes)]
            if self._takeable(lane, demand) and slot < len(lane.replicas):
                self._turn = (self._turn + offset + 1) % len(self._lanes)
                return lane
        return None

    def _gather(self, lane: ModelLane, batch: list[SlotJob]) -> None:
        """Add compatible waiting jobs to ``batch``; wait for companions while clients run in parallel."""
        key = batch[0].batch_key
        if key is None:
            return
        deadline = batch[0].submitted + self.policy.batch_wait_ms / 1000
        while True:
            images = sum(handle.job.n for handle in batch)
            for handle in list(lane.waiting):
                # Batch lines and interactive jobs never share a call: an interactive client must not wait for a
                # batch's images, and a call of batch lines alone can pause and give way.
                joins = handle.batch_key == key and handle.background == batch[0].background
                if joins and images + handle.job.n <= self.policy.max_batch_images:
                    lane.waiting.remove(handle)
                    lane.running.append(handle)
                    batch.append(handle)
                    images += handle.job.n
            wait = deadline - time.monotonic()
            full = images >= self.policy.max_batch_images or len(batch) >= lane.last_batch_jobs
            if full or wait <= 0 or self._stopping:
                return
            self._condition.wait(wait)

    def _threads_for(self, lane: ModelLane) -> int:
        if not self.cpu:
            return 1
        # Split the cores only when another slot is running or could take the waiting work.
        demand = self._interactive_demand()
        others = any(self._takeable(other, demand) and len(other.replicas) > 1 for other in self._lanes)
        parallel = others or self._busy_slots - len(self._background_calls()) > 1
        share = max(1, self.cores // self.policy.workers) if parallel else self.cores
        return max(1, min(share, self.cores - self._active_threads()))

    def _execute(self, call: RunningCall) -> None:
        started = time.monotonic()
        backend = call.lane.replicas[call.slot]
        if self.cpu:
            use_cpu_threads(call.threads)
        # Counted here, on the backend's own thread: a tokenizer is not safe to share across threads.
        tokens = [backend.count_tokens(handle.job.prompt) if handle.job.prompt else 0 for handle in call.handles]
        for handle in call.handles:
            handle.checkpoint = functools.partial(self._checkpoint, call)
        try:
            result = run_isolated(backend, [handle.ticket for handle in call.handles])
        finally:
            for handle in call.handles:
                handle.checkpoint = None
        seconds = time.monotonic() - started
        requeued = self._record(call, result, seconds, started)
        for handle, outcome, prompt_tokens in zip(call.handles, result.outcomes, tokens, strict=True):
            if handle in requeued:
                continue
            if isinstance(outcome, BaseException):
                handle.finish_from_worker(error=outcome)
            else:
                handle.finish_from_worker(JobResult(outcome, prompt_tokens, seconds))

    def _checkpoint(self, call: RunningCall) -> bool:
        """A job of the call at a step boundary: counted; in a background call, pauses while interactive work
        waits or runs; True to give way."""
        call.lane.steps += 1  # read without the lock: a figure that shows a long call is moving
        if not call.background:
            return False
        paused = False
        with self._condition:
            while not call.yielding and not self._stopping and self._interactive_demand() and not call.cancelled():
                if not self._make_room():
                    paused = True
                    self._condition.wait(0.5)  # woken when work ends; looks again, should a wake-up be missed
            yielding = call.yielding
        if paused and self.cpu:
            use_cpu_threads(call.threads)  # MKL's count is process-wide: an interactive call may have changed it
        return yielding

    def _make_room(self) -> bool:
        """Ask a background call to give its slot up to a waiting interactive job, unless one runs; True if asked."""
        waiting = any(lane.interactive_waiting() for lane in self._lanes)
        if not waiting or any(lane.interactive_running() for lane in self._lanes):
            return False
        call = call_to_give_way(self._calls)
        if call is not None:
            call.yielding = True
            self._condition.notify_all()
        return call is not None

    def _requeue(self, call: RunningCall, result: BatchResult) -> list[SlotJob]:
        """The jobs of a call that gave way, queued again at the head of the batch lines (condition held)."""
        outcomes = zip(call.handles, result.outcomes, strict=True)
        yielded = [handle for handle, outcome in outcomes if isinstance(outcome, Cancelled) and not handle.cancelled]
        if not call.yielding or self._stopping:  # stopping: they end cancelled, as the other running jobs do
            return []
        at = sum(not waiting.background for waiting in call.lane.waiting)
        for handle in reversed(yielded):
            call.lane.waiting.insert(at, handle)
        return yielded

    def _record(self, call: RunningCall, result: BatchResult, seconds: float, started: float) -> list[SlotJob]:
        """Count the call's outcomes and requeue the jobs of a call that gave way; those jobs (not finished)."""
        lane, batch = call.lane, call.handles
        made = sum(len(o) for o in result.outcomes if not isinstance(o, BaseException))
        done = sum(not isinstance(o, BaseException) for o in result.outcomes)
        # Figures first, so whoever wakes on a result sees them updated.
        with self._condition:
            for handle in batch:
                lane.running.remove(handle)
            requeued = self._requeue(call, result)
            left = sum(isinstance(o, Cancelled) for o in result.outcomes) - len(requeued)
            lane.completed += done
            lane.cancelled += left
            lane.failed += len(batch) - done - left - len(requeued)
            if made:
                lane.record(seconds, made)
            if not call.background:  # how many clients send in parallel: batch lines queue all at once
                lane.last_batch_jobs = len(batch)
        if self.metrics is not None:
            self.metrics.batch_images.labels(lane.name).observe(sum(handle.job.n for handle in batch))
            for handle in batch:
                if handle not in requeued:
                    self.metrics.queue_wait.labels(lane.name).observe(started - handle.submitted)
            for stage, stage_seconds in result.stage_seconds.items():
                self.metrics.stage_seconds.labels(lane.name, stage).observe(stage_seconds)
            self.metrics.images.labels(lane.name).inc(made)
            self.metrics.cancelled.labels(lane.name).inc(left)
            self.metrics.requeued.labels(lane.name).inc(len(requeued))
            self.metrics.busy_seconds.labels(self.device).inc(seconds)
            for outcome in result.outcomes:
                if isinstance(outcome, NonFiniteOutput):
                    self.metrics.nonfinite.labels(lane.name, outcome.stage).inc()
        return requeued
