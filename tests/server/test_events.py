"""server/sse.py: exact event bytes, and what the openai SDK's stream reader makes of them."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
from openai import OpenAI, Stream
from openai.types import ImageEditStreamEvent, ImageGenStreamEvent

from server.http.errors import APIError
from server.protocol.events import ImageEventFields, completed_event, encode_event, error_event, partial_image_event

FIELDS = ImageEventFields(size="64x64", quality="low", background="opaque", output_format="png")
USAGE = {
    "total_tokens": 12,
    "input_tokens": 7,
    "output_tokens": 5,
    "input_tokens_details": {"text_tokens": 7, "image_tokens": 0},
}


def parse(event: bytes) -> tuple[str, dict]:
    text = event.decode()
    assert text.endswith("\n\n")
    event_line, data_line = text[:-2].split("\n")
    assert event_line.startswith("event: ") and data_line.startswith("data: ")
    return event_line[len("event: ") :], json.loads(data_line[len("data: ") :])


def test_encode_event_is_one_event_line_and_one_data_line() -> None:
    assert encode_event("x", {"type": "x", "text": "a\nb"}) == b'event: x\ndata: {"type":"x","text":"a\\nb"}\n\n'


def test_partial_image_event_fields() -> None:
    name, data = parse(partial_image_event("image_generation", FIELDS, "QUJD", 2))
    assert name == "image_generation.partial_image"
    created_at = data.pop("created_at")
    assert isinstance(created_at, int) and created_at > 1_700_000_000
    assert data == {
        "type": "image_generation.partial_image",
        "b64_json": "QUJD",
        "size": "64x64",
        "quality": "low",
        "background": "opaque",
        "output_format": "png",
        "partial_image_index": 2,
    }


def test_completed_event_fields() -> None:
    name, data = parse(completed_event("image_edit", FIELDS, "QUJD", USAGE))
    assert name == "image_edit.completed"
    del data["created_at"]
    assert data == {
        "type": "image_edit.completed",
        "b64_json": "QUJD",
        "size": "64x64",
        "quality": "low",
        "background": "opaque",
        "output_format": "png",
        "usage": USAGE,
    }


def test_error_event_fields() -> None:
    name, data = parse(error_event(APIError(500, "boom", type="server_error", param=None, code="engine_failed")))
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"message": "boom", "type": "server_error", "param": None, "code": "engine_failed"},
    }


def sdk_stream(body: bytes, cast_to: type) -> Stream:
    client = OpenAI(api_key="test", base_url="http://easel.invalid/v1")
    request = httpx2.Request("POST", "http://easel.invalid/v1/images/generations")
    response = httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body, request=request)
    return Stream(cast_to=cast_to, response=response, client=client)


def test_the_sdk_reads_generation_events_as_typed_objects() -> None:
    body = (
        partial_image_event("image_generation", FIELDS, "UA==", 0)
        + partial_image_event("image_generation", FIELDS, "UQ==", 1)
        + completed_event("image_generation", FIELDS, "Rg==", USAGE)
    )
    events = list(sdk_stream(body, ImageGenStreamEvent))
    assert [type(e).__name__ for e in events] == [
        "ImageGenPartialImageEvent",
        "ImageGenPartialImageEvent",
        "ImageGenCompletedEvent",
    ]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    assert events[2].usage.input_tokens_details.text_tokens == 7
    assert events[2].b64_json == "Rg=="


def test_the_sdk_reads_edit_events_as_typed_objects() -> None:
    body = partial_image_event("image_edit", FIELDS, "UA==", 0) + completed_event("image_edit", FIELDS, "Rg==", USAGE)
    events = list(sdk_stream(body, ImageEditStreamEvent))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]


def test_the_sdk_raises_api_error_with_our_fields_on_an_error_event() -> None:
    error = APIError(503, "The model stopped: out of memory.", type="server_error", param=None, code="engine_failed")
    body = partial_image_event("image_generation", FIELDS, "UA==", 0) + error_event(error)
    stream = sdk_stream(body, ImageGenStreamEvent)
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image"
    with pytest.raises(openai.APIError) as info:
        list(stream)
    assert info.value.message == "The model stopped: out of memory."
    assert info.value.type == "server_error"
    assert info.value.code == "engine_failed"
    assert info.value.param is None
