"""``/v1/responses``: the Responses API's ``image_generation`` tool (``POST``) and kept responses (``GET``).

The handlers are :class:`~server.serving.responses.ResponsesServing`'s; ``docs/responses.md`` describes the API.
"""

from __future__ import annotations

from starlette.routing import Route

from ..serving.responses import ResponsesServing


def routes(responses: ResponsesServing) -> list[Route]:
    return [
        Route("/v1/responses", responses.create, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses.retrieve, methods=["GET"]),
    ]
