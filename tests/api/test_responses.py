"""POST /v1/responses with the image_generation tool, through the openai SDK as Home Assistant's AI Task calls it."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from server.protocol.openapi import openapi_document
from tests.conftest import KARLO, SLOW, TINY, LiveServer, assert_envelope

SIZE = 64
FAST_TOOL = {"type": "image_generation", "size": f"{SIZE}x{SIZE}", "prior_steps": 2, "decoder_steps": 2}
HOLE = (16, 16, 48, 48)  # the area an edit repaints
TEXT = {"type": "input_text", "text": "a blue square"}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def mask_url() -> str:
    mask = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), HOLE)
    return data_url(png(mask))


def holed_photo() -> Image.Image:
    """An edit input that works without a mask: its fully transparent square marks the area to repaint."""
    photo = Image.new("RGBA", (SIZE, SIZE), (30, 160, 90, 255))
    photo.paste((0, 0, 0, 0), HOLE)
    return photo


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def kept(array: np.ndarray) -> np.ndarray:
    """The pixels outside HOLE, which an edit keeps."""
    keep = np.ones(array.shape[:2], dtype=bool)
    left, top, right, bottom = HOLE
    keep[top:bottom, left:right] = False
    return array[keep]


def home_assistant_request(**tool_options) -> dict:
    """What Home Assistant's openai_conversation AI Task sends to generate an image (its chat model, its
    instructions as a developer message, the task as the user's, the image tool forced); Easel's step
    extensions keep the test quick."""
    return {
        "model": "gpt-4o-mini",
        "input": [
            {"type": "message", "role": "developer", "content": "You are a voice assistant for Home Assistant."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a red circle"}]},
        ],
        "tools": [{"type": "image_generation", "model": "gpt-image-1", "output_format": "png", **tool_options}],
        "tool_choice": {"type": "image_generation"},
        "max_output_tokens": 150,
        "user": "01J0CONVERSATION",
        "store": True,
        "temperature": 1.0,
        "top_p": 1.0,
    }


def test_home_assistant_ai_task_gets_its_image(client: openai.OpenAI) -> None:
    response = client.responses.create(**home_assistant_request(size="96x64", prior_steps=2, decoder_steps=2))
    assert response.object == "response" and response.status == "completed" and response.id.startswith("resp_")
    assert response.model == "gpt-4o-mini"  # the name the client sent, reported back
    assert response.tool_choice.type == "image_generation" and response.tools[0].type == "image_generation"
    assert response.temperature == 1.0 and response.max_output_tokens == 150 and response.user == "01J0CONVERSATION"
    [call] = response.output
    assert call.type == "image_generation_call" and call.status == "completed" and call.id.startswith("ig_")
    assert (call.size, call.output_format, call.background, call.quality) == ("96x64", "png", "opaque", "medium")
    assert call.revised_prompt == "a red circle"  # the user's text only: the developer message instructs an LLM
    image = Image.open(io.BytesIO(base64.b64decode(call.result)))
    assert image.format == "PNG" and image.size == (96, 64)
    images_api = client.images.generate(
        model="gpt-image-1", prompt="a red circle", size="96x64", extra_body={"prior_steps": 2, "decoder_steps": 2}
    )
    usage, counted = response.usage, images_api.usage  # the Images API's counts for the same job
    assert usage is not None and counted is not None and response.tool_usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (counted.input_tokens, counted.output_tokens)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.tool_usage.image_gen.output_tokens == counted.output_tokens


def test_home_assistant_streams_and_reads_the_done_item(client: openai.OpenAI) -> None:
    stream = client.responses.create(**home_assistant_request(**FAST_TOOL | {"type": "image_generation"}), stream=True)
    events = list(stream)
    done = [e for e in events if e.type == "response.output_item.done"]
    assert len(done) == 1 and done[0].item.type == "image_generation_call"
    assert Image.open(io.BytesIO(base64.b64decode(done[0].item.result))).size == (SIZE, SIZE)
    assert events[-1].type == "response.completed" and events[-1].response.output[0].result == done[0].item.result


def test_the_stream_sends_openais_events_in_order_with_real_partial_images(client: openai.OpenAI) -> None:
    tool = FAST_TOOL | {"decoder_steps": 6, "partial_images": 2, "output_format": "webp"}
    with client.responses.stream(model="gpt-5", input="a red circle", tools=[tool]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.completed",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    call_id = final.output[0].id
    assert events[2].item.id == call_id and events[2].item.status == "in_progress"
    partials = [e for e in events if e.type.endswith("partial_image")]
    assert [p.partial_image_index for p in partials] == [0, 1] and all(p.item_id == call_id for p in partials)
    previews = [Image.open(io.BytesIO(base64.b64decode(p.partial_image_b64))) for p in partials]
    assert all(p.format == "WEBP" and p.size == (SIZE, SIZE) for p in previews)
    final_pixels = pixels(final.output[0].result)
    assert not np.array_equal(np.asarray(previews[0].convert("RGB")), final_pixels)  # a preview, not the result
    assert events[0].response.status == "in_progress" and final.status == "completed"


def test_the_async_client_streams_the_same_image_as_the_json_answer(
    client: openai.OpenAI, async_client: openai.AsyncOpenAI
) -> None:
    tool = FAST_TOOL | {"seed": 11, "partial_images": 1, "decoder_steps": 3}

    async def streamed() -> str:
        async with async_client, async_client.responses.stream(model="m", input="a red circle", tools=[tool]) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_response()
        return final.output[0].result

    answered = client.responses.create(model="m", input="a red circle", tools=[tool | {"partial_images": 0}])
    assert asyncio.run(streamed()) == answered.output[0].result  # same seed: the same bytes, streamed or not


def test_an_input_image_with_a_transparent_area_is_edited(client: openai.OpenAI) -> None:
    photo = holed_photo()
    content = [
        {"type": "input_text", "text": "a blue square"},
        {"type": "input_image", "image_url": data_url(png(photo)), "detail": "auto"},
    ]
    response = client.responses.create(
        model="gpt-4o-mini", input=[{"role": "user", "content": content}], tools=[FAST_TOOL | {"size": "auto"}]
    )
    call = response.output[0]
    assert call.action == "edit" and call.size == f"{SIZE}x{SIZE}"
    result = pixels(call.result)
    np.testing.assert_array_equal(kept(result), kept(np.asarray(photo.convert("RGB"))))


def test_previous_response_id_edits_the_last_image(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4o-mini", input="a red circle", tools=[FAST_TOOL])
    tool = FAST_TOOL | {"input_image_mask": {"image_url": mask_url()}}
    second = client.responses.create(
        model="gpt-4o-mini", input="now make it blue", tools=[tool], previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.output[0].action == "edit"
    assert second.output[0].revised_prompt == "now make it blue"
    before, after = pixels(first.output[0].result), pixels(second.output[0].result)
    np.testing.assert_array_equal(kept(after), kept(before))  # the earlier image, repainted only in the mask
    assert not np.array_equal(after, before)
    assert client.responses.retrieve(second.id).output[0].result == second.output[0].result


def test_a_client_without_state_sends_the_earlier_call_back(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="a red circle", tools=[FAST_TOOL], store=False)
    history = [
        {"role": "user", "content": "a red circle"},
        {
            "type": "image_generation_call",
            "id": first.output[0].id,
            "status": "completed",
            "result": first.output[0].result,
        },
        {"role": "user", "content": "make it blue"},
    ]
    tool = FAST_TOOL | {"input_image_mask": {"image_url": mask_url()}}
    second = client.responses.create(model="m", input=history, tools=[tool], store=False)
    assert second.output[0].revised_prompt == "make it blue"  # the text after the earlier call
    np.testing.assert_array_equal(kept(pixels(second.output[0].result)), kept(pixels(first.output[0].result)))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)  # store: false keeps nothing


def test_an_opaque_photo_without_a_mask_is_edited_whole(client: openai.OpenAI) -> None:
    """Home Assistant's AI Task with an attached photo: no mask, no transparent area, as gpt-image models take it."""
    photo = Image.new("RGB", (SIZE, SIZE), (30, 160, 90))
    content = [
        {"type": "input_text", "text": "make it night"},
        {"type": "input_image", "image_url": data_url(png(photo)), "detail": "auto"},
    ]
    response = client.responses.create(
        model="gpt-4o-mini", input=[{"role": "user", "content": content}], tools=[FAST_TOOL]
    )
    call = response.output[0]
    assert call.action == "edit" and call.size == f"{SIZE}x{SIZE}"
    assert pixels(call.result).shape == (SIZE, SIZE, 3)


def test_several_input_images_follow_the_images_apis_edit_rule(api_server: LiveServer) -> None:
    image = {"type": "input_image", "image_url": data_url(png(holed_photo()))}
    body = {"model": "m", "tools": [FAST_TOOL]}
    content = [{"type": "input_text", "text": "combine them"}, image, image]
    response = httpx.post(
        api_server.api_url + "/responses", json={**body, "input": [{"role": "user", "content": content}]}, timeout=60
    )
    assert response.status_code == 200 and response.json()["output"][0]["action"] == "edit"
    content = [{"type": "input_text", "text": "combine them"}, *[image] * 17]
    response = httpx.post(
        api_server.api_url + "/responses", json={**body, "input": [{"role": "user", "content": content}]}, timeout=60
    )
    error = assert_envelope(response, 400, param="input")
    assert "at most 16 images, but 17 were sent" in error["message"]


def test_a_shutting_down_server_answers_503(api_server: LiveServer) -> None:
    body = {"model": "m", "input": "a red circle", "tools": [FAST_TOOL]}
    api_server.state.images.draining = True
    try:
        response = httpx.post(api_server.api_url + "/responses", json=body, timeout=30)
    finally:
        api_server.state.images.draining = False
    assert_envelope(response, 503, code="shutting_down")
    assert response.headers["retry-after"] == "2"


def test_unknown_previous_response_is_openais_404(api_server: LiveServer) -> None:
    body = {"model": "m", "input": "more", "tools": [FAST_TOOL], "previous_response_id": "resp_unknown"}
    response = httpx.post(api_server.api_url + "/responses", json=body, timeout=30)
    error = assert_envelope(response, 404, param="previous_response_id", code="previous_response_not_found")
    assert "resp_unknown" in error["message"]
    assert_envelope(httpx.get(api_server.api_url + "/responses/resp_unknown", timeout=10), 404)


def test_which_model_draws(client: openai.OpenAI) -> None:
    """The tool's model when it names a model of this server; else the top-level one when it does; else the default."""

    def result(model: str, tool_model: str | None = None) -> str:
        tool = FAST_TOOL | {"seed": 5} | ({"model": tool_model} if tool_model else {})
        response = client.responses.create(model=model, input="a red circle", tools=[tool])
        assert response.model == model
        return response.output[0].result

    default = result("gpt-4o-mini")
    assert result("gpt-4o-mini", "gpt-image-1") == default == result(TINY)
    karlo = result(KARLO)
    assert karlo != default
    assert result("gpt-4o-mini", KARLO) == karlo == result(KARLO, "gpt-image-1")
    assert result(KARLO, TINY) == default


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools[0].type", "unsupported_tool"),
        ({"tools": [FAST_TOOL, {"type": "web_search"}]}, "tools[1].type", "unsupported_tool"),
        ({"tools": []}, "tools", "unsupported_tool"),
        ({"tool_choice": "none"}, "tool_choice", "unsupported_tool"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice", "unsupported_tool"),
        ({"tools": [FAST_TOOL | {"n": 2}]}, "tools[0].n", "unknown_parameter"),
        ({"tools": [FAST_TOOL | {"size": "huge"}]}, "tools[0].size", "invalid_value"),
        ({"tools": [FAST_TOOL | {"quality": "ultra"}]}, "tools[0].quality", "invalid_value"),
        ({"tools": [FAST_TOOL | {"background": "transparent"}]}, "tools[0].background", "unsupported_value"),
        ({"tools": [FAST_TOOL | {"partial_images": 2}]}, "tools[0].partial_images", "invalid_value"),
        ({"tools": [FAST_TOOL | {"output_compression": 50}]}, "tools[0].output_compression", "invalid_value"),
        ({"tools": [FAST_TOOL | {"input_fidelity": "max"}]}, "tools[0].input_fidelity", "invalid_value"),
        ({"tools": [{"type": "image_generation", "steps": 1}]}, "tools[0].steps", "invalid_value"),
        ({"tools": [FAST_TOOL | {"steps": 3}]}, "tools[0].steps", "duplicate_parameter"),
        ({"tools": [FAST_TOOL | {"action": "edit"}]}, "tools[0].action", "invalid_value"),
        ({"tools": [FAST_TOOL | {"model": "no-such-model"}]}, "tools[0].model", "model_not_found"),
        ({"tools": [FAST_TOOL | {"output_format": "gif"}], "stream": True}, "stream", "unsupported_value"),
        ({"input": ""}, "input", "invalid_value"),
        ({"input": [{"role": "system", "content": "be brief"}]}, "input", "invalid_value"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
            "input[0].type",
            "unsupported_value",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
            "input[0].content[0]",
            "unsupported_value",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}, TEXT]}]},
            "input[0].content[0]",
            "file_not_found",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f", "image_url": "x"}, TEXT]}]},
            "input[0].content[0]",
            None,
        ),
        ({"input": "a\x00b"}, "input", "invalid_value"),
        ({"background": True}, "background", "unsupported_value"),
        ({"temperature": 3}, "temperature", "invalid_value"),
        ({"conversation": "conv_1"}, "conversation", "unknown_parameter"),
        ({"model": ""}, "model", "invalid_value"),
    ],
)
def test_refusals_name_the_parameter(api_server: LiveServer, change: dict, param: str, code: str | None) -> None:
    body = {"model": "gpt-4o-mini", "input": "a red circle", "tools": [FAST_TOOL]} | change
    response = httpx.post(api_server.api_url + "/responses", json=body, timeout=30)
    error = assert_envelope(response, 400 if code != "model_not_found" else 404, param=param, code=code)
    if code == "unsupported_tool":
        assert error["message"].startswith("Easel serves the image_generation tool only")


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "function_call_output", "call_id": "c", "output": "x"}, "input[0].type"),
        ({"type": "reasoning", "summary": []}, "input[0].type"),
        ({"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}, "input[0].content[0]"),
    ],
)
def test_input_only_a_language_model_reads_is_refused_as_such(api_server: LiveServer, item: dict, param: str) -> None:
    body = {"model": "m", "input": [item], "tools": [FAST_TOOL]}
    response = httpx.post(api_server.api_url + "/responses", json=body, timeout=30)
    error = assert_envelope(response, 400, param=param, code="unsupported_value")
    assert error["message"].startswith("Easel serves the image_generation tool only")


@pytest.mark.parametrize(
    "choice",
    [
        "auto",
        "required",
        {"type": "image_generation"},
        {"type": "allowed_tools", "mode": "required", "tools": [{"type": "image_generation"}]},
    ],
)
def test_every_tool_choice_that_allows_the_image_tool_is_served(client: openai.OpenAI, choice) -> None:
    response = client.responses.create(model="m", input="a red circle", tools=[FAST_TOOL], tool_choice=choice)
    assert response.output[0].status == "completed"
    assert response.to_dict()["tool_choice"] == choice  # echoed as sent


def test_the_sdk_raises_bad_request_for_a_function_tool(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(
            model="gpt-4o-mini",
            input="what is the weather?",
            tools=[{"type": "function", "name": "weather", "parameters": {}, "strict": False}],
        )
    assert raised.value.param == "tools[0].type"  # type: ignore[attr-defined]


def test_a_client_that_leaves_the_stream_cancels_its_job(api_server: LiveServer) -> None:
    before = api_server.model_stats(TINY)
    tool = FAST_TOOL | SLOW | {"partial_images": 3}
    body = {"model": "m", "input": "a red circle", "tools": [tool], "stream": True}
    with httpx.stream("POST", api_server.api_url + "/responses", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "event: response.image_generation_call.partial_image":
                break
    stats = api_server.wait_for(
        lambda ready: (
            ready["models"][TINY]["cancelled"] > before["cancelled"] and ready["models"][TINY]["running"] == 0
        ),
        timeout=30,
    )["models"][TINY]
    assert stats["completed"] == before["completed"]


def test_openapi_documents_responses() -> None:
    paths = openapi_document()["paths"]
    assert paths["/v1/responses"]["post"]["operationId"] == "createResponse"
    assert paths["/v1/responses/{response_id}"]["get"]["operationId"] == "getResponse"
