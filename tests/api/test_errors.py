"""Client errors on the shared live server: 400 per field, 404, 405, and the SDK's view of them."""

from __future__ import annotations

import httpx
import openai
import pytest

from ..conftest import FAST, KARLO, TINY, LiveServer, assert_envelope

PROMPT = "a lighthouse at dusk"


def post(server: LiveServer, body=None, **kwargs) -> httpx.Response:
    if body is not None:
        kwargs["json"] = body
    return httpx.post(server.api_url + "/images/generations", timeout=60, **kwargs)


BAD_FIELDS = [
    ({"prompt": None}, "prompt"),  # null means default, and prompt has none
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"model": ""}, "model"),
    ({"model": 3}, "model"),
    ({"n": 0}, "n"),
    ({"n": 11}, "n"),
    ({"n": "2"}, "n"),
    ({"n": 1.5}, "n"),
    ({"n": True}, "n"),
    ({"size": "big"}, "size"),
    ({"size": "0x10"}, "size"),
    ({"size": "512x"}, "size"),
    ({"size": "20x20"}, "size"),  # below the model's min_side
    ({"size": "4096x1024"}, "size"),  # above its max_side
    ({"size": 512}, "size"),
    ({"quality": "ultra"}, "quality"),
    ({"response_format": "png"}, "response_format"),
    ({"output_format": "bmp"}, "output_format"),
    ({"output_format": "gif", "model": KARLO}, "output_format"),  # Karlo cannot animate
    ({"output_compression": 101, "output_format": "jpeg"}, "output_compression"),
    ({"output_compression": -1, "output_format": "webp"}, "output_compression"),
    ({"output_compression": 50}, "output_compression"),  # png is lossless
    ({"output_compression": 50, "output_format": "png"}, "output_compression"),
    ({"style": "bold"}, "style"),
    ({"background": "transparent"}, "background"),
    ({"background": "none"}, "background"),
    ({"moderation": "high"}, "moderation"),
    ({"user": 5}, "user"),
    ({"user": "u" * 257}, "user"),
    ({"stream": "yes"}, "stream"),
    ({"partial_images": 4, "stream": True}, "partial_images"),
    ({"partial_images": 2}, "partial_images"),  # only with stream
    ({"seed": -1}, "seed"),
    ({"seed": "1"}, "seed"),
    ({"seed": 2**53}, "seed"),
    ({"negative_prompt": 3}, "negative_prompt"),
    ({"negative_prompt": "blur", "model": KARLO}, "negative_prompt"),  # Karlo has no negative prompt
    ({"prior_steps": 0}, "prior_steps"),
    ({"prior_steps": 201}, "prior_steps"),
    ({"prior_steps": 1}, "prior_steps"),
    ({"decoder_steps": 1}, "decoder_steps"),
    ({"decoder_steps": 2.5}, "decoder_steps"),
    ({"prior_guidance_scale": -1}, "prior_guidance_scale"),
    ({"prior_guidance_scale": "x"}, "prior_guidance_scale"),
    ({"decoder_guidance_scale": 31}, "decoder_guidance_scale"),
    ({"decoder_guidance_min_timestep": -1}, "decoder_guidance_min_timestep"),
    ({"decoder_guidance_min_timestep": 1001}, "decoder_guidance_min_timestep"),
    ({"decoder_guidance_min_timestep": 600.5}, "decoder_guidance_min_timestep"),
    ({"decoder_guidance_min_timestep": 600, "model": KARLO}, "decoder_guidance_min_timestep"),  # guides every step
    ({"foo": 1}, "foo"),
    ({"svg": {}}, "svg"),  # only with output_format svg
    ({"output_format": "svg", "svg": {"model": "gpt-5"}}, "svg.model"),
    ({"model": "dall-e-3", "n": 2}, "n"),
    ({"model": "gpt-image-1", "response_format": "url"}, "response_format"),
    ({"model": "dall-e-2", "prompt": "p" * 1001}, "prompt"),
]


@pytest.mark.parametrize("fields, param", BAD_FIELDS, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD_FIELDS)])
def test_bad_field_is_a_400_naming_it(api_server: LiveServer, fields, param):
    body = {"prompt": PROMPT, "model": TINY, **FAST, **fields}
    error = assert_envelope(post(api_server, body), 400, param=param)
    assert error["type"] == "invalid_request_error"


def test_missing_prompt_is_a_400(api_server: LiveServer):
    assert_envelope(post(api_server, {"model": TINY}), 400, param="prompt", code="missing_required_parameter")


@pytest.mark.parametrize("raw", [b"{not json", b"", "\u00e9".encode("latin-1"), b"[1, 2]", b'"prompt"'])
def test_body_that_is_not_a_json_object_is_a_400(api_server: LiveServer, raw):
    response = post(api_server, content=raw, headers={"content-type": "application/json"})
    assert_envelope(response, 400, param=None)


def test_sdk_sees_param_and_code(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt=PROMPT, model=TINY, size="1x1", extra_body=FAST)
    assert caught.value.status_code == 400
    assert caught.value.param == "size"
    assert caught.value.type == "invalid_request_error"
    assert caught.value.request_id


def test_unknown_model_is_404_model_not_found(client, api_server: LiveServer):
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(prompt=PROMPT, model="dall-e-9", extra_body=FAST)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert_envelope(post(api_server, {"prompt": PROMPT, "model": "nope"}), 404, param="model", code="model_not_found")
    assert_envelope(httpx.get(api_server.api_url + "/models/nope"), 404, param="model", code="model_not_found")


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/v1/nope"), ("POST", "/v1/images/nope"), ("GET", "/nope"), ("GET", "/v1/files/images/x.png")],
)
def test_unknown_route_is_404(api_server: LiveServer, method, path):
    error = assert_envelope(httpx.request(method, api_server.url + path), 404)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/images/generations"),
        ("DELETE", "/v1/models/easel-tiny"),
        ("POST", "/health"),
        ("PUT", "/v1/models"),
    ],
)
def test_wrong_method_is_405(api_server: LiveServer, method, path):
    response = httpx.request(method, api_server.url + path)
    assert_envelope(response, 405)
    assert response.headers["allow"]


def test_no_keys_configured_means_open(api_server: LiveServer):
    assert httpx.get(api_server.api_url + "/models").status_code == 200
    assert httpx.get(api_server.api_url + "/models", headers={"authorization": "Bearer whatever"}).status_code == 200
