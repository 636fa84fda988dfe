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
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware

from .config import Settings
from .engine.base import Engine
from .engine.local import Loader, LocalEngine, load_backend
from .errors import EXCEPTION_HANDLERS
from .middleware import BearerAuthMiddleware, BodySizeLimitMiddleware, RequestIdMiddleware
from .routes import files, health, images, models
from .serving.files import ImageStore
from .serving.images import ImageServing
from .serving.models import Catalog, load_all
from .state import ServerState

log = logging.getLogger("easel.app")

ROUTES = [*health.routes, *models.routes, *images.routes, *files.routes]
PUBLIC_PATH_PREFIXES = ("/health/", "/v1/files/images/")  # no API key needed


async def _sweep_forever(store: ImageStore) -> None:
    while True:
        await asyncio.sleep(store.sweep_interval)
        try:
            await asyncio.to_thread(store.sweep)
        except OSError:
            log.exception("sweeping expired images failed")


def create_app(settings: Settings, *, loader: Loader | None = None, engine: Engine | None = None) -> Starlette:
    """The ASGI app for ``settings``.

    ``loader`` replaces ``pipelines.loader.load_backend`` (tests); ``engine`` replaces the in-process
    engine (``server.scaleout`` passes one whose jobs run on Ray Serve replicas).
    """
    own_image_dir = settings.image_dir is None
    image_dir = Path(tempfile.mkdtemp(prefix="easel-images-")) if own_image_dir else settings.image_dir
    assert image_dir is not None
    catalog = Catalog(settings)
    if engine is None:
        engine = LocalEngine(settings.queue_size, loader or load_backend)
    store = ImageStore(image_dir, settings.url_ttl_seconds)
    state = ServerState(settings, catalog, engine, store, ImageServing(settings, catalog, engine, store))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop_loading = threading.Event()
        loading = threading.Thread(
            target=load_all, args=(catalog, engine, settings, stop_loading), name="easel-model-loader", daemon=True
        )
        loading.start()
        sweeper = asyncio.create_task(_sweep_forever(store))
        try:
            yield
        finally:
            stop_loading.set()
            sweeper.cancel()
            await asyncio.wait({sweeper})  # let it finish cancelling; raises nothing
            await asyncio.to_thread(engine.shutdown, 5.0)
            if own_image_dir:
                shutil.rmtree(image_dir, ignore_errors=True)

    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(BearerAuthMiddleware, keys=settings.api_keys, public_prefixes=PUBLIC_PATH_PREFIXES),
            Middleware(BodySizeLimitMiddleware, limit=settings.max_body_bytes),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.easel = state
    return app
