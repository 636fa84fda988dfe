"""What the routes share for the lifetime of the app (``request.app.state.easel``)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from .catalog import Catalog
from .config import Settings
from .engine import Engine
from .storage import ImageStore


@dataclass
class ServerState:
    settings: Settings
    catalog: Catalog
    engine: Engine
    store: ImageStore


def server_state(request: Request) -> ServerState:
    return request.app.state.easel
