"""The Starlette application: routes, middleware, error handlers, and the lifespan that loads models.

The server answers as soon as it listens: models load one by one in a
background thread (``/health/ready`` and the image endpoints say 503 until
theirs is ready), and a periodic task deletes expired URL images.

To add endpoints, add a module with a ``routes`` list under ``server/routes/``
and name it in :data:`ROUTE_MODULES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from .catalog import Catalog, Loader, load_all
from .config import Settings
from .engine import Engine
from .errors import EXCEPTION_HANDLERS
from .middleware import BearerAuthMiddleware, BodySizeLimitMiddleware, RequestIdMiddleware
from .routes import edits, files, health, images, models, variations
from .state import ServerState
from .storage import ImageStore

log = logging.getLogger("easel.app")

ROUTE_MODULES: list[ModuleType] = [health, models, images, edits, variations, files]
PUBLIC_PATH_PREFIXES = ("/health/", "/v1/files/images/")  # no API key needed


def _default_loader(*args, **kwargs):
    # Imported here, in the loading thread: torch and diffusers take seconds to import.
    from pipelines.loader import load_backend

    return load_backend(*args, **kwargs)


async def _sweep_forever(store: ImageStore) -> None:
    while True:
        await asyncio.sleep(store.sweep_interval)
        try:
            await asyncio.to_thread(store.sweep)
        except OSError:
            log.exception("sweeping expired images failed")


def create_app(settings: Settings, *, loader: Loader | None = None) -> Starlette:
    """The ASGI app for ``settings``. ``loader`` replaces ``pipelines.loader.load_backend`` (tests)."""
    loader = loader or _default_loader
    own_image_dir = settings.image_dir is None
    image_dir = Path(tempfile.mkdtemp(prefix="easel-images-")) if own_image_dir else settings.image_dir
    state = ServerState(
        settings=settings,
        catalog=Catalog(settings),
        engine=Engine(settings.queue_size),
        store=ImageStore(image_dir, settings.url_ttl_seconds),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop_loading = threading.Event()
        loading = threading.Thread(
            target=load_all,
            args=(state.catalog, loader, state.engine.add_model, settings, stop_loading),
            name="easel-model-loader",
            daemon=True,
        )
        loading.start()
        sweeper = asyncio.create_task(_sweep_forever(state.store))
        try:
            yield
        finally:
            stop_loading.set()
            sweeper.cancel()
            await asyncio.wait({sweeper})  # let it finish cancelling; raises nothing
            await asyncio.to_thread(state.engine.shutdown)
            if own_image_dir:
                shutil.rmtree(image_dir, ignore_errors=True)

    app = Starlette(
        routes=[route for module in ROUTE_MODULES for route in module.routes],
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
