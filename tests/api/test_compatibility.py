"""What peer servers' clients send: their field names as aliases, and paths built from a base URL ending in ``/``."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import LiveServer, assert_envelope

PROMPT = "a red circle"
BASE = {"prompt": PROMPT, "size": "64x64", "response_format": "b64_json"}  # what the SDK types
FIXED = {"seed": 7, "prior_steps": 2}  # Easel's extensions: the same image for the same settings


def holed_png() -> bytes:
    """An edit input that needs no mask: its fully transparent pixels mark the area to repaint."""
    image = Image.new("RGBA", (64, 64), (200, 40, 40, 255))
    image.paste((0, 0, 0, 0), (16, 16, 48, 48))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(result) -> bytes:
    return base64.b64decode(result.data[0].b64_json)


@pytest.mark.parametrize(
    ("alias", "own"),
    [
        ({"steps": 3}, {"decoder_steps": 3}),
        ({"num_inference_steps": 3}, {"decoder_steps": 3}),
        ({"guidance_scale": 1.5, "decoder_steps": 2}, {"decoder_guidance_scale": 1.5, "decoder_steps": 2}),
    ],
)
def test_a_peer_name_sets_the_same_as_easels_own(client: openai.OpenAI, alias: dict, own: dict) -> None:
    by_alias = client.images.generate(**BASE, extra_body=FIXED | alias)
    by_own = client.images.generate(**BASE, extra_body=FIXED | own)
    other = client.images.generate(**BASE, extra_body=FIXED | {"decoder_steps": 4})
    assert b64(by_alias) == b64(by_own)
    assert b64(by_alias) != b64(other)  # the setting is really used: another value, other bytes


def edit(client: openai.OpenAI, fields: dict) -> bytes:
    image = ("photo.png", holed_png(), "image/png")
    result = client.images.edit(
        image=image, prompt="a blue square", size="64x64", response_format="b64_json", extra_body=FIXED | fields
    )
    return b64(result)


def vary(client: openai.OpenAI, fields: dict) -> bytes:
    image = ("photo.png", holed_png(), "image/png")
    result = client.images.create_variation(
        image=image, size="256x256", response_format="b64_json", extra_body={"seed": 3} | fields
    )
    return b64(result)


@pytest.mark.parametrize("alias", ["steps", "num_inference_steps"])
def test_aliases_work_on_multipart_edits_and_variations(client: openai.OpenAI, alias: str) -> None:
    assert edit(client, {alias: 2}) == edit(client, {"decoder_steps": 2})
    assert vary(client, {alias: 2}) == vary(client, {"decoder_steps": 2})
    guided = vary(client, {alias: 2, "guidance_scale": 2.5})
    assert guided == vary(client, {"decoder_steps": 2, "decoder_guidance_scale": 2.5})
    assert guided != vary(client, {"decoder_steps": 2, "decoder_guidance_scale": 6.0})


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"steps": 1}, "steps", "invalid_value"),
        ({"num_inference_steps": 201}, "num_inference_steps", "invalid_value"),
        ({"guidance_scale": -1}, "guidance_scale", "invalid_value"),
        ({"guidance_scale": 31}, "guidance_scale", "invalid_value"),
        ({"steps": "many"}, "steps", "invalid_type"),
        ({"decoder_steps": 4, "steps": 4}, "steps", "duplicate_parameter"),
        ({"steps": 4, "num_inference_steps": 4}, "steps", "duplicate_parameter"),
        ({"guidance_scale": 2, "decoder_guidance_scale": 2}, "guidance_scale", "duplicate_parameter"),
        ({"cfg_scale": 2}, "cfg_scale", "unknown_parameter"),
    ],
)
def test_alias_refusals_name_what_the_client_sent(api_server: LiveServer, fields: dict, param: str, code: str) -> None:
    body = {"prompt": PROMPT, "size": "64x64", **fields}
    response = httpx.post(api_server.api_url + "/images/generations", json=body, timeout=30)
    error = assert_envelope(response, 400, param=param, code=code)
    if code == "unknown_parameter":
        assert error["message"] == f"Unrecognized request argument supplied: {param}"


def test_a_multipart_alias_out_of_range_names_it(api_server: LiveServer) -> None:
    files = {"image": ("photo.png", holed_png(), "image/png")}
    data = {"prompt": "a blue square", "num_inference_steps": "500"}
    response = httpx.post(api_server.api_url + "/images/edits", files=files, data=data, timeout=30)
    assert_envelope(response, 400, param="num_inference_steps", code="invalid_value")
    response = httpx.post(api_server.api_url + "/images/variations", files=files, data={"steps": "1"}, timeout=30)
    assert_envelope(response, 400, param="steps", code="invalid_value")


# -- paths -----------------------------------------------------------------------------------------


def test_a_base_url_ending_in_a_slash_works_with_the_sdk(api_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=api_server.api_url + "/", api_key="k", max_retries=0)
    result = client.images.generate(**BASE, extra_body=FIXED | {"decoder_steps": 2})
    assert Image.open(io.BytesIO(b64(result))).size == (64, 64)


@pytest.mark.parametrize("path", ["/v1//images/generations", "//v1/images/generations", "/v1///images//generations"])
def test_doubled_slashes_are_read_as_one(api_server: LiveServer, path: str) -> None:
    body = {**BASE, **FIXED, "decoder_steps": 2}
    response = httpx.post(api_server.url + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"]))).size == (64, 64)


def test_doubled_slashes_on_models_and_a_missing_v1_keeps_its_hint(api_server: LiveServer) -> None:
    models = httpx.get(api_server.url + "/v1//models", timeout=10)
    assert models.status_code == 200 and models.json()["object"] == "list"
    response = httpx.post(api_server.url + "//images//generations", json={"prompt": PROMPT}, timeout=10)
    error = assert_envelope(response, 404)
    assert "did you mean /v1/images/generations?" in error["message"]
