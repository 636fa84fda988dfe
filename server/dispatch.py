"""The steps every image endpoint shares once its request is read.

``ready_model`` resolves the model name (404), checks that the model is
loaded (503) and does the endpoint's task (400); ``build_job`` turns options
into an :class:`ImageJob` (preset, native size, seeds); ``submit`` queues it
(429 when the model's queue is full); ``respond_with_images`` waits for it,
dropping it if the client goes away, and answers with the images resized,
encoded and, for ``url``, stored, in the style of the model name;
``job_usage`` is what a finished job reports as usage.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import replace
from typing import Any, Callable

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from pipelines.base import Cancelled, ImageBackend, ImageJob, MissingComponent, ModelInfo, Task
from pipelines.presets import resolve_preset

from .catalog import Resolved
from .encoding import finish_images
from .engine import EngineStopped, JobHandle, QueueFull
from .errors import APIError, internal_error, invalid, request_id_of, shutting_down
from .responses import FinishedImage, images_response, output_image_tokens, usage
from .state import ServerState
from .uploads import size_for_input
from .validation import ImageOptions, RequestedSize

log = logging.getLogger("easel.dispatch")

CLIENT_CLOSED_REQUEST = 499  # never reaches the client; shows in access logs
RANDOM_SEED_RANGE = 2**31
TASK_ENDPOINTS: dict[str, str] = {"generate": "image generations", "edit": "image edits", "variation": "image variations"}

# Work on a job's native images before they are fitted to the requested size (edits: compositing); runs in a thread.
Prepare = Callable[[list[Image.Image]], list[Image.Image]]


class ClientGone(Exception):
    """The client disconnected before its images were ready; nothing is sent."""


def ready_model(state: ServerState, requested: str | None, task: Task) -> tuple[Resolved, ModelInfo]:
    resolved = state.catalog.resolve(requested)
    info = state.catalog.ready_backend(resolved).info
    if task not in info.tasks:
        raise invalid("model", f"Model '{info.name}' does not support {TASK_ENDPOINTS[task]}.", code="unsupported_model")
    return resolved, info


def sized_for_input(options: ImageOptions, image: Image.Image, info: ModelInfo) -> ImageOptions:
    """``size`` auto: the input's own size, within the model's bounds (see :mod:`server.uploads`)."""
    width, height = size_for_input(image.width, image.height, info.min_side, info.max_side)
    return replace(options, size=RequestedSize(width, height, standard=False))


def reports_usage(resolved: Resolved, options: ImageOptions) -> bool:
    """GPT image answers and every stream carry usage, which needs the prompt's tokens counted."""
    return resolved.api_style == "gpt-image" or options.stream


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
        decoder_guidance_min_timestep=options.decoder_guidance_min_timestep,
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


def submit(state: ServerState, model: str, job: ImageJob, *, count_prompt_tokens: bool = False) -> JobHandle:
    """Queue a job; a full queue is a 429 with Retry-After.

    With ``count_prompt_tokens`` the worker counts the prompt's tokens right
    before the job (the tokenizer is not safe to share across threads), for
    :func:`job_usage`.
    """

    def count_tokens(backend: ImageBackend) -> int:
        return backend.count_tokens(job.prompt)

    try:
        return state.engine.submit(model, job, before_run=count_tokens if count_prompt_tokens else None)
    except QueueFull as full:
        raise APIError(
            429,
            f"Model '{model}' has {full.waiting} requests waiting, the most this server queues; retry after {full.retry_after} s.",
            type="rate_limit_error",
            code="queue_full",
            headers={"retry-after": str(full.retry_after)},
        ) from None
    except EngineStopped:
        raise shutting_down() from None


def job_usage(job: ImageJob, handle: JobHandle) -> dict[str, Any]:
    """The usage of a finished job: prompt tokens, the input image's patches (edits, variations), n outputs'."""
    input_image_tokens = output_image_tokens(job.width, job.height, 1) if job.image is not None else 0
    prompt_tokens = int(handle.before_run_result or 0)  # 0 unless submitted with count_prompt_tokens
    return usage(prompt_tokens, output_image_tokens(job.width, job.height, job.n), input_image_tokens)


async def wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (call only after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


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
        # Only the engine's shutdown cancels a job whose client is still waiting for it.
        raise shutting_down("The job was stopped: the server is shutting down.") from error
    if isinstance(error, MissingComponent):
        raise APIError(400, str(error), param="model", code="missing_component") from error
    if isinstance(error, ValueError):
        raise APIError(400, str(error), code="invalid_value") from error
    if isinstance(error, EngineStopped):
        raise shutting_down() from error
    request_id = request_id_of(request)
    log.error("backend failed [request_id=%s]", request_id, exc_info=error)
    raise internal_error(request_id) from error


def encode_results(images: list[Image.Image], options: ImageOptions, prepare: Prepare | None = None) -> list[bytes]:
    """The files a client gets for a job's native images (CPU work: run it in a thread)."""
    size = options.size
    if prepare is not None:
        images = prepare(images)
    return finish_images(images, size.width, size.height, options.output_format, options.output_compression)


def image_url_base(request: Request, state: ServerState) -> str:
    base = state.settings.public_base_url or str(request.base_url).rstrip("/")
    return f"{base}/v1/files/images"


async def respond_with_images(
    request: Request,
    state: ServerState,
    resolved: Resolved,
    options: ImageOptions,
    job: ImageJob,
    handle: JobHandle,
    *,
    prompt: str | None = None,
    prepare: Prepare | None = None,
) -> Response:
    """The JSON answer with the job's images (499, nothing sent, if the client left first)."""
    try:
        images = await wait_for_result(request, state, handle)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    gpt_image = resolved.api_style == "gpt-image"
    response_format = options.response_format or ("b64_json" if gpt_image else "url")
    url_base = image_url_base(request, state) if response_format == "url" else None
    usage_block = job_usage(job, handle) if gpt_image else None

    def render() -> JSONResponse:
        # Resizing, encoding, writing files, base64 and JSON of megabytes: all off the event loop.
        finished = []
        for data, seed in zip(encode_results(images, options, prepare), job.seeds):
            url = None if url_base is None else f"{url_base}/{state.store.save(data, options.output_format)}"
            finished.append(FinishedImage(data, seed, url))
        body = images_response(
            created=int(time.time()),
            images=finished,
            api_style=resolved.api_style,
            prompt=prompt,
            size_label=options.size.label,
            quality=options.quality,
            output_format=options.output_format,
            usage_block=usage_block,
        )
        return JSONResponse(body)

    return await asyncio.to_thread(render)
