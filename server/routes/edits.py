"""``POST /v1/images/edits``: inpainting through the backend's ``edit`` task.

Bodies: ``multipart/form-data`` as the openai SDK sends it (one ``image`` part,
or ``image[]`` parts for a list, optional ``mask``), or ``application/json``
with ``images: [{"image_url": "data:..."}]`` and ``mask: {"image_url": ...}``.
Upload decoding, limits and mask semantics: :mod:`server.uploads`.

One image per request. OpenAI takes up to 16 images, the mask applying to the
first and the others serving as references; prior+decoder models have no way
to use reference images, so more than one is refused (400, param ``image``,
or ``images`` for JSON) rather than silently dropped.

The backend inpaints at its native resolution. The result is resized to the
requested size and the input's own pixels are composited back outside the
mask at that size (:func:`pipelines.inpaint.composite_unmasked`): with the
default size (``auto``, the input's size) every unmasked pixel comes back
exactly as uploaded.

``stream: true`` answers ``image_edit.partial_image`` / ``image_edit.completed``
events (:mod:`server.sse`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipelines.inpaint import composite_unmasked

from ..bodies import media_type, parse_json
from ..dispatch import build_job, ready_model, reports_usage, respond_with_images, sized_for_input, submit
from ..encoding import resize_exactly
from ..errors import invalid, missing_parameter, request_id_of
from ..sse import check_stream_options, job_stream, stream_job
from ..state import server_state
from ..uploads import UploadLimits, flatten_to_rgb, image_ref_bytes, open_upload, read_multipart, repaint_mask
from ..validation import (
    EXTENSION_FIELDS,
    MODERATIONS,
    FieldReader,
    check_for_model,
    read_image_options,
    read_prompt,
    require_object,
)

log = logging.getLogger("easel.edits")

EDIT_FIELDS = frozenset(
    {
        "prompt", "model", "n", "size", "quality", "response_format", "output_format", "output_compression",
        "background", "moderation", "user", "safety_identifier", "stream", "partial_images",
    }
) | EXTENSION_FIELDS
MULTIPART_FILE_PARTS = frozenset({"image", "image[]", "mask"})
JSON_IMAGE_FIELDS = ("images", "mask")


@dataclass(frozen=True)
class EditBody:
    fields: Mapping[str, Any]  # everything but the images, for FieldReader
    form: bool  # multipart (string values) or JSON
    image_param: str  # "image" (multipart) or "images" (JSON)
    images: list[bytes]
    mask: bytes | None


def refuse_several_images(count: int, param: str) -> None:
    if count > 1:
        raise invalid(
            param,
            f"Easel edits one image per request, but {count} were sent. Send a single image (and optionally a mask): "
            "prior+decoder models cannot use extra images as references.",
            code="invalid_value",
        )


async def read_edit_body(request: Request, limits: UploadLimits) -> EditBody:
    kind = media_type(request)
    if kind == "multipart/form-data":
        body = await read_multipart(request, MULTIPART_FILE_PARTS, limits)
        masks = body.files.get("mask", [])
        if len(masks) > 1:
            raise invalid("mask", f"Send one mask; {len(masks)} were sent.", code="invalid_value")
        images = body.files.get("image", []) + body.files.get("image[]", [])
        refuse_several_images(len(images), "image")
        return EditBody(body.fields, True, "image", images, masks[0] if masks else None)
    if kind == "application/json":
        return await asyncio.to_thread(json_edit_body, await request.body(), limits)
    raise invalid(
        None,
        "Send an edit as multipart/form-data (image, mask, prompt, ...) or as application/json "
        "(images, mask, prompt, ...).",
        code="unsupported_content_type",
    )


def json_edit_body(raw: bytes, limits: UploadLimits) -> EditBody:
    """A JSON edit body with its data URLs decoded (megabytes of base64: run it in a thread)."""
    payload = require_object(parse_json(raw))
    refs = payload.get("images")
    if refs is not None and not isinstance(refs, list):
        raise invalid("images", "'images' must be an array of {\"image_url\": ...} objects.", code="invalid_type")
    refuse_several_images(len(refs or []), "images")
    images = [image_ref_bytes(ref, "images", limits) for ref in refs or []]
    mask_ref = payload.get("mask")
    mask = None if mask_ref is None else image_ref_bytes(mask_ref, "mask", limits)
    fields = {name: value for name, value in payload.items() if name not in JSON_IMAGE_FIELDS}
    return EditBody(fields, False, "images", images, mask)


def decode_edit_inputs(body: EditBody, limits: UploadLimits) -> tuple[Image.Image, Image.Image]:
    """The RGB image and the repaint mask (mode "L", 255 = repaint). CPU work: run in a thread."""
    image = open_upload(body.images[0], body.image_param, limits)
    mask = None if body.mask is None else open_upload(body.mask, "mask", limits)
    return flatten_to_rgb(image), repaint_mask(image, mask)


def composite_at_size(
    images: list[Image.Image], original: Image.Image, repaint: Image.Image, width: int, height: int
) -> list[Image.Image]:
    """Each result at ``width`` x ``height`` with the original's pixels outside the mask."""
    original = resize_exactly(original, width, height)
    return [composite_unmasked(original, image, repaint) for image in images]


async def create_edit(request: Request) -> Response:
    state = server_state(request)
    limits = UploadLimits.from_settings(state.settings)
    body = await read_edit_body(request, limits)
    reader = FieldReader(body.fields, form=body.form)
    reader.reject_unknown(EDIT_FIELDS)
    prompt = read_prompt(reader)
    options = read_image_options(reader)
    reader.choice("moderation", MODERATIONS)  # checked; Easel runs no moderation model (server.validation)
    check_stream_options(options)
    if not body.images:
        raise missing_parameter(body.image_param)
    resolved, info = ready_model(state, options.model, "edit")
    original, repaint = await asyncio.to_thread(decode_edit_inputs, body, limits)
    if reader.raw("size") in (None, "auto"):
        options = sized_for_input(options, original, info)
    check_for_model(options, prompt, resolved.api_style, info)

    job = build_job("edit", options, info, prompt=prompt, image=original, mask=repaint)
    log.info(
        "edit model=%s (%s) n=%d input=%dx%d size=%s native=%dx%d seeds=%d.. stream=%s user=%r [request_id=%s]",
        resolved.requested, resolved.entry.name, job.n, original.width, original.height, options.size.label,
        job.width, job.height, job.seeds[0], options.stream, options.user, request_id_of(request),
    )
    handle = submit(state, resolved.entry.name, job, count_prompt_tokens=reports_usage(resolved, options))
    width, height = options.size.width, options.size.height

    def composite(images: list[Image.Image]) -> list[Image.Image]:
        return composite_at_size(images, original, repaint, width, height)

    if options.stream:
        # Previews are stretched to the requested size, as the composited result is (never cropped).
        stream = job_stream("image_edit", options, job, handle, fit_preview=resize_exactly, prepare=composite)
        return stream_job(request, state, handle, stream)
    return await respond_with_images(request, state, resolved, options, job, handle, prompt=prompt, prepare=composite)


routes = [Route("/v1/images/edits", create_edit, methods=["POST"])]
