"""openai 3.57's newest image fields and model names, sent by the real SDK to a live server with tiny models."""

from __future__ import annotations

import base64
import io
import typing

import httpx
import numpy as np
import openai
import pytest
from openai.types.image_model import ImageModel
from PIL import Image

from server.settings.config import Settings
from server.settings.model_specs import ModelSpec

from ..conftest import EASEL_MINI, FAST, KARLO, TINY, LiveServer, assert_envelope, running_server
from .test_edits import HEIGHT, HOLE, WIDTH, encode, kept_area, mask_png, picture

PROMPT = "a red circle in the top left corner"
SDK_MODEL_NAMES = typing.get_args(ImageModel)
FUTURE_NAMES = ["gpt-image-3", "gpt-image-2.7-ember-2027-01-15", "chatgpt-image-2027-02-01"]


def decoded(item) -> bytes:
    return base64.b64decode(item.b64_json)


def markup_png(hole: tuple[int, int, int, int] = HOLE) -> bytes:
    """A transparent layer with a scribble drawn over ``hole``: the area the edit should repaint."""
    layer = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 200), hole)
    return encode(layer)


def test_sdk_knows_the_new_names_this_test_expects():
    assert {"gpt-image-2.5-sunburst", "gpt-image-2.6-flare", "gpt-image-2.5-flare-2026-09-08"} <= set(SDK_MODEL_NAMES)


@pytest.mark.parametrize("name", [*SDK_MODEL_NAMES, *FUTURE_NAMES])
def test_every_openai_name_now_and_later_draws_in_its_family_shape(client: openai.OpenAI, name: str):
    kwargs = {} if name.startswith("dall-e") else {"safety_identifier": "hashed-user"}
    result = client.images.generate(
        prompt=PROMPT, model=name, size="256x256", response_format=None, extra_body={**FAST, "seed": 3}, **kwargs
    )
    item = result.data[0]
    if name.startswith("dall-e"):
        assert item.url and item.b64_json is None
        assert (item.revised_prompt == PROMPT) == (name == "dall-e-3")
        assert result.usage is None and result.safety_identifier is None
    else:
        assert item.url is None and decoded(item).startswith(b"\x89PNG")
        assert (result.size, result.quality, result.output_format, result.background) == (
            "256x256",
            "medium",
            "png",
            "opaque",
        )
        assert result.safety_identifier == "hashed-user"
        assert result.usage is not None and result.usage.output_tokens == 64  # 64x64 native / 8x8 patches


def test_models_lists_every_current_name_and_answers_a_future_one(client: openai.OpenAI, api_server: LiveServer):
    listed = {model.id for model in client.models.list()}
    assert set(SDK_MODEL_NAMES) <= listed
    assert not listed & set(FUTURE_NAMES)  # resolved by rule, not listed
    future = client.models.retrieve("gpt-image-3")
    assert (future.id, future.model_extra["alias_of"]) == ("gpt-image-3", TINY)
    for not_openai in ("gpt-imagery", "gpt-image-", "gpt-image-3/../x", "GPT-IMAGE-3"):
        response = httpx.get(f"{api_server.api_url}/models/{not_openai}", timeout=10)
        assert_envelope(response, 404, param="model", code="model_not_found")


def test_complexity_quality_and_safety_identifier(client: openai.OpenAI):
    result = client.images.generate(
        prompt=PROMPT,
        model="gpt-image-2.5-sunburst",
        size="320x192",
        complexity="high",
        quality="max",
        user="plain-user",
        safety_identifier="",  # empty: the user stands in, as OpenAI's
        extra_body={"decoder_steps": 2, "seed": 1},
    )
    assert (result.quality, result.size, result.safety_identifier) == ("max", "320x192", "plain-user")
    assert Image.open(io.BytesIO(decoded(result.data[0]))).size == (320, 192)


@pytest.fixture(scope="module")
def mini_client():
    """The shipped easel-mini: its prior samples differ the way a trained model's do (the tiny one's barely)."""
    spec = ModelSpec(name="easel-mini", family="kandinsky22", path=EASEL_MINI, presets="easel-mini")
    with running_server(Settings(models=(spec,), aliases={"gpt-image-2.6-flare": "easel-mini"})) as live:
        yield openai.OpenAI(base_url=live.api_url, api_key="none", max_retries=0)


def test_gif_walks_through_embedding_space(mini_client: openai.OpenAI):
    result = mini_client.images.generate(
        prompt=PROMPT,
        model="gpt-image-2.6-flare",
        size="128x96",
        output_format="gif",
        frame_count=4,
        frame_duration_ms=123,  # rounded to 120 ms
        extra_body={"prior_steps": 5, "decoder_steps": 5, "seed": 5},
    )
    data = decoded(result.data[0])
    assert data.startswith(b"GIF89a") and result.output_format == "gif"
    gif = Image.open(io.BytesIO(data))
    assert (gif.size, gif.n_frames, gif.info["loop"]) == ((128, 96), 4, 0)
    frames, durations = [], []
    for index in range(4):
        gif.seek(index)
        frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
        durations.append(gif.info["duration"])
    assert durations == [120] * 4
    # Out and back: frames 1 and 3 sit at the same place on the path, 0 and 2 at its two ends.
    assert np.array_equal(frames[1], frames[3])
    assert np.abs(frames[0] - frames[2]).mean() > 5.0
    still = mini_client.images.generate(prompt=PROMPT, model="gpt-image-2.6-flare", size="128x96", extra_body=FAST)
    assert result.usage is not None and still.usage is not None
    assert result.usage.output_tokens == 4 * still.usage.output_tokens  # every frame's patches


def test_gif_is_byte_identical_for_a_seed(client: openai.OpenAI):
    def gif() -> bytes:
        kwargs = {"output_format": "gif", "frame_count": 2, "size": "64x64", "model": "gpt-image-2"}
        return decoded(client.images.generate(prompt=PROMPT, extra_body={**FAST, "seed": 9}, **kwargs).data[0])

    assert gif() == gif()


def test_gif_url_is_served_as_a_gif(client: openai.OpenAI):
    result = client.images.generate(
        prompt=PROMPT, model=TINY, output_format="gif", frame_count=2, size="64x64", extra_body=FAST
    )
    response = httpx.get(result.data[0].url, timeout=10)
    assert response.headers["content-type"] == "image/gif" and response.content.startswith(b"GIF89a")


def test_svg_is_a_traced_vector_image(client: openai.OpenAI):
    result = client.images.generate(
        prompt=PROMPT,
        model="gpt-image-2.5-flare",
        size="300x200",
        output_format="svg",
        svg={"model": "vtracer", "reasoning": {"effort": "low"}},
        extra_body=FAST,
    )
    text = decoded(result.data[0]).decode()
    assert text.startswith("<?xml") and '<svg version="1.1"' in text and "<path" in text
    assert 'width="300" height="200" viewBox="0 0 300 200"' in text
    assert result.output_format == "svg"
    assert result.svg_usage is not None
    assert (result.svg_usage.model, result.svg_usage.total_tokens) == ("vtracer", 0)


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"output_format": "svg", "n": 2}, "n"),
        ({"output_format": "svg", "stream": True}, "stream"),
        ({"output_format": "gif", "stream": True}, "stream"),
        ({"output_format": "gif", "output_compression": 80}, "output_compression"),
        ({"output_format": "svg", "svg": {"model": "gpt-5"}}, "svg.model"),
        (
            {"output_format": "svg", "svg": {"model": "vtracer", "reasoning": {"effort": "huge"}}},
            "svg.reasoning.effort",
        ),
        ({"output_format": "svg", "svg": {"model": "vtracer", "colours": 3}}, "svg.colours"),
        ({"svg": {"model": "vtracer"}}, "svg"),
        ({"frame_count": 3}, "frame_count"),
        ({"frame_duration_ms": 100, "output_format": "png"}, "frame_duration_ms"),
        ({"output_format": "gif", "frame_count": 17}, "frame_count"),
        ({"output_format": "gif", "frame_count": 1}, "frame_count"),
        ({"output_format": "gif", "model": KARLO}, "output_format"),
        ({"complexity": "extreme"}, "complexity"),
        ({"quality": "ultra"}, "quality"),
        ({"safety_identifier": 5}, "safety_identifier"),
    ],
)
def test_new_fields_are_refused_by_name_with_a_reason(client: openai.OpenAI, fields: dict, param: str):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt=PROMPT, model=TINY, extra_body={**FAST, **fields})
    assert caught.value.param == param
    assert "Unrecognized" not in caught.value.message or param == "svg.colours"


def test_completed_stream_event_echoes_the_safety_identifier(client: openai.OpenAI):
    stream = client.images.generate(
        prompt=PROMPT, model="gpt-image-2.6-sunburst", size="64x64", stream=True, safety_identifier="sid-7",
        quality="xhigh", extra_body=FAST,
    )  # fmt: skip
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.completed"]
    assert (events[0].safety_identifier, events[0].quality) == ("sid-7", "xhigh")


def test_edit_with_markup_and_input_fidelity(client: openai.OpenAI):
    def edit(fidelity: str) -> np.ndarray:
        result = client.images.edit(
            image=("in.png", encode(picture()), "image/png"),
            markup=("markup.png", markup_png(), "image/png"),
            prompt=PROMPT,
            model="gpt-image-2.5-sunburst",
            input_fidelity=fidelity,
            safety_identifier="editor",
            extra_body={**FAST, "seed": 4},
        )
        assert result.safety_identifier == "editor"
        return np.asarray(Image.open(io.BytesIO(decoded(result.data[0]))).convert("RGB"), dtype=np.int16)

    low, high = edit("low"), edit("high")
    original = np.asarray(picture(), dtype=np.int16)
    keep = kept_area()
    assert np.array_equal(low[keep], original[keep]) and np.array_equal(high[keep], original[keep])
    assert np.abs(low[~keep] - high[~keep]).mean() > 0.5  # the input's own embedding changed the repaint


@pytest.mark.parametrize(
    "extra, files, param",
    [
        ({}, {"mask": mask_png()}, "markup"),  # not with mask
        ({}, {"markup": encode(Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0)))}, "markup"),  # nothing drawn
        ({}, {"markup": encode(Image.new("RGB", (WIDTH, HEIGHT)))}, "markup"),  # no clear pixel
        ({}, {"markup": encode(Image.new("RGBA", (8, 8)))}, "markup"),  # another size
        ({"output_format": "gif"}, {}, "output_format"),
        ({"input_fidelity": "medium"}, {}, "input_fidelity"),
    ],
)
def test_edit_refusals_name_the_field(api_server: LiveServer, extra: dict, files: dict, param: str):
    parts = {"image": ("in.png", encode(picture()), "image/png"), "markup": ("m.png", markup_png(), "image/png")}
    parts.update({name: (f"{name}.png", data, "image/png") for name, data in files.items()})
    data = {"prompt": PROMPT, **{k: str(v) for k, v in {**FAST, **extra}.items()}}
    response = httpx.post(f"{api_server.api_url}/images/edits", data=data, files=parts, timeout=60)
    error = assert_envelope(response, 400, param=param)
    assert "Unrecognized" not in error["message"]


def test_multipart_svg_object_arrives_nested(api_server: LiveServer):
    data = {
        "prompt": PROMPT,
        "output_format": "svg",
        "svg[model]": "vtracer",
        "svg[reasoning][effort]": "max",
        "size": "64x64",
        "response_format": "b64_json",
        **{k: str(v) for k, v in FAST.items()},
    }
    files = {"image": ("in.png", encode(picture()), "image/png"), "mask": ("m.png", mask_png(), "image/png")}
    response = httpx.post(f"{api_server.api_url}/images/edits", data=data, files=files, timeout=60)
    assert response.status_code == 200, response.text
    assert base64.b64decode(response.json()["data"][0]["b64_json"]).startswith(b"<?xml")
    data["svg[reasoning][effort]"] = "lots"
    response = httpx.post(f"{api_server.api_url}/images/edits", data=data, files=files, timeout=60)
    assert_envelope(response, 400, param="svg.reasoning.effort")


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks the endpoint retired
def test_variation_user_is_the_safety_identifier(client: openai.OpenAI):
    result = client.images.create_variation(
        image=("in.png", encode(picture()), "image/png"),
        model="gpt-image-2.5-flare",
        size="256x256",
        user="variation-user",
        extra_body={"decoder_steps": 2},
    )
    assert result.safety_identifier == "variation-user"
    assert result.data[0].b64_json is not None


def test_models_list_complexity_presets_and_animation(client: openai.OpenAI):
    tiny = client.models.retrieve(TINY).model_extra["capabilities"]
    karlo = client.models.retrieve(KARLO).model_extra["capabilities"]
    assert tiny["complexity_presets"]["high"] == {"prior_steps": 50, "prior_guidance": 4.0}
    assert (tiny["supports_animation"], karlo["supports_animation"]) == (True, False)
    assert {"xhigh", "max"} <= set(tiny["quality_presets"])
