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

from ..errors import APIError
from ..state import server_state
from ..storage import MEDIA_TYPES


def _not_found() -> APIError:
    return APIError(404, "This image does not exist or its URL has expired.", code="image_not_found")


async def serve_image(request: Request) -> Response:
    name = request.path_params["name"]
    found = server_state(request).store.open(name)
    if found is None:
        raise _not_found()
    path, expires = found
    try:
        # Read whole (images are small) so a sweep between the check and the send cannot break the response.
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise _not_found() from None
    remaining = max(0, math.floor(expires - time.time()))
    return Response(
        data,
        media_type=MEDIA_TYPES[path.suffix.lstrip(".")],
        headers={"cache-control": f"private, max-age={remaining}"},
    )


routes = [Route("/v1/files/images/{name}", serve_image, methods=["GET", "HEAD"])]
