"""``/v1/images/*``: generations (JSON), edits (multipart or JSON) and variations (multipart).

Each route reads its body into a typed request (:mod:`server.protocol.images`)
and hands it to :class:`~server.serving.images.ImageServing`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..protocol.edits import EditRequest, VariationRequest
from ..protocol.fields import read_json
from ..protocol.images import GenerationRequest
from ..serving.images import ImageServing
from ..serving.uploads import read_edit_body, read_variation_body


async def create_generation(request: Request) -> Response:
    images: ImageServing = request.app.state.easel.images
    generation = GenerationRequest.parse(await read_json(request))
    return await images.generate(request, generation)


async def create_edit(request: Request) -> Response:
    images: ImageServing = request.app.state.easel.images
    edit = EditRequest.parse(await read_edit_body(request, images.upload_limits))
    return await images.edit(request, edit)


async def create_variation(request: Request) -> Response:
    images: ImageServing = request.app.state.easel.images
    variation = VariationRequest.parse(await read_variation_body(request, images.upload_limits))
    return await images.vary(request, variation)


routes = [
    Route("/v1/images/generations", create_generation, methods=["POST"]),
    Route("/v1/images/edits", create_edit, methods=["POST"]),
    Route("/v1/images/variations", create_variation, methods=["POST"]),
]
