"""``POST /v1/images/generations``.

Flow: JSON body -> :func:`server.validation.parse_generation` (400s) -> model
name resolution (404) and readiness (503) -> model-dependent checks (400) ->
engine (429 when the model's queue is full) -> resize + encode -> response in
the style of the requested model name (:mod:`server.responses`).

``stream: true`` answers Server-Sent Events instead (:mod:`server.sse`).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..bodies import read_json
from ..dispatch import build_job, ready_model, reports_usage, respond_with_images, submit
from ..errors import request_id_of
from ..sse import check_stream_options, job_stream, stream_job
from ..state import server_state
from ..validation import check_for_model, parse_generation

log = logging.getLogger("easel.images")


async def create_image(request: Request) -> Response:
    state = server_state(request)
    generation = parse_generation(await read_json(request))
    options = generation.options
    resolved, info = ready_model(state, options.model, "generate")
    check_for_model(options, generation.prompt, resolved.api_style, info)
    check_stream_options(options)

    job = build_job("generate", options, info, prompt=generation.prompt, style=generation.style)
    log.info(
        "generate model=%s (%s) n=%d size=%s native=%dx%d quality=%s seeds=%d.. user=%r [request_id=%s]",
        resolved.requested, resolved.entry.name, job.n, options.size.label, job.width, job.height,
        options.quality, job.seeds[0], options.user, request_id_of(request),
    )
    handle = submit(state, resolved.entry.name, job, count_prompt_tokens=reports_usage(resolved, options))
    if options.stream:
        return stream_job(request, state, handle, job_stream("image_generation", options, job, handle))
    return await respond_with_images(request, state, resolved, options, job, handle, prompt=generation.prompt)


routes = [Route("/v1/images/generations", create_image, methods=["POST"])]
