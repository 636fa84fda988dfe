"""``GET /v1/models`` and ``GET /v1/models/{model}``: OpenAI's model objects plus Easel's capabilities; and the
operators' ``POST /v1/models/{model}/load`` and ``/unload`` (behind the API key, as every /v1 path).

``capabilities`` (sizes, endpoints, quality presets, parameter counts, device,
dtype, ``max_n``) is null until a model has loaded once; ``status`` says ``unloaded``,
``loading``, ``ready`` or ``failed`` (then ``error`` says why); ``memory`` says
where its weights are and what they cost (docs/models-memory.md); on Ray Serve ``replicas`` counts the
model deployment's replicas, and loading starts one (docs/ray.md, "Scale to zero"). Unknown names are a 404.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..http.errors import APIError
from ..protocol.models import model_list
from ..serving.job_errors import job_error
from ..serving.models import Catalog
from .state import ServerState


async def list_models(request: Request) -> JSONResponse:
    catalog: Catalog = request.app.state.easel.catalog
    return JSONResponse(model_list([catalog.model_object(name) for name in catalog.names()]))


async def retrieve_model(request: Request) -> JSONResponse:
    catalog: Catalog = request.app.state.easel.catalog
    return JSONResponse(catalog.model_object(request.path_params["model"]))


async def load_model(request: Request) -> JSONResponse:
    """Load the model now (evicting idle ones if it needs room), waiting as a request would; its model object."""
    state: ServerState = request.app.state.easel
    model_id = request.path_params["model"]
    entry = state.catalog.entry(model_id)
    try:
        await state.residency.bring(entry, now=True)
    except Exception as error:
        raise job_error(error, request.state.request_id) from None
    return JSONResponse(state.catalog.model_object(model_id))


async def unload_model(request: Request) -> JSONResponse:
    """Free the model's memory once its queued and running jobs are done (never cancelled); its model object."""
    state: ServerState = request.app.state.easel
    model_id = request.path_params["model"]
    entry = state.catalog.entry(model_id)
    if entry.pinned:
        raise APIError(409, f"Model '{entry.name}' is pinned (--pin): it stays loaded.", code="model_pinned")
    if state.settings.use_ray:  # the ingress holds no model: replicas do, and Serve alone stops them
        raise APIError(
            409,
            f"Model '{entry.name}' runs on Ray Serve replicas, which Serve's autoscaler stops when the model is "
            "idle (down to --min-replicas, which may be 0).",
            code="model_autoscaled",
        )
    wait = state.settings.load_timeout_seconds
    if not await asyncio.to_thread(state.residency.unload, entry, "request", wait=wait):
        raise APIError(
            409, f"Model '{entry.name}' stayed busy for {wait:g} s; retry when its jobs are done.", code="model_busy"
        )
    return JSONResponse(state.catalog.model_object(model_id))


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}/load", load_model, methods=["POST"]),
    Route("/v1/models/{model:path}/unload", unload_model, methods=["POST"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
