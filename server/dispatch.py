"""The steps every image endpoint shares once its request is validated.

``build_job`` turns options into an :class:`ImageJob` (preset, native size,
seeds); ``run_job`` queues it and waits, dropping it if the client goes away;
``finish`` resizes, encodes and, for ``url``, stores the images;
``image_url`` builds the public URL of a stored image.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Callable

from PIL import Image
from starlette.requests import Request
from starlette.types import Receive

from pipelines.base import Cancelled, ImageBackend, ImageJob, MissingComponent, ModelInfo, Task
from pipelines.presets import resolve_preset

from .encoding import finish_images
from .engine import EngineStopped, JobHandle, QueueFull
from .errors import SERVER_ERROR, APIError, internal_error, request_id_of
from .responses import FinishedImage
from .state import ServerState
from .validation import ImageOptions

log = logging.getLogger("easel.dispatch")

RANDOM_SEED_RANGE = 2**31


class ClientGone(Exception):
    """The client disconnected before its images were ready; nothing is sent."""


def build_job(
    task: Task,
    options: ImageOptions,
    info: ModelInfo,
    *,
    prompt: str = "",
    style: str | None = None,
    image: Image.Image | None = None,
    mask: Image.Image | None = None,
) -> ImageJob:
    preset = resolve_preset(
        info.presets,
        options.quality,
        style,
        prior_steps=options.prior_steps,
        prior_guidance=options.prior_guidance_scale,
        decoder_steps=options.decoder_steps,
        decoder_guidance=options.decoder_guidance_scale,
    )
    first_seed = options.seed if options.seed is not None else secrets.randbelow(RANDOM_SEED_RANGE)
    width, height = info.native_size_for(options.size.width, options.size.height)
    return ImageJob(
        task=task,
        n=options.n,
        width=width,
        height=height,
        seeds=[first_seed + i for i in range(options.n)],
        preset=preset,
        prompt=prompt,
        negative_prompt=options.negative_prompt,
        image=image,
        mask=mask,
        preview_count=options.partial_images,  # non-zero only when streaming
    )


async def wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (call only after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def submit(state: ServerState, model: str, job: ImageJob, before_run: Callable[[ImageBackend], object] | None = None) -> JobHandle:
    """Queue a job; a full queue is a 429 with Retry-After."""
    try:
        return state.engine.submit(model, job, before_run=before_run)
    except QueueFull as full:
        raise APIError(
            429,
            f"Model '{model}' has {full.waiting} requests waiting, the most this server queues; retry after {full.retry_after} s.",
            type="rate_limit_error",
            code="queue_full",
            headers={"retry-after": str(full.retry_after)},
        ) from None
    except EngineStopped:
        raise APIError(503, "The server is shutting down.", type=SERVER_ERROR, code="shutting_down") from None


async def wait_for_result(request: Request, state: ServerState, handle: JobHandle) -> list[Image.Image]:
    """The job's images; cancels the job if the client disconnects first."""
    result = asyncio.ensure_future(handle.result())
    gone = asyncio.ensure_future(wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not result.done():
        state.engine.cancel(handle)
        result.cancel()
        log.info("client went away; job dropped [request_id=%s]", request_id_of(request))
        raise ClientGone()
    return backend_outcome(request, result)


def backend_outcome(request: Request, result: asyncio.Future) -> list[Image.Image]:
    """The images, or the backend's error as an API error."""
    error = result.exception()
    if error is None:
        return result.result()
    if isinstance(error, Cancelled):
        raise ClientGone() from error
    if isinstance(error, MissingComponent):
        raise APIError(400, str(error), param="model", code="missing_component") from error
    if isinstance(error, ValueError):
        raise APIError(400, str(error), code="invalid_value") from error
    if isinstance(error, EngineStopped):
        raise APIError(503, "The server is shutting down.", type=SERVER_ERROR, code="shutting_down") from error
    request_id = request_id_of(request)
    log.error("backend failed [request_id=%s]", request_id, exc_info=error)
    raise internal_error(request_id) from error


def image_url(request: Request, state: ServerState, file_name: str) -> str:
    base = state.settings.public_base_url or str(request.base_url).rstrip("/")
    return f"{base}/v1/files/images/{file_name}"


async def finish(
    request: Request, state: ServerState, images: list[Image.Image], seeds: list[int], options: ImageOptions, response_format: str
) -> list[FinishedImage]:
    """Resize and encode off the event loop; store the files when the client wants URLs."""
    size = options.size
    encoded = await asyncio.to_thread(
        finish_images, images, size.width, size.height, options.output_format, options.output_compression
    )
    if response_format != "url":
        return [FinishedImage(data, seed) for data, seed in zip(encoded, seeds)]
    names = [await asyncio.to_thread(state.store.save, data, options.output_format) for data in encoded]
    return [FinishedImage(data, seed, image_url(request, state, name)) for data, seed, name in zip(encoded, seeds, names)]
