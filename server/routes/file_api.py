"""``/v1/files``: OpenAI's Files API (upload, list, retrieve, content, delete).

Not to be confused with ``/v1/files/images/{name}`` (:mod:`server.routes.files`), the
``url`` images, which live in their own store.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..http.errors import invalid, missing_parameter
from ..protocol.fields import media_type
from ..serving.batch.files import MAX_LIST, read_expiry, read_purpose
from ..serving.batch.service import BatchApi


def _api(request: Request) -> BatchApi:
    return request.app.state.easel.batch_api


def query_limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise invalid("limit", f"'limit' must be an integer from 1 to {most}.", "invalid_value")
    return int(raw)


async def create_file(request: Request) -> JSONResponse:
    if media_type(request) != "multipart/form-data":
        message = "Upload a file as multipart/form-data with a 'file' part and a 'purpose'."
        raise invalid(None, message, "unsupported_content_type")
    async with request.form(max_files=1) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise missing_parameter("file")
        purpose = read_purpose(form.get("purpose"))
        expires_in = read_expiry(form.get("expires_after[anchor]"), form.get("expires_after[seconds]"), purpose)
        data = await upload.read()
        filename = (upload.filename or "upload")[:255]
    files = _api(request).files
    return JSONResponse(await asyncio.to_thread(files.create, data, filename, purpose, expires_in))


async def list_files(request: Request) -> JSONResponse:
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("order", "'order' must be 'asc' or 'desc'.", "invalid_value")
    limit = query_limit(request, MAX_LIST, MAX_LIST)
    files = _api(request).files
    return JSONResponse(await asyncio.to_thread(files.page, query.get("purpose"), limit, order, query.get("after")))


async def retrieve_file(request: Request) -> JSONResponse:
    return JSONResponse(await asyncio.to_thread(_api(request).files.get, request.path_params["file_id"]))


async def delete_file(request: Request) -> JSONResponse:
    return JSONResponse(await asyncio.to_thread(_api(request).files.delete, request.path_params["file_id"]))


async def file_content(request: Request) -> Response:
    data, filename = await asyncio.to_thread(_api(request).files.content, request.path_params["file_id"])
    safe_name = "".join(c for c in filename if c.isalnum() or c in "._-") or "file"
    headers = {"content-disposition": f'attachment; filename="{safe_name}"'}
    return Response(data, media_type="application/octet-stream", headers=headers)


routes = [
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
]
