"""Which models are in memory: load on demand within a budget, evict the least recently used, unload the idle.

A model costs its weights in the serving dtype (once per worker copy) plus
a working margin (:mod:`pipelines.residency`). The preloaded models load at
start; any other loads on the first request that names it, which waits in
that model's queue with the others that came for it (they share the load),
for up to ``--load-timeout-seconds``; a request waiting for a load holds a
place in the model's queue (past ``--queue-size``: 429, as a full queue).
Whatever can be checked before a load (the folder, its files and weight
headers, the settings, room once the idle models are gone) is checked before
anyone is evicted. A load that needs room evicts idle models, least recently
used first, never a pinned one, and never one with a job waiting or running:
it waits for it to go idle. On a GPU an evicted model moves to CPU RAM while
``--host-memory-budget`` allows (the warm tier). A load that fails marks the
model ``failed``; a request after the back-off retries it. All loads and
unloads run one at a time, in threads. (docs/models-memory.md)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from ..engine.base import Engine, EngineStopped, QueueFull, copies_for
from ..observe.metrics import ModelMemoryMetrics
from ..settings.config import Settings
from .model_facts import model_facts
from .models import Catalog, LoadFailed, ModelEntry, failed_to_load, model_to_load

log = logging.getLogger("easel.models")

MAX_BACKOFF_SECONDS = 60.0
IDLE_POLL_SECONDS = 0.05  # how often a load that needs room looks for a model gone idle
LOAD_GUESS_SECONDS = 5.0  # a first load's expected time, before one has been measured


class LoadTimedOut(Exception):
    """A request waited ``--load-timeout-seconds`` for its model to load."""

    def __init__(self, model: str, waited: float) -> None:
        super().__init__(f"Model '{model}' did not finish loading within {waited:g} s; retry shortly.")
        self.model = model


class NoRoom(RuntimeError):
    """The budget cannot take the model now: the others are pinned, or busy past the load timeout."""


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        engine: Engine,
        metrics: ModelMemoryMetrics,
        *,
        loader_checks: bool = True,
    ) -> None:
        self.settings = settings
        # False when the app loads through a loader of its own (tests, benchmarks): pipelines.loader's checks
        # before evicting know only what that loader's folders hold, not what a replacement makes.
        self.loader_checks = loader_checks
        self.catalog = catalog
        self.engine = engine
        self.metrics = metrics
        self.budget_bytes: int | None = None  # None until preload() reads the device; no limit on Ray
        self.host_budget_bytes = 0  # the warm tier's room: only on a GPU
        self._device = "cpu"
        self._load_lock = threading.Lock()  # one load or unload at a time: the budget is checked and spent in turn
        self._loads: dict[str, asyncio.Future[None]] = {}  # the load each model's waiting requests share
        self._stop = threading.Event()
        self._waiting: dict[str, int] = {}  # requests waiting for each model's load (the event loop's only)
        self._load_started: dict[str, float] = {}  # when each model's shared load began
        self._load_seconds: dict[str, float] = {}  # how long each model's last load took

    # -- start: read the device, decide the preloads, load them (a background thread) -------------------

    def preload(self, on_failure: LoadFailed | None = None) -> None:
        """Load the preloaded models in turn; without --preload, the default model, then every other that fits
        the budget without evicting (so a server whose models all fit loads them all, as before)."""
        try:
            self._read_budgets()
        except Exception as error:  # a device this machine lacks: each load then says so, with no budget to keep
            log.error("model memory: cannot read the device's memory: %s: %s", type(error).__name__, error)
        for entry in self.catalog.entries.values():
            entry.facts = _read_facts(entry)
            self._price(entry)
        named = self.settings.preload
        # On Ray the ingress names them (models that keep a replica): the others start on demand.
        order = list(named) if named or self.settings.use_ray else self._fitting(self.settings.default_model_name)
        with self.catalog.lock:
            self.catalog.preloaded = tuple(order)
            for entry in self.catalog.entries.values():
                if entry.name not in order:
                    entry.status = "unloaded"
        for name in order:
            if self._stop.is_set():
                return
            entry = self.catalog.entries[name]
            self.load(entry)
            if entry.status == "failed" and on_failure is not None and entry.error is not None:
                on_failure(name, entry.error)

    def _read_budgets(self) -> None:
        from pipelines.residency import host_memory, serving_device, total_memory

        if self.settings.use_ray:
            return  # each model is its own deployment; Serve places and scales the replicas
        device = serving_device(self.settings.device)
        self._device = str(device)
        self.budget_bytes = self.settings.memory_budget.of(total_memory(device))
        if device.type == "cuda":
            self.host_budget_bytes = self.settings.host_memory_budget.of(host_memory())

    def _price(self, entry: ModelEntry) -> None:
        """The model's cost from its weight headers; left at zero when they cannot be read (its load says why)."""
        from pipelines.residency import model_cost, parameter_count, serving_device

        spec = entry.spec
        try:
            copies = copies_for(self._device, self.settings.workers, parameter_count(spec.path))
            quantize = self.settings.savings_for(spec)[0]
            device = serving_device(self.settings.device)
            cost = model_cost(spec.path, spec.family, device, self.settings.dtype_for(spec.family), quantize, copies)
        except Exception as error:  # a missing or damaged directory: loading it reports the reason
            log.debug("model %s: cost unknown: %s: %s", spec.name, type(error).__name__, error)
            return
        entry.device_bytes, entry.host_bytes = cost.device_bytes, cost.host_bytes

    def _fitting(self, default: str) -> list[str]:
        """The default model, then the others in order while they fit beside it."""
        names = [default] + [name for name in self.catalog.entries if name != default]
        chosen: list[str] = []
        spent = 0
        for name in names:
            cost = self.catalog.entries[name].device_bytes
            if self.budget_bytes is None or spent + cost <= self.budget_bytes or not chosen:
                chosen.append(name)
                spent += cost
        return chosen

    def stop(self) -> None:
        self._stop.set()

    # -- requests: wait for a model to be on the device --------------------------------------------------

    async def bring(self, entry: ModelEntry, *, now: bool = False, retried: bool = False) -> None:
        """Return once the model is ready, loading it if needed (requests for it share the load); raises
        LoadTimedOut past --load-timeout-seconds, or the 503 of a model that failed to load (within the back-off
        after a failure, at once, unless ``now``: an operator's load).

        A request waiting for the load holds a place in the model's queue, as a queued job does: past
        ``--queue-size`` (twice that for a client's retry, as the engine allows) it gets QueueFull, the 429 of
        a full queue. An operator's load (``now``) takes no place.
        """
        with self.catalog.lock:
            if entry.status == "ready":
                return
            if entry.status == "failed" and time.monotonic() < entry.retry_at and not now:
                raise failed_to_load(entry)
        waiting = self._waiting.get(entry.name, 0)
        if not now and waiting >= self.settings.queue_size * (2 if retried else 1):
            raise QueueFull(entry.name, waiting, self._load_time_left(entry.name))
        self.metrics.waited.labels(entry.name).inc()
        shared = self._loads.get(entry.name)
        if shared is None:
            self._load_started[entry.name] = time.monotonic()
            shared = self._loads[entry.name] = asyncio.ensure_future(asyncio.to_thread(self.load, entry, True))
            shared.add_done_callback(lambda _: self._loads.pop(entry.name, None))
        timeout = self.settings.load_timeout_seconds
        self._waiting[entry.name] = waiting + (0 if now else 1)
        try:
            await asyncio.wait_for(asyncio.shield(shared), timeout)
        except asyncio.TimeoutError:
            raise LoadTimedOut(entry.name, timeout) from None
        finally:
            self._waiting[entry.name] -= 0 if now else 1
        if entry.status != "ready":
            raise failed_to_load(entry) if entry.status == "failed" else LoadTimedOut(entry.name, timeout)

    def _load_time_left(self, name: str) -> float:
        """Seconds until the load under way is likely done: its last load's time (else a guess) less the time
        it has run, and at least one; a turned-away request's Retry-After."""
        expected = self._load_seconds.get(name, LOAD_GUESS_SECONDS)
        return max(1.0, expected - (time.monotonic() - self._load_started.get(name, time.monotonic())))

    # -- loading and unloading (blocking: threads) ------------------------------------------------------

    def load(self, entry: ModelEntry, on_demand: bool = False) -> None:
        """Bring the model onto the device, making room first; a failure is recorded on the entry, not raised."""
        with self._load_lock:
            with self.catalog.lock:
                if entry.status == "ready" or self._stop.is_set():
                    return
                entry.status, entry.error, entry.waits_on_load = "loading", None, on_demand
            source = "host" if entry.tier == "host" else "disk"
            started = time.monotonic()
            try:
                if self.loader_checks and self.budget_bytes is not None and entry.tier is None:
                    self._check_before_evicting(entry)
                self._make_room(entry)
                info = self.engine.load(model_to_load(self.settings, entry.spec))
            except EngineStopped:  # the server stopped while this model loaded
                return
            except BaseException as error:  # MemoryError too: this model fails, the server and the others go on
                self._failed(entry, error)
                return
            seconds = self._load_seconds[entry.name] = time.monotonic() - started
            with self.catalog.lock:
                entry.info, entry.status, entry.tier = info, "ready", "device"
                entry.failures, entry.last_used = 0, time.monotonic()
            if not self.settings.use_ray:  # on Ray a load is a replica's start: counted from Serve's state
                self.metrics.loads.labels(entry.name, source).inc()
                self.metrics.load_seconds.labels(entry.name, source).observe(seconds)
            log.info(
                "model %s ready on %s (%s) in %.1f s from %s", entry.name, info.device, info.dtype, seconds, source
            )

    def _failed(self, entry: ModelEntry, error: BaseException) -> None:
        # A missing directory or a bad setting has a message written for people; anything else is
        # unexpected, so its type is kept in the message and its traceback goes to the log.
        expected = isinstance(error, (FileNotFoundError, ValueError, NoRoom))
        with self.catalog.lock:
            entry.error = str(error) if expected else f"{type(error).__name__}: {error}"
            entry.status, entry.tier = "failed", None
            entry.failures += 1
            entry.retry_at = time.monotonic() + min(MAX_BACKOFF_SECONDS, 2.0 ** (entry.failures - 1))
        self.metrics.load_failures.labels(entry.name).inc()
        log.error(
            "model %s failed to load: %s",
            entry.name,
            entry.error,
            exc_info=not (expected or isinstance(error, OSError)),
        )

    def _check_before_evicting(self, entry: ModelEntry) -> None:
        """Fail a load that cannot succeed before it evicts anyone: the loader's checks (the folder and its
        files, the weights' headers, the dtype and settings, room in what is free once the idle models are
        evicted), then the cost again from the headers, which may have changed since the server started."""
        from pipelines.loader import check_before_loading

        model = model_to_load(self.settings, entry.spec)
        releasable = sum(other.host_bytes for other in self._movable(entry))
        check_before_loading(
            model.name,
            model.spec.family,
            model.spec.path,
            presets=model.spec.presets,
            device=model.device,
            dtype=model.dtype,
            optimize=model.optimize,
            releasable=releasable,
        )
        self._price(entry)

    def _movable(self, entry: ModelEntry) -> list[ModelEntry]:
        """The models a load of ``entry`` may evict, least recently used first."""
        others = self.catalog.entries.values()
        return sorted(
            (other for other in others if other.tier == "device" and other is not entry and not other.pinned),
            key=lambda other: other.last_used,
        )

    def _resident(self) -> int:
        return sum(other.device_bytes for other in self.catalog.entries.values() if other.tier == "device")

    def _make_room(self, entry: ModelEntry) -> None:
        """Evict idle models, least recently used first, until ``entry`` fits; wait for busy ones to go idle."""
        if self.budget_bytes is None:
            return
        if entry.device_bytes > self.budget_bytes:
            raise NoRoom(f"model {entry.name!r} needs {_gb(entry.device_bytes)}, more than the whole "
                         f"--memory-budget of {_gb(self.budget_bytes)}")  # fmt: skip
        deadline = time.monotonic() + self.settings.load_timeout_seconds
        while self._resident() + entry.device_bytes > self.budget_bytes:
            movable = self._movable(entry)
            if not movable:
                raise NoRoom(f"model {entry.name!r} ({_gb(entry.device_bytes)}) does not fit beside the pinned "
                             f"models in --memory-budget {_gb(self.budget_bytes)}")  # fmt: skip
            if any(self._evict(victim, "room") for victim in movable):
                continue
            if time.monotonic() > deadline or self._stop.is_set():
                raise NoRoom(f"no room for model {entry.name!r}: the models holding the budget stayed busy")
            time.sleep(IDLE_POLL_SECONDS)

    def _evict(self, entry: ModelEntry, reason: str, *, keep_warm: bool = True) -> bool:
        """Take an idle model off the device (to CPU RAM when the warm tier has room); False while it is busy."""
        with self.catalog.lock:
            if entry.status != "ready" or entry.holds:
                return False
            entry.status = "unloaded"  # no request may hold it from here on
        park = keep_warm and self._warm_room(entry)
        if not self.engine.unload(entry.name, park=park):  # a job waits or runs: it stays
            with self.catalog.lock:
                entry.status = "ready"
            return False
        with self.catalog.lock:
            entry.tier = "host" if park else None
        self.metrics.evictions.labels(entry.name, reason).inc()
        log.info("model %s unloaded (%s)%s", entry.name, reason, ", kept in CPU RAM" if park else "")
        return True

    def _warm_room(self, entry: ModelEntry) -> bool:
        parked = sum(other.host_bytes for other in self.catalog.entries.values() if other.tier == "host")
        return parked + entry.host_bytes <= self.host_budget_bytes

    def unload(self, entry: ModelEntry, reason: str, *, wait: float = 0.0) -> bool:
        """Free the model from every tier, waiting up to ``wait`` seconds for it to go idle; False if it did not."""
        deadline = time.monotonic() + wait
        with self._load_lock:
            while entry.tier == "device" and not self._evict(entry, reason, keep_warm=False):
                if time.monotonic() >= deadline or entry.status != "ready":
                    return entry.tier != "device"
                time.sleep(IDLE_POLL_SECONDS)
            if entry.tier == "host" and self.engine.unload(entry.name):
                with self.catalog.lock:
                    entry.tier = None
            return True

    def unload_idle(self, idle_seconds: float) -> list[str]:
        """Unload the models nobody has asked for in ``idle_seconds`` (pinned ones stay); their names."""
        now = time.monotonic()
        idle = [
            entry
            for entry in self.catalog.entries.values()
            if entry.tier is not None and not entry.pinned and now - entry.last_used >= idle_seconds
        ]
        return [entry.name for entry in idle if self.unload(entry, "idle") and entry.tier is None]

    async def unload_idle_forever(self) -> None:
        idle_seconds = self.settings.idle_unload_seconds
        while True:
            await asyncio.sleep(min(1.0, idle_seconds / 4))
            await asyncio.to_thread(self.unload_idle, idle_seconds)


def _read_facts(entry: ModelEntry) -> Any:
    """The directory's licence, parameters, dtypes and size; None (and a log line) when they cannot be read."""
    try:
        return model_facts(entry.spec.path)
    except Exception as error:  # a missing or broken directory: loading reports it properly
        log.debug("model %s: weights not described: %s: %s", entry.name, type(error).__name__, error)
        return None


def _gb(count: int) -> str:
    return f"{count / 1e9:.2f} GB"
