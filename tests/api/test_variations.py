"""POST /v1/images/variations through the openai SDK, with the tiny models and (when trained) easel-mini."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from server.settings.config import Settings
from server.settings.model_specs import ModelSpec
from tests.api.test_edits import multipart
from tests.conftest import KARLO, LiveServer, assert_envelope, running_server

DECODER_FAST = {"decoder_steps": 2}

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks variations deprecated


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def decoded(b64_json: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64_json)))


SOURCE = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8))
SOURCE_PNG = encode(SOURCE)


def test_variations_come_at_the_requested_size_with_consecutive_seeds(client: openai.OpenAI) -> None:
    result = client.images.create_variation(
        image=("source.png", SOURCE_PNG, "image/png"),
        n=2,
        size="256x256",
        response_format="b64_json",
        extra_body={"seed": 7, **DECODER_FAST},
    )
    assert [item.seed for item in result.data] == [7, 8]
    images = [decoded(item.b64_json) for item in result.data]
    assert [(image.format, image.size) for image in images] == [("PNG", (256, 256))] * 2
    assert images[0].tobytes() != images[1].tobytes()


def test_the_same_seed_gives_the_same_variation(client: openai.OpenAI) -> None:
    def one() -> bytes:
        result = client.images.create_variation(
            image=("source.png", SOURCE_PNG, "image/png"),
            size="256x256",
            response_format="b64_json",
            extra_body={"seed": 11, **DECODER_FAST},
        )
        return base64.b64decode(result.data[0].b64_json)

    assert one() == one()


def test_auto_size_is_the_inputs_size_and_url_is_the_default_format(
    client: openai.OpenAI, api_server: LiveServer
) -> None:
    result = client.images.create_variation(
        image=("source.jpg", encode(SOURCE, "JPEG"), "image/jpeg"), size="auto", extra_body=DECODER_FAST
    )
    url = result.data[0].url
    assert url is not None and url.startswith(api_server.url + "/v1/files/images/")
    image = Image.open(io.BytesIO(httpx.get(url, timeout=10).content))
    assert image.size == (96, 64)


def test_karlo_variation_runs_on_its_image_encoder(client: openai.OpenAI) -> None:
    result = client.images.create_variation(
        image=("source.png", SOURCE_PNG, "image/png"),
        model=KARLO,
        size="256x256",
        response_format="b64_json",
        extra_body=DECODER_FAST,
    )
    assert decoded(result.data[0].b64_json).size == (256, 256)


@pytest.fixture(scope="module")
def karlo_without_encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from pipelines.tiny import build_tiny_karlo

    path = build_tiny_karlo(tmp_path_factory.mktemp("karlo-no-encoder") / "karlo", with_image_encoder=False)
    with running_server(Settings(models=(ModelSpec(name="karlo-text-only", family="karlo", path=path),))) as live:
        yield live


def test_karlo_without_its_image_encoder_says_what_is_missing(karlo_without_encoder: LiveServer) -> None:
    response = httpx.post(
        karlo_without_encoder.api_url + "/images/variations",
        files={"image": ("source.png", SOURCE_PNG, "image/png")},
        data={"decoder_steps": "2"},
        timeout=60,
    )
    error = assert_envelope(response, 400, param="model", code="missing_component")
    assert error["message"].startswith(
        "model 'karlo-text-only' cannot make variations: its directory lacks image_encoder"
    )


def post_variation(api_server: LiveServer, data: dict, files: dict | None = None) -> httpx.Response:
    files = files if files is not None else {"image": ("source.png", SOURCE_PNG, "image/png")}
    return httpx.post(api_server.api_url + "/images/variations", files=files, data=data, timeout=60)


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "prior_steps", "prior_guidance_scale"])
def test_prompt_and_prior_fields_are_refused_with_the_reason(api_server: LiveServer, field: str) -> None:
    error = assert_envelope(post_variation(api_server, {field: "2"}), 400, param=field, code="unsupported_value")
    assert error["message"] == (
        f"'{field}' does not apply to variations: they start from the image's own CLIP embedding, "
        "so no prompt is encoded and the prior does not run."
    )


@pytest.mark.parametrize("field", ["stream", "mask", "style"])
def test_fields_variations_do_not_know_are_named(api_server: LiveServer, field: str) -> None:
    files = {"image": ("source.png", SOURCE_PNG, "image/png")}
    data = {}
    if field == "mask":
        files["mask"] = ("mask.png", SOURCE_PNG, "image/png")
    else:
        data[field] = "true"
    error = assert_envelope(post_variation(api_server, data, files), 400, param=field, code="unknown_parameter")
    assert error["message"] == f"Unrecognized request argument supplied: {field}"


def test_bad_upload_is_a_400_naming_image(api_server: LiveServer) -> None:
    files = {"image": ("source.png", encode(SOURCE, "GIF"), "image/png")}
    error = assert_envelope(post_variation(api_server, DECODER_FAST, files), 400, param="image")
    assert error["message"] == "The 'image' file is a GIF file; upload a PNG, JPEG or WebP image."


def test_missing_image_and_json_bodies_are_refused(api_server: LiveServer) -> None:
    body, content_type = multipart({"n": "1"}, [])
    response = httpx.post(
        api_server.api_url + "/images/variations", content=body, headers={"content-type": content_type}
    )
    error = assert_envelope(response, 400, param="image", code="missing_required_parameter")
    assert error["message"] == "Missing required parameter: 'image'."
    response = httpx.post(api_server.api_url + "/images/variations", json={"image": "x"}, timeout=10)
    assert_envelope(response, 400, param=None, code="unsupported_content_type")


# -- the real target: the trained miniature model ------------------------------------------------


VARIATION_SOURCES = [("red", "circle"), ("blue", "square")]


def _score_variations(server: LiveServer, color: str, shape: str) -> list:
    from pipelines.lab.scenes import Scene, SceneObject, render
    from pipelines.lab.scorer import score_image

    scene = Scene(objects=(SceneObject(color, shape, "large", "center"),), background="white")
    client = openai.OpenAI(base_url=server.api_url, api_key="k", max_retries=0)
    result = client.images.create_variation(
        image=("scene.png", encode(render(scene, 64)), "image/png"),
        n=4,
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 0},
    )
    scores = [score_image(decoded(item.b64_json).convert("RGB"), scene).objects[0] for item in result.data]
    print(
        f"easel-mini variations of a {color} {shape}: colour {sum(s.color for s in scores)}/4, "
        f"shape {sum(s.shape for s in scores)}/4"
    )
    return scores


@pytest.mark.parametrize("color, shape", VARIATION_SOURCES)
def test_easel_mini_variations_keep_the_pictures_colour(easel_mini: LiveServer, color: str, shape: str) -> None:
    scores = _score_variations(easel_mini, color, shape)
    assert sum(s.color for s in scores) >= 3  # mostly the same colour


@pytest.mark.parametrize("color, shape", VARIATION_SOURCES)
def test_easel_mini_variations_keep_the_pictures_shape(easel_mini: LiveServer, color: str, shape: str) -> None:
    scores = _score_variations(easel_mini, color, shape)
    assert sum(s.shape for s in scores) >= 3  # mostly the same shape
