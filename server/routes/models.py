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

from ..responses import model_list, model_object
from ..state import server_state
from ..validation import MAX_N


def _max_n(name: str) -> int:
    return 1 if name == "dall-e-3" else MAX_N


async def list_models(request: Request) -> JSONResponse:
    catalog = server_state(request).catalog
    objects = []
    for name in catalog.names():
        resolved = catalog.resolve(name)
        objects.append(model_object(resolved.entry, name, _max_n(name)))
    return JSONResponse(model_list(objects))


async def retrieve_model(request: Request) -> JSONResponse:
    catalog = server_state(request).catalog
    name = request.path_params["model"]
    resolved = catalog.resolve(name)  # 404 model_not_found for unknown names
    return JSONResponse(model_object(resolved.entry, name, _max_n(name)))


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
