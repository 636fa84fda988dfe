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
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from starlette.requests import Request

from ..http.errors import APIError, invalid, missing_parameter, shown
from . import field_errors as refuse
from .field_errors import quote_list
from .rows import Field
from .tables import PROMPT, STANDARD_SIZES

T = TypeVar("T")

AUTO_SIZE = (1024, 1024)
MAX_FREE_SIDE = 8192  # parse limit; the model's own max_side is checked later

_FORM_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # a JSON-style decimal
_SIZE_PATTERN = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")  # fullmatch: "$" would let a trailing newline in


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_json(request: Request) -> Any:
    """The JSON body of a JSON-only endpoint; any other media type is a 415.

    A browser sends text/plain, form-encoded and multipart bodies across origins without a CORS preflight, so an
    endpoint that read those as JSON could be driven by any web page its user visits (an open local server too).
    """
    kind = media_type(request)
    if kind != "application/json":
        sent = f"Content-Type: {shown(kind)}" if kind else "no Content-Type"
        message = f"Send the request body as JSON with Content-Type: application/json ({sent} was sent)."
        raise APIError(415, message, code="unsupported_content_type")
    return await asyncio.to_thread(parse_json, await request.body())


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object from its pairs, refusing a key given twice: ``{"n": 1, "n": 10}`` must not quietly mean 10."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _DuplicateKey(key)
        value[key] = item
    return value


def parse_json(raw: bytes) -> Any:
    try:
        value = json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKey as duplicate:
        key = shown(duplicate.key)
        message = f"The JSON body gives '{key}' more than once; send each field once."
        raise invalid(key, message, code="duplicate_parameter") from None
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


class FieldReader:
    """Typed access to request fields with OpenAI-style 400s; :meth:`read` reads a field by its table row.

    ``form=True`` is for multipart bodies, where every value arrives as a
    string: numbers and booleans are parsed from text, an empty value means
    "not given", and bracketed names (``svg[reasoning][effort]``, as the
    openai SDK sends objects) are nested into objects. Errors inside an
    object name the field as ``svg.reasoning.effort``.
    """

    def __init__(self, values: Mapping[str, Any], *, form: bool = False, prefix: str = "") -> None:
        self.values = _nest_brackets(values) if form and not prefix else values
        self.form = form
        self.prefix = prefix

    def reject_unknown(self, allowed: frozenset[str]) -> None:
        for name in self.values:
            if name not in allowed:
                param = shown(self.prefix + name)
                raise invalid(param, f"Unrecognized request argument supplied: {param}", code="unknown_parameter")

    def given(self, name: str) -> bool:
        return self.raw(name) is not None

    def raw(self, name: str) -> Any:
        value = self.values.get(name)
        if self.form and value == "":
            return None
        return value

    def read(self, field: Field[T]) -> T:
        """The field's value as its row declares it; absent or null: the row's default.

        A field with aliases is read under the one name the client sent, so its errors name that one.
        """
        field = self._as_sent(field)
        value = self._read_kind(field)
        # The one unchecked step: the row's kind function (protocol.rows) made T the type this kind reads as.
        return cast(T, field.default if value is None else value)

    def _read_kind(self, field: Field[Any]) -> object:
        name, kind = field.name, field.kind
        if kind == "integer":
            return self.integer(name, int(_bound(field.low)), int(_bound(field.high)))
        if kind == "number":
            return self.number(name, _bound(field.low), _bound(field.high))
        if kind == "boolean":
            return self.boolean(name)
        if kind == "enum":
            return self.enum(field)
        if kind == "object":
            return self.object(field)
        if kind == "numbers":
            return self.numbers(field.name, _bound(field.low), _bound(field.high))
        if kind == "file":
            raise TypeError(f"'{name}' is a file: uploads are read from the body's parts, not as a field")
        return self.string(name, required=field.required, max_length=field.max_length, plain_text=field.plain_text)

    def _as_sent(self, field: Field[T]) -> Field[T]:
        """The row under the name the client used for it; two names for one setting are a 400."""
        if not field.aliases:
            return field
        sent = [name for name in (field.name, *field.aliases) if self.given(name)]
        if len(sent) > 1:
            raise refuse.two_names_for_one(self.prefix + sent[1], self.prefix + sent[0], self.prefix + field.name)
        return replace(field, name=sent[0]) if sent and sent[0] != field.name else field

    def string(
        self, name: str, *, required: bool = False, max_length: int | None = None, plain_text: bool = False
    ) -> str | None:
        """A string field; ``plain_text``: text for the model, refused if it holds control characters."""
        value = self.raw(name)
        if value is None:
            if required:
                raise missing_parameter(self.prefix + name)
            return None
        if not isinstance(value, str):
            raise refuse.wrong_type(self.prefix + name, "a string", value)
        if max_length is not None and len(value) > max_length:
            raise refuse.too_long(self.prefix + name, max_length, len(value))
        if plain_text:
            refuse_control_characters(self.prefix + name, value)
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(name)
        if value is not None and value not in choices:
            raise refuse.not_a_choice(self.prefix + name, value, choices)
        return value

    def enum(self, field: Field[Any]) -> str | None:
        """One of the row's choices; a value OpenAI has but Easel refuses is a 400 with the row's reason."""
        reasons = dict(field.refused)
        value = self.choice(field.name, field.choices + tuple(reasons))
        if value in reasons:
            raise refuse.refused_choice(self.prefix + field.name, field.name, value, reasons[value])
        return value

    def object(self, field: Field[Any]) -> dict[str, Any] | None:
        """An object field, every property read by its own row (unknown properties refused)."""
        value = self.raw(field.name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise refuse.wrong_type(self.prefix + field.name, "an object", value)
        inner = FieldReader(value, form=self.form, prefix=f"{self.prefix}{field.name}.")
        inner.reject_unknown(frozenset(part.name for part in field.properties))
        return {part.name: inner.read(part) for part in field.properties}

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if self.form and isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            try:
                value = int(value)
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                raise refuse.too_many_digits(self.prefix + name, name, low, high) from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse.wrong_type(self.prefix + name, "an integer", value)
        if not low <= value <= high:
            raise refuse.out_of_range(self.prefix + name, value, low, high)
        return value

    def number(self, name: str, low: float, high: float) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        # A JSON-style decimal only: Python's float() would also take "1_0", "inf" and " nan ".
        if self.form and isinstance(value, str) and _FORM_NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse.wrong_type(self.prefix + name, "a number", value)
        if not math.isfinite(value) or not low <= value <= high:
            raise refuse.out_of_range(self.prefix + name, value, low, high)
        return float(value)

    def numbers(self, name: str, low: float, high: float) -> list[float] | None:
        """A list of numbers: a JSON array; in a form, repeated ``name[]`` parts or one comma-separated value."""
        value = self.raw(name)
        if value is None:
            return None
        if self.form and isinstance(value, str):
            value = [part.strip() for part in value.strip().removeprefix("[").removesuffix("]").split(",")]
        if not isinstance(value, list):
            raise refuse.wrong_type(self.prefix + name, "an array of numbers", value)
        items = FieldReader({str(i): item for i, item in enumerate(value)}, form=self.form, prefix=f"{name}.")
        numbers = [items.number(str(i), low, high) for i in range(len(value))]
        for i, number in enumerate(numbers):
            if number is None:
                raise refuse.wrong_type(f"{name}.{i}", "a number", value[i])
        return [number for number in numbers if number is not None]

    def boolean(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None:
            return None
        if self.form and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise refuse.wrong_type(self.prefix + name, "a boolean", value)
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
            f"Invalid value: '{shown(value)}'. Supported values are: 'auto', {quote_list(STANDARD_SIZES)}, "
            "or WIDTHxHEIGHT within the model's bounds (see /v1/models).",
            code="invalid_value",
        )
    width, height = int(match.group(1)), int(match.group(2))
    if max(width, height) > MAX_FREE_SIDE:
        raise invalid(
            "size", f"Invalid size '{shown(value)}': each side must be at most {MAX_FREE_SIDE}.", code="invalid_value"
        )
    return RequestedSize(width, height, standard=value in STANDARD_SIZES)


def _bound(value: float | None) -> float:
    assert value is not None, "integer and number rows declare both bounds"
    return value


_BRACKETED = re.compile(r"([^\[\]]+)((?:\[[^\[\]]+\])+)")  # svg[reasoning][effort]


def _nest_brackets(values: Mapping[str, Any]) -> dict[str, Any]:
    """Form fields with bracketed names as nested objects: ``svg[model]`` -> ``{"svg": {"model": ...}}``."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        match = _BRACKETED.fullmatch(key)
        if match is None:
            if isinstance(nested.get(key), dict):
                raise refuse.value_and_object(key)
            nested[key] = value
            continue
        path = [match.group(1), *re.findall(r"\[([^\[\]]+)\]", match.group(2))]
        target = nested
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise refuse.value_and_object(path[0])
        target[path[-1]] = value
    return nested


def read_prompt(reader: FieldReader) -> str:
    prompt = reader.read(PROMPT)
    if not prompt.strip():
        raise invalid("prompt", "Invalid 'prompt': must not be empty.", code="invalid_value")
    return prompt


# C0 controls but tab, line feed and carriage return; DEL; C1 controls. They mean nothing to an image
# model, and one in a prompt is usually a client's bug (binary sent as text, a C string's NUL).
_CONTROL_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def refuse_control_characters(name: str, text: str) -> None:
    found = _CONTROL_CHARACTER.search(text)
    if found is not None:
        raise refuse.control_character(name, found.group(), found.start())
