"""Prometheus metrics, one registry per app: what the HTTP layer and the engine count, and ``GET /metrics``.

The HTTP figures are recorded by :class:`~server.http.access_log.AccessLogMiddleware`,
the engine's by the engine itself (:class:`~server.engine.base.EngineMetrics`), webhook deliveries by
:class:`~server.webhooks.Webhooks`;
queue depth and model state are read when scraped. The names, their labels and
an example scrape configuration are on docs/reference/metrics.md (generated from
this registry by ``scripts/gen_docs.py``) and in (docs/serving.md, "Metrics").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from ..engine.base import Engine, EngineMetrics
from ..http.access_log import HTTPMetrics
from ..webhooks import WebhookMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


@dataclass(frozen=True)
class ModelMemoryMetrics:
    """What the model-memory manager counts (:mod:`server.serving.residency`)."""

    loads: Any  # Counter by model and source (disk, host)
    load_failures: Any  # Counter by model
    load_seconds: Any  # Histogram by model and source
    evictions: Any  # Counter by model and reason (room, idle, request)
    waited: Any  # Counter by model: requests that waited for the model to load


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http = HTTPMetrics(
            requests=Counter("easel_requests", "HTTP requests answered", ["route", "status", "model"], registry=r),
            request_seconds=Histogram(
                "easel_request_duration_seconds",
                "From the request's arrival to its last byte sent",
                ["route"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            rejected=Counter("easel_rejected", "Requests answered 429 (queue full)", ["model"], registry=r),
            server_errors=Counter("easel_server_errors", "Requests answered 5xx", ["route"], registry=r),
        )
        self.engine = EngineMetrics(
            queue_wait=Histogram(
                "easel_queue_wait_seconds",
                "From a job's submission to the start of its pipeline call",
                ["model"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            batch_images=Histogram(
                "easel_batch_images", "Images per pipeline call", ["model"], buckets=BATCH_BUCKETS, registry=r
            ),
            stage_seconds=Histogram(
                "easel_stage_seconds",
                "Seconds a pipeline stage took in one call (text_encoder, image_encoder, prior, decoder, image_decode)",
                ["model", "stage"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            images=Counter("easel_images_generated", "Images made", ["model"], registry=r),
            cancelled=Counter("easel_jobs_cancelled", "Jobs cancelled or dropped (client gone)", ["model"], registry=r),
            busy_seconds=Counter(
                "easel_worker_busy_seconds", "Seconds worker slots spent in pipeline calls", ["device"], registry=r
            ),
            nonfinite=Counter(
                "easel_nonfinite_outputs",
                "Jobs failed because a pipeline stage produced NaN or infinite values",
                ["model", "stage"],
                registry=r,
            ),
            requeued=Counter(
                "easel_batch_jobs_requeued",
                "Batch-line jobs queued again because their pipeline call gave its slot to an interactive request",
                ["model"],
                registry=r,
            ),
        )

        self.webhooks = WebhookMetrics.create(r)
        self.models = ModelMemoryMetrics(
            loads=Counter(
                "easel_model_loads",
                "Models loaded, by source (disk, host; on Ray Serve: replica, a replica started)",
                ["model", "source"],
                registry=r,
            ),
            load_failures=Counter("easel_model_load_failures", "Model loads that failed", ["model"], registry=r),
            load_seconds=Histogram(
                "easel_model_load_seconds",
                "Seconds a model took to load, by source (disk; host: back from CPU RAM; "
                "replica: a Ray Serve replica's start)",
                ["model", "source"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            evictions=Counter(
                "easel_model_evictions",
                "Models taken off the device, by reason (room: for another model's load; idle; request: the API; "
                "on Ray Serve: replica_stopped)",
                ["model", "reason"],
                registry=r,
            ),
            waited=Counter(
                "easel_requests_waited_for_load", "Requests that waited for their model to load", ["model"], registry=r
            ),
        )

    def watch(self, catalog: Any, engine: Engine) -> None:
        """Read queue depth and model state from the catalog and the engine at every scrape."""
        self.registry.register(_StateCollector(catalog, engine))

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)


class _StateCollector(Collector):
    def __init__(self, catalog: Any, engine: Engine) -> None:
        self.catalog = catalog
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued = GaugeMetricFamily("easel_queue_depth", "Jobs waiting per model", labels=["model"])
        running = GaugeMetricFamily("easel_jobs_running", "Jobs in a pipeline call per model", labels=["model"])
        state = GaugeMetricFamily(
            "easel_model_state",
            "1 for the model's load state (unloaded, loading, ready, failed)",
            labels=["model", "state"],
        )
        resident = GaugeMetricFamily(
            "easel_model_resident_bytes",
            "Bytes a model holds, by tier (device; host: CPU RAM, the warm tier)",
            labels=["model", "tier"],
        )
        for name, entry in self.catalog.entries.items():
            for status in ("unloaded", "loading", "ready", "failed"):
                state.add_metric([name, status], 1.0 if entry.status == status else 0.0)
            for tier, held in (("device", entry.device_bytes), ("host", entry.host_bytes)):
                resident.add_metric([name, tier], float(held) if entry.tier == tier else 0.0)
            stats = self.engine.stats(name)
            if stats is not None:
                queued.add_metric([name], stats["queued"])
                running.add_metric([name], stats["running"])
        yield from (queued, running, state, resident, self._replicas())

    def _replicas(self) -> GaugeMetricFamily:
        replicas = GaugeMetricFamily(
            "easel_model_replicas",
            "On Ray Serve: the model deployment's replicas by state (running, starting, stopping)",
            labels=["model", "state"],
        )
        for name, entry in self.catalog.entries.items():
            counts = getattr(entry, "replicas", None)  # set by server.scaleout.serve_state; None in one process
            for state, count in (counts or {}).items():
                if state in ("running", "starting", "stopping"):
                    replicas.add_metric([name, state], float(count))
        return replicas


async def serve_metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.easel.metrics
    return metrics.render()
