"""What Ray Serve says of each model's replicas, read by the ingress: status, replica counts, starts and stops.

On Ray a model's memory is its deployment's replicas, which Serve's autoscaler
starts and stops (down to zero with ``min_replicas: 0``). An ingress replica
asks Serve's controller for its deployments' details (what ``serve status``
prints, plus each replica's id) every :data:`POLL_SECONDS`, in a thread of its
own, so ``/v1/models`` and ``/metrics`` read the last answer and cost no Ray
call. Each poll sets the models' ``status`` as plain serving's model manager
would (:func:`next_status`) and counts the replicas that started and stopped
since the last one (:class:`ServeWatch`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..observe.metrics import ModelMemoryMetrics
from ..serving.models import Catalog, ModelEntry, Status

log = logging.getLogger("easel.scaleout")

POLL_SECONDS = 1.0  # how stale /v1/models and the replica metrics may be
FAILED_RETRY_SECONDS = 5.0  # a model whose replicas Serve cannot start: requests 503 this long, then try again
STARTING = frozenset({"STARTING", "UPDATING", "RECOVERING", "PENDING_MIGRATION"})
STOPPING = frozenset({"STOPPING"})
SERVE_FAILED = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})


def model_deployment_name(model: str) -> str:
    """A model's Serve deployment (its ingress is ``easel``): the names a Serve config's ``deployments:`` use."""
    return f"model-{model}"


@dataclass(frozen=True)
class ReplicaView:
    """One model deployment as Serve's controller describes it."""

    running: dict[str, float]  # running replica id -> its actor's start (seconds since the epoch)
    starting: frozenset[str]
    stopping: int
    min_replicas: int  # what the deployment keeps when idle: its autoscaling minimum, or its fixed count
    max_replicas: int
    failure: str | None = None  # Serve's message when the deployment failed to start or keep its replicas

    def as_json(self) -> dict[str, int]:
        """The ``replicas`` field of /v1/models."""
        return {
            "running": len(self.running),
            "starting": len(self.starting),
            "stopping": self.stopping,
            "min": self.min_replicas,
            "max": self.max_replicas,
        }


def read_serve_state(app_name: str, models: list[str]) -> dict[str, ReplicaView]:
    """Each model's deployment in ``app_name`` as Serve's controller sees it now (blocking: a Ray call)."""
    # serve.status() gives counts only; a replica's id (to count starts and stops) is in the details it is
    # made from (patches.ray).
    from patches.ray import serve_details

    application = serve_details().applications.get(app_name)
    if application is None:
        return {}
    views = {}
    for model in models:
        deployment = application.deployments.get(model_deployment_name(model))
        if deployment is not None:
            views[model] = _view(deployment)
    return views


def _view(deployment: Any) -> ReplicaView:
    states = [(replica.replica_id, str(replica.state.value), replica.start_time_s) for replica in deployment.replicas]
    config = deployment.deployment_config
    scaling = config.autoscaling_config  # a dict of Serve's AutoscalingConfig fields; unset: a marker object
    if isinstance(scaling, dict):
        lowest, highest = int(scaling.get("min_replicas", 1)), int(scaling.get("max_replicas", 1))
    else:
        fixed = config.num_replicas
        lowest = highest = fixed if isinstance(fixed, int) else 1
    failed = str(deployment.status.value) in SERVE_FAILED
    return ReplicaView(
        running={replica: started for replica, state, started in states if state == "RUNNING"},
        starting=frozenset(replica for replica, state, _ in states if state in STARTING),
        stopping=sum(1 for _, state, _ in states if state in STOPPING),
        min_replicas=lowest,
        max_replicas=highest,
        failure=(deployment.message or str(deployment.status.value)) if failed else None,
    )


def next_status(status: Status, info_known: bool, view: ReplicaView, *, own_loading: bool) -> Status | None:
    """The model's status once Serve's state is ``view``; None to leave it as it is.

    No running replica: ``unloaded`` (``loading`` while Serve starts one, ``failed`` when Serve gave up);
    a running one: ``ready`` once this ingress knows the model (its first request asks the replica).
    A ``loading`` that this watch did not set is a request's load, waiting for Serve to start a replica:
    it owns the status until then. A ``failed`` status the replica's loader reported stays: that replica
    is running, holding the error.
    """
    if view.running:
        return "ready" if status in ("unloaded", "loading") and info_known else None
    if view.failure is not None:
        return "failed" if status != "failed" else None
    if view.starting:
        return "loading" if status in ("ready", "unloaded") else None
    if status == "loading":
        return "unloaded" if own_loading else None
    return "unloaded" if status == "ready" else None


class ServeWatch:
    """Keeps an ingress replica's catalog and model metrics in step with Serve's state (a daemon thread)."""

    def __init__(self, app_name: str, catalog: Catalog, metrics: ModelMemoryMetrics) -> None:
        self._app = app_name
        self._catalog = catalog
        self._metrics = metrics
        self._running: dict[str, set[str]] = {}  # replicas seen running at the last poll, per model
        self._seen_starting: set[str] = set()  # replicas seen starting: their start is timed when they run
        self._loading: set[str] = set()  # models this watch marked loading (Serve started a replica unasked)
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._poll_forever, name="easel-serve-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _poll_forever(self) -> None:
        failing = False
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.poll()
                failing = False
            except Exception as error:  # the controller restarting: keep the last state, ask again
                if not failing:
                    log.warning("cannot read Ray Serve's state: %s: %s", type(error).__name__, error)
                failing = True

    def poll(self) -> dict[str, ReplicaView]:
        """Read Serve's state once and apply it; the views read."""
        views = read_serve_state(self._app, list(self._catalog.entries))
        for name, view in views.items():
            self._count(name, view)
            self._apply(self._catalog.entries[name], view)
        return views

    def _count(self, name: str, view: ReplicaView) -> None:
        """Replica starts as loads (timed from the actor's start when seen starting), stops as evictions."""
        before = self._running.get(name, set())
        for replica, started in view.running.items():
            if replica in before:
                continue
            self._metrics.loads.labels(name, "replica").inc()
            if replica in self._seen_starting:
                self._metrics.load_seconds.labels(name, "replica").observe(max(0.0, time.time() - started))
                self._seen_starting.discard(replica)
        for _ in before - set(view.running):
            self._metrics.evictions.labels(name, "replica_stopped").inc()
        self._running[name] = set(view.running)
        self._seen_starting |= view.starting

    def _apply(self, entry: ModelEntry, view: ReplicaView) -> None:
        with self._catalog.lock:
            entry.replicas = view.as_json()
            status = next_status(entry.status, entry.info is not None, view, own_loading=entry.name in self._loading)
            if status is None or status == entry.status:
                return
            self._loading.discard(entry.name)
            log.info("model %s: %s -> %s (Ray Serve: %s)", entry.name, entry.status, status, view.as_json())
            entry.status = status
            entry.tier = "device" if status == "ready" else None
            if status == "loading":
                entry.waits_on_load = True  # a request waits for the replica Serve is starting
                self._loading.add(entry.name)
            if status == "failed":
                entry.error = f"Ray Serve could not start a replica: {view.failure}"
                entry.failures += 1
                entry.retry_at = time.monotonic() + FAILED_RETRY_SECONDS


def preloaded_models(views: Mapping[str, ReplicaView]) -> tuple[str, ...]:
    """The models readiness waits for on Ray: those whose deployment keeps at least one replica."""
    return tuple(name for name, view in views.items() if view.min_replicas >= 1)
