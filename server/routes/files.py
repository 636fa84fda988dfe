"""``GET /v1/files/images/{name}``: images returned as URLs, until they expire.

No API key is needed, as with OpenAI's own image URLs: the name carries 256
random bits. Unknown or expired names are a 404 envelope.
"""

from __future__ import annotations

import asyncio
import math
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..http.errors import APIError
from ..serving.files import MEDIA_TYPES, ImageStore


async def serve_image(request: Request) -> Response:
    store: ImageStore = request.app.state.easel.store
    name = request.path_params["name"]
    found = await asyncio.to_thread(store.read, name)
    if found is None:
        raise APIError(404, "This image does not exist or its URL has expired.", code="image_not_found")
    data, expires = found
    remaining = max(0, math.floor(expires - time.time()))
    return Response(
        data,
        media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]],
        headers={"cache-control": f"private, max-age={remaining}"},
    )


routes = [Route("/v1/files/images/{name}", serve_image, methods=["GET", "HEAD"])]
