"""What the routes share for the lifetime of the app: ``request.app.state.easel``."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.base import Engine
from ..observe.metrics import Metrics
from ..serving.batch.service import BatchApi
from ..serving.files import ImageStore
from ..serving.images import ImageServing
from ..serving.models import Catalog
from ..serving.residency import ModelManager
from ..settings.config import Settings
from ..webhooks import Webhooks


@dataclass
class ServerState:
    settings: Settings
    catalog: Catalog
    engine: Engine
    store: ImageStore
    images: ImageServing
    metrics: Metrics
    residency: ModelManager
    webhooks: Webhooks  # emit(event_type, data) from any thread: signed events to the configured URLs
    batch_api: BatchApi  # the Files and Batch APIs
