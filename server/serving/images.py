"""Serving the image endpoints: resolve the model, submit the job, wait (or stream), finish the files, answer.

A typed request (:mod:`server.protocol.images`) comes in; the answer goes out in the style of the model name the
client used. The job waits in the engine; a client that disconnects before its images are ready cancels it. Log
lines carry ``request.state.request_id``, set by :class:`~server.http.request_id.RequestIdMiddleware`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from pipelines.base import ImageJob, ModelInfo, Task

from ..engine.base import Engine, JobHandle, JobResult
from ..http.errors import CLIENT_CLOSED_REQUEST, insufficient_storage, shutting_down
from ..http.request_id import is_retry
from ..protocol.edits import EditRequest, VariationRequest
from ..protocol.events import ImageEventFields, StreamKind
from ..protocol.fields import read_json
from ..protocol.images import (
    ApiStyle,
    FinishedImage,
    GenerationRequest,
    ImageOptions,
    answer_peak_bytes,
    check_answer_memory,
    images_response,
)
from ..protocol.usage import job_usage
from ..settings.config import Settings
from .answer_memory import TRIM_AFTER_BYTES, MemoryReturn
from .decoding import Fit, UploadLimits, decode_variation_input
from .files import (
    STORAGE_RETRY_AFTER_SECONDS,
    Encoding,
    ImageStore,
    StorageUnavailable,
    encode,
    finish_images,
    fit_to_size,
    resize_exactly,
)
from .job_errors import job_error
from .masks import decode_edit_images, edit_compositor
from .models import Catalog, NotResident, ReadyModel
from .residency import ModelManager
from .streaming import ImageStream, stream_job
from .uploads import FileBytes, read_edit_body, read_variation_body

log = logging.getLogger("easel.images")

# Work on a job's native images before they are fitted to the requested size (edits: compositing); runs in a thread.
Prepare = Callable[[list[Image.Image]], list[Image.Image]]
FitToSize = Callable[[Image.Image, int, int], Image.Image]
Decoded = TypeVar("Decoded")


class ImageServing:
    def __init__(
        self, settings: Settings, catalog: Catalog, engine: Engine, store: ImageStore, residency: ModelManager
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.residency = residency
        self.engine = engine
        self.store = store
        self.upload_limits = UploadLimits.from_settings(settings)
        self.decode_slots = asyncio.Semaphore(settings.max_concurrent_decodes)
        self.draining = False  # set when the server shuts down: new image requests are refused
        self.memory = MemoryReturn()
        self.file_bytes: FileBytes | None = None  # images JSON edits name by file_id (the Files API), when served

    # -- the endpoints (server/routes/images.py): read the body, then serve it ---------------------

    async def create_generation(self, request: Request) -> Response:
        return await self.generate(request, GenerationRequest.parse(await read_json(request)))

    async def create_edit(self, request: Request) -> Response:
        body = await read_edit_body(request, self.upload_limits, self.file_bytes)
        return await self.edit(request, EditRequest.parse(body))

    async def create_variation(self, request: Request) -> Response:
        body = await read_variation_body(request, self.upload_limits)
        return await self.vary(request, VariationRequest.parse(body))

    async def generate(self, request: Request, generation: GenerationRequest) -> Response:
        started = await self.start_generation(request, generation)
        if started.options.stream:
            return self._stream(request, "image_generation", started)
        return await self._respond(request, started, prompt=generation.prompt)

    async def edit(self, request: Request, edit: EditRequest) -> Response:
        started = await self.start_edit(request, edit)
        if started.options.stream:
            return self._stream(request, "image_edit", started)
        return await self._respond(request, started, prompt=edit.prompt)

    async def vary(self, request: Request, variation: VariationRequest) -> Response:
        async with self._holding(request, variation.options.model, Task.VARIATION) as model:
            prepared = await self._decode(prepare_job, variation, model.info, model.api_style, self.upload_limits)
            job, options, source = prepared.job, prepared.options, prepared.source
            log.info(
                "variation model=%s (%s) n=%d input=%dx%d size=%s native=%dx%d seeds=%d.. user=%r "
                "safety_identifier=%r [request_id=%s]",
                model.requested, model.name, job.n, source.width, source.height, options.size.label, job.width,
                job.height, job.seeds[0], options.user, options.safety_identifier, request.state.request_id,
            )  # fmt: skip
            self._check_memory(model, options)
            handle = self._submit(request, model, job)
        return await self._respond(request, StartedJob(model, prepared, handle))

    # -- starting jobs: the endpoints here and /v1/responses (server/serving/responses.py) --------

    async def start_generation(self, request: Request, generation: GenerationRequest) -> StartedJob:
        async with self._holding(request, generation.options.model, Task.GENERATE) as model:
            prepared = prepare_job(generation, model.info, model.api_style, self.upload_limits)
            job, options = prepared.job, prepared.options
            log.info(
                "generate model=%s (%s) n=%d size=%s native=%dx%d quality=%s format=%s seeds=%d.. "
                "user=%r safety_identifier=%r [request_id=%s]",
                model.requested, model.name, job.n, options.size.label, job.width, job.height, options.quality,
                options.output_format, job.seeds[0], options.user, options.safety_identifier, request.state.request_id,
            )  # fmt: skip
            self._check_memory(model, options)
            return StartedJob(model, prepared, self._submit(request, model, job))

    async def start_edit(self, request: Request, edit: EditRequest) -> StartedJob:
        async with self._holding(request, edit.options.model, Task.EDIT) as model:
            prepared = await self._decode(prepare_job, edit, model.info, model.api_style, self.upload_limits)
            job, options, original = prepared.job, prepared.options, prepared.source
            log.info(
                "edit model=%s (%s) n=%d input=%dx%d images=%d %s size=%s native=%dx%d seeds=%d.. stream=%s "
                "user=%r safety_identifier=%r [request_id=%s]",
                model.requested, model.name, job.n, original.width, original.height, 1 + len(job.references),
                "masked" if job.mask is not None else f"whole strength={job.strength}", options.size.label,
                job.width, job.height, job.seeds[0], options.stream, options.user, options.safety_identifier,
                request.state.request_id,
            )  # fmt: skip
            self._check_memory(model, options)
            return StartedJob(model, prepared, self._submit(request, model, job))

    # -- the steps every endpoint shares ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _holding(self, request: Request, requested: str | None, task: Task) -> AsyncIterator[ReadyModel]:
        """The loaded model for the request (loaded first if it is not), held so that it is not evicted until
        the job is queued; its name goes on the access log line, found or not. The metrics label requests with
        the configured model they resolved to instead: a label per name a client makes up would grow without bound.
        """
        request.state.model = requested or self.catalog.default_name
        while True:
            if self.draining:
                raise shutting_down()
            try:
                model = self.catalog.ready(requested, task)
                break
            except NotResident as absent:  # loads, or waits for the load under way; then asks again
                try:
                    await self.residency.bring(absent.entry, retried=is_retry(request.headers))
                except Exception as error:
                    raise job_error(error, request.state.request_id) from None
                request.state.held_a_place = True  # while it waited: the queue's reserve takes its job
        request.state.served_model = model.name
        try:
            yield model
        finally:
            self.catalog.release(model.name)

    async def _decode(self, decode: Callable[..., Decoded], *args: object) -> Decoded:
        """Decode uploads (and what follows) in a thread, at most ``--max-concurrent-decodes`` at once: each may
        take megabytes."""
        async with self.decode_slots:
            return await asyncio.to_thread(decode, *args)

    def _check_memory(self, model: ReadyModel, options: ImageOptions) -> None:
        """A 400 before the job is queued if its answer could take more memory than ``--max-request-mb``."""
        inline = options.stream or (options.response_format or _default_format(model)) == "b64_json"
        shape = (options.n, options.frames, options.size.width, options.size.height, options.output_format, inline)
        check_answer_memory(*shape, limit=self.settings.max_request_bytes)

    def _submit(self, request: Request, model: ReadyModel, job: ImageJob) -> JobHandle:
        """Queue the job; a full queue is a 429 with Retry-After, a stopping engine a 503."""
        try:
            retried = is_retry(request.headers) or getattr(request.state, "held_a_place", False)
            return self.engine.submit(model.name, job, retried=retried)
        except Exception as error:
            raise job_error(error, request.state.request_id) from None

    async def _respond(self, request: Request, started: StartedJob, *, prompt: str | None = None) -> Response:
        """The JSON answer with the job's images (499, nothing sent, if the client left first)."""
        result = await self.wait(request, started.handle)
        if result is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        url_base = self.url_base(request.base_url) if answers_with_urls(started.model, started.options) else None

        def render() -> JSONResponse:
            # Resizing, encoding, writing files, base64 and JSON of megabytes: all off the event loop.
            return JSONResponse(answer_body(started.model, started.prepared, result, self.store, url_base, prompt))

        try:
            response = await asyncio.to_thread(render)
        except StorageUnavailable as error:
            raise insufficient_storage(str(error), STORAGE_RETRY_AFTER_SECONDS) from None
        self._return_memory_after(response, started.options, inline=url_base is None)
        return response

    def _return_memory_after(self, response: Response, options: ImageOptions, inline: bool) -> None:
        """A large answer's memory goes back to the system once it has been sent (:mod:`.answer_memory`)."""
        pixels = options.size.width * options.size.height
        if answer_peak_bytes(options.n, options.frames, pixels, options.output_format, inline) >= TRIM_AFTER_BYTES:
            response.background = BackgroundTask(self.memory.after_answer)

    async def wait(self, request: Request, handle: JobHandle) -> JobResult | None:
        """The job's result; None, with the job cancelled, if the client disconnects first."""
        result = asyncio.ensure_future(handle.result())
        gone = asyncio.ensure_future(_wait_for_disconnect(request.receive))
        try:
            await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not result.done():
            self.engine.cancel(handle)
            result.cancel()
            request.state.gone = "while waiting for its images; its job was dropped"  # for the access line
            return None
        error = result.exception()
        if error is not None:
            raise job_error(error, request.state.request_id) from error
        return result.result()

    def _stream(self, request: Request, kind: StreamKind, started: StartedJob) -> Response:
        """Events for the job; streams always report usage. Final images are made exactly as the JSON answer's."""
        handle = started.handle

        def usage(result: JobResult) -> dict:
            return job_usage(handle.job, result.prompt_tokens)

        fields = ImageEventFields.of(started.options)
        keepalive = self.settings.sse_keepalive_seconds
        stream = ImageStream(kind, fields, started.encode_preview, started.finish, usage, keepalive)
        response = stream_job(self.engine, handle, stream, request.state.request_id)
        self._return_memory_after(response, started.options, inline=True)
        return response

    def url_base(self, request_base: object) -> str:
        """Where ``url`` images are served, as the client reached this server (or ``--public-base-url``)."""
        base = self.settings.public_base_url or str(request_base).rstrip("/")
        return f"{base}/v1/files/images"


def answers_with_urls(model: ReadyModel, options: ImageOptions) -> bool:
    return (options.response_format or ("b64_json" if model.api_style == "gpt-image" else "url")) == "url"


def answer_body(
    model: ReadyModel,
    prepared: PreparedJob,
    result: JobResult,
    store: ImageStore,
    url_base: str | None,
    prompt: str | None,
) -> dict:
    """The JSON answer for a finished job: files made, kept for URLs if ``url_base`` (CPU and disk: run in a thread).
    Synchronous requests and batch lines both answer with it, so the same seed gives the same bytes."""
    options, job = prepared.options, prepared.job
    usage_block = job_usage(job, result.prompt_tokens) if model.api_style == "gpt-image" else None
    files = prepared.finish(result.images)
    names = store.save_all(files, options.output_format) if url_base is not None else None
    urls = [f"{url_base}/{name}" for name in names] if names is not None else [None] * len(files)
    finished = [FinishedImage(data, seed, url) for data, seed, url in zip(files, job.seeds, urls, strict=True)]
    return images_response(
        created=int(time.time()),
        images=finished,
        api_style=model.api_style,
        prompt=prompt,
        options=options,
        usage_block=usage_block,
    )


ImageRequest = GenerationRequest | EditRequest | VariationRequest


@dataclass(frozen=True)
class PreparedJob:
    """A request made into a backend job, and how the job's native images become the files a client gets."""

    job: ImageJob
    options: ImageOptions  # sized for the input where the request asked for its size
    fit_preview: FitToSize = fit_to_size
    prepare: Prepare | None = None

    @property
    def source(self) -> Image.Image:
        """The input image (edits: the one edited)."""
        assert self.job.image is not None  # only asked of edits and variations
        return self.job.image

    def encode_preview(self, image: Image.Image) -> bytes:
        """A partial image as a file of the requested size and format (CPU work: run it in a thread)."""
        size, options = self.options.size, self.options
        return encode(
            self.fit_preview(image, size.width, size.height), options.output_format, options.output_compression
        )

    def finish(self, images: list[Image.Image]) -> list[bytes]:
        """The final files (CPU work: run it in a thread)."""
        return finish_files(images, self.options, self.prepare)


def prepare_job(request: ImageRequest, info: ModelInfo, api_style: ApiStyle, limits: UploadLimits) -> PreparedJob:
    """The job for a typed request: its uploads decoded (no larger than the answer needs), its size fixed,
    its fields checked against the model. No HTTP request needed: ``easel generate`` runs the same steps.

    Edits and variations decode uploads: CPU work, run it in a thread.
    """
    if isinstance(request, GenerationRequest):
        return PreparedJob(request.to_job(info, api_style), request.options)
    fit = _input_fit(request.options, request.size_from_input, info)
    if isinstance(request, VariationRequest):
        source = decode_variation_input(request.image, limits, fit)
        variation = request.sized_for(source, info)
        return PreparedJob(variation.to_job(info, api_style, source), variation.options)
    images, repaint = decode_edit_images(request.images, request.image_param, request.mask, limits, fit, request.markup)
    edit = request.sized_for(images[0], info)
    job = edit.to_job(info, api_style, images, repaint)
    size = edit.options.size
    # A whole-image edit keeps no pixel of the input as it was; a masked one keeps those outside the mask.
    composite = None if repaint is None else edit_compositor(images[0], repaint, size.width, size.height)
    # Previews are stretched to the requested size, as the composited result is (never cropped).
    return PreparedJob(job, edit.options, fit_preview=resize_exactly, prepare=composite)


@dataclass(frozen=True)
class StartedJob:
    """A submitted job and how its native images become the files a client gets."""

    model: ReadyModel
    prepared: PreparedJob
    handle: JobHandle

    @property
    def options(self) -> ImageOptions:
        return self.prepared.options

    def encode_preview(self, image: Image.Image) -> bytes:
        return self.prepared.encode_preview(image)

    def finish(self, images: list[Image.Image]) -> list[bytes]:
        return self.prepared.finish(images)


def _input_fit(options: ImageOptions, size_from_input: bool, info: ModelInfo) -> Fit:
    """The size an upload is used at: the answer's size (the input's own, scaled into the model's bounds, for auto)."""
    if size_from_input:
        return info.size_for_input
    width, height = options.size.width, options.size.height
    return lambda _width, _height: (width, height)


def finish_files(images: list[Image.Image], options: ImageOptions, prepare: Prepare | None) -> list[bytes]:
    """The files a client gets for a job's native images (CPU work: run it in a thread)."""
    if prepare is not None:
        images = prepare(images)
    size = options.size
    return finish_images(images, size.width, size.height, encoding_of(options))


def encoding_of(options: ImageOptions) -> Encoding:
    return Encoding(
        options.output_format,
        options.output_compression,
        options.frames,
        options.frame_duration_ms,
        options.trace_detail or "medium",
    )


def _default_format(model: ReadyModel) -> str:
    """The response format when a request names none: OpenAI's default for the model name the client used."""
    return "b64_json" if model.api_style == "gpt-image" else "url"


async def _wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (call only after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
