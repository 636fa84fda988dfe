"""``GET /v1/models`` and ``GET /v1/models/{model}``: OpenAI's model objects plus Easel's capabilities.

Local models and aliases are both listed; an alias has ``alias_of`` (the
model it resolves to). ``capabilities`` (sizes, endpoints, quality presets,
parameter counts, device, dtype, ``max_n``) is null while a model loads;
``status`` says ``loading``, ``ready`` or ``failed`` (then ``error`` says why).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..catalog import Catalog
from ..responses import model_list, model_object
from ..state import server_state
from ..validation import max_n_for


def _model_object(catalog: Catalog, name: str) -> dict:
    resolved = catalog.resolve(name)  # 404 model_not_found for unknown names
    return model_object(resolved.entry, name, max_n_for(resolved.api_style))


async def list_models(request: Request) -> JSONResponse:
    catalog = server_state(request).catalog
    return JSONResponse(model_list([_model_object(catalog, name) for name in catalog.names()]))


async def retrieve_model(request: Request) -> JSONResponse:
    return JSONResponse(_model_object(server_state(request).catalog, request.path_params["model"]))


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
