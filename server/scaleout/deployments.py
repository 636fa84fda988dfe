"""The Ray Serve application: an ingress deployment running Easel's HTTP app, and one deployment per model.

The ingress is the same Starlette app as plain serving (validation, errors,
auth, responses, SSE, url files) with a :class:`~server.scaleout.engine.RayEngine`.
A model deployment's replica holds the backend inside a
:class:`~server.engine.local.LocalEngine` built from the same settings
(``--workers``, ``--max-batch-images``, ``--batch-wait-ms``) on the CPUs Ray
gave it, so queueing, batching and cancellation work on a replica exactly as
in one process. Deployment names:
``easel`` for the ingress, ``model-NAME`` per model; a Serve config file's
``deployments:`` section overrides their options by those names.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp

from pipelines.base import ImageJob

from ..app.application import create_app, local_engine_factory
from ..engine.base import EngineMetrics, ModelToLoad
from ..serving.job_errors import ERROR_TABLE
from ..serving.models import model_to_load
from ..settings.config import Settings
from ..settings.loading import load_settings
from ..settings.ray_serve import RayServeSettings
from .engine import RayEngine, off_the_loop_if_pixels
from .figures import FigureLog
from .serve_state import ServeWatch, model_deployment_name, preloaded_models, read_serve_state
from .wire import Message, accepted, error_message, is_background, job_from_wire, preview_message, result_message

log = logging.getLogger("easel.scaleout")

INGRESS_NAME = "easel"
# A replica's own queue never refuses a job: Serve's max_ongoing_requests bounds what it holds, and a
# Serve config file may raise that without the code knowing.
REPLICA_QUEUE_SIZE = 10_000
# Concurrent HTTP requests one ingress replica takes (Serve's default is 5): it is an async app whose own
# --queue-size answers 429 when a model's queue is full; streams and url fetches must not wait behind jobs.
INGRESS_MAX_ONGOING_REQUESTS = 1000


class ModelReplica:
    """One replica of one model: its backend, run by a LocalEngine in this process."""

    def __init__(self, model: ModelToLoad, settings: Settings) -> None:
        self._name = model.name
        # Its torch threads: the CPUs Ray gave it (as OMP_NUM_THREADS, at least 1), not the machine's.
        cores = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        on_replica = replace(settings, queue_size=REPLICA_QUEUE_SIZE)
        self._figures = FigureLog()  # what its engine measures, sent to the ingress with each job's answer
        self._engine = local_engine_factory(on_replica, cores=cores)(self._figures.metrics())
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._loaded: Message
        try:
            info = self._engine.load(model)
        except Exception as error:  # kept for the ingress, which reports it as plain serving does
            log.error("model %s failed to load on replica %s", model.name, self._replica, exc_info=error)
            self._loaded = error_message(error)
        else:
            log.info("model %s loaded on replica %s (%s)", model.name, self._replica, info.device)
            self._loaded = {"kind": "loaded", "info": info}

    def model_info(self) -> Message:
        """``loaded`` with the ModelInfo, or the ``error`` that loading raised."""
        return self._loaded

    def stats(self) -> dict[str, Any]:
        """This replica's own queue figures, with its id."""
        return {"replica": self._replica, **(self._engine.stats(self._name) or {})}

    async def run(self, wire_job: Message) -> AsyncIterator[Message]:
        """Messages for one job (:mod:`server.scaleout.wire`); cancelling the call cancels the job. A batch line
        (``background``) waits behind this replica's interactive jobs, as in one process."""
        job = await off_the_loop_if_pixels(wire_job["image"] is not None, job_from_wire, wire_job)
        try:
            handle = self._engine.submit(self._name, job, background=is_background(wire_job))
        except Exception as error:  # QueueFull, EngineStopped: the ingress answers them
            yield self._ending(error_message(error))
            return
        try:
            yield accepted(self._replica)
            async for preview in handle.previews():
                yield preview_message(preview)
            result = await handle.result()
        except Exception as error:
            _log_unexpected(error, job)
            yield self._ending(error_message(error))
            return
        finally:
            if not handle.done:  # the call was cancelled: the client has gone
                self._engine.cancel(handle)
        yield self._ending(result_message(result))  # native-size images: a copy of their pixels

    def _ending(self, message: Message) -> Message:
        """A message that ends a job, with the figures this replica has measured since the last one."""
        return {**message, "figures": self._figures.drain()}

    def __del__(self) -> None:
        self._engine.shutdown(5.0)


def _log_unexpected(error: Exception, job: ImageJob) -> None:
    if not any(isinstance(error, kind) for kind, _ in ERROR_TABLE):
        log.error("job failed on this replica (task %s, seeds %s)", job.task, job.seeds, exc_info=error)


@serve.ingress()
class EaselIngress:
    """The HTTP app; its engine sends jobs to the model deployments, its models' status comes from Serve's state.

    The preloaded models (those ``/health/ready`` waits for) are the ones whose deployment keeps a replica
    (``min_replicas`` of at least 1, or a fixed count); one at zero replicas starts on its first request.
    """

    def __init__(self, settings: Settings, models: dict[str, DeploymentHandle]) -> None:
        self._settings = settings
        self._models = models
        self._watch: ServeWatch | None = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        def ray_engine(metrics: EngineMetrics | None) -> RayEngine:
            return RayEngine(self._models, self._settings.queue_size, metrics)

        application = serve.get_replica_context().app_name
        try:
            keeping = preloaded_models(read_serve_state(application, list(self._models)))
        except Exception as error:  # Serve's details unreadable: wait for every model, as without scale to zero
            log.error("cannot read Ray Serve's state, so every model counts as preloaded", exc_info=error)
            keeping = tuple(self._models)
        app = create_app(replace(self._settings, preload=keeping), make_engine=ray_engine)
        state = app.state.easel
        self._watch = ServeWatch(application, state.catalog, state.metrics.models)
        self._watch.start()
        return app

    def __del__(self) -> None:
        if self._watch is not None:
            self._watch.stop()


def model_options(scaling: RayServeSettings, shutdown_timeout: float) -> dict[str, Any]:
    """Serve deployment options for a model from the ``--ray`` flags (and ``--shutdown-timeout``)."""
    options: dict[str, Any] = {
        "max_ongoing_requests": scaling.max_ongoing_requests,
        "graceful_shutdown_timeout_s": shutdown_timeout,
        "ray_actor_options": {"num_cpus": scaling.replica_cpus, "num_gpus": scaling.replica_gpus},
    }
    if scaling.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
        if scaling.downscale_delay_seconds is not None:  # also from one replica to none (Serve's default)
            options["autoscaling_config"]["downscale_delay_s"] = scaling.downscale_delay_seconds
    else:
        options["num_replicas"] = scaling.replicas
    return options


def build_app(settings: Settings, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Application:
    """The Serve application for ``settings``; ``overrides`` adds deployment options per model name.

    ``settings.image_dir`` must be set, and shared by every ingress replica
    (docs/ray.md, "url images behind any replica").
    """
    if settings.image_dir is None:
        raise ValueError("on Ray Serve, url images need an --image-dir that every ingress replica shares")
    scaling = settings.ray or RayServeSettings()
    models = {}
    for spec in settings.models:
        options = model_options(scaling, settings.shutdown_timeout)
        for key, value in (overrides or {}).get(spec.name, {}).items():
            options[key] = {**options[key], **value} if isinstance(value, Mapping) and key in options else value
        deployment = serve.deployment(ModelReplica).options(name=model_deployment_name(spec.name), **options)
        # A replica loads its model as one process would: --dtype/--family-dtype, --optimize, --quantize,
        # --step-cache and the model's easel.toml entry all change what it holds and computes.
        models[spec.name] = deployment.bind(model_to_load(settings, spec), settings)
    ingress = serve.deployment(EaselIngress).options(
        name=INGRESS_NAME,
        num_replicas=scaling.ingress_replicas,
        max_ongoing_requests=INGRESS_MAX_ONGOING_REQUESTS,
        graceful_shutdown_timeout_s=settings.shutdown_timeout,
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(settings, models)


def build(args: Mapping[str, Any]) -> Application:
    """Application builder for ``serve run`` and ``serve deploy`` (``examples/ray-serve.yaml``).

    ``args.argv``: the options ``easel serve --ray`` takes (EASEL_* variables also apply).
    """
    return build_app(load_settings([*args.get("argv", []), "--ray"]))
