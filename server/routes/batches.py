"""``/v1/batches``: OpenAI's Batch API for the two image endpoints (create, retrieve, list, cancel)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..protocol.fields import read_json, require_object
from ..serving.batch.batches import MAX_LIST
from ..serving.batch.service import BatchApi
from .file_api import query_limit


def _api(request: Request) -> BatchApi:
    return request.app.state.easel.batch_api


async def create_batch(request: Request) -> JSONResponse:
    body = require_object(await read_json(request))
    api = _api(request)
    url_base = api.serving.url_base(request.base_url)
    default_model = request.app.state.easel.catalog.default_name
    batch = await asyncio.to_thread(api.batches.create, body, url_base, default_model)
    api.created(batch["id"])
    return JSONResponse(batch)


async def retrieve_batch(request: Request) -> JSONResponse:
    return JSONResponse(await asyncio.to_thread(_api(request).batches.get, request.path_params["batch_id"]))


async def list_batches(request: Request) -> JSONResponse:
    limit = query_limit(request, 20, MAX_LIST)
    api = _api(request)
    return JSONResponse(await asyncio.to_thread(api.batches.page, limit, request.query_params.get("after")))


async def cancel_batch(request: Request) -> JSONResponse:
    api = _api(request)
    batch = await asyncio.to_thread(api.batches.request_cancel, request.path_params["batch_id"])
    api.cancelled(batch["id"])
    return JSONResponse(batch)


routes = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
