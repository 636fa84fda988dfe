"""Whole-image edits on Karlo: the prompt's prior sample mixed with the input images' CLIP embedding, decoded
from noise. Through the openai SDK, against the tiny random-weight Karlo."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from PIL import Image

from server.settings.model_specs import ModelSpec
from tests.api.test_edits import MASK_PNG, PICTURE_PNG, decoded, encode
from tests.conftest import FAST, KARLO, TINY, LiveServer, running_server, tiny_settings

NATIVE = (64, 64)  # the tiny Karlo's fixed output size
OTHER_PNG = encode(Image.new("RGB", (40, 30), (250, 230, 40)))
TRANSPARENT_PNG = encode(Image.new("RGBA", (40, 30), (0, 0, 0, 0)))


def edit(client: openai.OpenAI, images: list, **kwargs) -> list[bytes]:
    extra_body = {**FAST, **kwargs.pop("extra_body", {})}
    result = client.images.edit(
        model=KARLO, image=images, prompt="make it night", response_format="b64_json", extra_body=extra_body, **kwargs
    )
    return [decoded(item.b64_json).tobytes() for item in result.data if item.b64_json is not None]


def test_sdk_edit_of_an_opaque_png(client: openai.OpenAI) -> None:
    result = client.images.edit(
        model=KARLO,
        image=("photo.png", PICTURE_PNG, "image/png"),
        prompt="make it night",
        n=2,
        size="256x256",
        response_format="b64_json",
        extra_body=FAST,
    )
    assert [decoded(item.b64_json or "").size for item in result.data] == [(256, 256), (256, 256)]


def test_same_seed_same_bytes_and_the_mix_steers_it(client: openai.OpenAI) -> None:
    photo = [("photo.png", PICTURE_PNG, "image/png")]
    first = edit(client, photo, extra_body={"seed": 5})
    assert first == edit(client, photo, extra_body={"seed": 5})
    assert edit(client, photo, extra_body={"seed": 5, "input_image_weight": 0.9}) != first
    assert edit(client, photo, extra_body={"seed": 5}, input_fidelity="high") != first


def test_sdk_edit_with_two_images(client: openai.OpenAI) -> None:
    images = [("photo.png", PICTURE_PNG, "image/png"), ("other.png", OTHER_PNG, "image/png")]
    two = edit(client, images, extra_body={"seed": 5})
    assert len(two) == 1
    assert two != edit(client, images[:1], extra_body={"seed": 5})  # the reference is mixed in


def test_karlo_edits_stream_partial_images(async_client: openai.AsyncOpenAI) -> None:
    async def collect() -> list:
        async with async_client:
            stream = await async_client.images.edit(
                model=KARLO,
                image=("photo.png", PICTURE_PNG, "image/png"),
                prompt="make it night",
                size="256x256",
                stream=True,
                partial_images=1,
                input_fidelity="high",
                extra_body={"prior_steps": 2, "decoder_steps": 4},
            )
            return [event async for event in stream]

    events = asyncio.run(collect())
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert all(decoded(event.b64_json).size == (256, 256) for event in events)


@pytest.mark.parametrize(
    "images, kwargs, param",
    [
        ([("photo.png", PICTURE_PNG, "image/png")], {"mask": ("m.png", MASK_PNG, "image/png")}, "mask"),
        ([("clear.png", TRANSPARENT_PNG, "image/png")], {}, "image"),
        ([("photo.png", PICTURE_PNG, "image/png")], {"extra_body": {"strength": 0.5}}, "strength"),
    ],
)
def test_masks_transparency_and_strength_are_refused(client: openai.OpenAI, images, kwargs, param) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        edit(client, images, **kwargs)
    assert (caught.value.status_code, caught.value.param, caught.value.code) == (400, param, "unsupported_value")
    body = caught.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    expected = "'strength' does not apply to model" if param == "strength" else "Model 'karlo-tiny' repaints"
    assert str(body["message"]).startswith(expected)


@pytest.fixture(scope="module")
def bare_karlo(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from pipelines.tiny import build_tiny_karlo

    path = build_tiny_karlo(tmp_path_factory.mktemp("bare") / "karlo", with_image_encoder=False)
    models = (
        ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"]),
        ModelSpec(name=KARLO, family="karlo", path=path),
    )
    with running_server(tiny_settings(tiny_model_dirs, models=models)) as live:
        yield live


def test_a_karlo_without_image_encoder_names_what_is_missing(bare_karlo: LiveServer) -> None:
    client = openai.OpenAI(base_url=bare_karlo.api_url, api_key="any-key-works", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        edit(client, [("photo.png", PICTURE_PNG, "image/png")])
    assert (caught.value.param, caught.value.code) == ("model", "missing_component")
    assert "cannot edit images: its directory lacks image_encoder, feature_extractor" in caught.value.message
