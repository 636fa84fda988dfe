"""Server-Sent Events in the shape of OpenAI's image streams.

Each event is ``event: <type>`` and one ``data: <json>`` line, then a blank
line; the JSON repeats the type under ``"type"``, which is what the openai SDK
dispatches on. Generations stream ``image_generation.partial_image`` events
(``partial_image_index`` 0, 1, ...) then ``image_generation.completed`` with
the final image and usage; edits stream the same as ``image_edit.*``.

An error after the stream has started (the 200 status is already sent) is an
``error`` event whose data is ``{"type": "error", "error": {"message", "type",
"param", "code"}}``: the openai SDK raises ``openai.APIError`` with those
fields for any data object carrying an ``error`` key.

Streaming a job (:func:`stream_job`):

* ``partial_images`` k asks the backend for k previews, decoded from its
  denoising state at evenly spaced decoder steps; each is resized to the
  requested size and sent as it arrives. The backend may send fewer when it
  runs fewer steps than k + 1, as OpenAI's may.
* ``n`` > 1: the images of one job are denoised together, so the partial
  images show the first image of the batch (its progress is the batch's);
  then one ``completed`` event per image, in seed order. The usage is split
  so the events add up to the request's: every event carries its own image's
  output tokens and the first one also the input tokens.
* A client that disconnects cancels its job: the worker stops at the next
  denoising step.
* Streamed images are always ``b64_json``; ``response_format: url`` with
  ``stream: true`` is refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Literal, Mapping

from PIL import Image
from starlette.requests import Request
from starlette.responses import StreamingResponse

from pipelines.base import ImageJob

from .dispatch import Prepare, backend_outcome, encode_results, job_usage
from .encoding import base64_text, encode, fit_to_size
from .engine import JobHandle, Preview
from .errors import APIError, internal_error, invalid, request_id_of
from .responses import GPT_IMAGE_QUALITY, usage
from .state import ServerState
from .validation import ImageOptions

log = logging.getLogger("easel.sse")

StreamKind = Literal["image_generation", "image_edit"]

MEDIA_TYPE = "text/event-stream"
# Proxies (nginx) buffer responses unless told not to; caches must not keep a stream.
HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def encode_event(event_type: str, data: Mapping[str, Any]) -> bytes:
    # json.dumps never emits a raw newline, so the payload is always one data line.
    payload = json.dumps(data, separators=(",", ":"))
    return f"event: {event_type}\ndata: {payload}\n\n".encode()


@dataclass(frozen=True)
class ImageEventFields:
    """What every image event repeats about the request."""

    size: str
    quality: str
    background: str
    output_format: str


def _image_event(event_type: str, fields: ImageEventFields, b64_json: str, **specific: Any) -> bytes:
    return encode_event(
        event_type,
        {
            "type": event_type,
            "b64_json": b64_json,
            "created_at": int(time.time()),
            "size": fields.size,
            "quality": fields.quality,
            "background": fields.background,
            "output_format": fields.output_format,
            **specific,
        },
    )


def partial_image_event(kind: StreamKind, fields: ImageEventFields, b64_json: str, index: int) -> bytes:
    return _image_event(f"{kind}.partial_image", fields, b64_json, partial_image_index=index)


def completed_event(kind: StreamKind, fields: ImageEventFields, b64_json: str, usage: Mapping[str, Any]) -> bytes:
    return _image_event(f"{kind}.completed", fields, b64_json, usage=dict(usage))


def error_event(error: APIError) -> bytes:
    body = {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
    return encode_event("error", {"type": "error", "error": body})


def check_stream_options(options: ImageOptions) -> None:
    if options.stream and options.response_format == "url":
        raise invalid(
            "response_format",
            "Streamed images are always sent as b64_json; omit response_format or set it to b64_json.",
            code="unsupported_value",
        )


def event_fields(options: ImageOptions) -> ImageEventFields:
    return ImageEventFields(
        size=options.size.label,
        quality=GPT_IMAGE_QUALITY[options.quality],
        background="opaque",  # Easel's models make opaque images (see server.validation)
        output_format=options.output_format,
    )


def shared_usage(total: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """The request's usage as ``n`` per-image parts that add up to it."""
    details = total["input_tokens_details"]
    per_image = total["output_tokens"] // n
    parts = [usage(0, per_image) for _ in range(n)]
    parts[0] = usage(details["text_tokens"], total["output_tokens"] - per_image * (n - 1), details["image_tokens"])
    return parts


@dataclass(frozen=True)
class ImageStream:
    """How one endpoint turns a job's images into events."""

    kind: StreamKind
    fields: ImageEventFields
    encode_preview: Callable[[Image.Image], bytes]  # native-size preview -> file bytes (runs in a thread)
    encode_final: Callable[[list[Image.Image]], list[bytes]]  # native-size images -> files (runs in a thread)
    usage: Callable[[], Mapping[str, Any]]  # the request's usage, read once the job has finished


FitToSize = Callable[[Image.Image, int, int], Image.Image]


def job_stream(
    kind: StreamKind,
    options: ImageOptions,
    job: ImageJob,
    handle: JobHandle,
    *,
    fit_preview: FitToSize = fit_to_size,
    prepare: Prepare | None = None,
) -> ImageStream:
    """Events for a job submitted with ``count_prompt_tokens`` (streams always report usage).

    Previews are fitted to the requested size by ``fit_preview``; the final
    images are made exactly as the JSON answer's (:func:`server.dispatch.encode_results`).
    """
    size = options.size

    def encode_preview(image: Image.Image) -> bytes:
        return encode(fit_preview(image, size.width, size.height), options.output_format, options.output_compression)

    def encode_final(images: list[Image.Image]) -> list[bytes]:
        return encode_results(images, options, prepare)

    def request_usage() -> dict[str, Any]:
        return job_usage(job, handle)

    return ImageStream(kind, event_fields(options), encode_preview, encode_final, request_usage)


class _JobEventResponse(StreamingResponse):
    """A streaming response that cancels its job however the response ends.

    On a client disconnect Starlette cancels the task sending the body; the
    event generator may be suspended at a ``yield`` then and only be closed
    when garbage collected, so the job is cancelled here instead.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type=MEDIA_TYPE, headers=HEADERS)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def stream_job(request: Request, state: ServerState, handle: JobHandle, stream: ImageStream) -> StreamingResponse:
    """The ``text/event-stream`` response for a submitted job."""

    def cancel_unfinished() -> None:
        if not handle.done:
            state.engine.cancel(handle)
            log.info("client left the stream; job cancelled [request_id=%s]", request_id_of(request))

    return _JobEventResponse(_events(request, handle, stream), cancel_unfinished)


async def _events(request: Request, handle: JobHandle, stream: ImageStream) -> AsyncIterator[bytes]:
    try:
        async for preview in handle.previews():
            yield await asyncio.to_thread(_partial_image_event, stream, preview)
        result = asyncio.ensure_future(handle.result())
        await asyncio.wait({result})
        images = backend_outcome(request, result)
        for event in await asyncio.to_thread(_completed_events, stream, images):
            yield event
    except APIError as error:
        yield error_event(error)
    except Exception as error:  # the 200 is sent: report it in the stream, never drop the connection
        request_id = request_id_of(request)
        log.error("stream failed [request_id=%s]", request_id, exc_info=error)
        yield error_event(internal_error(request_id))


# Encoding, base64 and JSON of whole images: these run in a thread, off the event loop.


def _partial_image_event(stream: ImageStream, preview: Preview) -> bytes:
    data = stream.encode_preview(preview.images[0])
    return partial_image_event(stream.kind, stream.fields, base64_text(data), preview.index)


def _completed_events(stream: ImageStream, images: list[Image.Image]) -> list[bytes]:
    files = stream.encode_final(images)
    parts = shared_usage(stream.usage(), len(files))
    return [completed_event(stream.kind, stream.fields, base64_text(data), part) for data, part in zip(files, parts)]
