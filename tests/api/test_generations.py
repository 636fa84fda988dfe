"""POST /v1/images/generations through the real openai SDK against a live server with tiny models."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math

import httpx
import openai
import pytest
from PIL import Image

from ..conftest import FAST, KARLO, TINY, LiveServer

PROMPT = "a red fox in the snow"


def b64_image(item) -> tuple[bytes, Image.Image]:
    data = base64.b64decode(item.b64_json)
    return data, Image.open(io.BytesIO(data))


def seed_of(item) -> int:
    return item.model_extra["seed"]


def generate_b64(client: openai.OpenAI, **kwargs):
    extra = {**FAST, **kwargs.pop("extra_body", {})}
    kwargs.setdefault("model", TINY)
    return client.images.generate(
        prompt=kwargs.pop("prompt", PROMPT), response_format="b64_json", extra_body=extra, **kwargs
    )


def test_url_response_is_a_fetchable_png_of_the_requested_size(client, api_server: LiveServer):
    result = client.images.generate(prompt=PROMPT, model=TINY, size="512x512", extra_body=FAST)
    assert len(result.data) == 1
    item = result.data[0]
    assert item.b64_json is None and item.revised_prompt is None
    assert item.url.startswith(api_server.url + "/v1/files/images/") and item.url.endswith(".png")
    name = item.url.rsplit("/", 1)[1]
    assert len(name.removesuffix(".png")) == 43  # token_urlsafe(32): 256 random bits
    assert (api_server.state.store.directory / name).is_file()
    fetched = httpx.get(item.url)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["x-request-id"]
    image = Image.open(io.BytesIO(fetched.content))
    assert image.format == "PNG" and image.size == (512, 512)
    assert isinstance(seed_of(item), int)
    assert result.usage is None and result.size is None


def test_b64_json_response(client):
    result = generate_b64(client, size="256x256")
    item = result.data[0]
    assert item.url is None
    _, image = b64_image(item)
    assert image.format == "PNG" and image.size == (256, 256) and image.mode == "RGB"


@pytest.mark.parametrize(
    "size, expected",
    [
        ("256x256", (256, 256)),
        ("512x512", (512, 512)),
        ("1024x1024", (1024, 1024)),
        ("1792x1024", (1792, 1024)),
        ("1024x1792", (1024, 1792)),
        ("1536x1024", (1536, 1024)),
        ("1024x1536", (1024, 1536)),
        ("auto", (1024, 1024)),
        ("320x200", (320, 200)),
        ("96x640", (96, 640)),
    ],
)
def test_every_size_comes_back_exact(client, size, expected):
    _, image = b64_image(generate_b64(client, size=size).data[0])
    assert image.size == expected


@pytest.mark.parametrize("size, expected", [("1792x1024", (1792, 1024)), ("128x256", (128, 256))])
def test_fixed_native_size_model_is_cropped_then_resized(client, size, expected):
    result = generate_b64(client, model=KARLO, size=size, extra_body={"prior_steps": 2, "decoder_steps": 2})
    _, image = b64_image(result.data[0])
    assert image.size == expected


def test_n_images_with_consecutive_seeds(client):
    result = generate_b64(client, n=3, size="256x256", extra_body={"seed": 100})
    assert [seed_of(item) for item in result.data] == [100, 101, 102]
    blobs = [b64_image(item)[0] for item in result.data]
    assert len(set(blobs)) == 3
    assert all(Image.open(io.BytesIO(blob)).size == (256, 256) for blob in blobs)


def test_same_seed_gives_identical_bytes(client):
    first = b64_image(generate_b64(client, size="256x256", extra_body={"seed": 7}).data[0])[0]
    second = b64_image(generate_b64(client, size="256x256", extra_body={"seed": 7}).data[0])[0]
    other = b64_image(generate_b64(client, size="256x256", extra_body={"seed": 8}).data[0])[0]
    assert first == second
    assert first != other


def test_random_seed_is_reported_and_reproduces_the_image(client):
    result = generate_b64(client, size="256x256")
    seed = seed_of(result.data[0])
    again = generate_b64(client, size="256x256", extra_body={"seed": seed})
    assert seed_of(again.data[0]) == seed
    assert b64_image(again.data[0])[0] == b64_image(result.data[0])[0]


def test_default_model_and_dall_e_2_answer_with_urls(client):
    for model in (None, "dall-e-2"):
        kwargs = {} if model is None else {"model": model}
        result = client.images.generate(prompt=PROMPT, size="256x256", extra_body=FAST, **kwargs)
        assert result.data[0].url is not None and result.data[0].b64_json is None
        assert result.data[0].revised_prompt is None


def test_dall_e_3_returns_the_prompt_as_revised_prompt(client):
    result = client.images.generate(
        prompt=PROMPT, model="dall-e-3", size="1024x1792", response_format="b64_json", extra_body=FAST
    )
    item = result.data[0]
    assert item.revised_prompt == PROMPT
    assert b64_image(item)[1].size == (1024, 1792)


def test_dall_e_3_allows_only_one_image(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt=PROMPT, model="dall-e-3", n=2, extra_body=FAST)
    assert caught.value.param == "n"


@pytest.mark.parametrize("alias", ["gpt-image-1", "chatgpt-image-latest"])
def test_gpt_image_names_return_b64_with_usage(client, tiny_backend, alias):
    result = client.images.generate(
        prompt=PROMPT,
        model=alias,
        n=2,
        size="1024x1536",
        quality="high",
        output_format="jpeg",
        output_compression=80,
        extra_body=FAST,
    )
    assert len(result.data) == 2
    for item in result.data:
        assert item.url is None
        data, image = b64_image(item)
        assert image.format == "JPEG" and image.size == (1024, 1536)
    assert result.background == "opaque"
    assert result.output_format == "jpeg"
    assert result.quality == "high"
    assert result.size == "1024x1536"
    native_w, native_h = tiny_backend.info.native_size_for(1024, 1536)
    expected_output = 2 * math.ceil(native_w / 8) * math.ceil(native_h / 8)
    text_tokens = tiny_backend.count_tokens(PROMPT)
    assert text_tokens > 0
    usage = result.usage
    assert usage.input_tokens == text_tokens
    assert usage.input_tokens_details.text_tokens == text_tokens
    assert usage.input_tokens_details.image_tokens == 0
    assert usage.output_tokens == expected_output
    assert usage.output_tokens_details.image_tokens == expected_output
    assert usage.total_tokens == text_tokens + expected_output


def test_gpt_image_quality_auto_reports_medium_and_accepts_b64_json(client):
    result = client.images.generate(prompt=PROMPT, model="gpt-image-1", response_format="b64_json", extra_body=FAST)
    assert result.quality == "medium" and result.size == "1024x1024" and result.output_format == "png"


def test_gpt_image_refuses_url(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt=PROMPT, model="gpt-image-1", response_format="url", extra_body=FAST)
    assert caught.value.param == "response_format"


@pytest.mark.parametrize(
    "output_format, media_type, pil_format",
    [("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")],
)
def test_output_formats_by_url(client, output_format, media_type, pil_format):
    result = client.images.generate(
        prompt=PROMPT, model=TINY, size="256x256", output_format=output_format, extra_body=FAST
    )
    url = result.data[0].url
    assert url.endswith("." + output_format)
    fetched = httpx.get(url)
    assert fetched.headers["content-type"] == media_type
    image = Image.open(io.BytesIO(fetched.content))
    assert image.format == pil_format and image.size == (256, 256)


@pytest.mark.parametrize("output_format", ["jpeg", "webp"])
def test_output_compression_sets_encoder_quality(client, output_format):
    sizes = {}
    for compression in (10, 95):
        result = generate_b64(
            client, size="512x512", output_format=output_format, output_compression=compression, extra_body={"seed": 3}
        )
        sizes[compression] = len(b64_image(result.data[0])[0])
    assert sizes[10] < sizes[95]


def test_style_scales_guidance(client):
    def image(**kwargs) -> bytes:
        return b64_image(generate_b64(client, size="256x256", extra_body={"seed": 11}, **kwargs).data[0])[0]

    default, vivid, natural = image(), image(style="vivid"), image(style="natural")
    assert default == vivid  # vivid is the default
    assert natural != vivid


def test_quality_selects_the_preset(client, tiny_backend):
    low = tiny_backend.info.presets["low"]
    by_quality = generate_b64(
        client, size="256x256", quality="low", extra_body={"seed": 5, "prior_steps": None, "decoder_steps": None}
    )
    by_steps = generate_b64(
        client,
        size="256x256",
        quality="medium",
        extra_body={
            "seed": 5,
            "prior_steps": low.prior_steps,
            "decoder_steps": low.decoder_steps,
            "prior_guidance_scale": low.prior_guidance,
            "decoder_guidance_scale": low.decoder_guidance,
        },
    )
    assert b64_image(by_quality.data[0])[0] == b64_image(by_steps.data[0])[0]


def test_negative_prompt_changes_the_image(client):
    plain = generate_b64(client, size="256x256", extra_body={"seed": 9})
    negative = generate_b64(client, size="256x256", extra_body={"seed": 9, "negative_prompt": "blurry, grey"})
    assert b64_image(plain.data[0])[0] != b64_image(negative.data[0])[0]


def test_guidance_overrides_change_the_image(client):
    base = generate_b64(client, size="256x256", extra_body={"seed": 4, "decoder_guidance_scale": 4.0})
    other = generate_b64(client, size="256x256", extra_body={"seed": 4, "decoder_guidance_scale": 9.5})
    assert b64_image(base.data[0])[0] != b64_image(other.data[0])[0]


def test_guidance_interval_override(client, tiny_backend):
    assert tiny_backend.info.presets["medium"].decoder_guidance_min_timestep is None  # guides every step
    preset = generate_b64(client, size="256x256", extra_body={"seed": 6})
    every_step = generate_b64(client, size="256x256", extra_body={"seed": 6, "decoder_guidance_min_timestep": 0})
    no_step = generate_b64(client, size="256x256", extra_body={"seed": 6, "decoder_guidance_min_timestep": 1000})
    assert b64_image(every_step.data[0])[0] == b64_image(preset.data[0])[0]
    assert b64_image(no_step.data[0])[0] != b64_image(preset.data[0])[0]


def test_every_field_accepted_for_a_local_model(client):
    result = client.images.generate(
        prompt=PROMPT,
        model=TINY,
        n=2,
        size="320x240",
        quality="hd",
        response_format="b64_json",
        output_format="webp",
        output_compression=60,
        style="natural",
        background="opaque",
        moderation="low",
        user="user-1234",
        stream=False,
        partial_images=0,
        extra_body={
            **FAST,
            "seed": 1,
            "negative_prompt": "dull",
            "prior_guidance_scale": 2.0,
            "decoder_guidance_scale": 3.0,
            "decoder_guidance_min_timestep": 500,
        },
    )
    assert [seed_of(item) for item in result.data] == [1, 2]
    assert all(b64_image(item)[1].size == (320, 240) for item in result.data)


def test_nulls_mean_defaults(api_server: LiveServer):
    body = {
        "prompt": PROMPT,
        "model": None,
        "n": None,
        "size": None,
        "quality": None,
        "response_format": None,
        "output_format": None,
        "output_compression": None,
        "style": None,
        "background": None,
        "moderation": None,
        "stream": None,
        "partial_images": None,
        "seed": 21,
        **FAST,
    }
    response = httpx.post(api_server.api_url + "/images/generations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 1 and data[0]["seed"] == 21 and "url" in data[0]  # default model, url, n=1
    fetched = httpx.get(data[0]["url"])
    assert Image.open(io.BytesIO(fetched.content)).size == (1024, 1024)


def test_user_is_logged_with_the_request_id(client, caplog):
    caplog.set_level(logging.INFO, logger="easel.images")
    raw = client.images.with_raw_response.generate(
        prompt=PROMPT,
        model=TINY,
        size="256x256",
        user="user-abc",
        moderation="auto",
        background="auto",
        extra_body=FAST,
    )
    request_id = raw.headers["x-request-id"]
    assert raw.parse().data[0].url
    lines = [record.getMessage() for record in caplog.records if request_id in record.getMessage()]
    assert any("user='user-abc'" in line for line in lines), lines


def test_client_request_id_is_echoed_and_insane_ones_replaced(api_server: LiveServer):
    body = {"prompt": PROMPT, "model": TINY, "size": "256x256", **FAST}
    echoed = httpx.post(
        api_server.api_url + "/images/generations", json=body, headers={"x-request-id": "my-trace.42"}, timeout=60
    )
    assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "my-trace.42"
    replaced = httpx.get(api_server.url + "/health", headers={"x-request-id": "bad id\twith spaces" + "x" * 200})
    assert replaced.headers["x-request-id"].startswith("req_")
    served = httpx.get(echoed.json()["data"][0]["url"], headers={"x-request-id": "fetch-1"})
    assert served.headers["x-request-id"] == "fetch-1"


def test_async_client(async_client):
    async def scenario():
        b64, url = await asyncio.gather(
            async_client.images.generate(
                prompt=PROMPT, model="dall-e-2", size="512x512", response_format="b64_json", extra_body=FAST
            ),
            async_client.images.generate(prompt=PROMPT, model="dall-e-2", size="256x256", extra_body=FAST),
        )
        async with httpx.AsyncClient() as http:
            fetched = await http.get(url.data[0].url)
        await async_client.close()
        return b64, fetched

    b64, fetched = asyncio.run(scenario())
    assert b64_image(b64.data[0])[1].size == (512, 512)
    assert fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (256, 256)
