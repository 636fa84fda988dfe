"""Serving ``/v1/responses``: the image tool's call as an Images API job, answered as OpenAI's response object.

The request (:mod:`server.protocol.responses`) becomes a generation or an
edit read by the Images API's own parsers, and runs through the same
:class:`~server.serving.images.ImageServing` steps (model, queue, engine,
files), so the API key, request ids, metrics, limits and shutdown behave as
for ``/v1/images/*``. The answer is a response object or, with ``stream``, its
events (:mod:`server.protocol.response_objects`). Finished responses are kept
in this process's memory (:class:`KeptResponses`) for ``previous_response_id``
and ``GET /v1/responses/{id}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..http.errors import CLIENT_CLOSED_REQUEST, APIError, internal_error, invalid
from ..protocol import tables as t
from ..protocol.edits import EditRequest, UploadedBody
from ..protocol.fields import FieldReader, read_json
from ..protocol.images import GenerationRequest, api_style_for, base64_text
from ..protocol.response_objects import EventCounter, ResponseDraft
from ..protocol.responses import ImageRef, ResponsesRequest, parse_responses_request, tool_error
from ..protocol.usage import job_usage
from .images import ImageServing, StartedJob
from .job_errors import job_error
from .kept import KeptResponse, KeptResponses
from .streaming import job_event_response
from .uploads import data_url_bytes, image_ref_bytes, refuse_too_many_images

log = logging.getLogger("easel.responses")

EDITABLE_FORMATS = ("png", "jpeg", "webp")  # an earlier image in these can be the next edit's input


class ResponsesServing:
    def __init__(self, images: ImageServing, kept: KeptResponses) -> None:
        self.images = images
        self.kept = kept

    async def create(self, request: Request) -> Response:
        catalog = self.images.catalog

        def names_a_local_model(name: str) -> bool:  # a model or alias here, not an OpenAI image name
            return name in catalog.names() and api_style_for(name) == "easel"

        parsed = parse_responses_request(await read_json(request), names_a_local_model)
        images, mask = await asyncio.to_thread(self._input_images, parsed)
        try:
            draft, started = await self._start(request, parsed, images, mask)
        except APIError as error:
            raise tool_error(error, parsed.tool_param) from None
        log.info(
            "response %s: %s with the image tool, model=%r stream=%s [request_id=%s]",
            draft.id, draft.action, parsed.model, parsed.stream, request.state.request_id,
        )  # fmt: skip
        if parsed.stream:
            events = self._events(draft, started, request.state.request_id)
            keepalive = self.images.settings.sse_keepalive_seconds
            return job_event_response(self.images.engine, started.handle, events, request.state.request_id, keepalive)
        result = await self.images.wait(request, started.handle)
        if result is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)

        def render() -> JSONResponse:  # encoding, base64 and JSON of megabytes: off the event loop
            self._finish(draft, started, started.finish(result.images)[0], result.prompt_tokens)
            return JSONResponse(draft.body("completed"))

        return await asyncio.to_thread(render)

    async def retrieve(self, request: Request) -> JSONResponse:
        response_id = request.path_params["response_id"]
        kept = self.kept.get(response_id)
        if kept is None:
            raise APIError(404, f"No response found with id '{response_id}'.", code="response_not_found")
        return JSONResponse(kept.body)

    # -- the call -----------------------------------------------------------------------------------

    def _input_images(self, parsed: ResponsesRequest) -> tuple[list[bytes], bytes | None]:
        """The images to edit, in order (an earlier response's first), and the mask. Runs in a thread."""
        images = [self._image_bytes(ref) for ref in parsed.images]
        earlier = self._earlier_image(parsed)
        if earlier is not None:
            images.insert(0, earlier)
        mask = None if parsed.mask is None else self._image_bytes(parsed.mask)
        return images, mask

    def _image_bytes(self, ref: ImageRef) -> bytes:
        """As image edits read a JSON image reference: the data URL's bytes, or the uploaded file's."""
        if ref.file_id is not None:
            return image_ref_bytes(
                {"file_id": ref.file_id}, ref.param, self.images.upload_limits, self.images.file_bytes
            )
        assert ref.url is not None  # the protocol gives an ImageRef one of the two
        return data_url_bytes(ref.url, ref.param, self.images.upload_limits)

    def _earlier_image(self, parsed: ResponsesRequest) -> bytes | None:
        if parsed.previous_response_id is not None:
            kept = self.kept.get(parsed.previous_response_id)
            if kept is None:
                message = (
                    f"Previous response with id '{parsed.previous_response_id}' not found: it is unknown, was not "
                    "stored (store: false), or has expired (this server keeps responses for --url-ttl-seconds)."
                )
                raise APIError(404, message, param="previous_response_id", code="previous_response_not_found")
            if kept.output_format not in EDITABLE_FORMATS:
                message = f"The previous response's image is {kept.output_format}, which cannot be edited further."
                raise invalid("previous_response_id", message, code="unsupported_value")
            return kept.image
        if parsed.earlier_result is None:
            return None
        try:
            return base64.b64decode(parsed.earlier_result, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("input", "An image_generation_call item's result is not valid base64.") from None

    async def _start(
        self, request: Request, parsed: ResponsesRequest, images: list[bytes], mask: bytes | None
    ) -> tuple[ResponseDraft, StartedJob]:
        fields = {**parsed.image_fields, "model": parsed.image_model}
        tool_param = parsed.tool_param
        if parsed.action == "edit" and not images:
            raise invalid(f"{tool_param}.action", "action 'edit' needs an input image.", code="invalid_value")
        if parsed.action == "generate" and images:
            message = "action 'generate' makes a new image from text: send no input image (or use 'edit' or 'auto')."
            raise invalid(f"{tool_param}.action", message, code="invalid_value")
        if mask is not None and not images:
            raise invalid(f"{tool_param}.input_image_mask", "A mask needs an input image to edit.")
        if images:
            # The Images API's own rule on how many images one edit takes (16), so both change together.
            refuse_too_many_images(len(images), "input")
            edit = EditRequest.parse(UploadedBody(fields, False, "input", images, mask))
            started = await self.images.start_edit(request, edit)
            return ResponseDraft(parsed, started.options, "edit"), started  # options sized for the input
        FieldReader(fields).read(t.INPUT_FIDELITY)  # checked; it applies to edits only
        generation = GenerationRequest.parse({k: v for k, v in fields.items() if k != "input_fidelity"})
        started = await self.images.start_generation(request, generation)
        return ResponseDraft(parsed, started.options, "generate"), started

    def _finish(self, draft: ResponseDraft, started: StartedJob, image: bytes, prompt_tokens: int) -> None:
        draft.result = base64_text(image)
        draft.usage = job_usage(started.handle.job, prompt_tokens)
        if draft.request.store:
            body = draft.body("completed")
            self.kept.put(KeptResponse(draft.id, body, image, started.options.output_format))

    # -- streaming ----------------------------------------------------------------------------------

    async def _events(self, draft: ResponseDraft, started: StartedJob, request_id: str) -> AsyncIterator[bytes]:
        counter = EventCounter(draft)
        yield counter.lifecycle("response.created", "in_progress")
        yield counter.lifecycle("response.in_progress", "in_progress")
        yield counter.item("response.output_item.added", "in_progress")
        yield counter.call("in_progress")
        yield counter.call("generating")
        try:
            async for preview in started.handle.previews():
                data = await asyncio.to_thread(started.encode_preview, preview.images[0])
                yield counter.partial_image(base64_text(data), preview.index)
            try:
                result = await started.handle.result()
            except Exception as error:
                raise job_error(error, request_id) from error
            yield await asyncio.to_thread(self._completed_events, counter, started, result.images, result.prompt_tokens)
        except Exception as error:  # the 200 is sent: the response fails in the stream, as OpenAI's does
            api_error = error if isinstance(error, APIError) else internal_error(request_id)
            if not isinstance(error, APIError):
                log.error("response stream failed [request_id=%s]", request_id, exc_info=error)
            draft.error = _response_error(api_error)
            yield counter.lifecycle("response.failed", "failed")

    def _completed_events(self, counter: EventCounter, started: StartedJob, images: list[Any], tokens: int) -> bytes:
        """The last three events: megabytes of base64 and JSON, so made in a thread."""
        self._finish(counter.draft, started, started.finish(images)[0], tokens)
        return (
            counter.call("completed")
            + counter.item("response.output_item.done", "completed")
            + counter.lifecycle("response.completed", "completed")
        )


def _response_error(error: APIError) -> dict[str, str]:
    """A failed response's ``error``: OpenAI's codes for it are few, so the message says the rest."""
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    return {"code": code, "message": error.message}
