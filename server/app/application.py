"""The Starlette application: routes, middleware, error handlers, and the lifespan that loads models.

The server answers as soon as it listens: models load one by one in a
background thread (``/health/ready`` and the image endpoints say 503 until
theirs is ready), and a periodic task deletes expired URL images.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ..engine.base import Engine, EngineMetrics
from ..engine.local import Loader, LocalEngine, load_backend
from ..http.access_log import AccessLogMiddleware
from ..http.auth import BearerAuthMiddleware
from ..http.body_limit import BodySizeLimitMiddleware
from ..http.cors import cors
from ..http.error_handlers import EXCEPTION_HANDLERS
from ..http.hosts import AllowedHostsMiddleware, answered_hosts
from ..http.request_id import RequestIdMiddleware
from ..observe.metrics import Metrics
from ..routes import batches, file_api, files, health, images, models, openapi, operations, playground, responses
from ..routes.state import ServerState
from ..serving.batch.service import BatchApi
from ..serving.files import ImageStore
from ..serving.images import ImageServing
from ..serving.kept import KeptResponses
from ..serving.models import Catalog, LoadFailed
from ..serving.residency import ModelManager
from ..serving.responses import ResponsesServing
from ..settings.config import Settings
from ..webhooks import Webhooks

log = logging.getLogger("easel.app")

EngineFactory = Callable[[EngineMetrics | None], Engine]  # the app's engine metrics -> its engine
PUBLIC_PATH_PREFIXES = ("/health/", "/v1/files/images/", "/openapi.json")  # no API key needed
PUBLIC_PATHS = ("/",)  # the playground page itself; its requests to the API carry the key


async def _sweep_forever(store: ImageStore) -> None:
    while True:
        await asyncio.sleep(store.sweep_interval)
        try:
            await asyncio.to_thread(store.sweep)
        except OSError:
            log.exception("sweeping expired images failed")


def create_app(
    settings: Settings,
    *,
    loader: Loader | None = None,
    on_load_failure: LoadFailed | None = None,
    make_engine: EngineFactory | None = None,
) -> Starlette:
    """The ASGI app for ``settings``. ``loader`` replaces ``pipelines.loader.load_backend`` (tests);
    ``on_load_failure(name, message)`` hears of each model that fails to load (``easel serve`` stops on it);
    ``make_engine(metrics)`` replaces the in-process engine (``server.scaleout``: jobs run on Ray Serve replicas)."""
    own_image_dir = settings.image_dir is None
    image_dir = Path(tempfile.mkdtemp(prefix="easel-images-")) if own_image_dir else settings.image_dir
    assert image_dir is not None
    catalog = Catalog(settings)
    metrics = Metrics()
    engine = (make_engine or local_engine_factory(settings, loader))(metrics.engine)
    metrics.watch(catalog, engine)
    store = ImageStore(image_dir, settings.url_ttl_seconds)
    residency = ModelManager(settings, catalog, engine, metrics.models, loader_checks=loader is None)
    serving = ImageServing(settings, catalog, engine, store, residency)
    webhooks = Webhooks.from_settings(settings, metrics.webhooks)
    batch_api = BatchApi(settings, serving, events=webhooks)
    state = ServerState(settings, catalog, engine, store, serving, metrics, residency, webhooks, batch_api)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = threading.Thread(
            target=residency.preload, args=(on_load_failure,), name="easel-model-loader", daemon=True
        )
        loading.start()
        webhooks.start()
        tasks = {
            asyncio.create_task(_sweep_forever(store)),
            asyncio.create_task(batch_api.sweep_forever()),
            asyncio.create_task(batch_api.run_forever()),
            asyncio.create_task(batch_api.beat_forever()),
        }
        if settings.idle_unload_seconds > 0:
            tasks.add(asyncio.create_task(residency.unload_idle_forever()))
        await batch_api.start()
        try:
            yield
        finally:
            residency.stop()
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)  # let them finish cancelling; raises nothing
            await batch_api.stop()  # before the webhooks stop: its last events still go out
            await asyncio.to_thread(engine.shutdown, 5.0)
            await asyncio.to_thread(webhooks.stop)  # after the engine: events of its last jobs still go out
            batch_api.close()  # after the webhooks: they keep in the store what they could not send
            if own_image_dir:
                shutil.rmtree(image_dir, ignore_errors=True)

    app = Starlette(
        routes=[
            *playground.routes,
            *health.routes,
            *models.routes,
            *images.routes(serving),
            *responses.routes(ResponsesServing(serving, KeptResponses(settings.url_ttl_seconds))),
            *files.routes,
            *file_api.routes,
            *batches.routes,
            *openapi.routes,
            *operations.routes,
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(AccessLogMiddleware, metrics=metrics.http),
            Middleware(
                AllowedHostsMiddleware,
                names=answered_hosts(settings.allowed_hosts, settings.host, settings.public_base_url),
            ),
            *cors(settings.cors_allow_origins),  # outside auth: preflights carry no key, 401s need CORS headers
            Middleware(
                BearerAuthMiddleware,
                keys=settings.api_keys,
                public_prefixes=PUBLIC_PATH_PREFIXES,
                public_paths=PUBLIC_PATHS,
            ),
            Middleware(BodySizeLimitMiddleware, limit=settings.max_body_bytes),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.easel = state
    return app


def local_engine_factory(
    settings: Settings, loader: Loader | None = None, *, cores: int | None = None
) -> EngineFactory:
    """The in-process engine with the batching settings given (a Ray model replica builds the same, on its
    ``cores``; default: the cores this process may use)."""

    def make(metrics: EngineMetrics | None) -> LocalEngine:
        return LocalEngine(
            settings.queue_size,
            loader or load_backend,
            workers=settings.workers,
            max_batch_images=settings.max_batch_images,
            batch_wait_ms=settings.batch_wait_ms,
            cores=cores,
            metrics=metrics,
        )

    return make


async def drain(state: ServerState, *, hurry: asyncio.Event) -> None:
    """Finish the work taken on before the server stops: the graceful part of a shutdown.

    New image requests get 503 with Retry-After and readiness turns 503, so a load
    balancer sends traffic elsewhere; queued and running jobs go on for up to
    ``--shutdown-timeout`` seconds (less if ``hurry`` is set: a second signal), and
    whatever is left is then cancelled, its clients answered with an error.
    """
    state.images.draining = True
    timeout = state.settings.shutdown_timeout
    log.info("shutting down: finishing queued and running jobs (up to %.0f s)", timeout)
    finished = asyncio.ensure_future(asyncio.to_thread(state.engine.drain, timeout))
    hurried = asyncio.ensure_future(hurry.wait())
    await asyncio.wait({finished, hurried}, return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    if not (finished.done() and finished.result()):
        log.warning("shutting down: cancelling the jobs still queued or running")
        await asyncio.to_thread(state.engine.shutdown, 5.0)
    await asyncio.wait({finished})
