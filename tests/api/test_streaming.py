"""``stream: true`` on generations and edits: real previews as partial images, completed events,
errors inside the stream, and cancellation when the client leaves."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from server.settings.config import Settings
from server.settings.model_specs import ModelSpec
from tests.api.test_edits import HEIGHT, MASK_PNG, PICTURE_PNG, WIDTH, kept_area, picture
from tests.conftest import FAST, SLOW, TINY, LiveServer, OneJobAtATime, assert_envelope, running_server

STEPS = {"prior_steps": 2, "decoder_steps": 6}  # enough decoder steps for 3 evenly spaced previews


def decoded(b64_json: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64_json)))


def test_generation_streams_partial_images_then_the_same_image_as_json(client: openai.OpenAI) -> None:
    events = list(
        client.images.generate(
            prompt="a red circle",
            size="128x128",
            stream=True,
            partial_images=2,
            extra_body={"seed": 3, **STEPS},
        )
    )
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    for event in events:
        image = decoded(event.b64_json)
        assert (image.format, image.size) == ("PNG", (128, 128))
        assert (event.size, event.quality, event.background, event.output_format) == (
            "128x128",
            "medium",
            "opaque",
            "png",
        )
    previews = [np.asarray(decoded(event.b64_json)) for event in events]
    assert not np.array_equal(previews[0], previews[1])  # real intermediate states, not copies
    completed = events[-1]
    assert completed.usage.input_tokens_details.text_tokens == 3
    assert completed.usage.output_tokens == 64 and completed.usage.total_tokens == 67
    plain = client.images.generate(
        prompt="a red circle", size="128x128", response_format="b64_json", extra_body={"seed": 3, **STEPS}
    )
    assert base64.b64decode(completed.b64_json) == base64.b64decode(plain.data[0].b64_json)


def test_zero_partial_images_sends_only_the_completed_event(client: openai.OpenAI) -> None:
    events = list(client.images.generate(prompt="a red circle", size="64x64", stream=True, extra_body=FAST))
    assert [event.type for event in events] == ["image_generation.completed"]


def test_more_partial_images_than_steps_allow_sends_fewer(client: openai.OpenAI) -> None:
    # Two decoder steps leave one step before the last: one preview at most.
    events = list(
        client.images.generate(prompt="a red circle", size="64x64", stream=True, partial_images=3, extra_body=FAST)
    )
    assert [event.type for event in events] == ["image_generation.partial_image", "image_generation.completed"]


def test_n_images_stream_one_completed_event_each_with_usage_adding_up(client: openai.OpenAI) -> None:
    request = {"prompt": "a red circle", "model": "gpt-image-1", "n": 2, "size": "64x64"}
    events = list(client.images.generate(**request, stream=True, partial_images=1, extra_body={"seed": 40, **STEPS}))
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
        "image_generation.completed",
    ]
    plain = client.images.generate(**request, extra_body={"seed": 40, **STEPS})
    streamed = [base64.b64decode(event.b64_json) for event in events[1:]]
    assert streamed == [base64.b64decode(item.b64_json) for item in plain.data]
    usages = [event.usage for event in events[1:]]
    assert sum(u.output_tokens for u in usages) == plain.usage.output_tokens
    assert sum(u.input_tokens for u in usages) == plain.usage.input_tokens
    assert sum(u.total_tokens for u in usages) == plain.usage.total_tokens
    assert usages[1].input_tokens == 0


def test_edit_streams_image_edit_events_async(async_client: openai.AsyncOpenAI) -> None:
    async def collect() -> list:
        async with async_client:
            stream = await async_client.images.edit(
                image=("photo.png", PICTURE_PNG, "image/png"),
                mask=("mask.png", MASK_PNG, "image/png"),
                prompt="a blue square",
                stream=True,
                partial_images=2,
                extra_body=STEPS,
            )
            return [event async for event in stream]

    events = asyncio.run(collect())
    assert [event.type for event in events] == [
        "image_edit.partial_image",
        "image_edit.partial_image",
        "image_edit.completed",
    ]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    assert all(decoded(event.b64_json).size == (WIDTH, HEIGHT) for event in events)
    final = np.asarray(decoded(events[-1].b64_json).convert("RGB"))
    keep = kept_area()
    np.testing.assert_array_equal(final[keep], np.asarray(picture())[keep])
    assert events[-1].usage.input_tokens_details.image_tokens > 0


def test_the_wire_format_is_server_sent_events(api_server: LiveServer) -> None:
    body = {"prompt": "a red circle", "size": "64x64", "stream": True, "partial_images": 1, **STEPS}
    response = httpx.post(api_server.api_url + "/images/generations", json=body, timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-request-id"]
    raw_events = response.text.split("\n\n")
    assert raw_events[-1] == ""
    parsed = []
    for raw in raw_events[:-1]:
        event_line, data_line = raw.split("\n")
        name = event_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        parsed.append(data)
    assert [data["type"] for data in parsed] == ["image_generation.partial_image", "image_generation.completed"]
    assert set(parsed[0]) == {
        "type",
        "b64_json",
        "created_at",
        "size",
        "quality",
        "background",
        "output_format",
        "partial_image_index",
    }
    assert set(parsed[1]) == {
        "type",
        "b64_json",
        "created_at",
        "size",
        "quality",
        "background",
        "output_format",
        "usage",
    }


def test_streaming_as_url_is_refused_before_the_stream_starts(api_server: LiveServer) -> None:
    body = {"prompt": "a red circle", "stream": True, "response_format": "url", **FAST}
    response = httpx.post(api_server.api_url + "/images/generations", json=body, timeout=60)
    error = assert_envelope(response, 400, param="response_format", code="unsupported_value")
    assert error["message"].startswith("Streamed images are always sent as b64_json")


def test_a_client_that_leaves_cancels_its_job(api_server: LiveServer) -> None:
    before = api_server.model_stats(TINY)
    body = {"prompt": "a red circle", "size": "64x64", "stream": True, "partial_images": 3, **SLOW}
    with httpx.stream("POST", api_server.api_url + "/images/generations", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "event: image_generation.partial_image":
                break  # leave after the first partial image (decoder step 50 of 200)
    stats = api_server.wait_for(
        lambda ready: (
            ready["models"][TINY]["cancelled"] > before["cancelled"] and ready["models"][TINY]["running"] == 0
        ),
        timeout=30,
    )["models"][TINY]
    assert stats["cancelled"] == before["cancelled"] + 1
    assert stats["completed"] == before["completed"]


class FailsAfterFirstPreview(OneJobAtATime):
    """A real backend that breaks right after its first preview, as a GPU fault would mid-job."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.info = inner.info

    def count_tokens(self, prompt: str) -> int:
        return self.inner.count_tokens(prompt)

    def run(self, job, control):
        emit = control.on_preview

        def emit_then_fail(index: int, images: list) -> None:
            emit(index, images)
            raise RuntimeError("device fault")

        return self.inner.run(job, replace(control, on_preview=emit_then_fail))


@pytest.fixture(scope="module")
def failing_server(tiny_model_dirs: dict[str, Path]) -> Iterator[LiveServer]:
    from pipelines.loader import load_backend

    def loader(*args, **kwargs):
        return FailsAfterFirstPreview(load_backend(*args, **kwargs))

    spec = ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"])
    with running_server(Settings(models=(spec,)), loader=loader) as live:
        yield live


def test_an_error_after_the_stream_started_is_an_error_event(failing_server: LiveServer) -> None:
    body = {"prompt": "a red circle", "size": "64x64", "stream": True, "partial_images": 2, **STEPS}
    response = httpx.post(failing_server.api_url + "/images/generations", json=body, timeout=60)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    names = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
    assert names == ["image_generation.partial_image", "error"]
    error = json.loads(response.text.rstrip("\n").splitlines()[-1].removeprefix("data: "))
    assert error == {
        "type": "error",
        "error": {
            "message": "The server had an error while processing your request. "
            f"Quote request id {request_id} when reporting it.",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    }
    assert failing_server.model_stats(TINY)["failed"] == 1


def test_the_sdk_raises_on_the_error_event(failing_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=failing_server.api_url, api_key="k", max_retries=0)
    stream = client.images.generate(
        prompt="a red circle", size="64x64", stream=True, partial_images=2, extra_body=STEPS
    )
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image"
    with pytest.raises(openai.APIError) as info:
        next(iter(stream))
    assert info.value.type == "server_error"
    assert info.value.message.startswith("The server had an error while processing your request.")
