"""Edits as today's apps send them: an opaque photo and an instruction, no mask, often several images.

Through the openai SDK (multipart), raw multipart shaped like Open WebUI's, LibreChat's, n8n's, Dify's and
LobeHub's requests, and the JSON form; the errors they can meet; and, with the shipped easel-mini, whether an
edit keeps the picture and takes the instruction.
"""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.api.test_edits import HEIGHT, PICTURE_PNG, WIDTH, data_url, decoded, encode, picture, post_multipart
from tests.conftest import FAST, KARLO, TINY, LiveServer, assert_envelope

JPEG = encode(picture(), "JPEG", quality=90)
JPEG_BASE64 = base64.b64encode(JPEG).decode()
OTHER_PNG = encode(Image.new("RGB", (40, 30), (250, 230, 40)))  # a reference of another size and colour


def b64_sizes(data: list) -> list[tuple[int, int]]:
    return [decoded(item.b64_json if hasattr(item, "b64_json") else item["b64_json"]).size for item in data]


# -- the openai SDK ------------------------------------------------------------------------------


@pytest.mark.parametrize("fidelity", [None, "low", "high"])
def test_sdk_edit_of_an_opaque_png_without_a_mask(client: openai.OpenAI, fidelity: str | None) -> None:
    extra = {} if fidelity is None else {"input_fidelity": fidelity}
    result = client.images.edit(
        image=("photo.png", PICTURE_PNG, "image/png"),
        prompt="make it night",
        response_format="b64_json",
        extra_body=FAST,
        **extra,  # type: ignore[arg-type]
    )
    assert b64_sizes(result.data) == [(WIDTH, HEIGHT)]


def test_sdk_edit_of_a_jpeg(client: openai.OpenAI) -> None:
    result = client.images.edit(
        image=("photo.jpg", JPEG, "image/jpeg"), prompt="add a hat", n=2, response_format="b64_json", extra_body=FAST
    )
    assert b64_sizes(result.data) == [(WIDTH, HEIGHT)] * 2


@pytest.mark.parametrize("fidelity", ["low", "high"])
def test_sdk_edit_with_two_images(client: openai.OpenAI, fidelity: str) -> None:
    result = client.images.edit(
        image=[("a.png", PICTURE_PNG, "image/png"), ("b.png", OTHER_PNG, "image/png")],
        prompt="combine them",
        n=2,
        input_fidelity=fidelity,  # type: ignore[arg-type]
        response_format="b64_json",
        extra_body={**FAST, "seed": 11},
    )
    assert b64_sizes(result.data) == [(WIDTH, HEIGHT)] * 2  # the first image's size
    assert [item.seed for item in result.data] == [11, 12]  # type: ignore[attr-defined]


def test_same_seed_same_bytes_and_the_extensions_change_the_result(client: openai.OpenAI) -> None:
    def edit(**extra) -> bytes:
        result = client.images.edit(
            image=[("a.png", PICTURE_PNG, "image/png"), ("b.png", OTHER_PNG, "image/png")],
            prompt="make it night",
            response_format="b64_json",
            extra_body={"prior_steps": 2, "decoder_steps": 4, "seed": 5, **extra},
        )
        return base64.b64decode(result.data[0].b64_json or "")

    plain = edit()
    assert edit() == plain
    assert edit(strength=0.5) != plain
    assert edit(input_image_weight=1.0) != edit(input_image_weight=1.0, image_weights=[1, 3])


def test_whole_image_edits_stream_partial_images(async_client: openai.AsyncOpenAI) -> None:
    async def collect() -> list:
        async with async_client:
            stream = await async_client.images.edit(
                image=("photo.png", PICTURE_PNG, "image/png"),
                prompt="make it night",
                stream=True,
                partial_images=1,
                input_fidelity="low",
                extra_body={"prior_steps": 2, "decoder_steps": 4, "strength": 1.0},
            )
            return [event async for event in stream]

    events = asyncio.run(collect())
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert all(decoded(event.b64_json).size == (WIDTH, HEIGHT) for event in events)


# -- raw requests, shaped as the apps send them ---------------------------------------------------

APP_REQUESTS = {
    # Open WebUI: image[] parts, model, prompt, n, size.
    "open-webui": ({"model": "gpt-image-1", "n": "1", "size": "96x64"}, ["image[]", "image[]"]),
    # LibreChat's image edit tool: several image[] parts, size and quality auto.
    "librechat": ({"model": "gpt-image-1", "size": "auto", "quality": "auto"}, ["image[]", "image[]", "image[]"]),
    # n8n, Dify, LobeHub: one part per attachment under image, with a response format.
    "n8n": ({"model": "gpt-image-1", "n": "1", "response_format": "b64_json"}, ["image", "image"]),
    "dify": ({"model": "dall-e-2", "n": "1", "size": "256x256", "response_format": "b64_json"}, ["image"]),
    "lobehub": ({"model": "gpt-image-1", "input_fidelity": "high"}, ["image[]", "image[]"]),
}


@pytest.mark.parametrize("app", list(APP_REQUESTS))
def test_app_shaped_multipart_edits(api_server: LiveServer, app: str) -> None:
    data, parts = APP_REQUESTS[app]
    contents = [
        ("photo.png", PICTURE_PNG, "image/png"),
        ("photo.jpg", JPEG, "image/jpeg"),
        ("o.png", OTHER_PNG, "image/png"),
    ]
    files = [(part, contents[i]) for i, part in enumerate(parts)]
    response = post_multipart(api_server, files, {**data, "prompt": "make it night"})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = (256, 256) if data.get("size") == "256x256" else (WIDTH, HEIGHT)
    if "b64_json" in body["data"][0]:
        assert b64_sizes(body["data"]) == [expected]
    else:
        image = Image.open(io.BytesIO(httpx.get(body["data"][0]["url"], timeout=30).content))
        assert image.size == expected


@pytest.mark.parametrize("fidelity", [None, "high"])
def test_json_edit_with_several_images(api_server: LiveServer, fidelity: str | None) -> None:
    body = {
        "images": [
            {"image_url": data_url(PICTURE_PNG)},
            {"image_url": "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()},
        ],
        "prompt": "make it night",
        "image_weights": [2, 1],
        **FAST,
    }
    if fidelity is not None:
        body["input_fidelity"] = fidelity
    response = httpx.post(api_server.api_url + "/images/edits", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1


def test_models_list_the_edit_modes(api_server: LiveServer) -> None:
    models = {model["id"]: model for model in httpx.get(api_server.api_url + "/models", timeout=30).json()["data"]}
    assert models[TINY]["capabilities"]["edit_modes"] == ["masked", "whole_image"]
    assert models[KARLO]["capabilities"]["edit_modes"] == ["whole_image"]  # Karlo repaints the whole image only


def test_openapi_documents_the_edit_fields(api_server: LiveServer) -> None:
    schemas = httpx.get(api_server.url + "/openapi.json", timeout=30).json()["components"]["schemas"]
    form, body = schemas["CreateImageEditRequest"]["properties"], schemas["EditImageBodyJsonParam"]["properties"]
    assert form["image"]["anyOf"][1]["maxItems"] == 16 and body["images"]["maxItems"] == 16
    for properties in (form, body):
        assert properties["strength"]["x-easel-extension"] is True
        assert properties["strength"]["type"] == ["number", "null"]
        assert properties["input_image_weight"]["maximum"] == 1.0
        assert properties["image_weights"]["type"] == ["array", "null"]
        assert properties["image_weights"]["items"] == {"type": "number", "minimum": 0.0, "maximum": 100.0}


# -- errors -------------------------------------------------------------------------------------


def test_an_unreadable_second_image_is_named(api_server: LiveServer) -> None:
    files = [("image[]", ("a.png", PICTURE_PNG, "image/png")), ("image[]", ("b.png", b"not an image", "image/png"))]
    error = assert_envelope(post_multipart(api_server, files), 400, param="image")
    assert error["message"] == (
        "Image 2 of 2: The 'image' file is not a recognised image; upload a PNG, JPEG or WebP image."
    )


def test_an_unreadable_second_json_image_is_named(api_server: LiveServer) -> None:
    body = {"images": [{"image_url": data_url(PICTURE_PNG)}, {"image_url": "data:image/png;base64,@@@"}], "prompt": "x"}
    error = assert_envelope(
        httpx.post(api_server.api_url + "/images/edits", json=body, timeout=60), 400, param="images"
    )
    assert error["message"] == "Image 2 of 2: 'images' does not hold valid base64 data."


@pytest.mark.parametrize(
    "fields, param, message",
    [
        ({"strength": "0"}, "strength", "Invalid 'strength': expected a number above 0 and at most 1"),
        ({"strength": "1.5"}, "strength", "Invalid 'strength': 1.5 is out of range; expected 0.0 to 1.0."),
        ({"input_image_weight": "-0.1"}, "input_image_weight", "Invalid 'input_image_weight': -0.1 is out of range"),
        ({"image_weights": "1"}, "image_weights", "'image_weights' has 1 weights for 2 images: send one per image."),
        ({"image_weights": "1,-1"}, "image_weights.1", "Invalid 'image_weights.1': -1.0 is out of range"),
        ({"image_weights": "0,0"}, "image_weights", "'image_weights' must not all be 0."),
        ({"image_weights": "1,heavy"}, "image_weights.1", "Invalid type for 'image_weights.1': expected a number"),
    ],
)
def test_bad_strength_and_weights_are_named(api_server: LiveServer, fields: dict, param: str, message: str) -> None:
    files = [("image[]", ("a.png", PICTURE_PNG, "image/png")), ("image[]", ("b.png", OTHER_PNG, "image/png"))]
    error = assert_envelope(post_multipart(api_server, files, fields), 400, param=param)
    assert error["message"].startswith(message)


def test_strength_is_refused_for_a_masked_edit(api_server: LiveServer) -> None:
    from tests.api.test_edits import MASK_PNG

    files = [("image", ("a.png", PICTURE_PNG, "image/png")), ("mask", ("m.png", MASK_PNG, "image/png"))]
    error = assert_envelope(post_multipart(api_server, files, {"strength": "0.5"}), 400, param="strength")
    assert error["message"].startswith("'strength' applies to whole-image edits only")


def test_sdk_list_fields_are_read(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(
            image=[("a.png", PICTURE_PNG, "image/png"), ("b.png", OTHER_PNG, "image/png")],
            prompt="x",
            extra_body={**FAST, "image_weights": [1, 2, 3]},
        )
    assert info.value.param == "image_weights"
    assert info.value.body["message"] == "'image_weights' has 3 weights for 2 images: send one per image."


# -- easel-mini: does the edit keep the picture and take the instruction? -----------------------------


def test_easel_mini_recolours_an_object_in_place(easel_mini: LiveServer) -> None:
    from pipelines.lab.scenes import Scene, SceneObject, render
    from pipelines.lab.scorer import score_image

    before = Scene((SceneObject("red", "circle", "large", "top left"),), "white")
    after = Scene((SceneObject("blue", "circle", "large", "top left"),), "white")
    client = openai.OpenAI(base_url=easel_mini.api_url, api_key="x", max_retries=0)
    result = client.images.edit(
        image=("scene.png", encode(render(before, 256)), "image/png"),
        prompt="a blue circle in the top left corner on a white background",
        n=4,
        input_fidelity="high",
        response_format="b64_json",
        extra_body={"seed": 0},
    )
    scores = [score_image(decoded(item.b64_json or "").convert("RGB"), after).objects[0] for item in result.data]
    assert sum(score.color and score.position for score in scores) >= 3
