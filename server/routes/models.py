"""``GET /v1/models`` and ``GET /v1/models/{model}``: OpenAI's model objects plus Easel's capabilities.

``capabilities`` (sizes, endpoints, quality presets, parameter counts, device,
dtype, ``max_n``) is null while a model loads; ``status`` says ``loading``,
``ready`` or ``failed`` (then ``error`` says why). Unknown names are a 404.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..protocol.models import model_list
from ..serving.models import Catalog


async def list_models(request: Request) -> JSONResponse:
    catalog: Catalog = request.app.state.easel.catalog
    return JSONResponse(model_list([catalog.model_object(name) for name in catalog.names()]))


async def retrieve_model(request: Request) -> JSONResponse:
    catalog: Catalog = request.app.state.easel.catalog
    return JSONResponse(catalog.model_object(request.path_params["model"]))


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
