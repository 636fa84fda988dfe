"""``POST /v1/images/variations``: unCLIP variations through the backend's ``variation`` task.

A variation starts from the uploaded image's own CLIP image embedding and runs
only the decoder from it (no prompt, no prior): the true unCLIP variation.
Karlo needs its image-variation encoder for this; a Karlo directory without
it answers 400 naming what is missing (``pipelines.base.MissingComponent``).

Body: ``multipart/form-data`` with ``image`` (decoding and limits:
:mod:`server.uploads`; transparency is flattened over white), ``model``,
``n``, ``size`` (default ``1024x1024`` as OpenAI's; ``auto`` is the input's
own size), ``response_format``, ``user``; and as Easel extensions ``quality``,
``output_format``, ``output_compression``, ``seed``, ``decoder_steps``,
``decoder_guidance_scale`` and ``decoder_guidance_min_timestep``. The prior's controls and ``negative_prompt`` are
refused with a reason, since a variation never runs the prior; any other
field is refused as unknown.
"""

from __future__ import annotations

import asyncio
import logging

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..bodies import media_type
from ..dispatch import build_job, ready_model, respond_with_images, sized_for_input, submit
from ..errors import invalid, missing_parameter, request_id_of
from ..state import server_state
from ..uploads import UploadLimits, flatten_to_rgb, open_upload, read_multipart
from ..validation import FieldReader, check_for_model, read_image_options

log = logging.getLogger("easel.variations")

VARIATION_FIELDS = frozenset(
    {
        "model", "n", "size", "response_format", "user", "safety_identifier",
        "quality", "output_format", "output_compression", "seed", "decoder_steps", "decoder_guidance_scale",
        "decoder_guidance_min_timestep",
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
        raise missing_parameter("image")
    if len(images) > 1:
        raise invalid("image", f"Send one image; {len(images)} were sent.", code="invalid_value")
    resolved, info = ready_model(state, options.model, "variation")
    source = await asyncio.to_thread(decode_variation_input, images[0], limits)
    if reader.raw("size") == "auto":
        options = sized_for_input(options, source, info)
    check_for_model(options, None, resolved.api_style, info)

    job = build_job("variation", options, info, image=source)
    log.info(
        "variation model=%s (%s) n=%d input=%dx%d size=%s native=%dx%d seeds=%d.. user=%r [request_id=%s]",
        resolved.requested, resolved.entry.name, job.n, source.width, source.height, options.size.label,
        job.width, job.height, job.seeds[0], options.user, request_id_of(request),
    )
    handle = submit(state, resolved.entry.name, job)  # no prompt, so no prompt tokens to count
    return await respond_with_images(request, state, resolved, options, job, handle)


routes = [Route("/v1/images/variations", create_variation, methods=["POST"])]
