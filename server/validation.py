"""Request validation: raw JSON (or form) values -> typed requests, or a 400 naming the parameter.

Rules that hold for every endpoint live here; rules that depend on the model
(size bounds, negative prompt support, dall-e-3's ``n=1``) are in
:func:`check_for_model`, applied once the model is known and loaded.

JSON ``null`` always means "the default". Unknown fields are refused, as
OpenAI does, so a misspelt parameter never goes silently unused.

Field decisions (documented in the README as well):

- ``background``: ``auto`` and ``opaque`` are accepted (Easel's images are
  opaque); ``transparent`` is refused: the models cannot make alpha.
- ``moderation``: ``low`` and ``auto`` are accepted; Easel runs no moderation
  model, so both behave as ``low``.
- ``user`` (and its newer name ``safety_identifier``): accepted and logged with
  the request id.
- ``output_compression``: for jpeg and webp it is the encoder quality (0-100);
  PNG is lossless, so with png only ``100`` (the default) is accepted.
- ``partial_images``: 0-3, and only non-zero together with ``stream: true``.
- ``size``: one of OpenAI's sizes, ``auto`` (= 1024x1024), or a free ``WxH``
  checked against the model's bounds.
- Easel extensions: ``seed``, ``negative_prompt``, ``prior_steps``,
  ``prior_guidance_scale``, ``decoder_steps``, ``decoder_guidance_scale``,
  ``decoder_guidance_min_timestep``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from pipelines.base import ModelInfo
from pipelines.presets import QUALITIES, STYLES

from .errors import invalid, missing_parameter

RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
MODERATIONS = ("low", "auto")
STANDARD_SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536")
AUTO_SIZE = (1024, 1024)
MAX_N = 10
MAX_PARTIAL_IMAGES = 3
MAX_SEED = 2**53 - 1  # largest integer every JSON client round-trips exactly
MIN_STEPS = 2  # UnCLIPScheduler (every prior, Karlo's decoder) divides by steps - 1
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
MAX_TIMESTEP = 1000  # every supported decoder schedule has 1000 training timesteps
MAX_USER_LENGTH = 256
MAX_FREE_SIDE = 8192  # parse limit; the model's own max_side is checked later

PROMPT_LIMITS = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image": 32000, "easel": 32000}

_FORM_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # a JSON-style decimal
_SIZE_PATTERN = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")  # fullmatch: "$" would let a trailing newline in

# Every endpoint may read these; each endpoint lists the fields it accepts.
EXTENSION_FIELDS = frozenset(
    {
        "seed", "negative_prompt", "prior_steps", "prior_guidance_scale", "decoder_steps", "decoder_guidance_scale",
        "decoder_guidance_min_timestep",
    }
)
GENERATION_FIELDS = frozenset(
    {
        "prompt", "model", "n", "size", "quality", "response_format", "output_format", "output_compression",
        "style", "background", "moderation", "user", "safety_identifier", "stream", "partial_images",
    }
) | EXTENSION_FIELDS


def _quote_list(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value of another type"


class FieldReader:
    """Typed access to request fields with OpenAI-style 400s.

    ``form=True`` is for multipart bodies, where every value arrives as a
    string: numbers and booleans are parsed from text and an empty value
    means "not given".
    """

    def __init__(self, values: Mapping[str, Any], *, form: bool = False) -> None:
        self.values = values
        self.form = form

    def reject_unknown(self, allowed: frozenset[str] | set[str]) -> None:
        for name in self.values:
            if name not in allowed:
                raise invalid(name, f"Unrecognized request argument supplied: {name}", code="unknown_parameter")

    def raw(self, name: str) -> Any:
        value = self.values.get(name)
        if self.form and value == "":
            return None
        return value

    def _wrong_type(self, name: str, expected: str, value: Any) -> Exception:
        return invalid(
            name, f"Invalid type for '{name}': expected {expected}, but got {_type_name(value)} instead.", code="invalid_type"
        )

    def _out_of_range(self, name: str, value: Any, low: float, high: float) -> Exception:
        return invalid(name, f"Invalid '{name}': {value} is out of range; expected {low} to {high}.", code="invalid_value")

    def string(self, name: str, *, required: bool = False, max_length: int | None = None) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise missing_parameter(name)
            return None
        if not isinstance(value, str):
            raise self._wrong_type(name, "a string", value)
        if max_length is not None and len(value) > max_length:
            raise invalid(
                name,
                f"Invalid '{name}': string too long. Expected a string with maximum length {max_length}, "
                f"but got a string with length {len(value)} instead.",
                code="string_above_max_length",
            )
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(name)
        if value is not None and value not in choices:
            raise invalid(name, f"Invalid value: '{value}'. Supported values are: {_quote_list(choices)}.", code="invalid_value")
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if self.form and isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            try:
                value = int(value)
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                raise invalid(
                    name, f"Invalid '{name}': the number has too many digits; expected {low} to {high}.", code="invalid_value"
                ) from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong_type(name, "an integer", value)
        if not low <= value <= high:
            raise self._out_of_range(name, value, low, high)
        return value

    def number(self, name: str, low: float, high: float) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        # A JSON-style decimal only: Python's float() would also take "1_0", "inf" and " nan ".
        if self.form and isinstance(value, str) and _FORM_NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._wrong_type(name, "a number", value)
        if not math.isfinite(value) or not low <= value <= high:
            raise self._out_of_range(name, value, low, high)
        return float(value)

    def boolean(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None:
            return None
        if self.form and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise self._wrong_type(name, "a boolean", value)
        return value


@dataclass(frozen=True)
class RequestedSize:
    width: int
    height: int
    standard: bool  # one of OpenAI's sizes or auto: accepted for every model

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"


def parse_size(value: str | None) -> RequestedSize:
    if value is None or value == "auto":
        return RequestedSize(*AUTO_SIZE, standard=True)
    match = _SIZE_PATTERN.fullmatch(value)
    if match is None:
        raise invalid(
            "size",
            f"Invalid value: '{value}'. Supported values are: 'auto', {_quote_list(STANDARD_SIZES)}, "
            "or WIDTHxHEIGHT within the model's bounds (see /v1/models).",
            code="invalid_value",
        )
    width, height = int(match.group(1)), int(match.group(2))
    if max(width, height) > MAX_FREE_SIDE:
        raise invalid("size", f"Invalid size '{value}': each side must be at most {MAX_FREE_SIDE}.", code="invalid_value")
    return RequestedSize(width, height, standard=value in STANDARD_SIZES)


@dataclass(frozen=True)
class ImageOptions:
    """Fields every image endpoint shares: which model, how many, what size, how to return them."""

    model: str | None
    n: int
    size: RequestedSize
    quality: str
    response_format: str | None  # None: the model name's default (url, or b64_json for GPT image names)
    output_format: str
    output_compression: int  # 0-100; 100 for png
    background: str
    user: str | None
    stream: bool
    partial_images: int
    seed: int | None  # None: a random seed per request
    negative_prompt: str | None
    prior_steps: int | None
    prior_guidance_scale: float | None
    decoder_steps: int | None
    decoder_guidance_scale: float | None
    decoder_guidance_min_timestep: int | None


def read_image_options(reader: FieldReader) -> ImageOptions:
    """Read and check the shared fields; model-dependent checks come later in :func:`check_for_model`."""
    model = reader.string("model")
    if model is not None and not model.strip():
        raise invalid("model", "Invalid 'model': must not be empty.", code="invalid_value")
    n = reader.integer("n", 1, MAX_N)
    output_format = reader.choice("output_format", OUTPUT_FORMATS) or "png"
    compression = reader.integer("output_compression", 0, 100)
    if output_format == "png" and compression not in (None, 100):
        raise invalid(
            "output_compression",
            "output_compression applies to 'jpeg' and 'webp' only; PNG is lossless, so leave it unset (or 100).",
            code="invalid_value",
        )
    background = reader.choice("background", BACKGROUNDS) or "auto"
    if background == "transparent":
        raise invalid(
            "background",
            "background 'transparent' is not supported: Easel's models generate opaque images. Use 'opaque' or 'auto'.",
            code="unsupported_value",
        )
    stream = bool(reader.boolean("stream"))
    partial_images = reader.integer("partial_images", 0, MAX_PARTIAL_IMAGES) or 0
    if partial_images and not stream:
        raise invalid("partial_images", "partial_images needs stream: true.", code="invalid_value")
    user = reader.string("user", max_length=MAX_USER_LENGTH)
    safety_identifier = reader.string("safety_identifier", max_length=MAX_USER_LENGTH)
    seed = reader.integer("seed", 0, MAX_SEED)
    if seed is not None and seed + (n or 1) - 1 > MAX_SEED:
        raise invalid("seed", f"seed + n - 1 must be at most {MAX_SEED}.", code="invalid_value")
    return ImageOptions(
        model=model,
        n=n or 1,
        size=parse_size(reader.string("size")),
        quality=reader.choice("quality", QUALITIES) or "auto",
        response_format=reader.choice("response_format", RESPONSE_FORMATS),
        output_format=output_format,
        output_compression=100 if compression is None else compression,
        background=background,
        user=user if user is not None else safety_identifier,
        stream=stream,
        partial_images=partial_images,
        seed=seed,
        negative_prompt=reader.string("negative_prompt", max_length=PROMPT_LIMITS["easel"]),
        prior_steps=reader.integer("prior_steps", MIN_STEPS, MAX_STEPS),
        prior_guidance_scale=reader.number("prior_guidance_scale", 0.0, MAX_GUIDANCE),
        decoder_steps=reader.integer("decoder_steps", MIN_STEPS, MAX_STEPS),
        decoder_guidance_scale=reader.number("decoder_guidance_scale", 0.0, MAX_GUIDANCE),
        decoder_guidance_min_timestep=reader.integer("decoder_guidance_min_timestep", 0, MAX_TIMESTEP),
    )


def read_prompt(reader: FieldReader) -> str:
    prompt = reader.string("prompt", required=True)
    assert prompt is not None
    if not prompt.strip():
        raise invalid("prompt", "Invalid 'prompt': must not be empty.", code="invalid_value")
    return prompt


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    style: str
    moderation: str
    options: ImageOptions


def require_object(body: Any) -> dict[str, Any]:
    """A parsed JSON body, which must be an object."""
    if not isinstance(body, dict):
        raise invalid(None, "The request body must be a JSON object.", code="invalid_json")
    return body


def parse_generation(body: Any) -> GenerationRequest:
    """Check a POST /v1/images/generations JSON body."""
    reader = FieldReader(require_object(body))
    reader.reject_unknown(GENERATION_FIELDS)
    return GenerationRequest(
        prompt=read_prompt(reader),
        style=reader.choice("style", STYLES) or "vivid",
        moderation=reader.choice("moderation", MODERATIONS) or "auto",
        options=read_image_options(reader),
    )


def max_n_for(api_style: str) -> int:
    """The most images one request may ask for under this model name (dall-e-3, like OpenAI's: one)."""
    return 1 if api_style == "dall-e-3" else MAX_N


def check_for_model(options: ImageOptions, prompt: str | None, api_style: str, info: ModelInfo) -> None:
    """Checks that need the model: its bounds and features, and the OpenAI name's own limits."""
    if options.n > max_n_for(api_style):  # read_image_options caps n at MAX_N: only dall-e-3's limit is left
        raise invalid("n", "dall-e-3 only supports n=1 (as OpenAI's does); use a local model name for batches.", code="invalid_value")
    if api_style == "gpt-image" and options.response_format == "url":
        raise invalid(
            "response_format",
            "response_format is not supported for GPT image models, which always return b64_json.",
            code="unsupported_value",
        )
    limit = PROMPT_LIMITS[api_style]
    if prompt is not None and len(prompt) > limit:
        raise invalid("prompt", f"Invalid 'prompt': string too long. Maximum length for this model is {limit} characters.", code="string_above_max_length")
    size = options.size
    if not size.standard and not (
        info.min_side <= size.width <= info.max_side and info.min_side <= size.height <= info.max_side
    ):
        raise invalid(
            "size",
            f"Invalid size '{size.label}': width and height must each be between {info.min_side} and {info.max_side} "
            f"for model '{info.name}'.",
            code="invalid_value",
        )
    if options.negative_prompt is not None and not info.supports_negative_prompt:
        raise invalid("negative_prompt", f"Model '{info.name}' does not support negative_prompt.", code="unsupported_value")
    if options.decoder_guidance_min_timestep is not None and not info.supports_guidance_interval:
        raise invalid(
            "decoder_guidance_min_timestep",
            f"Model '{info.name}' guides every decoder step; it does not support decoder_guidance_min_timestep.",
            code="unsupported_value",
        )
    if options.quality not in info.presets:
        raise invalid("quality", f"Model '{info.name}' has no '{options.quality}' quality preset.", code="unsupported_value")
