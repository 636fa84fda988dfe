"""``/v1/images/*``: generations (JSON), edits (multipart or JSON) and variations (multipart).

Each endpoint is a method of the app's :class:`~server.serving.images.ImageServing`:
it reads its body into a typed request (:mod:`server.protocol.images`) and serves it.
"""

from __future__ import annotations

from starlette.routing import Route

from ..serving.images import ImageServing


def routes(images: ImageServing) -> list[Route]:
    return [
        Route("/v1/images/generations", images.create_generation, methods=["POST"]),
        Route("/v1/images/edits", images.create_edit, methods=["POST"]),
        Route("/v1/images/variations", images.create_variation, methods=["POST"]),
    ]
