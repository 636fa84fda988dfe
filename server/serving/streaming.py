"""Streaming a job's progress as Server-Sent Events (the event bodies are :mod:`server.protocol.events`).

* ``partial_images`` k asks the backend for k previews, decoded from its
  denoising state at evenly spaced decoder steps; each is fitted to the
  requested size and sent as it arrives. The backend may send fewer when it
  runs fewer steps than k + 1, as OpenAI's may.
* ``n`` > 1: the images of one job are denoised together, so the partial
  images show the first image of the batch; then one ``completed`` event per
  image, in seed order, whose usage adds up to the request's.
* A client that disconnects cancels its job: the worker stops at the next
  denoising step.
* Streamed images are always ``b64_json``.
* While nothing has been sent for ``--sse-keepalive-seconds`` (a slow model
  with no partial images asked for), a comment line ``: keep-alive`` goes out,
  so proxies do not cut an idle connection; SSE clients ignore comments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..engine.base import Engine, JobHandle, JobResult, Preview
from ..http.errors import APIError, internal_error
from ..protocol.events import (
    ImageEventFields,
    StreamKind,
    completed_event,
    error_event,
    partial_image_event,
    shared_usage,
)
from ..protocol.images import base64_text
from .job_errors import job_error

log = logging.getLogger("easel.streaming")

MEDIA_TYPE = "text/event-stream"
# Proxies (nginx) buffer responses unless told not to; caches must not keep a stream.
HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: no event for the client


@dataclass(frozen=True)
class ImageStream:
    """How one request turns its job's images into events."""

    kind: StreamKind
    fields: ImageEventFields
    encode_preview: Callable[[Image.Image], bytes]  # native-size preview -> file bytes (runs in a thread)
    encode_final: Callable[[list[Image.Image]], list[bytes]]  # native-size images -> files (runs in a thread)
    usage: Callable[[JobResult], Mapping[str, Any]]  # the request's usage, once the job has finished
    keepalive_seconds: float = 0.0  # idle time before a keep-alive comment; 0 or less: none


class _JobEventResponse(StreamingResponse):
    """A streaming response that cancels its job however the response ends.

    On a client disconnect Starlette cancels the task sending the body; the
    event generator may be suspended at a ``yield`` then and only be closed
    when garbage collected, so the job is cancelled here instead.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type=MEDIA_TYPE, headers=HEADERS)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def stream_job(engine: Engine, handle: JobHandle, stream: ImageStream, request_id: str) -> StreamingResponse:
    """The ``text/event-stream`` response for a submitted job."""
    events = _events(handle, stream, request_id)
    return job_event_response(engine, handle, events, request_id, stream.keepalive_seconds)


def job_event_response(
    engine: Engine, handle: JobHandle, events: AsyncIterator[bytes], request_id: str, keepalive_seconds: float
) -> StreamingResponse:
    """``events`` about a submitted job as ``text/event-stream``, with keep-alives; a client that leaves cancels it."""

    def cancel_unfinished() -> None:
        if not handle.done:
            engine.cancel(handle)
            log.info("client left the stream; job cancelled [request_id=%s]", request_id)

    return _JobEventResponse(with_keepalive(events, keepalive_seconds), cancel_unfinished)


async def with_keepalive(events: AsyncIterator[bytes], idle_seconds: float) -> AsyncIterator[bytes]:
    """``events``, with :data:`KEEPALIVE` sent whenever none has come for ``idle_seconds``."""
    if idle_seconds <= 0:
        async for event in events:
            yield event
        return
    iterator = aiter(events)
    pending = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=idle_seconds)
            if not done:
                yield KEEPALIVE
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            yield event
            pending = asyncio.ensure_future(anext(iterator))
    finally:
        pending.cancel()  # the response ended early (client gone): stop waiting for the next event


async def _events(handle: JobHandle, stream: ImageStream, request_id: str) -> AsyncIterator[bytes]:
    try:
        async for preview in handle.previews():
            yield await asyncio.to_thread(_partial_image_event, stream, preview)
        try:
            result = await handle.result()
        except Exception as error:
            raise job_error(error, request_id) from error
        for event in await asyncio.to_thread(_completed_events, stream, result):
            yield event
    except APIError as error:
        yield error_event(error)
    except Exception as error:  # the 200 is sent: report it in the stream, never drop the connection
        log.error("stream failed [request_id=%s]", request_id, exc_info=error)
        yield error_event(internal_error(request_id))


# Encoding, base64 and JSON of whole images: these run in a thread, off the event loop.


def _partial_image_event(stream: ImageStream, preview: Preview) -> bytes:
    data = stream.encode_preview(preview.images[0])
    return partial_image_event(stream.kind, stream.fields, base64_text(data), preview.index)


def _completed_events(stream: ImageStream, result: JobResult) -> list[bytes]:
    files = stream.encode_final(result.images)
    parts = shared_usage(stream.usage(result), len(files))
    return [
        completed_event(stream.kind, stream.fields, base64_text(data), part)
        for data, part in zip(files, parts, strict=True)
    ]
