"""``POST /v1/images/variations``: unCLIP variations through the backend's ``variation`` task.

A variation starts from the uploaded image's own CLIP image embedding and runs
only the decoder from it (no prompt, no prior): the true unCLIP variation.
Karlo needs its image-variation encoder for this; a Karlo directory without
it answers 400 naming what is missing (``pipelines.base.MissingComponent``).

Body: ``multipart/form-data`` with ``image`` (decoding and limits:
:mod:`server.uploads`; transparency is flattened over white), ``model``,
``n``, ``size`` (default ``1024x1024`` as OpenAI's; ``auto`` is the input's
own size), ``response_format``, ``user``; and as Easel extensions ``quality``,
``output_format``, ``output_compression``, ``seed``, ``decoder_steps`` and
``decoder_guidance_scale``. The prior's controls and ``negative_prompt`` are
refused with a reason, since a variation never runs the prior; any other
field is refused as unknown.
"""

from __future__ import annotations

import asyncio
import logging
import time

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..dispatch import ClientGone, build_job, finish, submit, wait_for_result
from ..errors import invalid, request_id_of
from ..responses import images_response, output_image_tokens, usage
from ..state import server_state
from ..uploads import UploadLimits, flatten_to_rgb, media_type, open_upload, read_multipart
from ..validation import FieldReader, check_for_model, read_image_options
from .edits import require_task, sized_for_input
from .images import CLIENT_CLOSED_REQUEST

log = logging.getLogger("easel.variations")

VARIATION_FIELDS = frozenset(
    {
        "model", "n", "size", "response_format", "user", "safety_identifier",
        "quality", "output_format", "output_compression", "seed", "decoder_steps", "decoder_guidance_scale",
    }
)
NOT_FOR_VARIATIONS = {
    name: f"'{name}' does not apply to variations: they start from the image's own CLIP embedding, so no prompt "
    "is encoded and the prior does not run."
    for name in ("prompt", "negative_prompt", "prior_steps", "prior_guidance_scale")
}


def decode_variation_input(data: bytes, limits: UploadLimits) -> Image.Image:
    return flatten_to_rgb(open_upload(data, "image", limits))


async def create_variation(request: Request) -> Response:
    state = server_state(request)
    limits = UploadLimits.from_settings(state.settings)
    if media_type(request) != "multipart/form-data":
        raise invalid(None, "Send a variation request as multipart/form-data with an 'image' file part.", code="unsupported_content_type")
    body = await read_multipart(request, frozenset({"image"}), limits)
    for name in body.fields:
        if name in NOT_FOR_VARIATIONS:
            raise invalid(name, NOT_FOR_VARIATIONS[name], code="unsupported_value")
    reader = FieldReader(body.fields, form=True)
    reader.reject_unknown(VARIATION_FIELDS)
    options = read_image_options(reader)
    images = body.files.get("image", [])
    if not images:
        raise invalid("image", "Missing required parameter: 'image'.", code="missing_required_parameter")
    if len(images) > 1:
        raise invalid("image", f"Send one image; {len(images)} were sent.", code="invalid_value")
    resolved = state.catalog.resolve(options.model)
    backend = state.catalog.ready_backend(resolved)
    info = backend.info
    require_task(info, "variation", "image variations")
    source = await asyncio.to_thread(decode_variation_input, images[0], limits)
    if reader.raw("size") == "auto":
        options = sized_for_input(options, source, info)
    check_for_model(options, None, resolved.api_style, info)
    gpt_image = resolved.api_style == "gpt-image"
    response_format = options.response_format or ("b64_json" if gpt_image else "url")

    job = build_job("variation", options, info, image=source)
    log.info(
        "variation model=%s (%s) n=%d input=%dx%d size=%s native=%dx%d seeds=%d.. user=%r [request_id=%s]",
        resolved.requested, resolved.entry.name, job.n, source.width, source.height, options.size.label,
        job.width, job.height, job.seeds[0], options.user, request_id_of(request),
    )
    handle = submit(state, resolved.entry.name, job)
    try:
        results = await wait_for_result(request, state, handle)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finished = await finish(request, state, results, job.seeds, options, response_format)
    usage_block = None
    if gpt_image:
        native = output_image_tokens(job.width, job.height, 1)
        usage_block = usage(0, output_image_tokens(job.width, job.height, job.n), input_image_tokens=native)
    body_json = images_response(
        created=int(time.time()),
        images=finished,
        api_style=resolved.api_style,
        prompt=None,
        size_label=options.size.label,
        quality=options.quality,
        output_format=options.output_format,
        usage_block=usage_block,
    )
    return JSONResponse(body_json)


routes = [Route("/v1/images/variations", create_variation, methods=["POST"])]
