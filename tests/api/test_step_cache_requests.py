"""decoder_step_cache, a request's own step-cache interval, through the openai SDK's extra_body on live servers.

The same seed with 1 gives today's bytes; 3 gives other bytes, the very ones a server started with
``--step-cache 3`` makes; bad values and models without a step cache are 400s naming the field.
"""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from openai import BadRequestError, OpenAI
from PIL import Image

from ..conftest import KARLO, TINY, LiveServer, assert_envelope, running_server, tiny_settings

STEPS = {"prior_steps": 2, "decoder_steps": 6}  # enough decoder steps for a cache of 3 to skip some
PROMPT = "a red circle"


def _generate(client: OpenAI, **extra) -> bytes:
    result = client.images.generate(
        prompt=PROMPT, model=TINY, size="256x256", response_format="b64_json", extra_body={"seed": 7, **STEPS, **extra}
    )
    return base64.b64decode(result.data[0].b64_json)


def _client(live: LiveServer) -> OpenAI:
    return OpenAI(base_url=live.api_url, api_key="any", max_retries=0)


@pytest.fixture(scope="module")
def cached_server(tiny_model_dirs):
    with running_server(tiny_settings(tiny_model_dirs, step_cache=3)) as live:
        yield live


def test_one_is_todays_bytes_and_three_matches_a_server_wide_step_cache(client: OpenAI, cached_server: LiveServer):
    today = _generate(client)
    assert _generate(client, decoder_step_cache=1) == today
    three = _generate(client, decoder_step_cache=3)
    assert three != today and Image.open(io.BytesIO(three)).size == (256, 256)
    assert _generate(client) == today  # a request that names none still gets the server's setting: off
    server_wide = _client(cached_server)
    assert _generate(server_wide) == three
    assert _generate(server_wide, decoder_step_cache=1) == today  # a request may turn the server's cache off


def test_variations_and_edits_take_it_too(client: OpenAI):
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(picture, format="PNG")
    made = {}
    for interval in (1, 3):
        extra = {"seed": 5, "decoder_steps": 6, "decoder_step_cache": interval}  # multipart: sent as text
        varied = client.images.create_variation(
            image=("in.png", picture.getvalue()), model=TINY, response_format="b64_json", extra_body=extra
        )
        edited = client.images.edit(
            image=("in.png", picture.getvalue()), prompt=PROMPT, model=TINY, response_format="b64_json",
            extra_body={**extra, "prior_steps": 2},
        )  # fmt: skip
        made[interval] = (varied.data[0].b64_json, edited.data[0].b64_json)
    assert made[1][0] != made[3][0] and made[1][1] != made[3][1]


BAD = [(0, "invalid_value"), (-1, "invalid_value"), (201, "invalid_value"), (2.5, "invalid_type"),
       ("3", "invalid_type"), (True, "invalid_type")]  # fmt: skip


@pytest.mark.parametrize("value, code", BAD)
def test_a_bad_interval_is_a_400_naming_it(api_server: LiveServer, value, code):
    body = {"prompt": PROMPT, "model": TINY, **STEPS, "decoder_step_cache": value}
    response = httpx.post(api_server.api_url + "/images/generations", json=body, timeout=60)
    assert_envelope(response, 400, param="decoder_step_cache", code=code)


def test_a_model_without_a_step_cache_refuses_it(client: OpenAI):
    with pytest.raises(BadRequestError) as refused:
        client.images.generate(prompt=PROMPT, model=KARLO, extra_body={**STEPS, "decoder_step_cache": 2})
    error = refused.value.body
    assert error["param"] == "decoder_step_cache" and error["code"] == "unsupported_value"
    assert error["message"].startswith(f"Model '{KARLO}' (karlo) has no decoder step cache")


def test_models_say_which_take_it(client: OpenAI):
    tiny = client.models.retrieve(TINY).model_extra["capabilities"]
    karlo = client.models.retrieve(KARLO).model_extra["capabilities"]
    assert tiny["supports_step_cache"] is True and karlo["supports_step_cache"] is False
    assert all(preset["decoder_step_cache"] is None for preset in tiny["quality_presets"].values())
