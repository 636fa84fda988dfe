"""Reading request bodies: JSON parsed off the event loop, and typed fields with OpenAI-style 400s.

JSON ``null`` always means "the default". A JSON body may be as large as the
body limit (edits carry images as data URLs), so it is parsed in a thread.
Bodies Python's parser refuses, nests too deep for it, or that hold an integer
over its digit limit are a 400 ``invalid_json``, and so is a string with a lone
surrogate escape (``"\\ud800"``): it is not Unicode text, so no tokenizer can
read it and no response that echoed it could be encoded.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from pipelines.presets import QUALITIES

from ..errors import APIError, invalid, missing_parameter

STANDARD_SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536")
AUTO_SIZE = (1024, 1024)
MAX_FREE_SIDE = 8192  # parse limit; the model's own max_side is checked later

_FORM_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # a JSON-style decimal
_SIZE_PATTERN = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")  # fullmatch: "$" would let a trailing newline in


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_json(request: Request) -> Any:
    return await asyncio.to_thread(parse_json, await request.body())


def parse_json(raw: bytes) -> Any:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise invalid(
            None,
            "We could not parse the JSON body of your request. Send a JSON object with Content-Type: application/json.",
            code="invalid_json",
        ) from None
    if not _is_unicode_text(value):
        raise invalid(
            None,
            "The JSON body holds a lone surrogate escape (\\ud800-\\udfff without its pair), "
            "which is not valid Unicode text.",
            code="invalid_json",
        )
    return value


def require_object(body: Any) -> dict[str, Any]:
    """A parsed JSON body, which must be an object."""
    if not isinstance(body, dict):
        raise invalid(None, "The request body must be a JSON object.", code="invalid_json")
    return body


def _is_unicode_text(value: Any) -> bool:
    """Whether every string (and key) in a parsed JSON value encodes as UTF-8."""
    pending = [value]  # iterative: a body nested nearly to the parser's limit must not overflow here
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return False
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def quote_list(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


# bool before int: True is an int to Python, but a boolean to a client.
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a decimal"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)


def _type_name(value: Any) -> str:
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), "a value of another type")


class FieldReader:
    """Typed access to request fields with OpenAI-style 400s.

    ``form=True`` is for multipart bodies, where every value arrives as a
    string: numbers and booleans are parsed from text and an empty value
    means "not given".
    """

    def __init__(self, values: Mapping[str, Any], *, form: bool = False) -> None:
        self.values = values
        self.form = form

    def reject_unknown(self, allowed: frozenset[str]) -> None:
        for name in self.values:
            if name not in allowed:
                raise invalid(name, f"Unrecognized request argument supplied: {name}", code="unknown_parameter")

    def given(self, name: str) -> bool:
        return self.raw(name) is not None

    def raw(self, name: str) -> Any:
        value = self.values.get(name)
        if self.form and value == "":
            return None
        return value

    def _wrong_type(self, name: str, expected: str, value: Any) -> APIError:
        message = f"Invalid type for '{name}': expected {expected}, but got {_type_name(value)} instead."
        return invalid(name, message, code="invalid_type")

    def _out_of_range(self, name: str, value: Any, low: float, high: float) -> APIError:
        return invalid(
            name, f"Invalid '{name}': {value} is out of range; expected {low} to {high}.", code="invalid_value"
        )

    def string(
        self, name: str, *, required: bool = False, max_length: int | None = None, plain_text: bool = False
    ) -> str | None:
        """A string field; ``plain_text``: text for the model, refused if it holds control characters."""
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
        if plain_text:
            refuse_control_characters(name, value)
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(name)
        if value is not None and value not in choices:
            message = f"Invalid value: '{value}'. Supported values are: {quote_list(choices)}."
            raise invalid(name, message, code="invalid_value")
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if self.form and isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            try:
                value = int(value)
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                message = f"Invalid '{name}': the number has too many digits; expected {low} to {high}."
                raise invalid(name, message, code="invalid_value") from None
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
            f"Invalid value: '{value}'. Supported values are: 'auto', {quote_list(STANDARD_SIZES)}, "
            "or WIDTHxHEIGHT within the model's bounds (see /v1/models).",
            code="invalid_value",
        )
    width, height = int(match.group(1)), int(match.group(2))
    if max(width, height) > MAX_FREE_SIDE:
        raise invalid(
            "size", f"Invalid size '{value}': each side must be at most {MAX_FREE_SIDE}.", code="invalid_value"
        )
    return RequestedSize(width, height, standard=value in STANDARD_SIZES)


# -- the fields every image endpoint shares ------------------------------------------------------

RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
MODERATIONS = ("low", "auto")
MAX_N = 10
MAX_PARTIAL_IMAGES = 3
MAX_SEED = 2**53 - 1  # largest integer every JSON client round-trips exactly
MIN_STEPS = 2  # UnCLIPScheduler (every prior, Karlo's decoder) divides by steps - 1
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
MAX_TIMESTEP = 1000  # every supported decoder schedule has 1000 training timesteps
MAX_USER_LENGTH = 256
MAX_PROMPT_LENGTH = 32000  # GPT image names and local names; dall-e names have their own (protocol.images)


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
    """Read and check the shared fields; checks that need the model come later (``protocol.images``)."""
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
        negative_prompt=reader.string("negative_prompt", max_length=MAX_PROMPT_LENGTH, plain_text=True),
        prior_steps=reader.integer("prior_steps", MIN_STEPS, MAX_STEPS),
        prior_guidance_scale=reader.number("prior_guidance_scale", 0.0, MAX_GUIDANCE),
        decoder_steps=reader.integer("decoder_steps", MIN_STEPS, MAX_STEPS),
        decoder_guidance_scale=reader.number("decoder_guidance_scale", 0.0, MAX_GUIDANCE),
        decoder_guidance_min_timestep=reader.integer("decoder_guidance_min_timestep", 0, MAX_TIMESTEP),
    )


def read_prompt(reader: FieldReader) -> str:
    prompt = reader.string("prompt", required=True, plain_text=True)
    assert prompt is not None
    if not prompt.strip():
        raise invalid("prompt", "Invalid 'prompt': must not be empty.", code="invalid_value")
    return prompt


# C0 controls but tab, line feed and carriage return; DEL; C1 controls. They mean nothing to an image
# model, and one in a prompt is usually a client's bug (binary sent as text, a C string's NUL).
_CONTROL_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def refuse_control_characters(name: str, text: str) -> None:
    found = _CONTROL_CHARACTER.search(text)
    if found is not None:
        message = (
            f"Invalid '{name}': it holds the control character U+{ord(found.group()):04X} at position "
            f"{found.start()}; only tab, line feed and carriage return are accepted."
        )
        raise invalid(name, message, code="invalid_value")
