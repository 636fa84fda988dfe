"""What the routes share for the lifetime of the app: ``request.app.state.easel``."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.base import Engine
from ..observe.metrics import Metrics
from ..serving.batch.service import BatchApi
from ..serving.files import ImageStore
from ..serving.images import ImageServing
from ..serving.models import Catalog
from ..settings.config import Settings


@dataclass
class ServerState:
    settings: Settings
    catalog: Catalog
    engine: Engine
    store: ImageStore
    images: ImageServing
    metrics: Metrics
    batch_api: BatchApi  # the Files and Batch APIs
