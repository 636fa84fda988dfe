"""One batch line answered exactly as its synchronous endpoint answers the same body.

The body is read by the same typed request (:mod:`server.protocol.images`,
:mod:`server.protocol.edits`), made into a job by the same ``prepare_job``,
submitted to the same engine (as a background job: behind interactive ones),
and its answer built by the same ``answer_body``: same seed, same bytes. A body
the endpoint refuses is answered with the endpoint's error envelope and status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.base import Task
from pipelines.errors import Cancelled

from ...engine.base import EngineStopped, JobHandle
from ...http.errors import APIError, envelope, insufficient_storage, invalid
from ...protocol.edits import EditRequest
from ...protocol.images import GenerationRequest
from ..files import STORAGE_RETRY_AFTER_SECONDS, StorageUnavailable
from ..images import ImageServing, answer_body, answers_with_urls, prepare_job
from ..job_errors import job_error
from ..models import ReadyModel
from ..uploads import json_edit_payload

MODEL_WAIT_SECONDS = 0.5  # a line for a model still loading waits for it, as a client retrying would


class Interrupted(Exception):
    """The line did not finish (the batch was cancelled, the server is stopping): it stays unanswered."""


@dataclass(frozen=True)
class LineAnswer:
    status: int
    body: dict[str, Any]
    tokens: tuple[int, int]  # input, output: the answer's usage where it reports one


async def answer_line(
    serving: ImageServing, endpoint: str, body: dict[str, Any], url_base: str, request_id: str,
    on_submit: Callable[[JobHandle], None],
) -> LineAnswer:  # fmt: skip
    try:
        answer = await _answer(serving, endpoint, body, url_base, request_id, on_submit)
    except APIError as error:
        return LineAnswer(error.status, envelope(error.message, error.type, error.param, error.code), (0, 0))
    usage = answer.get("usage") or {}
    return LineAnswer(200, answer, (int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))))


async def _answer(
    serving: ImageServing, endpoint: str, body: dict[str, Any], url_base: str, request_id: str,
    on_submit: Callable[[JobHandle], None],
) -> dict[str, Any]:  # fmt: skip
    if body.get("stream") not in (None, False):
        raise invalid("stream", "A batch line cannot stream; leave 'stream' out.", "invalid_value")
    typed: GenerationRequest | EditRequest
    if endpoint == "/v1/images/generations":
        typed, task = GenerationRequest.parse(body), Task.GENERATE
    else:
        uploaded = await asyncio.to_thread(json_edit_payload, body, serving.upload_limits, serving.file_bytes)
        typed, task = EditRequest.parse(uploaded), Task.EDIT
    model = await _ready(serving, typed.options.model, task)
    prepared = await asyncio.to_thread(prepare_job, typed, model.info, model.api_style, serving.upload_limits)
    try:
        handle = serving.engine.submit(model.name, prepared.job, background=True)
    except EngineStopped:
        raise Interrupted from None
    except Exception as error:
        raise job_error(error, request_id) from None
    on_submit(handle)
    try:
        result = await handle.result()
    except (Cancelled, EngineStopped):
        raise Interrupted from None
    except Exception as error:
        raise job_error(error, request_id) from None
    urls = url_base if answers_with_urls(model, prepared.options) else None
    try:
        return await asyncio.to_thread(answer_body, model, prepared, result, serving.store, urls, typed.prompt)
    except StorageUnavailable as error:
        raise insufficient_storage(str(error), STORAGE_RETRY_AFTER_SECONDS) from None


async def _ready(serving: ImageServing, requested: str | None, task: Task) -> ReadyModel:
    """The model, once loaded: a batch waits for a loading model rather than failing its lines."""
    while True:
        if serving.draining:
            raise Interrupted
        try:
            return serving.catalog.ready(requested, task)
        except APIError as error:
            if error.code != "model_loading":
                raise
        await asyncio.sleep(MODEL_WAIT_SECONDS)
