"""Request validation, in-process: the parsers directly, and the app through httpx.ASGITransport.

The app here runs without its lifespan, so its model never loads: requests
that pass validation stop at the 503 "loading" answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from pipelines.base import ModelInfo
from pipelines.presets import presets_for
from server.app.application import create_app
from server.http.errors import APIError
from server.protocol.fields import FieldReader, parse_size
from server.protocol.images import GenerationRequest, check_for_model
from server.settings.config import Settings
from server.settings.loading import load_settings
from server.settings.model_specs import ModelSpec, parse_model_spec

from ..conftest import assert_envelope


def parsed(**fields):
    return GenerationRequest.parse({"prompt": "a cat", **fields})


def error_of(call) -> APIError:
    with pytest.raises(APIError) as caught:
        call()
    return caught.value


def test_defaults():
    request = parsed()
    options = request.options
    assert (request.prompt, request.style, request.moderation) == ("a cat", "vivid", "auto")
    assert options.model is None and options.n == 1
    assert (options.size.width, options.size.height, options.size.standard) == (1024, 1024, True)
    assert options.quality == "auto" and options.response_format is None
    assert (options.output_format, options.output_compression, options.background) == ("png", 100, "auto")
    assert (options.stream, options.partial_images, options.user, options.seed) == (False, 0, None, None)
    assert options.negative_prompt is None
    assert (
        options.prior_steps,
        options.decoder_steps,
        options.prior_guidance_scale,
        options.decoder_guidance_scale,
    ) == (None,) * 4
    assert options.decoder_guidance_min_timestep is None


def test_nulls_are_defaults():
    nulls = {
        name: None
        for name in (
            "model",
            "n",
            "size",
            "quality",
            "response_format",
            "output_format",
            "output_compression",
            "style",
            "background",
            "moderation",
            "user",
            "stream",
            "partial_images",
            "seed",
            "negative_prompt",
            "prior_steps",
            "prior_guidance_scale",
            "decoder_steps",
            "decoder_guidance_scale",
            "decoder_guidance_min_timestep",
        )
    }
    assert parsed(**nulls) == parsed()


def test_values_are_carried():
    request = parsed(
        model="dall-e-3",
        n=3,
        size="1536x1024",
        quality="hd",
        response_format="b64_json",
        output_format="jpeg",
        output_compression=40,
        style="natural",
        background="opaque",
        moderation="low",
        user="u1",
        stream=True,
        partial_images=2,
        seed=5,
        negative_prompt="fog",
        prior_steps=3,
        prior_guidance_scale=2,
        decoder_steps=4,
        decoder_guidance_scale=7.5,
        decoder_guidance_min_timestep=0,
    )
    options = request.options
    assert (request.style, request.moderation) == ("natural", "low")
    assert (options.model, options.n, options.size.label, options.quality) == ("dall-e-3", 3, "1536x1024", "hd")
    assert (options.response_format, options.output_format, options.output_compression) == ("b64_json", "jpeg", 40)
    assert (options.background, options.user, options.stream, options.partial_images) == ("opaque", "u1", True, 2)
    assert (options.seed, options.negative_prompt) == (5, "fog")
    assert (
        options.prior_steps,
        options.prior_guidance_scale,
        options.decoder_steps,
        options.decoder_guidance_scale,
    ) == (3, 2.0, 4, 7.5)
    assert isinstance(options.prior_guidance_scale, float)
    assert options.decoder_guidance_min_timestep == 0


def test_safety_identifier_counts_as_user():
    assert parsed(safety_identifier="sid").options.user == "sid"
    assert parsed(user="u", safety_identifier="sid").options.user == "u"


@pytest.mark.parametrize(
    "size, width, height, standard",
    [
        ("auto", 1024, 1024, True),
        (None, 1024, 1024, True),
        ("256x256", 256, 256, True),
        ("1024x1792", 1024, 1792, True),
        ("300x200", 300, 200, False),
        ("64x2048", 64, 2048, False),
    ],
)
def test_parse_size(size, width, height, standard):
    parsed_size = parse_size(size)
    assert (parsed_size.width, parsed_size.height, parsed_size.standard) == (width, height, standard)


@pytest.mark.parametrize(
    "size", ["", "1024", "1024X1024", "01024x1024", "-5x5", "1024x1024x3", " 512x512", "512x512\n", "99999x10", "0x0"]
)
def test_bad_sizes(size):
    assert error_of(lambda: parse_size(size)).param == "size"


def test_unknown_fields_name_the_first_one():
    error = error_of(lambda: parsed(frame_rate=3))  # frame_count is a field since openai 3.57; frame_rate is not
    assert (error.status, error.param, error.code) == (400, "frame_rate", "unknown_parameter")


def test_error_messages_follow_openai_wording():
    assert (
        error_of(lambda: parsed(n="2")).message
        == "Invalid type for 'n': expected an integer, but got a string instead."
    )
    assert (
        error_of(lambda: parsed(output_format="bmp")).message
        == "Invalid value: 'bmp'. Supported values are: 'png', 'jpeg', 'webp', 'gif', and 'svg'."
    )
    assert error_of(lambda: GenerationRequest.parse({})).message == "Missing required parameter: 'prompt'."
    assert error_of(lambda: GenerationRequest.parse([])).param is None


def test_form_reader_parses_text():
    reader = FieldReader({"n": "3", "stream": "true", "scale": "2.5", "seed": "", "size": "256x256"}, form=True)
    assert reader.integer("n", 1, 10) == 3
    assert reader.boolean("stream") is True
    assert reader.number("scale", 0, 10) == 2.5
    assert reader.integer("seed", 0, 10) is None
    assert error_of(lambda: FieldReader({"n": "two"}, form=True).integer("n", 1, 10)).param == "n"
    assert error_of(lambda: FieldReader({"n": "3"}).integer("n", 1, 10)).param == "n"  # JSON is strict


def _info(**overrides) -> ModelInfo:
    values = dict(
        name="m",
        family="kandinsky22",
        native_area=64 * 64,
        size_multiple=8,
        min_side=64,
        max_side=1024,
        fixed_native_size=None,
        tasks=frozenset({"generate"}),
        presets=presets_for("kandinsky22"),
        parameter_counts={"unet": 1},
        device="cpu",
        dtype="float32",
    )
    values.update(overrides)
    return ModelInfo(**values)


@pytest.mark.parametrize(
    "fields, style, param",
    [
        ({"size": "32x64"}, "easel", "size"),
        ({"size": "2000x1024"}, "easel", "size"),
        ({"n": 2}, "dall-e-3", "n"),
        ({"response_format": "url"}, "gpt-image", "response_format"),
        ({"prompt": "p" * 1001}, "dall-e-2", "prompt"),
        ({"prompt": "p" * 4001}, "dall-e-3", "prompt"),
        ({"negative_prompt": "x"}, "karlo", "negative_prompt"),
    ],
)
def test_model_dependent_checks(fields, style, param):
    request = parsed(**fields)
    info = _info(supports_negative_prompt=False) if style == "karlo" else _info()
    api_style = "easel" if style == "karlo" else style
    error = error_of(lambda: check_for_model(request.options, request.prompt, api_style, info))
    assert (error.status, error.param) == (400, param)


def test_standard_sizes_pass_any_bounds_and_free_sizes_within_bounds_pass():
    info = _info(max_side=512)
    for size in ("1792x1024", "64x512", "512x64"):
        request = parsed(size=size)
        check_for_model(request.options, request.prompt, "easel", info)
    request = parsed(prompt="p" * 4000, n=1, response_format="b64_json")
    check_for_model(request.options, request.prompt, "dall-e-3", info)


def test_model_spec_and_settings_parsing(tmp_path: Path):
    spec = parse_model_spec(f"tiny=kandinsky22:{tmp_path}")
    assert (spec.name, spec.family, spec.path) == ("tiny", "kandinsky22", tmp_path)
    settings = load_settings(
        [
            "--model",
            f"tiny=kandinsky22:{tmp_path}",
            "--alias",
            "house=tiny",
            "--api-key",
            "k1",
            "--url-ttl-seconds",
            "60",
            "--max-body-mb",
            "2",
        ],
        {"EASEL_API_KEYS": "k2, k3", "EASEL_QUEUE_SIZE": "4"},
    )
    assert settings.api_keys == ("k1", "k2", "k3")
    assert settings.aliases["house"] == "tiny" and settings.aliases["dall-e-3"] == "tiny"
    assert (settings.url_ttl_seconds, settings.queue_size, settings.max_body_bytes) == (60.0, 4, 2 * 1024 * 1024)
    assert (settings.host, settings.port, settings.default_model_name) == ("127.0.0.1", 8000, "tiny")
    default = load_settings([], {})
    assert default.default_model_name == "easel-mini" and default.aliases["gpt-image-1"] == "easel-mini"
    with pytest.raises(SystemExit):
        load_settings(["--model", "no-family-here"], {})


# -- through the app, without loading models --------------------------------------------


@pytest.fixture
def app(tmp_path: Path):
    settings = Settings(
        models=(ModelSpec(name="m", family="kandinsky22", path=tmp_path / "never-loaded"),),
        aliases={"gpt-image-1": "m"},
        image_dir=tmp_path / "images",
        max_body_bytes=64 * 1024,
        allowed_hosts=("easel.test",),  # the name the in-process client below sends
    )
    return create_app(settings)


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://easel.test") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


def test_valid_request_for_a_loading_model_is_503(app):
    response = call(app, "POST", "/v1/images/generations", json={"prompt": "x", "model": "gpt-image-1"})
    assert_envelope(response, 503, code="model_loading")
    assert response.headers["retry-after"] == "5"


def test_validation_precedes_model_lookup_and_loading(app):
    assert_envelope(
        call(app, "POST", "/v1/images/generations", json={"prompt": "x", "n": 0, "model": "zzz"}), 400, param="n"
    )
    assert_envelope(
        call(app, "POST", "/v1/images/generations", json={"prompt": "x", "model": "zzz"}), 404, param="model"
    )
    assert_envelope(
        call(app, "POST", "/v1/images/generations", content=b"{", headers={"content-type": "application/json"}), 400
    )


def test_streamed_body_is_cut_off_at_the_limit(app):
    pulled = 0

    async def body():
        nonlocal pulled
        yield b'{"prompt": "'
        for _ in range(100):  # 400 KiB offered, 64 KiB allowed
            pulled += 1
            yield b"a" * 4096

    response = call(app, "POST", "/v1/images/generations", content=body(), headers={"content-type": "application/json"})
    assert_envelope(response, 413, code="request_too_large")
    assert pulled <= 17  # stopped reading just past 64 KiB


def test_request_id_on_errors_from_routing(app):
    response = call(app, "GET", "/nowhere", headers={"x-request-id": "abc-123"})
    assert_envelope(response, 404)
    assert response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 50_000,  # nested past the parser's recursion limit (and within the 64 KiB body limit)
        b'{"prompt": "x", "n": ' + b"9" * 5000 + b"}",  # an integer over Python's digit limit
        b'{"prompt": "a \\ud800 b"}',  # a lone surrogate: no tokenizer reads it, no response could echo it
        b'{"prompt": "x", "\\udfff": 1}',  # one in a key, which the unknown-field error would echo
        b'{"prompt": "x", "model": "\\ud83d"}',  # half a pair, echoed by the 404
    ],
    ids=["deep", "huge-int", "surrogate-prompt", "surrogate-key", "surrogate-model"],
)
def test_json_python_cannot_read_as_text_is_a_400_not_a_500(app, raw: bytes):
    response = call(app, "POST", "/v1/images/generations", content=raw, headers={"content-type": "application/json"})
    assert_envelope(response, 400, code="invalid_json")


def test_a_surrogate_pair_is_ordinary_text(app):
    body = b'{"prompt": "a \\ud83d\\ude00", "model": "zzz"}'  # an emoji, escaped
    response = call(app, "POST", "/v1/images/generations", content=body, headers={"content-type": "application/json"})
    assert_envelope(response, 404, param="model")  # parsed, validated, then the unknown model


def test_form_integer_with_more_digits_than_python_converts_is_a_400():
    error = error_of(lambda: FieldReader({"n": "9" * 5000}, form=True).integer("n", 1, 10))
    assert (error.status, error.param, error.code) == (400, "n", "invalid_value")
    assert error.message == "Invalid 'n': the number has too many digits; expected 1 to 10."


@pytest.mark.parametrize(
    "text, value", [("2", 2.0), ("-0.5", -0.5), (".5", 0.5), ("3.", 3.0), ("1e1", 10.0), (" 7.5 ", 7.5)]
)
def test_form_numbers_read_as_decimals(text, value):
    assert FieldReader({"scale": text}, form=True).number("scale", -100, 100) == value


@pytest.mark.parametrize("text", ["1_0", "inf", "nan", "0x10", "1,5", "--1"])
def test_form_numbers_python_alone_would_take_are_refused(text):
    error = error_of(lambda: FieldReader({"scale": text}, form=True).number("scale", -100, 100))
    assert error.param == "scale" and error.status == 400
