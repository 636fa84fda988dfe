"""``POST /v1/images/generations``.

Flow: JSON body -> :func:`server.validation.parse_generation` (400s) -> model
name resolution (404) and readiness (503) -> model-dependent checks (400) ->
engine (429 when the model's queue is full) -> resize + encode -> response in
the style of the requested model name (:mod:`server.responses`).

``stream: true`` answers Server-Sent Events instead (:mod:`server.sse`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.base import ImageBackend

from ..dispatch import ClientGone, build_job, finish, submit, wait_for_result
from ..errors import invalid, request_id_of
from ..responses import images_response, output_image_tokens, usage
from ..sse import check_stream_options, generation_stream, stream_job
from ..state import server_state
from ..validation import check_for_model, parse_generation

log = logging.getLogger("easel.images")

CLIENT_CLOSED_REQUEST = 499  # never reaches the client; shows in access logs


async def read_json(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid(
            None,
            "We could not parse the JSON body of your request. Send a JSON object with Content-Type: application/json.",
            code="invalid_json",
        ) from None


async def create_image(request: Request) -> Response:
    state = server_state(request)
    generation = parse_generation(await read_json(request))
    options = generation.options
    resolved = state.catalog.resolve(options.model)
    backend = state.catalog.ready_backend(resolved)
    check_for_model(options, generation.prompt, resolved.api_style, backend.info)
    check_stream_options(options)
    gpt_image = resolved.api_style == "gpt-image"
    response_format = options.response_format or ("b64_json" if gpt_image else "url")

    job = build_job("generate", options, backend.info, prompt=generation.prompt, style=generation.style)
    log.info(
        "generate model=%s (%s) n=%d size=%s native=%dx%d quality=%s seeds=%d.. user=%r [request_id=%s]",
        resolved.requested, resolved.entry.name, job.n, options.size.label, job.width, job.height,
        options.quality, job.seeds[0], options.user, request_id_of(request),
    )

    def count_prompt_tokens(model: ImageBackend) -> int:
        return model.count_tokens(generation.prompt)

    counts_usage = gpt_image or options.stream
    handle = submit(state, resolved.entry.name, job, before_run=count_prompt_tokens if counts_usage else None)
    if options.stream:
        return stream_job(request, state, handle, generation_stream(options, job, handle))
    try:
        images = await wait_for_result(request, state, handle)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finished = await finish(request, state, images, job.seeds, options, response_format)
    usage_block = None
    if gpt_image:
        usage_block = usage(int(handle.before_run_result or 0), output_image_tokens(job.width, job.height, job.n))
    body = images_response(
        created=int(time.time()),
        images=finished,
        api_style=resolved.api_style,
        prompt=generation.prompt,
        size_label=options.size.label,
        quality=options.quality,
        output_format=options.output_format,
        usage_block=usage_block,
    )
    return JSONResponse(body)


routes = [Route("/v1/images/generations", create_image, methods=["POST"])]
